"""The Ray Tune trainable: one tuner trial, latency first, as a plain chain of stage functions.

The graph is fixed once filters are removed and int8 is chosen; fine-tuning changes weights,
not latency. So a trial plans its compression once, benchmarks the pruned graph and reports
(the stopper may end a trial that cannot beat the best feasible one there), then reports
validation top-1 after each fine-tuning epoch (the stopper may end a curve that cannot reach
the threshold), then the deployed model's accuracy and files. Every report is one
:class:`~edge_tune.search.result.TrialResult`, flattened where Tune takes it.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import openvino as ov
import ray
import torch
from ray import tune

from edge_tune.catalog.data import load_data
from edge_tune.catalog.models import model_stages
from edge_tune.catalog.splits import Splits, take
from edge_tune.compression.deployment import Artifact, Images, arrays, deploy_graph
from edge_tune.compression.distill import Teacher, teacher_for
from edge_tune.compression.plan import (
    CompressionPlan,
    build,
    compress,
    in_float,
    plan_compression,
)
from edge_tune.compression.train import device_for, evaluate, set_threads
from edge_tune.config import Config
from edge_tune.core.errors import last_line
from edge_tune.edge import bench
from edge_tune.edge.actor import BenchCall, ModelFiles, model_files, pin_to
from edge_tune.run.context import TrialContext
from edge_tune.run.device_call import Watched, call_device
from edge_tune.run.ledger import Ledger
from edge_tune.search.params import schedule_from_params
from edge_tune.search.result import Deployed, Probe, Replay, TrialResult

PROBE_CALIBRATION = 8  # images: int8 of the latency probe (its graph does not depend on them)
EPOCH_VAL_IMAGES = 2000  # validation images evaluated (torch, f32) after each epoch
# DataConfig -> (Splits, validation images), kept across trials of a reused worker
_SPLITS: dict[Any, tuple[Splits, Images]] = {}


def trainable(params: dict[str, float], context: TrialContext, ledger: Ledger) -> None:
    """One trial (see the module docstring). A trial the ledger holds as finished (a resumed
    run whose state missed it) reports its recorded result again instead of running twice."""
    done = ledger.find(tune.get_context().get_trial_id(), params)
    if done is not None and done.result is not None:
        tune.report(dataclasses.replace(done.result, replay=Replay(
            done.id, done.checkpoint or "", done.reason or "")).metrics())
        return
    started = time.time()
    config = context.config
    reserved = context.reserved_cores.get(ray.get_runtime_context().get_node_id(), ())
    free = set(os.sched_getaffinity(0)) - set(reserved)
    if reserved and free:  # beside a device: off the cores it measures on
        pin_to(free)
    # the trial's own CPUs, not the node's: concurrent trials must not oversubscribe it
    set_threads(config.train_threads or max(1, int(config.tune.trial_cpus)))
    splits, val = load_splits(config)
    model = context.base_model(splits.num_classes)
    schedule = schedule_from_params(params, model_stages(config.model), config.finetune.epochs)
    plan = plan_compression(schedule, model, config, context.allocator)
    teacher = teacher_for(config.finetune.distill, context.base_model(splits.num_classes),
                          splits.num_classes) if schedule.distill else None
    out = Path(tempfile.mkdtemp(prefix="edge_tune_trial-"))
    latency: TrialResult | None = None
    try:  # a trial stopped by the scheduler ends inside tune.report (SystemExit): clean up
        measured, latency, plan = probe_latency(model, plan, splits, context, out)
        tune.report(latency.metrics())
        artifact, epochs_run = fine_tune(model, plan, splits, context, out, val, latency,
                                         teacher)
        if artifact.float_layers:  # int8 under quantize.max_drop: not the probe's graph
            measured, latency = remeasure(artifact, context, latency)
        result = dataclasses.replace(
            latency, phase="done", epoch=epochs_run, val_top1=artifact.top1,
            deployed=Deployed(artifact.top5, context.baseline_top1, artifact.macs,
                              artifact.params, all(c.reached for c in artifact.verification),
                              epochs_run, time.time() - started,
                              str(device_for(model)),  # where it was compressed, trained
                              artifact.timings, len(artifact.float_layers)))
        write_files(artifact, plan, measured, out)
        tune.report(result.metrics(), checkpoint=tune.Checkpoint.from_directory(str(out)))
    except Exception as err:  # noqa: BLE001  its own fault: reported as its last result, so
        # that Tune's retries (tune.max_failures) go to lost processes and nodes only
        tune.report(failed(latency, context, err).metrics())
    finally:
        shutil.rmtree(out, ignore_errors=True)


def failed(latency: TrialResult | None, context: TrialContext, err: Exception) -> TrialResult:
    """A trial's last report when it raised: its latency figures when it got that far, the
    exception's type and last line (phase ``error``)."""
    error = f"{type(err).__name__}: {last_line(err)}"[:500]
    if latency is not None:
        return dataclasses.replace(latency, phase="error", error=error)
    return TrialResult("error", float("nan"), context.threshold_top1, error=error)


