"""What this machine brings to an edge_tune Ray cluster: ``python -m edge_tune.node``.

Prints the ``ray start`` flags for this node, for cluster launchers whose workers share one
start command (Ray's on-prem ``local`` provider):

- an edge node (the OpenVINO ``--device`` is attached here, or this host is named in
  ``--edge-hosts``) gets ``--num-cpus=0 --resources='{"ncs": 1}'``: the benchmark actor
  (0 CPUs, 1 ``ncs``) lands there and no trial does (trials need CPUs), so training never
  disturbs a measurement and the node needs no torch;
- any other node gets nothing extra (Ray detects its CPUs and GPUs).

``--check`` exits 0 on an edge node and 1 elsewhere, for setup commands. Imports OpenVINO only.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket

import openvino as ov

from edge_tune.errors import ArgumentParser, run_cli

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


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m edge_tune.node", description=(
        "Print the extra 'ray start' flags for this node: the edge node gets the 'ncs' "
        "resource and no CPUs for trials."))
    parser.add_argument("--device", default="NPU", help="the edge device's OpenVINO name "
                        "(NPU, GPU, MYRIAD on OpenVINO <= 2022.3); CPU needs --edge-hosts")
    parser.add_argument("--edge-hosts", default="", help="comma-separated host names or IPs "
                        "of the edge nodes (overrides device detection)")
    parser.add_argument("--check", action="store_true", help="exit 0 if this is an edge "
                        "node, 1 otherwise; print nothing")
    args = parser.parse_args(argv)
    edge = is_edge(args.device, [h.strip() for h in args.edge_hosts.split(",") if h.strip()])
    if args.check:
        return 0 if edge else 1
    print(ray_start_flags(edge))
    return 0


if __name__ == "__main__":
    run_cli(main)
