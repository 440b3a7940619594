"""The tuner's experiment: config -> search space -> searcher proposes params ->
:func:`~edge_tune.run.trainable.trainable` (compress, fine-tune, export, int8 on the trial's own
CPU/GPU) -> benchmark actor on the ``ncs`` node (serialised, baseline interleaved) -> objective
-> searcher; trials.jsonl (appended as each trial finishes), the best trial's files and
summary.json in the run directory; every trial mirrored to W&B (offline without a key).
"""

from __future__ import annotations

import dataclasses
import json
import pickletools
import shutil
import time
from collections.abc import Callable, Iterator
from importlib import import_module
from pathlib import Path
from typing import Any

import numpy as np
import ray
import yaml
from ray import tune

from edge_tune.catalog.data import load_data
from edge_tune.compression.baseline import Baseline, prepare_baseline
from edge_tune.compression.channels import probe_settings, resolve_multiple
from edge_tune.compression.deployment import arrays, deployed_accuracy
from edge_tune.compression.train import set_threads
from edge_tune.config import Config, config_to_dict
from edge_tune.core.console import log_stderr
from edge_tune.core.environment import quiet_tune, wandb_environment
from edge_tune.core.errors import UserError, last_line, work_started
from edge_tune.run.allocating import prepare_allocator, profile_settings
from edge_tune.run.baseline_task import train_on_gpu_node
from edge_tune.run.callbacks import TrialLog, Waiting, mirror_reference, wandb_callback
from edge_tune.run.cluster import (
    actor_name,
    actor_place,
    connect,
    cores_to_reserve,
    shutdown,
    start_actors,
    trial_request,
)
from edge_tune.run.context import TrialContext
from edge_tune.run.device_call import CALL_FACTOR, CALL_FLOOR_S, DeviceHang, call_limit
from edge_tune.run.devices import DeviceWatch
from edge_tune.run.front import FRONT, front_lines, trial_front, with_entry, write_front
from edge_tune.run.ledger import (
    TRIALS,
    Ledger,
    TrialRow,
    append,
    seconds_saved,
    trial_row,
    write,
)
from edge_tune.run.measuring import on_actor, watched
from edge_tune.run.pipeline import check_params
from edge_tune.run.reference import Reference, float_only, measure_reference, wanted
from edge_tune.run.runs import beaten, queue_label
from edge_tune.run.trainable import trainable
from edge_tune.search.params import format_params
from edge_tune.search.searchers import check_searcher, create_searcher
from edge_tune.search.space import SearchSpace, check_points, int8_choices
from edge_tune.search.stopping import EarlyStop

EXPERIMENT = "ray"  # Ray Tune's folder inside the run directory


def validate(config: Config, space: SearchSpace, device_here: bool = True) -> None:
    """Every cheap check before Ray starts: params vs model, points, searcher, data, device,
    checkpoint."""
    check_params(config, {name: low for name, (low, _) in space.bounds.items()}, device_here)
    check_points(space, config.tune.points_to_evaluate, "tune.points_to_evaluate")
    check_searcher(config.tune)


def early_stop(config: Config, reference: Reference | None) -> EarlyStop:
    """The run's scheduler; a reference within the threshold and faster than the baseline is
    the first ratio to beat."""
    ratio = reference.ratio if reference is not None and reference.to_beat else float("inf")
    return EarlyStop(config.tune.early_stop, ratio)


def _new_tuner(runnable: Any, config: Config, space: SearchSpace, out: Path,
               wandb: bool, reference: Reference | None) -> tune.Tuner:
    stopper = early_stop(config, reference)
    callbacks: list[Any] = [TrialLog(config.tune.num_samples, out, stopper), Waiting()]
    if wandb:
        callbacks.append(wandb_callback(config, out))
    return tune.Tuner(
        runnable, param_space=space.tune_space(),
        tune_config=tune.TuneConfig(search_alg=create_searcher(config.tune, space),
                                    scheduler=stopper, num_samples=config.tune.num_samples,
                                    reuse_actors=True),
        run_config=tune.RunConfig(
            name=EXPERIMENT, storage_path=str(out.resolve()), callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=config.tune.max_failures),
            verbose=0))


