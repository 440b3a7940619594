"""The tuner: ``python -m edge_tune.tune`` searches compression parameters with Ray Tune.

Data flow: config -> search space -> searcher proposes params -> :func:`trainable` (compress,
fine-tune, export, int8 on the trial's own CPU/GPU) -> benchmark actor on the ``ncs`` node
(serialised, baseline interleaved) -> objective -> searcher; trials.jsonl (appended as each
trial finishes), best artifacts and summary.json in the run directory; every trial mirrored to
W&B (offline without a key). Ray plumbing is :mod:`edge_tune.cluster`, searchers
:mod:`edge_tune.searcher`.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import ray
import torch
import yaml
from ray import tune
from ray.air.integrations.wandb import WandbLoggerCallback
from ray.air.util.node import _force_on_current_node
from ray.tune import Callback
from ray.util import metrics

from edge_tune import bench
from edge_tune.actor import BenchCall, model_files
from edge_tune.baseline import Baseline, prepare_baseline
from edge_tune.cluster import (
    actor_name,
    connect,
    describe,
    pick_actor,
    shutdown,
    start_actors,
    trial_request,
)
from edge_tune.config import Config, config_to_dict, load_config
from edge_tune.data import Splits, load_data, take
from edge_tune.deploy import Artifact, Images, arrays, deploy_graph, deployed_accuracy
from edge_tune.errors import ArgumentParser, UserError, run_cli, work_started
from edge_tune.models import model_stages
from edge_tune.objective import objective
from edge_tune.output import (
    check_output,
    log_stderr,
    new_run_dir,
    wandb_environment,
    wandb_mode,
)
from edge_tune.recipe import Schedule, format_params, schedule_from_params
from edge_tune.searcher import check_searcher, create_searcher
from edge_tune.space import SearchSpace, check_points, load_space
from edge_tune.stopping import EarlyStop
from edge_tune.train import device_for, evaluate, set_threads
from edge_tune.trial import Context, build, compress, plan, write_recipe

EXPERIMENT = "ray"  # Ray Tune's folder inside the run directory
TRIALS = "trials.jsonl"  # one line per finished trial, appended and flushed as it finishes
# keys Tune adds to every result: not ours to replay
_TUNE_KEYS = {"done", "training_iteration", "trial_id", "date", "timestamp", "time_this_iter_s",
              "time_total_s", "pid", "hostname", "node_ip", "config", "time_since_restore",
              "iterations_since_restore", "checkpoint_dir_name", "experiment_tag",
              "should_checkpoint"}

# DataConfig -> (Splits, validation images), kept across trials of a reused worker
_SPLITS: dict[Any, tuple[Splits, Images]] = {}
PROBE_CALIBRATION = 8  # images: int8 of the latency probe (its graph does not depend on them)
EPOCH_VAL_IMAGES = 2000  # validation images evaluated (torch, f32) after each epoch


@dataclass(frozen=True)
class Ledger:
    """Trials a killed run finished, read back on resume: by trial id and by parameters."""

    by_id: dict[str, dict[str, Any]]
    by_params: dict[str, dict[str, Any]]

    @classmethod
    def read(cls, path: Path) -> Ledger:
        done = [r for r in read_rows(path) if r["status"] in ("completed", "stopped")]
        return cls({r["id"]: r for r in done}, {params_key(r["params"]): r for r in done})

    def find(self, trial_id: str, params: dict[str, Any]) -> dict[str, Any] | None:
        return self.by_id.get(trial_id) or self.by_params.get(params_key(params))


def params_key(params: dict[str, Any]) -> str:
    return json.dumps({k: round(float(v), 9) for k, v in sorted(params.items())})


def trainable(params: dict[str, float], context: Context, ledger: Ledger) -> None:
    """One Ray Tune trial, latency first: a plain chain of the stage functions.

    The graph is fixed once filters are removed and int8 is chosen; fine-tuning changes
    weights, not latency. So the graph is benchmarked and reported first (the stopper may end a
    trial that cannot beat the best feasible one there), then each fine-tuning epoch reports
    validation top-1 (the stopper may end a curve that cannot reach the threshold), then the
    deployed model's accuracy and files. A trial the ledger holds as finished (a resumed run
    whose state missed it) reports its recorded result again instead of running twice.
    """
    done = ledger.find(tune.get_context().get_trial_id(), params)
    if done is not None:
        tune.report({**done["metrics"], "replayed_from": done["id"],
                     "replayed_checkpoint": done["checkpoint"] or "",
                     "stopped_reason": done.get("reason") or ""})
        return
    started = time.time()
    config = context.config
    # the trial's own CPUs, not the node's: concurrent trials must not oversubscribe it
    set_threads(config.train_threads or max(1, int(config.tune.trial_cpus)))
    splits, val = _data(config)
    model = context.base_model(splits.num_classes)
    schedule = schedule_from_params(params, model_stages(config.model), config.finetune.epochs)
    out = Path(tempfile.mkdtemp(prefix="edge_tune_trial-"))
    try:  # a trial stopped by the scheduler ends inside tune.report: clean up anyway
        measured, latency = probe_latency(model, schedule, splits, context, out)
        # before fine-tuning, accuracy is unknown: val_top1 None, and an objective as if the
        # threshold held (what the latency alone allows), so every report carries the metric
        tune.report({**latency, "phase": "latency", "epoch": 0, "val_top1": None,
                     "objective": latency["latency_ratio"]})
        artifact, epochs_run = fine_tune(model, schedule, splits, context, out, val, latency)
        result = {**_final_result(artifact, context, latency, epochs_run, started),
                  "trial_device": str(device_for(model))}  # where it was compressed, trained
        _write_files(artifact, model, schedule, config, measured, out)
        tune.report(result, checkpoint=tune.Checkpoint.from_directory(str(out)))
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _data(config: Config) -> tuple[Splits, Images]:
    """The splits and the validation images, loaded once per worker process."""
    if config.data not in _SPLITS:
        _SPLITS.clear()
        loaded = load_data(config.data)
        _SPLITS[config.data] = loaded, arrays(loaded.val)
    return _SPLITS[config.data]


def probe_latency(model: torch.nn.Module, schedule: Schedule, splits: Splits, context: Context,
                  out: Path) -> tuple[BenchCall, dict[str, Any]]:
    """Compress a copy of ``model`` without fine-tuning, deploy its graph (int8 calibrated on
    :data:`PROBE_CALIBRATION` images), benchmark it at the actor against the baseline: the
    measurement (ms, batch 1) and the latency figures every later report carries."""
    asked = time.time()
    probe = copy.deepcopy(model)
    compress(probe, schedule, splits, context.config, log=lambda _: None, finetune=False)
    probe_compress_s = time.time() - asked
    asked = time.time()
    graph = deploy_graph(probe, schedule.int8, splits.image_size, out,
                         arrays(splits.train, PROBE_CALIBRATION)[0])
    graph_s = time.time() - asked
    del probe
    asked = time.time()
    measured = ray.get(pick_actor(context.actors).benchmark.remote(
        model_files(graph), baseline=list(context.bench_baseline)))
    for probe_file in out.glob("probe*"):  # measured: not part of the trial's files
        probe_file.unlink()
    model_m, base_m = measured.models["model"], measured.baseline
    speedup = measured.speedup()
    return measured, {
        "latency_ratio": 1 / speedup, "threshold_top1": context.threshold_top1,
        "latency_ms": model_m.latency_ms, "latency_p90_ms": model_m.latency_p90_ms,
        "fps": model_m.fps, "cv": model_m.cv, "ratio_cv": model_m.ratio_cv,
        "bench_sessions": model_m.sessions, "baseline_latency_ms": base_m.latency_ms,
        "speedup": speedup, "bench_wait_s": measured.started - asked,
        "bench_call": measured.call, "bench_node_id": measured.node_id,
        "bench_pid": measured.pid, "bench_start": measured.started,
        "bench_end": measured.ended, "graph_s": graph_s, "probe_compress_s": probe_compress_s,
        "trial_node_id": ray.get_runtime_context().get_node_id(),
        "trial_node_ip": ray.util.get_node_ip_address(),
        "finetune_epochs": schedule.finetune_epochs, "int8": schedule.int8,
        # whether it fine-tunes at all: a schedule that removes nothing does not
        "finetunes": schedule.prunes_filters or schedule.fine_sparsity > 0}


def fine_tune(model: torch.nn.Module, schedule: Schedule, splits: Splits, context: Context,
              out: Path, val: Images, latency: dict[str, Any]) -> tuple[Artifact, int]:
    """Compress and fine-tune ``model`` in place, reporting torch validation top-1 (f32, the
    first :data:`EPOCH_VAL_IMAGES` images) after each epoch; then export, int8 and accuracy as
    deployed on the whole validation split. The artifact and the epochs run."""
    val_epoch = take(splits.val, EPOCH_VAL_IMAGES)
    epoch_started = [time.time()]
    epochs_run: list[int] = []

    def after_epoch(epoch: int, trained: Any) -> None:
        top1 = evaluate(trained, val_epoch)[0]
        tune.report({**latency, "phase": "epoch", "epoch": epoch, "val_top1": top1,
                     "epoch_s": time.time() - epoch_started[0],
                     "objective": objective(top1, latency["latency_ms"],
                                            latency["baseline_latency_ms"],
                                            context.threshold_top1)})
        epoch_started[0] = time.time()
        epochs_run.append(epoch)

    # validation: the objective, the constraint and the choice of the best use it; test top-1
    # is measured once, for the reported models (run_tune)
    artifact = build(model, schedule, splits, context.config, out, context.base_shapes, val,
                     log=lambda _: None, after_epoch=after_epoch)
    return artifact, len(epochs_run)


def _final_result(artifact: Artifact, context: Context, latency: dict[str, Any],
                  epochs_run: int, started: float) -> dict[str, Any]:
    """The trial's last report: latency from the probe, accuracy as deployed (validation)."""
    return {
        **latency, "phase": "done", "epoch": epochs_run, "epochs_run": epochs_run,
        "objective": objective(artifact.top1, latency["latency_ms"],
                               latency["baseline_latency_ms"], context.threshold_top1),
        "val_top1": artifact.top1, "val_top5": artifact.top5,
        "baseline_val_top1": context.baseline_top1,
        "feasible": artifact.top1 >= context.threshold_top1,
        "macs": artifact.macs, "params": artifact.params,
        "reached": all(c.reached for c in artifact.verification),
        "trial_s": time.time() - started, **artifact.timings,
    }


