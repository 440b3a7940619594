"""Reports: a study or a tune run turned into ``report.md`` with tables and PNGs (latency vs
top-1 with the Pareto front and the threshold, per-layer latency by the model's own layer
names, speed-up per method for a study, objective over trials and each parameter's Spearman
rank correlation with the objective for a tune run); with W&B on, the same tables and images
are logged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge_tune.core.environment import wandb_folder, wandb_mode
from edge_tune.run.plots import (
    TOP_LAYERS,
    plot_importance,
    plot_layers,
    plot_objective,
    plot_pareto,
    plot_speedup,
)
from edge_tune.run.runs import Point, Run, load_run
from edge_tune.search.params import format_params


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman rank correlation (ranks by order; 0 when a side is constant)."""
    rx = np.argsort(np.argsort(np.asarray(x))).astype(float)
    ry = np.argsort(np.argsort(np.asarray(y))).astype(float)
    if len(x) < 3 or rx.std() == 0 or ry.std() == 0 or len(set(x)) < 2:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])


def importance(run: Run) -> dict[str, float]:
    """Spearman rank correlation of each searched parameter with the objective."""
    objective = [r.objective for r in run.points]
    return {p: spearman([float(r.config.get(p, 0.0)) for r in run.points], objective)
            for p in run.params}


def _fmt(value: Any, digits: int = 2) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _or_dash(value: Any) -> Any:
    return "-" if value is None else value


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def method_table(run: Run) -> tuple[list[str], list[list[Any]]]:
    top1 = "validation top-1 %" if run.kind == "tune" else "top-1 %"
    header = ["method", top1, "median ms", "p90 ms", "speed-up", "MACs (M)", "params (k)",
              "reached ONNX+OV", "smaller layers", "sparse layers"]
    b = run.baseline
    rows = [["baseline", b.top1, b.latency_ms or "-", _or_dash(b.latency_p90_ms),
             1.0, b.macs / 1e6, b.params / 1e3, "-", "-", "-"]]
    for r in (sorted(run.points, key=lambda r: r.objective)[:10] if run.kind == "tune"
              else run.points):
        rows.append([r.name, r.top1, r.latency_ms, r.latency_p90_ms, r.speedup,
                     r.macs / 1e6, r.params / 1e3, "yes" if r.reached else "NO",
                     _or_dash(r.smaller_layers), _or_dash(r.sparse_layers)])
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
    fastest: dict[str, Point] = {}
    for r in run.points:
        if r.family not in fastest or r.speedup > fastest[r.family].speedup:
            fastest[r.family] = r
    return ["baseline", *[r.name for r in fastest.values() if r.name in run.layers]]


def findings(run: Run) -> list[str]:
    """Plain sentences the numbers support (study): what changed latency, and where."""
    by = {r.name: r for r in run.points}
    lines = []
    for name, r in by.items():
        verdict = ("faster" if r.speedup >= 1.15 else "slower" if r.speedup <= 0.8
                   else "no faster, within this machine's noise")
        shape = (f"{r.smaller_layers} layers physically smaller"
                 if r.smaller_layers else "int8 weights, same shapes" if r.int8
                 else f"zeros in {r.sparse_layers} layers, tensors still dense"
                 if r.sparse_layers else "same shapes")
        if r.int8 and r.smaller_layers:
            shape += ", int8"
        lines.append(f"- **{name}**: {r.speedup:.2f}x ({verdict}), top-1 {r.top1:.2f}% "
                     f"({'above' if r.top1 >= run.threshold else 'BELOW'} the threshold), "
                     f"MACs {r.macs / 1e6:.1f}M, {shape}.")
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
        lines += [f"{len(run.points)} completed trials, {len(run.stopped)} stopped early"
                  + "".join(f"\n- {t.id} ({format_params(t.params)}): {t.reason}"
                            for t in run.stopped) + "\n\n"
                  f"Threshold validation top-1 {run.threshold:.2f}%. "
                  "Parameter importance: Spearman rank correlation of each parameter with the "
                  "objective over completed trials (negative: larger values gave lower, better "
                  "objectives): " + ", ".join(f"{k} {v:+.2f}" for k, v in values.items()), "",
                  *run.notes, ""]
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

    session = wandb.init(project=project, name=f"{run.kind}-{run.folder.name}",
                         job_type=f"{run.kind}-report", dir=str(wandb_folder(run.folder)),
                         mode=wandb_mode())
    try:
        data = [[_fmt(v) for v in row] for row in rows]
        table = wandb.Table(columns=list[str | int](header), data=data)
        session.log({"methods": table, **{k: wandb.Image(str(p)) for k, p in images.items()}})
    finally:
        session.finish()


