"""The Pareto front: what none beats on both cost and value, cheapest first."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from edge_tune.run.front import front_lines, pareto_front, trial_front, with_entry, write_front
from edge_tune.run.ledger import trial_row
from edge_tune.search.result import Deployed, Probe, TrialResult


def test_the_front_keeps_what_nothing_beats() -> None:
    points = [(1.0, 90.0), (0.5, 85.0), (0.5, 80.0), (0.7, 84.0), (0.3, 70.0), (0.9, 95.0)]
    front = pareto_front(points, lambda p: p[0], lambda p: p[1])
    assert front == [(0.3, 70.0), (0.5, 85.0), (0.9, 95.0)]
    assert pareto_front([], lambda p: p, lambda p: p) == []


def _trial(trial_id: str, ratio: float, top1: float, phase: str = "done") -> dict:
    probe = Probe(ratio, ratio, 1.0, 0.0, 0.0, 1, 1.0, 1 / ratio, 0.0, 1, None, 1, 0.0, 0.0,
                  0.0, 0.0, "n", "ip")
    result = TrialResult("latency", ratio, 90.0, finetune_epochs=3, probe=probe)
    if phase == "done":
        result = dataclasses.replace(result, phase="done", epoch=3, val_top1=top1,
                                     deployed=Deployed(99.0, 95.0, 1, 1, True, 3, 1.0, "cpu"))
    return result.metrics()


def test_the_trial_front_lists_completed_trials_with_their_files(tmp_path: Path) -> None:
    rows = [trial_row("slow", "completed", {"filter_ratio": 0.1}, _trial("slow", 0.9, 96.0),
                      checkpoint=str(tmp_path / "ray" / "slow")),
            trial_row("fast", "completed", {"filter_ratio": 0.7}, _trial("fast", 0.3, 88.0),
                      checkpoint=str(tmp_path / "ray" / "fast")),
            trial_row("dominated", "completed", {"filter_ratio": 0.5},
                      _trial("dominated", 0.8, 87.0)),
            trial_row("stopped", "stopped", {"filter_ratio": 0.9},
                      _trial("stopped", 0.1, 0.0, phase="latency"))]
    entries = trial_front(rows, tmp_path)
    assert [e["id"] for e in entries] == ["fast", "slow"]  # fastest first; stopped left out
    assert entries[0]["files"] == "ray/fast" and entries[0]["speedup"] == 1 / 0.3
    assert not entries[0]["feasible"] and entries[1]["feasible"]
    assert json.loads(write_front(entries, tmp_path).read_text()) == entries
    lines = front_lines(entries, 90.0)
    assert lines[0].startswith("Pareto front (speed-up vs validation top-1, 2 models")
    assert "filter_ratio=0.70" in lines[1] and lines[1].endswith("(below threshold)")
    # the run's reference (the baseline in int8): on the front where nothing beats it, and
    # what it beats leaves
    reference = {"id": "reference", "speedup": 2.0, "val_top1": 97.0, "files": "reference"}
    assert [e["id"] for e in with_entry(entries, reference)] == ["fast", "reference"]
    behind = {**reference, "speedup": 1.0, "val_top1": 95.0}  # slow: 1.11x, 96%
    assert [e["id"] for e in with_entry(entries, behind)] == ["fast", "slow"]
