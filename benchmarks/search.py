"""Search efficiency: BayesOptSearch vs random search vs a hand grid, same budget and space.

Real trials are expensive, so this is a tabular benchmark: every point of a grid over the
default search space (filter_ratio x int8 x finetune_epochs) is run once for real (compress,
fine-tune, export, int8, accuracy as deployed, benchmark interleaved with the baseline) and
its objective stored; the searchers then query the nearest grid point. Each searcher gets the
same budget (``--budget`` trials) and ``--seeds`` seeds: BayesOptSearch exactly as the tuner
configures it (through Ray Tune, 6 random steps, without the hand-made starting point),
uniform random search, and a 16-point hand grid in shuffled order.

Prints the best objective after k trials (median [min, max] over seeds), the trials each
needed to reach 95% of the best speed-up any of them found, and writes a best-so-far plot.

    python benchmarks/search.py --quick      # small CNN at 16x16, ~4 min on 2 cores
    python benchmarks/search.py              # ResNet-20 on digits (the default), ~15 min
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_section
from edge_tune import bench
from edge_tune.config import config_from_dict
from edge_tune.objective import objective

RATIOS = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
QUICK = {"model": "simple_cnn", "data": {"image_size": 16}, "baseline": {"epochs": 4, "lr": 0.05},
         "bench": {"warmup": 10, "iterations": 100, "rounds": 2, "fps_seconds": 0.0},
         "quantize": {"calibration_images": 64}}


def build_table(config: Any, epochs: list[int], folder: Path) -> dict[str, Any]:
    """Run every grid point for real; objective, top-1 and latency ratio per point."""
    from edge_tune.baseline import prepare_baseline
    from edge_tune.data import load_data
    from edge_tune.deploy import arrays
    from edge_tune.models import model_stages
    from edge_tune.recipe import schedule_from_params
    from edge_tune.train import set_threads
    from edge_tune.trial import build

    set_threads(config.train_threads)
    splits = load_data(config.data)
    test = arrays(splits.test)
    base = prepare_baseline(config, splits, test, folder / "baseline", log=lambda _: None)
    threshold = config.tune.threshold.value(base.artifact.top1)
    grid = list(itertools.product(RATIOS, [0, 1], epochs))
    points = {}
    start = time.time()
    for i, (ratio, int8, epoch) in enumerate(grid):
        params = {"filter_ratio": ratio, "int8": int8, "finetune_epochs": epoch}
        schedule = schedule_from_params(params, model_stages(config.model), epoch)
        (folder / f"p{i}").mkdir(parents=True)
        art = build(copy.deepcopy(base.model), schedule, splits, config, folder / f"p{i}",
                    base.shapes, test, log=lambda _: None)
        m = bench.benchmark_models({"baseline": base.artifact.deployed, "model": art.deployed},
                                   config.bench, per_layer=False)
        model_ms, base_ms = m["model"].latency_ms, m["baseline"].latency_ms
        points[_key(ratio, int8, epoch)] = {
            "top1": art.top1, "speedup": base_ms / model_ms,
            "objective": objective(art.top1, model_ms, base_ms, threshold)}
        done = i + 1
        eta = (time.time() - start) / done * (len(grid) - done)
        print(f"table {done}/{len(grid)}: {params} -> {points[_key(ratio, int8, epoch)]}, "
              f"ETA {eta:.0f} s", file=sys.stderr, flush=True)
    return {"threshold": threshold, "epochs": epochs, "points": points}


def _key(ratio: float, int8: int, epochs: int) -> str:
    return f"{ratio:.1f}/{int8}/{epochs}"


def lookup(table: dict[str, Any], params: dict[str, float]) -> dict[str, float]:
    """The grid point nearest to ``params``."""
    ratio = min(RATIOS, key=lambda r: abs(r - params["filter_ratio"]))
    epochs = min(table["epochs"], key=lambda e: abs(e - params["finetune_epochs"]))
    return table["points"][_key(ratio, int(params["int8"] >= 0.5), epochs)]


def bounds(table: dict[str, Any]) -> dict[str, tuple[float, float]]:
    return {"filter_ratio": (min(RATIOS), max(RATIOS)), "int8": (0.0, 1.0),
            "finetune_epochs": (float(min(table["epochs"])), float(max(table["epochs"])))}


def random_search(table: dict[str, Any], budget: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    return [lookup(table, {k: rng.uniform(lo, hi) for k, (lo, hi) in bounds(table).items()})
            ["objective"] for _ in range(budget)]


def hand_grid(table: dict[str, Any], budget: int, seed: int) -> list[float]:
    lo, hi = min(table["epochs"]), max(table["epochs"])
    grid = [{"filter_ratio": r, "int8": i, "finetune_epochs": e}
            for r in (0.2, 0.4, 0.6, 0.8) for i in (0, 1) for e in (lo, hi)]
    order = np.random.default_rng(seed).permutation(len(grid))
    return [lookup(table, grid[j])["objective"] for j in order[:budget]]


def bayesopt(table: dict[str, Any], budget: int, seed: int) -> list[float]:
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.bayesopt import BayesOptSearch

    def trainable(params: dict[str, float]) -> None:
        tune.report({"objective": lookup(table, params)["objective"]})

    searcher = BayesOptSearch(metric="objective", mode="min", random_state=seed,
                              random_search_steps=6, patience=budget)
    space = {k: tune.uniform(lo, hi) for k, (lo, hi) in bounds(table).items()}
    results = tune.Tuner(trainable, param_space=space, tune_config=tune.TuneConfig(
        search_alg=ConcurrencyLimiter(searcher, 1), num_samples=budget),
        run_config=tune.RunConfig(storage_path=tempfile.mkdtemp(), verbose=0)).fit()
    frame = results.get_dataframe().sort_values("timestamp")  # completion order
    return [float(v) for v in frame["objective"]]


def best_so_far(values: list[float]) -> list[float]:
    return [float(v) for v in np.minimum.accumulate(values)]


def plot(curves: dict[str, list[list[float]]], path: Path) -> None:
    from edge_tune.report import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for name, runs in curves.items():
        arr = np.asarray(runs)
        k = np.arange(1, arr.shape[1] + 1)
        ax.plot(k, np.median(arr, axis=0), label=f"{name} (median of {len(runs)} seeds)")
        ax.fill_between(k, arr.min(axis=0), arr.max(axis=0), alpha=0.2)
    ax.set_xlabel("trials")
    ax.set_ylabel("best objective so far (latency ratio; lower is better)")
    ax.set_title("Search efficiency on the tabulated default space")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small CNN, 1-3 epochs")
    parser.add_argument("--budget", type=int, default=16)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--table", type=Path, help="reuse (or write) the tabulated objectives")
    args = parser.parse_args()
    config = config_from_dict(QUICK if args.quick else {})
    epochs = [1, 2, 3] if args.quick else [3, 5, 7]
    folder = Path(tempfile.mkdtemp(prefix="edge_tune_search-"))
    if args.table and args.table.is_file():
        table = json.loads(args.table.read_text())
    else:
        table = build_table(config, epochs, folder)
        (args.table or folder / "table.json").write_text(json.dumps(table, indent=2))
    import ray

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    curves: dict[str, list[list[float]]] = {}
    try:
        for name, search in [("BayesOptSearch", bayesopt), ("random", random_search),
                             ("hand grid", hand_grid)]:
            curves[name] = [best_so_far(search(table, args.budget, seed))
                            for seed in range(args.seeds)]
    finally:
        ray.shutdown()
    best_speedup = max(p["speedup"] for p in table["points"].values()
                       if p["top1"] >= table["threshold"])
    target = 1 / (0.95 * best_speedup)  # objective of 95% of the best feasible speed-up
    rows = ["| searcher | best after 4 | after 8 | after 12 | after 16 | trials to 95% of "
            "the best speed-up (per seed) |", "|---|---|---|---|---|---|"]
    for name, runs in curves.items():
        cells = []
        for k in (4, 8, 12, 16):
            values = [r[min(k, len(r)) - 1] for r in runs]
            cells.append(f"{statistics.median(values):.3f} [{min(values):.3f}, "
                         f"{max(values):.3f}]")
        reach = [next((i + 1 for i, v in enumerate(r) if v <= target), None) for r in runs]
        rows.append(f"| {name} | {' | '.join(cells)} | "
                    f"{', '.join(str(x) if x else f'>{args.budget}' for x in reach)} |")
    png = Path(__file__).resolve().parent / ("search_quick.png" if args.quick else "search.png")
    plot(curves, png)
    feasible = sum(p["top1"] >= table["threshold"] for p in table["points"].values())
    model = "small CNN at 16x16" if args.quick else "ResNet-20"
    body = "\n".join([
        f"{len(table['points'])} grid points run for real ({model} on digits; "
        f"{feasible} above the threshold {table['threshold']:.2f}%); best feasible speed-up "
        f"{best_speedup:.2f}x (objective {1 / best_speedup:.3f}). Objective = latency ratio "
        "if feasible, else 10 + shortfall + ratio/10 (lower is better); "
        f"median [min, max] over {args.seeds} seeds, {args.budget} trials each.", "",
        *rows, "", f"![best so far]({png.relative_to(png.parents[1])})"])
    print(body)
    write_section("Search efficiency" + (" (quick)" if args.quick else ""),
                  "python benchmarks/search.py" + (" --quick" if args.quick else ""), body)


if __name__ == "__main__":
    main()
