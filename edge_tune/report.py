"""Reports: ``python -m edge_tune.report RUN_DIR`` turns a study or a tune run into pictures.

Writes ``RUN_DIR/report.md`` with tables and PNGs: latency vs top-1 with the Pareto front and
the threshold, per-layer latency (baseline vs compressed, by the model's own layer names),
speed-up per method (study), objective over trials and each parameter's Spearman rank
correlation with the objective (tune). With W&B on, the same tables and images are logged.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_tune.errors import ArgumentParser, UserError, run_cli
from edge_tune.output import wandb_mode
from edge_tune.recipe import format_params
from edge_tune.verify import layer_of, node_layers

TOP_LAYERS = 12  # layers shown in the per-layer chart (the baseline's slowest)


@dataclass
class Run:
    """What a report needs from a run directory, study or tune alike."""

    kind: str  # study | tune
    folder: Path
    rows: list[dict[str, Any]]  # one per method (study) or completed trial (tune)
    baseline: dict[str, Any]
    threshold: float
    layers: dict[str, dict[str, float]] = field(default_factory=dict)  # series -> layer -> ms
    params: list[str] = field(default_factory=list)  # tune: the searched parameter names
    stopped: list[dict[str, Any]] = field(default_factory=list)  # tune: trials stopped early


COMPUTE = ("Convolution", "FullyConnected", "MatMul")  # OpenVINO types charged to a layer


def _layer_ms(rows: list[dict[str, str]], names: dict[str, str]) -> dict[str, float]:
    """Per-layer ms by the model's layer names; other ops (reorders, pooling) summed."""
    out: dict[str, float] = defaultdict(float)
    for row in rows:
        layer = row.get("layer") or layer_of(row["node"], names)
        out[layer if row["type"] in COMPUTE else "other ops"] += float(row["ms"])
    return dict(out)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def load_study(folder: Path) -> Run:
    study = json.loads((folder / "study.json").read_text())
    rows = study["rows"]
    layers: dict[str, list[dict[str, str]]] = defaultdict(list)
    if (folder / "layers.csv").is_file():
        for row in _read_csv(folder / "layers.csv"):
            layers[row["method"]].append(row)
    return Run("study", folder, [r for r in rows if r["method"] != "baseline"],
               rows[0], study["threshold_top1"],
               {m: _layer_ms(rs, {}) for m, rs in layers.items()})


def load_tune(folder: Path) -> Run:
    summary = json.loads((folder / "summary.json").read_text())
    trials = [json.loads(line) for line in (folder / "trials.jsonl").read_text().splitlines()]
    # a tune run's top-1 is validation top-1 (what chose the best); test was measured once
    rows = [{**t["metrics"], "top1": t["metrics"]["val_top1"], "config": t["params"],
             "id": t["id"]} for t in trials
            if t["status"] == "completed" and "objective" in t["metrics"]]
    layers = {}
    best = folder / "best"
    if (best / "layers.csv").is_file() and (best / "model.onnx").is_file():
        names = node_layers(best / "model.onnx")
        layers["best"] = _layer_ms(_read_csv(best / "layers.csv"), names)
        if (best / "baseline_layers.csv").is_file():
            base_onnx = folder / "baseline" / "baseline.onnx"
            base_names = node_layers(base_onnx) if base_onnx.is_file() else names
            layers = {"baseline": _layer_ms(_read_csv(best / "baseline_layers.csv"),
                                            base_names), **layers}
    baseline = {**summary["baseline"], "top1": summary["baseline"]["val_top1"],
                "method": "baseline"}
    stopped = [t for t in trials if t["status"] == "stopped"]
    return Run("tune", folder, rows, baseline, summary["threshold"]["top1"], layers,
               list(summary["search_space"]["bounds"]), stopped)


