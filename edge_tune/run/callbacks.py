"""The tuner's Ray Tune callbacks: :class:`TrialLog` (each finished trial into trials.jsonl,
then one console line), :class:`Waiting` (a trial waiting for resources is said) and
:class:`Wandb` (every trial mirrored to W&B, offline without a key; the run's reference
beside them: :func:`mirror_reference`).

Plain module-level classes: Tune pickles callbacks with the experiment, and a resumed run
unpickles them by their module path.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
from ray.air.integrations.wandb import WandbLoggerCallback
from ray.air.util.node import _force_on_current_node
from ray.tune import Callback
from ray.util import metrics

from edge_tune.config import Config
from edge_tune.core.console import log_stderr
from edge_tune.core.environment import wandb_folder, wandb_mode
from edge_tune.run.cluster import describe
from edge_tune.run.ledger import TRIALS, Status, TrialRow, append, trial_row
from edge_tune.search.params import format_params
from edge_tune.search.result import TrialResult, read_result
from edge_tune.search.stopping import EarlyStop


def row_of(trial: Any, status: Status, error: str | None = None,
           reason: str | None = None) -> TrialRow:
    """A live Tune trial as a trials.jsonl row."""
    checkpoint = getattr(trial, "checkpoint", None)
    return trial_row(trial.trial_id, status, dict(trial.config), trial.last_result, error,
                     reason, checkpoint.path if checkpoint is not None else None)


class TrialLog(Callback):
    """Each finished trial appended to trials.jsonl and flushed to disk *before* its console
    line, so what the console reported survives a killed driver; the best-objective Ray
    gauge (made on first use, never pickled)."""

    def __init__(self, total: int, out: Path, stopper: EarlyStop) -> None:
        super().__init__()
        self.total, self.ledger = total, str((out / TRIALS).resolve())
        self.stopper = stopper  # the same object Tune schedules with: its stop reasons
        self.best = float("inf")
        self._gauge: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_gauge": None}

    def get_state(self) -> dict[str, Any] | None:
        """Tune's callback checkpoint: the stopper's evidence (best feasible ratio, gains)."""
        return {"stopper": self.stopper.state(), "best": self.best}

    def set_state(self, state: dict[str, Any]) -> None:
        self.stopper.load(state["stopper"])
        self.best = state["best"]

    def _set_gauge(self, value: float) -> None:
        if self._gauge is None:
            self._gauge = metrics.Gauge("edge_tune_best_objective",
                                        "lowest objective so far (latency ratio if feasible)")
        self._gauge.set(value)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        done = sum(t.status in ("TERMINATED", "ERROR") for t in trials) + 1  # it still runs
        last = trial.last_result or {}
        if last.get("phase") == "error":  # it raised: reported, not retried
            line = str(last.get("trial_error"))
            append(Path(self.ledger), row_of(trial, "error", line))
            log_stderr(failure_line(trial.trial_id, line))
            return
        result = read_result(last)
        if result is None or result.phase != "done":
            row = row_of(trial, "stopped", reason=self.stopper.reasons.get(trial.trial_id))
            append(Path(self.ledger), row)
            speedup = result.probe.speedup if result is not None and result.probe else 0.0
            log_stderr(f"trial {done}/{self.total} {trial.trial_id}: "
                       f"{format_params(trial.config)} -> {speedup:.2f}x, "
                       f"stopped: {row.reason}")
            return
        append(Path(self.ledger), row_of(trial, "completed"))
        self.best = min(self.best, result.objective)
        self._set_gauge(self.best)
        probe = result.probe
        assert probe is not None and result.val_top1 is not None  # a finished trial's
        log_stderr(f"trial {done}/{self.total} {trial.trial_id}: "
                   f"{format_params(trial.config)} -> validation top-1 {result.val_top1:.2f}%, "
                   f"{probe.latency_ms:.3f} ms, {probe.speedup:.2f}x, objective "
                   f"{result.objective:.3f}{precision_note(result)}"
                   + (f" (the device hung {result.device_hangs} time(s): its actor was "
                      "restarted and the call retried)" if result.device_hangs else ""))

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        log_stderr(f"trial {trial.trial_id} lost its process or node ({error_line(trial)}); "
                   f"it runs again (failure {trial.num_failures} of up to "
                   f"{trial.max_failures}: tune.max_failures)")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        line = error_line(trial)
        append(Path(self.ledger), row_of(trial, "error", line))
        log_stderr(failure_line(trial.trial_id, line))


def failure_line(trial_id: str, error: str) -> str:
    """The console's line for a failed trial: its error is in trials.jsonl; a device that
    hung is named here too."""
    why = f": {error.split(': ', 1)[-1]}" if "DeviceHang" in error else ""
    return (f"trial {trial_id} failed{why} (its error is in {TRIALS}); the experiment goes "
            "on")


def precision_note(result: TrialResult) -> str:
    """What the console adds when an int8 trial's device ran int8 slower than float."""
    ratio = result.int8_vs_float
    if ratio is None or ratio <= 1.0:
        return ""
    kept = "kept int8 as asked" if result.int8 else "deployed in float"
    return f" (int8 ran {ratio:.2f}x float's latency on this graph: {kept})"