def _write_files(artifact: Artifact, model: torch.nn.Module, schedule: Schedule, config: Config,
                 measured: BenchCall, out: Path) -> None:
    """The trial's checkpoint folder: recipe, OpenVINO IR, the probe's per-layer times."""
    write_recipe(schedule, model, config, out / "schedule.yaml")  # pruning keeps the names
    _save_ir(artifact.deployed, out)
    bench.write_layers_csv(measured.models["model"].layers, out / "layers.csv")  # same graph
    bench.write_layers_csv(measured.baseline.layers, out / "baseline_layers.csv")


def _save_ir(deployed: Path, out: Path) -> None:
    """Keep an OpenVINO IR (``model.xml``/``.bin``) of every f32 model too (int8 already is)."""
    if deployed.suffix == ".onnx":
        ov.save_model(ov.Core().read_model(str(deployed)), str(out / "model.xml"),
                      compress_to_fp16=False)


def deployed_file(folder: Path) -> Path:
    """The model a trial deployed, in its saved folder: int8 IR if it has one, else ONNX."""
    int8 = folder / "model_int8.xml"
    return int8 if int8.is_file() else folder / "model.onnx"


def validate(config: Config, space: SearchSpace, device_here: bool = True) -> None:
    """Every cheap check before Ray starts: params vs model, points, searcher, data, device,
    checkpoint."""
    plan(config, {name: low for name, (low, _) in space.bounds.items()}, device_here)
    check_points(space, config.tune.points_to_evaluate, "tune.points_to_evaluate")
    check_searcher(config.tune)


