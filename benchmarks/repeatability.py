"""Repeatability of the actor's measurements, idle and while trials train on the same machine.

The same two models (ResNet-20 and its 50%-filter version) are benchmarked ``--repeats``
times, each time through the actor's class as a trial calls it (interleaved sessions, the
default bench settings: 1 pinned thread, f32, LATENCY, batch 1), first on an idle machine,
then with a training process running beside it (the default tune trial's load) at 2 and at
1 torch thread(s).
Prints per condition: median of the medians (ms), the coefficient of variation (CV) of each
model's median over the repeats, and the CV of the speed-up ratio the tuner acts on.

    python -m benchmarks.repeatability [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import resnet20_pair, write_section
from edge_tune.edge import bench
from edge_tune.edge.actor import BenchActor, model_files

LOAD = """
import sys, torch
from edge_tune.config import config_from_dict
from edge_tune.catalog.data import load_data
from edge_tune.catalog.models import create_model
from edge_tune.compression.train import train
torch.set_num_threads(int(sys.argv[1]))
config = config_from_dict({})
splits = load_data(config.data)
model = create_model(config.model, 10)
print("training", flush=True)
while True:
    train(model, splits.train, 1, 0.05, 5e-4, 64)
"""


def cv(values: list[float]) -> float:
    """Coefficient of variation (%): population std / mean."""
    mean = statistics.fmean(values)
    return 100 * statistics.pstdev(values) / mean if mean else 0.0


def measure(paths: dict[str, Path], repeats: int) -> dict[str, list[float]]:
    """``repeats`` benchmark calls exactly as a trial makes them (the actor's class, its
    repeat-when-noisy sessions included)."""
    actor = BenchActor(model_files(paths["baseline"]), bench.BenchSettings())
    files = model_files(paths["model"])
    out: dict[str, list[float]] = {"baseline": [], "model": [], "speedup": [], "sessions": []}
    for _ in range(repeats):
        result = actor.benchmark(files, per_layer=False)
        out["baseline"].append(result.baseline.latency_ms)
        out["model"].append(result.models["model"].latency_ms)
        out["speedup"].append(result.speedup())
        out["sessions"].append(result.models["model"].sessions)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    paths = resnet20_pair(Path(tempfile.mkdtemp(prefix="edge_tune_repeat-")))
    lines = [f"{args.repeats} benchmark calls per condition, made as a trial makes them (the "
             "actor's class and default settings: 1 pinned thread, f32, LATENCY, batch 1, "
             "baseline interleaved, a session repeated when its per-round ratio CV > 5%); "
             "CV = std / mean over the calls.", "",
             "| condition | baseline ms | CV % | 50%-filter ms | CV % | speed-up | CV % | "
             "sessions per call |", "|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines))
    for name, threads in [("idle", 0), ("training beside it, 2 threads", 2),
                          ("training beside it, 1 thread", 1)]:
        load = None
        if threads:
            load = subprocess.Popen([sys.executable, "-c", LOAD, str(threads)],
                                    stdout=subprocess.PIPE, text=True)
            assert load.stdout is not None
            load.stdout.readline()  # "training": the load is on
            time.sleep(2)
        try:
            m = measure(paths, args.repeats)
        finally:
            if load is not None:
                load.kill()
                load.wait()
        lines.append(f"| {name} | {statistics.median(m['baseline']):.3f} | "
                     f"{cv(m['baseline']):.1f} | {statistics.median(m['model']):.3f} | "
                     f"{cv(m['model']):.1f} | {statistics.median(m['speedup']):.2f}x | "
                     f"{cv(m['speedup']):.1f} | {statistics.mean(m['sessions']):.1f} |")
        print(lines[-1], flush=True)
    write_section("Repeatability, idle and under training load",
                  "python -m benchmarks.repeatability", "\n".join(lines))


if __name__ == "__main__":
    main()
