"""One compression trial: baseline -> compress -> fine-tune -> ONNX -> int8 -> verify -> benchmark.

``python -m edge_tune.trial --config FILE --params JSON`` prints one JSON object (stdout);
progress goes to stderr. The baseline is measured in the same benchmark session as the
compressed model, interleaved, so ``speedup`` compares two numbers taken side by side. The
stage functions here (:func:`plan`, :func:`build`, :func:`measure`) are what the tuner's and
the study's Ray workers chain too.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from edge_tune import bench
from edge_tune.actor import BenchActor, BenchCall, model_files
from edge_tune.baseline import Baseline, check_baseline, prepare_baseline
from edge_tune.config import Config, config_to_dict, load_config
from edge_tune.data import Splits, check_data, load_data, num_classes
from edge_tune.deploy import Artifact, Images, arrays, deploy, figures, verdict
from edge_tune.distiller import Recipe, recipe_from_dict
from edge_tune.errors import ArgumentParser, UserError, run_cli
from edge_tune.models import check_model, create_model, model_stages
from edge_tune.output import log_stderr, new_run_dir, stdout_to_stderr
from edge_tune.prune import conv_layers, filter_ratios, fine_layers, stage_of
from edge_tune.recipe import Schedule, schedule_from_params
from edge_tune.scheduler import EpochHook, RecipeRun, fit_recipe, sparsity_report
from edge_tune.train import set_threads
from edge_tune.verify import table

Log = Callable[[str], None]


@dataclass(frozen=True)
class Context:
    """What every trial (tune) or method (study) needs from the driver, shipped once through
    Ray's object store: the config and the baseline it starts from."""

    config: Config
    base_state: dict[str, torch.Tensor]  # baseline state_dict (CPU tensors)
    base_shapes: dict[str, tuple[int, ...]]  # weight name -> shape, for verification
    baseline_top1: float  # percent, as deployed (validation of trials is against it)
    threshold_top1: float  # percent a trial must reach to be feasible
    actors: tuple[str, ...] = ()  # benchmark actor names, one per ncs node
    bench_baseline: tuple[Any, ...] = ()  # (ObjectRef of the baseline's files,) for the actors

    @classmethod
    def of(cls, config: Config, base: Baseline, threshold_top1: float,
           actors: tuple[str, ...] = (), bench_baseline: tuple[Any, ...] = ()) -> Context:
        return cls(config, base.state(), base.shapes, base.artifact.top1, threshold_top1,
                   actors, bench_baseline)

    def base_model(self, num_classes: int) -> nn.Module:
        """A fresh copy of the baseline, on the GPU when the trial asked for one and its node
        has one (the one Ray gave it)."""
        model = create_model(self.config.model, num_classes)
        model.load_state_dict(self.base_state)
        if self.config.tune.trial_gpus > 0 and torch.cuda.is_available():
            model.cuda()
        return model


def check_inputs(config: Config, device_here: bool = True) -> None:
    """Cheap checks of data, device and checkpoint, before any expensive work.

    ``device_here``: the benchmark device is on this machine (not on a cluster's edge node,
    whose actor checks it when it starts).
    """
    check_data(config.data)
    if device_here:
        bench.check_device(config.bench.device)
    check_baseline(config)


def plan(config: Config, params: dict[str, Any], device_here: bool = True) -> Schedule:
    """Every cheap check before expensive work: the model (built once, unless built in),
    params against its stages, then the inputs."""
    check_model(config.model, num_classes(config.data), config.data.image_size)
    schedule = schedule_from_params(params, model_stages(config.model),
                                    config.finetune.epochs)
    check_inputs(config, device_here)
    return schedule


def schedule_recipe(schedule: Schedule, model: nn.Module, config: Config) -> dict[str, Any]:
    """The schedule as a Distiller-style recipe for ``model`` (the optimiser interface)."""
    stages = model_stages(config.model)
    return schedule.to_recipe(filter_ratios(model, stages, schedule), fine_layers(model),
                              config.model, config.data.name)


def compress(model: nn.Module, schedule: Schedule, splits: Splits, config: Config,
             log: Log = log_stderr, after_epoch: EpochHook | None = None,
             finetune: bool = True) -> RecipeRun:
    """Run the schedule's recipe on ``model`` in place.

    Filters are masked by L1 rank and removed (thinning) at epoch 0, BatchNorm statistics are
    re-estimated for the thinner network, then fine-tuning runs with the masks held.
    """
    recipe = recipe_from_dict(schedule_recipe(schedule, model, config))
    prunes = schedule.prunes_filters or schedule.fine_sparsity > 0
    epochs = schedule.finetune_epochs if prunes and finetune else 0
    if epochs:
        log(f"fine-tuning {epochs} epochs")
    return fit_recipe(model, recipe, splits, config, epochs, log, after_epoch=after_epoch)


