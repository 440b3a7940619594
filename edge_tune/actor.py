"""The benchmark actor: one per edge device, serialising every measurement on it.

A plain class (Ray wraps it with ``ray.remote`` in ``edge_tune.tune``) that imports only the
torch-free ``bench`` module, so the edge node needs no training stack. It holds the baseline
model and benchmarks each candidate interleaved with it, so every speed-up compares two numbers
taken on the same device moments apart.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edge_tune import bench

ACTOR_NAME = "edge_tune_bench"
NAMESPACE = "edge_tune"

ModelFiles = dict[str, bytes]  # file name -> content; the first entry is the model to load


def model_files(path: str | Path) -> ModelFiles:
    """The bytes of a model file (ONNX, or IR ``.xml`` with its ``.bin``), entry first."""
    entry = Path(path)
    files = {entry.name: entry.read_bytes()}
    if entry.suffix == ".xml":
        files[entry.with_suffix(".bin").name] = entry.with_suffix(".bin").read_bytes()
    return files


def _write(files: ModelFiles, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / Path(name).name).write_bytes(content)
    return folder / Path(next(iter(files))).name


class BenchActor:
    """Benchmarks models on ``settings.device`` against the baseline it was started with."""

    def __init__(self, baseline: ModelFiles, settings: bench.BenchSettings) -> None:
        bench.check_device(settings.device)
        self.settings = settings
        self.folder = Path(tempfile.mkdtemp(prefix="edge_tune_bench-"))
        self.baseline = _write(baseline, self.folder / "baseline")
        self.calls = 0

    def benchmark(self, files: ModelFiles, per_layer: bool = True) -> dict[str, Any]:
        """Measure ``files`` and the baseline, interleaved; figures in ms, batch 1.

        Returns ``model`` and ``baseline`` summaries, the model's per-layer rows, and when the
        measurement started and ended (s, epoch) so callers can check nothing overlapped.
        """
        started = time.time()
        self.calls += 1
        path = _write(files, self.folder / f"call{self.calls}")
        try:
            results = bench.benchmark_models({"baseline": self.baseline, "model": path},
                                             self.settings, per_layer=per_layer)
        finally:
            for file in path.parent.iterdir():
                file.unlink()
            path.parent.rmdir()
        return {"model": results["model"].summary(), "baseline": results["baseline"].summary(),
                "layers": [asdict(layer) for layer in results["model"].layers],
                "started": started, "ended": time.time(), "call": self.calls}

    def info(self) -> dict[str, Any]:
        """Where the actor runs: Ray node id, host, process id, device, calls served."""
        import ray

        in_ray = ray.is_initialized()  # get_runtime_context() would start a local Ray
        return {"node_id": ray.get_runtime_context().get_node_id() if in_ray else None,
                "host": socket.gethostname(), "pid": os.getpid(),
                "device": self.settings.device, "calls": self.calls}
