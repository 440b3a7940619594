"""Search efficiency on the space where accuracy binds: edge_tune's searchers, random, a hand grid.

Real trials are expensive, so this is a tabular benchmark: every point of a grid over
ResNet-20 on Fashion-MNIST (filter ratio 0.1-0.8 x int8 off/on x 1, 3, 5, 7 fine-tuning
epochs: 64 points) is run once for real (compress, fine-tune, export, int8, validation and test
top-1 as deployed); every graph's latency is measured in one benchmark session, interleaved
with the baseline. The searchers then query the nearest grid point through their own
two-method contract (``suggest``, ``on_trial_complete``), ``--seeds`` seeds x ``--budget``
trials each, no hand-made starting point for any: ``bayesopt`` (the default: latency ratio
as target, validation top-1 as modelled constraint, int8 a choice, 4 warm-up trials),
``bayesopt_penalty`` (Ray's BayesOptSearch on the penalty objective, 6 random steps, as the
tuner ran it before), ``random``, and a 16-point hand grid in shuffled order.

Prints (and writes to BENCHMARKS.md) the best feasible speed-up after k trials, the trials each
needed to reach 95% of the table's best, the table, and a best-so-far plot.

    python -m benchmarks.search --table t.json      # builds t.json (~33 min on 2 cores), then
                                                    # the searchers on it (~4 min)
    python -m benchmarks.search --table benchmarks/search_table.json  # the measured table
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
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import write_section
from edge_tune.config import load_config
from edge_tune.edge import bench
from edge_tune.search.objective import objective
from edge_tune.search.space import load_space

RATIOS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
EPOCHS = [1, 3, 5, 7]
FASHION = Path(__file__).resolve().parents[1] / "examples" / "fashion_mnist.yaml"


def build_table(config: Any, folder: Path) -> dict[str, Any]:
    """Run every grid point for real: val and test top-1 as deployed, latency ratio.

    One fine-tuned model per (filter ratio, epochs), deployed f32 and int8 (int8 is
    post-training: the same fine-tuned weights). Latency depends only on the graph, so every
    (filter ratio, int8) graph is timed once, all of them and the baseline interleaved in one
    benchmark session at the end.
    """
    from edge_tune.catalog.data import load_data
    from edge_tune.catalog.models import model_stages
    from edge_tune.compression.baseline import prepare_baseline
    from edge_tune.compression.deployment import arrays, deploy, deployed_accuracy
    from edge_tune.compression.plan import compress, plan_compression
    from edge_tune.compression.train import set_threads
    from edge_tune.search.params import schedule_from_params

    set_threads(config.train_threads)
    splits = load_data(config.data)
    val, test = arrays(splits.val), arrays(splits.test)
    base = prepare_baseline(config, splits, val, folder / "baseline", log=lambda _: None)
    base_test = deployed_accuracy(base.artifact.deployed, test, config.bench)[0]
    threshold = config.tune.threshold.value(base.artifact.top1)
    print(f"baseline val {base.artifact.top1:.2f}%, test {base_test:.2f}%, threshold "
          f"{threshold:.2f}%", file=sys.stderr, flush=True)
    points: dict[str, dict[str, float]] = {}
    graphs: dict[str, Path] = {}
    files: dict[str, Path] = {}
    start, total = time.time(), len(RATIOS) * len(EPOCHS)
    for done, (ratio, epochs) in enumerate(itertools.product(RATIOS, EPOCHS), 1):
        schedule = schedule_from_params({"filter_ratio": ratio, "finetune_epochs": epochs},
                                        model_stages(config.model), epochs)
        model = copy.deepcopy(base.model)
        compress(model, plan_compression(schedule, model, config), splits, config,
                 log=lambda _: None)
        for int8 in (0, 1):
            out = folder / _key(ratio, int8, epochs).replace("/", "_")
            out.mkdir(parents=True)
            art = deploy(model, bool(int8), splits, config, out, base.shapes, val)
            graphs.setdefault(f"{ratio:.1f}/{int8}", art.deployed)
            files[_key(ratio, int8, epochs)] = art.deployed
            points[_key(ratio, int8, epochs)] = {"val_top1": art.top1}
        eta = (time.time() - start) / done * (total - done)
        print(f"table {done}/{total}: ratio {ratio}, {epochs} epochs -> val "
              f"{points[_key(ratio, 0, epochs)]['val_top1']:.2f}% f32, "
              f"{points[_key(ratio, 1, epochs)]['val_top1']:.2f}% int8; ETA {eta:.0f} s",
              file=sys.stderr, flush=True)
    measured = bench.benchmark_models({"baseline": base.artifact.deployed, **graphs},
                                      config.bench, per_layer=False)
    base_ms = measured["baseline"].latency_ms
    for key, point in points.items():
        ratio, int8, _ = key.split("/")
        model_ms = measured[f"{ratio}/{int8}"].latency_ms
        point.update(latency_ms=model_ms, speedup=base_ms / model_ms,
                     objective=objective(point["val_top1"], model_ms, base_ms, threshold))
    # test top-1 once, for the point a search is after: the fastest feasible one
    best = max((k for k, p in points.items() if p["val_top1"] >= threshold),
               key=lambda k: points[k]["speedup"], default=None)
    if best is not None:
        points[best]["test_top1"] = deployed_accuracy(files[best], test, config.bench)[0]
    return {"threshold": threshold, "baseline_val_top1": base.artifact.top1,
            "baseline_test_top1": base_test, "baseline_latency_ms": base_ms,
            "epochs": EPOCHS, "ratios": RATIOS, "points": points}


def _key(ratio: float, int8: int, epochs: int) -> str:
    return f"{ratio:.1f}/{int8}/{epochs}"


def lookup(table: dict[str, Any], params: dict[str, float]) -> dict[str, float]:
    """The grid point nearest to ``params``."""
    ratio = min(table["ratios"], key=lambda r: abs(r - params["filter_ratio"]))
    epochs = min(table["epochs"], key=lambda e: abs(e - params["finetune_epochs"]))
    return table["points"][_key(ratio, int(params["int8"] >= 0.5), epochs)]


def result_of(table: dict[str, Any], params: dict[str, float]) -> dict[str, Any]:
    """What a trial at ``params`` reports, read from the table."""
    from edge_tune.search.result import TrialResult

    point = lookup(table, params)
    result = TrialResult("done", 1 / point["speedup"], table["threshold"], point["val_top1"])
    return {**result.metrics(), "speedup": point["speedup"], "feasible": result.feasible}


def run_searcher(name: str, table: dict[str, Any], budget: int, seed: int) -> list[float]:
    """Best feasible speed-up after each of ``budget`` trials (0 before any is feasible),
    the searcher driven by its own two-method contract (suggest, on_trial_complete)."""
    from edge_tune.search.searchers import SEARCHERS

    config = load_config(str(FASHION))
    tune = replace(config.tune, seed=seed, num_samples=budget, points_to_evaluate=[],
                   random_steps=6 if name == "bayesopt_penalty" else config.tune.random_steps)
    space = load_space(config.tune.search_space)
    searcher = SEARCHERS[name](tune, space)
    searcher.set_search_properties("objective", "min", space.tune_space())
    best, curve = 0.0, []
    for i in range(budget):
        params = searcher.suggest(str(i))
        result = result_of(table, params)
        searcher.on_trial_complete(str(i), result)
        if result["feasible"]:
            best = max(best, result["speedup"])
        curve.append(best)
    return curve


def hand_grid(table: dict[str, Any], budget: int, seed: int) -> list[float]:
    """A person's grid (filter ratio 0.2-0.8 x int8 x shortest/longest fine-tuning), shuffled."""
    lo, hi = min(table["epochs"]), max(table["epochs"])
    grid = [{"filter_ratio": r, "int8": i, "finetune_epochs": e}
            for r in (0.2, 0.4, 0.6, 0.8) for i in (0, 1) for e in (lo, hi)]
    order = np.random.default_rng(seed).permutation(len(grid))
    best, curve = 0.0, []
    for k in range(budget):
        result = result_of(table, grid[order[k % len(grid)]])
        best = max(best, result["speedup"]) if result["feasible"] else best
        curve.append(best)
    return curve