def experiment(config: Config, space: SearchSpace, out: Path, dashboard: str = "",
               wandb: bool = False, resume: bool = False) -> dict[str, Any] | None:
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
    train_on_gpu_node(config)  # trials ask for GPUs and the cluster has one: train there
    val = arrays(splits.val)
    base = prepare_baseline(config, splits, val, out / "baseline")
    test = arrays(splits.test)
    base_test = deployed_accuracy(base.artifact.deployed, test, config.bench)
    threshold_top1 = config.tune.threshold.value(base.artifact.top1)
    log_stderr(f"baseline validation top-1 {base.artifact.top1:.2f}% (as deployed; test "
               f"{base_test[0]:.2f}%); threshold {threshold_top1:.2f}% on validation")
    pinned: list[Any] = []  # [the baseline's files]: every benchmark call passes it
    reserve = cores_to_reserve(config)
    actors = start_actors(base.artifact.deployed, config.bench, pinned, reserve)  # held
    actor_info = ray.get([a.info.remote() for a in actors])  # dies with its last handle
    log_stderr(f"benchmark actors: {len(actors)} (" + ", ".join(
        f"{i['device']} on {actor_place(i)}" for i in actor_info) + ")")
    limit_s = derive_call_limit(config, actors[0], pinned)
    asked = config.prune.channel_multiple
    config, measured = resolve_multiple(
        config, on_actor(actors[0], pinned, probe_settings(config.bench), per_layer=False))
    if measured is not None:
        log_stderr(f"channel multiple: {measured.multiple}, measured on {config.bench.device} "
                   "(mean latency step crossing each multiple: " + ", ".join(
                       f"{m}: {j:.2f}x" for m, j in measured.jumps.items()) + ")")
    allocator = None
    if "latency_target" in space.bounds:
        allocator = prepare_allocator(
            config, base.model, splits, actor_info[0]["identity"],
            on_actor(actors[0], pinned, profile_settings(config.bench), per_layer=True),
            space.bounds["latency_target"][0],
            int8_choices(space),
            "search_space.parameters.latency_target")
    reference = None
    if wanted(config, space):
        try:
            reference = measure_reference(
                base, splits, config, val, test,
                watched(actor_name(0), actor_place(actor_info[0]), pinned, limit_s, config.bench),
                threshold_top1, out)
        except DeviceHang as err:  # optional: the trials' calls are watched on their own
            log_stderr(f"reference: not measured ({err}); the trials go on without it")
    if reference is not None:
        log_stderr(reference.line(config.tune.early_stop))
        floats = float_only(config, space, reference)
        if floats is not None:
            config, space = floats
            log_stderr(f"int8 is not searched in this run: the baseline in int8 ran "
                       f"{reference.speedup:.2f}x float's speed on {config.bench.device}; "
                       "trials run in float (quantize.keep_slower_int8: true searches it)")
        if wandb and not resume:
            mirror_reference(config, out, reference.numbers())
    ctx = TrialContext.of(config, base, threshold_top1,
                          tuple(actor_name(i) for i in range(len(actors))), tuple(pinned),
                          allocator, limit_s,
                          tuple(actor_place(i) for i in actor_info),
                          reserved_cores(actor_info))
    if reserve:
        log_stderr("benchmark actors keep their own cores while trials run beside them: " +
                   ", ".join(f"{i['host']}: {i['cores']}" for i in actor_info))
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
        tuner = _new_tuner(runnable, config, space, out, wandb, reference)
    watch = DeviceWatch(ctx.actors, [(i["node_id"], i["slot"]) for i in actor_info],
                        list(ctx.actor_where),
                        config.bench, config.bench.device_wait_s, reserve)
    watch.start()
    try:
        results = tuner.fit()
    finally:
        watch.stop()
    del actors, pinned, watch.handles  # the last handles: the actors end with the experiment
    recorded = Ledger.read(out / TRIALS)
    rows = [_row(results[i], recorded) for i in range(len(results))]
    ended = sum(1 for r in rows if r.status != "stopped" or r.id in recorded.by_id)
    if watch.lost is not None:
        return device_lost(watch.lost, rows, recorded, out, config)
    if ended < config.tune.num_samples:
        log_stderr(f"interrupted after {ended} of {config.tune.num_samples} trials; the "
                   f"state is saved: python -m edge_tune.tune --resume {out}")
        return None
    summary = collect(rows, out, base, threshold_top1, config, space)
    # Tune's record of a failure in a trial that ran again and ended without one
    summary["trials_retried"] = sum(
        1 for i in range(len(results)) if not results[i].error
        and (Path(results[i].path) / "error.txt").is_file())
    summary["baseline"].update(test_top1=base_test[0], test_top5=base_test[1])
    if summary["best"] is not None and (out / "best").is_dir():
        best_test = deployed_accuracy(deployed_file(out / "best"), test, config.bench)
        summary["best"].update(test_top1=best_test[0], test_top5=best_test[1])
    summary["reference"] = reference.summary() if reference is not None else None
    if reference is not None:
        summary["pareto"] = with_entry(summary["pareto"], reference.front_entry())
        write_front(summary["pareto"], out)
    summary["channel_multiple"] = {"asked": asked, "used": config.prune.channel_multiple,
                                   "jumps": measured.jumps if measured else None}
    summary.update(bench_actor=actor_info[0], bench_actors=actor_info,
                   bench_queue=bench_queue(rows), seconds=time.time() - started,
                   resumed=resume,
                   dashboard=f"http://{dashboard}" if dashboard else None)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def device_lost(reason: str, rows: list[TrialRow], recorded: Ledger, out: Path,
                config: Config) -> dict[str, Any]:
    """A run the device watch stopped: the trials in flight appended to trials.jsonl as
    ``interrupted`` (``--resume`` runs them again; a resumed run's final rewrite replaces
    them), and a summary.json that says so (``interrupted``): what was written."""
    in_flight = [r for r in rows if r.status == "stopped" and r.id not in recorded.by_id]
    for row in in_flight:
        append(out / TRIALS, dataclasses.replace(row, status="interrupted", reason=reason))
    summary = {"interrupted": reason, "trials_finished": len(recorded.by_id) + sum(
        1 for r in rows if r.status == "error"), "trials_interrupted": [r.id for r in in_flight],
        "trials_planned": config.tune.num_samples,
        "resume": f"python -m edge_tune.tune --resume {out}"}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    log_stderr(f"stopped: {reason}; {len(in_flight)} trial(s) in flight recorded as "
               f"interrupted; once an ncs node with the device is back: {summary['resume']}")
    return summary