def build(model: nn.Module, schedule: Schedule, splits: Splits, config: Config, out: Path,
          baseline_shapes: dict[str, tuple[int, ...]], test: Images, name: str = "model",
          log: Log = log_stderr, after_epoch: EpochHook | None = None) -> Artifact:
    """Compress (in place), export, quantise and verify ``model``; accuracy as deployed."""
    start = time.perf_counter()
    run = compress(model, schedule, splits, config, log, after_epoch)
    artifact = deploy(model, schedule.int8, splits, config, out, baseline_shapes, test, name,
                      {"compress_s": time.perf_counter() - start})
    artifact.thinned = run.thinned
    artifact.skipped = skipped_layers(model, baseline_shapes, schedule, config, run.skipped)
    return artifact


def skipped_layers(model: nn.Module, baseline_shapes: dict[str, tuple[int, ...]],
                   schedule: Schedule, config: Config, why: dict[str, str]) -> dict[str, str]:
    """Convs the schedule asked to lose filters that kept them all, and why (left whole)."""
    wanted = filter_ratios(model, model_stages(config.model), schedule)
    modules = dict(model.named_modules())
    return {name: why.get(name, "its filters are tied to a layer that keeps them")
            for name, ratio in wanted.items()
            if round(ratio * baseline_shapes[f"{name}.weight"][0]) > 0
            and modules[name].weight.shape[0] == baseline_shapes[f"{name}.weight"][0]}


def measure(baseline: Artifact, model: Artifact, config: Config) -> BenchCall:
    """Both models benchmarked here, interleaved, by the same code the actor runs."""
    actor = BenchActor(model_files(baseline.deployed), config.bench)
    return actor.benchmark(model_files(model.deployed))


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


def _record(config: Config, base: Baseline, artifact: Artifact, out: Path,
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


def _start(config: Config, out: Path) -> tuple[Splits, Images, Baseline]:
    set_threads(config.train_threads)
    log_stderr(f"data: {config.data.name}")
    splits = load_data(config.data)
    test = arrays(splits.test)
    return splits, test, prepare_baseline(config, splits, test, out)


def run_trial(config: Config, params: dict[str, Any], out: Path,
              log: Log = log_stderr) -> dict[str, Any]:
    """Run one trial end to end in ``out``; the result dict that ``edge_tune.trial`` prints."""
    schedule = plan(config, params)
    started = time.perf_counter()
    splits, test, base = _start(config, out)
    log(f"compressing: {json.dumps(schedule.params)}")
    artifact = build(copy.deepcopy(base.model), schedule, splits, config, out, base.shapes,
                     test, log=log)
    write_recipe(schedule, base.model, config, out / "schedule.yaml")
    compression = verdict(artifact.verification, schedule.prunes_filters,
                          schedule.fine_sparsity > 0)
    extra = {"schedule": schedule.params, "finetune_epochs": schedule.finetune_epochs,
             "int8": schedule.int8, "recipe": str(out / "schedule.yaml")}
    return _record(config, base, artifact, out, compression, extra, started)


def run_recipe_trial(config: Config, recipe: Recipe, epochs: int, out: Path,
                     log: Log = log_stderr) -> dict[str, Any]:
    """A Distiller recipe run for ``epochs`` on the baseline, deployed and benchmarked in
    ``out``; the result dict that ``edge_tune.compress`` prints."""
    splits, test, base = _start(config, out)
    model = copy.deepcopy(base.model)
    start = time.perf_counter()
    run = fit_recipe(model, recipe, splits, config, epochs, log, report_top1=True)
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
             else None, "ignored": list(recipe.ignored), "recipe": recipe.source}
    return _record(config, base, artifact, out, compression, extra)


def print_stages(config: Config) -> None:
    """Each stage of the configured model with its conv count (stdout)."""
    model = create_model(config.model, num_classes(config.data))
    stages = model_stages(config.model)
    convs = conv_layers(model)
    for stage in stages:
        print(f"{stage}\t{sum(stage_of(c, stages) == stage for c in convs)} convs")
    if not stages:
        print(f"{config.model} has no stages: use filter_ratio for all {len(convs)} convs")


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
        "names: filter_ratio, filter_ratio_<stage>, fine_sparsity, int8, finetune_epochs"))
    parser.add_argument("--stages", action="store_true", help="print the configured model's "
                        "stages (for filter_ratio_<stage>) and the convs in each, then exit")
    parser.add_argument("--output", help="new directory for the ONNX files, CSVs and result.json "
                        "(default: runs/trial-<time>; an existing non-empty one is refused)")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    if args.stages:
        print_stages(config)
        return 0
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
