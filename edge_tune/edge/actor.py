"""The benchmark actor: one per edge device, serialising every measurement on it.

A plain class (Ray wraps it with ``ray.remote`` in :mod:`edge_tune.run.cluster`; the one-trial
commands call it in-process) that imports only the torch-free ``bench`` module, so the edge
node needs no training stack: this module is on the edge side of the torch-free boundary. It
holds the baseline model and benchmarks each candidate interleaved with it, so every speed-up
compares two numbers taken on the same device moments apart. Answers are dataclasses
(:class:`BenchCall` of :class:`Measurement`), not nested dicts.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray.util import metrics

from edge_tune.edge import bench
from edge_tune.edge.process import publish

ACTOR_NAME = "edge_tune_bench"  # the actor on the first ncs node; others get _1, _2, ...
NAMESPACE = "edge_tune"

ModelFiles = dict[str, bytes]  # file name -> content; the first entry is the model to load


@dataclass(frozen=True)
class Measurement:
    """One model in one benchmark call: latency (ms, batch 1), throughput, steadiness, layers."""

    latency_ms: float  # median
    latency_p90_ms: float
    latency_mean_ms: float
    cv: float  # std / mean of the timed samples
    fps: float  # asynchronous throughput
    samples: int
    ratio_cv: float  # CV of the per-round latency ratios to the baseline (0 for the baseline)
    sessions: int  # interleaved sessions run before the ratios were steady
    layers: list[bench.LayerTime] = field(default_factory=list)  # per-layer profile

    def summary(self) -> dict[str, Any]:
        """The scalar figures (no per-layer rows), for JSON results."""
        return {k: v for k, v in asdict(self).items() if k != "layers"}


@dataclass(frozen=True)
class BenchCall:
    """What one benchmark call answers: every model and the baseline, measured side by side."""

    baseline: Measurement
    models: dict[str, Measurement]
    started: float  # s since the epoch, when the device was taken
    ended: float
    call: int  # this actor's call number (1, 2, ...)
    node_id: str | None  # Ray node the actor runs on (None outside Ray)
    pid: int

    def speedup(self, name: str = "model") -> float:
        """Baseline latency / the model's (median, same session)."""
        return self.baseline.latency_ms / self.models[name].latency_ms


def model_files(path: str | Path) -> ModelFiles:
    """The bytes of a model file (ONNX, or IR ``.xml`` with its ``.bin``), entry first."""
    entry = Path(path)
    files = {entry.name: entry.read_bytes()}
    if entry.suffix == ".xml":
        files[entry.with_suffix(".bin").name] = entry.with_suffix(".bin").read_bytes()
    return files


def pin_to(cores: set[int]) -> None:
    """Every thread of this process (and the threads they start later) on ``cores`` only."""
    for task in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(task), cores)
        except (ProcessLookupError, PermissionError):  # a thread that ended meanwhile
            continue


def keep_cores(count: int, slot: int = 0) -> list[int]:
    """Pin this process to ``count`` cores of those it may use, counted from the last: the
    last ``count`` for ``slot`` 0, the ``count`` before them for slot 1 (a second device on
    the node)... or all of them when too few are left. The cores, which trials on this node
    then keep off."""
    allowed = sorted(os.sched_getaffinity(0))
    end = len(allowed) - slot * count
    kept = allowed[end - count:end] if end - count >= 0 and count < len(allowed) else allowed
    pin_to(set(kept))
    return kept


def _write(files: ModelFiles, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / Path(name).name).write_bytes(content)
    return folder / Path(next(iter(files))).name


