"""A benchmark call watched for a device that hangs.

Edge devices are the flaky part (a USB stick that stops answering mid-inference): a device call
that never returns blocks the one actor of that device, and every trial behind it would wait
forever. :func:`call_device` submits the call to the least loaded actor and watches it: the time
a call has held the device (asked of the actor, which answers while it measures) may not pass
the call limit; a call still queued behind others has no limit. Past the limit, or when the
actor's process answers nothing for that long (frozen), the actor is ended (``ray.kill``, and
by pid where Ray leaves the process; Ray restarts it, and it reads the baseline again on its
first call) and Ray retries the call once on
the fresh process; a second hang raises :class:`DeviceHang`, which fails that trial only.

The limit (:func:`call_limit`) is ``bench.call_limit_s``, or :data:`CALL_FACTOR` times one whole
call of the baseline (measured by the tuner before the first trial), at least
:data:`CALL_FLOOR_S` (compiling a model on a slow device).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import (
    ActorUnavailableError,
    ActorUnschedulableError,
    GetTimeoutError,
    RayActorError,
)

from edge_tune.core.console import log_stderr
from edge_tune.edge import bench
from edge_tune.edge.actor import NAMESPACE, BenchCall, ModelFiles
from edge_tune.edge.process import end_left, published
from edge_tune.run.cluster import pick_actor

CALL_FLOOR_S = 30.0  # s: a candidate compiled on a slow device, whatever the baseline's call
CALL_FACTOR = 10.0  # x the baseline's call: a call measures 1-2 models beside it, noisy
# sessions are repeated (bench.max_sessions), and the node may be busy with trials
POLL_S = 1.0  # s between looks at a call in flight
STATUS_S = 5.0  # s the actor has to answer "how long has this call held the device?"
RESUBMITS = 3  # a call lost with a process it did not hang (another's hang, a crash): again
# s a restarted actor may stay silent (its process starting, OpenVINO loading, its baseline
# read again) before silence counts against the limit: on a busy 2-core machine a restart
# took over 5 s, which a 4 s limit counted as a second hang
RESTART_S = 20.0


class DeviceHang(RuntimeError):
    """A device call held the device past the limit twice (the actor restarted between)."""


@dataclass(frozen=True)
class Watched:
    """A call's answer and what it took: hangs (actor restarts its own hang caused)."""

    call: BenchCall
    hangs: int
    actor: str = ""  # the name of the actor that answered


def call_limit(settings: bench.BenchSettings, baseline_call_s: float) -> float:
    """The limit (s) a benchmark call may hold the device: ``settings.call_limit_s`` when set,
    else :data:`CALL_FACTOR` x ``baseline_call_s`` (one whole call of the baseline), at least
    :data:`CALL_FLOOR_S`."""
    return settings.call_limit_s or max(CALL_FLOOR_S, CALL_FACTOR * baseline_call_s)


def call_device(names: tuple[str, ...], where: tuple[str, ...], models: dict[str, ModelFiles],
                pinned: list[Any], limit_s: float, per_layer: bool = True,
                settings: bench.BenchSettings | None = None, device: str = "CPU",
                steady: tuple[str, ...] = ()) -> Watched:
    """``models`` measured beside the baseline at the least loaded of the actors ``names``
    (on the nodes ``where``, for messages), watched (see the module docstring); ``steady``:
    the models whose ratios decide whether a session is repeated (none given: all)."""
    lost = hangs = 0
    unreachable_since: float | None = None
    while True:
        picked = pick_actor(names)
        if picked is None:  # every device gone: wait for one (the driver's DeviceWatch)
            time.sleep(POLL_S)
            continue
        index, actor = picked
        place = where[index] if index < len(where) else names[index]
        token = uuid.uuid4().hex
        ref = actor.benchmark_set.remote(models, per_layer, pinned, settings, token, steady)
        try:
            if limit_s <= 0:  # no limit (a study, a test): Ray's own retry only
                return Watched(ray.get(ref), 0, names[index])
            while not _watch(actor, ref, token, limit_s, RESTART_S if hangs else 0.0):
                hangs += 1
                _restart(actor)  # Ray restarts it and retries the call once
                if hangs == 2:
                    raise _hang(device, place, limit_s)
            return Watched(ray.get(ref), hangs, names[index])
        except (RayActorError, ActorUnschedulableError) as err:
            # its process died (another call's hang, a crash, ours: retried), or its node
            # left (the call moves to another device, or waits for one)
            if not actor_alive(names[index]):
                continue
            if limit_s > 0 and isinstance(err, ActorUnavailableError):
                # alive but taking no connection (frozen: the call never reached it):
                # silence like a hang's, counted across resubmissions
                unreachable_since = unreachable_since or time.monotonic()
                if time.monotonic() - unreachable_since > limit_s + (RESTART_S if hangs
                                                                      else 0.0):
                    hangs, unreachable_since = hangs + 1, None
                    _restart(actor)  # Ray restarts it; resubmitted below
                    if hangs == 2:
                        raise _hang(device, place, limit_s) from None
                time.sleep(POLL_S)
                continue
            lost += 1
            if lost > RESUBMITS + hangs:
                raise
            time.sleep(POLL_S)


def actor_alive(name: str) -> bool:
    """Whether the actor ``name`` exists and is not dead (a dead actor's name is free)."""
    try:
        ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return False
    return True


def _restart(actor: Any) -> None:
    """End the hung actor's process (Ray restarts the actor): ``ray.kill``, then by pid on
    its node where Ray left it (a process frozen as it started: see
    :mod:`edge_tune.edge.process`). The record is read first: the restart overwrites it."""
    left = published(actor)
    ray.kill(actor, no_restart=False)
    if left is not None and end_left(left):
        log_stderr(f"the benchmark actor's process {left.pid} froze as it started "
                   "and Ray left it; ended by pid on its node")


def _hang(device: str, where: str, limit_s: float) -> DeviceHang:
    return DeviceHang(f"device {device} on {where} did not answer within {limit_s:.0f} s, "
                      "twice (its actor was restarted after each); bench.call_limit_s sets "
                      "the limit")


def _watch(actor: Any, ref: Any, token: str, limit_s: float, grace_s: float = 0.0) -> bool:
    """Wait for ``ref``: True when it is ready (its answer, or its error, is there), False when
    it held the device past ``limit_s``, or its actor answered nothing for that long (plus
    ``grace_s`` until it first answers: a restarted actor's start)."""
    silent_since: float | None = None
    while True:
        ready, _ = ray.wait([ref], timeout=POLL_S)
        if ready:
            return True
        try:
            held = ray.get(actor.progress.remote(token), timeout=STATUS_S)
            silent_since = None
            grace_s = 0.0  # it answered: started
        except (GetTimeoutError, ActorUnavailableError):
            # a frozen process (no answer, or no connection taken): count from the first
            # unanswered question
            silent_since = silent_since or time.monotonic() - STATUS_S
            if time.monotonic() - silent_since > limit_s + grace_s:
                return False
            continue
        except (RayActorError, ActorUnschedulableError):  # restarting, or its node left:
            continue  # the call is retried or fails; ray.wait tells
        if held is not None and held > limit_s:
            return False
