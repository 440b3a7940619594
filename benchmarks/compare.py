"""Uniform against device allocation, channel alignment and distillation: real tune runs, the
same trial budget each, on a baseline trained once on a larger set.

    python -m benchmarks.compare --config benchmarks/configs/resnet20_fashion_compare.yaml
        [--arms uniform device aligned distill] [--seeds 0 1 2] [--trials 12]
        [--baseline-subset 20000] [--targets 0.22 0.8] [--work /tmp/edge_tune_compare]
        [--title NAME]

1. The baseline trains on ``--baseline-subset`` training images (cached like any baseline);
   every run starts from it as ``baseline.checkpoint`` and fine-tunes on the config's own
   ``data.train_subset``. Validation (split off first) and test are the same for all.
2. Each arm x seed is one ``python -m edge_tune.tune`` run in its own process and folder under
   ``--work`` (a finished one is read again, not re-run: the benchmark resumes):
   - ``uniform``: one filter ratio for every conv, int8, fine-tuning epochs;
   - ``per_stage``: one ratio per stage, int8, epochs;
   - ``device``: a latency target allocated per group on the device's profile, int8, epochs
     (``--targets``: the ratios searched; a low end under the model's floor on the device, which
     its profile gives, is refused by the tuner in one line);
   - ``aligned``: ``device`` with ``prune.channel_multiple: auto``;
   - ``distill``: ``aligned`` with every trial distilling from the baseline.
3. Per run: the best speed-up at <= the threshold's drop (validation chose it; test top-1
   measured once), its MACs, trials, wall time; the Pareto front (speed-up vs validation
   top-1). Per arm: the median and range over seeds; against ``uniform`` at equal latency
   (each front interpolated: a front holds the best top-1 reached at or below a latency), the
   top-1 difference; at equal top-1, the speed difference.
Writes the section "Comparison: <title>" of BENCHMARKS.md and docs/compare_<title>.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import write_section

DOCS = Path(__file__).resolve().parents[1] / "docs"
EPOCHS = [3.0, 7.0]
# the latency ratios a device arm searches (--targets): ResNet-20 on this CPU bottoms out at
# 0.203 (every group at its floor, int8: its profile), so 0.15 is refused
TARGET = [0.22, 0.8]
ARMS: dict[str, tuple[dict[str, list[float]], dict[str, Any]]] = {
    # arm: (search space parameters, config overrides)
    "uniform": ({"filter_ratio": [0.1, 0.8], "int8": [0.0, 1.0], "finetune_epochs": EPOCHS},
                {}),
    "per_stage": ({"filter_ratio_layer1": [0.0, 0.75], "filter_ratio_layer2": [0.0, 0.75],
                   "filter_ratio_layer3": [0.0, 0.75], "int8": [0.0, 1.0],
                   "finetune_epochs": EPOCHS}, {}),
    "device": ({"latency_target": TARGET, "int8": [0.0, 1.0], "finetune_epochs": EPOCHS},
               {}),
    "aligned": ({"latency_target": TARGET, "int8": [0.0, 1.0], "finetune_epochs": EPOCHS},
                {"prune": {"channel_multiple": "auto"}}),
    "distill": ({"latency_target": TARGET, "int8": [0.0, 1.0], "finetune_epochs": EPOCHS,
                 "distill": [0.5, 1.0]}, {"prune": {"channel_multiple": "auto"}}),
}


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def baseline_checkpoint(config_path: str, subset: int) -> tuple[Path, dict[str, Any]]:
    """The baseline trained on ``subset`` training images (cached); its weights file."""
    from edge_tune.catalog.data import load_data
    from edge_tune.compression.baseline import baseline_model, cached_folder
    from edge_tune.config import load_config

    config = load_config(config_path)
    config = dataclasses.replace(config, data=dataclasses.replace(config.data,
                                                                  train_subset=subset))
    baseline_model(config, load_data(config.data), log=lambda line: print(line, flush=True))
    folder = cached_folder(config)
    assert folder is not None
    return folder / "model.pt", json.loads((folder / "meta.json").read_text())


def arm_space(arm: str, targets: list[float]) -> dict[str, list[float]]:
    """The search space parameters of ``arm``, a latency target searched over ``targets``."""
    params = dict(ARMS[arm][0])
    if "latency_target" in params:
        params["latency_target"] = list(targets)
    return params


def run_arm(arm: str, seed: int, trials: int, raw: dict[str, Any], checkpoint: Path,
            work: Path, targets: list[float] = TARGET) -> dict[str, Any]:
    """One tune run (or the one already finished in its folder): summary.json plus wall s."""
    folder = work / f"{arm}-s{seed}"
    run = folder / "run"
    timing = folder / "wall_s.json"
    if (run / "summary.json").is_file() and timing.is_file():
        print(f"{arm} seed {seed}: finished before, read again", flush=True)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        if run.exists():  # an unfinished run: start it again in a fresh folder
            run.rename(folder / f"run-unfinished-{int(time.time())}")
        params, overrides = arm_space(arm, targets), ARMS[arm][1]
        space = folder / "space.yaml"
        space.write_text(yaml.safe_dump({"parameters": params}))
        config = merge(raw, merge(overrides, {
            "baseline": {"checkpoint": str(checkpoint)},
            "tune": {"search_space": str(space), "seed": seed, "num_samples": trials,
                     "points_to_evaluate": []}}))
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
        print(f"{arm} seed {seed}: {trials} trials -> {run}", flush=True)
        start = time.perf_counter()
        with open(folder / "console.log", "w") as log:
            code = subprocess.call([sys.executable, "-m", "edge_tune.tune", "--config",
                                    str(folder / "config.yaml"), "--output", str(run),
                                    "--no-wandb"], stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "WANDB_MODE": "disabled"})
        if code != 0:
            raise SystemExit(f"{arm} seed {seed}: the tune run exited {code}; see "
                             f"{folder / 'console.log'}")
        timing.write_text(json.dumps({"wall_s": time.perf_counter() - start}))
    summary = json.loads((run / "summary.json").read_text())
    summary["wall_s"] = json.loads(timing.read_text())["wall_s"]
    return summary


def front_curve(summary: dict[str, Any]) -> list[tuple[float, float]]:
    """(latency ratio, best validation top-1 at or below it) steps, fastest first."""
    # the arm's own trials: the run's reference (the baseline in int8) is the same for all
    points = sorted((1.0 / p["speedup"], p["val_top1"]) for p in summary["pareto"]
                    if p["id"] != "reference")
    return points


def top1_at(curve: list[tuple[float, float]], ratio: float) -> float | None:
    """The front's top-1 at ``ratio``: the best reached at or below that latency ratio."""
    reached = [top1 for r, top1 in curve if r <= ratio]
    return max(reached) if reached else None