def trial_row(trial: Any, status: str, error: str | None = None,
              reason: str | None = None) -> dict[str, Any]:
    """A finished trial as one trials.jsonl line (our metrics only, Tune's own keys dropped);
    ``reason``: why a stopped trial was stopped."""
    result = trial.last_result or {}
    checkpoint = getattr(trial, "checkpoint", None)
    return {"id": trial.trial_id, "status": status, "params": dict(trial.config),
            "metrics": {k: v for k, v in result.items() if k not in _TUNE_KEYS
                        and isinstance(v, int | float | bool | str)},
            "error": error, "reason": reason,
            "checkpoint": checkpoint.path if checkpoint is not None else None}


def stop_reason(recorded: str | None, metrics: dict[str, Any]) -> str:
    """Why a trial stopped: what the stopper recorded, else what a replayed result carries."""
    return recorded or metrics.get("stopped_reason") or "stopped by the scheduler"


def finished(metrics: dict[str, Any]) -> bool:
    """Whether a trial's last result is its final one (``phase: done``), not a stop."""
    return metrics.get("phase") == "done"


class Progress(Callback):
    """Tune callback: each finished trial appended to trials.jsonl and flushed to disk *before*
    its console line, so what the console reported survives a killed driver; the
    best-objective Ray gauge.

    A plain module-level class (Tune pickles callbacks with the experiment, and a resumed run
    unpickles them); the gauge is made on first use, never pickled.
    """

    def __init__(self, total: int, out: Path, stopper: EarlyStop) -> None:
        super().__init__()
        self.total, self.ledger = total, str((out / TRIALS).resolve())
        self.stopper = stopper  # the same object Tune schedules with: its stop reasons
        self.best = float("inf")
        self._gauge: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_gauge": None}

    def get_state(self) -> dict[str, Any] | None:
        """Tune's callback checkpoint: the stopper's evidence (best feasible ratio, gains)."""
        return {"stopper": self.stopper.state(), "best": self.best}

    def set_state(self, state: dict[str, Any]) -> None:
        self.stopper.load(state["stopper"])
        self.best = state["best"]

    def _append(self, row: dict[str, Any]) -> None:
        with open(self.ledger, "a") as handle:
            handle.write(json.dumps(row) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def _set_gauge(self, value: float) -> None:
        if self._gauge is None:
            self._gauge = metrics.Gauge("edge_tune_best_objective",
                                        "lowest objective so far (latency ratio if feasible)")
        self._gauge.set(value)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        m = (trial.last_result or {})
        done = sum(t.status in ("TERMINATED", "ERROR") for t in trials) + 1  # it still runs
        if not finished(m):
            reason = stop_reason(self.stopper.reasons.get(trial.trial_id), m)
            self._append(trial_row(trial, "stopped", reason=reason))
            log_stderr(f"trial {done}/{self.total} {trial.trial_id}: "
                       f"{format_params(trial.config)} -> {m.get('speedup', 0):.2f}x, "
                       f"stopped: {reason}")
            return
        row = trial_row(trial, "completed")
        self._append(row)
        m = row["metrics"]
        self.best = min(self.best, float(m["objective"]))
        self._set_gauge(self.best)
        log_stderr(f"trial {done}/{self.total} {trial.trial_id}: "
                   f"{format_params(trial.config)} -> validation top-1 {m['val_top1']:.2f}%, "
                   f"{m['latency_ms']:.3f} ms, {m['speedup']:.2f}x, objective "
                   f"{m['objective']:.3f}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._append(trial_row(trial, "error", _error_line(trial)))
        log_stderr(f"trial {trial.trial_id} failed (its error is in {TRIALS}); the "
                   "experiment goes on")


class Wandb(WandbLoggerCallback):
    """Ray's W&B callback, its per-trial logging actor made without restarts: a restartable
    actor whose constructor arguments sit in the object store makes Ray log an error-level
    line (core_worker.cc) for every trial. A logging actor that dies ends that trial's W&B
    mirror; trials.jsonl is the record."""

    def _start_logging_actor(self, trial: Any, exclude_results: list[str],
                             **wandb_init_kwargs: Any) -> None:
        if not self._remote_logger_class:
            key = {k: os.environ[k] for k in ("WANDB_API_KEY",) if k in os.environ}
            here: dict[str, Any] = _force_on_current_node()  # type: ignore[assignment]
            self._remote_logger_class = ray.remote(  # type: ignore[assignment]
                num_cpus=0, runtime_env={"env_vars": key}, max_restarts=0,
                **here)(self._logger_actor_cls)
        super()._start_logging_actor(trial, exclude_results, **wandb_init_kwargs)


def _wandb_callback(config: Config, out: Path, run_name: str) -> WandbLoggerCallback:
    folder = (out / "wandb").resolve()
    folder.mkdir(exist_ok=True)
    return Wandb(project=config.tune.wandb_project, group=run_name, mode=wandb_mode(),
                 dir=str(folder), log_config=False)


def run_tune(config: Config, space: SearchSpace, out: Path, dashboard: str, wandb: bool,
             resume: bool = False) -> dict[str, Any] | None:
    """Run (or, with ``resume``, continue) the experiment in ``out`` on the connected Ray.

    Returns the summary written to summary.json, or None when the run was interrupted before
    every trial finished (Tune saved its state: ``--resume`` continues it).
    """
    started = time.time()
    if not resume:
        (out / "config.yaml").write_text(yaml.safe_dump(config_to_dict(config),
                                                        sort_keys=False))
    set_threads(config.train_threads)
    splits = load_data(config.data)
    # the baseline's accuracy as deployed on validation (what trials are held to) and, once,
    # on test (what is reported)
    base = prepare_baseline(config, splits, arrays(splits.val), out / "baseline")
    test = arrays(splits.test)
    base_test = deployed_accuracy(base.artifact.deployed, test, config.bench)
    threshold_top1 = config.tune.threshold.value(base.artifact.top1)
    log_stderr(f"baseline validation top-1 {base.artifact.top1:.2f}% (as deployed; test "
               f"{base_test[0]:.2f}%); threshold {threshold_top1:.2f}% on validation")
    pinned: list[Any] = []  # [the baseline's files]: every benchmark call passes it
    actors = start_actors(base.artifact.deployed, config.bench, pinned)  # held: a named actor
    actor_info = ray.get([a.info.remote() for a in actors])  # dies with its last handle
    log_stderr(f"benchmark actors: {len(actors)} on {config.bench.device} "
               f"({', '.join(str(i['host']) + ' ' + str(i['node_ip']) for i in actor_info)})")
    ctx = Context.of(config, base, threshold_top1,
                     tuple(actor_name(i) for i in range(len(actors))), tuple(pinned))
    ledger = Ledger.read(out / TRIALS) if resume else Ledger({}, {})
    resources = {k.lower(): v for k, v in trial_request(config).items()}
    runnable = tune.with_resources(tune.with_parameters(trainable, context=ctx, ledger=ledger),
                                   resources)
    if resume:
        # finished trials are kept, unfinished ones continue; the searcher's state comes back
        # from the experiment checkpoint; errored trials stay errored (their errors recorded)
        tuner = tune.Tuner.restore(str((out / EXPERIMENT).resolve()), trainable=runnable,
                                   resume_unfinished=True, resume_errored=False)
    else:
        tuner = _new_tuner(runnable, config, space, out, wandb)
    results = tuner.fit()
    del actors, pinned  # the last handles: the actors end with the experiment
    stopped = {r["id"]: r.get("reason") for r in read_rows(out / TRIALS)
               if r["status"] == "stopped"}
    ended = sum(1 for i in range(len(results))
                if results[i].error is not None or finished(results[i].metrics or {})
                or (results[i].metrics or {}).get("trial_id") in stopped)
    if ended < config.tune.num_samples:
        log_stderr(f"interrupted after {ended} of {config.tune.num_samples} trials; the "
                   f"state is saved: python -m edge_tune.tune --resume {out}")
        return None
    summary = collect(results, out, base, threshold_top1, config, space, stopped)
    summary["baseline"].update(test_top1=base_test[0], test_top5=base_test[1])
    if summary["best"] is not None and (out / "best").is_dir():
        best_test = deployed_accuracy(deployed_file(out / "best"), test, config.bench)
        summary["best"].update(test_top1=best_test[0], test_top5=best_test[1])
    summary.update(bench_actor=actor_info[0], bench_actors=actor_info,
                   seconds=time.time() - started, resumed=resume,
                   dashboard=f"http://{dashboard}" if dashboard else None)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


WAIT_REPORT_S = 60.0  # a trial waiting this long for resources is said, then every 5 min
WAIT_REPEAT_S = 300.0


def waiting_line(pending: dict[str, dict[str, float]], since: dict[str, float], now: float,
                 free: Callable[[], dict[str, float]] | None) -> str | None:
    """What the longest-waiting trial asks for and what is free, once it has waited
    :data:`WAIT_REPORT_S` (``pending``: trial id -> its request; ``since`` is updated: trial
    id -> when it was first seen waiting, s since the epoch); ``free`` None: only the clocks
    are kept (nothing is due)."""
    for trial_id in list(since):
        if trial_id not in pending:
            del since[trial_id]
    for trial_id in pending:
        since.setdefault(trial_id, now)
    if not since:
        return None
    oldest = min(since, key=since.__getitem__)
    waited = now - since[oldest]
    if waited < WAIT_REPORT_S or free is None:
        return None
    return (f"waiting {waited:.0f} s for resources: trial {oldest} asks for "
            f"{describe(pending[oldest])}; free now in the whole cluster: {describe(free())} "
            "(held by this run's other trials, another job, or a node left; it goes on when "
            "a node has them free)")


class Waiting(Callback):
    """Tune callback: a trial that waits for resources over a minute is said on the console,
    with its request and what the cluster has free (Tune's own warning is below our log
    level)."""

    def __init__(self) -> None:
        super().__init__()
        self.since: dict[str, float] = {}
        self.said = 0.0  # when the last line was said (s since the epoch)

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        pending = {t.trial_id: dict(t.placement_group_factory.required_resources)
                   for t in trials if t.status == "PENDING"}
        now = time.time()
        due = now - self.said >= WAIT_REPEAT_S  # the cluster is asked only when a line is due
        line = waiting_line(pending, self.since, now, ray.available_resources if due else None)
        if line is not None:
            self.said = now
            log_stderr(line)


def _new_tuner(runnable: Any, config: Config, space: SearchSpace, out: Path,
               wandb: bool) -> tune.Tuner:
    stopper = EarlyStop(config.tune.early_stop)
    callbacks: list[Any] = [Progress(config.tune.num_samples, out, stopper), Waiting()]
    if wandb:
        callbacks.append(_wandb_callback(config, out, out.name))
    return tune.Tuner(
        runnable, param_space=space.tune_space(),
        tune_config=tune.TuneConfig(search_alg=create_searcher(config.tune, space),
                                    scheduler=stopper, num_samples=config.tune.num_samples,
                                    reuse_actors=True),
        run_config=tune.RunConfig(
            name=EXPERIMENT, storage_path=str(out.resolve()), callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=config.tune.max_failures),
            verbose=0))


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The lines of a trials.jsonl (none when it does not exist yet)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _row(result: Any, stopped: dict[str, str | None]) -> dict[str, Any]:
    metrics = {k: v for k, v in (result.metrics or {}).items()
               if isinstance(v, int | float | bool | str) and k != "config"}
    checkpoint = metrics.pop("replayed_checkpoint", None) or (
        None if result.checkpoint is None else result.checkpoint.path)
    trial_id = str(metrics.get("trial_id") or Path(result.path).name)
    status = "error" if result.error else "completed" if finished(metrics) else "stopped"
    reason = stop_reason(stopped.get(trial_id), metrics) if status == "stopped" else None
    return {"id": trial_id, "status": status, "params": result.config, "metrics": metrics,
            "error": None if result.error is None else _one_line(result.error),
            "reason": reason, "checkpoint": checkpoint}


def seconds_saved(rows: list[dict[str, Any]]) -> float:
    """Fine-tuning time the stopped trials did not spend (s): their epochs left times the
    median seconds per epoch of the completed trials."""
    per_epoch = [r["metrics"]["compress_s"] / r["metrics"]["epochs_run"] for r in rows
                 if r["status"] == "completed" and r["metrics"].get("epochs_run")
                 and "compress_s" in r["metrics"]]
    if not per_epoch:
        return 0.0
    left = sum(int(r["metrics"].get("finetune_epochs", 0)) - int(r["metrics"].get("epoch", 0))
               for r in rows if r["status"] == "stopped" and r["metrics"].get("finetunes"))
    return float(left * np.median(per_epoch))


def collect(results: Any, out: Path, base: Baseline, threshold_top1: float, config: Config,
            space: SearchSpace, stopped: dict[str, str | None]) -> dict[str, Any]:
    """trials.jsonl (rewritten whole, one line per trial), the best trial's artifacts in
    ``out/best``, and the summary dict."""
    rows = [_row(result, stopped) for result in results]
    with (out / TRIALS).open("w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    done = [r for r in rows if r["status"] == "completed"]
    halted = [r for r in rows if r["status"] == "stopped"]
    best = min(done, key=lambda r: r["metrics"]["objective"]) if done else None
    feasible = [r for r in done if r["metrics"].get("feasible")]
    summary: dict[str, Any] = {
        "baseline": {"val_top1": base.artifact.top1, "val_top5": base.artifact.top5,
                     "latency_ms": float(np.median([r["metrics"]["baseline_latency_ms"]
                                                    for r in done])) if done else None,
                     "macs": base.artifact.macs, "params": base.artifact.params},
        "threshold": {"top1": threshold_top1, "min_top1": config.tune.threshold.min_top1,
                      "max_drop": config.tune.threshold.max_drop},
        "search_space": {"source": space.source, "bounds": space.bounds},
        "searcher": config.tune.searcher,
        "trials_completed": len(done), "trials_stopped": len(halted),
        "trials_errored": len(rows) - len(done) - len(halted),
        "seconds_saved_by_stopping": seconds_saved(rows),
        "trials_replayed": sum(1 for r in done + halted if "replayed_from" in r["metrics"]),
        "trials_feasible": len(feasible), "best": None,
    }
    if best is not None:
        m = best["metrics"]
        summary["best"] = {"id": best["id"], "params": best["params"],
                           "val_top1": m["val_top1"],
                           "latency_ms": m["latency_ms"], "latency_p90_ms": m["latency_p90_ms"],
                           "baseline_latency_ms": m["baseline_latency_ms"],
                           "speedup": m["speedup"], "objective": m["objective"],
                           "feasible": m["feasible"], "macs": m["macs"], "int8": m["int8"]}
        if best["checkpoint"]:
            shutil.copytree(best["checkpoint"], out / "best")
            summary["best"]["files"] = sorted(p.name for p in (out / "best").iterdir())
    return summary


def _error_line(trial: Any) -> str:
    """The last line of the error Tune recorded for ``trial`` (its error.txt)."""
    path = Path(trial.error_file) if getattr(trial, "error_file", None) else None
    lines = [x for x in path.read_text().splitlines() if x.strip()] if path and \
        path.is_file() else []
    return lines[-1][:500] if lines else "the trial failed (no error recorded)"


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    tail = [line for line in text if line.strip()][-1:] or [type(error).__name__]
    return tail[0][:500]


def print_table(summary: dict[str, Any], out: Path) -> None:
    """Baseline vs best, the counts and where everything is (stdout). Validation top-1
    chose the best; test top-1 was measured once, for these two rows."""
    b, best = summary["baseline"], summary["best"]
    print(f"\n{'':10} {'val top-1 %':>11} {'test top-1 %':>12} {'latency ms':>11} "
          f"{'MACs':>8} {'speed-up':>9}")
    print(f"{'baseline':10} {b['val_top1']:11.2f} {b.get('test_top1', float('nan')):12.2f} "
          f"{b['latency_ms'] or 0:11.3f} {b['macs'] / 1e6:7.1f}M {1:8.2f}x")
    if best:
        print(f"{'best':10} {best['val_top1']:11.2f} {best.get('test_top1', float('nan')):12.2f} "
              f"{best['latency_ms']:11.3f} {best['macs'] / 1e6:7.1f}M {best['speedup']:8.2f}x"
              f"{'' if best['feasible'] else '  (below threshold)'}")
        print(f"best params: {format_params(best['params'])}")
    print(f"threshold validation top-1 >= {summary['threshold']['top1']:.2f}%; trials: "
          f"{summary['trials_completed']} completed ({summary['trials_feasible']} above the "
          f"threshold), {summary['trials_stopped']} stopped early (about "
          f"{summary['seconds_saved_by_stopping']:.0f} s of fine-tuning saved), "
          f"{summary['trials_errored']} errored")
    print(f"run directory: {out} (summary.json, {TRIALS}, best/)")


def quiet_tune() -> None:
    """One console line per trial is ours: Tune's own reporter (the experiment box, the
    TensorBoard hint) becomes its legacy one, which at verbosity 0 prints nothing."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def launch(config: Config, space: SearchSpace, address: str | None, wandb: bool,
           run_dir: Callable[[], Path], resume: bool) -> int:
    """Ray first (no ncs node, an unreachable address or a request no node fits fail in
    seconds, before ``run_dir`` creates the output), then the experiment; exit code 130 when
    it was interrupted."""
    wandb_environment(wandb)
    quiet_tune()
    context, config = connect(address, config)
    try:
        out = run_dir()
        work_started()  # a resumed run's folder is not new: say it here
        dashboard = getattr(context, "dashboard_url", "") or ""
        if dashboard:
            # Ray 2.60's dashboard asks for a token ("Authentication Token Required")
            where = "" if address is None else (
                "on the head node; from your machine: ray dashboard cluster.yaml; ")
            log_stderr(f"Ray dashboard: http://{dashboard} ({where}its token: ray "
                       "get-auth-token, or the file ~/.ray/auth_token)")
        if resume:
            log_stderr(f"resuming {out}")
        summary = run_tune(config, space, out, dashboard, wandb, resume=resume)
    finally:
        shutdown()
    if summary is None:
        return 130
    print_table(summary, out)
    return 0


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m edge_tune.tune", description=(
        "Search compression parameters (filter removal, int8, fine-tuning length) for the "
        "lowest latency on the edge device that keeps top-1 above the threshold. With no "
        "arguments: ResNet-20 on scikit-learn's digits, 12 trials, on this machine."))
    parser.add_argument("--config", help="YAML config (default: the embedded ResNet-20 on "
                        "digits); its tune: section sets the space, searcher, budget and "
                        "threshold")
    parser.add_argument("--num-samples", type=int, help="number of trials (tune.num_samples)")
    parser.add_argument("--output", help="new run directory (default: runs/tune-<time>); one "
                        "that already holds files is refused")
    parser.add_argument("--address", help="join a running Ray cluster (auto, HOST:PORT or "
                        "ray://HOST:PORT); it must have a node with the 'ncs' resource. Default: "
                        "start Ray here and give this node 'ncs'")
    parser.add_argument("--seed", type=int, help="searcher seed (tune.seed)")
    parser.add_argument("--no-wandb", action="store_true", help="do not mirror trials to "
                        "Weights & Biases (default: mirror; offline when WANDB_API_KEY is unset)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run with "
                        "its own config: finished trials are kept, the searcher's state is "
                        "restored")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.resume is not None:
        return resume_main(args)
    config = load_config(args.config)
    if args.num_samples is not None:
        if args.num_samples < 1:
            raise UserError(f"--num-samples: expected an integer >= 1, got {args.num_samples}")
        config = replace(config, tune=replace(config.tune, num_samples=args.num_samples))
    if args.seed is not None:
        config = replace(config, tune=replace(config.tune, seed=args.seed))
    space = load_space(config.tune.search_space)
    validate(config, space, device_here=args.address is None)
    check_output(args.output)
    return launch(config, space, args.address, not args.no_wandb,
                  lambda: new_run_dir(args.output, "tune"), resume=False)


def resume_main(args: Any) -> int:
    """``--resume RUN_DIR``: the run's own config and experiment state, checked before Ray."""
    out = Path(args.resume)
    for flag in ("config", "output", "num_samples", "seed"):
        if getattr(args, flag) is not None:
            raise UserError(f"--resume: {'--' + flag.replace('_', '-')} is not allowed; a "
                            "resumed run keeps its own config and directory")
    if not (out / "config.yaml").is_file() or not tune.Tuner.can_restore(
            str((out / EXPERIMENT).resolve())):
        raise UserError(f"--resume: {str(out)!r} holds no interrupted edge_tune run "
                        f"(config.yaml and {EXPERIMENT}/ experiment state)")
    if (out / "summary.json").is_file():
        raise UserError(f"--resume: {str(out)!r} already finished (summary.json); nothing to "
                        "resume")
    config = load_config(str(out / "config.yaml"))
    space = load_space(config.tune.search_space)
    validate(config, space, device_here=args.address is None)
    return launch(config, space, args.address, not args.no_wandb, lambda: out, resume=True)


def cli() -> None:
    """Console entry point."""
    run_cli(main)


if __name__ == "__main__":
    cli()