def derive_call_limit(config: Config, actor: Any, pinned: list[Any]) -> float:
    """The s a benchmark call may hold the device (``bench.call_limit_s``, or derived from one
    whole call of the baseline, measured here at ``actor``: see
    :func:`edge_tune.run.device_call.call_limit`), said on the console."""
    if config.bench.call_limit_s:
        log_stderr(f"benchmark calls: at most {config.bench.call_limit_s:g} s on the device "
                   "each (bench.call_limit_s)")
        return config.bench.call_limit_s
    # one session (the factor covers repeated ones): the baseline against itself
    once = dataclasses.replace(config.bench, max_sessions=1)
    call = ray.get(actor.benchmark_set.remote({"model": ray.get(pinned[0])}, baseline=pinned,
                                              settings=once))
    limit = call_limit(config.bench, call.ended - call.started)
    log_stderr(f"benchmark calls: at most {limit:.0f} s on the device each ({CALL_FACTOR:g} x "
               f"the baseline's {call.ended - call.started:.1f} s call, at least "
               f"{CALL_FLOOR_S:g} s; bench.call_limit_s sets it)")
    return limit


def reserved_cores(actor_info: list[dict[str, Any]]) -> dict[str, tuple[int, ...]]:
    """Node id -> the cores its benchmark actors keep (every device's, several on a node)."""
    out: dict[str, tuple[int, ...]] = {}
    for info in actor_info:
        if info["cores"]:
            out[info["node_id"]] = tuple(sorted({*out.get(info["node_id"], ()),
                                                 *info["cores"]}))
    return out


