"""Ray plumbing shared by the tuner and the study: join or start Ray, check the cluster, place
the benchmark actors and pick one per trial.

A local run starts its own Ray (``address="local"``: never a cluster that happens to run on
this machine) and gives this node the ``ncs`` resource. A cluster run joins ``--address``,
which must answer within seconds and have at least one ``ncs`` node whose device exists. Trial
resources are resolved against the nodes that can run trials, not against the driver.
"""

from __future__ import annotations

import socket
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import ActorUnschedulableError, RayActorError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from edge_tune.config import Config
from edge_tune.core.errors import UserError, first_line, last_line
from edge_tune.edge import bench
from edge_tune.edge.actor import ACTOR_NAME, NAMESPACE, BenchActor, model_files
from edge_tune.edge.roles import NCS

ADDRESS_TIMEOUT_S = 5.0  # an unreachable --address fails this fast
# Ray Client: the head starts one server process per client and gives it 30 s
# (RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S); a loaded 2-core head can miss that once
CLIENT_TRIES = 3


def check_address(address: str) -> None:
    """A HOST:PORT (or ray://HOST:PORT) that answers within seconds; ``auto`` is Ray's."""
    if address == "auto":
        return
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--address: expected auto, HOST:PORT or ray://HOST:PORT, got "
                        f"{address!r}")
    try:
        with socket.create_connection((host, int(port)), timeout=ADDRESS_TIMEOUT_S):
            pass
    except OSError as err:
        raise UserError(f"--address: cannot reach {hostport} within {ADDRESS_TIMEOUT_S:g} s "
                        f"({err.strerror or type(err).__name__}); is the head node up?") from None


def connect(address: str | None, config: Config) -> tuple[Any, Config]:
    """Start a local Ray (this node gets ``ncs``) or join a cluster that has an ``ncs`` node.

    Returns Ray's context and the config with trial resources resolved against the cluster;
    every check failure shuts Ray down again and is a one-line UserError.
    """
    # through Ray Client the experiment loop (and its one line per trial) runs in an actor on
    # the head: its stderr reaches this console only by Ray's log forwarding
    client = address is not None and address.startswith("ray://")
    kwargs: dict[str, Any] = {"namespace": NAMESPACE, "log_to_driver": client,
                              "configure_logging": True, "logging_level": "ERROR"}
    if address is None:  # this node's edge devices: bench.devices, or the one bench.device
        devices = max(1, len(config.bench.devices))
        context = ray.init(address="local", resources={NCS: devices}, include_dashboard=True,
                           dashboard_host="127.0.0.1", **kwargs)
    else:
        check_address(address)
        context = join(address, kwargs)
    try:
        if not ncs_nodes():
            raise UserError(f"--address: the Ray cluster at {address!r} has no node with the "
                            f"'{NCS}' resource (start the edge node with "
                            f"--resources='{{\"{NCS}\": 1}}')")
        config = resolve_resources(config)
        check_device_slots(config.bench)
        if address is not None:
            for device in dict.fromkeys(config.bench.devices or (config.bench.device,)):
                check_edge_devices(device)
    except UserError:
        ray.shutdown()
        raise
    return context, config


def join(address: str, kwargs: dict[str, Any], tries: int = CLIENT_TRIES) -> Any:
    """``ray.init(address)``; through Ray Client, a server that fails to start for this client
    (ConnectionAbortedError: the head's per-client process) is asked again, ``tries`` in all."""
    for attempt in range(1, tries + 1):
        try:
            return ray.init(address=address, **kwargs)
        except ConnectionAbortedError as err:  # the server's traceback: its last line says why
            reason = last_line(err) or first_line(err)
            if attempt == tries:
                raise UserError(f"--address: cannot join Ray cluster {address!r}: the head did "
                                f"not start a client server {tries} times ({reason})") from None
            print(f"edge_tune: Ray Client at {address}: the head did not start a server for "
                  f"this client ({reason}); retrying ({attempt + 1}/{tries})", file=sys.stderr)
            ray.shutdown()
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise UserError(f"--address: cannot join Ray cluster {address!r}: "
                            f"{first_line(err)}") from None
    raise AssertionError("unreachable: the loop returns or raises")


def _alive() -> list[dict[str, Any]]:
    return [n for n in ray.nodes() if n.get("Alive")]


def ncs_nodes() -> list[str]:
    """Ids of the alive nodes that advertise the ``ncs`` resource, in Ray's order."""
    return [n["NodeID"] for n in _alive() if n.get("Resources", {}).get(NCS, 0) >= 1]


Slot = tuple[str, int]  # (node id, which of its edge devices: 0, 1, ...)


