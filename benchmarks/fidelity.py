"""Does edge_tune's latency agree with OpenVINO's own ``benchmark_app``?

Exports the baseline ResNet-20 (and a 50%-filter-pruned copy) to ONNX, then alternates
edge_tune's benchmark and ``benchmark_app`` (sync API, the same properties through
``-load_config``) several times; prints each median (ms, batch 1) and the ratio.

    python -m benchmarks.fidelity [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import openvino as ov

from benchmarks.common import resnet20_pair, write_section
from edge_tune.edge import bench


def benchmark_app_median(model: Path, settings: bench.BenchSettings, folder: Path) -> float:
    """Median latency (ms) that ``benchmark_app`` reports with edge_tune's properties."""
    props = bench.compile_settings(ov.Core(), settings)
    config = folder / "ov_config.json"
    config.write_text(json.dumps({settings.device: {k: str(v) for k, v in props.items()}}))
    exe = shutil.which("benchmark_app") or str(Path(sys.executable).with_name("benchmark_app"))
    out = subprocess.run([exe, "-m", str(model), "-d", settings.device, "-load_config",
                          str(config), "-api", "sync", "-niter", str(settings.iterations)],
                         capture_output=True, text=True, check=True).stdout
    found = re.search(r"Median:\s+([\d.]+)\s*(us|ms)", out)
    if not found:
        raise SystemExit(f"no median in benchmark_app output:\n{out[-1500:]}")
    value = float(found.group(1))
    return value / 1e3 if found.group(2) == "us" else value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="edge_tune_fidelity-"))
    pair = resnet20_pair(folder)
    models = {"resnet20": pair["baseline"], "resnet20 50% filters": pair["model"]}
    settings = bench.BenchSettings(threads=args.threads)
    lines = [f"Median of {args.repeats} runs each; threads {args.threads}, f32, LATENCY, "
             f"batch 1, {settings.iterations} iterations, the same properties for both.", "",
             "| model | edge_tune median ms | benchmark_app median ms | ratio |",
             "|---|---|---|---|"]
    print("\n".join(lines))
    for name, path in models.items():
        ours, theirs = [], []
        for _ in range(args.repeats):
            ours.append(bench.benchmark_models({name: path}, settings, per_layer=False)[name]
                        .latency_ms)
            theirs.append(benchmark_app_median(path, settings, folder))
        a, b = statistics.median(ours), statistics.median(theirs)
        lines.append(f"| {name} | {a:.3f} | {b:.3f} | {a / b:.3f} |")
        print(lines[-1], flush=True)
    write_section("Fidelity: the actor vs benchmark_app", "python -m benchmarks.fidelity",
                  "\n".join(lines))


if __name__ == "__main__":
    main()
