"""Early stopping of tuner trials: a Ray Tune scheduler over what a trial reports.

A trial reports its latency first (``phase: latency``: the graph is fixed once filters are
removed and int8 chosen), then validation top-1 after every fine-tuning epoch (``phase:
epoch``), then its result (``phase: done``). :class:`EarlyStop` ends a trial

- before fine-tuning, when its latency ratio is no better than the best feasible trial's so
  far, or than the run's reference (the baseline in int8, when it is within the threshold:
  edge_tune.run.reference): it cannot win, whatever its accuracy;
- after an epoch at least ``LATE`` into its schedule, when even the largest gain finished
  trials made from the same point of their schedule (same fraction of their epochs) to their
  final validation top-1, plus ``SLACK`` points, would leave it under the threshold. It needs
  ``MIN_CURVES`` finished curves before it judges accuracy, and never stops a trial in its
  last epoch.

The reason for each stop is kept in :attr:`EarlyStop.reasons` (trial id -> one line) for the
tuner's ledger and console.
"""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from edge_tune.search.result import TrialResult, read_result

SLACK = 0.5  # points of top-1 of benefit of the doubt on top of the largest gain seen
MIN_CURVES = 2  # finished trials' curves before accuracy may stop a trial
NEAR = 0.2  # schedule fractions this close count as the same point of the schedule
# accuracy is judged only this late in a trial's schedule: at lr 0.1 top-1 often collapses
# mid-schedule and recovers as the cosine decays (seen on digits: 10-45% at epoch 2 of 4)
LATE = 0.75


class EarlyStop(FIFOScheduler):
    """Stops trials that cannot beat the best feasible one (latency) or cannot reach the
    threshold (accuracy); see the module docstring."""

    def __init__(self, enabled: bool = True, reference_ratio: float = float("inf")) -> None:
        super().__init__()
        self.enabled = enabled  # False: it only watches (tune.early_stop: false)
        # best feasible latency ratio among finished trials and the reference (if feasible)
        self.best_ratio = reference_ratio
        self.best_is_reference = reference_ratio < float("inf")
        self.seen: dict[str, list[tuple[float, float]]] = {}  # trial -> (fraction, top1)
        self.gains: list[tuple[float, float]] = []  # (fraction, final top1 - top1 then)
        self.curves = 0
        self.reasons: dict[str, str] = {}

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        read = read_result(result)
        reason = None if read is None else self.judge(trial.trial_id, read)
        if reason is None or not self.enabled:
            return TrialScheduler.CONTINUE
        self.reasons[trial.trial_id] = reason
        return TrialScheduler.STOP

    def judge(self, trial_id: str, result: TrialResult) -> str | None:
        """The reason to stop the trial after this result, or None to go on."""
        ratio = result.latency_ratio
        if result.phase == "latency" and ratio >= self.best_ratio:
            best = ("the baseline in int8's (the reference)" if self.best_is_reference
                    else "the best feasible trial's")
            return (f"latency ratio {ratio:.3f} no better than {best} {self.best_ratio:.3f}: "
                    "stopped before fine-tuning")
        if result.phase != "epoch" or result.val_top1 is None:
            return None
        epoch, epochs = result.epoch, result.finetune_epochs
        if epoch == 1:
            self.seen[trial_id] = []  # a retried trial starts its curve again
        fraction, top1 = epoch / max(1, epochs), result.val_top1
        self.seen.setdefault(trial_id, []).append((fraction, top1))
        if epoch >= epochs or fraction < LATE or self.curves < MIN_CURVES:
            return None
        near = [g for f, g in self.gains if abs(f - fraction) <= NEAR]
        if not near:
            return None
        best_case = top1 + max(near) + SLACK
        threshold = result.threshold_top1
        if best_case < threshold:
            return (f"validation top-1 {top1:.2f}% after epoch {epoch}/{epochs}: even the "
                    f"largest gain seen from there ({max(near):+.2f}) and {SLACK} points "
                    f"leave it under the threshold {threshold:.2f}%")
        return None

    def state(self) -> dict[str, Any]:
        """What it learnt (saved with the tuner's callback state, restored on resume)."""
        return {"best_ratio": self.best_ratio, "best_is_reference": self.best_is_reference,
                "gains": list(self.gains), "curves": self.curves, "reasons": dict(self.reasons)}

    def load(self, state: dict[str, Any]) -> None:
        self.best_ratio, self.gains = state["best_ratio"], list(state["gains"])
        self.best_is_reference = bool(state.get("best_is_reference", False))
        self.curves, self.reasons = state["curves"], dict(state["reasons"])

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self.seen.pop(trial.trial_id, None)
        super().on_trial_error(tune_controller, trial)

    def on_trial_complete(self, tune_controller: Any, trial: Any,
                          result: dict[str, Any]) -> None:
        self.learn(trial.trial_id, read_result(result))
        super().on_trial_complete(tune_controller, trial, result)

    def learn(self, trial_id: str, result: TrialResult | None) -> None:
        """A finished trial's final validation top-1: the best feasible ratio, and the gains
        its curve made from each epoch to the end."""
        curve = self.seen.pop(trial_id, [])
        if result is None or result.phase != "done" or result.val_top1 is None:
            return
        final = result.val_top1
        if result.feasible and result.latency_ratio < self.best_ratio:
            self.best_ratio, self.best_is_reference = result.latency_ratio, False
        if curve:
            self.gains += [(fraction, final - top1) for fraction, top1 in curve]
            self.curves += 1
