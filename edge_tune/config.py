"""Configuration: frozen dataclasses, validated once at load with YAML-path errors.

``load_config(None)`` gives the embedded default (ResNet-20 on digits); a user file overrides
any subset of its keys. Unknown keys and out-of-range values are a :class:`UserError` naming the
key path, e.g. ``finetune.epochs: expected an integer >= 0, got -1``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edge_tune.errors import UserError, unknown


@dataclass(frozen=True)
class DataConfig:
    """Which data set, where it lives and how it is split and batched."""

    name: str = "digits"
    root: str | None = None  # directory for cifar10 / imagefolder
    image_size: int = 32  # px, square input of the model
    batch_size: int = 64
    val_fraction: float = 0.15  # of the data the set ships for training
    # digits only (it ships no test split): 25% = 450 images, one image = 0.22 points of top-1;
    # at 15% (270) one image was 0.37 points and a "1 point" threshold meant 2 images.
    test_fraction: float = 0.25
    seed: int = 0  # split seed, fixed so every trial sees the same split
    download: bool = False  # cifar10: fetch the archive into ``root`` if it is missing


@dataclass(frozen=True)
class BaselineConfig:
    """The trained model that compression starts from."""

    epochs: int = 20  # digits: 10 epochs left validation top-1 at 98.1%, 20 reached 99.3-99.6%
    lr: float = 0.1  # SGD, cosine schedule, momentum 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    checkpoint: str | None = None  # a state_dict of the configured model; skips training


@dataclass(frozen=True)
class FinetuneConfig:
    """Training after compression (fine-tuning) and the BatchNorm re-estimation before it."""

    epochs: int = 8  # 50% of ResNet-20's filters: 5 epochs lost 1.1-1.3 points, 8 kept top-1
    lr: float = 0.1  # as high as training's: a pruned net re-learns, 0.02 lost 1-2 points
    weight_decay: float = 5e-4
    bn_recalibration_images: int = 1024  # train-mode forward passes after structural pruning


@dataclass(frozen=True)
class QuantizeConfig:
    """NNCF post-training int8 quantisation."""

    calibration_images: int = 300  # from the training split


@dataclass(frozen=True)
class BenchConfig:
    """OpenVINO measurement settings, fixed so numbers compare across models."""

    device: str = "CPU"  # any OpenVINO device string: CPU, GPU, NPU, MYRIAD (<= 2022.3)
    threads: int = 1  # INFERENCE_NUM_THREADS
    precision: str = "f32"  # INFERENCE_PRECISION_HINT where the device supports it
    warmup: int = 50  # inferences before timing
    iterations: int = 300  # timed batch-1 synchronous inferences per model
    rounds: int = 5  # baseline and candidate alternate in this many blocks
    fps_seconds: float = 0.25  # s of asynchronous inference for throughput
    max_ratio_cv: float = 0.05  # a session whose per-round latency ratios vary more repeats
    max_sessions: int = 3  # at most this many sessions per benchmark call (the calmest wins)


@dataclass(frozen=True)
class ThresholdConfig:
    """Minimum accuracy a trial must keep: absolute top-1 or a maximum drop (percent)."""

    min_top1: float | None = None  # percent; when set, max_drop is ignored
    max_drop: float = 1.0  # percentage points below the baseline's top-1


@dataclass(frozen=True)
class TuneConfig:
    """The search: space, budget, concurrency, resources per trial, W&B."""

    search_space: str = "default"  # a name in search_spaces/ or a YAML path
    num_samples: int = 20
    max_concurrent: int = 1  # trials at once (each also waits its turn at the benchmark actor)
    seed: int = 0
    random_steps: int = 6  # BayesOptSearch's random exploration before the model guides
    points_to_evaluate: list[dict[str, float]] = field(default_factory=list)
    trial_cpus: float = 0.0  # 0 = this machine's cores / max_concurrent
    trial_gpus: float = 0.0  # > 0: trials train on a GPU when their node has one
    max_failures: int = 0  # retries of a failed trial
    threshold: ThresholdConfig = field(default_factory=ThresholdConfig)
    wandb_project: str = "edge_tune"


@dataclass(frozen=True)
class Config:
    """One edge_tune job: model, data, baseline, compression and measurement settings."""

    model: str = "resnet20_cifar"
    data: DataConfig = field(default_factory=DataConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    train_threads: int = 0  # torch threads for training; 0 = all cores
    cache_dir: str | None = None  # baseline cache; default $EDGE_TUNE_CACHE or ~/.cache/edge_tune


def _check_int(path: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise UserError(f"{path}: expected an integer >= {low}, got {value!r}")
    return value


def _check_float(path: str, value: Any, low: float, high: float, high_open: bool = False) -> float:
    bad_type = isinstance(value, bool) or not isinstance(value, int | float)
    if bad_type or value < low or value > high or (high_open and value == high):
        raise UserError(f"{path}: expected {low:g} <= x {'<' if high_open else '<='} {high:g}, "
                        f"got {value!r}")
    return float(value)


_RULES: dict[str, Any] = {
    "data.image_size": lambda p, v: _check_int(p, v, 8),
    "data.batch_size": lambda p, v: _check_int(p, v, 1),
    "data.val_fraction": lambda p, v: _check_float(p, v, 0.0, 0.5, high_open=True),
    "data.test_fraction": lambda p, v: _check_float(p, v, 0.01, 0.5, high_open=True),
    "baseline.epochs": lambda p, v: _check_int(p, v, 0),
    "baseline.lr": lambda p, v: _check_float(p, v, 0.0, 10.0),
    "baseline.weight_decay": lambda p, v: _check_float(p, v, 0.0, 1.0),
    "finetune.epochs": lambda p, v: _check_int(p, v, 0),
    "finetune.lr": lambda p, v: _check_float(p, v, 0.0, 10.0),
    "finetune.weight_decay": lambda p, v: _check_float(p, v, 0.0, 1.0),
    "finetune.bn_recalibration_images": lambda p, v: _check_int(p, v, 0),
    "quantize.calibration_images": lambda p, v: _check_int(p, v, 1),
    "bench.threads": lambda p, v: _check_int(p, v, 1),
    "bench.warmup": lambda p, v: _check_int(p, v, 0),
    "bench.iterations": lambda p, v: _check_int(p, v, 10),
    "bench.rounds": lambda p, v: _check_int(p, v, 1),
    "bench.fps_seconds": lambda p, v: _check_float(p, v, 0.0, 60.0),
    "bench.max_ratio_cv": lambda p, v: _check_float(p, v, 0.0, 1.0),
    "bench.max_sessions": lambda p, v: _check_int(p, v, 1),
    "train_threads": lambda p, v: _check_int(p, v, 0),
    "tune.num_samples": lambda p, v: _check_int(p, v, 1),
    "tune.max_concurrent": lambda p, v: _check_int(p, v, 1),
    "tune.random_steps": lambda p, v: _check_int(p, v, 0),
    "tune.max_failures": lambda p, v: _check_int(p, v, 0),
    "tune.trial_cpus": lambda p, v: _check_float(p, v, 0.0, 1024.0),
    "tune.trial_gpus": lambda p, v: _check_float(p, v, 0.0, 64.0),
    "tune.threshold.min_top1": lambda p, v: None if v is None else _check_float(p, v, 0.0, 100.0),
    "tune.threshold.max_drop": lambda p, v: _check_float(p, v, 0.0, 100.0),
    "tune.points_to_evaluate": lambda p, v: _check_points(p, v),
}


def _check_points(path: str, value: Any) -> list[dict[str, float]]:
    if not isinstance(value, list) or not all(isinstance(p, dict) for p in value):
        raise UserError(f"{path}: expected a list of {{parameter: value}} mappings, got {value!r}")
    from edge_tune.recipe import check_param

    for i, point in enumerate(value):
        for name, number in point.items():
            try:
                check_param(str(name), number)
            except UserError as err:
                raise UserError(f"{path}[{i}]{str(err).removeprefix('params')}") from None
    return [{str(k): float(v) for k, v in p.items()} for p in value]
_CHOICES = {"bench.precision": ("f32", "f16", "bf16")}


def _build(cls: type, raw: Any, prefix: str) -> Any:
    """Instantiate dataclass ``cls`` from mapping ``raw``, checking keys, types and ranges."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"{prefix or 'config'}: expected a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        path = f"{prefix}{key}"
        if key not in fields:
            raise unknown(f"{prefix.rstrip('.') or 'config'}", str(key), fields)
        factory = fields[key].default_factory
        default = factory() if callable(factory) else None
        if dataclasses.is_dataclass(default):
            values[key] = _build(type(default), value, f"{path}.")
            continue
        values[key] = _check_value(path, value, fields[key].default)
    return cls(**values)