class BenchActor:
    """Benchmarks models on ``settings.device`` against the baseline it was started with.

    Ray runs it as a threaded actor so that ``load`` and ``info`` answer while a measurement
    runs; a lock lets one measurement at a time reach the device.
    """

    def __init__(self, baseline: ModelFiles | None, settings: bench.BenchSettings,
                 reserve: int = 0, slot: int = 0) -> None:
        """``baseline``: its files, or None when every call brings it (a Ray actor: see
        :func:`edge_tune.run.cluster.start_actors`). ``reserve``: cores this process keeps to
        itself (the last of those it may use; trials on its node keep off them: see
        :func:`pin_to`), when trials run concurrently beside the device or several devices
        share the node's CPU. ``slot``: which of its node's devices it serves (0, 1, ...)."""
        publish()  # first: a process frozen from here on can still be ended by pid
        self.slot = slot
        self.cores = keep_cores(reserve, slot) if reserve else []
        bench.check_device(settings.device)
        self.settings = settings
        self.identity = bench.identity(settings)  # what its measurements depend on
        self.folder = Path(tempfile.mkdtemp(prefix="edge_tune_bench-"))
        # the baseline's files (up to 0.5 GB for AlexNet) go with the actor, or at exit
        weakref.finalize(self, shutil.rmtree, str(self.folder), True)
        self.baseline: Path | None = None if baseline is None else \
            _write(baseline, self.folder / "baseline")
        self._baseline_lock = threading.Lock()
        self.calls = 0
        self.queued = 0  # calls waiting for the device or being measured
        self._device = threading.Lock()  # one measurement at a time
        self._count = threading.Lock()
        self._metrics: Metrics | None = None
        self._running: dict[str, float] = {}  # token -> monotonic s when it took the device

    def progress(self, token: str) -> float | None:
        """Seconds the call named ``token`` has held the device (None: not on it: queued,
        done, or never seen by this process)."""
        started = self._running.get(token)
        return None if started is None else time.monotonic() - started

    def load(self) -> tuple[int, int]:
        """(calls queued or running, calls served so far): the least loaded actor gets a trial."""
        return self.queued, self.calls

    def benchmark(self, files: ModelFiles, per_layer: bool = True,
                  baseline: list[Any] | None = None) -> BenchCall:
        """Measure ``files`` (as ``model``) and the baseline, interleaved (ms, batch 1)."""
        return self.benchmark_set({"model": files}, per_layer, baseline)

    def benchmark_set(self, models: dict[str, ModelFiles], per_layer: bool = True,
                      baseline: list[Any] | None = None,
                      settings: bench.BenchSettings | None = None,
                      token: str | None = None, steady: tuple[str, ...] = ()) -> BenchCall:
        """Measure several models and the baseline in one interleaved session (ms, batch 1),
        so every ratio between them compares numbers taken side by side; ``started`` and
        ``ended`` let callers check that no two measurements overlapped.

        ``baseline``: ``[ObjectRef of the baseline's files]``, read the first time this
        process needs it (a fresh or restarted actor); boxed in a list so Ray passes the
        reference, not the bytes, on every call. ``settings``: this call's (fewer
        iterations, say; its device must be the actor's), else the actor's own. ``token``:
        the caller's name for this call, whose device time :meth:`progress` tells.
        ``steady``: the models whose ratio must be steady for a session to stand (none given:
        all of them); the others are measured alongside.
        """
        if settings is not None and settings.device != self.settings.device:
            raise ValueError(f"this actor measures on {self.settings.device}, not "
                             f"{settings.device}")
        self._load_baseline(baseline)
        metrics = self._meter()
        with self._count:
            self.queued += 1
            call = self.calls = self.calls + 1
        metrics.queue(self.queued)
        try:
            with self._device:
                started = time.time()
                if token is not None:
                    self._running[token] = time.monotonic()
                results = self._measure(models, per_layer, call, settings or self.settings,
                                        steady)
                ended = time.time()
        finally:
            self._running.pop(token or "", None)
            with self._count:
                self.queued -= 1
            metrics.queue(self.queued)
        metrics.done(ended - started, len(models))
        base = results.pop("baseline")
        return BenchCall(base, results, started, ended, call, self.info()["node_id"],
                         os.getpid())

    def _load_baseline(self, box: list[Any] | None) -> None:
        with self._baseline_lock:
            if self.baseline is not None:
                return
            if not box:
                raise RuntimeError("the benchmark actor has no baseline model: pass "
                                   "baseline=[ObjectRef of its files] with the call")
            self.baseline = _write(ray.get(box[0]), self.folder / "baseline")

    def _measure(self, models: dict[str, ModelFiles], per_layer: bool, call: int,
                 settings: bench.BenchSettings, steady: tuple[str, ...] = ()
                 ) -> dict[str, Measurement]:
        folder = self.folder / f"call{call}"
        paths = {name: _write(files, folder / str(i))
                 for i, (name, files) in enumerate(models.items())}
        try:
            results, noise, sessions = self._calmest(paths, per_layer, settings, steady)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return {name: Measurement(**r.summary(), ratio_cv=noise.get(name, 0.0),
                                  sessions=sessions, layers=r.layers)
                for name, r in results.items()}

    def _calmest(self, paths: dict[str, Path], per_layer: bool, settings: bench.BenchSettings,
                 steady: tuple[str, ...] = ()
                 ) -> tuple[dict[str, bench.BenchResult], dict[str, float], int]:
        """Interleaved sessions until every model's (of ``steady``, when given) ratio to the
        baseline is steady (per-round ratio CV <= max_ratio_cv) or max_sessions ran; the
        calmest session is kept."""
        best: tuple[float, dict[str, bench.BenchResult], dict[str, float]] | None = None
        sessions = 0
        if self.baseline is None:
            raise RuntimeError("no baseline model loaded")
        for sessions in range(1, settings.max_sessions + 1):  # noqa: B007
            results = bench.benchmark_models({"baseline": self.baseline, **paths},
                                             settings, per_layer=per_layer)
            noise = {n: bench.ratio_cv(results[n], results["baseline"]) for n in paths}
            worst = max((v for n, v in noise.items() if not steady or n in steady),
                        default=0.0)
            if best is None or worst < best[0]:
                best = (worst, results, noise)
            if worst <= settings.max_ratio_cv:
                break
        assert best is not None  # max_sessions >= 1 (config)
        return best[1], best[2], sessions

    def _meter(self) -> Metrics:
        if self._metrics is None:
            self._metrics = Metrics(self.settings.device)
        return self._metrics

    def info(self) -> dict[str, Any]:
        """Where the actor runs: Ray node id and address, host, process id, device, calls
        served."""
        in_ray = ray.is_initialized()  # get_runtime_context() would start a local Ray
        return {"node_id": ray.get_runtime_context().get_node_id() if in_ray else None,
                "node_ip": ray.util.get_node_ip_address() if in_ray else None,
                "host": socket.gethostname(), "pid": os.getpid(),
                "device": self.settings.device, "calls": self.calls,
                "identity": self.identity, "cores": self.cores, "slot": self.slot}


class Metrics:
    """The actor's Ray metrics (Prometheus names get Ray's ``ray_`` prefix); no-ops outside Ray."""

    def __init__(self, device: str) -> None:
        self.enabled = ray.is_initialized()
        if not self.enabled:
            return
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
