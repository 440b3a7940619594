"""Where a benchmark actor's process runs, so that a frozen one Ray cannot end is ended by pid.

A hung device call is ended with ``ray.kill``, and Ray restarts the actor. One case Ray cannot
end: a process that froze after its constructor ran but before Ray heard that it had (a device
that hangs as the actor starts). Ray then cancels the creation without ending the process, the
process keeps the node's ``ncs`` resource, the actor never starts again, and every later call
hangs (seen in 2 of 3 runs of the hang test in tests/run/test_faults.py). So each actor process
says where it runs as its first act (:func:`publish`, in Ray's key-value store under the
actor's id, which its restarts keep and a fresh actor under the same name does not share), and
after a hang's ``ray.kill`` the caller ends that process on its node if it is still there
(:func:`end_left`). A process that freezes before it publishes (while its worker starts or
imports OpenVINO) is not covered: the record read then is its dead predecessor's, whose start
time no longer matches any process.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import psutil
import ray
from ray.experimental import internal_kv
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

KV_NAMESPACE = "edge_tune"
END_TIMEOUT_S = 30.0  # s for the task that ends a process (a worker started on a busy node)
# s two readings of one process's start time may differ: psutil derives it from the boot time,
# which each reader reads from /proc/stat and an NTP step can move; a reused pid belongs to a
# process started long after (pids wrap around after 4 million)
SAME_START_S = 1.0


@dataclass(frozen=True)
class Process:
    """One actor process: its node, pid and start time (s since the epoch, so that a pid the
    system reused for another process is never ended)."""

    node_id: str
    pid: int
    created: float


def _key(actor_id: str) -> str:
    return f"bench_process/{actor_id}"


def publish() -> None:
    """Inside an actor: record this process under the actor's id (overwritten by its
    restart)."""
    if not ray.is_initialized():  # a plain object (a study's local benchmark)
        return
    context = ray.get_runtime_context()
    actor_id = context.get_actor_id()
    if actor_id is None:  # not an actor's process (a driver, a task)
        return
    me = psutil.Process()
    here = Process(context.get_node_id(), me.pid, me.create_time())
    internal_kv._internal_kv_put(_key(actor_id), json.dumps(asdict(here)),
                                 namespace=KV_NAMESPACE)


def published(actor: Any) -> Process | None:
    """The process the actor (a handle) last recorded (None: none has, or the record cannot be
    read: the caller goes on with what Ray does by itself)."""
    try:
        value = internal_kv._internal_kv_get(_key(actor._actor_id.hex()),
                                             namespace=KV_NAMESPACE)
        return None if value is None else Process(**json.loads(value))
    except Exception:  # noqa: BLE001 - a store that does not answer, an older record
        return None


def end_left(process: Process, grace_s: float = 2.0) -> bool:
    """End ``process`` on its node (SIGKILL) if it is still there ``grace_s`` after the call
    (``ray.kill`` ends it first when it can); True when it had to. False also when its node
    is gone or did not run the task within :data:`END_TIMEOUT_S`."""
    task = _KILL_IF_LEFT.options(
        num_cpus=0, max_retries=0,
        scheduling_strategy=NodeAffinitySchedulingStrategy(process.node_id, soft=False))
    try:
        return bool(ray.get(task.remote(process.pid, process.created, grace_s),
                            timeout=END_TIMEOUT_S))
    except ray.exceptions.RayError:  # GetTimeoutError among them
        return False


def _kill_if_left(pid: int, created: float, grace_s: float) -> bool:
    """On the process's node: SIGKILL ``pid`` if it is the process started at ``created`` and
    has not exited within ``grace_s``."""
    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - created) > SAME_START_S:
            return False  # the pid was reused
        try:
            process.wait(timeout=grace_s)
            return False
        except psutil.TimeoutExpired:
            if process.status() == psutil.STATUS_ZOMBIE:
                return False  # ended, its parent (the raylet) not yet told
            process.kill()
            return True
    except psutil.Error:  # gone meanwhile, or not ours to end
        return False


_KILL_IF_LEFT = ray.remote(_kill_if_left)
