"""Fault handling claimed in docs/tune.md ("Faults and resume"), caused for real.

- A benchmark actor killed mid-measurement restarts and the call in flight is retried once.
- ``tune.max_failures``: a trial whose worker process is killed is retried and completes.
- A trial that raises is recorded as ``error`` with its message; the others complete.
- A device call that hangs (the actor's process frozen) ends that actor past the call limit;
  a second hang fails that trial only, naming the device; the run goes on.

Only processes a test started are signalled: the benchmark actor of the Ray this test started
in-process (``address="local"``), or the Ray workers among the CLI subprocess's descendants.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import psutil
import pytest
import ray
import torch
import yaml

from edge_tune.catalog.models import create_model
from edge_tune.compression.export import export_onnx
from edge_tune.config import config_from_dict
from edge_tune.edge.actor import BenchCall, model_files
from edge_tune.edge.bench import BenchSettings
from edge_tune.run.cluster import start_actors
from edge_tune.search.searchers import create_searcher
from edge_tune.search.space import load_space
from tests.background import Tune


def _gone(pid: int) -> bool:
    """The process no longer runs (exited, or a zombie its parent has not reaped yet)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _cpu(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.Error:
        return 0.0
    return times.user + times.system


def _busy(run: Tune, title: str, timeout: float = 120) -> list[psutil.Process]:
    """``title`` workers that are computing (CPU time grows), i.e. a trial is training in them,
    not waiting between trials or on the benchmark actor."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        workers = run.workers(title)
        before = {w.pid: _cpu(w) for w in workers}
        time.sleep(0.5)
        busy = [w for w in workers if _cpu(w) - before[w.pid] > 0.2]
        if busy:
            return busy
        assert run.proc.poll() is None, run.tail()
    raise AssertionError(f"no busy {title} worker within {timeout:g} s:\n{run.tail()}")


def _tune_config(tmp_path: Path, small_config: dict, **overrides: object) -> str:
    # early_stop off: these tests count trials that complete or fail; no reference: they
    # freeze and count the actor's processes from the first trial's call on (the reference's
    # call would come first). The hang test's failures beside the reference (3 of 5 runs,
    # every later trial hung) were a restart frozen as it started: edge/process.py ends it
    tune = {"search_space": "default", "random_steps": 2, "max_concurrent": 1,
            "early_stop": False, "reference": False}
    config = {**small_config, **overrides}
    config["tune"] = {**tune, **config.get("tune", {})}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]


@pytest.mark.slow  # ~20 s alone, ~35 s on 2 busy cores
def test_benchmark_in_flight_when_the_actor_dies_is_retried(tmp_path: Path) -> None:
    example = torch.zeros(1, 3, 32, 32)
    baseline = export_onnx(create_model("resnet20_cifar", 10), example, tmp_path / "r.onnx")
    small = export_onnx(create_model("simple_cnn", 10), example, tmp_path / "s.onnx")
    # one interleaved session of a few seconds (ResNet-20 ~0.6 ms a run here), so the kill
    # lands inside it and the retry is not over before we look
    settings = BenchSettings(warmup=5, iterations=4500, rounds=3, fps_seconds=0,
                             max_sessions=1)
    ray.init(address="local", num_cpus=2, resources={"ncs": 1}, include_dashboard=False,
             namespace="edge_tune_test_faults", log_to_driver=False)
    try:
        # held for the whole test: every call brings the baseline (the restarted actor reads
        # it from here)
        pinned: list = []
        [actor] = start_actors(baseline, settings, pinned)
        killed = ray.get(actor.info.remote())["pid"]
        assert ray.get(actor.load.remote()) == (0, 0)
        ref = actor.benchmark.remote(model_files(small), per_layer=False, baseline=pinned)
        deadline = time.time() + 60
        while (load := ray.get(actor.load.remote())) != (1, 1):
            assert load == (0, 0), f"the call ended before it could be killed: {load}"
            assert time.time() < deadline, "the benchmark call never started"
            time.sleep(0.02)
        time.sleep(0.5)  # past writing the files and compiling: measuring now
        assert ray.get(actor.load.remote()) == (1, 1), "the call ended before the kill"
        killed_at = time.time()
        os.kill(killed, signal.SIGKILL)  # the device's process dies mid-measurement
        result = ray.get(ref, timeout=180)
        assert isinstance(result, BenchCall)
        assert _gone(killed)
        assert result.pid != killed and not _gone(result.pid)
        assert result.started > killed_at  # measured again, by the restarted process
        assert result.call == 1  # the new process's first call: its counters started afresh
        assert result.models["model"].latency_ms < result.baseline.latency_ms
        info = ray.get(actor.info.remote())  # the same handle reaches the restarted actor
        assert info["pid"] == result.pid and info["calls"] == 1
        assert len(pinned) == 1
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_max_failures_retries_a_trial_whose_worker_was_killed(tmp_path: Path,
                                                              small_config: dict) -> None:
    out = tmp_path / "run"
    # 32 px: a trial fine-tunes for seconds, long enough to be caught at it
    config = _tune_config(tmp_path, small_config, tune={"max_failures": 1},
                          data={"image_size": 32})
    run = Tune("--config", config, "--num-samples", "2", "--seed", "3", "--no-wandb",
               "--output", str(out))
    try:
        first = run.wait_for("trial 1/2").split(" ")[3].rstrip(":")
        # trial 2 is training now (one trial at a time): its worker burns CPU
        workers = _busy(run, "ray::ImplicitFunc")
        killed = {w.pid for w in workers}
        for worker in workers:
            worker.kill()  # SIGKILL: the trial's process dies mid-trial
        assert run.finish() == 0, run.tail()
    finally:
        if run.proc.poll() is None:
            run.kill()
    assert all(_gone(pid) for pid in killed)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials_completed"] == 2 and summary["trials_errored"] == 0
    rows = _rows(out)
    assert len(rows) == 2 and len({r["id"] for r in rows}) == 2
    assert {r["status"] for r in rows} == {"completed"}
    second = next(r["id"] for r in rows if r["id"] != first)
    # Tune's own record of the failure: the second trial failed once, then ran again in a
    # new process; the first never failed
    failures = {d.name: (d / "error.txt").read_text() for d in (out / "ray").iterdir()
                if (d / "error.txt").is_file()}
    assert len(failures) == 1, failures
    [(folder, text)] = failures.items()
    assert second in folder and "Failure # 1" in text and "Failure # 2" not in text
    results = [json.loads(line) for line in
               (out / "ray" / folder / "result.json").read_text().splitlines()]
    assert results[-1]["trial_id"] == second and results[-1]["pid"] not in killed
    assert not any("failed (its error is in" in line for line in run.lines)
    assert any(f"trial {second} lost its process or node" in line for line in run.lines)
    assert summary["trials_retried"] == 1


@pytest.mark.slow
def test_a_trial_that_raises_is_recorded_and_the_others_complete(tmp_path: Path,
                                                                small_config: dict) -> None:
    # A real fault: fine-tuning at the largest learning rate and weight decay the config
    # allows diverges, and the recipe runner raises ("recipe training diverged"). Only a trial
    # that fine-tunes does: one that prunes nothing does not train at all. The space's points
    # (tried first, in order) fix which trial is which: the failing one first, so the other
    # runs after the error, while the searcher is still in its random warm-up (random_steps
    # 2): an error there used to stall Ray's BayesOptSearch for good.
    space = tmp_path / "space.yaml"
    points = [{"filter_ratio": 0.5, "finetune_epochs": 1.0},  # trains, diverges, raises
              {"filter_ratio": 0.0, "finetune_epochs": 1.0}]
    space.write_text(yaml.safe_dump({
        "parameters": {"filter_ratio": [0.0, 0.5], "finetune_epochs": [0.0, 1.0]},
        "points_to_evaluate": points}))
    config = _tune_config(tmp_path, small_config,
                          finetune={"epochs": 1, "lr": 10.0, "weight_decay": 1.0},
                          tune={"search_space": str(space), "random_steps": 2,
                                "early_stop": False})
    out = tmp_path / "run"
    run = Tune("--config", config, "--num-samples", "2", "--no-wandb", "--output", str(out))
    try:
        assert run.finish(timeout=300) == 0, run.tail()
    finally:
        if run.proc.poll() is None:
            run.kill()  # a stalled run: its Ray processes too, not only the driver
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials_completed"] == 1 and summary["trials_errored"] == 1
    rows = _rows(out)
    assert len(rows) == 2 and len({r["id"] for r in rows}) == 2
    [failed] = [r for r in rows if r["status"] == "error"]
    assert failed["params"] == points[0]
    assert "recipe training diverged" in failed["error"], failed["error"]
    # it measured its latency first, then diverged while fine-tuning: reported as its last
    # result (phase error), so it was not retried though tune.max_failures allows it
    assert failed["metrics"]["phase"] == "error" and "val_top1" not in failed["metrics"]
    assert failed["metrics"]["latency_ratio"] > 0
    assert failed["metrics"]["trial_error"].startswith("RuntimeError: ")
    assert summary["trials_retried"] == 0
    [done] = [r for r in rows if r["status"] == "completed"]
    assert done["params"] == points[1]
    assert done["error"] is None and "objective" in done["metrics"]
    # it prunes nothing, so it deploys the baseline itself: the same top-1
    assert done["metrics"]["val_top1"] == pytest.approx(summary["baseline"]["val_top1"])
    assert summary["best"]["id"] == done["id"]
    assert any(f"trial {failed['id']} failed (its error is in trials.jsonl)" in line
               for line in run.lines)


@pytest.mark.parametrize("searcher", ["bayesopt", "bayesopt_penalty"])
def test_an_error_among_the_random_steps_does_not_stall_the_search(searcher: str) -> None:
    """Ray's BayesOptSearch never suggests again once a trial errors among its first
    tune.random_steps trials; edge_tune's subclass frees the slot (and its own searcher
    learns nothing from an error)."""
    tune = config_from_dict({"tune": {"random_steps": 2, "num_samples": 4,
                                      "searcher": searcher}}).tune
    space = load_space("default")
    searcher = create_searcher(tune, space)
    # what Tune does with the Tuner's param_space, and with each finished or errored trial
    assert searcher.set_search_properties("objective", "min", space.tune_space())
    assert searcher.suggest("t1") is not None
    searcher.on_trial_complete("t1", {"objective": 1.0, "latency_ratio": 1.0,
                                      "val_top1": 90.0, "threshold_top1": 89.0})
    assert searcher.suggest("t2") is not None
    searcher.on_trial_complete("t2", None, error=True)
    assert searcher.suggest("t3") is not None


def test_the_random_searcher_suggests_inside_the_space_after_its_points() -> None:
    tune = config_from_dict({"tune": {"searcher": "random", "seed": 3}}).tune
    space = load_space("default")
    searcher = create_searcher(tune, space)
    assert searcher.set_search_properties("objective", "min", space.tune_space())
    first = searcher.suggest("t1")
    assert first == space.points[0]  # the space's hand-made starting point first
    searcher.on_trial_complete("t1", {"objective": 1.0})
    for i in range(2, 12):
        later = searcher.suggest(f"t{i}")
        assert later is not None and later != first
        for name, (low, high) in space.bounds.items():
            assert low <= later[name] <= high
        assert later["int8"] in (0.0, 1.0)  # a choice, never 0.6
        assert later["finetune_epochs"] == round(later["finetune_epochs"])
        searcher.on_trial_complete(f"t{i}", {"objective": 1.0})


def _new_worker(run: Tune, title: str, seen: list[int], timeout: float = 120) -> psutil.Process:
    """The first ``title`` worker of ``run`` whose pid is not in ``seen``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        fresh = [w for w in run.workers(title) if w.pid not in seen]
        if fresh:
            return fresh[0]
        assert run.proc.poll() is None, run.tail()
        time.sleep(0.05)
    raise AssertionError(f"no new {title} worker within {timeout:g} s:\n{run.tail()}")


