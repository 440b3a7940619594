"""A benchmark actor's process, frozen and left by Ray (tests/run/test_faults.py shows how a
restart can leave one), is ended by pid on its node; the actor then restarts and answers.
A pid that now names another process, or a process already gone, is left alone."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time

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


def _until_free(name: str, wait_s: float = 30.0) -> None:
    """Until Ray has freed the name of a killed actor."""
    end = time.monotonic() + wait_s
    while time.monotonic() < end:
        try:
            ray.get_actor(name)
        except ValueError:
            return
        time.sleep(0.1)
    raise AssertionError(f"actor name {name} still taken after {wait_s} s")


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
        left = published(actor)
        assert left is not None and left.pid == frozen
        # a name given to a fresh actor (a device watch's replacement) is not its
        # predecessor's record: a stale handle never leads to the new process
        first = ray.remote(Device).options(name="dev1", num_cpus=0).remote()
        first_pid = ray.get(first.pid.remote(), timeout=60)
        ray.kill(first, no_restart=True)
        _until_free("dev1")
        second = ray.remote(Device).options(name="dev1", num_cpus=0).remote()
        second_pid = ray.get(second.pid.remote(), timeout=60)
        assert published(first).pid == first_pid and published(second).pid == second_pid
        assert first_pid != second_pid
        os.kill(frozen, signal.SIGSTOP)
        # a pid the system gave to another process since: never ended
        other = dataclasses.replace(  # the record's process started 5 s before this one
            left, pid=bystander.pid,
            created=psutil.Process(bystander.pid).create_time() - 5.0)
        assert not end_left(other, grace_s=0.2) and bystander.poll() is None
        assert end_left(left, grace_s=0.5)
        assert not end_left(left, grace_s=0.5)  # gone: nothing ended twice
        again = ray.get(actor.pid.remote(), timeout=60)  # restarted on a fresh process
        assert again != frozen and published(actor).pid == again
    finally:
        bystander.kill()
        ray.shutdown()
        if frozen and psutil.pid_exists(frozen):
            os.kill(frozen, signal.SIGKILL)