def plot(curves: dict[str, list[list[float]]], target: float, path: Path) -> None:
    from edge_tune.run.plots import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for name, runs in curves.items():
        arr = np.asarray(runs)
        k = np.arange(1, arr.shape[1] + 1)
        ax.plot(k, np.median(arr, axis=0), label=f"{name} (median of {len(runs)} seeds)")
        ax.fill_between(k, arr.min(axis=0), arr.max(axis=0), alpha=0.15)
    ax.axhline(target, color="gray", linestyle="--", linewidth=1,
               label="95% of the best feasible speed-up")
    ax.set_xlabel("trials")
    ax.set_ylabel("best feasible speed-up so far (x; higher is better)")
    ax.set_title("Search on the tabulated Fashion-MNIST ResNet-20 space (min-max band)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def grid_markdown(table: dict[str, Any]) -> list[str]:
    """The table itself: speed-up and validation top-1 per grid point (feasible in bold)."""
    head = "| filter ratio | int8 | speed-up | " + " | ".join(
        f"val top-1, {e} ep" for e in table["epochs"]) + " |"
    rows = [head, "|---|---|---|" + "---|" * len(table["epochs"])]
    for ratio in table["ratios"]:
        for int8 in (0, 1):
            cells = []
            for e in table["epochs"]:
                p = table["points"][_key(ratio, int8, e)]
                text = f"{p['val_top1']:.2f}"
                cells.append(f"**{text}**" if p["val_top1"] >= table["threshold"] else text)
            speedup = table["points"][_key(ratio, int8, table["epochs"][0])]["speedup"]
            rows.append(f"| {ratio:.1f} | {'on' if int8 else 'off'} | {speedup:.2f}x | "
                        + " | ".join(cells) + " |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--table", type=Path, help="reuse (or write) the tabulated grid")
    args = parser.parse_args()
    if args.table and args.table.is_file():
        table = json.loads(args.table.read_text())
    else:
        folder = Path(tempfile.mkdtemp(prefix="edge_tune_search-"))
        table = build_table(load_config(str(FASHION)), folder)
        (args.table or folder / "table.json").write_text(json.dumps(table, indent=2))
    searchers: dict[str, Any] = {
        "bayesopt (default: constrained, int8 a choice)":
            lambda t, b, s: run_searcher("bayesopt", t, b, s),
        "bayesopt_penalty (BayesOptSearch, penalty objective)":
            lambda t, b, s: run_searcher("bayesopt_penalty", t, b, s),
        "random": lambda t, b, s: run_searcher("random", t, b, s),
        "hand grid": hand_grid}
    curves: dict[str, list[list[float]]] = {}
    for name, search in searchers.items():
        curves[name] = []
        for seed in range(args.seeds):
            curves[name].append(search(table, args.budget, seed))
            print(f"{name}, seed {seed}: best {curves[name][-1][-1]:.2f}x", file=sys.stderr,
                  flush=True)
    feasible = [p for p in table["points"].values() if p["val_top1"] >= table["threshold"]]
    best = max(p["speedup"] for p in feasible)
    target = 0.95 * best
    rows = ["| searcher | best after 5 | after 10 | after 20 | trials to 95% of the best, "
            "median (per seed) | worst seed after 20 |", "|---|---|---|---|---|---|"]
    for name, runs in curves.items():
        cells = []
        for k in (5, 10, args.budget):
            values = [r[min(k, len(r)) - 1] for r in runs]
            cells.append(f"{statistics.median(values):.2f}x [{min(values):.2f}, "
                         f"{max(values):.2f}]")
        reach = [next((i + 1 for i, v in enumerate(r) if v >= target), None) for r in runs]
        ranked = [x if x else args.budget + 1 for x in reach]
        shown = ", ".join(str(x) if x else f">{args.budget}" for x in reach)
        worst = min(r[-1] for r in runs)
        median = statistics.median(ranked)
        rows.append(f"| {name} | {' | '.join(cells)} | "
                    f"{median if median <= args.budget else f'>{args.budget}'} ({shown}) | "
                    f"{worst:.2f}x ({100 * worst / best:.0f}%) |")
    png = Path(__file__).resolve().parent / "search.png"
    plot(curves, target, png)
    body = "\n".join([
        f"ResNet-20 on Fashion-MNIST ([examples/fashion_mnist.yaml]"
        "(examples/fashion_mnist.yaml): 2,000 training images, validation 9,000, test "
        f"10,000). {len(table['points'])} grid points (filter ratio x int8 x fine-tuning "
        "epochs) run for real once; every graph's latency measured in one interleaved "
        f"session. Baseline validation top-1 {table['baseline_val_top1']:.2f}% (test "
        f"{table['baseline_test_top1']:.2f}%), threshold {table['threshold']:.2f}% (1 "
        f"point); {len(feasible)} points feasible, the best {best:.2f}x. Searchers query the "
        "nearest grid point; no hand-made starting point for any; "
        f"{args.seeds} seeds x {args.budget} trials; best feasible speed-up so far, median "
        "[min, max] over seeds.", "",
        *rows, "", f"![best so far]({png.relative_to(png.parents[1])})", "",
        "The table (validation top-1 as deployed, %; bold: feasible):", "",
        *grid_markdown(table)])
    print(body)
    write_section("Search efficiency", "python -m benchmarks.search", body)


if __name__ == "__main__":
    main()
