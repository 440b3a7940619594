"""The run's reference (the baseline in int8): what the console says of it, and whether a
trial beat it, decided once for the closing table and the report."""

from __future__ import annotations

import dataclasses

import pytest

from edge_tune.run.reference import Reference
from edge_tune.run.runs import beaten, reference_notes

FAST = Reference(val_top1=90.0, test_top1=89.5, latency_ms=0.1, baseline_latency_ms=0.4,
                 speedup=4.0, feasible=True, macs=1, folder="reference")


def test_the_console_line_says_what_the_reference_does_to_the_trials() -> None:
    assert FAST.ratio == pytest.approx(0.25)
    assert "90.00%, 0.100 ms, 4.00x" in FAST.line()
    assert "trials no faster than it stop before fine-tuning" in FAST.line(stopping=True)
    off = FAST.line(stopping=False)
    assert "stop before fine-tuning" not in off and "tune.early_stop is off" in off
    assert "under the threshold" in dataclasses.replace(FAST, feasible=False).line()
    slow = dataclasses.replace(FAST, speedup=0.9).line(stopping=False)
    assert "slower than the baseline in float" in slow and "early_stop" not in slow


@pytest.mark.parametrize(("reference", "best", "expected"), [
    (FAST, {"feasible": True, "speedup": 4.5}, True),
    (FAST, {"feasible": True, "speedup": 3.9}, False),
    (FAST, {"feasible": False, "speedup": 9.0}, False),  # faster, but under the threshold
    (FAST, None, False),  # no trial completed
    (dataclasses.replace(FAST, feasible=False), {"feasible": True, "speedup": 2.0}, None),
    (dataclasses.replace(FAST, speedup=0.9), {"feasible": True, "speedup": 0.5}, None),
    (None, {"feasible": True, "speedup": 2.0}, None)])
def test_whether_a_trial_beat_the_reference_is_one_answer_for_table_and_report(
        reference: Reference | None, best: dict | None, expected: bool | None) -> None:
    summary = {"reference": reference.summary() if reference else None, "best": best}
    assert beaten(summary) is expected
    notes = reference_notes(summary)
    assert ("The best trial beat it" in " ".join(notes)) == (expected is True)
    assert ("No trial beat it" in " ".join(notes)) == (expected is False)
    assert bool(notes) == (reference is not None)