def load_run(folder: str | Path) -> Run:
    """A study (study.json) or tune (summary.json + trials.jsonl) run directory."""
    path = Path(folder)
    if (path / "study.json").is_file():
        return load_study(path)
    if (path / "summary.json").is_file() and (path / "trials.jsonl").is_file():
        return load_tune(path)
    raise UserError(f"RUN_DIR: {str(path)!r} holds neither study.json nor summary.json + "
                    "trials.jsonl (a study or tune output directory)")


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points (latency ms, top-1 %) not beaten by a faster one with at least their top-1."""
    front: list[tuple[float, float]] = []
    for latency, top1 in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or top1 > front[-1][1]:
            front.append((latency, top1))
    return front


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman rank correlation (ranks by order; 0 when a side is constant)."""
    rx = np.argsort(np.argsort(np.asarray(x))).astype(float)
    ry = np.argsort(np.argsort(np.asarray(y))).astype(float)
    if len(x) < 3 or rx.std() == 0 or ry.std() == 0 or len(set(x)) < 2:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (no screen needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_pareto(run: Run, path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    points = [(r["latency_ms"], r["top1"]) for r in run.rows]
    if run.kind == "study":
        markers = "osD^v<>ph*"
        for i, r in enumerate(run.rows):
            ax.scatter(r["latency_ms"], r["top1"], s=60, marker=markers[i % len(markers)],
                       label=f"{r['method']} ({r['speedup']:.2f}x)", zorder=3)
    else:
        feasible = [r for r in run.rows if r["top1"] >= run.threshold]
        other = [r for r in run.rows if r["top1"] < run.threshold]
        ax.scatter([r["latency_ms"] for r in feasible], [r["top1"] for r in feasible], s=40,
                   color="tab:blue", label=f"trials above the threshold ({len(feasible)})")
        ax.scatter([r["latency_ms"] for r in other], [r["top1"] for r in other], s=40,
                   color="tab:gray", marker="x", label=f"trials below it ({len(other)})")
    base_ms = run.baseline.get("latency_ms")
    if base_ms:
        ax.scatter([base_ms], [run.baseline["top1"]], s=160, marker="*", color="black",
                   label="baseline", zorder=4)
        points.append((base_ms, run.baseline["top1"]))
    front = pareto_front(points)
    ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="tab:red",
            linewidth=1.2, label="Pareto front", zorder=2)
    ax.axhline(run.threshold, color="tab:orange", linestyle="--",
               label=f"threshold {run.threshold:.2f}%")
    ax.set_xlabel("median latency (ms, batch 1)")
    ax.set_ylabel(("validation " if run.kind == "tune" else "")
                  + "top-1 accuracy (%), as deployed")
    ax.set_title("Latency vs accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_speedup(run: Run, path: Path) -> Path:
    plt = pyplot()
    rows = sorted(run.rows, key=lambda r: r["speedup"])
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.5))
    colors = {"sparsity": "tab:gray", "structure": "tab:blue", "quantisation": "tab:green",
              "composed": "tab:purple"}
    bars = ax.barh([r["method"] for r in rows], [r["speedup"] for r in rows],
                   color=[colors.get(r.get("family", ""), "tab:blue") for r in rows])
    for bar, r in zip(bars, rows, strict=True):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {r['speedup']:.2f}x",
                va="center", fontsize=8)
    ax.axvline(1.0, color="black", linewidth=1, label="baseline (1.00x)")
    ax.set_xlabel("speed-up vs baseline (median latency ratio, same session)")
    ax.set_xlim(0, max(r["speedup"] for r in rows) * 1.2)
    ax.set_title("Speed-up per method")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


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
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_objective(run: Run, path: Path) -> Path:
    plt = pyplot()
    values = [r["objective"] for r in run.rows]
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
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def importance(run: Run) -> dict[str, float]:
    """Spearman rank correlation of each searched parameter with the objective."""
    objective = [r["objective"] for r in run.rows]
    return {p: spearman([float(r["config"].get(p, 0.0)) for r in run.rows], objective)
            for p in run.params}


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
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _fmt(value: Any, digits: int = 2) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def method_table(run: Run) -> tuple[list[str], list[list[Any]]]:
    top1 = "validation top-1 %" if run.kind == "tune" else "top-1 %"
    header = ["method", top1, "median ms", "p90 ms", "speed-up", "MACs (M)", "params (k)",
              "reached ONNX+OV", "smaller layers", "sparse layers"]
    b = run.baseline
    rows = [["baseline", b["top1"], b.get("latency_ms") or "-", b.get("latency_p90_ms", "-"),
             1.0, b["macs"] / 1e6, b["params"] / 1e3, "-", "-", "-"]]
    for r in (sorted(run.rows, key=lambda r: r["objective"])[:10] if run.kind == "tune"
              else run.rows):
        name = r.get("method") or format_params(r["config"])
        rows.append([name, r["top1"], r["latency_ms"], r["latency_p90_ms"], r["speedup"],
                     r["macs"] / 1e6, r["params"] / 1e3, "yes" if r.get("reached", True) else "NO",
                     r.get("smaller_layers", "-"), r.get("sparse_layers", "-")])
    return header, rows


def layer_table(run: Run, series: list[str]) -> tuple[list[str], list[list[Any]]]:
    base = run.layers.get("baseline", {})
    top = sorted((k for k in base if k != "other ops"), key=lambda k: -base[k])[:TOP_LAYERS]
    total = sum(base.values()) or 1.0
    header = ["layer", "baseline ms", "share %", *[f"{s} ms" for s in series[1:]]]
    rows = [[layer, base[layer], 100 * base[layer] / total,
             *[run.layers.get(s, {}).get(layer, 0.0) for s in series[1:]]] for layer in top]
    return header, [[r[0], *[_fmt(v, 4) if isinstance(v, float) else v for v in r[1:]]]
                    for r in rows]


def _series(run: Run) -> list[str]:
    if run.kind == "tune":
        return [s for s in ("baseline", "best") if s in run.layers]
    # the fastest method of each family the study ran, in the order the families first appear
    fastest: dict[str, dict[str, Any]] = {}
    for r in run.rows:
        family = r.get("family", "")
        if family not in fastest or r["speedup"] > fastest[family]["speedup"]:
            fastest[family] = r
    return ["baseline", *[r["method"] for r in fastest.values() if r["method"] in run.layers]]