def load_splits(config: Config) -> tuple[Splits, Images]:
    """The splits and the validation images, loaded once per worker process."""
    if config.data not in _SPLITS:
        _SPLITS.clear()
        loaded = load_data(config.data)
        _SPLITS[config.data] = loaded, arrays(loaded.val)
    return _SPLITS[config.data]


def probe_latency(model: torch.nn.Module, plan: CompressionPlan, splits: Splits,
                  context: TrialContext, out: Path
                  ) -> tuple[BenchCall, TrialResult, CompressionPlan]:
    """Compress a copy of ``model`` without fine-tuning, deploy its graph (int8 calibrated on
    :data:`PROBE_CALIBRATION` images), benchmark it at the actor against the baseline: the
    measurement (ms, batch 1), the trial's first report (phase ``latency``) and the plan to
    carry out (an int8 graph slower than its float twin: the plan in float, see
    :func:`faster_precision`)."""
    asked = time.time()
    probe = copy.deepcopy(model)
    compress(probe, plan, splits, context.config, log=lambda _: None, finetune=False)
    probe_compress_s = time.time() - asked
    asked = time.time()
    graph = deploy_graph(probe, plan.schedule.int8, splits.image_size, out,
                         arrays(splits.train, PROBE_CALIBRATION)[0])
    graph_s = time.time() - asked
    del probe
    models = {"model": model_files(graph)}
    if plan.schedule.int8:  # the same graph in float, measured in the same session
        models["float"] = model_files(graph.with_name("probe.onnx"))
    asked = time.time()
    # the float twin only tells whether int8 pays: its noise does not repeat the session
    watched = measure_at_actor(context, models, steady=("model",))
    measured = watched.call
    for probe_file in out.glob("probe*"):  # measured: not part of the trial's files
        probe_file.unlink()
    measured, plan, int8_vs_float = faster_precision(
        measured, plan, context.config.quantize.keep_slower_int8)
    model_m, base_m = measured.models["model"], measured.baseline
    speedup = measured.speedup()
    figures = Probe(
        model_m.latency_ms, model_m.latency_p90_ms, model_m.fps, model_m.cv, model_m.ratio_cv,
        model_m.sessions, base_m.latency_ms, speedup, measured.started - asked, measured.call,
        measured.node_id, measured.pid, measured.started, measured.ended, graph_s,
        probe_compress_s, ray.get_runtime_context().get_node_id(),
        ray.util.get_node_ip_address(), watched.actor)
    return measured, TrialResult(
        "latency", 1 / speedup, context.threshold_top1,
        finetune_epochs=plan.schedule.finetune_epochs, int8=plan.schedule.int8,
        finetunes=plan.finetunes, probe=figures,
        predicted_ratio=plan.allocation.predicted if plan.allocation else None,
        int8_vs_float=int8_vs_float, device_hangs=watched.hangs), plan


