"""OpenVINO benchmark of ONNX models: batch-1 latency, throughput and per-layer times.

Imports only openvino and numpy (never torch) so an edge node runs it without a training stack.
Every model is compiled with the same fixed settings: LATENCY hint, one stream, a fixed thread
count and, where the device has the property, an explicit inference precision (OpenVINO runs f32
models in bf16 on CPUs that have it unless told otherwise).
"""

from __future__ import annotations

import csv
import statistics
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from edge_tune.core.errors import UserError, first_line


@dataclass(frozen=True)
class BenchSettings:
    """Measurement settings (mirrors ``bench`` in the config; torch-free for edge nodes)."""

    device: str = "CPU"
    threads: int = 1
    precision: str = "f32"
    warmup: int = 50
    iterations: int = 300
    rounds: int = 5
    fps_seconds: float = 0.25
    max_ratio_cv: float = 0.05  # repeat a session whose per-round ratios vary more than this
    max_sessions: int = 3
    # s a benchmark call may hold the device before its actor is ended and restarted (a hung
    # device call cannot be interrupted from inside); 0 = derived by the tuner from one whole
    # call of the baseline (edge_tune.run.device_call.call_limit)
    call_limit_s: float = 0.0
    # s a run waits for an ncs node with the device when every one has left the cluster;
    # then it stops (exit code 75) and --resume continues once the device is back
    device_wait_s: float = 300.0
    # several devices on one ncs node: a node that advertises ncs: N runs N benchmark actors,
    # the i-th on devices[i] (e.g. [GPU.0, GPU.1]); empty: every actor on ``device``. Actors
    # that share a node's CPU (device CPU) each keep their own ``threads`` cores
    devices: tuple[str, ...] = ()


# model files by name -> (median ms, per-layer (node, type, ms) rows) by name: how the torch
# side has a set of models measured on the device (at the actor, or on this machine)
Measure = Callable[[dict[str, Path]], dict[str, tuple[float, list[tuple[str, str, float]]]]]


@dataclass(frozen=True)
class LayerTime:
    """One executed node from OpenVINO's profiling: real time in ms per batch-1 inference."""

    node: str
    type: str
    kernel: str
    ms: float


