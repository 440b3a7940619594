"""One compression trial: baseline -> compress -> fine-tune -> ONNX -> int8 -> verify -> benchmark.

``python -m edge_tune.trial --config FILE --params JSON`` prints one JSON object (stdout);
progress goes to stderr. The baseline is measured in the same benchmark session as the
compressed model, interleaved, so ``speedup`` compares two numbers taken side by side.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import Dataset

from edge_tune import bench, prune
from edge_tune.baseline import baseline_model, check_baseline
from edge_tune.config import Config, config_to_dict, load_config
from edge_tune.data import Splits, check_data, load_data, take
from edge_tune.errors import ArgumentParser, UserError, run_cli
from edge_tune.export import count_macs, export_onnx, weight_stats
from edge_tune.models import create_model, model_stages
from edge_tune.output import new_run_dir, stdout_to_stderr
from edge_tune.quantize import quantize
from edge_tune.recipe import Schedule, schedule_from_params
from edge_tune.train import set_threads, topk_accuracy
from edge_tune.verify import LayerCheck, table, verify

Log = Callable[[str], None]


def log_stderr(message: str) -> None:
    print(f"[edge_tune] {message}", file=sys.stderr, flush=True)


def bench_settings(config: Config) -> bench.BenchSettings:
    """The torch-free benchmark settings from the config's ``bench`` section."""
    return bench.BenchSettings(**asdict(config.bench))


