"""Scaling: trials per hour against the number of trial workers on a local multi-node cluster.

For each N, a ``ray.cluster_utils.Cluster`` on this machine gets a head, N worker nodes of one
CPU each (trials ask for 1 CPU, so at most N run at once) and one edge node (0 CPUs, ``ncs``);
``python -m edge_tune.tune --address`` runs ``--trials`` trials with ``max_concurrent`` N.
Prints trials/hour (from the first trial's start to the last trial's end) and how busy the
single benchmark actor was. On a machine with C cores the workers share them: beyond N = C the
figure shows CPU contention, not the tuner (see the on-paper model in the overhead section).

    python -m benchmarks.scaling --quick     # small CNN, N = 1, 2
    python -m benchmarks.scaling --on-paper [--worker-s 37.7 4.7 18.6] [--actor-s 2.34]

``--on-paper`` measures nothing: trials/hour = 3600 x min(N / W, D / A) for N trial workers
that each spend W s on a trial away from the device and D edge devices that each spend A s
measuring it, for the measured W of CPU and GPU trials; one device saturates at N = W / A
workers, D devices at D x W / A.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from benchmarks.common import write_section

QUICK = {"model": "simple_cnn", "data": {"image_size": 16}, "baseline": {"epochs": 4, "lr": 0.05},
         "finetune": {"epochs": 2},
         "bench": {"warmup": 10, "iterations": 100, "rounds": 2, "fps_seconds": 0.0},
         "quantize": {"calibration_images": 64}}


def run(workers: int, trials: int, quick: bool, folder: Path) -> dict[str, float]:
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        for _ in range(workers):
            cluster.add_node(num_cpus=1)
        cluster.add_node(num_cpus=0, resources={"ncs": 1})
        cluster.wait_for_nodes()
        config = {**(QUICK if quick else {}),
                  "tune": {"max_concurrent": workers, "trial_cpus": 1, "random_steps": trials}}
        path = folder / f"c{workers}.yaml"
        path.write_text(yaml.safe_dump(config))
        out = folder / f"run{workers}"
        subprocess.run([sys.executable, "-m", "edge_tune.tune", "--address", cluster.address,
                        "--config", str(path), "--num-samples", str(trials), "--no-wandb",
                        "--output", str(out)], check=True, capture_output=True, text=True)
    finally:
        cluster.shutdown()
    rows = [json.loads(line)["metrics"] for line in (out / "trials.jsonl").open()]
    first = min(r["timestamp"] - r["trial_s"] for r in rows)
    last = max(r["timestamp"] for r in rows)
    busy = sum(r["bench_end"] - r["bench_start"] for r in rows)
    return {"trials_per_hour": 3600 * len(rows) / (last - first),
            "actor_busy": busy / (last - first),
            "wait_s": sum(r["bench_wait_s"] for r in rows) / len(rows)}


# s per trial away from the device: ResNet-20 on Fashion-MNIST, CPU trials (2 cores here,
# benchmarks/overhead.py); resnet18 on digits, GPU trials on the H200 machine (fastest and
# slowest whole trial, 2026-12-04, waits included: an upper bound)
WORKER_S = {"CPU trial (ResNet-20, here)": 37.7, "GPU trial, fastest (H200)": 4.7,
            "GPU trial, slowest (H200)": 18.6}
ACTOR_S = 2.34  # s the actor spends per completed trial (benchmarks/overhead.py, here)


def on_paper(worker_s: dict[str, float], actor_s: float) -> str:
    """The saturation table (see the module docstring)."""
    counts = [1, 2, 4, 8, 16, 32]
    lines = [f"Each edge device spends {actor_s:g} s measuring one trial. Trials/hour for N "
             "trial workers, with one and with two devices (one actor each):", "",
             "| trial | W s | devices | saturates at N | " + " | ".join(
                 f"N={n}" for n in counts) + " |", "|---" * (4 + len(counts)) + "|"]
    for name, w in worker_s.items():
        for devices in (1, 2):
            rates = [3600 * min(n / w, devices / actor_s) for n in counts]
            lines.append(f"| {name} | {w:g} | {devices} | {devices * w / actor_s:.1f} | "
                         + " | ".join(f"{r:.0f}" for r in rates) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--on-paper", action="store_true")
    parser.add_argument("--worker-s", type=float, nargs="+",
                        help="W per trial (s); default: the measured ones")
    parser.add_argument("--actor-s", type=float, default=ACTOR_S)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--trials", type=int, default=6)
    args = parser.parse_args()
    if args.on_paper:
        worker = {f"W = {w:g} s": w for w in args.worker_s} if args.worker_s else WORKER_S
        body = on_paper(worker, args.actor_s)
        write_section("Scaling on paper", " ".join(["python -m benchmarks.scaling",
                                                    *sys.argv[1:]]), body)
        print(body)
        return
    folder = Path(tempfile.mkdtemp(prefix="edge_tune_scaling-"))
    lines = [f"{args.trials} trials per row ({'small CNN at 16x16' if args.quick else 'ResNet-20'}"
             " on digits), each worker node 1 CPU, one edge node with the only benchmark actor.",
             "", "| trial workers N | trials/hour | actor busy % | mean wait for the actor s |",
             "|---|---|---|---|"]
    print("\n".join(lines))
    for n in [int(x) for x in args.workers.split(",")]:
        r = run(n, args.trials, args.quick, folder)
        lines.append(f"| {n} | {r['trials_per_hour']:.0f} | {100 * r['actor_busy']:.0f} | "
                     f"{r['wait_s']:.2f} |")
        print(lines[-1], flush=True)
    write_section("Scaling" + (" (quick)" if args.quick else ""),
                  "python -m benchmarks.scaling" + (" --quick" if args.quick else ""),
                  "\n".join(lines))


if __name__ == "__main__":
    main()
