"""trials.jsonl: one row builder, lines that read back as written, the ledger a resumed run
replays from, and the fine-tuning seconds that stopping saved."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from edge_tune.run.ledger import Ledger, append, read_rows, seconds_saved, trial_row, write
from edge_tune.search.result import Deployed, Probe, Replay, TrialResult

PROBE = Probe(0.2, 0.25, 4000.0, 0.05, 0.01, 1, 0.5, 2.5, 0.3, 7, None, 42, 1.0, 2.0, 0.4,
              0.2, "n2", "127.0.0.1")
LATENCY = TrialResult("latency", 0.4, 90.0, finetune_epochs=6, probe=PROBE)
DONE = dataclasses.replace(LATENCY, phase="done", epoch=4, val_top1=91.0, deployed=Deployed(
    99.0, 92.0, 10_000, 300, True, 4, 12.5, "cpu", {"compress_s": 8.0}))


def test_rows_read_back_as_written_with_nones_dropped(tmp_path: Path) -> None:
    path = tmp_path / "trials.jsonl"
    rows = [trial_row("a", "completed", {"filter_ratio": 0.5}, DONE.metrics(),
                      checkpoint="/ckpt/a"),
            trial_row("b", "stopped", {"filter_ratio": 0.1}, LATENCY.metrics(),
                      reason="too slow"),
            trial_row("c", "error", {"filter_ratio": 0.2}, None, error="boom")]
    for row in rows:
        append(path, row)
    assert read_rows(path) == rows
    line = json.loads(path.read_text().splitlines()[1])
    assert "val_top1" not in line["metrics"] and "bench_node_id" not in line["metrics"]
    assert line["reason"] == "too slow" and line["metrics"]["phase"] == "latency"
    write(path, rows[:1])
    assert [r.id for r in read_rows(path)] == ["a"]


def test_a_stopped_row_says_why() -> None:
    assert trial_row("s", "stopped", {}, LATENCY.metrics()).reason == "stopped by the scheduler"
    replayed = dataclasses.replace(LATENCY, replay=Replay("s0", "", "no better than the best"))
    assert trial_row("s", "stopped", {}, replayed.metrics()).reason == "no better than the best"


def test_the_ledger_finds_a_finished_trial_by_id_or_parameters(tmp_path: Path) -> None:
    path = tmp_path / "trials.jsonl"
    append(path, trial_row("a", "completed", {"filter_ratio": 0.5, "int8": 1.0}, DONE.metrics()))
    append(path, trial_row("e", "error", {"filter_ratio": 0.3}, None, error="boom"))
    ledger = Ledger.read(path)
    assert ledger.find("a", {}) is not None
    found = ledger.find("other", {"int8": 1, "filter_ratio": 0.5000000001})
    assert found is not None and found.result == DONE
    assert ledger.find("e", {"filter_ratio": 0.3}) is None  # an error is run again


def test_seconds_saved_counts_the_epochs_stopped_trials_did_not_run() -> None:
    rows = [trial_row("a", "completed", {}, DONE.metrics()),  # 8 s for 4 epochs: 2 s each
            trial_row("b", "stopped", {}, LATENCY.metrics()),  # 6 epochs left
            trial_row("c", "stopped", {}, dataclasses.replace(
                LATENCY, phase="epoch", epoch=5, val_top1=50.0).metrics())]  # 1 left
    assert seconds_saved(rows) == 14.0
    assert seconds_saved(rows[1:]) == 0.0  # no completed trial: no rate