def ncs_slots() -> list[Slot]:
    """One entry per edge device: a node that advertises ``ncs: N`` has N, in Ray's order."""
    return [(n["NodeID"], slot) for n in _alive()
            for slot in range(int(n.get("Resources", {}).get(NCS, 0)))]


def slot_settings(settings: bench.BenchSettings, slot: int) -> bench.BenchSettings:
    """The settings of a node's ``slot``-th device: ``bench.devices[slot]``, or ``device``."""
    return replace(settings, device=settings.devices[slot]) if settings.devices else settings


def check_device_slots(settings: bench.BenchSettings) -> None:
    """With ``bench.devices``, no ncs node may advertise more devices than it names."""
    most = max((slot + 1 for _, slot in ncs_slots()), default=0)
    if settings.devices and most > len(settings.devices):
        raise UserError(f"bench.devices: an ncs node advertises {most} devices ('{NCS}': "
                        f"{most}) but {len(settings.devices)} are named "
                        f"({', '.join(settings.devices)}); name one per device")


GB = 1024 ** 3  # bytes: Ray's ``memory`` resource is in bytes


def trial_request(config: Config) -> dict[str, float]:
    """What one trial asks Ray for (CPU, GPU, memory in bytes), the zeros left out."""
    tune = config.tune
    request = {"CPU": tune.trial_cpus, "GPU": tune.trial_gpus,
               "memory": tune.trial_memory_gb * GB}
    return {k: v for k, v in request.items() if v > 0}


def describe(resources: dict[str, float]) -> str:
    """``2 CPUs, 1 GPUs, 4.0 GB memory`` (CPUs and GPUs always named, memory when known)."""
    text = f"{resources.get('CPU', 0.0):g} CPUs, {resources.get('GPU', 0.0):g} GPUs"
    if resources.get("memory"):
        text += f", {resources['memory'] / GB:.1f} GB memory"
    return text


def _holds(node: dict[str, float], request: dict[str, float]) -> bool:
    """Whether ``node``'s resources cover every amount in ``request``."""
    return all(node.get(k, 0.0) >= v for k, v in request.items())


def _closest(nodes: list[dict[str, float]], request: dict[str, float]) -> dict[str, float]:
    """The node that comes nearest to ``request``: most of its resources held in full, then
    most CPUs, then most GPUs (for a request no node holds: the one worth naming)."""
    def score(r: dict[str, float]) -> tuple[int, float, float]:
        return (sum(r.get(k, 0.0) >= v for k, v in request.items()), r.get("CPU", 0.0),
                r.get("GPU", 0.0))
    return max(nodes, key=score, default={})


