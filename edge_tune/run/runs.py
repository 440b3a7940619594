"""A finished run read back from its directory, study or tune alike, for its report: one
:class:`Point` per model (the baseline, each study method, each completed tune trial) and the
per-layer times of the models the report compares."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_tune.core.errors import UserError
from edge_tune.edge.verify import layer_ms, node_layers
from edge_tune.run.front import FRONT
from edge_tune.run.ledger import TRIALS, TrialRow, read_rows
from edge_tune.search.params import format_params


@dataclass(frozen=True)
class Point:
    """One model of a run: its accuracy, latency (ms, batch 1) and size."""

    name: str  # the method, or a tune trial's parameters as a person reads them
    top1: float  # % as deployed (tune: validation)
    latency_ms: float | None  # median (None: a tune run with no completed trial)
    latency_p90_ms: float | None
    speedup: float
    macs: int
    params: int
    reached: bool = True  # the compression is in both the ONNX file and OpenVINO's model
    int8: bool = False
    family: str = ""  # study: sparsity | structure | quantisation | composed | baseline
    smaller_layers: int | None = None  # study: layers physically smaller
    sparse_layers: int | None = None  # study: layers all zeros
    objective: float = 0.0  # tune
    config: dict[str, float] = field(default_factory=dict)  # tune: the trial's parameters
    id: str = ""  # tune: the trial's id


@dataclass
class Run:
    """What a report needs from a run directory, study or tune alike."""

    kind: str  # study | tune
    folder: Path
    points: list[Point]  # one per method (study) or completed trial (tune)
    baseline: Point
    threshold: float
    layers: dict[str, dict[str, float]] = field(default_factory=dict)  # series -> layer -> ms
    params: list[str] = field(default_factory=list)  # tune: the searched parameter names
    stopped: list[TrialRow] = field(default_factory=list)  # tune: trials stopped early
    front: list[str] = field(default_factory=list)  # tune: ids of the trials on the front
    notes: list[str] = field(default_factory=list)  # tune: the device's side of the run
    reference: Point | None = None  # tune: the baseline in int8, measured before the trials


def _layer_ms(rows: list[dict[str, str]], names: dict[str, str]) -> dict[str, float]:
    """Per-layer ms of a layers.csv by the model's layer names (study rows name the layer)."""
    return layer_ms(((row.get("layer") or row["node"], row["type"], float(row["ms"]))
                     for row in rows), names)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _method(row: dict[str, Any]) -> Point:
    """A row of study.json."""
    return Point(row["method"], row["top1"], row.get("latency_ms"), row.get("latency_p90_ms"),
                 row["speedup"], row["macs"], row["params"], row.get("reached", True),
                 bool(row.get("int8")), row.get("family", ""), row.get("smaller_layers"),
                 row.get("sparse_layers"))


def load_study(folder: Path) -> Run:
    study = json.loads((folder / "study.json").read_text())
    rows = study["rows"]
    layers: dict[str, list[dict[str, str]]] = defaultdict(list)
    if (folder / "layers.csv").is_file():
        for row in _read_csv(folder / "layers.csv"):
            layers[row["method"]].append(row)
    return Run("study", folder, [_method(r) for r in rows if r["method"] != "baseline"],
               _method(rows[0]), study["threshold_top1"],
               {m: _layer_ms(rs, {}) for m, rs in layers.items()})


def _trial(row: TrialRow) -> Point | None:
    """A completed trial of trials.jsonl (None: it has no final result)."""
    result = row.result
    if result is None or result.probe is None or result.deployed is None \
            or result.val_top1 is None:
        return None
    probe, deployed = result.probe, result.deployed
    return Point(format_params(row.params), result.val_top1, probe.latency_ms,
                 probe.latency_p90_ms, probe.speedup, deployed.macs, deployed.params,
                 deployed.reached, result.int8, objective=result.objective, config=row.params,
                 id=row.id)


