"""One trial on this machine, end to end: baseline -> compress -> fine-tune -> ONNX -> int8 ->
verify -> benchmark, as ``python -m edge_tune.trial`` and ``python -m edge_tune.compress`` run it.

The baseline is measured in the same benchmark session as the compressed model, interleaved,
so ``speedup`` compares two numbers taken side by side. :func:`check_params` and
:func:`check_inputs` are every cheap check before expensive work; the tuner and the study
call them too.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from edge_tune.catalog.data import check_data, load_data, num_classes
from edge_tune.catalog.models import check_model, create_model, model_stages
from edge_tune.catalog.splits import Splits
from edge_tune.compression.baseline import Baseline, check_baseline, prepare_baseline
from edge_tune.compression.channels import probe_settings, resolve_multiple
from edge_tune.compression.deployment import Artifact, Images, arrays, deploy, verdict
from edge_tune.compression.distill import teacher_for
from edge_tune.compression.layers import check_multiple
from edge_tune.compression.plan import build, plan_compression
from edge_tune.compression.recipe import Recipe
from edge_tune.compression.runner import fit_recipe, sparsity_report
from edge_tune.compression.train import set_threads
from edge_tune.config import Config, config_to_dict
from edge_tune.core.console import log_stderr
from edge_tune.edge import bench
from edge_tune.edge.actor import BenchActor, BenchCall, Measurement, model_files
from edge_tune.edge.verify import table
from edge_tune.run.allocating import prepare_allocator, profile_settings
from edge_tune.run.measuring import here
from edge_tune.search.params import Schedule, schedule_from_params

Log = Callable[[str], None]


def check_inputs(config: Config, device_here: bool = True) -> None:
    """Cheap checks of data, device and checkpoint, before any expensive work.

    ``device_here``: the benchmark device is on this machine (not on a cluster's edge node,
    whose actor checks it when it starts).
    """
    check_data(config.data)
    if device_here:
        bench.check_device(config.bench.device)
    check_baseline(config)


def check_params(config: Config, params: dict[str, Any], device_here: bool = True) -> Schedule:
    """Every cheap check before expensive work: the model (built once, unless built in),
    params against its stages, then the inputs; the schedule the params ask for."""
    classes = num_classes(config.data)
    check_model(config.model, classes, config.data.image_size)
    if isinstance(config.prune.channel_multiple, int) and config.prune.channel_multiple > 1:
        check_multiple(create_model(config.model, classes), config.prune.channel_multiple,
                       config.model)
    schedule = schedule_from_params(params, model_stages(config.model),
                                    config.finetune.epochs)
    check_inputs(config, device_here)
    return schedule


def measure(baseline: Artifact, model: Artifact, config: Config) -> BenchCall:
    """Both models benchmarked here, interleaved, by the same code the actor runs."""
    actor = BenchActor(model_files(baseline.deployed), config.bench)
    return actor.benchmark(model_files(model.deployed))


def figures(artifact: Artifact, measured: Measurement) -> dict[str, Any]:
    """A deployed model's accuracy, size and latency figures for JSON results."""
    return {"top1": artifact.top1, "top5": artifact.top5, "precision": artifact.precision,
            "macs": artifact.macs, "params": artifact.params, **measured.summary()}


def record(config: Config, base: Baseline, artifact: Artifact, out: Path,
           compression: dict[str, Any], extra: dict[str, Any],
           started: float | None = None) -> dict[str, Any]:
    """Benchmark against the baseline, write the CSVs, result.json and config.yaml;
    ``seconds`` since ``started`` (perf_counter) when given."""
    log_stderr(f"benchmarking on {config.bench.device}: baseline and model interleaved")
    measured = measure(base.artifact, artifact, config)
    csv_path = bench.write_layers_csv(measured.models["model"].layers, out / "layers.csv")
    bench.write_layers_csv(measured.baseline.layers, out / "baseline_layers.csv")
    result = {
        **figures(artifact, measured.models["model"]), "speedup": measured.speedup(),
        "baseline": {**figures(base.artifact, measured.baseline), **base.info},
        "compression": compression, "verification": table(artifact.verification),
        **extra, "thinned": artifact.thinned, "skipped_layers": artifact.skipped,
        "timings": artifact.timings,
        "onnx": str(artifact.onnx_path), "deployed": str(artifact.deployed),
        "layers_csv": str(csv_path), "output": str(out), "bench": asdict(config.bench),
    }
    if started is not None:
        result["seconds"] = time.perf_counter() - started
    (out / "result.json").write_text(json.dumps(result, indent=2))
    (out / "config.yaml").write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
    return result


