"""The device's profile of a model: how each layer's time changes with the channels it keeps,
measured on the device in use, so per-layer allocation chooses from times, not MACs.

Measured cheaply: the model thinned uniformly to a few kept fractions (:data:`KEPT`), each
exported (and, for int8, quantised as a trial would), all benchmarked in one interleaved
session with OpenVINO's per-layer profile; each layer's time is then a function of the share
of its MACs it keeps (a layer keeping half its input and half its output channels keeps a
quarter), interpolated between the measured points; the ops no layer owns (pooling, adds,
reorders) scale with the whole model's MACs. Predictions are latency ratios against the f32
baseline's own profile. Cached per model, input size, class count and device (its name,
OpenVINO version, threads and precision: :func:`edge_tune.edge.bench.identity`).
"""

from __future__ import annotations

import bisect
import copy
import dataclasses
import hashlib
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edge_tune.compression.export import export_onnx
from edge_tune.compression.groups import Structure, layer_macs
from edge_tune.compression.layers import conv_layers
from edge_tune.compression.quantize import quantize
from edge_tune.compression.runner import apply_recipe
from edge_tune.config import Config
from edge_tune.core.files import write_atomic
from edge_tune.edge.bench import Measure
from edge_tune.edge.verify import OTHER, layer_ms, node_layers
from edge_tune.search.params import schedule_from_params

KEPT = (1.0, 0.75, 0.5, 0.25, 0.125)  # kept fraction of every conv's filters per variant
PRECISIONS = ("f32", "int8")


@dataclass(frozen=True)
class DeviceProfile:
    """Per-layer time (ms, batch 1) against the share of MACs a layer keeps, per precision."""

    identity: dict[str, str]  # the device it was measured on (bench.identity)
    layers: dict[str, dict[str, list[tuple[float, float]]]]  # precision -> layer -> (x, ms)
    other: dict[str, list[tuple[float, float]]]  # precision -> (model MACs fraction, ms)
    latency_ms: dict[str, list[float]]  # precision -> the variants' median ms, KEPT order
    parts: dict[str, list[float]]  # precision -> the variants' summed per-layer ms, KEPT order

    def parts_ms(self, layers: dict[str, float], macs_fraction: float, int8: bool) -> float:
        """The summed per-layer time of a model whose layers keep ``layers`` of their MACs."""
        precision = "int8" if int8 else "f32"
        curves = self.layers[precision]
        total = sum(_interp(curves[name], layers.get(name, 1.0)) for name in curves)
        return total + _interp(self.other[precision], macs_fraction)

    def latency(self, layers: dict[str, float], macs_fraction: float, int8: bool) -> float:
        """Predicted median latency (ms): the summed per-layer time mapped to latency by a
        line fitted through the variants (latency holds a per-inference overhead the
        per-layer profile does not show)."""
        precision = "int8" if int8 else "f32"
        parts = self.parts_ms(layers, macs_fraction, int8)
        slope, offset = np.polyfit(self.parts[precision], self.latency_ms[precision], 1)
        return float(slope * parts + offset) if slope > 0 else parts

    def ratio(self, layers: dict[str, float], macs_fraction: float, int8: bool) -> float:
        """Predicted latency of such a model / the f32 baseline's (same measurement)."""
        full = self.latency_ms["f32"][0]
        return self.latency(layers, macs_fraction, int8) / full if full else 1.0


def _interp(points: list[tuple[float, float]], x: float) -> float:
    """Linear between measured (x, ms) points (x ascending); below the lowest, the line of
    the two lowest (a layer's time has a part that does not shrink with its channels), never
    under half the lowest time; above the highest, its time."""
    xs = [p[0] for p in points]
    if x >= xs[-1] or len(points) == 1:
        return points[-1][1] if x >= xs[-1] else points[0][1]
    i = min(max(1, bisect.bisect_left(xs, x)), len(points) - 1)
    (x0, y0), (x1, y1) = points[i - 1], points[i]
    y = y0 + (y1 - y0) * (x - x0) / (x1 - x0) if x1 > x0 else y1
    return max(y, 0.5 * points[0][1]) if x < xs[0] else y


