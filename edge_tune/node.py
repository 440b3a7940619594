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

from edge_tune.core.errors import ArgumentParser, run_cli
from edge_tune.edge.roles import is_edge, ray_start_flags


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
