"""Configuration: frozen dataclasses, validated once at load with YAML-path errors.

Sections that belong to one stage are that stage's own dataclass (``data`` is
:class:`edge_tune.catalog.splits.DataConfig`, ``bench`` is
:class:`edge_tune.edge.bench.BenchSettings`, ``tune.threshold`` is
:class:`edge_tune.search.objective.Threshold`), so nothing is copied field by field; names are
checked against the stages' registries (``model``, ``data.name``). ``tune:`` answers the
searchers' :class:`edge_tune.search.searchers.SearchSettings`.

``load_config(None)`` gives the embedded default (ResNet-20 on digits); a user file overrides
any subset of its keys. Unknown keys and out-of-range values are a :class:`UserError` naming the
key path, e.g. ``finetune.epochs: expected an integer >= 0, got -1``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from edge_tune.catalog.data import DATASETS
from edge_tune.catalog.models import model_spec
from edge_tune.catalog.splits import DataConfig
from edge_tune.core.errors import UserError, unknown
from edge_tune.core.files import read_yaml
from edge_tune.edge.bench import BenchSettings
from edge_tune.search.objective import Threshold
from edge_tune.search.params import check_param


@dataclass(frozen=True)
class BaselineConfig:
    """The trained model that compression starts from."""

    epochs: int = 20  # digits: 10 epochs left validation top-1 at 98.1%, 20 reached 99.3-99.6%
    lr: float = 0.1  # SGD, cosine schedule, momentum 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    checkpoint: str | None = None  # a state_dict of the configured model; skips training


@dataclass(frozen=True)
class DistillConfig:
    """How a trial that distils (parameter ``distill``: on) learns from a teacher while it
    fine-tunes, with Distiller's knobs (its flags ``--kd-temp``, ``--kd-dw``, ``--kd-sw``,
    ``--kd-teacher``; the defaults are its examples'): loss = student_weight x cross-entropy
    + distill_weight x KL divergence of the softened outputs at ``temperature``."""

    temperature: float = 5.0  # kd_temp
    distill_weight: float = 0.7  # kd_dw, in [0, 1]
    student_weight: float = 0.3  # kd_sw, in [0, 1]
    teacher: str | None = None  # a model name (as ``model``); None: the baseline itself
    teacher_checkpoint: str | None = None  # its weights (required with ``teacher``)


@dataclass(frozen=True)
class FinetuneConfig:
    """Training after compression (fine-tuning) and the BatchNorm re-estimation before it."""

    epochs: int = 8  # 50% of ResNet-20's filters: 5 epochs lost 1.1-1.3 points, 8 kept top-1
    # digits, 50-60% filters + int8, 4-7 epochs: validation top-1 97.1% on average at lr 0.1,
    # 98.0% at 0.03, 97.6% at 0.01 (torch f32, 270 images; python benchmarks/finetune.py)
    lr: float = 0.03
    weight_decay: float = 5e-4
    bn_recalibration_images: int = 1024  # train-mode forward passes after structural pruning
    distill: DistillConfig = field(default_factory=DistillConfig)


@dataclass(frozen=True)
class PruneConfig:
    """How filter pruning chooses the channels a layer keeps."""

    # kept channel counts rounded to a multiple the device runs well: 1 = as the ratio gives
    # them; N = the nearest multiple of N (a layer narrower than N is left whole, and said);
    # "auto" = the multiple measured on the device before the first trial (two 3x3 convs at
    # every width up to 64; see docs/measurement.md), recorded in the results
    channel_multiple: int | str = 1


@dataclass(frozen=True)
class QuantizeConfig:
    """NNCF post-training int8 quantisation."""

    # from the training split. 128 instead of 300: 2-3 s of NNCF instead of 3-4 s for ResNet-20;
    # over three Fashion-MNIST models (baseline, 50% and 30% filters fine-tuned) int8 lost 1.06
    # points of validation top-1 on average with either
    calibration_images: int = 128
    # an int8 graph the device runs slower than the same graph in float (the pruned
    # MobileNetV2: 1.65x int8 against 2.18x float): false = a tuner trial measures both in one
    # session and deploys float, recording int8_vs_float, and where the reference (the baseline
    # in int8) is slower than float, the run's space drops int8; true = int8 as the
    # parameters ask, and kept in the space
    keep_slower_int8: bool = False
    # points of top-1 int8 may lose against the same model in float, on control_images
    # training images (after the calibration ones); set: NNCF's accuracy-controlled
    # quantisation returns the layers that cost most to float until it holds. null: plain int8
    max_drop: float | None = None
    control_images: int = 300


@dataclass(frozen=True)
class TuneConfig:
    """The search: space, budget, concurrency, resources per trial, W&B."""

    search_space: str = "default"  # a name in search_spaces/ or a YAML path
    searcher: str = "bayesopt"  # a name in edge_tune.search.searchers.SEARCHERS
    # the digits demo: 12 trials and the baseline in 152 s from an empty cache on 2 cores
    # (2026-12-05: the int8 reference stopped 7 trials before fine-tuning; 363-374 s before)
    num_samples: int = 12
    max_concurrent: int = 1  # trials at once (each also waits its turn at the benchmark actor)
    seed: int = 0
    # trials before the model guides (bayesopt: the hand-made starting points included)
    random_steps: int = 4
    points_to_evaluate: list[dict[str, float]] = field(default_factory=list)
    trial_cpus: float = 0.0  # 0 = the largest trial node's cores / max_concurrent
    trial_gpus: float = 0.0  # > 0: trials train on a GPU when their node has one
    trial_memory_gb: float = 0.0  # GB of RAM reserved per trial (Ray's `memory`); 0 = none
    # retries of a trial whose process or node was lost (a trial that raises is not retried)
    max_failures: int = 2
    early_stop: bool = True  # stop trials that cannot win (edge_tune.search.stopping.EarlyStop)
    # measure the baseline in int8 first (edge_tune.run.reference), when the space has int8
    reference: bool = True
    threshold: Threshold = field(default_factory=Threshold)
    wandb_project: str = "edge_tune"


@dataclass(frozen=True)
class Config:
    """One edge_tune job: model, data, baseline, compression and measurement settings."""

    model: str = "resnet20_cifar"
    data: DataConfig = field(default_factory=DataConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    bench: BenchSettings = field(default_factory=BenchSettings)
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


# integer keys and their minimum
_INTS: dict[str, int] = {
    "data.image_size": 8, "data.batch_size": 1, "data.train_subset": 0, "baseline.epochs": 0,
    "finetune.epochs": 0,
    "finetune.bn_recalibration_images": 0, "quantize.calibration_images": 1,
    "quantize.control_images": 10,
    "bench.threads": 1, "bench.warmup": 0, "bench.iterations": 10, "bench.rounds": 1,
    "bench.max_sessions": 1, "train_threads": 0, "tune.num_samples": 1,
    "tune.max_concurrent": 1, "tune.random_steps": 0, "tune.max_failures": 0,
}
# number keys and their (low, high, high excluded)
_FLOATS: dict[str, tuple[float, float, bool]] = {
    "data.val_fraction": (0.0, 0.5, True), "data.test_fraction": (0.01, 0.5, True),
    "baseline.lr": (0.0, 10.0, False), "baseline.weight_decay": (0.0, 1.0, False),
    "finetune.lr": (0.0, 10.0, False), "finetune.weight_decay": (0.0, 1.0, False),
    "bench.fps_seconds": (0.0, 60.0, False), "bench.max_ratio_cv": (0.0, 1.0, False),
    "bench.call_limit_s": (0.0, 86400.0, False), "bench.device_wait_s": (0.0, 604800.0, False),
    "tune.trial_cpus": (0.0, 1024.0, False), "tune.trial_gpus": (0.0, 64.0, False),
    "tune.trial_memory_gb": (0.0, 65536.0, False),
    "tune.threshold.min_top1": (0.0, 100.0, False),  # or null: max_drop applies
    "tune.threshold.max_drop": (0.0, 100.0, False),
    "quantize.max_drop": (0.0, 100.0, False),  # or null: plain int8
    "finetune.distill.temperature": (0.01, 100.0, False),
    "finetune.distill.distill_weight": (0.0, 1.0, False),
    "finetune.distill.student_weight": (0.0, 1.0, False),
}
_NULLABLE = ("tune.threshold.min_top1", "quantize.max_drop")
_RULES: dict[str, Any] = {
    **{k: (lambda p, v, low=low: _check_int(p, v, low)) for k, low in _INTS.items()},
    # null allowed: threshold.min_top1 (max_drop applies), quantize.max_drop (plain int8)
    **{k: (lambda p, v, r=r: None if v is None and p in _NULLABLE else _check_float(p, v, *r))
       for k, r in _FLOATS.items()},
    "tune.points_to_evaluate": lambda p, v: _check_points(p, v),
    "prune.channel_multiple": lambda p, v: _check_multiple(p, v),
    "bench.devices": lambda p, v: _check_devices(p, v),
}


def _check_devices(path: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(d, str) and d.strip() for d in value):
        raise UserError(f"{path}: expected a list of OpenVINO device names (one per device on "
                        f"an ncs node, e.g. [GPU.0, GPU.1]), got {value!r}")
    return tuple(d.strip() for d in value)


def _check_multiple(path: str, value: Any) -> int | str:
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise UserError(f"{path}: expected auto or an integer >= 1 (1: no rounding), got {value!r}")


def _check_points(path: str, value: Any) -> list[dict[str, float]]:
    if not isinstance(value, list) or not all(isinstance(p, dict) for p in value):
        raise UserError(f"{path}: expected a list of {{parameter: value}} mappings, got {value!r}")
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
    config: Config = _absolute(_build(Config, raw, ""))
    _check_names(config)
    return config


def _absolute(config: Config) -> Config:
    """Paths made absolute (from the current directory): Ray workers run elsewhere."""
    def resolve(path: str | None) -> str | None:
        return None if path is None else str(Path(path).expanduser().resolve())

    def model_path(model: str) -> str:
        where, _, attr = model.rpartition(":")
        return f"{resolve(where)}:{attr}" if where.endswith(".py") else model

    distill = config.finetune.distill
    distill = dataclasses.replace(
        distill, teacher=None if distill.teacher is None else model_path(distill.teacher),
        teacher_checkpoint=resolve(distill.teacher_checkpoint))
    return dataclasses.replace(
        config, model=model_path(config.model),
        data=dataclasses.replace(config.data, root=resolve(config.data.root)),
        baseline=dataclasses.replace(config.baseline,
                                     checkpoint=resolve(config.baseline.checkpoint)),
        finetune=dataclasses.replace(config.finetune, distill=distill))


def _check_names(config: Config) -> None:
    model_spec(config.model)  # a built-in, a torchvision model or the user's code
    if config.data.name not in DATASETS:
        raise unknown("data.name", config.data.name, DATASETS)
    distill = config.finetune.distill
    if (distill.teacher is None) != (distill.teacher_checkpoint is None):
        raise UserError("finetune.distill.teacher: a teacher other than the baseline needs "
                        "both teacher (a model name) and teacher_checkpoint (its weights); got "
                        f"teacher {distill.teacher!r}, teacher_checkpoint "
                        f"{distill.teacher_checkpoint!r}")
    if distill.teacher is not None:
        try:
            model_spec(distill.teacher)
        except UserError as err:  # its message names the key ``model``
            raise UserError("finetune.distill.teacher" + str(err).removeprefix("model")) \
                from None


def load_config(path: str | Path | None) -> Config:
    """The embedded default, overridden by the YAML file at ``path`` when given."""
    return config_from_dict({} if path is None else read_yaml(path))


def config_to_dict(config: Config) -> dict[str, Any]:
    """Plain nested dict of a config (for JSON results and YAML files)."""
    # through JSON: tuples (bench.devices) become the lists YAML writes
    return cast(dict[str, Any], json.loads(json.dumps(dataclasses.asdict(config))))
