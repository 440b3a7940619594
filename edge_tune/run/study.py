"""The study: which compression makes the edge device faster, and where.

``python -m edge_tune.study [--config FILE] --output DIR`` runs fixed stages on the trial and
actor machinery (compression as Ray tasks with the trials' resources, benchmarks on the
``ncs`` actor), so it scales out the same way as the tuner:

1. each method alone at a preset strength (fine-grained magnitude, AGP, filter removal,
   channel removal, SSL, int8), each a Distiller recipe, verified layer by layer in torch,
   ONNX and OpenVINO (stage 0 of the report: did the compression reach the deployed model?);
2. the best of each family composed (best structure + int8, and best sparsity + best
   structure + int8; "best" = fastest above the accuracy threshold in a preliminary session);
3. one benchmark session with the baseline and every model, interleaved, per-layer profiles.

Writes ``DIR/study.json`` (one row per method), ``DIR/layers.csv`` (per-layer ms per method,
named by the model's own layers), ``DIR/methods/<method>/`` (recipe, models) and the report
(``report.md`` + PNGs, see :mod:`edge_tune.report`).
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import torch
import yaml

from edge_tune.catalog.data import load_data
from edge_tune.compression.baseline import Baseline, prepare_baseline
from edge_tune.compression.deployment import arrays, deploy, verdict
from edge_tune.compression.layers import conv_layers, fine_layers
from edge_tune.compression.methods import METHODS, Layers, RawRecipe, merge
from edge_tune.compression.recipe import recipe_from_dict
from edge_tune.compression.runner import fit_recipe
from edge_tune.compression.thinning import channel_prunable
from edge_tune.compression.train import set_threads
from edge_tune.config import Config, config_to_dict
from edge_tune.core.console import StageProgress, log_stderr
from edge_tune.edge.actor import BenchCall, model_files
from edge_tune.edge.verify import layer_of, node_layers, table
from edge_tune.run.baseline_task import train_on_gpu_node
from edge_tune.run.cluster import start_actors, trial_request
from edge_tune.run.context import TrialContext
from edge_tune.run.report import write_report


def compress_method(name: str, recipe: RawRecipe, epochs: int, ctx: TrialContext) -> dict[str, Any]:
    """One method on a copy of the baseline, in a Ray worker: recipe, export, verify, accuracy.

    Returns figures and the deployed model's bytes (the benchmark side needs no shared disk).
    """
    config = ctx.config
    set_threads(config.train_threads or max(1, int(config.tune.trial_cpus)))
    started = time.time()
    splits = load_data(config.data)
    model = ctx.base_model(splits.num_classes)
    run = fit_recipe(model, recipe_from_dict(recipe, name), splits, config, epochs,
                     log=lambda _: None, report_top1=True)
    out = Path(tempfile.mkdtemp(prefix="edge_tune_study-"))
    artifact = deploy(run.model, run.int8 or False, splits, config, out, ctx.base_shapes,
                      arrays(splits.test), fake_quantised=run.qat)
    compression = verdict(artifact.verification,
                          removes_structures="extensions" in recipe,
                          zeroes_weights="pruners" in recipe or "regularizers" in recipe)
    result = {"method": name, "top1": artifact.top1, "top5": artifact.top5,
              "macs": artifact.macs, "params": artifact.params, "int8": run.int8 is not None,
              "compression": compression, "verification": table(artifact.verification),
              "thinned": run.thinned, "thinning_top1": run.thinning_top1,
              "files": model_files(artifact.deployed), "onnx": artifact.onnx_path.read_bytes(),
              "seconds": time.time() - started}
    shutil.rmtree(out, ignore_errors=True)
    return result


def run_stage(stage: str, recipes: dict[str, tuple[RawRecipe, int]], ctx: Any,
              config: Config) -> dict[str, dict[str, Any]]:
    """Compress every method as a Ray task with the trials' resources; results by method."""
    request = trial_request(config)  # resolved: CPU is always there
    task = ray.remote(compress_method).options(num_cpus=request["CPU"],
                                               num_gpus=request.get("GPU", 0),
                                               memory=request.get("memory"))
    pending = {task.remote(name, recipe, epochs, ctx): name
               for name, (recipe, epochs) in recipes.items()}
    progress = StageProgress(stage, len(pending))
    log_stderr(f"{stage}: {', '.join(recipes)}")
    results = {}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        result = ray.get(ready[0])
        results[pending.pop(ready[0])] = result
        progress.step(f"{result['method']}: top-1 {result['top1']:.2f}% in "
                      f"{result['seconds']:.0f} s")
    return {name: results[name] for name in recipes}  # in the stage's own order


