"""The README's cluster commands for real: ``ray up cluster.yaml`` over SSH, ``ray exec`` the
tuner with ``--address auto``, ``ray down``; on this machine, with a head on 127.0.0.2 and
the edge node on 127.0.0.3 (tests/loopback.py)."""

from __future__ import annotations

import getpass
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, free_port
from tests.loopback import ADDRESSES, LoopbackHost, control_dir, require_tools

RAY_PROCESSES = ("raylet", "gcs_server", "ray::", "dashboard", "monitor.py", "log_monitor",
                 "ray.util.client", "runtime_env", "default_worker")


def loopback_config(host: LoopbackHost, name: str) -> dict[str, Any]:
    """cluster.yaml with only what loopback changes: the addresses and EDGE lines (the device
    is this CPU, the edge host 127.0.0.3), the SSH user and key, ports that two nodes on one
    host would share moved, each node's address given (Ray would pick 127.0.0.1 for both),
    and no ``ray stop`` on the worker (on one host it would stop the head)."""
    text = (ROOT / "cluster.yaml").read_text()
    head, edge = ADDRESSES
    for original in ("--device NPU", "192.168.1.20", "--port=6379", "$RAY_HEAD_IP:6379"):
        assert original in text, original  # cluster.yaml still reads as this test expects
    config = yaml.safe_load(text.replace("--device NPU", "--device CPU")
                            .replace("192.168.1.20", edge))
    gcs = free_port()
    config["cluster_name"] = name
    config["provider"].update(head_ip=head, worker_ips=[edge])
    config["auth"] = {"ssh_user": host.user, "ssh_private_key": str(host.key)}
    config["head_start_ray_commands"] = [c.replace("--port=6379", (
        f"--port={gcs} --node-ip-address={head} --dashboard-port={free_port()} "
        f"--dashboard-agent-listen-port={free_port()} --ray-client-server-port={free_port()}"))
        for c in config["head_start_ray_commands"]]
    config["worker_start_ray_commands"] = [c.replace("$RAY_HEAD_IP:6379", (
        f"$RAY_HEAD_IP:{gcs} --node-ip-address={edge} "
        f"--dashboard-agent-listen-port={free_port()}"))
        for c in config["worker_start_ray_commands"] if c.strip() != "ray stop"]
    return config


def _ray(*args: str, timeout: float, log: Path) -> subprocess.CompletedProcess:
    """The ``ray`` command of this environment, from the repository root (cluster.yaml's
    file mount ``~/edge_tune: .``); its output appended to ``log``."""
    result = subprocess.run([str(Path(sys.executable).parent / "ray"), *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=timeout, check=False,
                            stdin=subprocess.DEVNULL)
    with log.open("a") as handle:
        handle.write(f"$ ray {' '.join(args)}\n{result.stdout}\n{result.stderr}\n")
    return result


def _ray_processes(host: LoopbackHost) -> list[str]:
    out = []
    for proc in host.processes():
        try:
            line = " ".join(proc.cmdline()) or proc.name()
        except Exception:  # noqa: BLE001 - it ended meanwhile
            continue
        if any(name in line for name in RAY_PROCESSES):
            out.append(line[:120])
    return out


@pytest.mark.slow
def test_ray_up_exec_down_over_ssh(tmp_path: Path) -> None:
    sshd = require_tools()["sshd"]
    name = f"edge_tune_loopback_{tmp_path.name[-12:]}".replace("-", "_")
    log = tmp_path / "ray.log"
    with LoopbackHost(sshd) as host:
        config = tmp_path / "cluster.yaml"
        config.write_text(yaml.safe_dump(loopback_config(host, name)))
        try:
            # the README's steps: the cluster's token, then up, exec, down
            token = _ray("get-auth-token", "--generate", timeout=60, log=log)
            assert token.returncode == 0, token.stderr[-2000:]
            up = _ray("up", "-y", "--no-config-cache", str(config), timeout=900, log=log)
            assert up.returncode == 0, log.read_text()[-6000:]
            # the head's autoscaler starts the worker over SSH (setup, then ray start): the
            # edge node is up when the cluster has its 'ncs' resource
            deadline = time.monotonic() + 400
            while "ncs" not in _ray("exec", str(config), "ray status", timeout=120,
                                    log=log).stdout:
                assert time.monotonic() < deadline, log.read_text()[-6000:]
                time.sleep(5)
            run = _ray("exec", str(config), "cd edge_tune && python -m edge_tune.tune "
                       "--address auto --num-samples 2", timeout=1200, log=log)
            assert run.returncode == 0, log.read_text()[-6000:]
            runs = sorted((host.home / "edge_tune" / "runs").glob("tune-*"))
            assert len(runs) == 1, runs
            summary = json.loads((runs[0] / "summary.json").read_text())
            rows = [json.loads(line) for line in (runs[0] / "trials.jsonl").open()]
            head, edge = ADDRESSES
            assert summary["trials_completed"] + summary["trials_stopped"] == 2
            assert summary["trials_errored"] == 0
            # a trial no faster than the reference (the baseline in int8, measured on the
            # edge node first) stops before fine-tuning: it may leave none to complete
            assert summary["trials_completed"] >= 1 or summary["reference"]["to_beat"]
            assert (runs[0] / "reference" / "model_int8.xml").is_file()
            # the benchmark actor on the edge node, every trial on the head
            assert [a["node_ip"] for a in summary["bench_actors"]] == [edge]
            assert {r["metrics"]["trial_node_ip"] for r in rows} == {head}
            assert {r["metrics"]["bench_node_id"] for r in rows} == \
                {summary["bench_actors"][0]["node_id"]}
            assert "benchmark actors: 1 (CPU on" in run.stderr + run.stdout
        finally:
            try:
                down_code = _ray("down", "-y", str(config), timeout=300, log=log).returncode
            except subprocess.TimeoutExpired:
                down_code = -1  # LoopbackHost ends what is left, by the user's uid
            deadline = time.monotonic() + 60
            while _ray_processes(host) and time.monotonic() < deadline:
                time.sleep(1)
            left = _ray_processes(host)
            shutil.rmtree(control_dir(getpass.getuser(), name), ignore_errors=True)
        assert down_code == 0, log.read_text()[-4000:]
        assert not left, left  # ray down ended every Ray process of the cluster