@pytest.mark.slow
def test_a_device_that_hangs_fails_one_trial_and_the_run_goes_on(tmp_path: Path,
                                                                 small_config: dict) -> None:
    """The benchmark actor's process frozen (SIGSTOP: a device call that never returns) after
    the first trial: the next call is retried on the restarted process and its trial
    completes. Frozen again after the second trial, and its restarted process frozen too: the
    trial whose call hung twice is recorded as error naming the device and the limit, every
    frozen process is ended, and the trials after it complete on a fresh process."""
    out = tmp_path / "run"
    config = _tune_config(tmp_path, small_config,
                          bench={**small_config["bench"], "call_limit_s": 4})
    run = Tune("--config", config, "--num-samples", "5", "--seed", "3", "--no-wandb",
               "--output", str(out))
    frozen: list[int] = []
    try:
        run.wait_for("benchmark calls: at most 4 s on the device each (bench.call_limit_s)")
        run.wait_for("trial 1/5")
        actor = _new_worker(run, "ray::BenchActor", frozen)  # idle between calls
        actor.suspend()
        frozen.append(actor.pid)
        retried = run.wait_for("trial 2/5")
        for _ in range(2):  # the process that served trial 2, then its restarted one at once
            actor = _new_worker(run, "ray::BenchActor", frozen)
            actor.suspend()
            frozen.append(actor.pid)
        started = time.time()
        failed = run.wait_for("failed: device CPU on")
        waited = time.time() - started
        assert run.finish() == 0, run.tail()
    finally:
        if run.proc.poll() is None:
            run.kill()
    assert all(_gone(pid) for pid in frozen)  # ended by the tuner (ray.kill), not left frozen
    assert "the device hung 1 time(s): its actor was restarted and the call retried" in retried
    # the second hang was found within its limit and the status timeout (4 + 5 s), not minutes
    assert waited < 60, waited
    assert "did not answer within 4 s, twice" in failed
    rows = _rows(out)
    errors = [r for r in rows if r["status"] == "error"]
    assert len(rows) == 5 and len(errors) == 1, rows
    assert "did not answer within 4 s" in errors[0]["error"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials_completed"] == 4 and summary["trials_errored"] == 1
    assert summary["device_hangs"] == 3
    completed = [r["metrics"] for r in rows if r["status"] == "completed"]
    assert [m.get("device_hangs", 0) for m in completed] == [0, 1, 0, 0]
    # served by the first process, its restart, then (after two more hangs) a fresh one
    served = [m["bench_pid"] for m in completed]
    assert served[:2] == frozen[:2] and served[2] == served[3] and served[2] not in frozen


def _cluster_config(tmp_path: Path, small_config: dict, **bench: object) -> str:
    # a call limit given: no timing call of the baseline, so calls are the trials' own
    return _tune_config(tmp_path, small_config,
                        bench={**small_config["bench"], "call_limit_s": 60, **bench})


@pytest.mark.slow
def test_edge_nodes_that_leave_and_come_back(tmp_path: Path, small_config: dict) -> None:
    """Two ncs nodes: one removed mid-run, and the calls move to the other without a wait;
    then that one removed too, and trials wait until a new ncs node joins; the run completes
    with every trial once."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    run: Tune | None = None
    try:
        first, second = (cluster.add_node(num_cpus=0, resources={"ncs": 1}) for _ in range(2))
        cluster.wait_for_nodes()
        out = tmp_path / "run"
        run = Tune("--address", cluster.address, "--config",
                   _cluster_config(tmp_path, small_config), "--num-samples", "6", "--seed",
                   "3", "--no-wandb", "--output", str(out))
        run.wait_for("trial 1/6")
        cluster.remove_node(first)
        moved = run.wait_for("left the cluster")
        run.wait_for("trial 3/6")  # no wait: the other device took the calls
        cluster.remove_node(second)
        waiting = run.wait_for("trials wait for an ncs node")
        time.sleep(4)  # a gap the console shows
        third = cluster.add_node(num_cpus=0, resources={"ncs": 1})
        back = run.wait_for("back after")
        assert run.finish() == 0, run.tail()
    finally:
        if run is not None and run.proc.poll() is None:
            run.kill()
        cluster.shutdown()
    assert "the other 1 device(s) take its calls" in moved
    assert "up to 300 s; bench.device_wait_s" in waiting
    assert f"(node {third.node_id[:8]}) takes its calls" in back
    assert int(back.split("back after ")[1].split(" s")[0]) >= 4
    rows = _rows(out)
    assert len(rows) == 6 and len({r["id"] for r in rows}) == 6, rows
    assert {r["status"] for r in rows} == {"completed"}
    nodes = [r["metrics"]["bench_node_id"] for r in rows]
    assert nodes[-1] == third.node_id and set(nodes) <= {first.node_id, second.node_id,
                                                          third.node_id}
    assert json.loads((out / "summary.json").read_text())["trials_completed"] == 6


@pytest.mark.slow
def test_a_device_gone_for_good_stops_the_run_and_resume_finishes_it(
        tmp_path: Path, small_config: dict) -> None:
    """The only ncs node removed: the run waits bench.device_wait_s, then stops with exit
    code 75, the trial in flight recorded as interrupted; --resume, once a new ncs node has
    joined, runs that trial again and finishes the run with every trial once."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    run: Tune | None = None
    try:
        edge = cluster.add_node(num_cpus=0, resources={"ncs": 1})
        cluster.wait_for_nodes()
        out = tmp_path / "run"
        run = Tune("--address", cluster.address, "--config",
                   _cluster_config(tmp_path, small_config, device_wait_s=8),
                   "--num-samples", "4", "--seed", "3", "--no-wandb", "--output", str(out))
        run.wait_for("trial 1/4")
        cluster.remove_node(edge)
        removed = time.time()
        code = run.finish(timeout=120)
        took = time.time() - removed
        stopped = run.wait_for("stopped: no ncs node with device CPU came back within 8 s")
        assert code == 75, run.tail()
        summary = json.loads((out / "summary.json").read_text())
        assert summary["interrupted"].startswith("no ncs node with device CPU came back")
        interrupted = [r for r in _rows(out) if r["status"] == "interrupted"]
        assert [r["id"] for r in interrupted] == summary["trials_interrupted"]
        assert len(interrupted) >= 1 and "--resume" in stopped
        cluster.add_node(num_cpus=0, resources={"ncs": 1})
        cluster.wait_for_nodes()
        run = Tune("--address", cluster.address, "--resume", str(out), "--no-wandb")
        assert run.finish() == 0, run.tail()
    finally:
        if run is not None and run.proc.poll() is None:
            run.kill()
        cluster.shutdown()
    assert took < 8 + 30, took  # the wait, two looks and Tune's own stop
    rows = _rows(out)
    assert len(rows) == 4 and len({r["id"] for r in rows}) == 4, rows
    assert {r["status"] for r in rows} == {"completed"}
    assert {r["id"] for r in interrupted} <= {r["id"] for r in rows}  # run again, once
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials_completed"] == 4 and "interrupted" not in summary


def _training_here(title: str, run: Tune, timeout: float = 120) -> psutil.Process:
    """A ``title`` worker among this process's descendants (a cluster this test started)
    whose CPU time grows: a trial training."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        workers = []
        for process in psutil.Process().children(recursive=True):
            try:
                if " ".join(process.cmdline()).startswith(title):
                    workers.append(process)
            except psutil.Error:
                continue
        before = {w.pid: _cpu(w) for w in workers}
        time.sleep(0.5)
        busy = [w for w in workers if _cpu(w) - before[w.pid] > 0.2]
        if busy:
            return busy[0]
        assert run.proc.poll() is None, run.tail()
    raise AssertionError(f"no busy {title} worker within {timeout:g} s:\n{run.tail()}")


def _node_of(process: psutil.Process, nodes: list) -> object | None:
    """The ``ray.cluster_utils`` node whose raylet started ``process`` (up its parents)."""
    raylets = {node.all_processes["raylet"][0].process.pid: node for node in nodes}
    for parent in process.parents():
        if parent.pid in raylets:
            return raylets[parent.pid]
    return None


@pytest.mark.slow
def test_a_trial_node_that_leaves_mid_trial_is_retried_elsewhere(tmp_path: Path,
                                                                 small_config: dict) -> None:
    """Two trial nodes of one CPU each; the one training a trial removed mid-trial: that
    trial runs again on the other (retried by default: tune.max_failures 2), said and counted;
    every trial completes once."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    run: Tune | None = None
    try:
        workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
        cluster.add_node(num_cpus=0, resources={"ncs": 1})
        cluster.wait_for_nodes()
        out = tmp_path / "run"
        config = _tune_config(tmp_path, small_config, data={"image_size": 32},
                              bench={**small_config["bench"], "call_limit_s": 60},
                              tune={"trial_cpus": 1})
        run = Tune("--address", cluster.address, "--config", config, "--num-samples", "3",
                   "--seed", "3", "--no-wandb", "--output", str(out))
        run.wait_for("trial 1/3")
        busy = _training_here("ray::ImplicitFunc", run)  # the cluster's workers are ours
        lost = _node_of(busy, workers)
        assert lost is not None
        cluster.remove_node(lost)
        assert run.finish() == 0, run.tail()
    finally:
        if run is not None and run.proc.poll() is None:
            run.kill()
        cluster.shutdown()
    [kept] = [w for w in workers if w is not lost]
    rows = _rows(out)
    assert len(rows) == 3 and len({r["id"] for r in rows}) == 3, rows
    assert {r["status"] for r in rows} == {"completed"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials_retried"] == 1 and summary["trials_errored"] == 0
    [said] = [line for line in run.lines if "lost its process or node" in line]
    retried = said.split("trial ")[1].split(" ")[0]
    assert next(r for r in rows if r["id"] == retried)["metrics"]["trial_node_id"] == \
        kept.node_id