def remeasure(artifact: Artifact, context: TrialContext, latency: TrialResult
              ) -> tuple[BenchCall, TrialResult]:
    """The deployed model benchmarked at the actor (its graph is not the probe's: int8 left
    layers in float), and the trial's latency figures replaced by what it measured."""
    asked = time.time()
    watched = measure_at_actor(context, {"model": model_files(artifact.deployed)})
    measured = watched.call
    model_m, base_m = measured.models["model"], measured.baseline
    assert latency.probe is not None  # the probe ran first
    probe = dataclasses.replace(
        latency.probe, latency_ms=model_m.latency_ms, latency_p90_ms=model_m.latency_p90_ms,
        fps=model_m.fps, cv=model_m.cv, ratio_cv=model_m.ratio_cv,
        bench_sessions=model_m.sessions, baseline_latency_ms=base_m.latency_ms,
        speedup=measured.speedup(), bench_wait_s=measured.started - asked,
        bench_call=measured.call, bench_start=measured.started, bench_end=measured.ended)
    return measured, dataclasses.replace(latency, latency_ratio=1 / measured.speedup(),
                                         probe=probe,
                                         device_hangs=latency.device_hangs + watched.hangs)


def measure_at_actor(context: TrialContext, models: dict[str, ModelFiles],
                     steady: tuple[str, ...] = ()) -> Watched:
    """``models`` measured beside the baseline at the least loaded benchmark actor, the call
    watched against the run's call limit (:mod:`edge_tune.run.device_call`)."""
    return call_device(context.actors, context.actor_where, models,
                       list(context.bench_baseline), context.call_limit_s,
                       device=context.config.bench.device, steady=steady)


def faster_precision(measured: BenchCall, plan: CompressionPlan, keep_slower: bool
                     ) -> tuple[BenchCall, CompressionPlan, float | None]:
    """An int8 probe measured beside its float twin: int8's median latency over float's (None
    without int8), and, when int8 ran slower and ``keep_slower`` is off, the float
    measurement and plan in its place (what the searcher then learns for these parameters
    is the faster of the two: int8 buys nothing on this graph)."""
    if "float" not in measured.models:
        return measured, plan, None
    int8_m, float_m = measured.models["model"], measured.models["float"]
    int8_vs_float = int8_m.latency_ms / float_m.latency_ms
    if int8_vs_float <= 1.0 or keep_slower:
        return dataclasses.replace(measured, models={"model": int8_m}), plan, int8_vs_float
    return dataclasses.replace(measured, models={"model": float_m}), in_float(plan), \
        int8_vs_float


def fine_tune(model: torch.nn.Module, plan: CompressionPlan, splits: Splits,
              context: TrialContext, out: Path, val: Images, latency: TrialResult,
              teacher: Teacher | None = None) -> tuple[Artifact, int]:
    """Compress and fine-tune ``model`` in place (distilled from ``teacher`` when the plan
    asks), reporting torch validation top-1 (f32, the first :data:`EPOCH_VAL_IMAGES` images)
    after each epoch; then export, int8 and accuracy as deployed on the whole validation
    split. The artifact and the epochs run."""
    val_epoch = take(splits.val, EPOCH_VAL_IMAGES)
    epoch_started = [time.time()]
    epochs_run: list[int] = []

    def after_epoch(epoch: int, trained: Any) -> None:
        top1 = evaluate(trained, val_epoch)[0]
        tune.report(dataclasses.replace(latency, phase="epoch", epoch=epoch, val_top1=top1,
                                        epoch_s=time.time() - epoch_started[0]).metrics())
        epoch_started[0] = time.time()
        epochs_run.append(epoch)

    # validation: the objective, the constraint and the choice of the best use it; test top-1
    # is measured once, for the reported models (run.tuner.experiment)
    artifact = build(model, plan, splits, context.config, out, context.base_shapes, val,
                     log=lambda _: None, after_epoch=after_epoch, teacher=teacher)
    return artifact, len(epochs_run)


def write_files(artifact: Artifact, plan: CompressionPlan, measured: BenchCall,
                out: Path) -> None:
    """The trial's checkpoint folder: recipe, OpenVINO IR, the probe's per-layer times."""
    plan.write(out / "schedule.yaml")
    save_ir(artifact.deployed, out)
    bench.write_layers_csv(measured.models["model"].layers, out / "layers.csv")  # same graph
    bench.write_layers_csv(measured.baseline.layers, out / "baseline_layers.csv")


def save_ir(deployed: Path, out: Path) -> None:
    """Keep an OpenVINO IR (``model.xml``/``.bin``) of every f32 model too (int8 already is)."""
    if deployed.suffix == ".onnx":
        ov.save_model(ov.Core().read_model(str(deployed)), str(out / "model.xml"),
                      compress_to_fp16=False)