def best_of(family: str, methods: dict[str, dict[str, Any]], latency: dict[str, float],
            threshold: float) -> str | None:
    """The fastest method of ``family`` at or above the accuracy threshold (None if none)."""
    fit = [n for n, r in methods.items() if n in METHODS and METHODS[n].family == family
           and r["top1"] >= threshold]
    return min(fit, key=lambda n: latency[n]) if fit else None


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def run_methods(config: Config, out: Path, wandb: bool) -> dict[str, Any]:
    """All stages into ``out`` on the connected Ray; returns what study.json holds."""
    started = time.time()
    set_threads(config.train_threads)
    splits = load_data(config.data)
    train_on_gpu_node(config)  # trials ask for GPUs and the cluster has one: train there
    base = prepare_baseline(config, splits, arrays(splits.test), out / "baseline")
    threshold = config.tune.threshold.value(base.artifact.top1)
    example = torch.zeros(1, 3, splits.image_size, splits.image_size)
    layers = Layers([f"{n}.weight" for n in conv_layers(base.model)],
                    [f"{n}.weight" for n in fine_layers(base.model)],
                    channel_prunable(base.model, example))
    pinned: list[Any] = []  # [the baseline's files]: every call passes it, held to the end
    actor = start_actors(base.artifact.deployed, config.bench, pinned)[0]
    ctx = ray.put(TrialContext.of(config, base, threshold))
    epochs = config.finetune.epochs
    recipes = {name: (m.recipe(layers, epochs), epochs if m.trains else 0)
               for name, m in METHODS.items()}
    results = run_stage("stage 1/3 methods alone", recipes, ctx, config)

    log_stderr("stage 2/3: preliminary benchmark session to pick the best of each family")
    prelim: BenchCall = ray.get(actor.benchmark_set.remote(
        {n: r["files"] for n, r in results.items()}, per_layer=False, baseline=pinned))
    latency = {n: m.latency_ms for n, m in prelim.models.items()}
    best = {family: best_of(family, results, latency, threshold)
            for family in ("sparsity", "structure")}
    log_stderr(f"best above {threshold:.2f}% top-1: {best}")
    composed: dict[str, tuple[RawRecipe, int]] = {}
    if best["structure"]:
        name = f"{best['structure']} + int8"
        composed[name] = (merge(recipes[best["structure"]][0], recipes["int8"][0]), epochs)
        if best["sparsity"]:
            composed[f"{best['sparsity']} + {name}"] = (merge(
                recipes[best["structure"]][0], recipes[best["sparsity"]][0],
                recipes["int8"][0]), epochs)
    if composed:
        results.update(run_stage("stage 2/3 best of each family composed", composed, ctx,
                                 config))
        recipes.update(composed)

    log_stderr(f"stage 3/3: one benchmark session, baseline + {len(results)} models, "
               f"per-layer profiles")
    final = ray.get(actor.benchmark_set.remote({n: r["files"] for n, r in results.items()},
                                               baseline=pinned))
    study = _write_results(out, base, results, recipes, final, threshold, best, config)
    study["seconds"] = time.time() - started
    (out / "study.json").write_text(json.dumps(study, indent=2))
    write_report(out, wandb=wandb, project=config.tune.wandb_project)
    return study


def _write_results(out: Path, base: Baseline, results: dict[str, dict[str, Any]],
                   recipes: dict[str, tuple[RawRecipe, int]], final: BenchCall,
                   threshold: float, best: dict[str, str | None],
                   config: Config) -> dict[str, Any]:
    """methods/<slug>/ files, layers.csv and the study.json dict."""
    base_ms = final.baseline.latency_ms
    rows = [{"method": "baseline", "family": "baseline", "top1": base.artifact.top1,
             "top5": base.artifact.top5, **final.baseline.summary(), "speedup": 1.0,
             "macs": base.artifact.macs, "params": base.artifact.params,
             "reached": all(c.reached for c in base.artifact.verification)}]
    per_layer = [("baseline", final.baseline.layers, node_layers(base.artifact.onnx_path))]
    for name, r in results.items():
        folder = out / "methods" / slug(name)
        folder.mkdir(parents=True)
        recipe, epochs = recipes[name]
        (folder / "recipe.yaml").write_text(
            f"# edge_tune study method {name!r}: {epochs} fine-tuning epochs\n"
            + yaml.safe_dump(recipe, sort_keys=False))
        (folder / "model.onnx").write_bytes(r["onnx"])
        for file, content in r["files"].items():
            (folder / file).write_bytes(content)
        measured = final.models[name]
        family = METHODS[name].family if name in METHODS else "composed"
        rows.append({"method": name, "family": family, "top1": r["top1"], "top5": r["top5"],
                     **measured.summary(), "speedup": base_ms / measured.latency_ms,
                     "macs": r["macs"], "params": r["params"], "int8": r["int8"],
                     "reached": r["compression"]["reached"],
                     "smaller_layers": r["compression"]["smaller_layers"],
                     "sparse_layers": r["compression"]["sparse_layers"],
                     "notes": r["compression"]["notes"], "thinned": r["thinned"],
                     "thinning_top1": r["thinning_top1"], "verification": r["verification"],
                     "epochs": epochs, "compress_s": r["seconds"],
                     "files": f"methods/{slug(name)}"})
        per_layer.append((name, measured.layers, node_layers(folder / "model.onnx")))
    with (out / "layers.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "layer", "type", "ms"])
        for name, rows_, names in per_layer:
            for layer in rows_:
                writer.writerow([name, layer_of(layer.node, names), layer.type,
                                 f"{layer.ms:.6f}"])
    return {"kind": "study", "rows": rows, "threshold_top1": threshold,
            "best_per_family": best, "bench_call": final.call,
            "config": config_to_dict(config)}