def _check_value(path: str, value: Any, default: Any) -> Any:
    if path in _RULES:
        return _RULES[path](path, value)
    if path in _CHOICES and value not in _CHOICES[path]:
        raise UserError(f"{path}: expected one of {', '.join(_CHOICES[path])}, got {value!r}")
    if isinstance(default, bool) and not isinstance(value, bool):
        raise UserError(f"{path}: expected true or false, got {value!r}")
    if isinstance(default, int) and not isinstance(default, bool):
        return _check_int(path, value, -(2**31))
    is_text = default is None or isinstance(default, str)
    if is_text and value is not None and not isinstance(value, str):
        raise UserError(f"{path}: expected a string, got {value!r}")
    if isinstance(default, str) and value is None:
        raise UserError(f"{path}: expected a string, got null")
    return value


def config_from_dict(raw: Any) -> Config:
    """A validated :class:`Config` from a parsed YAML mapping (``{}`` = the default)."""
    config: Config = _build(Config, raw, "")
    _check_names(config)
    return config


def _check_names(config: Config) -> None:
    from edge_tune.data import DATASETS
    from edge_tune.models import MODELS

    if config.model not in MODELS:
        raise unknown("model", config.model, MODELS)
    if config.data.name not in DATASETS:
        raise unknown("data.name", config.data.name, DATASETS)


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file safely; a missing file or bad syntax is a one-line UserError."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"--config: no such file {str(file)!r}")
    try:
        return yaml.safe_load(file.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise UserError(f"{file}:{where}: malformed YAML: {problem}") from None


def load_config(path: str | Path | None) -> Config:
    """The embedded default, overridden by the YAML file at ``path`` when given."""
    return config_from_dict({} if path is None else read_yaml(path))


def config_to_dict(config: Config) -> dict[str, Any]:
    """Plain nested dict of a config (for JSON results and YAML files)."""
    return dataclasses.asdict(config)
