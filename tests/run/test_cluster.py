"""Running on a Ray cluster: cluster.yaml, node roles, placement, the edge install, metrics."""

from __future__ import annotations

import copy
import importlib.metadata
import itertools
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import click
import jsonschema
import pytest
import yaml

from tests.conftest import ROOT, free_port, run_module


def _launcher_checks(config: dict) -> None:
    """What ``ray up`` does to a cluster config before touching any machine."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(config)))


def test_cluster_yaml_passes_rays_launcher_checks() -> None:
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    _launcher_checks(config)
    assert config["provider"]["type"] == "local"
    commands = " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert commands.count("python -m edge_tune.node") == 2 and "127.0.0.1" in commands
    assert "~/.ray/auth_token" in config["file_mounts"]


@pytest.mark.parametrize("change", [
    {"setup_comands": []},  # a typo: the schema allows no extra keys
    {"available_node_types": {"edge": {"node_config": {}, "resources": {"ncs": 1}}}},
    {"provider": {"type": "local", "worker_ips": ["10.0.0.2"]}},  # no head_ip
])
def test_a_config_ray_up_rejects_fails_the_checks(change: dict) -> None:
    config = {**yaml.safe_load((ROOT / "cluster.yaml").read_text()), **change}
    with pytest.raises((jsonschema.ValidationError, click.ClickException, ValueError)):
        _launcher_checks(config)


def test_node_roles_and_flags_survive_the_shell() -> None:
    host = socket.gethostname()
    node = [sys.executable, "-m", "edge_tune.node"]
    # spliced unquoted into `ray start ... $(python -m edge_tune.node ...)` as cluster.yaml does
    script = f"printf '%s\\n' $({' '.join(node)} --device CPU --edge-hosts {host})"
    words = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True,
                           cwd=ROOT).stdout.split()
    assert words[0] == "--num-cpus=0"
    assert json.loads(words[1].removeprefix("--resources=")) == {"ncs": 1}
    other = subprocess.run([*node, "--device", "CPU", "--edge-hosts", "10.255.255.254"],
                           capture_output=True, text=True, check=True, cwd=ROOT)
    assert other.stdout.strip() == ""
    # CPU is everywhere: without --edge-hosts it never makes a node the edge node
    check = subprocess.run([*node, "--device", "CPU", "--check"], cwd=ROOT, check=False)
    assert check.returncode == 1


def test_edge_side_runs_without_torch(tmp_path: Path) -> None:
    import torch

    from edge_tune.catalog.models import create_model
    from edge_tune.compression.export import export_onnx

    model = export_onnx(create_model("simple_cnn", 10), torch.zeros(1, 3, 16, 16),
                        tmp_path / "m.onnx")
    script = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {{"torch", "torch_pruning", "nncf", "sklearn", "onnxscript"}}:
            raise ImportError("edge node: no " + name)
sys.meta_path.insert(0, Block())
import edge_tune.node
from edge_tune.edge import actor, bench, roles
from edge_tune.edge.bench import BenchSettings
a = actor.BenchActor(actor.model_files({str(model)!r}),
                     BenchSettings(warmup=2, iterations=20, rounds=1, fps_seconds=0.05))
r = a.benchmark(actor.model_files({str(model)!r}))
m = r.models["model"]
assert m.latency_ms == r.baseline.latency_ms or abs(r.speedup() - 1) < 0.5  # the same model
assert m.layers and m.samples == 20
print("ok", sorted(m for m in sys.modules if m.split(".")[0] == "torch"))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=ROOT, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok []"
    requires = importlib.metadata.requires("edge_tune") or []
    base = [r for r in requires if "extra ==" not in r]
    assert base and not any(r.startswith(("torch", "nncf")) for r in base)  # the edge install
    assert any(r.startswith("torch") and 'extra == "tune"' in r for r in requires)


@pytest.mark.parametrize(("address", "message"), [
    ("127.0.0.1:{port}", "--address: cannot reach 127.0.0.1:{port} within 5 s"),
    ("headnode", "--address: expected auto, HOST:PORT or ray://HOST:PORT, got 'headnode'"),
])
def test_unreachable_or_malformed_address_fails_within_seconds(tmp_path: Path, address: str,
                                                               message: str) -> None:
    port = free_port()
    start = time.perf_counter()
    result = run_module("edge_tune.tune", "--address", address.format(port=port), "--output",
                        str(tmp_path / "out"), "--no-wandb", timeout=120)
    elapsed = time.perf_counter() - start
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message.format(port=port) in lines[0], result.stderr
    assert elapsed < 20  # before the baseline or Ray: the interpreter, imports and 5 s at most
    assert not (tmp_path / "out").exists()


_NO_SERVER = ("Initialization failure from server:\nTraceback (most recent call last):\n"
              "  File \"proxier.py\", line 783, in Datapath\n"
              "RuntimeError: Proxy failed to Connect to backend!\n")


@pytest.mark.parametrize("failures", [1, 3])
def test_a_client_server_that_fails_to_start_is_asked_again(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        failures: int) -> None:
    """A head too loaded to start Ray Client's per-client server in its 30 s (a fault a test
    cannot cause on demand, so ray.init is replaced): the join asks again, up to 3 times, and
    the last failure is one line with the server's reason, not the traceback's header."""
    from edge_tune.core.errors import UserError
    from edge_tune.run import cluster

    calls: list[str] = []
    shutdowns: list[int] = []

    def init(address: str, **kwargs: object) -> str:
        calls.append(address)
        if len(calls) <= failures:
            raise ConnectionAbortedError(_NO_SERVER)
        return "context"

    monkeypatch.setattr(cluster.ray, "init", init)
    monkeypatch.setattr(cluster.ray, "shutdown", lambda: shutdowns.append(1))
    address = "ray://127.0.0.1:10001"
    if failures < cluster.CLIENT_TRIES:
        assert cluster.join(address, {}) == "context"
        assert len(calls) == failures + 1 and len(shutdowns) == failures
        assert "Proxy failed to Connect to backend!); retrying (2/3)" in capsys.readouterr().err
    else:
        with pytest.raises(UserError) as raised:
            cluster.join(address, {})
        assert len(calls) == cluster.CLIENT_TRIES
        assert str(raised.value) == (
            f"--address: cannot join Ray cluster {address!r}: the head did not start a client "
            "server 3 times (RuntimeError: Proxy failed to Connect to backend!)")


def _scrape(ports: list[int], seen: set[str], stop: threading.Event) -> None:
    """Read every node's Prometheus export until ``stop``; collect edge_tune metric names."""
    while not stop.is_set():
        for port in ports:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                            timeout=2) as page:
                    text = page.read().decode()
            except OSError:
                continue
            seen.update(line.split("{")[0].split(" ")[0] for line in text.splitlines()
                        if "edge_tune_" in line and not line.startswith("#"))
        stop.wait(1.0)


