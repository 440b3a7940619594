"""The tuner: ``python -m edge_tune.tune`` searches compression parameters with Ray Tune.

Data flow: config -> search space -> BayesOptSearch proposes params -> trial (compress,
fine-tune, export, int8 on the trial's own CPU/GPU) -> benchmark actor on the ``ncs`` node
(serialised, baseline interleaved) -> objective -> searcher; trials.jsonl, best artifacts and
summary.json in the run directory; every trial mirrored to W&B (offline without a key).
"""

from __future__ import annotations

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
import yaml
from ray.tune import Callback

from edge_tune.actor import ACTOR_NAME, NAMESPACE, BenchActor, model_files
from edge_tune.config import Config, config_to_dict, load_config
from edge_tune.errors import ArgumentParser, UserError, first_line, run_cli
from edge_tune.objective import Threshold, objective
from edge_tune.output import check_output, new_run_dir
from edge_tune.space import SearchSpace, check_points, load_space
from edge_tune.trial import bench_settings, log_stderr

EXPERIMENT = "ray"  # Ray Tune's folder inside the run directory
ADDRESS_TIMEOUT_S = 5.0  # an unreachable --address fails this fast


_SPLITS: dict[Any, Any] = {}  # DataConfig -> Splits, kept across trials of a reused worker


@dataclass(frozen=True)
class TrialContext:
    """What every trial needs from the driver (shipped once through Ray's object store)."""

    config: Config
    base_state: dict[str, Any]  # baseline state_dict (CPU tensors)
    base_shapes: dict[str, tuple[int, ...]]
    baseline_top1: float
    threshold_top1: float
    actors: tuple[str, ...] = (ACTOR_NAME,)  # one benchmark actor per ncs node


def trainable(params: dict[str, float], context: TrialContext) -> None:
    """One Ray Tune trial: a plain chain of the stage functions, then one report."""
    import ray
    import torch
    from ray import tune

    from edge_tune import bench
    from edge_tune.data import load_data
    from edge_tune.models import create_model, model_stages
    from edge_tune.recipe import schedule_from_params
    from edge_tune.train import set_threads
    from edge_tune.trial import arrays, build, write_recipe

    started = time.time()
    config = context.config
    # 0 = the trial's own CPUs, not the node's: concurrent trials must not oversubscribe it.
    set_threads(config.train_threads or max(1, int(config.tune.trial_cpus)))
    if config.data not in _SPLITS:
        _SPLITS.clear()
        _SPLITS[config.data] = load_data(config.data)
    splits = _SPLITS[config.data]
    model = create_model(config.model, splits.num_classes)
    model.load_state_dict(context.base_state)
    if config.tune.trial_gpus > 0 and torch.cuda.is_available():
        model.cuda()
    schedule = schedule_from_params(params, model_stages(model), config.finetune.epochs)
    out = Path(tempfile.mkdtemp(prefix="edge_tune_trial-"))
    artifact = build(model, schedule, splits, config, out, context.base_shapes,
                     arrays(splits.test), log=lambda _: None)
    write_recipe(schedule, model, config, out / "schedule.yaml")  # pruning keeps the names
    _save_ir(artifact.deployed, out)
    actor = pick_actor(context.actors)
    asked = time.time()
    measured = ray.get(actor.benchmark.remote(model_files(artifact.deployed)))
    for key, csv_name in (("layers", "layers.csv"), ("baseline_layers", "baseline_layers.csv")):
        bench.write_layers_csv([bench.LayerTime(**row) for row in measured[key]], out / csv_name)
    model_ms, base_ms = measured["model"]["latency_ms"], measured["baseline"]["latency_ms"]
    metrics = {
        "objective": objective(artifact.top1, model_ms, base_ms, context.threshold_top1),
        "top1": artifact.top1, "top5": artifact.top5, "latency_ms": model_ms,
        "latency_p90_ms": measured["model"]["latency_p90_ms"], "fps": measured["model"]["fps"],
        "cv": measured["model"]["cv"], "ratio_cv": measured["model"]["ratio_cv"],
        "bench_sessions": measured["model"]["sessions"], "baseline_latency_ms": base_ms,
        "baseline_top1": context.baseline_top1, "speedup": base_ms / model_ms,
        "feasible": artifact.top1 >= context.threshold_top1, "macs": artifact.macs,
        "params": artifact.params, "int8": schedule.int8,
        "finetune_epochs": schedule.finetune_epochs,
        "reached": all(c.reached for c in artifact.verification),
        "bench_wait_s": measured["started"] - asked, "bench_call": measured["call"],
        "trial_node_id": ray.get_runtime_context().get_node_id(),
        "bench_node_id": measured["node_id"], "bench_pid": measured["pid"],
        "bench_start": measured["started"], "bench_end": measured["ended"],
        "trial_s": time.time() - started, **artifact.timings,
    }
    tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(out)))
    shutil.rmtree(out, ignore_errors=True)


