"""Having a set of model files measured on the device: at a benchmark actor (on the ncs
node, serialised with every other measurement) or on this machine (one-trial commands), both
as :data:`edge_tune.edge.bench.Measure`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

from edge_tune.edge import bench
from edge_tune.edge.actor import BenchCall, ModelFiles, model_files
from edge_tune.run.device_call import call_device


def on_actor(actor: Any, pinned: list[Any], settings: bench.BenchSettings,
             per_layer: bool) -> bench.Measure:
    """Measuring at ``actor`` (its baseline boxed in ``pinned``) with ``settings``."""
    def measure(paths: dict[str, Path]) -> dict[str, tuple[float, list[tuple[str, str, float]]]]:
        call = ray.get(actor.benchmark_set.remote(
            {name: model_files(path) for name, path in paths.items()}, per_layer=per_layer,
            baseline=pinned, settings=settings))
        return {name: (m.latency_ms, [(row.node, row.type, row.ms) for row in m.layers])
                for name, m in call.models.items()}
    return measure


def watched(name: str, where: str, pinned: list[Any], limit_s: float,
            settings: bench.BenchSettings) -> Callable[[dict[str, ModelFiles]], BenchCall]:
    """One call at the actor ``name`` (on ``where``) watched against ``limit_s`` as a
    trial's is (:func:`edge_tune.run.device_call.call_device`), without per-layer times."""
    def measure(models: dict[str, ModelFiles]) -> BenchCall:
        return call_device((name,), (where,), models, pinned, limit_s, per_layer=False,
                           settings=settings, device=settings.device).call
    return measure


def here(settings: bench.BenchSettings, per_layer: bool) -> bench.Measure:
    """Measuring on this machine's device with ``settings``."""
    def measure(paths: dict[str, Path]) -> dict[str, tuple[float, list[tuple[str, str, float]]]]:
        results = bench.benchmark_models(dict(paths), settings, per_layer=per_layer)
        return {name: (r.latency_ms, [(row.node, row.type, row.ms) for row in r.layers])
                for name, r in results.items()}
    return measure