def bench_queue(rows: list[TrialRow]) -> dict[str, Any]:
    """How the benchmark actors kept up, from the trials' probes: per actor (its node id, and
    ``/actor name`` when a node has several devices), the calls,
    the wait from asking to taking the device (s: median, p90, max) and the busy share (time
    measuring / the span from its first call's start to its last call's end)."""
    by_node: dict[str, list[Any]] = {}
    for row in rows:
        result = row.result
        if result is not None and result.probe is not None and result.replay is None:
            by_node.setdefault(result.probe.bench_node_id or "here", []).append(result.probe)
    if any(len({p.bench_actor for p in probes}) > 1 for probes in by_node.values()):
        by_actor: dict[str, list[Any]] = {}  # several devices on a node: one entry each
        for node, probes in by_node.items():
            for p in probes:
                by_actor.setdefault(f"{node}/{p.bench_actor}", []).append(p)
        by_node = by_actor
    out: dict[str, Any] = {}
    for node, probes in by_node.items():
        waits = [p.bench_wait_s for p in probes]
        span = max(p.bench_end for p in probes) - min(p.bench_start for p in probes)
        busy = sum(p.bench_end - p.bench_start for p in probes)
        out[node] = {"calls": len(probes), "wait_s_median": float(np.median(waits)),
                     "wait_s_p90": float(np.percentile(waits, 90)), "wait_s_max": max(waits),
                     "busy_share": busy / span if span > 0 else 1.0}
    return out


def _row(result: Any, ledger: Ledger) -> TrialRow:
    """A trial of Tune's result grid as its trials.jsonl row; a stopped trial's reason is the
    one the ledger recorded when it stopped."""
    metrics = result.metrics or {}
    trial_id = str(metrics.get("trial_id") or Path(result.path).name)
    checkpoint = metrics.get("replayed_checkpoint") or (
        None if result.checkpoint is None else result.checkpoint.path)
    if result.error:
        return trial_row(trial_id, "error", result.config, metrics, _one_line(result.error),
                         checkpoint=checkpoint)
    if metrics.get("phase") == "error":  # it raised: reported by the trainable, not retried
        return trial_row(trial_id, "error", result.config, metrics,
                         str(metrics.get("trial_error")), checkpoint=checkpoint)
    recorded = ledger.by_id.get(trial_id)
    return trial_row(trial_id, "completed" if metrics.get("phase") == "done" else "stopped",
                     result.config, metrics,
                     reason=recorded.reason if recorded else None, checkpoint=checkpoint)


def _one_line(error: BaseException) -> str:
    return (last_line(error).rstrip() or type(error).__name__)[:500]


