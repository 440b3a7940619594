"""The benchmark actor: one per edge device, serialising every measurement on it.

A plain class (Ray wraps it with ``ray.remote`` in ``edge_tune.tune``) that imports only the
torch-free ``bench`` module, so the edge node needs no training stack. It holds the baseline
model and benchmarks each candidate interleaved with it, so every speed-up compares two numbers
taken on the same device moments apart.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edge_tune import bench

ACTOR_NAME = "edge_tune_bench"  # the actor on the first ncs node; others get _1, _2, ...
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
    """Benchmarks models on ``settings.device`` against the baseline it was started with.

    Ray runs it as a threaded actor so that ``queue_length`` and ``info`` answer while a
    measurement runs; a lock lets one measurement at a time reach the device.
    """

    def __init__(self, baseline: ModelFiles, settings: bench.BenchSettings) -> None:
        bench.check_device(settings.device)
        self.settings = settings
        self.folder = Path(tempfile.mkdtemp(prefix="edge_tune_bench-"))
        self.baseline = _write(baseline, self.folder / "baseline")
        self.calls = 0
        self.queued = 0  # calls waiting for the device or being measured
        self._device = threading.Lock()  # one measurement at a time
        self._count = threading.Lock()
        self._metrics: Metrics | None = None

    def queue_length(self) -> int:
        """Benchmark calls waiting for the device or being measured."""
        return self.queued

    def load(self) -> tuple[int, int]:
        """(calls queued or running, calls served so far): the least loaded actor gets a trial."""
        return self.queued, self.calls

    def benchmark(self, files: ModelFiles, per_layer: bool = True) -> dict[str, Any]:
        """Measure ``files`` and the baseline, interleaved; figures in ms, batch 1.

        Returns ``model`` and ``baseline`` summaries, both models' per-layer rows, and when the
        measurement started and ended (s, epoch) so callers can check nothing overlapped.
        """
        out = self.benchmark_set({"model": files}, per_layer)
        model, baseline = out.pop("models")["model"], out.pop("baseline")
        return {"model": model["summary"], "baseline": baseline["summary"],
                "layers": model["layers"], "baseline_layers": baseline["layers"], **out}

    def benchmark_set(self, models: dict[str, ModelFiles],
                      per_layer: bool = True) -> dict[str, Any]:
        """Measure several models and the baseline in one interleaved session (ms, batch 1),
        so every ratio between them compares numbers taken side by side."""
        metrics = self._meter()
        with self._count:
            self.queued += 1
            call = self.calls = self.calls + 1
        metrics.queue(self.queued)
        try:
            with self._device:
                started = time.time()
                results = self._measure(models, per_layer, call)
                ended = time.time()
        finally:
            with self._count:
                self.queued -= 1
            metrics.queue(self.queued)
        metrics.done(ended - started, len(models))
        baseline = results.pop("baseline")
        return {"baseline": baseline, "models": results, "started": started, "ended": ended,
                "call": call, "node_id": self.info()["node_id"], "pid": os.getpid()}

    def _measure(self, models: dict[str, ModelFiles], per_layer: bool,
                 call: int) -> dict[str, dict[str, Any]]:
        folder = self.folder / f"call{call}"
        paths = {name: _write(files, folder / str(i))
                 for i, (name, files) in enumerate(models.items())}
        try:
            results, noise, sessions = self._calmest(paths, per_layer)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return {name: {"summary": {**r.summary(), "ratio_cv": noise.get(name, 0.0),
                                   "sessions": sessions},
                       "layers": [asdict(x) for x in r.layers]}
                for name, r in results.items()}

    def _calmest(self, paths: dict[str, Path], per_layer: bool
                 ) -> tuple[dict[str, bench.BenchResult], dict[str, float], int]:
        """Interleaved sessions until every model's ratio to the baseline is steady (per-round
        ratio CV <= max_ratio_cv) or max_sessions ran; the calmest session is kept."""
        best: tuple[float, dict[str, bench.BenchResult], dict[str, float]] | None = None
        sessions = 0
        for sessions in range(1, self.settings.max_sessions + 1):  # noqa: B007
            results = bench.benchmark_models({"baseline": self.baseline, **paths},
                                             self.settings, per_layer=per_layer)
            noise = {n: bench.ratio_cv(results[n], results["baseline"]) for n in paths}
            worst = max(noise.values(), default=0.0)
            if best is None or worst < best[0]:
                best = (worst, results, noise)
            if worst <= self.settings.max_ratio_cv:
                break
        assert best is not None
        return best[1], best[2], sessions

    def _meter(self) -> Metrics:
        if self._metrics is None:
            self._metrics = Metrics(self.settings.device)
        return self._metrics

    def info(self) -> dict[str, Any]:
        """Where the actor runs: Ray node id, host, process id, device, calls served."""
        import ray

        in_ray = ray.is_initialized()  # get_runtime_context() would start a local Ray
        return {"node_id": ray.get_runtime_context().get_node_id() if in_ray else None,
                "host": socket.gethostname(), "pid": os.getpid(),
                "device": self.settings.device, "calls": self.calls}


class Metrics:
    """The actor's Ray metrics (Prometheus names get Ray's ``ray_`` prefix); no-ops outside Ray."""

    def __init__(self, device: str) -> None:
        import ray

        self.enabled = ray.is_initialized()
        if not self.enabled:
            return
        from ray.util import metrics

        tags = {"device": device}
        self.queue_gauge = metrics.Gauge(
            "edge_tune_bench_queue_length", "benchmark calls waiting for or on the device",
            tag_keys=("device",))
        self.seconds = metrics.Histogram(
            "edge_tune_bench_duration_s", "one benchmark call on the device (s)",
            boundaries=[0.5, 1, 2, 5, 10, 30, 60], tag_keys=("device",))
        self.count = metrics.Counter(
            "edge_tune_models_benchmarked", "models benchmarked on the device",
            tag_keys=("device",))
        for metric in (self.queue_gauge, self.seconds, self.count):
            metric.set_default_tags(tags)

    def queue(self, length: int) -> None:
        if self.enabled:
            self.queue_gauge.set(length)

    def done(self, seconds: float, models: int = 1) -> None:
        if self.enabled:
            self.seconds.observe(seconds)
            self.count.inc(models)
