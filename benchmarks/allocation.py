"""Per-layer allocation, measured: the device's channel saw-tooth, the profile's predictions
against direct measurements, and device against uniform allocation at equal targets.

    python -m benchmarks.allocation [--config FILE] [--targets 0.3 0.4 0.5] [--epochs 4]
                                    [--seeds 1] [--random 10] [--multiple N]

1. Two 3x3 convs C -> C at the data's image size for C = 1..64 on OpenVINO (1 thread, f32,
   batch 1): the latency table, the multiple ``auto`` picks, and docs/channels.png.
2. ``--random`` random allocations (each group keeps a random count between its floor and its
   width, aligned to the multiple), compressed without fine-tuning and benchmarked with the
   baseline interleaved in one session: the profile's predicted latency ratio against the
   measured one.
3. For every target and seed, a trial with ``allocation: 1`` (by the device) and one with
   ``allocation: 0`` (uniform, same target): validation top-1 as deployed, measured latency
   ratio, MACs.
Writes the section "Per-layer allocation" of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import write_section
from edge_tune.catalog.data import load_data
from edge_tune.compression.allocation import Allocation, min_kept
from edge_tune.compression.baseline import prepare_baseline
from edge_tune.compression.channels import pick_multiple, probe_models, probe_settings
from edge_tune.compression.deployment import arrays, deploy_graph
from edge_tune.compression.plan import allocated_plan, build, compress, plan_compression
from edge_tune.compression.train import set_threads
from edge_tune.config import load_config
from edge_tune.edge import bench
from edge_tune.run.allocating import prepare_allocator, profile_settings
from edge_tune.run.measuring import here
from edge_tune.run.plots import pyplot
from edge_tune.search.params import schedule_from_params

DOCS = Path(__file__).resolve().parents[1] / "docs"


def sawtooth(image_size: int, settings: bench.BenchSettings) -> tuple[dict[int, float], int]:
    with tempfile.TemporaryDirectory() as folder:
        files = probe_models(image_size, Path(folder))
        measured = here(probe_settings(settings), per_layer=False)(files)
    latency = {int(k): ms for k, (ms, _) in measured.items()}
    chosen = pick_multiple(latency)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    counts = sorted(latency)
    ax.plot(counts, [latency[c] for c in counts], marker=".", color="tab:blue")
    for k in range(chosen.multiple, max(counts) + 1, chosen.multiple):
        ax.axvline(k + 0.5, color="tab:red", alpha=0.3, linewidth=0.8)
    ax.set_xlabel("channels C (two 3x3 convs C -> C with ReLUs, "
                  f"{image_size}x{image_size}, batch 1)")
    ax.set_ylabel("median latency (ms)")
    ax.set_title(f"OpenVINO {settings.device}, {settings.threads} thread, {settings.precision}: "
                 f"auto multiple {chosen.multiple} (red: after each)", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(DOCS / "channels.png", dpi=120)
    plt.close(fig)
    return latency, chosen.multiple


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None)
    parser.add_argument("--targets", type=float, nargs="+", default=[0.3, 0.4, 0.5])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--random", type=int, default=10)
    parser.add_argument("--multiple", type=int, default=0, help="0: the measured one")
    parser.add_argument("--device", default="cpu", help="where sensitivity and fine-tuning "
                        "run (cuda on a GPU machine); export and benchmarks stay on the CPU")
    args = parser.parse_args()
    started = time.time()
    config = load_config(args.config)
    set_threads(config.train_threads)

    latency, auto = sawtooth(config.data.image_size, config.bench)
    multiple = args.multiple or auto
    config = dataclasses.replace(config, prune=dataclasses.replace(
        config.prune, channel_multiple=multiple))
    print(f"channel multiple: auto {auto}, used {multiple}", flush=True)

    splits = load_data(config.data)
    val = arrays(splits.val)
    folder = Path(tempfile.mkdtemp(prefix="edge_tune_allocation-"))
    base = prepare_baseline(config, splits, val, folder / "baseline",
                            log=lambda line: print(line, flush=True))
    base.model.to(args.device)
    allocator = prepare_allocator(config, base.model, splits, bench.identity(config.bench),
                                  here(profile_settings(config.bench), per_layer=True),
                                  # arms at a target neither can reach would compare nothing
                                  min(args.targets), (False,), "--targets",
                                  log=lambda line: print(line, flush=True))

    # 2. predictions against direct measurements
    rng = random.Random(0)
    groups = allocator.shape.groups
    graphs, predicted = {}, {}
    for i in range(args.random):
        kept = {}
        for g in groups:
            low = min_kept(g, multiple)
            step = multiple if multiple > 1 else 1
            kept[g.name] = min(g.width, low + step * rng.randint(0, (g.width - low) // step))
        int8 = i % 2 == 1
        allocation = Allocation(kept, allocator.predict(kept, int8), True)
        predicted[f"r{i}"] = allocation.predicted
        schedule = schedule_from_params({"latency_target": 0.5, "int8": float(int8)}, (), 0)
        plan = allocated_plan(schedule, allocation, allocator, base.model, config)
        model = copy.deepcopy(base.model)
        compress(model, plan, splits, config, log=lambda _: None, finetune=False)
        (folder / f"r{i}").mkdir()
        graphs[f"r{i}"] = deploy_graph(model, int8, splits.image_size, folder / f"r{i}",
                                       arrays(splits.train, 8)[0])
    measured = bench.benchmark_models({"baseline": base.artifact.deployed, **graphs},
                                      config.bench, per_layer=False)
    base_ms = measured["baseline"].latency_ms
    errors = []
    rows = ["| allocation | int8 | predicted ratio | measured ratio | error |",
            "|---|---|---|---|---|"]
    for name, p in predicted.items():
        m = measured[name].latency_ms / base_ms
        errors.append(abs(p - m) / m)
        rows.append(f"| {name} | {'on' if int(name[1:]) % 2 else 'off'} | {p:.3f} | {m:.3f} | "
                    f"{100 * (p - m) / m:+.1f}% |")
    print("\n".join(rows), flush=True)

    # 3. device against uniform at equal targets
    arms = ["| target | allocation | seed | val top-1 % | measured ratio | predicted | MACs (M) |",
            "|---|---|---|---|---|---|---|"]
    for target in args.targets:
        for seed in range(args.seeds):
            for by_device in (1.0, 0.0):
                torch.manual_seed(seed)
                params = {"latency_target": target, "allocation": by_device,
                          "finetune_epochs": float(args.epochs)}
                schedule = schedule_from_params(params, (), args.epochs)
                plan = plan_compression(schedule, base.model, config, allocator)
                out = folder / f"t{target}_{by_device}_{seed}"
                out.mkdir()
                artifact = build(copy.deepcopy(base.model), plan, splits, config, out,
                                 base.shapes, val, log=lambda _: None)
                ratio = bench.benchmark_models(
                    {"baseline": base.artifact.deployed, "model": artifact.deployed},
                    config.bench, per_layer=False)
                r = ratio["model"].latency_ms / ratio["baseline"].latency_ms
                pred = plan.allocation.predicted if plan.allocation else float("nan")
                arms.append(f"| {target:.2f} | {'device' if by_device else 'uniform'} | "
                            f"{seed} | {artifact.top1:.2f} | {r:.3f} | {pred:.3f} | "
                            f"{artifact.macs / 1e6:.1f} |")
                print(arms[-1], flush=True)
    counts = " ".join(f"{c}:{latency[c]:.3f}" for c in sorted(latency))
    body = (f"Model `{config.model}` on `{config.data.name}` ({config.data.image_size} px); "
            f"baseline validation top-1 {base.artifact.top1:.2f}% as deployed; "
            f"{time.time() - started:.0f} s.\n\n"
            f"**Channel saw-tooth** (two 3x3 convs C -> C, ms by C; docs/channels.png): "
            f"{counts}. `auto` picks {auto}.\n\n"
            f"**The profile against direct measurements** ({args.random} random allocations, "
            f"each group a random aligned count between its floor and its width, no "
            f"fine-tuning, one interleaved session): median error "
            f"{100 * statistics.median(errors):.1f}%, largest {100 * max(errors):.1f}%.\n\n"
            + "\n".join(rows) + "\n\n"
            f"**Device against uniform allocation at equal targets** ({args.epochs} "
            f"fine-tuning epochs, channel multiple {multiple}):\n\n" + "\n".join(arms))
    command = " ".join(["python -m benchmarks.allocation", *sys.argv[1:]])
    write_section("Per-layer allocation", command, body)
    print(body)


if __name__ == "__main__":
    main()
