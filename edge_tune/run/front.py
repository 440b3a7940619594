"""The Pareto front of a run: the completed trials no other beats on both speed-up and
validation top-1, so a user picks a trade-off (0.5 points more loss for 2x more speed, say)
without a re-run. Written as ``pareto.json`` in the run folder, listed under the console's
closing table and marked in the report's plot. Trials the stopper ended have no final
accuracy and are not on it; the run's reference (the baseline in int8) is, where nothing
beats it (id ``reference``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from edge_tune.run.ledger import TrialRow
from edge_tune.search.params import format_params

T = TypeVar("T")
FRONT = "pareto.json"


def pareto_front(points: Sequence[T], cost: Callable[[T], float],
                 value: Callable[[T], float]) -> list[T]:
    """The points none other beats (a lower cost with at least the same value), cheapest
    first; of equal costs, the higher value."""
    front: list[T] = []
    for point in sorted(points, key=lambda p: (cost(p), -value(p))):
        if not front or value(point) > value(front[-1]):
            front.append(point)
    return front


def trial_front(rows: list[TrialRow], out: Path) -> list[dict[str, Any]]:
    """The completed trials on the front (speed-up against validation top-1, fastest first),
    as ``pareto.json`` entries: parameters, figures and the folder of the trial's files
    (relative to the run folder where it lies inside it)."""
    done = [r for r in rows if r.status == "completed" and r.result is not None
            and r.result.val_top1 is not None and r.result.probe is not None
            and r.result.deployed is not None]
    front = pareto_front(done, _ratio, _top1)
    entries = []
    for row in front:
        result = row.result
        assert result is not None and result.probe is not None and result.deployed is not None
        entries.append({
            "id": row.id, "params": row.params, "shown": format_params(row.params),
            "speedup": result.probe.speedup, "val_top1": result.val_top1,
            "latency_ms": result.probe.latency_ms, "macs": result.deployed.macs,
            "int8": result.int8, "feasible": result.feasible,
            "files": _relative(row.checkpoint, out)})
    return entries


def with_entry(entries: list[dict[str, Any]], extra: dict[str, Any]) -> list[dict[str, Any]]:
    """The front of ``entries`` and one more point (a front entry), fastest first."""
    return pareto_front([*entries, extra], lambda e: 1.0 / e["speedup"],
                        lambda e: e["val_top1"])


def write_front(entries: list[dict[str, Any]], out: Path) -> Path:
    (out / FRONT).write_text(json.dumps(entries, indent=2))
    return out / FRONT


def front_lines(entries: list[dict[str, Any]], threshold: float) -> list[str]:
    """The front as console lines, fastest first."""
    lines = [f"Pareto front (speed-up vs validation top-1, {len(entries)} models, {FRONT}):"]
    for e in entries:
        mark = "" if e["val_top1"] >= threshold else "  (below threshold)"
        lines.append(f"  {e['speedup']:6.2f}x {e['val_top1']:7.2f}%  {e['shown']}  "
                     f"{e['files'] or ''}{mark}")
    return lines


def _ratio(row: TrialRow) -> float:
    return row.result.latency_ratio if row.result is not None else float("inf")


def _top1(row: TrialRow) -> float:
    top1 = row.result.val_top1 if row.result is not None else None
    return top1 if top1 is not None else 0.0


def _relative(path: str | None, out: Path) -> str | None:
    if path is None:
        return None
    try:
        return str(Path(path).resolve().relative_to(out.resolve()))
    except ValueError:
        return path