def findings(run: Run) -> list[str]:
    """Plain sentences the numbers support (study): what changed latency, and where."""
    by = {r["method"]: r for r in run.rows}
    lines = []
    for name, r in by.items():
        verdict = ("faster" if r["speedup"] >= 1.15 else "slower" if r["speedup"] <= 0.8
                   else "no faster, within this machine's noise")
        shape = (f"{r.get('smaller_layers', 0)} layers physically smaller"
                 if r.get("smaller_layers") else "int8 weights, same shapes" if r.get("int8")
                 else f"zeros in {r.get('sparse_layers', 0)} layers, tensors still dense"
                 if r.get("sparse_layers") else "same shapes")
        if r.get("int8") and r.get("smaller_layers"):
            shape += ", int8"
        lines.append(f"- **{name}**: {r['speedup']:.2f}x ({verdict}), top-1 {r['top1']:.2f}% "
                     f"({'above' if r['top1'] >= run.threshold else 'BELOW'} the threshold), "
                     f"MACs {r['macs'] / 1e6:.1f}M, {shape}.")
    base = run.layers.get("baseline", {})
    if base:
        total = sum(base.values()) or 1.0
        top = sorted((k for k in base if k != "other ops"), key=lambda k: -base[k])[:3]
        lines.append("- The baseline's time goes mostly to " + ", ".join(
            f"{k} ({100 * base[k] / total:.0f}%)" for k in top) + ".")
    return lines


def write_report(folder: str | Path, wandb: bool = False,
                 project: str = "edge_tune") -> Path:
    """report.md and PNGs in ``folder`` (a study or tune run); W&B tables and images if asked."""
    run = load_run(folder)
    out = run.folder
    images = {"pareto": plot_pareto(run, out / "pareto.png")}
    series = _series(run)
    if len(series) > 1:
        images["layers"] = plot_layers(run, series, out / "layers.png")
    header, rows = method_table(run)
    lines = [f"# edge_tune {run.kind} report: {out.name}", ""]
    if run.kind == "study":
        images["speedup"] = plot_speedup(run, out / "speedup.png")
        lines += ["Every latency below comes from one benchmark session (baseline and all "
                  "models interleaved; median and p90 of batch-1 inferences), accuracy from "
                  "the deployed model. Verification (stage 0): `reached` = every layer's "
                  "compression is visible in both the ONNX file and the OpenVINO model.", "",
                  *findings(run), ""]
    else:
        values = importance(run)
        images["objective"] = plot_objective(run, out / "objective.png")
        if values:
            images["importance"] = plot_importance(values, out / "importance.png")
        lines += [f"{len(run.rows)} completed trials, {len(run.stopped)} stopped early"
                  + "".join(f"\n- {t['id']} ({format_params(t['params'])}): {t['reason']}"
                            for t in run.stopped) + "\n\n"
                  f"Threshold validation top-1 {run.threshold:.2f}%. "
                  "Parameter importance: Spearman rank correlation of each parameter with the "
                  "objective over completed trials (negative: larger values gave lower, better "
                  "objectives): " + ", ".join(f"{k} {v:+.2f}" for k, v in values.items()), ""]
    lines += ["## Methods" if run.kind == "study" else "## Best trials", "",
              _table(header, rows), ""]
    if len(series) > 1:
        lheader, lrows = layer_table(run, series)
        lines += ["## Where the time goes (per layer, OpenVINO profile)", "",
                  _table(lheader, lrows), ""]
    lines += [f"![{name}]({path.name})" for name, path in images.items()]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    if wandb:
        log_wandb(run, header, rows, images, project)
    return report


def log_wandb(run: Run, header: list[str], rows: list[list[Any]], images: dict[str, Path],
              project: str) -> None:
    """The report's table and images as a W&B run (offline without WANDB_API_KEY)."""
    import wandb

    mode = wandb_mode()
    folder = run.folder / "wandb"
    folder.mkdir(exist_ok=True)
    session = wandb.init(project=project, name=f"{run.kind}-{run.folder.name}",
                         job_type=f"{run.kind}-report", dir=str(folder), mode=mode)
    try:
        data = [[_fmt(v) for v in row] for row in rows]
        table = wandb.Table(columns=list[str | int](header), data=data)
        session.log({"methods": table, **{k: wandb.Image(str(p)) for k, p in images.items()}})
    finally:
        session.finish()


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m edge_tune.report", description=(
        "Write report.md and PNG plots for a study or tune run directory."))
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a study or tune output directory")
    parser.add_argument("--wandb", action="store_true", help="also log the tables and plots "
                        "to W&B (offline without WANDB_API_KEY)")
    args = parser.parse_args(argv)
    if not Path(args.run_dir).is_dir():
        raise UserError(f"RUN_DIR: no such directory {args.run_dir!r}")
    report = write_report(args.run_dir, wandb=args.wandb)
    print(report)
    return 0


if __name__ == "__main__":
    run_cli(main)