def variants(model: nn.Module, config: Config, example: torch.Tensor, folder: Path
             ) -> tuple[dict[str, Path], dict[str, dict[str, float]], dict[str, float]]:
    """The uniformly thinned variants' files (``f32_0.75``, ``int8_0.75``, ...), each
    layer's share of MACs kept, and each variant's whole-model MACs fraction."""
    full = layer_macs(model, example)
    files: dict[str, Path] = {}
    shares: dict[str, dict[str, float]] = {}
    totals: dict[str, float] = {}
    calibration = np.random.default_rng(0).standard_normal(
        (8, *example.shape[1:])).astype(np.float32)  # int8's graph does not depend on them
    for kept in KEPT:
        thinned = copy.deepcopy(model).cpu().eval()
        if kept < 1.0:
            schedule = schedule_from_params({"filter_ratio": 1.0 - kept}, (), 0)
            ratios = {conv: 1.0 - kept for conv in conv_layers(thinned)}
            apply_recipe(thinned, schedule.to_recipe(ratios, [], config.model, config.data.name),
                         example)
        macs = layer_macs(thinned, example)
        shares[str(kept)] = {k: macs.get(k, v) / v for k, v in full.items() if v}
        totals[str(kept)] = sum(macs.values()) / max(1, sum(full.values()))
        onnx = export_onnx(thinned, example, folder / f"f32_{kept}.onnx")
        files[f"f32_{kept}"] = onnx
        files[f"int8_{kept}"] = quantize(onnx, folder / f"int8_{kept}.xml", calibration,
                                         bias_correction=False)
    return files, shares, totals


def measure_profile(model: nn.Module, config: Config, identity: dict[str, str],
                    measure: Measure) -> DeviceProfile:
    """The profile of ``model`` at ``config``'s input size, measured with ``measure``."""
    model = copy.deepcopy(model).cpu().eval()  # variants are exported from CPU copies
    example = torch.zeros(1, 3, config.data.image_size, config.data.image_size)
    with tempfile.TemporaryDirectory(prefix="edge_tune_profile-") as folder:
        files, shares, totals = variants(model, config, example, Path(folder))
        names = {str(kept): node_layers(files[f"f32_{kept}"]) for kept in KEPT}
        measured = measure(files)
    layers: dict[str, dict[str, list[tuple[float, float]]]] = {p: {} for p in PRECISIONS}
    other: dict[str, list[tuple[float, float]]] = {p: [] for p in PRECISIONS}
    latency: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    parts: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    for name, (ms, rows) in measured.items():  # KEPT order, f32 and int8 alternating
        precision, kept = name.split("_")
        by_layer = layer_ms(rows, names[kept])  # an int8 IR keeps its ONNX's node names
        latency[precision].append(ms)
        parts[precision].append(sum(by_layer.values()))
        other[precision].append((totals[kept], by_layer.pop(OTHER, 0.0)))
        for layer, time in by_layer.items():
            if layer in shares[kept]:
                layers[precision].setdefault(layer, []).append((shares[kept][layer], time))
    for precision in PRECISIONS:
        other[precision].sort()
        for points in layers[precision].values():
            points.sort()
    return DeviceProfile(identity, layers, other, latency, parts)


def profile_key(config: Config, identity: dict[str, str], num_classes: int) -> str:
    """The cache key: model, input size, classes and the device's identity."""
    what = {"model": config.model, "size": config.data.image_size, "classes": num_classes,
            **identity}
    digest = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:12]
    return f"{config.model.rsplit('/', 1)[-1].replace(':', '_')}-{digest}"


def cached_profile(folder: Path, key: str, make: Callable[[], DeviceProfile]) -> DeviceProfile:
    """The profile cached under ``folder/key.json``, made (and cached) when absent."""
    path = folder / f"{key}.json"
    if path.is_file():
        raw = json.loads(path.read_text())
        return DeviceProfile(raw["identity"], {p: {k: [tuple(x) for x in v]
                                                   for k, v in layers.items()}
                                               for p, layers in raw["layers"].items()},
                             {p: [tuple(x) for x in v]
                              for p, v in raw["other"].items()}, raw["latency_ms"],
                             raw["parts"])
    profile = make()
    write_atomic(path, json.dumps(dataclasses.asdict(profile), indent=1))
    return profile


def predicted_ratio(profile: DeviceProfile, shape: Structure, kept: dict[str, float],
                    int8: bool) -> float:
    """The latency ratio the profile predicts for groups keeping ``kept`` of their filters."""
    layers = shape.layer_fractions(kept)
    return profile.ratio(layers, shape.macs_fraction(layers), int8)
