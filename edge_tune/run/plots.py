"""The report's pictures (PNG, matplotlib's file-only backend): latency against top-1 with the
Pareto front and the threshold, speed-up per method, per-layer time, the objective over
trials and each parameter's rank correlation with it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge_tune.run.front import pareto_front
from edge_tune.run.runs import Run

TOP_LAYERS = 12  # layers shown in the per-layer chart (the baseline's slowest)


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (no screen needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_pareto(run: Run, path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    points = [(r.latency_ms, r.top1) for r in run.points if r.latency_ms is not None]
    if run.kind == "study":
        markers = "osD^v<>ph*"
        for i, r in enumerate(run.points):
            ax.scatter(r.latency_ms, r.top1, s=60, marker=markers[i % len(markers)],
                       label=f"{r.name} ({r.speedup:.2f}x)", zorder=3)
    else:
        feasible = [r for r in run.points if r.top1 >= run.threshold]
        other = [r for r in run.points if r.top1 < run.threshold]
        ax.scatter([r.latency_ms for r in feasible], [r.top1 for r in feasible], s=40,
                   color="tab:blue", label=f"trials above the threshold ({len(feasible)})")
        ax.scatter([r.latency_ms for r in other], [r.top1 for r in other], s=40,
                   color="tab:gray", marker="x", label=f"trials below it ({len(other)})")
    ref = run.reference
    if ref is not None and ref.latency_ms is not None:
        ax.scatter([ref.latency_ms], [ref.top1], s=110, marker="D", color="tab:green",
                   label=f"reference: the baseline in int8 ({ref.speedup:.2f}x)", zorder=4)
        points.append((ref.latency_ms, ref.top1))
    base_ms = run.baseline.latency_ms
    if base_ms:
        ax.scatter([base_ms], [run.baseline.top1], s=160, marker="*", color="black",
                   label="baseline", zorder=4)
        points.append((base_ms, run.baseline.top1))
    front = pareto_front(points, lambda p: p[0], lambda p: p[1])
    ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="tab:red",
            linewidth=1.2, label="Pareto front", zorder=2)
    listed = [r for r in run.points if r.id and r.id in run.front]
    if listed:  # the trials pareto.json lists (speed-up against validation top-1)
        ax.scatter([r.latency_ms for r in listed], [r.top1 for r in listed], s=140,
                   facecolors="none", edgecolors="tab:red", linewidths=1.2, zorder=5,
                   label=f"on the front: pareto.json ({len(listed)})")
    ax.axhline(run.threshold, color="tab:orange", linestyle="--",
               label=f"threshold {run.threshold:.2f}%")
    ax.set_xlabel("median latency (ms, batch 1)")
    ax.set_ylabel(("validation " if run.kind == "tune" else "")
                  + "top-1 accuracy (%), as deployed")
    ax.set_title("Latency vs accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    return _save(plt, fig, path)


def plot_speedup(run: Run, path: Path) -> Path:
    plt = pyplot()
    rows = sorted(run.points, key=lambda r: r.speedup)
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.5))
    colors = {"sparsity": "tab:gray", "structure": "tab:blue", "quantisation": "tab:green",
              "composed": "tab:purple"}
    bars = ax.barh([r.name for r in rows], [r.speedup for r in rows],
                   color=[colors.get(r.family, "tab:blue") for r in rows])
    for bar, r in zip(bars, rows, strict=True):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {r.speedup:.2f}x",
                va="center", fontsize=8)
    ax.axvline(1.0, color="black", linewidth=1, label="baseline (1.00x)")
    ax.set_xlabel("speed-up vs baseline (median latency ratio, same session)")
    ax.set_xlim(0, max(r.speedup for r in rows) * 1.2)
    ax.set_title("Speed-up per method")
    ax.legend(loc="lower right", fontsize=8)
    return _save(plt, fig, path)


def plot_layers(run: Run, series: list[str], path: Path) -> Path:
    plt = pyplot()
    base = run.layers.get("baseline", {})
    named = [k for k in base if k != "other ops"]
    top = sorted(named, key=lambda k: -base[k])[:TOP_LAYERS] + (
        ["other ops"] if "other ops" in base else [])
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(top) * max(1, len(series) / 2) + 1.8))
    height = 0.8 / len(series)
    y = np.arange(len(top))
    for i, name in enumerate(series):
        values = [run.layers.get(name, {}).get(layer, 0.0) for layer in top]
        ax.barh(y + i * height, values, height, label=name)
    ax.set_yticks(y + height * (len(series) - 1) / 2)
    ax.set_yticklabels(top, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("time per layer (ms, batch 1, OpenVINO profile)")
    ax.set_title(f"Where the time goes: the baseline's {len(top) - 1} slowest layers")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return _save(plt, fig, path)


def plot_objective(run: Run, path: Path) -> Path:
    plt = pyplot()
    values = [r.objective for r in run.points]
    best = list(np.minimum.accumulate(values))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    trials = range(1, len(values) + 1)
    ax.scatter(trials, values, s=30, label="trial objective")
    ax.plot(trials, best, color="tab:red", label="best so far")
    ax.axhline(10, color="tab:orange", linestyle="--",
               label="10: below this, above the accuracy threshold")
    ax.set_yscale("log")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("trial (in completion order)")
    ax.set_ylabel("objective (latency ratio if feasible; log scale)")
    ax.set_title("Objective over trials")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(plt, fig, path)


def plot_importance(values: dict[str, float], path: Path) -> Path:
    plt = pyplot()
    names = sorted(values, key=lambda k: abs(values[k]))
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(names) + 1.6))
    ax.barh(names, [values[n] for n in names],
            color=["tab:green" if values[n] < 0 else "tab:red" for n in names])
    ax.axvline(0, color="black", linewidth=1)
    ax.set_xlim(-1, 1)
    ax.set_xlabel("Spearman rank correlation with the objective (< 0: raising it helps)")
    ax.set_title("Which parameters matter")
    return _save(plt, fig, path)


