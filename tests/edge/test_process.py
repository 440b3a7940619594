"""A benchmark actor's process, frozen and left by Ray (tests/run/test_faults.py shows how a
restart can leave one), is ended by pid on its node; the actor then restarts and answers.
A pid that now names another process, or a process already gone, is left alone."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys

import psutil
import pytest
import ray

from edge_tune.edge.process import end_left, publish, published

NAMESPACE = "edge_tune_test_process"


class Device:
    """Publishes its process as it starts, as BenchActor does."""

    def __init__(self) -> None:
        publish()

    def pid(self) -> int:
        return os.getpid()


@pytest.mark.slow  # ~15 s
def test_a_frozen_actor_process_is_ended_by_pid_and_the_actor_comes_back() -> None:
    ray.init(address="local", num_cpus=1, resources={"dev": 1}, include_dashboard=False,
             namespace=NAMESPACE, log_to_driver=False)
    frozen = 0
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        actor = ray.remote(Device).options(name="dev0", resources={"dev": 1}, num_cpus=0,
                                           max_restarts=1, max_task_retries=-1).remote()
        frozen = ray.get(actor.pid.remote(), timeout=60)
        left = published("dev0", NAMESPACE)
        assert left is not None and left.pid == frozen
        assert published("dev1", NAMESPACE) is None
        os.kill(frozen, signal.SIGSTOP)
        # a pid the system gave to another process since: never ended
        other = dataclasses.replace(left, pid=bystander.pid)
        assert not end_left(other, grace_s=0.2) and bystander.poll() is None
        assert end_left(left, grace_s=0.5)
        assert not end_left(left, grace_s=0.5)  # gone: nothing ended twice
        again = ray.get(actor.pid.remote(), timeout=60)  # restarted on a fresh process
        assert again != frozen and published("dev0", NAMESPACE).pid == again
    finally:
        bystander.kill()
        ray.shutdown()
        if frozen and psutil.pid_exists(frozen):
            os.kill(frozen, signal.SIGKILL)