@pytest.mark.slow
def test_multi_node_placement_spread_and_metrics(tmp_path: Path, small_config: dict) -> None:
    """Head + a GPU worker + two edge nodes on one machine; a short tune run joins them."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "_system_config": {"metrics_report_interval_ms": 1000}})
    try:
        gpu = cluster.add_node(num_cpus=2, num_gpus=1)
        edges = [cluster.add_node(num_cpus=0, resources={"ncs": 1}) for _ in range(2)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, namespace="edge_tune_cluster_test")
        ports = [int(n["MetricsExportPort"]) for n in ray.nodes() if n["Alive"]]
        config = {**small_config, "tune": {"search_space": "default", "max_concurrent": 2,
                                           "random_steps": 3, "trial_gpus": 1,
                                           "trial_cpus": 1, "early_stop": False},
                  "cache_dir": str(tmp_path / "cache")}  # the baseline trains in this run
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
        seen: set[str] = set()
        stop = threading.Event()
        scraper = threading.Thread(target=_scrape, args=(ports, seen, stop), daemon=True)
        scraper.start()
        out = tmp_path / "run"
        result = run_module("edge_tune.tune", "--address", cluster.address, "--config",
                            str(tmp_path / "c.yaml"), "--num-samples", "3", "--no-wandb",
                            "--output", str(out), timeout=900)
        time.sleep(3)  # one more export interval
        stop.set()
        scraper.join()
        assert result.returncode == 0, result.stderr[-4000:]
        summary = json.loads((out / "summary.json").read_text())
        rows = [json.loads(line)["metrics"] for line in (out / "trials.jsonl").open()]
        edge_ids = {e.node_id for e in edges}
        assert summary["trials_completed"] == 3
        # one actor per edge node; trials on the GPU worker, never on an edge node
        assert {a["node_id"] for a in summary["bench_actors"]} == edge_ids
        assert {r["trial_node_id"] for r in rows} == {gpu.node_id}
        # the baseline trained there too, as a Ray task holding the GPU, and came back into
        # the driver's cache saying where (no CUDA here: on that node's CPU)
        [meta_file] = (tmp_path / "cache").rglob("meta.json")
        meta = json.loads(meta_file.read_text())
        assert meta["node_id"] == gpu.node_id and meta["device"] == "cpu"
        assert "as a Ray task with one GPU" in result.stderr
        assert f"baseline: trained on cpu at {meta['node_ip']} (node {gpu.node_id[:8]})" \
            in result.stderr
        # trials spread over both devices; on each, benchmarks never overlapped
        assert {r["bench_node_id"] for r in rows} == edge_ids
        for node in edge_ids:
            spans = sorted((r["bench_start"], r["bench_end"]) for r in rows
                           if r["bench_node_id"] == node)
            for (_, end), (begin, _) in itertools.pairwise(spans):
                assert end <= begin
        assert "benchmark actors: 2 (CPU on" in result.stderr
        for name in ["edge_tune_bench_queue_length", "edge_tune_bench_duration_s",
                     "edge_tune_models_benchmarked", "edge_tune_best_objective"]:
            assert any(name in metric for metric in seen), (name, sorted(seen))
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_two_devices_on_one_node_each_get_an_actor_and_their_own_core(
        tmp_path: Path, small_config: dict) -> None:
    """``bench.devices: [CPU, CPU]`` on this machine: the local Ray's node advertises
    ``ncs: 2``, two actors measure, each pinned to its own core, and trials use both."""
    import os

    config = {**small_config, "bench": {**small_config["bench"], "devices": ["CPU", "CPU"]},
              "tune": {"search_space": "default", "max_concurrent": 2, "random_steps": 4,
                       "early_stop": False}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    result = run_module("edge_tune.tune", "--config", str(tmp_path / "c.yaml"),
                        "--num-samples", "4", "--no-wandb", "--output", str(out), timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    actors = summary["bench_actors"]
    assert [a["slot"] for a in actors] == [0, 1] and len({a["node_id"] for a in actors}) == 1
    if len(os.sched_getaffinity(0)) >= 2:  # each device measures on a core of its own
        assert all(len(a["cores"]) == 1 for a in actors)
        assert actors[0]["cores"] != actors[1]["cores"]
    assert "benchmark actors: 2 (CPU on" in result.stderr
    rows = [json.loads(line)["metrics"] for line in (out / "trials.jsonl").open()]
    assert {r["bench_actor"] for r in rows} == {"edge_tune_bench", "edge_tune_bench_1"}
    queue = summary["bench_queue"]
    assert len(queue) == 2 and sum(q["calls"] for q in queue.values()) == 4
    assert all(key.endswith(("/edge_tune_bench", "/edge_tune_bench_1")) for key in queue)
    node = actors[0]["node_id"][:8]  # the closing lines name each device's queue
    assert f"benchmark queue on {node}/edge_tune_bench_1: " in result.stdout


def _refused(tmp_path: Path, address: str, config: dict) -> tuple[str, float]:
    """``edge_tune.tune --address`` with ``config``: its one stderr line (exit 2, no output
    directory made) and the seconds it took."""
    name = f"r{len(list(tmp_path.glob('r*.yaml')))}"
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(config))
    start = time.perf_counter()
    result = run_module("edge_tune.tune", "--address", address, "--config",
                        str(tmp_path / f"{name}.yaml"), "--output", str(tmp_path / name),
                        "--no-wandb", timeout=120)
    elapsed = time.perf_counter() - start
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and not (tmp_path / name).exists(), result.stderr
    return lines[0], elapsed


def test_joining_a_cluster_checks_ncs_and_the_device_on_the_edge_node(tmp_path: Path) -> None:
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        result = run_module("edge_tune.tune", "--address", cluster.address, "--output",
                            str(tmp_path / "a"), "--no-wandb", timeout=120)
        assert result.returncode == 2, result.stderr[-2000:]
        assert "has no node with the 'ncs' resource" in result.stderr
        cluster.add_node(num_cpus=0, resources={"ncs": 1})
        cluster.wait_for_nodes()
        line, elapsed = _refused(tmp_path, cluster.address, {"bench": {"device": "MYRIAD"}})
        assert "bench.device: 'MYRIAD' is not available on ncs node" in line
        assert elapsed < 60
        # a trial request no node can hold: named, with the largest node, in seconds
        line, elapsed = _refused(tmp_path, cluster.address, {"tune": {"trial_gpus": 1}})
        assert line.endswith(
            "tune.trial_gpus: a trial asks for 1 CPUs, 1 GPUs; no node has that (the largest "
            "has 1 CPUs, 0 GPUs)"), line
        assert elapsed < 10
        line, elapsed = _refused(tmp_path, cluster.address, {"tune": {"trial_memory_gb": 60000}})
        assert "tune.trial_memory_gb: a trial asks for 1 CPUs, 0 GPUs, 60000.0 GB memory; no " \
            "node has that (the largest has 1 CPUs, 0 GPUs, " in line, line
        assert elapsed < 10
        line, _ = _refused(tmp_path, cluster.address, {"tune": {"trial_cpus": 3}})
        assert line.endswith("tune.trial_cpus: a trial asks for 3 CPUs, 0 GPUs; no node has "
                             "that (the largest has 1 CPUs, 0 GPUs)"), line
        # a node with two devices where bench.devices names one
        cluster.add_node(num_cpus=0, resources={"ncs": 2})
        cluster.wait_for_nodes()
        line, _ = _refused(tmp_path, cluster.address, {"bench": {"devices": ["CPU"]}})
        assert line.endswith("bench.devices: an ncs node advertises 2 devices ('ncs': 2) but 1 "
                             "are named (CPU); name one per device"), line
    finally:
        cluster.shutdown()


def _dashboard_actors(url: str, token: str, seen: dict[str, dict],
                      stop: threading.Event) -> None:
    """Read the dashboard's actor list (its HTTP API, with the cluster's token) until
    ``stop``; every actor seen, by id."""
    headers = {"Authorization": f"Bearer {token}"}
    while not stop.is_set():
        request = urllib.request.Request(f"{url}/api/v0/actors?limit=10000&detail=false",
                                         headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as page:
                for actor in json.load(page)["data"]["result"]["result"]:
                    seen[actor["actor_id"]] = actor
        except OSError:
            pass
        stop.wait(2.0)


@pytest.mark.slow
def test_three_one_cpu_nodes_through_ray_client_with_the_dashboard(tmp_path: Path) -> None:
    """The default config, 2 trials, on a head, a GPU stand-in and an edge node of 1 CPU each,
    with token auth on (as `cluster.yaml` sets it up), joined through a Ray Client address;
    meanwhile the dashboard's HTTP API (with the token) lists the benchmark actor on the ncs
    node and the trials."""
    import ray
    from ray.cluster_utils import Cluster

    # every node and the tuner use the session's token (tests/conftest.py: RAY_AUTH_MODE)
    token = (Path.home() / ".ray" / "auth_token").read_text().strip()
    client_port, dashboard_port = free_port(), free_port()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "ray_client_server_port": client_port, "include_dashboard": True,
        "dashboard_host": "127.0.0.1", "dashboard_port": dashboard_port,
        "dashboard_agent_listen_port": free_port()})
    stop = threading.Event()  # ends the dashboard reader, whatever happens
    try:
        cluster.add_node(num_cpus=1, num_gpus=1)  # no CUDA here: trials train on its CPU
        edge = cluster.add_node(num_cpus=1, resources={"ncs": 1})
        cluster.wait_for_nodes()
        seen: dict[str, dict] = {}
        reader = threading.Thread(target=_dashboard_actors, daemon=True, args=(
            f"http://127.0.0.1:{dashboard_port}", token, seen, stop))
        reader.start()
        out = tmp_path / "run"
        start = time.perf_counter()
        result = run_module("edge_tune.tune", "--address", f"ray://127.0.0.1:{client_port}",
                            "--num-samples", "2", "--no-wandb", "--output", str(out),
                            timeout=1200)
        elapsed = time.perf_counter() - start
        stop.set()
        reader.join()
        assert result.returncode == 0, result.stderr[-4000:]
        summary = json.loads((out / "summary.json").read_text())
        rows = [json.loads(line) for line in (out / "trials.jsonl").open()]
        assert summary["trials_completed"] + summary["trials_stopped"] == 2, summary
        assert summary["trials_errored"] == 0 and len(rows) == 2
        assert {a["node_id"] for a in summary["bench_actors"]} == {edge.node_id}
        # trial_cpus 0 on 1-CPU nodes: each trial asked for 1 CPU (the driver has 2)
        assert yaml.safe_load((out / "config.yaml").read_text())["tune"]["trial_cpus"] == 1
        assert "trial 2/2" in result.stderr, result.stderr[-3000:]
        bench = [a for a in seen.values() if (a.get("name") or "").startswith("edge_tune_bench")]
        assert bench and {a["node_id"] for a in bench} == {edge.node_id}, seen
        # Ray names the trainable's class ImplicitFunc, or by its qualified name
        trials = [a for a in seen.values() if a["class_name"].endswith("ImplicitFunc")]
        assert trials, sorted({a["class_name"] for a in seen.values()})
        with pytest.raises(urllib.error.HTTPError) as refused:  # without the token: no entry
            urllib.request.urlopen(f"http://127.0.0.1:{dashboard_port}/api/v0/actors",
                                   timeout=10)
        assert refused.value.code == 401
        print(f"ray:// run of 2 trials: {elapsed:.0f} s")
    finally:
        stop.set()
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.slow
def test_a_run_submitted_as_a_ray_job_joins_the_jobs_cluster(tmp_path: Path,
                                                              small_config: dict) -> None:
    """`ray job submit -- python -m edge_tune.tune ...` through the Jobs API of a cluster with
    the dashboard: the run joins that cluster (RAY_ADDRESS), not a Ray of its own; its status
    and logs read back through the same API."""
    from ray.cluster_utils import Cluster
    from ray.job_submission import JobStatus, JobSubmissionClient

    dashboard_port = free_port()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "resources": {"ncs": 1}, "include_dashboard": True,
        "dashboard_host": "127.0.0.1", "dashboard_port": dashboard_port,
        "dashboard_agent_listen_port": free_port()})
    try:
        cluster.wait_for_nodes()
        head_id = cluster.head_node.node_id
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(
            {**small_config, "tune": {"search_space": "default", "early_stop": False}}))
        out = tmp_path / "run"
        client = JobSubmissionClient(f"http://127.0.0.1:{dashboard_port}")
        job = client.submit_job(entrypoint=(
            f"{sys.executable} -m edge_tune.tune --config {tmp_path / 'c.yaml'} "
            f"--num-samples 2 --no-wandb --output {out}"), runtime_env={"env_vars": {
                "PYTHONPATH": str(ROOT)}})
        deadline = time.monotonic() + 900
        statuses = []
        while time.monotonic() < deadline:
            status = client.get_job_status(job)
            statuses.append(status)
            if status in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
                break
            time.sleep(2)
        logs = client.get_job_logs(job)
        assert statuses[-1] == JobStatus.SUCCEEDED, logs[-4000:]
        assert JobStatus.RUNNING in statuses  # the Jobs view showed it running
        assert "trial 2/2" in logs and f"run directory: {out}" in logs  # its console, read back
        summary = json.loads((out / "summary.json").read_text())
        assert summary["trials_completed"] + summary["trials_stopped"] == 2
        # it joined the job's cluster: the benchmark actor sits on that cluster's head node
        assert summary["bench_actor"]["node_id"] == head_id
        assert [j.submission_id for j in client.list_jobs()] == [job]
    finally:
        cluster.shutdown()
