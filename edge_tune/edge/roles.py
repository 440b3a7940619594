"""A node's role in an edge_tune Ray cluster: an edge node (the OpenVINO device is attached, or
the host is named in ``--edge-hosts``) gets ``--num-cpus=0 --resources='{"ncs": 1}'``, so the
benchmark actor (0 CPUs, 1 ``ncs``) lands there and no trial does (trials need CPUs): training
never disturbs a measurement and the node needs no torch. Any other node gets nothing extra
(Ray detects its CPUs and GPUs). Imports OpenVINO only."""

from __future__ import annotations

import contextlib
import json
import os
import socket

import openvino as ov

NCS = "ncs"  # the custom Ray resource of a node with the edge device


def local_names() -> set[str]:
    """This host's names and addresses, to match against ``--edge-hosts``: with the address
    an SSH session reached it on (a cluster launcher's; Debian resolves the host name to
    127.0.1.1, not to the address the cluster uses)."""
    names = {socket.gethostname(), socket.getfqdn()}
    ssh = os.environ.get("SSH_CONNECTION", "").split()  # client port server port
    if len(ssh) == 4:
        names.add(ssh[2])
    with contextlib.suppress(OSError):
        names.update(str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None))
    return {n for n in names if n}


def device_attached(device: str) -> bool:
    """Whether OpenVINO sees ``device`` here; CPU never marks a node as an edge node."""
    if device.upper() == "CPU":
        return False
    family = device.split(".")[0].split(":")[0]
    return any(d.split(".")[0] == family for d in ov.Core().available_devices)


def is_edge(device: str, edge_hosts: list[str]) -> bool:
    """An edge node: named in ``edge_hosts``, or the device is attached here."""
    if edge_hosts:
        return bool(local_names() & set(edge_hosts))
    return device_attached(device)


def ray_start_flags(edge: bool) -> str:
    """Extra ``ray start`` flags for an edge node (none for the others)."""
    # no spaces or quotes: the output is spliced into a shell command with $(...)
    return f"--num-cpus=0 --resources={json.dumps({NCS: 1}, separators=(',', ':'))}" if edge else ""


