"""Where a benchmark actor's process runs, so that a frozen one Ray cannot end is ended by pid.

A hung device call is ended with ``ray.kill``, and Ray restarts the actor. One case Ray cannot
end: a process that froze after its constructor ran but before Ray heard that it had (a device
that hangs as the actor starts). Ray then cancels the creation without ending the process, the
process keeps the node's ``ncs`` resource, the actor never starts again, and every later call
hangs (seen in 2 of 3 runs of the hang test in tests/run/test_faults.py). So each actor process
says where it runs as its first act (:func:`publish`, in Ray's key-value store under the
actor's name), and after a hang's ``ray.kill`` the caller ends that process on its node if it
is still there (:func:`end_left`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import psutil
import ray
from ray.experimental import internal_kv
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

KV_NAMESPACE = "edge_tune"
END_TIMEOUT_S = 30.0  # s for the task that ends a process (a worker started on a busy node)


@dataclass(frozen=True)
class Process:
    """One actor process: its node, pid and start time (s since the epoch, so that a pid the
    system reused for another process is never ended)."""

    node_id: str
    pid: int
    created: float


def _key(namespace: str, name: str) -> str:
    return f"bench_process/{namespace}/{name}"


def publish() -> None:
    """Inside an actor: record this process under the actor's name (overwritten by its
    restart)."""
    if not ray.is_initialized():  # a plain object (a study's local benchmark)
        return
    context = ray.get_runtime_context()
    name = context.get_actor_name()
    if not name:
        return
    me = psutil.Process()
    here = Process(context.get_node_id(), me.pid, me.create_time())
    internal_kv._internal_kv_put(_key(context.namespace, name), json.dumps(asdict(here)),
                                 namespace=KV_NAMESPACE)


def published(name: str, namespace: str) -> Process | None:
    """The process the actor ``name`` last recorded (None: none has)."""
    value = internal_kv._internal_kv_get(_key(namespace, name), namespace=KV_NAMESPACE)
    return None if value is None else Process(**json.loads(value))


def end_left(process: Process, grace_s: float = 2.0) -> bool:
    """End ``process`` on its node (SIGKILL) if it is still there ``grace_s`` after the call
    (``ray.kill`` ends it first when it can); True when it had to. False also when its node
    is gone or did not run the task within :data:`END_TIMEOUT_S`."""
    task = ray.remote(_end).options(
        num_cpus=0, max_retries=0,
        scheduling_strategy=NodeAffinitySchedulingStrategy(process.node_id, soft=False))
    try:
        return bool(ray.get(task.remote(process.pid, process.created, grace_s),
                            timeout=END_TIMEOUT_S))
    except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError):
        return False


def _end(pid: int, created: float, grace_s: float) -> bool:
    """On the process's node: SIGKILL ``pid`` if it is the process started at ``created`` and
    has not exited within ``grace_s``."""
    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - created) > 0.01:
            return False  # the pid was reused
        process.wait(timeout=grace_s)
        return False
    except psutil.NoSuchProcess:
        return False
    except psutil.TimeoutExpired:
        if process.status() == psutil.STATUS_ZOMBIE:
            return False  # ended, its parent (the raylet) not yet told
        process.kill()
        return True