def load_tune(folder: Path) -> Run:
    summary = json.loads((folder / "summary.json").read_text())
    trials = read_rows(folder / TRIALS)
    # a tune run's top-1 is validation top-1 (what chose the best); test was measured once
    points = [p for p in (_trial(t) for t in trials if t.status == "completed") if p]
    layers = {}
    best = folder / "best"
    if (best / "layers.csv").is_file() and (best / "model.onnx").is_file():
        names = node_layers(best / "model.onnx")
        layers["best"] = _layer_ms(_read_csv(best / "layers.csv"), names)
        if (best / "baseline_layers.csv").is_file():
            base_onnx = folder / "baseline" / "baseline.onnx"
            base_names = node_layers(base_onnx) if base_onnx.is_file() else names
            layers = {"baseline": _layer_ms(_read_csv(best / "baseline_layers.csv"),
                                            base_names), **layers}
    b = summary["baseline"]
    baseline = Point("baseline", b["val_top1"], b.get("latency_ms"), b.get("latency_p90_ms"),
                     1.0, b["macs"], b["params"], family="baseline")
    stopped = [t for t in trials if t.status == "stopped"]
    front = json.loads((folder / FRONT).read_text()) if (folder / FRONT).is_file() else []
    ref = summary.get("reference")
    reference = None if not ref else Point(
        "the baseline in int8, not fine-tuned", ref["val_top1"], ref["latency_ms"], None,
        ref["speedup"], ref["macs"], b["params"], int8=True, id="reference")
    return Run("tune", folder, points, baseline, summary["threshold"]["top1"], layers,
               list(summary["search_space"]["bounds"]), stopped, [e["id"] for e in front],
               reference_notes(summary) + device_notes(summary), reference)


def beaten(summary: Mapping[str, Any]) -> bool | None:
    """Whether the run's best trial beat its reference within the threshold (faster than it,
    at or above the threshold); None when there was none to beat (not measured, under the
    threshold, or slower than the baseline in float)."""
    ref, best = summary.get("reference"), summary.get("best")
    if not ref or not ref["to_beat"]:
        return None
    return bool(best and best["feasible"] and best["speedup"] > ref["speedup"])


def reference_notes(summary: dict[str, Any]) -> list[str]:
    """What the run's reference (the baseline in int8) was and whether a trial beat it."""
    ref = summary.get("reference")
    if not ref:
        return []
    note = (f"Reference: the baseline in int8, nothing removed, not fine-tuned "
            f"({ref['folder']}/): validation top-1 {ref['val_top1']:.2f}% at "
            f"{ref['speedup']:.2f}x.")
    outcome = beaten(summary)
    if outcome:
        note += f" The best trial beat it ({summary['best']['speedup']:.2f}x)."
    elif outcome is False:
        note += " No trial beat it within the threshold: it is the fastest model found."
    return [note]


def queue_label(key: str) -> str:
    """A ``bench_queue`` key as said: the node id's first 8 characters, then ``/actor`` when
    the node has several devices."""
    node, _, actor = key.partition("/")
    return node[:8] + (f"/{actor}" if actor else "")


def device_notes(summary: dict[str, Any]) -> list[str]:
    """Sentences on the device's side of a tune run: its queue, its hangs, int8 it ran
    slower than float."""
    notes = [f"Benchmark queue on node {queue_label(node)}: {q['calls']} calls, waited "
             f"{q['wait_s_median']:.1f} s in the median ({q['wait_s_max']:.1f} s at most) for "
             f"the device, busy {100 * q['busy_share']:.0f}% of its span."
             for node, q in summary.get("bench_queue", {}).items()]
    if summary.get("device_hangs"):
        notes.append(f"The device hung {summary['device_hangs']} time(s) "
                     "(bench.call_limit_s): its actor was ended and restarted each time; "
                     "trials.jsonl names the trials that failed for it.")
    if summary.get("trials_int8_slower"):
        notes.append(f"{summary['trials_int8_slower']} int8 trial(s) ran slower in int8 than "
                     "in float on the device and were deployed in float.")
    return notes


def load_run(folder: str | Path) -> Run:
    """A study (study.json) or tune (summary.json + trials.jsonl) run directory."""
    path = Path(folder)
    if (path / "study.json").is_file():
        return load_study(path)
    if (path / "summary.json").is_file() and (path / TRIALS).is_file():
        return load_tune(path)
    raise UserError(f"RUN_DIR: {str(path)!r} holds neither study.json nor summary.json + "
                    f"{TRIALS} (a study or tune output directory)")
