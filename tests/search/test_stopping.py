"""EarlyStop: a trial slower than the best feasible one stops before fine-tuning; one whose
curve cannot reach the threshold stops after an epoch; neither before there is evidence."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from ray.tune.schedulers import TrialScheduler

from edge_tune.search.stopping import MIN_CURVES, EarlyStop

THRESHOLD = 90.0


def result(phase: str, ratio: float, epoch: int = 0, top1: float | None = None,
           epochs: int = 4, feasible: bool = False) -> dict[str, Any]:
    return {"phase": phase, "latency_ratio": ratio, "epoch": epoch, "val_top1": top1,
            "finetune_epochs": epochs, "threshold_top1": THRESHOLD, "feasible": feasible}


def run(stopper: EarlyStop, trial_id: str, ratio: float, curve: list[float], final: float,
        epochs: int = 4) -> list[str]:
    """Feed one trial's reports; the decisions the stopper took."""
    trial = SimpleNamespace(trial_id=trial_id)
    decisions = [stopper.on_trial_result(None, trial, result("latency", ratio, epochs=epochs))]
    for epoch, top1 in enumerate(curve, 1):
        if decisions[-1] == TrialScheduler.STOP:
            return decisions
        decisions.append(stopper.on_trial_result(
            None, trial, result("epoch", ratio, epoch, top1, epochs)))
    if decisions[-1] != TrialScheduler.STOP:
        stopper.on_trial_complete(None, trial, result("done", ratio, epochs, final, epochs,
                                                      feasible=final >= THRESHOLD))
    return decisions


def test_nothing_is_stopped_without_evidence() -> None:
    stopper = EarlyStop()
    # a terrible first curve: no finished curves yet, so it runs to the end
    assert TrialScheduler.STOP not in run(stopper, "a", 0.5, [10.0, 20.0, 30.0, 40.0], 45.0)
    assert stopper.curves == 1 and stopper.best_ratio == float("inf")  # infeasible


def test_a_trial_that_cannot_beat_the_best_feasible_stops_before_fine_tuning() -> None:
    stopper = EarlyStop()
    run(stopper, "fast", 0.3, [85.0, 88.0, 90.0, 91.0], 91.0)
    assert stopper.best_ratio == 0.3
    decisions = run(stopper, "slow", 0.4, [99.0] * 4, 99.0)
    assert decisions == [TrialScheduler.STOP]  # after its latency, before any epoch
    assert "no better than the best feasible" in stopper.reasons["slow"]
    assert run(stopper, "faster", 0.2, [85.0, 88.0, 90.0, 91.0], 91.0)[0] == \
        TrialScheduler.CONTINUE


def test_a_feasible_reference_is_the_ratio_to_beat_until_a_trial_beats_it() -> None:
    stopper = EarlyStop(reference_ratio=0.25)  # the baseline in int8, within the threshold
    assert run(stopper, "slower", 0.3, [99.0] * 4, 99.0) == [TrialScheduler.STOP]
    assert "no better than the baseline in int8's (the reference) 0.250" in \
        stopper.reasons["slower"]
    run(stopper, "faster", 0.2, [85.0, 88.0, 90.0, 91.0], 91.0)
    assert stopper.best_ratio == 0.2 and not stopper.best_is_reference
    run(stopper, "between", 0.22, [99.0] * 4, 99.0)
    assert "the best feasible trial's 0.200" in stopper.reasons["between"]
    restored = EarlyStop()
    restored.load(stopper.state())
    assert restored.best_ratio == 0.2 and not restored.best_is_reference


def test_a_curve_that_cannot_reach_the_threshold_stops_after_an_epoch() -> None:
    stopper = EarlyStop()
    for i in range(MIN_CURVES):  # finished curves: +6 points from epoch 1 to the end
        run(stopper, f"done{i}", 0.9 - 0.1 * i, [84.0, 87.0, 89.0, 90.0], 90.0)
    decisions = run(stopper, "hopeless", 0.1, [70.0, 75.0, 80.0, 85.0], 86.0)
    # judged late in its schedule only (epoch 3 of 4): mid-schedule top-1 is not a verdict
    assert decisions[-1] == TrialScheduler.STOP and len(decisions) == 4
    assert "under the threshold 90.00%" in stopper.reasons["hopeless"]
    assert "largest gain seen from there (+1.00)" in stopper.reasons["hopeless"]
    # one that could still make it (70 + 6 + slack is not enough; 84 + 6 is) runs on
    assert TrialScheduler.STOP not in run(stopper, "close", 0.1, [84.0, 87.0, 89.0, 90.0], 90.5)


def test_a_gain_that_is_a_loss_is_shown_with_its_sign() -> None:
    stopper = EarlyStop()
    for i in range(MIN_CURVES):  # finished curves lost a point after epoch 3 of 4
        run(stopper, f"done{i}", 0.9 - 0.1 * i, [84.0, 88.0, 91.0, 90.0], 90.0)
    run(stopper, "hopeless", 0.1, [80.0, 85.0, 89.0, 89.0], 89.0)
    assert "largest gain seen from there (-1.00) and 0.5 points" in stopper.reasons["hopeless"]


def test_the_last_epoch_is_never_cut() -> None:
    stopper = EarlyStop()
    for i in range(MIN_CURVES):
        run(stopper, f"done{i}", 0.9 - 0.1 * i, [89.0], 90.0, epochs=1)
    assert TrialScheduler.STOP not in run(stopper, "one", 0.1, [50.0], 50.0, epochs=1)