@dataclass
class BenchResult:
    """Latency statistics of one model (ms, batch 1) and its per-layer breakdown."""

    latency_ms: float  # median
    latency_p90_ms: float
    latency_mean_ms: float
    cv: float  # coefficient of variation of the timed samples (std / mean)
    fps: float  # asynchronous throughput, frames per second
    samples: int
    rounds: list[float] = field(default_factory=list)  # median of each interleaved round (ms)
    layers: list[LayerTime] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The scalar figures (no per-layer rows)."""
        return {k: v for k, v in asdict(self).items() if k not in ("layers", "rounds")}


def _core() -> Any:
    return ov.Core()


def check_device(device: str) -> None:
    """Raise a UserError listing the available devices when ``device`` is not one of them."""
    available = list(_core().available_devices)
    requested = [d for d in device.replace("AUTO:", "").replace("MULTI:", "")
                 .replace("HETERO:", "").split(",") if d]
    for name in requested:
        base = name.split(".")[0]
        if name not in available and base not in {a.split(".")[0] for a in available}:
            raise UserError(f"bench.device: {device!r} is not available here; "
                            f"available: {', '.join(available)}")


def identity(settings: BenchSettings) -> dict[str, str]:
    """What a measurement on ``settings.device`` depends on besides the model: the device and
    its full name (the CPU model, say), OpenVINO's version, threads and precision; a key for
    cached device measurements."""
    core = _core()
    name = settings.device.split(":")[-1].split(",")[0]
    try:
        full = str(core.get_property(name, "FULL_DEVICE_NAME"))
    except RuntimeError:
        full = name
    return {"device": settings.device, "device_name": full, "openvino": ov.get_version(),
            "threads": str(settings.threads), "precision": settings.precision}


def compile_settings(core: Any, settings: BenchSettings,
                     perf_count: bool = False) -> dict[str, Any]:
    """The OpenVINO properties used for every compiled model on ``settings.device``."""
    supported = set(core.get_property(settings.device.split(":")[-1].split(",")[0],
                                      "SUPPORTED_PROPERTIES"))
    wanted: dict[str, Any] = {
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
        "INFERENCE_NUM_THREADS": settings.threads,
        "INFERENCE_PRECISION_HINT": settings.precision,
        "ENABLE_CPU_PINNING": True,  # the inference thread stays on one core: less jitter
        "PERF_COUNT": perf_count,
    }
    return {k: v for k, v in wanted.items() if k in supported}


# compiled models kept for the next session: the actor's baseline is measured in every call
# (about 0.5 s of compiling per call for ResNet-20, timing and profiling); a few entries, so
# each call's candidate is dropped soon after its folder is deleted
_COMPILED: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
_KEEP_COMPILED = 4


def compile_model(path: str | Path, settings: BenchSettings, perf_count: bool = False) -> Any:
    """Read an ONNX (or IR) model and compile it with the fixed settings (the same file,
    unchanged, with the same settings is compiled once)."""
    stat = Path(path).stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size, settings, perf_count)
    if key in _COMPILED:
        _COMPILED.move_to_end(key)
        return _COMPILED[key]
    check_device(settings.device)
    core = _core()
    model = core.read_model(str(path))
    try:
        compiled = core.compile_model(model, settings.device,
                                      compile_settings(core, settings, perf_count))
    except RuntimeError as err:
        raise RuntimeError(f"OpenVINO could not compile {Path(path).name} for "
                           f"{settings.device}: {first_line(err)}") from err
    _COMPILED[key] = compiled
    while len(_COMPILED) > _KEEP_COMPILED:
        _COMPILED.popitem(last=False)
    return compiled


def _input(compiled: Any, seed: int = 0) -> np.ndarray:
    shape = [int(d) for d in compiled.input(0).get_partial_shape().get_min_shape()]
    shape[0] = 1  # batch 1
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _timed(request: Any, count: int) -> list[float]:
    """``count`` synchronous inferences of the request's preset input; wall time each in ms."""
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        request.infer()
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


def _fps(compiled: Any, data: np.ndarray, seconds: float) -> float:
    """Throughput from an asynchronous queue of the device's optimal number of requests."""
    if seconds <= 0:
        return 0.0
    jobs = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
    queue = ov.AsyncInferQueue(compiled, jobs)
    done = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(jobs):
            queue.start_async({0: data})
        queue.wait_all()
        done += jobs
    return done / (time.perf_counter() - start)


PROFILE_RUNS = 30  # profiled inferences per model, after the warm-up


def _profiles(paths: dict[str, str | Path], settings: BenchSettings,
              inputs: dict[str, np.ndarray]) -> dict[str, list[LayerTime]]:
    """Per-layer real times (ms) of every model: the median over profiled inferences taken in
    turns across the models (as the timed rounds are, so drift hits all alike), after a
    warm-up; executed nodes only."""
    compiled = {name: compile_model(path, settings, perf_count=True)
                for name, path in paths.items()}
    requests = {name: c.create_infer_request() for name, c in compiled.items()}
    for name, request in requests.items():
        for _ in range(settings.warmup):
            request.infer({0: inputs[name]})
    times: dict[str, dict[tuple[str, str, str], list[float]]] = {n: {} for n in paths}
    for _ in range(PROFILE_RUNS):
        for name, request in requests.items():
            request.infer({0: inputs[name]})
            for info in request.get_profiling_info():
                if str(info.status).endswith("EXECUTED") and "NOT" not in str(info.status):
                    key = (info.node_name, info.node_type, info.exec_type)
                    times[name].setdefault(key, []).append(
                        info.real_time.total_seconds() * 1e3)
    return {name: [LayerTime(n, t, k, float(statistics.median(ms)))
                   for (n, t, k), ms in per.items()] for name, per in times.items()}