def speed_at(curve: list[tuple[float, float]], top1: float) -> float | None:
    """The front's best speed-up among trials with at least ``top1``."""
    ratios = [r for r, t in curve if t >= top1]
    return 1.0 / min(ratios) if ratios else None


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.median(values):.2f} [{min(values):.2f}, {max(values):.2f}]"


def compare(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Each arm against ``uniform`` on the same seed: top-1 at equal latency (on a grid of
    ratios both fronts reach), speed-up at the threshold's top-1."""
    lines: list[str] = []
    base = {s["seed"]: s for s in runs.get("uniform", [])}
    if not base:  # uniform not run: nothing to compare against
        return lines
    for arm, summaries in runs.items():
        if arm == "uniform":
            continue
        gains, speed = [], []
        for s in summaries:
            u = base.get(s["seed"])
            if u is None:
                continue
            mine, theirs = front_curve(s), front_curve(u)
            if not mine or not theirs:
                continue
            low = max(mine[0][0], theirs[0][0])
            grid = [low + i * (1.0 - low) / 20 for i in range(21)]
            diffs = [a - b for r in grid
                     if (a := top1_at(mine, r)) is not None
                     and (b := top1_at(theirs, r)) is not None]
            if diffs:
                gains.append(statistics.mean(diffs))
            threshold = s["threshold"]["top1"]
            a, b = speed_at(mine, threshold), speed_at(theirs, threshold)
            if a is not None and b is not None:
                speed.append(100.0 * (a / b - 1.0))
        faster = f"{spread(speed)}% faster" if speed else "not comparable (an arm has no " \
            "trial at the threshold)"
        lines.append(f"- **{arm} vs uniform**: top-1 at equal latency "
                     f"{spread(gains)} points (mean over the shared latency range, per seed; "
                     f"median [min, max] over seeds); best speed-up at the threshold {faster}")
    return lines


def plot(runs: dict[str, list[dict[str, Any]]], title: str) -> Path:
    from edge_tune.run.plots import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    colors = ["tab:gray", "tab:purple", "tab:blue", "tab:green", "tab:red"]
    threshold = None
    for color, (arm, summaries) in zip(colors, runs.items(), strict=False):
        for i, s in enumerate(summaries):
            curve = front_curve(s)
            threshold = s["threshold"]["top1"]
            xs = [1.0 / r for r, _ in curve]
            ax.step(xs, [t for _, t in curve], where="post", color=color, alpha=0.8,
                    marker="o", markersize=3, label=arm if i == 0 else None)
    if threshold is not None:
        ax.axhline(threshold, color="black", linestyle="--", linewidth=0.8,
                   label="threshold (1 point)")
    ax.set_xlabel("speed-up on the device (baseline latency / model latency, batch 1)")
    ax.set_ylabel("validation top-1 (%) as deployed")
    ax.set_title(f"Pareto fronts per arm and seed: {title}", fontsize=10)
    lows = [t for ss in runs.values() for s in ss for _, t in front_curve(s)]
    if threshold is not None and lows:
        ax.set_ylim(max(min(lows), threshold - 6), None)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = DOCS / f"compare_{title}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def table(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    rows = ["| arm | seed | best speed-up at <= 1 pt | val top-1 % | test top-1 % | MACs (M) | "
            "params of the best | trials (completed, stopped) | wall min |",
            "|---|---|---|---|---|---|---|---|---|"]
    for arm, summaries in runs.items():
        for s in summaries:
            best = s.get("best") or {}
            ok = best and best.get("feasible")
            shown = ", ".join(f"{k}={v:.2f}" for k, v in (best.get("params") or {}).items())
            rows.append(
                f"| {arm} | {s['seed']} | {best['speedup']:.2f}x | {best['val_top1']:.2f} | "
                f"{best.get('test_top1', float('nan')):.2f} | {best['macs'] / 1e6:.1f} | "
                f"{shown} | {s['trials_completed']}, {s['trials_stopped']} | "
                f"{s['wall_s'] / 60:.1f} |" if ok else
                f"| {arm} | {s['seed']} | none feasible | - | - | - | - | "
                f"{s['trials_completed']}, {s['trials_stopped']} | {s['wall_s'] / 60:.1f} |")
    rows += ["", "| arm | best speed-up, median [min, max] over seeds |", "|---|---|"]
    for arm, summaries in runs.items():
        bests = [s["best"]["speedup"] for s in summaries
                 if s.get("best") and s["best"].get("feasible")]
        shown = f"{spread(bests)}x" if bests else "none feasible"
        rows.append(f"| {arm} | {shown} ({len(bests)} of {len(summaries)} seeds found a "
                    "feasible trial) |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--arms", nargs="+", default=["uniform", "device", "aligned", "distill"],
                        choices=list(ARMS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--baseline-subset", type=int, default=20000)
    parser.add_argument("--targets", type=float, nargs=2, default=TARGET,
                        metavar=("LOW", "HIGH"), help="latency ratios the device arms search")
    parser.add_argument("--work", default="/tmp/edge_tune_compare")
    parser.add_argument("--title", default=None)
    args = parser.parse_args()
    title = args.title or Path(args.config).stem
    work = Path(args.work) / title
    raw = yaml.safe_load(Path(args.config).read_text())
    start = time.perf_counter()
    checkpoint, meta = baseline_checkpoint(args.config, args.baseline_subset)
    runs: dict[str, list[dict[str, Any]]] = {}
    for seed in args.seeds:  # seed-major: a cut-short benchmark still compares every arm
        for arm in args.arms:
            summary = run_arm(arm, seed, args.trials, raw, checkpoint, work, args.targets)
            summary["seed"] = seed
            runs.setdefault(arm, []).append(summary)
            best = summary.get("best") or {}
            print(f"{arm} seed {seed}: best {best.get('speedup', 0):.2f}x at "
                  f"{best.get('val_top1', 0):.2f}% (feasible {best.get('feasible')}), "
                  f"{summary['wall_s']:.0f} s", flush=True)
    first = next(iter(runs.values()))[0]
    body = [
        f"Model `{raw.get('model')}` on `{raw['data']['name']}` ({raw['data'].get('image_size')} "
        f"px). Baseline trained on {args.baseline_subset:,} training images for "
        f"{meta.get('epochs', raw.get('baseline', {}).get('epochs'))} epochs: validation top-1 "
        f"{first['baseline']['val_top1']:.2f}% as deployed (test "
        f"{first['baseline'].get('test_top1', float('nan')):.2f}%), threshold "
        f"{first['threshold']['top1']:.2f}%; trials fine-tune on "
        f"{raw['data'].get('train_subset'):,} images. {args.trials} trials per run, one run "
        f"per arm and seed, sequential (1 trial at a time); {len(args.seeds)} seed(s); "
        f"{(time.perf_counter() - start) / 60:.0f} min here in all (runs read again count 0). "
        f"Arms: " + "; ".join(f"`{a}` {arm_space(a, args.targets)} {ARMS[a][1] or ''}".strip()
                              for a in args.arms) + ".",
        "", *table(runs), "", *compare(runs), "",
        f"Fronts: docs/{plot(runs, title).name}."]
    command = ("python -m benchmarks.compare --config " + args.config
               + f" --arms {' '.join(args.arms)} --seeds {' '.join(map(str, args.seeds))} "
               f"--trials {args.trials} --baseline-subset {args.baseline_subset}"
               + (f" --targets {args.targets[0]:g} {args.targets[1]:g}"
                  if list(args.targets) != TARGET else ""))
    print("\n".join(body))
    write_section(f"Comparison: {title}", command, "\n".join(body))


if __name__ == "__main__":
    main()