def error_line(trial: Any) -> str:
    """The last line of the error Tune recorded for ``trial`` (its error.txt)."""
    path = Path(trial.error_file) if getattr(trial, "error_file", None) else None
    lines = [x for x in path.read_text().splitlines() if x.strip()] if path and \
        path.is_file() else []
    return lines[-1][:500] if lines else "the trial failed (no error recorded)"


WAIT_REPORT_S = 60.0  # a trial waiting this long for resources is said, then every 5 min
WAIT_REPEAT_S = 300.0


def waiting_line(pending: dict[str, dict[str, float]], since: dict[str, float], now: float,
                 free: Callable[[], dict[str, float]] | None) -> str | None:
    """What the longest-waiting trial asks for and what is free, once it has waited
    :data:`WAIT_REPORT_S` (``pending``: trial id -> its request; ``since`` is updated: trial
    id -> when it was first seen waiting, s since the epoch); ``free`` None: only the clocks
    are kept (nothing is due)."""
    for trial_id in list(since):
        if trial_id not in pending:
            del since[trial_id]
    for trial_id in pending:
        since.setdefault(trial_id, now)
    if not since:
        return None
    oldest = min(since, key=since.__getitem__)
    waited = now - since[oldest]
    if waited < WAIT_REPORT_S or free is None:
        return None
    return (f"waiting {waited:.0f} s for resources: trial {oldest} asks for "
            f"{describe(pending[oldest])}; free now in the whole cluster: {describe(free())} "
            "(held by this run's other trials, another job, or a node left; it goes on when "
            "a node has them free)")


class Waiting(Callback):
    """A trial that waits for resources over a minute is said on the console, with its
    request and what the cluster has free (Tune's own warning is below our log level)."""

    def __init__(self) -> None:
        super().__init__()
        self.since: dict[str, float] = {}
        self.said = 0.0  # when the last line was said (s since the epoch)

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        pending = {t.trial_id: dict(t.placement_group_factory.required_resources)
                   for t in trials if t.status == "PENDING"}
        now = time.time()
        due = now - self.said >= WAIT_REPEAT_S  # the cluster is asked only when a line is due
        line = waiting_line(pending, self.since, now, ray.available_resources if due else None)
        if line is not None:
            self.said = now
            log_stderr(line)


class Wandb(WandbLoggerCallback):
    """Ray's W&B callback, its per-trial logging actor made without restarts: a restartable
    actor whose constructor arguments sit in the object store makes Ray log an error-level
    line (core_worker.cc) for every trial. A logging actor that dies ends that trial's W&B
    mirror; trials.jsonl is the record."""

    def _start_logging_actor(self, trial: Any, exclude_results: list[str],
                             **wandb_init_kwargs: Any) -> None:
        if not self._remote_logger_class:
            key = {k: os.environ[k] for k in ("WANDB_API_KEY",) if k in os.environ}
            here: dict[str, Any] = _force_on_current_node()  # type: ignore[assignment]
            self._remote_logger_class = ray.remote(  # type: ignore[assignment]
                num_cpus=0, runtime_env={"env_vars": key}, max_restarts=0,
                **here)(self._logger_actor_cls)
        super()._start_logging_actor(trial, exclude_results, **wandb_init_kwargs)


def wandb_callback(config: Config, out: Path) -> WandbLoggerCallback:
    """The W&B mirror of a run in ``out``, its trials grouped under the folder's name (offline
    without WANDB_API_KEY)."""
    return Wandb(project=config.tune.wandb_project, group=out.name, mode=wandb_mode(),
                 dir=str(wandb_folder(out)), log_config=False)


def mirror_reference(config: Config, out: Path, values: dict[str, float]) -> None:
    """The run's reference (``values``: its numbers) as one more W&B run in the trials'
    group, named ``reference`` (offline without WANDB_API_KEY)."""
    import wandb

    run = wandb.init(project=config.tune.wandb_project, group=out.name, name="reference",
                     id=f"reference-{uuid.uuid4().hex[:8]}", job_type="reference",
                     dir=str(wandb_folder(out)), mode=wandb_mode())
    try:
        run.log(values)
    finally:
        run.finish()
