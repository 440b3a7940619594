"""trials.jsonl: one line per finished trial, appended and flushed as each finishes, rewritten
whole when the run ends, and read back on ``--resume`` so that a trial the console reported as
finished is never run twice.

A line is a :class:`TrialRow`: id, status (completed, stopped, error), parameters, the trial's
last result flattened (``metrics``: edge_tune's keys, Tune's own left out, None values
dropped), its error or the reason it was stopped, and its checkpoint folder.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edge_tune.search.result import TrialResult, read_result

TRIALS = "trials.jsonl"
# interrupted: in flight when the run stopped for a lost device; --resume runs it again
Status = Literal["completed", "stopped", "error", "interrupted"]


@dataclass(frozen=True)
class TrialRow:
    """One finished trial, as trials.jsonl holds it."""

    id: str
    status: Status
    params: dict[str, float]
    result: TrialResult | None  # its last report (None: it errored before any)
    error: str | None = None  # the error's last line
    reason: str | None = None  # why it was stopped
    checkpoint: str | None = None  # its folder of files (completed trials)

    def to_json(self) -> dict[str, Any]:
        metrics = {} if self.result is None else {
            k: v for k, v in self.result.metrics().items()
            if isinstance(v, int | float | bool | str)}
        return {"id": self.id, "status": self.status, "params": self.params,
                "metrics": metrics, "error": self.error, "reason": self.reason,
                "checkpoint": self.checkpoint}

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> TrialRow:
        return cls(row["id"], row["status"], row["params"], read_result(row["metrics"]),
                   row.get("error"), row.get("reason"), row.get("checkpoint"))


def trial_row(trial_id: str, status: Status, params: dict[str, Any],
              metrics: dict[str, Any] | None, error: str | None = None,
              reason: str | None = None, checkpoint: str | None = None) -> TrialRow:
    """The one row builder: a trial's last report (Tune's dict) as a :class:`TrialRow`; a
    stopped trial's reason is what the stopper recorded, else what a replayed result
    carries."""
    result = read_result(metrics)
    if status == "stopped":
        replayed = result.replay.reason if result is not None and result.replay else ""
        reason = reason or replayed or "stopped by the scheduler"
    return TrialRow(trial_id, status, {k: float(v) for k, v in params.items()}, result, error,
                    reason, checkpoint)


def append(path: Path, row: TrialRow) -> None:
    """One line, flushed and synced to disk before the caller says anything of it."""
    with path.open("a") as handle:
        handle.write(json.dumps(row.to_json()) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def write(path: Path, rows: list[TrialRow]) -> None:
    """The whole file, one line per trial."""
    with path.open("w") as handle:
        for row in rows:
            handle.write(json.dumps(row.to_json()) + "\n")


def read_rows(path: Path) -> list[TrialRow]:
    """The lines of a trials.jsonl (none when it does not exist yet)."""
    if not path.is_file():
        return []
    return [TrialRow.from_json(json.loads(line)) for line in path.read_text().splitlines()
            if line.strip()]


def params_key(params: dict[str, Any]) -> str:
    """Parameters as a key that finds the same point again (rounded to 1e-9)."""
    return json.dumps({k: round(float(v), 9) for k, v in sorted(params.items())})


@dataclass(frozen=True)
class Ledger:
    """Trials a killed run finished, read back on resume: by trial id and by parameters."""

    by_id: dict[str, TrialRow]
    by_params: dict[str, TrialRow]

    @classmethod
    def read(cls, path: Path) -> Ledger:
        done = [r for r in read_rows(path) if r.status in ("completed", "stopped")]
        return cls({r.id: r for r in done}, {params_key(r.params): r for r in done})

    def find(self, trial_id: str, params: dict[str, Any]) -> TrialRow | None:
        return self.by_id.get(trial_id) or self.by_params.get(params_key(params))


def seconds_saved(rows: list[TrialRow]) -> float:
    """Fine-tuning time the stopped trials did not spend (s): their epochs left times the
    median seconds per epoch of the completed trials."""
    per_epoch = [r.result.deployed.timings["compress_s"] / r.result.deployed.epochs_run
                 for r in rows if r.status == "completed" and r.result is not None
                 and r.result.deployed is not None and r.result.deployed.epochs_run
                 and "compress_s" in r.result.deployed.timings]
    if not per_epoch:
        return 0.0
    left = sum(r.result.finetune_epochs - r.result.epoch for r in rows
               if r.status == "stopped" and r.result is not None and r.result.finetunes)
    return float(left * np.median(per_epoch))
