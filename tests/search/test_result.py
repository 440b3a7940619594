"""The typed trial result: flattened once for Ray, read back the same, its objective and
feasibility as the penalty objective defines them."""

from __future__ import annotations

import dataclasses

import pytest

from edge_tune.search.objective import PENALTY, objective
from edge_tune.search.result import Deployed, Probe, Replay, TrialResult, read_result

PROBE = Probe(0.2, 0.25, 4000.0, 0.05, 0.01, 1, 0.5, 2.5, 0.3, 7, "n1", 42, 1.0, 2.0, 0.4,
              0.2, "n2", "127.0.0.1")
LATENCY = TrialResult("latency", 0.4, 90.0, finetune_epochs=4, int8=True, probe=PROBE)


def test_every_phase_round_trips_through_the_flat_dict() -> None:
    done = dataclasses.replace(
        LATENCY, phase="done", epoch=4, val_top1=91.0,
        deployed=Deployed(99.1, 92.0, 10_000, 300, True, 4, 12.5, "cpu",
                          {"compress_s": 8.0, "export_s": 0.2}))
    for result in (LATENCY, dataclasses.replace(LATENCY, phase="epoch", epoch=2,
                                                val_top1=80.0, epoch_s=1.5),
                   done, dataclasses.replace(done, replay=Replay("t1", "/ckpt", ""))):
        flat = result.metrics()
        assert TrialResult.of(flat) == result
        assert TrialResult.of({**flat, "training_iteration": 3, "pid": 1}) == result  # Tune's


def test_the_keys_are_those_of_trials_jsonl() -> None:
    flat = LATENCY.metrics()
    assert {"latency_ratio", "threshold_top1", "latency_ms", "baseline_latency_ms", "speedup",
            "bench_wait_s", "trial_node_ip", "finetune_epochs", "int8", "finetunes", "phase",
            "epoch", "val_top1", "objective"} <= set(flat)
    assert flat["val_top1"] is None and "feasible" not in flat  # accuracy not known yet


def test_objective_and_feasibility() -> None:
    assert LATENCY.objective == 0.4 and not LATENCY.feasible  # the ratio, before accuracy
    above = dataclasses.replace(LATENCY, phase="done", val_top1=90.5)
    below = dataclasses.replace(LATENCY, phase="done", val_top1=88.0)
    assert above.feasible and above.objective == pytest.approx(0.4)
    assert not below.feasible and below.objective == pytest.approx(
        objective(88.0, 0.2, 0.5, 90.0)) and below.objective > PENALTY
    assert not dataclasses.replace(above, phase="epoch").feasible  # finished trials only


def test_a_dict_without_a_result_reads_as_none() -> None:
    assert read_result(None) is None and read_result({}) is None
    assert read_result({"trial_id": "x", "done": True}) is None
    minimal = read_result({"latency_ratio": 0.5, "threshold_top1": 90.0, "val_top1": 95.0})
    assert minimal is not None and minimal.phase == "done" and minimal.feasible


def test_a_trial_that_raised_reports_its_error_and_what_it_measured() -> None:
    early = TrialResult("error", float("nan"), 90.0, error="OSError: no data")
    flat = early.metrics()
    assert flat["phase"] == "error" and flat["trial_error"] == "OSError: no data"
    assert "latency_ratio" not in flat  # nothing was measured; Tune insists on an objective
    assert flat["objective"] != flat["objective"]  # NaN: no searcher learns from an error
    assert read_result(flat) is None  # no searcher or stopper learns from it
    late = TrialResult("error", 0.4, 90.0, error="RuntimeError: diverged", int8=True)
    back = TrialResult.of(late.metrics())
    assert back.phase == "error" and back.error == "RuntimeError: diverged"
    assert back.latency_ratio == 0.4 and not back.feasible
