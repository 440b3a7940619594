"""int8 against float on one compressed model: plain post-training int8, NNCF's
accuracy-controlled int8 (``quantize.max_drop``), and the float model, measured side by side.

    python -m benchmarks.int8 --config FILE [FILE ...] --params JSON [--max-drop 0.5 1.0]

The model is compressed and fine-tuned once as a trial would (``--params`` without int8), then
deployed in float, in plain int8 and under each ``--max-drop`` (points of top-1 against float,
on ``quantize.control_images`` training images). Validation top-1 as OpenVINO runs each, and
latency (ms, batch 1; median and p90) of all of them and the baseline in one interleaved
session. One table per config; writes the section "int8 against float" of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import write_section
from edge_tune.catalog.models import model_stages
from edge_tune.compression.deployment import arrays, deployed_accuracy
from edge_tune.compression.plan import build, plan_compression
from edge_tune.compression.quantize import quantize, quantize_controlled
from edge_tune.config import load_config
from edge_tune.edge import bench
from edge_tune.run.pipeline import prepare
from edge_tune.search.params import schedule_from_params


def compare(config_path: str | None, params: dict[str, float],
            drops: list[float]) -> str:
    """One config's table (see the module docstring)."""
    started = time.time()
    config = load_config(config_path)
    folder = Path(tempfile.mkdtemp(prefix="edge_tune_int8-"))
    splits, _, base = prepare(config, folder / "baseline")
    val = arrays(splits.val)
    schedule = schedule_from_params(params, model_stages(config.model), config.finetune.epochs)
    plan = plan_compression(schedule, base.model, config)
    artifact = build(copy.deepcopy(base.model), plan, splits, config, folder, base.shapes, val,
                     log=lambda line: print(line, flush=True))
    q = config.quantize
    images, labels = arrays(splits.train, q.calibration_images + q.control_images)
    calibration = images[:q.calibration_images]
    control = (images[q.calibration_images:], labels[q.calibration_images:])
    deployed = {"float": artifact.deployed}
    seconds: dict[str, float] = {"float": 0.0}
    in_float: dict[str, int] = {"float": -1}
    start = time.perf_counter()
    deployed["int8"] = quantize(artifact.onnx_path, folder / "int8.xml", calibration)
    seconds["int8"], in_float["int8"] = time.perf_counter() - start, 0
    for drop in drops:
        name = f"int8, max_drop {drop:g}"
        start = time.perf_counter()
        deployed[name], layers = quantize_controlled(
            artifact.onnx_path, folder / f"controlled_{drop:g}.xml", calibration, control, drop)
        seconds[name], in_float[name] = time.perf_counter() - start, len(layers)
        print(f"{name}: {len(layers)} layer(s) in float ({', '.join(layers)}), "
              f"{seconds[name]:.1f} s", flush=True)
    top1 = {name: deployed_accuracy(path, val, config.bench)[0]
            for name, path in deployed.items()}
    base_top1 = deployed_accuracy(base.artifact.deployed, val, config.bench)[0]
    measured = bench.benchmark_models({"baseline": base.artifact.deployed, **deployed},
                                      config.bench, per_layer=False)
    base_ms = measured["baseline"].latency_ms
    rows = ["| deployed | val top-1 % | layers in float | quantise s | latency ms (p90) | "
            "speed-up |", "|---|---|---|---|---|---|",
            f"| baseline (float) | {base_top1:.2f} | all | - | {base_ms:.3f} "
            f"({measured['baseline'].latency_p90_ms:.3f}) | 1.00x |"]
    for name in deployed:
        m = measured[name]
        rows.append(f"| {name} | {top1[name]:.2f} | "
                    f"{'all' if in_float[name] < 0 else in_float[name]} | "
                    f"{seconds[name]:.1f} | {m.latency_ms:.3f} ({m.latency_p90_ms:.3f}) | "
                    f"{base_ms / m.latency_ms:.2f}x |")
    return (f"**`{config_path}`**: model `{config.model}` on `{config.data.name}` "
            f"({config.data.image_size} px, train_subset {config.data.train_subset}, baseline "
            f"{config.baseline.epochs} epochs at lr {config.baseline.lr:g}); params "
            f"`{json.dumps(params)}`; {q.calibration_images} calibration and "
            f"{q.control_images} control images (training split); validation {len(val[1])} "
            f"images; {time.time() - started:.0f} s.\n\n" + "\n".join(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", nargs="+", default=[None])
    parser.add_argument("--params", default='{"filter_ratio": 0.5, "finetune_epochs": 2}')
    parser.add_argument("--max-drop", type=float, nargs="+", default=[0.5, 1.0])
    args = parser.parse_args()
    params = {**json.loads(args.params), "int8": 0.0}
    body = "\n\n".join(compare(path, params, args.max_drop) for path in args.config)
    command = " ".join(["python -m benchmarks.int8", *sys.argv[1:]])
    write_section("int8 against float", command, body)
    print(body)


if __name__ == "__main__":
    main()