def _stats(samples: list[float], fps: float, layers: list[LayerTime],
           rounds: list[float]) -> BenchResult:
    arr = np.asarray(samples)
    mean = float(arr.mean())
    return BenchResult(latency_ms=float(statistics.median(samples)),
                       latency_p90_ms=float(np.percentile(arr, 90)),
                       latency_mean_ms=mean, cv=float(arr.std() / mean) if mean else 0.0,
                       fps=fps, samples=len(samples), rounds=rounds, layers=layers)


def benchmark_models(paths: dict[str, str | Path], settings: BenchSettings,
                     per_layer: bool = True) -> dict[str, BenchResult]:
    """Benchmark several models in one session, interleaved so drift hits all alike.

    Each model is warmed up, then the models take turns in ``settings.rounds`` blocks of
    ``iterations / rounds`` timed batch-1 inferences; median and p90 are over all blocks.
    """
    compiled = {name: compile_model(path, settings) for name, path in paths.items()}
    requests = {name: c.create_infer_request() for name, c in compiled.items()}
    inputs = {name: _input(c) for name, c in compiled.items()}
    for name, request in requests.items():
        request.set_input_tensor(ov.Tensor(inputs[name]))
        _timed(request, settings.warmup)
    per_round = max(1, settings.iterations // settings.rounds)
    samples: dict[str, list[float]] = {name: [] for name in paths}
    rounds: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(settings.rounds):
        for name, request in requests.items():
            timed = _timed(request, per_round)
            samples[name] += timed
            rounds[name].append(float(statistics.median(timed)))
    profiles = _profiles(paths, settings, inputs) if per_layer else {}
    results = {}
    for name in paths:
        fps = _fps(compiled[name], inputs[name], settings.fps_seconds)
        results[name] = _stats(samples[name], fps, profiles.get(name, []), rounds[name])
    return results


def ratio_cv(model: BenchResult, baseline: BenchResult) -> float:
    """Coefficient of variation of the per-round latency ratios model / baseline: how much
    the speed-up the tuner acts on moved within one interleaved session."""
    ratios = np.asarray(model.rounds) / np.asarray(baseline.rounds)
    return float(ratios.std() / ratios.mean()) if len(ratios) > 1 else 0.0


def write_layers_csv(layers: list[LayerTime], path: str | Path) -> Path:
    """Per-layer times as CSV (node, type, kernel, ms), slowest first."""
    out = Path(path)
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["node", "type", "kernel", "ms"])
        for layer in sorted(layers, key=lambda x: -x.ms):
            writer.writerow([layer.node, layer.type, layer.kernel, f"{layer.ms:.6f}"])
    return out


def infer(path: str | Path, inputs: np.ndarray, settings: BenchSettings,
          batch: int = 64) -> np.ndarray:
    """Logits of ``inputs`` (N, C, H, W) through the deployed model, ``batch`` at a time: a
    static batch shape (the last batch padded) and OpenVINO's THROUGHPUT hint with an async
    queue, so every core works (ResNet-20 f32 on 9,000 images: 2.5-3.5x faster than one
    dynamic-shape request on 2 cores; the same logits)."""
    core = _core()
    model = core.read_model(str(path))
    model.reshape({model.input(0).get_any_name(): ov.PartialShape([batch, *inputs.shape[1:]])})
    properties = {k: v for k, v in compile_settings(core, settings).items()
                  if k == "INFERENCE_PRECISION_HINT"}
    compiled = core.compile_model(model, settings.device,
                                  {**properties, "PERFORMANCE_HINT": "THROUGHPUT"})
    count = len(inputs)
    pad = (-count) % batch
    if pad:
        inputs = np.concatenate([inputs, np.zeros((pad, *inputs.shape[1:]), inputs.dtype)])
    out: list[np.ndarray] = [np.empty(0)] * (len(inputs) // batch)
    queue = ov.AsyncInferQueue(compiled)

    def keep(request: ov.InferRequest, index: int) -> None:
        out[index] = request.get_output_tensor(0).data.copy()

    queue.set_callback(keep)
    for index in range(len(out)):
        queue.start_async({0: inputs[index * batch:(index + 1) * batch]}, index)
    queue.wait_all()
    return np.concatenate(out)[:count]
