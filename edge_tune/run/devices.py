"""The run's edge devices kept served while nodes come and go: one benchmark actor per device
name, on a device of an alive ``ncs`` node (a node's ``ncs`` count is its devices).

Actors are pinned to their node with a hard affinity, so when the node leaves they die rather
than wait, and a node that rejoins has a new id. :class:`DeviceWatch` (a thread of the driver)
looks every :data:`POLL_S` seconds: an actor whose node left (or that died for good) is said
on the console and ended, which frees its name; trials that need it wait for it
(:func:`edge_tune.run.device_call.call_device`), or use the other devices when there are
some. An ``ncs`` node that joins takes over a missing name: a fresh actor there, under the
same name, reads the baseline on its first call and compiles its models afresh. When no
device has been there for ``bench.device_wait_s``, the watch stops the run as Ctrl-C does
(trials in flight are unfinished, so ``--resume`` runs them again) and says why.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from typing import Any

import ray

from edge_tune.core.console import log_stderr
from edge_tune.edge import bench
from edge_tune.edge.actor import NAMESPACE
from edge_tune.run.cluster import Slot, actor_place, ncs_slots, new_actor, slot_settings
from edge_tune.run.device_call import actor_alive

POLL_S = 2.0  # s between looks at the cluster's nodes


class DeviceWatch(threading.Thread):
    """Keeps an actor under every name of ``names`` on an alive ``ncs`` node (see the module
    docstring). ``lost`` holds the reason when it stopped the run."""

    def __init__(self, names: tuple[str, ...], slots: list[Slot], where: list[str],
                 settings: bench.BenchSettings, wait_s: float, reserve: int = 0) -> None:
        super().__init__(name="edge_tune-device-watch", daemon=True)
        self.names, self.settings, self.wait_s = names, settings, wait_s
        self.reserve = reserve  # cores a new actor keeps to itself (start_actors)
        self.slot = dict(zip(names, slots, strict=True))  # name -> (node id, device index)
        self.where = dict(zip(names, where, strict=True))  # name -> "host ip" for messages
        self.gone_since: dict[str, float] = {}  # name -> monotonic s it went missing
        self.handles: dict[str, Any] = {}  # actors this watch started: held, or they end
        self.lost: str | None = None
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                self.check()
            except Exception as err:  # noqa: BLE001  a watch that dies would hide a lost device
                log_stderr(f"device watch: {type(err).__name__}: {err}")

    def check(self) -> None:
        """One look: say and end what left, start what came, stop the run past the wait."""
        slots = ncs_slots()
        alive = {node for node, _ in slots}
        for name in self.names:
            node = self.slot[name][0]
            if name in self.gone_since or (node in alive and actor_alive(name)):
                continue
            self.gone_since[name] = time.monotonic()
            why = "left the cluster" if node not in alive else "stopped answering for good"
            self._end(name)
            others = len(self.names) - len(self.gone_since)
            device = slot_settings(self.settings, self.slot[name][1]).device
            log_stderr(f"device {device} on {self.where[name]} {why}; "
                       + (f"the other {others} device(s) take its calls" if others else
                          f"trials wait for an ncs node with it (up to "
                          f"{self.wait_s:.0f} s; bench.device_wait_s)"))
        taken = {self.slot[n] for n in self.names if n not in self.gone_since}
        for slot in [s for s in slots if s not in taken]:
            if not self.gone_since:
                break
            name = min(self.gone_since, key=self.gone_since.__getitem__)
            self._start(name, slot, time.monotonic() - self.gone_since.pop(name))
        if len(self.gone_since) == len(self.names) and self.lost is None:
            waited = time.monotonic() - min(self.gone_since.values())
            if waited > self.wait_s:
                self.lost = (f"no ncs node with device {self.settings.device} came back "
                             f"within {self.wait_s:.0f} s (bench.device_wait_s)")
                log_stderr(f"{self.lost}: stopping the run; trials in flight are recorded as "
                           "interrupted and run again with --resume once the device is back")
                os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C: Tune saves its state

    def _end(self, name: str) -> None:
        with contextlib.suppress(ValueError):  # already dead: its name is free
            ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
        self.handles.pop(name, None)

    def _start(self, name: str, slot: Slot, after_s: float) -> None:
        self.handles[name] = new_actor(name, slot, self.settings, self.reserve)
        info = ray.get(self.handles[name].info.remote())
        self.slot[name] = slot
        self.where[name] = actor_place(info)
        log_stderr(f"device {info['device']} back after {after_s:.0f} s: a benchmark "
                   f"actor on {self.where[name]} (node {slot[0][:8]}) takes its calls")