def collect(rows: list[TrialRow], out: Path, base: Baseline, threshold_top1: float,
            config: Config, space: SearchSpace) -> dict[str, Any]:
    """trials.jsonl (rewritten whole, one line per trial), the best trial's artifacts in
    ``out/best``, and the summary dict."""
    write(out / TRIALS, rows)
    done = [r for r in rows if r.status == "completed" and r.result is not None]
    halted = [r for r in rows if r.status == "stopped"]
    results = [r.result for r in done if r.result is not None]
    best = min(done, key=lambda r: r.result.objective if r.result else float("inf")) \
        if done else None
    summary: dict[str, Any] = {
        "baseline": {"val_top1": base.artifact.top1, "val_top5": base.artifact.top5,
                     "latency_ms": float(np.median([r.probe.baseline_latency_ms
                                                    for r in results if r.probe]))
                     if done else None,
                     "macs": base.artifact.macs, "params": base.artifact.params},
        "threshold": {"top1": threshold_top1, "min_top1": config.tune.threshold.min_top1,
                      "max_drop": config.tune.threshold.max_drop},
        "search_space": {"source": space.source, "bounds": space.bounds},
        "searcher": config.tune.searcher,
        "trials_completed": len(done), "trials_stopped": len(halted),
        "trials_errored": len(rows) - len(done) - len(halted),
        "seconds_saved_by_stopping": seconds_saved(rows),
        "trials_replayed": sum(1 for r in done + halted if r.result and r.result.replay),
        "trials_feasible": sum(1 for r in results if r.feasible), "best": None,
        # int8 asked, the device ran its int8 graph slower than float: float deployed
        "trials_int8_slower": sum(1 for r in done + halted if r.result and
                                  (r.result.int8_vs_float or 0.0) > 1.0),
        # benchmark calls that held the device past bench.call_limit_s (actor restarted)
        "device_hangs": sum(r.result.device_hangs for r in rows if r.result) + 2 * sum(
            1 for r in rows if r.status == "error" and "did not answer within" in
            (r.error or "")),
    }
    if best is not None and best.result is not None and best.result.probe is not None \
            and best.result.deployed is not None:
        m, probe, deployed = best.result, best.result.probe, best.result.deployed
        summary["best"] = {"id": best.id, "params": best.params, "val_top1": m.val_top1,
                           "latency_ms": probe.latency_ms,
                           "latency_p90_ms": probe.latency_p90_ms,
                           "baseline_latency_ms": probe.baseline_latency_ms,
                           "speedup": probe.speedup, "objective": m.objective,
                           "feasible": m.feasible, "macs": deployed.macs, "int8": m.int8}
        if best.checkpoint:
            shutil.copytree(best.checkpoint, out / "best")
            summary["best"]["files"] = sorted(p.name for p in (out / "best").iterdir())
    summary["pareto"] = trial_front(rows, out)
    write_front(summary["pareto"], out)
    return summary


def deployed_file(folder: Path) -> Path:
    """The model a trial deployed, in its saved folder: int8 IR if it has one, else ONNX."""
    int8 = folder / "model_int8.xml"
    return int8 if int8.is_file() else folder / "model.onnx"


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
    ref = summary.get("reference")
    if ref:
        print(f"{'reference':10} {ref['val_top1']:11.2f} {ref['test_top1']:12.2f} "
              f"{ref['latency_ms']:11.3f} {ref['macs'] / 1e6:7.1f}M {ref['speedup']:8.2f}x"
              f"  (the baseline in int8, not fine-tuned: {ref['folder']}/)")
        if beaten(summary) is False:
            print(f"no trial beat the baseline in int8 within the threshold: "
                  f"{ref['folder']}/ is the fastest model found ({ref['speedup']:.2f}x)")
    print(f"threshold validation top-1 >= {summary['threshold']['top1']:.2f}%; trials: "
          f"{summary['trials_completed']} completed ({summary['trials_feasible']} above the "
          f"threshold), {summary['trials_stopped']} stopped early (about "
          f"{summary['seconds_saved_by_stopping']:.0f} s of fine-tuning saved), "
          f"{summary['trials_errored']} errored")
    if summary.get("device_hangs"):
        print(f"the device hung {summary['device_hangs']} time(s): each time its benchmark "
              "actor was ended and restarted (bench.call_limit_s; device_hangs in "
              f"{TRIALS}, errors naming the device)")
    for node, queue in summary.get("bench_queue", {}).items():
        print(f"benchmark queue on {queue_label(node)}: {queue['calls']} calls, waited "
              f"{queue['wait_s_median']:.1f} s median ({queue['wait_s_max']:.1f} s at most), "
              f"busy {100 * queue['busy_share']:.0f}% of its span")
    if summary.get("trials_int8_slower"):
        print(f"int8 ran slower than float on the graphs of {summary['trials_int8_slower']} "
              "trial(s): those were deployed in float (quantize.keep_slower_int8: true keeps "
              "int8; int8_vs_float in trials.jsonl)")
    if summary.get("pareto"):
        print("\n".join(front_lines(summary["pareto"], summary["threshold"]["top1"])))
    print(f"run directory: {out} (summary.json, {TRIALS}, {FRONT}, best/)")