def resolve_resources(config: Config) -> Config:
    """``tune.trial_cpus: 0`` becomes the cores of the largest node that can run a trial (has
    a CPU and the GPUs and memory asked for) / ``max_concurrent``; a request that no alive node
    can hold is a UserError naming it and the largest node, before any training."""
    nodes = [{k: float(v) for k, v in n.get("Resources", {}).items()} for n in _alive()]
    tune = config.tune
    request = trial_request(config)
    if not tune.trial_cpus:
        others = {k: v for k, v in request.items() if k != "CPU"}
        hosts = [r for r in nodes if r.get("CPU", 0.0) >= 1 and _holds(r, others)]
        most = max((r["CPU"] for r in hosts), default=1.0)
        request["CPU"] = float(max(1, int(most) // tune.max_concurrent))
    if not any(_holds(r, request) for r in nodes):
        # named: the node that comes nearest, and the first resource it lacks
        closest = _closest([r for r in nodes if r.get("CPU", 0.0) >= 1] or nodes, request)
        short = next((k for k, v in request.items() if closest.get(k, 0.0) < v), "CPU")
        key = {"CPU": "tune.trial_cpus", "GPU": "tune.trial_gpus",
               "memory": "tune.trial_memory_gb"}[short]
        largest = {k: v for k, v in closest.items() if k in request}
        raise UserError(f"{key}: a trial asks for {describe(request)}; no node has that (the "
                        f"largest has {describe(largest)})")
    return replace(config, tune=replace(tune, trial_cpus=request["CPU"]))


def _device_problem(device: str) -> str | None:
    try:
        bench.check_device(device)
    except UserError as err:
        return str(err)
    return None


def check_edge_devices(device: str) -> None:
    """Ask every ``ncs`` node whether it has ``device`` (a 0-CPU task pinned to each)."""
    probe = ray.remote(_device_problem)
    nodes = ncs_nodes()
    answers = ray.get([probe.options(
        num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
        .remote(device) for node in nodes])
    for node, problem in zip(nodes, answers, strict=True):
        if problem:
            raise UserError(problem.replace(" here;", f" on {NCS} node {node[:8]};"))


def cores_to_reserve(config: Config) -> int:
    """Cores each benchmark actor keeps to itself: its ``bench.threads`` when trials run
    concurrently and may run on an ``ncs`` node (one that has CPUs: a single machine, say),
    so that their work does not share the cores a measurement runs on, or when several
    devices on one node measure on its CPU (each on its own cores); else none."""
    slots = ncs_slots()
    on_cpu = any(d.split(".")[0] == "CPU"
                 for d in config.bench.devices or (config.bench.device,))
    if on_cpu and any(slot > 0 for _, slot in slots):
        return config.bench.threads
    if config.tune.max_concurrent <= 1:
        return 0
    ncs = {node for node, _ in slots}
    shared = any(n["NodeID"] in ncs and n.get("Resources", {}).get("CPU", 0) > 0
                 for n in _alive())
    return config.bench.threads if shared else 0


def actor_place(info: dict[str, Any]) -> str:
    """An actor's node as messages name it (``info``: its ``BenchActor.info``): host and IP."""
    return f"{info['host']} {info['node_ip']}"


def actor_name(index: int) -> str:
    """``edge_tune_bench`` for the first ``ncs`` node, ``edge_tune_bench_1``... after it."""
    return ACTOR_NAME if index == 0 else f"{ACTOR_NAME}_{index}"


def start_actors(baseline_model: Path, settings: bench.BenchSettings,
                 pinned: list[Any], reserve: int = 0) -> list[Any]:
    """One benchmark actor per edge device (a node's ``ncs`` count: its devices), pinned to
    its node, on its device (:func:`slot_settings`); one measurement at a time each.

    Threaded (``max_concurrency``) so its load and info answer during a measurement; the
    actor's own lock serialises the device. 0 CPUs: trials keep the node's cores, but for the
    ``reserve`` cores the actor pins itself to (trials on its node keep off them). A dead actor
    process restarts (3 times) and the call in flight is retried once.

    The baseline's files are not a constructor argument (a restartable actor whose arguments
    sit in the object store makes Ray log an error-level warning on every run): ``pinned``
    receives ``[ObjectRef of the files]``, which every benchmark call passes as
    ``baseline=pinned``; a fresh or restarted actor reads it on its first call. The caller
    holds ``pinned`` as long as the actors.
    """
    pinned.append(ray.put(model_files(baseline_model)))
    actors = [new_actor(actor_name(index), slot, settings, reserve)
              for index, slot in enumerate(ncs_slots())]
    ray.get([a.info.remote() for a in actors])  # fail here, not in the first trial
    return actors


def new_actor(name: str, where: Slot, settings: bench.BenchSettings, reserve: int = 0) -> Any:
    """A benchmark actor named ``name`` pinned to the node of ``where`` on its device there
    (see :func:`start_actors`), keeping ``reserve`` cores to itself; a name just freed by an
    actor that died may take a moment to be free again."""
    node, slot = where
    remote = ray.remote(BenchActor).options(
        name=name, namespace=NAMESPACE, resources={NCS: 1}, num_cpus=0,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
        max_concurrency=16, max_restarts=3, max_task_retries=1)
    for _ in range(20):
        try:
            return remote.remote(None, slot_settings(settings, slot), reserve, slot)
        except ValueError:  # "the name is already taken": the dead actor's, not yet freed
            time.sleep(0.5)
    return remote.remote(None, slot_settings(settings, slot), reserve, slot)


def pick_actor(names: tuple[str, ...]) -> tuple[int, Any] | None:
    """The least loaded alive benchmark actor (shortest queue, then fewest calls served) and
    its index in ``names``: trials spread over the ncs nodes, and each speed-up compares
    against the baseline measured on that same device. None when no actor is alive (every
    device gone: :class:`edge_tune.run.devices.DeviceWatch` brings them back). Actors that
    do not answer within :data:`LOAD_S` (a device that hangs) are passed over when another
    answers."""
    alive = []
    for index, name in enumerate(names):
        try:
            alive.append((index, ray.get_actor(name, namespace=NAMESPACE)))
        except ValueError:  # dead, or never there: its name is free
            continue
    if len(alive) <= 1:
        return alive[0] if alive else None
    refs = {actor.load.remote(): (index, actor) for index, actor in alive}
    ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=LOAD_S)
    loads = {}
    for ref in ready:
        try:
            loads[ref] = ray.get(ref)
        except (RayActorError, ActorUnschedulableError):
            continue
    if not loads:
        return alive[0]
    return refs[min(loads, key=loads.__getitem__)]


LOAD_S = 5.0  # s an actor has to say how loaded it is


def shutdown() -> None:
    """Leave (or stop, when this process started it) the Ray this process connected to."""
    ray.shutdown()
