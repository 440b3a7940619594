"""Having a set of model files measured on the device: at a benchmark actor (on the ncs
node, serialised with every other measurement) or on this machine (one-trial commands), both
as :data:`edge_tune.edge.bench.Measure`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ray

from edge_tune.edge import bench
from edge_tune.edge.actor import model_files


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


def here(settings: bench.BenchSettings, per_layer: bool) -> bench.Measure:
    """Measuring on this machine's device with ``settings``."""
    def measure(paths: dict[str, Path]) -> dict[str, tuple[float, list[tuple[str, str, float]]]]:
        results = bench.benchmark_models(dict(paths), settings, per_layer=per_layer)
        return {name: (r.latency_ms, [(row.node, row.type, row.ms) for row in r.layers])
                for name, r in results.items()}
    return measure
