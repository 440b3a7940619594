"""Compression parameters (what the optimiser tunes) -> a compression schedule.

The tuner speaks a flat dict of named floats; :func:`schedule_from_params` validates it and
turns it into a :class:`Schedule` (which layers lose how many filters, how sparse, int8 or not,
how long to fine-tune). :meth:`Schedule.to_recipe` writes it as a Distiller-style recipe so
every trial's compression is a YAML file a person can read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from edge_tune.core.errors import UserError, unknown

STAGE_PARAM = "filter_ratio_<stage>"  # one parameter per stage the model has


@dataclass(frozen=True)
class ParamSpec:
    """A tunable parameter: its valid range and meaning."""

    low: float
    high: float
    high_open: bool  # True: high itself is excluded (a ratio of 1 would remove everything)
    doc: str
    choices: tuple[float, ...] = ()  # a choice: the values it takes (searchers pick one)
    integer: bool = False  # whole numbers only (searchers round before they score)


PARAMETERS: dict[str, ParamSpec] = {
    "filter_ratio": ParamSpec(0.0, 1.0, True, "fraction of filters physically removed from "
                              "every conv (torch-pruning, residual groups kept consistent)"),
    STAGE_PARAM: ParamSpec(0.0, 1.0, True, "filter_ratio for one stage of the model (convs "
                           "outside every stage, the stem, take the first stage's); "
                           "python -m edge_tune.trial --stages lists them"),
    "fine_sparsity": ParamSpec(0.0, 1.0, True, "fraction of weights zeroed by magnitude in "
                               "every conv but the first (masks held while fine-tuning)"),
    "int8": ParamSpec(0.0, 1.0, False, ">= 0.5 quantises weights and activations to int8 "
                      "(NNCF post-training, calibrated on training images)",
                      choices=(0.0, 1.0)),
    "finetune_epochs": ParamSpec(0.0, 100.0, False, "fine-tuning epochs after pruning "
                                 "(rounded; default finetune.epochs)", integer=True),
    "latency_target": ParamSpec(0.01, 1.0, False, "the latency ratio (model / baseline on "
                                "the device) that per-layer allocation aims at, from the "
                                "device's profile of the model; instead of filter_ratio"),
    "allocation": ParamSpec(0.0, 1.0, False, "with latency_target: >= 0.5 chooses each "
                            "group's filters from the device's profile and each group's "
                            "sensitivity; < 0.5 keeps one fraction of every group, the largest "
                            "that reaches the target (default: by the device)",
                            choices=(0.0, 1.0)),
    "distill": ParamSpec(0.0, 1.0, False, ">= 0.5 fine-tunes by distilling from a teacher, "
                         "the baseline unless finetune.distill names another",
                         choices=(0.0, 1.0)),
}


@dataclass(frozen=True)
class Schedule:
    """What one trial does to the model, in order: remove filters, zero weights, fine-tune, int8."""

    filter_ratios: dict[str, float] = field(default_factory=dict)  # stage ("*" = all) -> ratio
    fine_sparsity: float = 0.0
    int8: bool = False
    finetune_epochs: int = 0
    distill: bool = False  # fine-tune from a teacher's outputs too (finetune.distill)
    latency_target: float | None = None  # per-layer allocation to this latency ratio
    by_device: bool = True  # allocation by the device's profile (else one fraction for all)
    params: dict[str, float] = field(default_factory=dict)  # as given, for the record

    @property
    def prunes_filters(self) -> bool:
        target = self.latency_target is not None and self.latency_target < 1.0
        return target or any(r > 0 for r in self.filter_ratios.values())

    def to_recipe(self, filter_layers: dict[str, float], fine_layers: list[str],
                  arch: str, dataset: str) -> dict[str, Any]:
        """The schedule as a Distiller-style recipe (``module.``-prefixed weight names)."""
        recipe: dict[str, Any] = {"version": 1, "pruners": {}, "extensions": {},
                                  "lr_schedulers": {}, "quantizers": {}, "policies": []}
        by_ratio: dict[float, list[str]] = {}
        for name, ratio in filter_layers.items():
            if ratio > 0:
                by_ratio.setdefault(round(ratio, 6), []).append(f"module.{name}.weight")
        for i, (ratio, weights) in enumerate(sorted(by_ratio.items())):
            key = f"filter_pruner_{i}"
            recipe["pruners"][key] = {"class": "L1RankedStructureParameterPruner",
                                      "group_type": "Filters", "desired_sparsity": ratio,
                                      "weights": weights}
            recipe["policies"].append({"pruner": {"instance_name": key}, "epochs": [0]})
        if by_ratio:
            recipe["extensions"]["net_thinner"] = {
                "class": "FilterRemover", "thinning_func_str": "remove_filters",
                "arch": arch, "dataset": dataset}
            recipe["policies"].append({"extension": {"instance_name": "net_thinner"},
                                       "epochs": [0]})
        if self.fine_sparsity > 0:
            recipe["pruners"]["fine_pruner"] = {
                "class": "SparsityLevelParameterPruner",
                "levels": {f"module.{n}.weight": self.fine_sparsity for n in fine_layers}}
            recipe["policies"].append({"pruner": {"instance_name": "fine_pruner"},
                                       "epochs": [0]})
        if self.finetune_epochs > 0 and recipe["policies"]:
            # cosine decay over the fine-tuning epochs, stepped per epoch as Distiller does
            recipe["lr_schedulers"] = {"finetune_lr": {"class": "CosineAnnealingLR",
                                                       "T_max": self.finetune_epochs}}
            recipe["policies"].append({"lr_scheduler": {"instance_name": "finetune_lr"},
                                       "starting_epoch": 0,
                                       "ending_epoch": self.finetune_epochs, "frequency": 1})
        if self.int8:
            recipe["quantizers"]["post_train_int8"] = {
                "class": "PostTrainLinearQuantizer", "bits_activations": 8,
                "bits_parameters": 8, "backend": "nncf"}
        return {k: v for k, v in recipe.items() if v not in ({}, []) or k == "version"}


def param_spec(name: str, key: str = "params") -> ParamSpec:
    """The spec of a parameter name (``filter_ratio_<stage>`` for any stage name)."""
    if name.startswith("filter_ratio_") and name.removeprefix("filter_ratio_"):
        return PARAMETERS[STAGE_PARAM]
    if name not in PARAMETERS or name == STAGE_PARAM:
        raise unknown(key, name, PARAMETERS)
    return PARAMETERS[name]


def format_params(params: dict[str, Any]) -> str:
    """Parameters as a person reads them: ``filter_ratio=0.45, int8=on, finetune_epochs=5``."""
    shown = []
    for name, value in params.items():
        spec = param_spec(name)
        if spec.choices == (0.0, 1.0):
            shown.append(f"{name}={'on' if float(value) >= 0.5 else 'off'}")
        elif spec.integer:
            shown.append(f"{name}={round(float(value))}")
        else:
            shown.append(f"{name}={float(value):.2f}")
    return ", ".join(shown)


def check_param(name: str, value: Any) -> float:
    """A parameter's value as float, or a UserError naming it and its valid range."""
    spec = param_spec(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise UserError(f"params.{name}: expected a number, got {value!r}")
    too_high = value >= spec.high if spec.high_open else value > spec.high
    if value < spec.low or too_high:
        bracket = ")" if spec.high_open else "]"
        raise UserError(f"params.{name}: expected a value in [{spec.low:g}, {spec.high:g}"
                        f"{bracket}, got {value!r}")
    return float(value)


def schedule_from_params(params: dict[str, Any], stages: tuple[str, ...],
                         default_epochs: int) -> Schedule:
    """Validate ``params`` for a model with ``stages`` and build its :class:`Schedule`."""
    if not isinstance(params, dict):
        raise UserError(f"params: expected a JSON object of name: number, got {params!r}")
    values = {str(k): check_param(str(k), v) for k, v in params.items()}
    ratios: dict[str, float] = {}
    if "filter_ratio" in values:
        ratios["*"] = values["filter_ratio"]
    for name, value in values.items():
        if name.startswith("filter_ratio_"):
            stage = name.removeprefix("filter_ratio_")
            if stage not in stages:
                valid = ", ".join(stages) or "none (the model has no stages)"
                raise UserError(f"params.{name}: the model has no stage {stage!r}; "
                                f"stages: {valid}")
            ratios[stage] = value
    target = values.get("latency_target")
    if target is not None and ratios:
        raise UserError("params.latency_target: not with filter_ratio" + (
            "_<stage>" if "*" not in ratios else "") + ": per-layer allocation chooses every "
            "layer's filters from the target")
    epochs = values.get("finetune_epochs")
    return Schedule(filter_ratios=ratios, fine_sparsity=values.get("fine_sparsity", 0.0),
                    int8=values.get("int8", 0.0) >= 0.5,
                    finetune_epochs=default_epochs if epochs is None else round(epochs),
                    distill=values.get("distill", 0.0) >= 0.5, latency_target=target,
                    by_device=values.get("allocation", 1.0) >= 0.5, params=values)