def pick_actor(names: tuple[str, ...]) -> Any:
    """The least loaded benchmark actor (shortest queue, then fewest calls served): trials
    spread over the ncs nodes, and each speed-up compares against the baseline measured on
    that same device."""
    import ray

    actors: list[Any] = [ray.get_actor(name, namespace=NAMESPACE) for name in names]
    if len(actors) == 1:
        return actors[0]
    loads = ray.get([a.load.remote() for a in actors])
    return actors[min(range(len(actors)), key=lambda i: loads[i])]


def _save_ir(deployed: Path, out: Path) -> None:
    """Keep an OpenVINO IR (``model.xml``/``.bin``) of every f32 model too (int8 already is)."""
    if deployed.suffix == ".onnx":
        import openvino as ov

        ov.save_model(ov.Core().read_model(str(deployed)), str(out / "model.xml"),
                      compress_to_fp16=False)


def validate(config: Config, space: SearchSpace, device_here: bool = True) -> None:
    """Every cheap check before Ray starts: params vs model, points, data, device, checkpoint."""
    from edge_tune.trial import plan

    plan(config, {name: low for name, (low, _) in space.bounds.items()}, device_here)
    check_points(space, config.tune.points_to_evaluate, "tune.points_to_evaluate")


def connect(address: str | None, config: Config) -> Any:
    """Start a local Ray (this node gets the ``ncs`` resource) or join a cluster that has one."""
    import ray

    kwargs: dict[str, Any] = {"namespace": NAMESPACE, "log_to_driver": False,
                              "configure_logging": True, "logging_level": "ERROR"}
    if address is None:
        context = ray.init(resources={"ncs": 1}, include_dashboard=True,
                           dashboard_host="127.0.0.1", **kwargs)
    else:
        check_address(address)
        try:
            context = ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise UserError(f"--address: cannot join Ray cluster {address!r}: "
                            f"{first_line(err)}") from None
    resources = ray.cluster_resources()
    if resources.get("ncs", 0) < 1:
        ray.shutdown()
        raise UserError(f"--address: the Ray cluster at {address!r} has no node with the 'ncs' "
                        "resource (start the edge node with --resources='{\"ncs\": 1}')")
    if config.tune.trial_gpus > resources.get("GPU", 0):
        ray.shutdown()
        raise UserError(f"tune.trial_gpus: {config.tune.trial_gpus} per trial, but the cluster "
                        f"has {resources.get('GPU', 0):g} GPUs")
    if address is not None:
        try:
            check_edge_devices(config.bench.device)
        except UserError:
            ray.shutdown()
            raise
    return context


def _device_problem(device: str) -> str | None:
    from edge_tune import bench

    try:
        bench.check_device(device)
    except UserError as err:
        return str(err)
    return None


def check_edge_devices(device: str) -> None:
    """Ask every ``ncs`` node whether it has ``device`` (a 0-CPU task pinned to each)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(_device_problem)
    nodes = ncs_nodes()
    answers = ray.get([probe.options(
        num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
        .remote(device) for node in nodes])
    for node, problem in zip(nodes, answers, strict=True):
        if problem:
            raise UserError(f"{problem.replace(' here;', f' on ncs node {node[:8]};')}")


def ray_shutdown() -> None:
    import ray

    ray.shutdown()


def check_address(address: str) -> None:
    """A HOST:PORT (or ray://HOST:PORT) that answers within seconds; ``auto`` is Ray's."""
    import socket

    if address == "auto":
        return
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--address: expected auto, HOST:PORT or ray://HOST:PORT, got "
                        f"{address!r}")
    try:
        with socket.create_connection((host, int(port)), timeout=ADDRESS_TIMEOUT_S):
            pass
    except OSError as err:
        raise UserError(f"--address: cannot reach {hostport} within {ADDRESS_TIMEOUT_S:g} s "
                        f"({err.strerror or type(err).__name__}); is the head node up?") from None


def ncs_nodes() -> list[str]:
    """Ids of the alive nodes that advertise the ``ncs`` resource, in Ray's order."""
    import ray

    return [n["NodeID"] for n in ray.nodes()
            if n.get("Alive") and n.get("Resources", {}).get("ncs", 0) >= 1]


