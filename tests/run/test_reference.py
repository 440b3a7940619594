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


@pytest.mark.parametrize(("speedup", "bounds", "keep", "dropped"), [
    (0.96, (0.0, 1.0), False, True),  # MobileNetV2 on this CPU: int8 slower, not searched
    (4.0, (0.0, 1.0), False, False),  # ResNet-20: int8 4x faster, searched
    (0.96, (0.0, 1.0), True, False),  # quantize.keep_slower_int8 keeps it
    (0.96, (0.5, 1.0), False, False)])  # a space that asks for int8 in every trial
def test_int8_slower_than_float_on_the_baseline_is_not_searched(
        speedup: float, bounds: tuple[float, float], keep: bool, dropped: bool) -> None:
    from edge_tune.config import config_from_dict
    from edge_tune.run.reference import float_only
    from edge_tune.search.space import SearchSpace

    config = config_from_dict({
        "quantize": {"keep_slower_int8": keep},
        "tune": {"points_to_evaluate": [{"latency_target": 0.5, "int8": 1.0},
                                        {"latency_target": 0.5, "int8": 0.0}]}})
    space = SearchSpace({"latency_target": (0.2, 0.8), "int8": bounds}, "s.yaml")
    result = float_only(config, space, dataclasses.replace(FAST, speedup=speedup))
    assert (result is not None) == dropped
    if result is not None:
        config, space = result
        assert space.bounds == {"latency_target": (0.2, 0.8)}
        assert config.tune.points_to_evaluate == [{"latency_target": 0.5}]


def test_a_space_of_int8_alone_keeps_it_even_where_int8_is_slower() -> None:
    from edge_tune.config import config_from_dict
    from edge_tune.run.reference import float_only
    from edge_tune.search.space import SearchSpace

    only = SearchSpace({"int8": (0.0, 1.0)}, "s.yaml")  # without it nothing is left to search
    assert float_only(config_from_dict({}), only,
                      dataclasses.replace(FAST, speedup=0.96)) is None


def test_the_reference_logs_its_ratio_under_the_trials_name() -> None:
    numbers = FAST.numbers()
    assert numbers["latency_ratio"] == pytest.approx(0.25) and numbers["speedup"] == 4.0
    assert numbers["feasible"] == 1.0 and "folder" not in numbers