def arrays(dataset: Dataset, count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, C, H, W float32) and labels of the first ``count`` items (all if None)."""
    items = take(dataset, count if count is not None else len(dataset))  # type: ignore[arg-type]
    xs, ys = zip(*(items[i] for i in range(len(items))), strict=True)
    return torch.stack(list(xs)).numpy(), np.asarray([int(y) for y in ys])


def plan(config: Config, params: dict[str, Any], device_here: bool = True) -> Schedule:
    """Every cheap check before expensive work: params, data, device, checkpoint.

    ``device_here``: the benchmark device is on this machine (not on a cluster's edge node,
    whose actor checks it when it starts).
    """
    stages = model_stages(create_model(config.model, 10))
    schedule = schedule_from_params(params, stages, config.finetune.epochs)
    check_data(config.data)
    if device_here:
        bench.check_device(config.bench.device)
    check_baseline(config, num_classes=_num_classes_hint(config))
    return schedule


def _num_classes_hint(config: Config) -> int:
    if config.data.name in ("digits", "cifar10"):
        return 10
    root = Path(config.data.root or ".")
    train_dir = root / "train" if (root / "train").is_dir() else root
    return max(2, sum(1 for p in train_dir.iterdir() if p.is_dir()))


def schedule_recipe(schedule: Schedule, model: nn.Module, config: Config) -> dict[str, Any]:
    """The schedule as a Distiller-style recipe for ``model`` (the optimiser interface)."""
    return schedule.to_recipe(prune.filter_ratios(model, schedule), prune.fine_layers(model),
                              config.model, config.data.name)


def compress(model: nn.Module, schedule: Schedule, splits: Splits, config: Config,
             log: Log = log_stderr) -> tuple[dict[str, Any], dict[str, dict[str, int]]]:
    """Run the schedule's recipe on ``model`` in place; timings (s) and what thinning removed.

    Filters are masked by L1 rank and removed (thinning) at epoch 0, BatchNorm statistics are
    re-estimated for the thinner network, then fine-tuning runs with the masks held.
    """
    from edge_tune.compress import fit_recipe
    from edge_tune.distiller import recipe_from_dict

    recipe = recipe_from_dict(schedule_recipe(schedule, model, config))
    prunes = schedule.prunes_filters or schedule.fine_sparsity > 0
    epochs = schedule.finetune_epochs if prunes else 0
    if epochs:
        log(f"fine-tuning {epochs} epochs")
    start = time.perf_counter()
    run = fit_recipe(model, recipe, splits, config, epochs, log)
    return {"compress_s": time.perf_counter() - start}, run.thinned


def deployed_accuracy(onnx_path: Path, test: tuple[np.ndarray, np.ndarray],
                      settings: bench.BenchSettings) -> tuple[float, float]:
    """Top-1/top-5 (percent) of the deployed model as OpenVINO runs it."""
    logits = bench.infer(onnx_path, test[0], settings)
    return topk_accuracy(torch.as_tensor(logits), torch.as_tensor(test[1]))


@dataclass
class Artifact:
    """What the torch side hands to the benchmark side: a deployable model and its facts."""

    onnx_path: Path  # f32 export
    deployed: Path  # what runs on the device: the ONNX file, or int8 OpenVINO IR (.xml)
    top1: float
    top5: float
    macs: int
    params: int
    verification: list[LayerCheck]
    timings: dict[str, float]
    thinned: dict[str, dict[str, int]] = field(default_factory=dict)  # extension -> removed


def build(model: nn.Module, schedule: Schedule, splits: Splits, config: Config, out: Path,
          baseline_shapes: dict[str, tuple[int, ...]], test: tuple[np.ndarray, np.ndarray],
          name: str = "model", log: Log = log_stderr) -> Artifact:
    """Compress (in place), export, quantise and verify ``model``; accuracy as deployed."""
    timings, thinned = compress(model, schedule, splits, config, log)
    artifact = deploy(model, schedule.int8, splits, config, out, baseline_shapes, test, name,
                      timings)
    artifact.thinned = thinned
    return artifact


def deploy(model: nn.Module, int8: bool, splits: Splits, config: Config, out: Path,
           baseline_shapes: dict[str, tuple[int, ...]], test: tuple[np.ndarray, np.ndarray],
           name: str = "model", timings: dict[str, Any] | None = None) -> Artifact:
    """Export ``model`` (int8 when asked), verify it and measure its accuracy as deployed."""
    timings = dict(timings or {})
    example = torch.zeros(1, 3, splits.image_size, splits.image_size)
    macs, n_params = count_macs(model, example)
    start = time.perf_counter()
    onnx_path = export_onnx(model.cpu(), example, out / f"{name}.onnx")
    timings["export_s"] = time.perf_counter() - start
    deployed = onnx_path
    if int8:
        start = time.perf_counter()
        calibration, _ = arrays(splits.train, config.quantize.calibration_images)
        deployed = quantize(onnx_path, out / f"{name}_int8.xml", calibration)
        timings["quantize_s"] = time.perf_counter() - start
    start = time.perf_counter()
    checks = verify(weight_stats(model), baseline_shapes, onnx_path, deployed)
    top1, top5 = deployed_accuracy(deployed, test, bench_settings(config))
    timings["verify_eval_s"] = time.perf_counter() - start
    return Artifact(onnx_path, deployed, top1, top5, macs, n_params, checks, timings)


def verdict(checks: list[LayerCheck], removes_structures: bool,
            zeroes_weights: bool) -> dict[str, Any]:
    """Did the compression reach the deployed model, and is the model physically smaller?

    ``removes_structures`` / ``zeroes_weights``: whether the compression asked for either, so the
    notes can say when the deployed model shows none of it.
    """
    unreached = [c.layer for c in checks if not c.reached]
    smaller = [c.layer for c in checks if c.openvino_shape is not None
               and np.prod(c.openvino_shape) < np.prod(c.baseline_shape)]
    sparse = [c.layer for c in checks if (c.openvino_sparsity or 0) >= 1.0]
    notes = []
    if unreached:
        notes.append(f"compression did NOT reach the deployed model in {len(unreached)} "
                     f"layer(s): {', '.join(unreached[:5])}")
    if removes_structures and not smaller:
        notes.append("structured pruning removed nothing from the deployed model: no filter "
                     "or channel was zero everywhere it is used")
    if smaller:
        notes.append(f"{len(smaller)} layer(s) physically smaller in the deployed model: "
                     f"{', '.join(smaller[:5])}{' ...' if len(smaller) > 5 else ''}")
    if zeroes_weights and sparse and not smaller:
        notes.append("zeros are present in ONNX and OpenVINO but tensors stay dense: the same "
                     "dense kernels run, so fine-grained sparsity alone does not cut latency")
    return {"reached": not unreached, "unreached_layers": unreached,
            "smaller_layers": len(smaller), "sparse_layers": len(sparse), "notes": notes}


@dataclass
class Baseline:
    """The trained, uncompressed model, exported and evaluated as deployed."""

    model: nn.Module
    info: dict[str, Any]  # source, torch accuracy, training seconds, cached or not
    shapes: dict[str, tuple[int, ...]]  # weight name -> shape, for verification
    artifact: Artifact


def prepare_baseline(config: Config, splits: Splits, test: tuple[np.ndarray, np.ndarray],
                     out: Path, log: Log = log_stderr) -> Baseline:
    """Train (or load from cache / checkpoint) the baseline, export it and measure its accuracy."""
    model, info = baseline_model(config, splits, log)
    out.mkdir(parents=True, exist_ok=True)
    shapes = {k: v[0] for k, v in weight_stats(model).items()}
    log("baseline: export and accuracy as deployed")
    artifact = build(copy.deepcopy(model), Schedule(), splits, config, out, shapes, test,
                     name="baseline", log=log)
    return Baseline(model, info, shapes, artifact)


def write_recipe(schedule: Schedule, model: nn.Module, config: Config, path: Path) -> Path:
    """The schedule as a Distiller-style YAML recipe at ``path``."""
    recipe = schedule_recipe(schedule, model, config)
    epochs = schedule.finetune_epochs
    header = (f"# edge_tune trial {json.dumps(schedule.params)}: pruning and thinning at epoch "
              f"0, then {epochs} fine-tuning epochs. Rerun:\n# python -m edge_tune.compress "
              f"--recipe {path.name} --config config.yaml --recipe-epochs {max(1, epochs)} "
              f"--epochs {epochs}\n")
    path.write_text(header + yaml.safe_dump(recipe, sort_keys=False))
    return path


def run_trial(config: Config, params: dict[str, Any], out: Path,
              log: Log = log_stderr) -> dict[str, Any]:
    """Run one trial end to end in ``out``; the result dict that ``edge_tune.trial`` prints."""
    schedule = plan(config, params)
    set_threads(config.train_threads)
    started = time.perf_counter()
    log(f"data: {config.data.name}")
    splits = load_data(config.data)
    test = arrays(splits.test)
    base = prepare_baseline(config, splits, test, out, log)
    log(f"compressing: {json.dumps(schedule.params)}")
    artifact = build(copy.deepcopy(base.model), schedule, splits, config, out, base.shapes,
                     test, log=log)
    write_recipe(schedule, base.model, config, out / "schedule.yaml")
    log(f"benchmarking on {config.bench.device}: baseline and model interleaved")
    measured = bench.benchmark_models({"baseline": base.artifact.deployed,
                                       "model": artifact.deployed}, bench_settings(config))
    csv_path = bench.write_layers_csv(measured["model"].layers, out / "layers.csv")
    bench.write_layers_csv(measured["baseline"].layers, out / "baseline_layers.csv")
    result = {
        **_figures(artifact, measured["model"]),
        "speedup": measured["baseline"].latency_ms / measured["model"].latency_ms,
        "baseline": {**_figures(base.artifact, measured["baseline"]), **base.info},
        "compression": verdict(artifact.verification, schedule.prunes_filters,
                               schedule.fine_sparsity > 0),
        "verification": table(artifact.verification),
        "schedule": schedule.params, "finetune_epochs": schedule.finetune_epochs,
        "int8": schedule.int8, "thinned": artifact.thinned, "timings": artifact.timings,
        "onnx": str(artifact.onnx_path), "deployed": str(artifact.deployed),
        "layers_csv": str(csv_path),
        "recipe": str(out / "schedule.yaml"), "output": str(out),
        "bench": asdict(bench_settings(config)), "seconds": time.perf_counter() - started,
    }
    (out / "result.json").write_text(json.dumps(result, indent=2))
    (out / "config.yaml").write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
    return result


def _figures(artifact: Artifact, measured: bench.BenchResult) -> dict[str, Any]:
    return {"top1": artifact.top1, "top5": artifact.top5, **measured.summary(),
            "params": artifact.params, "macs": artifact.macs}


def parse_params(text: str) -> dict[str, Any]:
    """``--params`` JSON (or ``@file.json``) as a dict."""
    if text.startswith("@"):
        path = Path(text[1:])
        if not path.is_file():
            raise UserError(f"--params: no such file {text[1:]!r}")
        text = path.read_text()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"--params: invalid JSON ({err.msg} at char {err.pos}): {text!r}") from None
    if not isinstance(value, dict):
        raise UserError(f"--params: expected a JSON object like '{{\"filter_ratio\": 0.5}}', "
                        f"got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m edge_tune.trial", description=(
        "Compress a trained CNN with the given parameters, fine-tune, export ONNX, verify the "
        "compression reached ONNX and OpenVINO, and benchmark it against the baseline."))
    parser.add_argument("--config", help="YAML config (default: the embedded ResNet-20 on digits)")
    parser.add_argument("--params", default="{}", help=(
        "JSON object of compression parameters, e.g. '{\"filter_ratio\": 0.5, \"int8\": 1}'; "
        "names: filter_ratio[_layerN], fine_sparsity, int8, finetune_epochs"))
    parser.add_argument("--output", help="new directory for the ONNX files, CSVs and result.json "
                        "(default: runs/trial-<time>; an existing non-empty one is refused)")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    params = parse_params(args.params)
    plan(config, params)
    out = new_run_dir(args.output, "trial")
    with stdout_to_stderr():
        result = run_trial(config, params, out)
    print(json.dumps(result, indent=2))
    return 0


def cli() -> None:
    """Console entry point."""
    run_cli(main)


if __name__ == "__main__":
    cli()