def actor_name(index: int) -> str:
    return ACTOR_NAME if index == 0 else f"{ACTOR_NAME}_{index}"


def start_actors(baseline_model: Path, config: Config,
                 pinned: list[Any] | None = None) -> list[Any]:
    """One benchmark actor per ``ncs`` node, pinned there; one measurement at a time each.

    Threaded (``max_concurrency``) so its queue length and info answer during a measurement;
    the actor's own lock serialises the device. 0 CPUs: trials keep the node's cores. A dead
    actor process restarts (3 times) and the call in flight is retried once.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    files = ray.put(model_files(baseline_model))
    if pinned is not None:
        pinned.append(files)  # the caller keeps it alive: restarts re-run the constructor
    actors: list[Any] = []
    for index, node in enumerate(ncs_nodes()):
        remote = ray.remote(BenchActor).options(
            name=actor_name(index), namespace=NAMESPACE, resources={"ncs": 1}, num_cpus=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
            max_concurrency=16, max_restarts=3, max_task_retries=1)
        actors.append(remote.remote(files, bench_settings(config)))
    ray.get([a.info.remote() for a in actors])  # fail here, not in the first trial
    return actors


def start_actor(baseline_model: Path, config: Config) -> Any:
    """The benchmark actor of the first ``ncs`` node (the only one on a single machine)."""
    return start_actors(baseline_model, config)[0]


def _wandb_mode() -> str:
    """W&B runs online only with a key from the environment (never from a file we write)."""
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def _wandb_callback(config: Config, out: Path, run_name: str) -> Any:
    from ray.air.integrations.wandb import WandbLoggerCallback

    mode = _wandb_mode()
    folder = (out / "wandb").resolve()
    folder.mkdir(exist_ok=True)
    return WandbLoggerCallback(project=config.tune.wandb_project, group=run_name, mode=mode,
                               dir=str(folder), log_config=False)


class Progress(Callback):
    """Tune callback: one stderr line per finished trial, and the best-objective Ray gauge.

    A plain module-level class (Tune pickles callbacks with the experiment, and a resumed run
    unpickles them); the gauge is made on first use, never pickled.
    """

    def __init__(self, total: int) -> None:
        super().__init__()
        self.total = total
        self.best = float("inf")
        self._gauge: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_gauge": None}

    def _set_gauge(self, value: float) -> None:
        if self._gauge is None:
            from ray.util import metrics

            self._gauge = metrics.Gauge("edge_tune_best_objective",
                                        "lowest objective so far (latency ratio if feasible)")
        self._gauge.set(value)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        self.best = min(self.best, float(result["objective"]))
        self._set_gauge(self.best)
        done = sum(t.status in ("TERMINATED", "ERROR") for t in trials) + 1
        params = ", ".join(f"{k}={v:.2f}" for k, v in trial.config.items())
        log_stderr(f"trial {done}/{self.total} {trial.trial_id}: {params} -> top-1 "
                   f"{result['top1']:.2f}%, {result['latency_ms']:.3f} ms, "
                   f"{result['speedup']:.2f}x, objective {result['objective']:.3f}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        log_stderr(f"trial {trial.trial_id} failed (its error is in trials.jsonl); the "
                   "experiment goes on")


def run_tune(config: Config, space: SearchSpace, out: Path, dashboard: str, wandb: bool,
             resume: bool = False) -> dict[str, Any] | None:
    """Run (or, with ``resume``, continue) the experiment in ``out`` on the connected Ray.

    Returns the summary written to summary.json, or None when the run was interrupted before
    every trial finished (Tune saved its state: ``--resume`` continues it).
    """
    import ray
    from ray import tune

    from edge_tune.data import load_data
    from edge_tune.train import set_threads
    from edge_tune.trial import arrays, prepare_baseline

    started = time.time()
    if not resume:
        (out / "config.yaml").write_text(yaml.safe_dump(config_to_dict(config),
                                                        sort_keys=False))
    set_threads(config.train_threads)
    splits = load_data(config.data)
    base = prepare_baseline(config, splits, arrays(splits.test), out / "baseline")
    threshold = Threshold(config.tune.threshold.min_top1, config.tune.threshold.max_drop)
    threshold_top1 = threshold.value(base.artifact.top1)
    log_stderr(f"baseline top-1 {base.artifact.top1:.2f}% (as deployed); threshold "
               f"{threshold_top1:.2f}%")
    pinned: list[Any] = []  # the actors' constructor arguments: a restarted actor needs them
    actors = start_actors(base.artifact.deployed, config, pinned)  # held: a named actor
    actor_info = ray.get([a.info.remote() for a in actors])  # dies with its last handle
    log_stderr(f"benchmark actors: {len(actors)} on {config.bench.device} "
               f"({', '.join(i['host'] for i in actor_info)})")
    ctx = TrialContext(config, {k: v.cpu() for k, v in base.model.state_dict().items()},
                       base.shapes, base.artifact.top1, threshold_top1,
                       tuple(actor_name(i) for i in range(len(actors))))
    resources = {"cpu": config.tune.trial_cpus, "gpu": config.tune.trial_gpus}
    runnable = tune.with_resources(tune.with_parameters(trainable, context=ctx), resources)
    if resume:
        # finished trials are kept, unfinished ones continue; the searcher's state comes back
        # from the experiment checkpoint; errored trials stay errored (their errors recorded)
        tuner = tune.Tuner.restore(str((out / EXPERIMENT).resolve()), trainable=runnable,
                                   resume_unfinished=True, resume_errored=False)
    else:
        tuner = _new_tuner(runnable, config, space, out, wandb)
    results = tuner.fit()
    del actors, pinned  # the last handles: the actors end with the experiment
    finished = sum(1 for i in range(len(results))
                   if results[i].error is not None or "objective" in (results[i].metrics or {}))
    if finished < config.tune.num_samples:
        log_stderr(f"interrupted after {finished} of {config.tune.num_samples} trials; the "
                   f"state is saved: python -m edge_tune.tune --resume {out}")
        return None
    summary = collect(results, out, base, threshold_top1, config, space)
    summary["bench_actor"] = actor_info[0]
    summary["bench_actors"] = actor_info
    summary["seconds"] = time.time() - started
    summary["resumed"] = resume
    summary["dashboard"] = f"http://{dashboard}" if dashboard else None
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _new_tuner(runnable: Any, config: Config, space: SearchSpace, out: Path,
               wandb: bool) -> Any:
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.bayesopt import BayesOptSearch

    # the config's starting points replace the space's own
    points = config.tune.points_to_evaluate or space.points
    searcher = BayesOptSearch(metric="objective", mode="min", random_state=config.tune.seed,
                              random_search_steps=config.tune.random_steps,
                              points_to_evaluate=points or None,
                              patience=config.tune.num_samples)
    callbacks: list[Any] = [Progress(config.tune.num_samples)]
    if wandb:
        callbacks.append(_wandb_callback(config, out, out.name))
    return tune.Tuner(
        runnable, param_space=space.tune_space(),
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(searcher, config.tune.max_concurrent),
            num_samples=config.tune.num_samples, reuse_actors=True),
        run_config=tune.RunConfig(
            name=EXPERIMENT, storage_path=str(out.resolve()), callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=config.tune.max_failures),
            verbose=0))


def collect(results: Any, out: Path, base: Any, threshold_top1: float, config: Config,
            space: SearchSpace) -> dict[str, Any]:
    """trials.jsonl, the best trial's artifacts in ``out/best``, and the summary dict."""
    rows = []
    for result in results:
        metrics = {k: v for k, v in (result.metrics or {}).items()
                   if isinstance(v, int | float | bool | str) and k not in ("config",)}
        rows.append({"id": metrics.get("trial_id") or Path(result.path).name,
                     "status": "error" if result.error else "completed",
                     "params": result.config, "metrics": metrics,
                     "error": None if result.error is None else _one_line(result.error),
                     "checkpoint": None if result.checkpoint is None else result.checkpoint.path})
    with (out / "trials.jsonl").open("w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    done = [r for r in rows if r["status"] == "completed" and "objective" in r["metrics"]]
    best = min(done, key=lambda r: r["metrics"]["objective"]) if done else None
    feasible = [r for r in done if r["metrics"].get("feasible")]
    summary: dict[str, Any] = {
        "baseline": {"top1": base.artifact.top1, "top5": base.artifact.top5,
                     "latency_ms": float(np.median([r["metrics"]["baseline_latency_ms"]
                                                    for r in done])) if done else None,
                     "macs": base.artifact.macs, "params": base.artifact.params},
        "threshold": {"top1": threshold_top1, "min_top1": config.tune.threshold.min_top1,
                      "max_drop": config.tune.threshold.max_drop},
        "search_space": {"source": space.source, "bounds": space.bounds},
        "trials_completed": len(done), "trials_errored": len(rows) - len(done),
        "trials_feasible": len(feasible), "best": None,
    }
    if best is not None:
        m = best["metrics"]
        summary["best"] = {"id": best["id"], "params": best["params"], "top1": m["top1"],
                           "latency_ms": m["latency_ms"], "latency_p90_ms": m["latency_p90_ms"],
                           "baseline_latency_ms": m["baseline_latency_ms"],
                           "speedup": m["speedup"], "objective": m["objective"],
                           "feasible": m["feasible"], "macs": m["macs"], "int8": m["int8"]}
        if best["checkpoint"]:
            shutil.copytree(best["checkpoint"], out / "best")
            summary["best"]["files"] = sorted(p.name for p in (out / "best").iterdir())
    return summary


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    tail = [line for line in text if line.strip()][-1:] or [type(error).__name__]
    return tail[0][:500]


def print_table(summary: dict[str, Any], out: Path) -> None:
    """Baseline vs best, the counts and where everything is (stdout)."""
    b, best = summary["baseline"], summary["best"]
    print(f"\n{'':10} {'top-1 %':>8} {'latency ms':>11} {'MACs':>8} {'speed-up':>9}")
    print(f"{'baseline':10} {b['top1']:8.2f} {b['latency_ms'] or 0:11.3f} "
          f"{b['macs'] / 1e6:7.1f}M {1:8.2f}x")
    if best:
        print(f"{'best':10} {best['top1']:8.2f} {best['latency_ms']:11.3f} "
              f"{best['macs'] / 1e6:7.1f}M {best['speedup']:8.2f}x"
              f"{'' if best['feasible'] else '  (below threshold)'}")
        print(f"best params: {json.dumps({k: round(v, 3) for k, v in best['params'].items()})}")
    print(f"threshold top-1 >= {summary['threshold']['top1']:.2f}%; trials: "
          f"{summary['trials_completed']} completed ({summary['trials_feasible']} above the "
          f"threshold), {summary['trials_errored']} errored")
    print(f"run directory: {out} (summary.json, trials.jsonl, best/)")


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m edge_tune.tune", description=(
        "Search compression parameters (filter removal, int8, fine-tuning length) for the "
        "lowest latency on the edge device that keeps top-1 above the threshold. With no "
        "arguments: ResNet-20 on scikit-learn's digits, 20 trials, on this machine."))
    parser.add_argument("--config", help="YAML config (default: the embedded ResNet-20 on "
                        "digits); its tune: section sets the space, budget and threshold")
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
    args = parser.parse_args(argv)
    if args.resume is not None:
        return resume_main(args)
    config = load_config(args.config)
    if args.num_samples is not None:
        if args.num_samples < 1:
            raise UserError(f"--num-samples: expected an integer >= 1, got {args.num_samples}")
        config = replace(config, tune=replace(config.tune, num_samples=args.num_samples))
    if args.seed is not None:
        config = replace(config, tune=replace(config.tune, seed=args.seed))
    if config.tune.trial_cpus == 0:
        cpus = max(1, (os.cpu_count() or 1) // config.tune.max_concurrent)
        config = replace(config, tune=replace(config.tune, trial_cpus=float(cpus)))
    space = load_space(config.tune.search_space)
    validate(config, space, device_here=args.address is None)
    check_output(args.output)
    return launch(config, space, args, lambda: new_run_dir(args.output, "tune"), resume=False)


def wandb_environment(wandb: bool) -> None:
    """W&B's mode in the environment before Ray starts: its workers inherit it."""
    if wandb:
        os.environ.setdefault("WANDB_MODE", _wandb_mode())
        os.environ.setdefault("WANDB_SILENT", "true")


def launch(config: Config, space: SearchSpace, args: Any, run_dir: Callable[[], Path],
           resume: bool) -> int:
    """Ray first (no ncs node or too few GPUs fail in seconds, before ``run_dir`` creates the
    output), then the experiment; exit code 130 when it was interrupted."""
    wandb = not args.no_wandb
    wandb_environment(wandb)
    if args.address is not None:
        check_address(args.address)
    context = connect(args.address, config)
    try:
        out = run_dir()
        dashboard = getattr(context, "dashboard_url", "") or ""
        if dashboard:
            log_stderr(f"Ray dashboard: http://{dashboard}")
        if resume:
            log_stderr(f"resuming {out}")
        summary = run_tune(config, space, out, dashboard, wandb, resume=resume)
    finally:
        ray_shutdown()
    if summary is None:
        return 130
    print_table(summary, out)
    return 0


def resume_main(args: Any) -> int:
    """``--resume RUN_DIR``: the run's own config and experiment state, checked before Ray."""
    from ray import tune

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
    return launch(config, space, args, lambda: out, resume=True)


def cli() -> None:
    """Console entry point."""
    run_cli(main)


if __name__ == "__main__":
    cli()
