"""The uniform filter curve, with channel counts as the ratio gives them and aligned to the
device's multiple: is latency non-increasing as more filters go?

    python -m benchmarks.channels [--config FILE] [--multiple N] [--sessions 3] [--int8]

ResNet-20 graphs (the configured model, untrained: latency depends on shapes, not weights)
with 10%, 15%, ..., 70% of every conv's filters removed, exported as the tuner's probe does
(f32; ``--int8``: NNCF int8 too), each measured against the dense baseline in ``--sessions``
interleaved sessions (ms, batch 1; the config's bench threads and precision). A step is
"rising" when a larger ratio's median latency ratio exceeds the smaller one's by more than the
spread the sessions show for the two (max - min over sessions). Writes docs/uniform_curve.png
and the section "Uniform filter curve" of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import write_section
from edge_tune.catalog.models import create_model, model_stages
from edge_tune.compression.channels import probe_settings, resolve_multiple
from edge_tune.compression.export import count_macs, export_onnx
from edge_tune.compression.plan import plan_compression
from edge_tune.compression.quantize import quantize
from edge_tune.compression.runner import apply_recipe
from edge_tune.config import Config, load_config
from edge_tune.edge import bench
from edge_tune.run.measuring import here
from edge_tune.run.plots import pyplot
from edge_tune.search.params import schedule_from_params

DOCS = Path(__file__).resolve().parents[1] / "docs"
RATIOS = [round(0.10 + 0.05 * i, 2) for i in range(13)]  # 10% .. 70% of filters removed


def graph(config: Config, ratio: float, int8: bool, folder: Path) -> tuple[Path, int]:
    """The configured model with ``ratio`` of every conv's filters removed (aligned to
    ``config.prune.channel_multiple``): its deployed file and MACs."""
    torch.manual_seed(0)
    size = config.data.image_size
    example = torch.zeros(1, 3, size, size)
    model = create_model(config.model, 10).eval()
    schedule = schedule_from_params({"filter_ratio": ratio}, model_stages(config.model), 0)
    apply_recipe(model, plan_compression(schedule, model, config).recipe, example)
    macs, _ = count_macs(model, example)
    onnx = export_onnx(model, example, folder / "model.onnx")
    if not int8:
        return onnx, macs
    calibration = np.random.default_rng(0).standard_normal((8, 3, size, size), np.float32)
    return quantize(onnx, folder / "model_int8.xml", calibration, bias_correction=False), macs


def rising(curve: list[tuple[float, float]]) -> list[int]:
    """Indices i where step i -> i+1 rises beyond the two points' spread (median, spread)."""
    return [i for i in range(len(curve) - 1)
            if curve[i + 1][0] - curve[i][0] > max(curve[i][1], curve[i + 1][1])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None)
    parser.add_argument("--multiple", type=int, default=0, help="0: the measured one (auto)")
    parser.add_argument("--sessions", type=int, default=3)
    parser.add_argument("--int8", action="store_true", help="the int8 curves too")
    args = parser.parse_args()
    started = time.time()
    config = load_config(args.config)
    measured_multiple = None
    if not args.multiple:
        auto = dataclasses.replace(config, prune=dataclasses.replace(
            config.prune, channel_multiple="auto"))
        resolved, measured_multiple = resolve_multiple(
            auto, here(probe_settings(config.bench), per_layer=False))
        multiple = int(resolved.prune.channel_multiple)
    else:
        multiple = args.multiple
    print(f"channel multiple {multiple}", flush=True)
    folder = Path(tempfile.mkdtemp(prefix="edge_tune_curve-"))
    size = config.data.image_size
    base = export_onnx(create_model(config.model, 10).eval(), torch.zeros(1, 3, size, size),
                       folder / "baseline.onnx")
    arms = [(m, q) for q in ((False, True) if args.int8 else (False,)) for m in (1, multiple)]
    files: dict[str, Path] = {}
    macs: dict[str, int] = {}
    for m, q in arms:
        arm = dataclasses.replace(config, prune=dataclasses.replace(config.prune,
                                                                     channel_multiple=m))
        for r in RATIOS:
            name = f"m{m}{'q' if q else ''}_{r:.2f}"
            (folder / name).mkdir()
            files[name], macs[name] = graph(arm, r, q, folder / name)
    print(f"{len(files)} graphs exported; measuring {args.sessions} sessions", flush=True)
    ratios: dict[str, list[float]] = {name: [] for name in files}
    for session in range(args.sessions):
        results = bench.benchmark_models({"baseline": base, **files}, config.bench,
                                         per_layer=False)
        for name in files:
            ratios[name].append(results[name].latency_ms / results["baseline"].latency_ms)
        print(f"session {session + 1}/{args.sessions} done", flush=True)

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    header = "| filters removed | " + " | ".join(
        f"multiple {m}{' int8' if q else ''}: ratio (spread), MACs" for m, q in arms) + " |"
    rows = [header, "|---" * (len(arms) + 1) + "|"]
    curves = {}
    for m, q in arms:
        names = [f"m{m}{'q' if q else ''}_{r:.2f}" for r in RATIOS]
        curve = [(statistics.median(ratios[n]), max(ratios[n]) - min(ratios[n])) for n in names]
        curves[(m, q)] = (curve, rising(curve))
        ax.errorbar([100 * r for r in RATIOS], [c[0] for c in curve],
                    yerr=[c[1] / 2 for c in curve], marker="o", capsize=3,
                    label=f"multiple {m}{' (as the ratio gives)' if m == 1 else ''}"
                          f"{', int8' if q else ', f32'}")
    for i, r in enumerate(RATIOS):
        cells = []
        for m, q in arms:
            name = f"m{m}{'q' if q else ''}_{r:.2f}"
            median, spread = curves[(m, q)][0][i]
            cells.append(f"{median:.3f} ({spread:.3f}), {macs[name] / 1e6:.1f}M")
        rows.append(f"| {100 * r:.0f}% | " + " | ".join(cells) + " |")
    ax.set_xlabel("filters removed from every conv (%)")
    ax.set_ylabel("latency / dense latency (median)")
    ax.set_title(f"{config.model}, {size} px, {config.bench.device}, "
                 f"{config.bench.threads} thread(s), {config.bench.precision}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(DOCS / "uniform_curve.png", dpi=110)
    verdicts = []
    for (m, q), (curve, up) in curves.items():
        steps = ", ".join(f"{100 * RATIOS[i]:.0f}% -> {100 * RATIOS[i + 1]:.0f}% "
                          f"({curve[i][0]:.3f} -> {curve[i + 1][0]:.3f})" for i in up)
        verdicts.append(f"- multiple {m}{' int8' if q else ' f32'}: "
                        + (f"{len(up)} rising step(s): {steps}" if up else
                           "non-increasing within the sessions' spread"))
    found = f" (`auto` measured {measured_multiple.multiple})" if measured_multiple else ""
    body = (f"Model `{config.model}` (untrained: shapes set latency), {size} px, "
            f"{args.sessions} interleaved sessions against the dense model, multiple "
            f"{multiple}{found}; {time.time() - started:.0f} s. docs/uniform_curve.png.\n\n"
            + "\n".join(verdicts) + "\n\n" + "\n".join(rows))
    command = " ".join(["python -m benchmarks.channels", *sys.argv[1:]])
    write_section("Uniform filter curve", command, body)
    print(body)


if __name__ == "__main__":
    main()