def launch(config: Config, space: SearchSpace, address: str | None, wandb: bool,
           run_dir: Callable[[], Path], resume: bool) -> tuple[dict[str, Any] | None, Path]:
    """Ray first (no ncs node, an unreachable address or a request no node fits fail in
    seconds, before ``run_dir`` creates the output), then the experiment: its summary (None
    when it was interrupted) and its directory."""
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
        summary = experiment(config, space, out, dashboard, wandb, resume=resume)
    finally:
        shutdown()
    return summary, out


def check_resumable(out: Path) -> None:
    """A run directory ``--resume`` can continue: an interrupted run's config and Tune state,
    written by this layout of edge_tune (Tune unpickles its callbacks, stopper and searcher by
    their module paths), and not finished."""
    if not (out / "config.yaml").is_file() or not tune.Tuner.can_restore(
            str((out / EXPERIMENT).resolve())):
        raise UserError(f"--resume: {str(out)!r} holds no interrupted edge_tune run "
                        f"(config.yaml and {EXPERIMENT}/ experiment state)")
    summary = out / "summary.json"
    if summary.is_file() and "interrupted" not in json.loads(summary.read_text()):
        raise UserError(f"--resume: {str(out)!r} already finished (summary.json); nothing to "
                        "resume")
    for pickled in sorted((out / EXPERIMENT).glob("*.pkl")):
        for module, name in _globals(pickled.read_bytes()):
            if module.split(".")[0] == "edge_tune" and not _importable(module, name):
                raise UserError(
                    f"--resume: {str(out)!r} was written by another version of edge_tune: its "
                    f"saved experiment ({pickled.name}) names {module}.{name}, which this "
                    f"version does not have; it cannot resume (its {TRIALS} keeps the "
                    "trials that finished)")


def _globals(data: bytes) -> Iterator[tuple[str, str]]:
    """(module, name) of every class or function a pickle refers to, nested pickles too: the
    strings pushed (or fetched from the memo) just before each STACK_GLOBAL."""
    recent: list[object] = []  # the last values pushed: strings, None for anything else
    memo: dict[int, object] = {}
    try:
        for opcode, arg, _ in pickletools.genops(data):
            kind = opcode.name
            if kind == "MEMOIZE":
                memo[len(memo)] = recent[-1] if recent else None
            elif kind in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[int(arg)] = recent[-1] if recent else None  # type: ignore[arg-type]
            elif kind in ("GET", "BINGET", "LONG_BINGET"):
                recent.append(memo.get(int(arg)))  # type: ignore[arg-type]
            elif kind == "GLOBAL" and isinstance(arg, str):
                module, _, name = arg.partition(" ")
                yield module, name
                recent.append(None)
            elif kind == "STACK_GLOBAL":
                if len(recent) >= 2 and isinstance(recent[-2], str) \
                        and isinstance(recent[-1], str):
                    yield recent[-2], recent[-1]
                recent.append(None)
            elif isinstance(arg, str) and "UNICODE" in kind:
                recent.append(arg)
            else:
                if isinstance(arg, bytes) and arg[:1] == b"\x80":
                    yield from _globals(arg)
                if opcode.stack_after:
                    recent.append(None)
            del recent[:-8]
    except (ValueError, IndexError):  # not a pickle after all (or a truncated one)
        return


def _importable(module: str, name: str) -> bool:
    try:
        found: Any = import_module(module)
    except ImportError:
        return False
    for part in name.split("."):
        if not hasattr(found, part):
            return False
        found = getattr(found, part)
    return True
