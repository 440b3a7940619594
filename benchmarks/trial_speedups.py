"""Speed-up of each compression on the embedded default (ResNet-20 on digits, OpenVINO CPU).

Runs ``python -m edge_tune.trial`` once per parameter set (each measures its own baseline in
the same benchmark session) and prints a table: top-1 and its drop, MACs, median/p90 latency
(ms, batch 1, 1 thread, f32 pinned) and speed-up.

    python -m benchmarks.trial_speedups [--output DIR] [--config FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CASES = {
    "80% fine-grained zeros": {"fine_sparsity": 0.8},
    "50% filters removed": {"filter_ratio": 0.5},
    "int8": {"int8": 1},
    "50% filters + int8": {"filter_ratio": 0.5, "int8": 1},
}


def run(params: dict, output: Path, config: str | None) -> dict:
    cmd = [sys.executable, "-m", "edge_tune.trial", "--params", json.dumps(params),
           "--output", str(output)]
    if config:
        cmd += ["--config", config]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=None, help="directory for the runs (default: temp)")
    parser.add_argument("--config", default=None, help="edge_tune config (default: embedded)")
    args = parser.parse_args()
    root = Path(args.output or tempfile.mkdtemp(prefix="edge_tune_speedups-"))
    header = ("| compression | top-1 % | drop (pts) | MACs | baseline median ms | median ms "
              "| p90 ms | speed-up | reached ONNX+OV |")
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for i, (name, params) in enumerate(CASES.items()):
        r = run(params, root / f"case{i}", args.config)
        b = r["baseline"]
        print(f"| {name} `{json.dumps(params)}` | {r['top1']:.2f} | {b['top1'] - r['top1']:.2f} "
              f"| {r['macs'] / 1e6:.1f}M | {b['latency_ms']:.3f} | {r['latency_ms']:.3f} "
              f"| {r['latency_p90_ms']:.3f} | {r['speedup']:.2f}x "
              f"| {'yes' if r['compression']['reached'] else 'NO'} |", flush=True)
    print(f"\nruns in {root}")


if __name__ == "__main__":
    main()