def prepare(config: Config, out: Path) -> tuple[Splits, Images, Baseline]:
    """The data, the test images and the baseline (trained or cached) in ``out``."""
    set_threads(config.train_threads)
    log_stderr(f"data: {config.data.name}")
    splits = load_data(config.data)
    test = arrays(splits.test)
    return splits, test, prepare_baseline(config, splits, test, out)


def run_trial(config: Config, params: dict[str, Any], out: Path,
              log: Log = log_stderr) -> dict[str, Any]:
    """Run one trial end to end in ``out``; the result dict that ``edge_tune.trial`` prints."""
    schedule = check_params(config, params)
    started = time.perf_counter()
    splits, test, base = prepare(config, out)
    config, measured = resolve_multiple(
        config, here(probe_settings(config.bench), per_layer=False))
    log(f"compressing: {json.dumps(schedule.params)}")
    allocator = None
    if schedule.latency_target is not None:
        allocator = prepare_allocator(config, base.model, splits, bench.identity(config.bench),
                                      here(profile_settings(config.bench), per_layer=True),
                                      schedule.latency_target, (schedule.int8,),
                                      "params.latency_target")
    plan = plan_compression(schedule, base.model, config, allocator)
    teacher = teacher_for(config.finetune.distill, base.model, splits.num_classes) \
        if schedule.distill else None  # base.model itself is never trained
    artifact = build(copy.deepcopy(base.model), plan, splits, config, out, base.shapes, test,
                     log=log, teacher=teacher)
    plan.write(out / "schedule.yaml")
    compression = verdict(artifact.verification, schedule.prunes_filters,
                          schedule.fine_sparsity > 0)
    extra = {"predicted_ratio": plan.allocation.predicted if plan.allocation else None,
             "allocation": plan.allocation.kept if plan.allocation else None,
             "channel_multiple": config.prune.channel_multiple,
             "channel_jumps": measured.jumps if measured else None,
             "schedule": schedule.params, "finetune_epochs": schedule.finetune_epochs,
             "int8": schedule.int8, "int8_float_layers": artifact.float_layers,
             "distill": asdict(config.finetune.distill)
             if schedule.distill else None, "recipe": str(out / "schedule.yaml")}
    return record(config, base, artifact, out, compression, extra, started)


def run_recipe_trial(config: Config, recipe: Recipe, epochs: int, out: Path,
                     log: Log = log_stderr, distill: bool = False) -> dict[str, Any]:
    """A Distiller recipe run for ``epochs`` on the baseline (distilled from the teacher
    ``finetune.distill`` names when ``distill``), deployed and benchmarked in ``out``; the
    result dict that ``edge_tune.compress`` prints."""
    splits, test, base = prepare(config, out)
    model = copy.deepcopy(base.model)
    teacher = teacher_for(config.finetune.distill, base.model, splits.num_classes) \
        if distill else None
    start = time.perf_counter()
    run = fit_recipe(model, recipe, splits, config, epochs, log, report_top1=True,
                     teacher=teacher)
    artifact = deploy(run.model, run.int8 or False, splits, config, out, base.shapes, test,
                      timings={"recipe_s": time.perf_counter() - start},
                      fake_quantised=run.qat)
    artifact.thinned = run.thinned
    compression = verdict(artifact.verification, removes_structures=any(
        i.spec.removes for i in recipe.instances.values()), zeroes_weights=bool(run.masks))
    int8 = "quantisation-aware (NNCF)" if run.qat else \
        ("post-training (NNCF)" if run.int8 is not None else False)
    extra = {"sparsity": sparsity_report(run.model), "thinning_top1": run.thinning_top1,
             "epochs": epochs, "int8": int8, "int8_options": asdict(run.int8) if run.int8
             else None, "ignored": list(recipe.ignored), "recipe": recipe.source,
             "distill": asdict(config.finetune.distill) if distill else None}
    return record(config, base, artifact, out, compression, extra)
