"""The channel multiple a device runs well, measured on it (``prune.channel_multiple: auto``).

Latency does not grow smoothly with a layer's channel count: on a CPU with AVX-512 two 3x3
convs at 16 channels ran in 0.14 ms and at 17 in 0.21 ms, at 32 in 0.35 ms and at 33 in
0.48 ms (docs/measurement.md). The probe times two 3x3 convs C -> C (with ReLUs, at the data's
image size, batch 1) for every C up to :data:`PROBE_WIDTH` on the device in one interleaved
session, and picks the multiple M whose crossing costs the most: the mean latency jump from
k x M channels to k x M + 1 over its multiples. A device with no such steps (every candidate
below :data:`MIN_JUMP`) gets 1: counts as the ratio gives them.
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from edge_tune.compression.export import export_onnx
from edge_tune.config import Config
from edge_tune.edge.bench import BenchSettings, Measure

PROBE_WIDTH = 64  # channels: the widest probe (it must span several multiples of 16)
CANDIDATES = (2, 4, 8, 16, 32)  # multiples judged (each needs a multiple + 1 in the probe)
MIN_JUMP = 1.1  # a mean step below this (10% slower for one channel more) is no step
SIMILAR = 0.05  # a larger multiple must jump this much more to be preferred to a finer one
# the probe's own measurement: many small models, so fewer timed inferences than a trial's
PROBE_BENCH = {"iterations": 100, "rounds": 2, "fps_seconds": 0.0, "max_sessions": 1,
               "warmup": 20}


@dataclass(frozen=True)
class Multiple:
    """What the probe measured and the multiple it chose."""

    multiple: int
    latency_ms: dict[int, float]  # channels -> median ms of the two convs
    jumps: dict[int, float]  # candidate multiple -> mean latency ratio from kM to kM + 1


def probe_models(image_size: int, folder: Path) -> dict[str, Path]:
    """ONNX files of two 3x3 convs C -> C with ReLUs for C = 1..PROBE_WIDTH, by ``str(C)``."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for width in range(1, PROBE_WIDTH + 1):
        torch.manual_seed(width)
        pair = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                             nn.Conv2d(width, width, 3, padding=1), nn.ReLU()).eval()
        out[str(width)] = export_onnx(pair, torch.zeros(1, width, image_size, image_size),
                                      folder / f"channels{width}.onnx", fold=False)
    return out


def pick_multiple(latency_ms: dict[int, float]) -> Multiple:
    """The multiple whose crossing costs the most (see the module docstring)."""
    jumps = {}
    for m in CANDIDATES:
        steps = [latency_ms[k + 1] / latency_ms[k] for k in range(m, PROBE_WIDTH, m)
                 if k + 1 in latency_ms and k in latency_ms]
        if steps:
            jumps[m] = statistics.mean(steps)
    best = 1
    for m in sorted(jumps):  # finest first: a coarser one must be clearly steeper
        if jumps[m] >= MIN_JUMP and (best == 1 or jumps[m] > jumps[best] * (1 + SIMILAR)):
            best = m
    return Multiple(best, dict(latency_ms), jumps)


def probe_settings(settings: BenchSettings) -> BenchSettings:
    """The benchmark settings of the probe: the device, threads and precision of
    ``settings``, fewer timed inferences."""
    return dataclasses.replace(settings, **PROBE_BENCH)  # type: ignore[arg-type]


def resolve_multiple(config: Config, measure: Measure) -> tuple[Config, Multiple | None]:
    """``config`` with ``prune.channel_multiple: auto`` replaced by the multiple measured
    with ``measure`` (on the device, with :func:`probe_settings`), and what was measured; a
    config with a number is returned as it is."""
    if config.prune.channel_multiple != "auto":
        return config, None
    with tempfile.TemporaryDirectory(prefix="edge_tune_channels-") as folder:
        latency = measure(probe_models(config.data.image_size, Path(folder)))
    chosen = pick_multiple({int(k): ms for k, (ms, _) in latency.items()})
    return dataclasses.replace(config, prune=dataclasses.replace(
        config.prune, channel_multiple=chosen.multiple)), chosen
