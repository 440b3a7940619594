"""Distiller's YAML compression-scheduling recipes: loading and validation.

A recipe has top-level ``version`` (optional), ``pruners``, ``regularizers``, ``quantizers``,
``lr_schedulers``, ``extensions`` (each ``name: {class: X, ...}``) and ``policies`` (each names
one instance, optionally with ``args``, and fires at ``epochs: [...]`` or from
``starting_epoch`` to ``ending_epoch`` every ``frequency`` epochs). Every error names its key:
``pruners.low_pruner.final_sparsity: expected 0 <= x < 1, got 1.3``. Weight names may carry
Distiller's ``module.`` prefix (its models were wrapped in DataParallel); it is dropped.

:data:`CLASSES` is the one registry of Distiller classes: each :class:`ClassSpec` holds the
class's section, the checks of its arguments and its behaviour (the pruner or regulariser
that computes it, the LR scheduler it builds, the structures it removes, how its arguments
rescale with the run's length). :mod:`edge_tune.scheduler` runs a loaded recipe from it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from edge_tune.config import read_yaml
from edge_tune.errors import UserError, unknown
from edge_tune.prune import (
    L1,
    APoZRanked,
    BernoulliFilters,
    GroupLasso,
    GroupVariance,
    L1RankedStructure,
    Magnitude,
    MagnitudeThreshold,
    Pruner,
    RandomLevelStructure,
    Regularizer,
    Sensitivity,
    SparsityLevel,
    Splicing,
)
from edge_tune.quantize import Int8Options

SECTIONS = {"pruners": "pruner", "regularizers": "regularizer", "quantizers": "quantizer",
            "lr_schedulers": "lr_scheduler", "extensions": "extension"}
GROUP_TYPES = ("Filters", "Channels", "Rows", "Blocks", "3D")  # what structure pruners rank
REG_GROUP_TYPES = ("Filters", "Channels", "Rows", "2D", "3D", "4D", "Kernels")  # group lasso
# policy ``args`` a pruner policy accepts (Distiller's PruningPolicy), with their checks below
PRUNER_POLICY_ARGS = ("keep_mask", "mini_batch_pruning_frequency", "mask_on_forward_only",
                      "use_double_copies", "mask_gradients", "discard_masks_at_minibatch_end",
                      "skip_first_minibatch", "fold_batchnorm", "levels")

Check = Callable[[str, Any], Any]
Args = dict[str, Any]
LRBuilder = Callable[[Args, torch.optim.Optimizer], Any]  # a torch LR scheduler


def _ratio(path: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise UserError(f"{path}: expected 0 <= x < 1, got {value!r}")
    return float(value)


def _positive(path: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise UserError(f"{path}: expected a number > 0, got {value!r}")
    return float(value)


def _gamma(path: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise UserError(f"{path}: expected 0 < x <= 1, got {value!r}")
    return float(value)


def _non_negative(path: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise UserError(f"{path}: expected a number >= 0, got {value!r}")
    return float(value)


def _epochs_int(path: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{path}: expected an integer >= 1, got {value!r}")
    return value


def _weights(path: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):  # Distiller's ResNet-50 recipes write one weight without a list
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(w, str) for w in value):
        raise UserError(f"{path}: expected a non-empty list of weight names, got {value!r}")
    return tuple(strip_prefix(w) for w in value)


def _one_of(*valid: str) -> Check:
    def check(path: str, value: Any) -> str:
        if value not in valid:
            raise UserError(f"{path}: expected one of {', '.join(valid)}, got {value!r}")
        return str(value)
    return check


_group_type = _one_of(*GROUP_TYPES)
_reg_group_type = _one_of(*REG_GROUP_TYPES)


def _flag(path: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise UserError(f"{path}: expected true or false, got {value!r}")
    return value


def _count(path: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserError(f"{path}: expected an integer >= 0, got {value!r}")
    return value


def _number(path: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UserError(f"{path}: expected a number, got {value!r}")
    return float(value)


def _range(path: str, value: Any) -> tuple[float, float]:
    if not isinstance(value, list) or len(value) != 2:
        raise UserError(f"{path}: expected [low, high] sparsities, got {value!r}")
    low, high = _ratio(f"{path}[0]", value[0]), _ratio(f"{path}[1]", value[1])
    if high < low:
        raise UserError(f"{path}: expected low <= high, got {value!r}")
    return low, high


def _sensitivities(path: str, value: Any) -> dict[str, float]:
    if not isinstance(value, dict) or not value:
        raise UserError(f"{path}: expected a mapping of weight name (or '*'): sensitivity, "
                        f"got {value!r}")
    return {strip_prefix(str(k)): _non_negative(f"{path}.{k}", v) for k, v in value.items()}


def _block_kwargs(path: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) != {"block_shape"}:
        raise UserError(f"{path}: expected {{block_shape: [filters, channels, h, w]}}, "
                        f"got {value!r}")
    shape = value["block_shape"]
    if not isinstance(shape, list) or len(shape) != 4 or not all(
            isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in shape):
        raise UserError(f"{path}.block_shape: expected 4 integers >= 1, got {shape!r}")
    return {"block_shape": tuple(shape)}


def _levels(path: str, value: Any) -> dict[str, float]:
    if not isinstance(value, dict) or not value:
        raise UserError(f"{path}: expected a mapping of weight name: sparsity, got {value!r}")
    return {strip_prefix(str(k)): _ratio(f"{path}.{k}", v) for k, v in value.items()}


def _thresholds(path: str, value: Any) -> dict[str, float]:
    if not isinstance(value, dict) or not value:
        raise UserError(f"{path}: expected a mapping of weight name: threshold, got {value!r}")
    out = {}
    for k, v in value.items():
        if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
            raise UserError(f"{path}.{k}: expected a number >= 0, got {v!r}")
        out[strip_prefix(str(k))] = float(v)
    return out


def _pairs(first: Check, what: str, group: Check) -> Check:
    def check(path: str, value: Any) -> dict[str, tuple[float, str]]:
        if not isinstance(value, dict) or not value:
            raise UserError(f"{path}: expected a mapping of weight name: [{what}, group type], "
                            f"got {value!r}")
        out = {}
        for k, v in value.items():
            if not isinstance(v, list) or len(v) != 2:
                raise UserError(f"{path}.{k}: expected [{what}, group type], got {v!r}")
            out[strip_prefix(str(k))] = (first(f"{path}.{k}[0]", v[0]),
                                         group(f"{path}.{k}[1]", v[1]))
        return out
    return check


_reg_regims = _pairs(_positive, "strength", _reg_group_type)
_rank_regims = _pairs(_ratio, "sparsity", _group_type)  # Distiller's older pruner form


def _channel_regims(path: str, value: Any) -> dict[str, tuple[float, str]]:
    regims: dict[str, tuple[float, str]] = _reg_regims(path, value)
    for name, (_, group) in regims.items():
        if group != "Channels":
            raise UserError(f"{path}.{name}[1]: GroupVarianceRegularizer groups Channels only, "
                            f"got {group!r}")
    return regims


def _strengths(path: str, value: Any) -> dict[str, float]:
    if not isinstance(value, dict) or not value:
        raise UserError(f"{path}: expected a mapping of weight name: strength, got {value!r}")
    return {strip_prefix(str(k)): _positive(f"{path}.{k}", v) for k, v in value.items()}


def _milestones(path: str, value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise UserError(f"{path}: expected a non-empty list of epochs, got {value!r}")
    return tuple(_epochs_int(f"{path}[{i}]", v) for i, v in enumerate(value))


def _gammas(path: str, value: Any) -> tuple[float, ...]:
    if not isinstance(value, list) or not value:
        raise UserError(f"{path}: expected a non-empty list of factors, got {value!r}")
    return tuple(_gamma(f"{path}[{i}]", v) for i, v in enumerate(value))


INT8 = ("the deployed device runs int8 (OpenVINO on a CPU); set 8 to run it as int8, or "
        "remove the quantizer")


def _bits(path: str, value: Any) -> int | None:
    """8, or None (Distiller: left in float); fewer bits are refused (the device runs int8)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{path}: expected a number of bits, got {value!r}")
    if value < 8:
        raise UserError(f"{path}: {value} bits: {INT8}")
    if value > 8:
        raise UserError(f"{path}: {value} bits: the deployed device runs int8 (OpenVINO on a "
                        "CPU), not wider integers")
    return 8


def _text(path: str, value: Any) -> str:
    if not isinstance(value, str):
        raise UserError(f"{path}: expected a string, got {value!r}")
    return value


def _agp_order(path: str, args: Args) -> None:
    if args["final_sparsity"] < args["initial_sparsity"]:
        raise UserError(f"{path}.final_sparsity: expected >= initial_sparsity "
                        f"{args['initial_sparsity']}, got {args['final_sparsity']}")


def _ranked_form(path: str, args: Args) -> None:
    """L1RankedStructureParameterPruner: ``group_type`` + ``desired_sparsity`` + ``weights``,
    or Distiller's older ``reg_regims: {weight: [sparsity, group type]}``."""
    if "reg_regims" in args:
        extra = sorted({"group_type", "desired_sparsity", "weights"} & set(args))
        if extra:
            raise UserError(f"{path}.{extra[0]}: not with reg_regims (its older form)")
        return
    for key in ("group_type", "desired_sparsity", "weights"):
        if key not in args:
            raise UserError(f"{path}.{key}: required by L1RankedStructureParameterPruner "
                            "(or give reg_regims: {weight: [sparsity, group type]}), missing")


def _blocks(path: str, args: Args) -> None:
    if (args.get("group_type") == "Blocks") != ("kwargs" in args):
        raise UserError(f"{path}.kwargs: group_type Blocks needs kwargs: {{block_shape: "
                        "[filters, channels, h, w]}} (and only Blocks takes it)")


def _ranked_checks(path: str, args: Args) -> None:
    _ranked_form(path, args)
    _blocks(path, args)


def _agp_blocks(path: str, args: Args) -> None:
    _agp_order(path, args)
    _blocks(path, args)


@dataclass(frozen=True)
class ClassSpec:
    """A Distiller class: its section, argument checks and behaviour, in one place.

    Exactly the behaviour field of its section is set: ``pruner`` (pruners), ``regularizer``
    (regularizers), ``lr_scheduler`` (lr_schedulers), ``removes`` (extensions: the structures
    thinning removes) or ``int8`` (quantizers: the NNCF options its arguments map to; with
    ``qat`` the model trains with int8 fake-quantisation from the epoch its policy starts,
    otherwise int8 is applied after training).
    """

    section: str
    required: dict[str, Check]
    optional: dict[str, Check] = field(default_factory=dict)
    pruner: Pruner | None = None
    regularizer: Regularizer | None = None
    lr_scheduler: LRBuilder | None = None
    removes: tuple[str, ...] = ()  # "Filters" and/or "Channels"
    int8: Callable[[Args], Int8Options] | None = None
    qat: bool = False
    # its arguments for a run ``factor`` times as long (epochs in the arguments scale)
    rescale: Callable[[Args, float], Args] | None = None
    check: Callable[[str, Args], None] | None = None  # cross-argument checks
    ignored: dict[str, str] = field(default_factory=dict)  # accepted option -> why it is inert
    metric: bool = False  # an LR scheduler stepped with the validation metric


def _scaled_epochs(*keys: str) -> Callable[[Args, float], Args]:
    def scale(args: Args, factor: float) -> Args:
        return {**args, **{k: max(1, round(args[k] * factor)) for k in keys if k in args}}
    return scale


def _scaled_counts(*keys: str) -> Callable[[Args, float], Args]:
    def scale(args: Args, factor: float) -> Args:
        return {**args, **{k: round(args[k] * factor) for k in keys if k in args}}
    return scale


def _scaled_milestones(args: Args, factor: float) -> Args:
    return {**args, "milestones": tuple(max(1, round(m * factor)) for m in args["milestones"])}


def _scaled_strength(args: Args, factor: float) -> Args:
    # a regulariser acts on every mini-batch: a run 1/factor as long needs 1/factor the strength
    # to apply comparable shrinkage; the threshold below which groups are masked stays the
    # recipe's strength (Distiller's threshold_criteria): scaled with it, a 1-epoch run of a
    # 180-epoch SSL recipe masked every channel (mean |w| < 0.5)
    def scale(value: Any) -> Any:
        return (value[0] / factor, value[1]) if isinstance(value, tuple) else value / factor

    def strength(value: Any) -> float:
        return float(value[0] if isinstance(value, tuple) else value)
    regims = args["reg_regims"]
    return {**args, "reg_regims": {w: scale(v) for w, v in regims.items()},
            "thresholds": args.get("thresholds") or {w: strength(v) for w, v in regims.items()}}


MODES = ("SYMMETRIC", "ASYMMETRIC_UNSIGNED", "ASYMMETRIC_SIGNED")


def _mode(path: str, value: Any) -> str:
    """The activations' mode; weights must stay symmetric (NNCF's int8 weights for a CPU)."""
    if isinstance(value, dict):
        for key in value:
            if key not in ("activations", "weights"):
                raise unknown(path, str(key), ["activations", "weights"])
        if value.get("weights", "SYMMETRIC") != "SYMMETRIC":
            raise UserError(f"{path}.weights: {value['weights']!r}: NNCF quantises weights "
                            "symmetrically for a CPU; use SYMMETRIC")
        value = value.get("activations", "SYMMETRIC")
    return _one_of(*MODES)(path, value)


def _clip(path: str, value: Any) -> str:
    if value in (None, "NONE", "None"):
        return "NONE"
    if value == "AVG":
        return "AVG"
    raise UserError(f"{path}: {value!r}: NNCF has no equivalent of this activation clipping "
                    "(it offers min/max and mean min/max ranges); use AVG or NONE")


def _only(expected: Any, why: str) -> Check:
    """An option accepted at one value (its Distiller default), refused at any other."""
    def check(path: str, value: Any) -> Any:
        if value != expected:
            raise UserError(f"{path}: {value!r}: {why}")
        return value
    return check


BITS = {"bits_activations": "activations", "bits_weights": "weights",
        "bits_parameters": "weights", "acts": "activations", "wts": "weights"}


def _overrides(path: str, value: Any) -> dict[str, Any]:
    """Per-layer settings (keys are module names or regular expressions, Distiller's form):
    bits 8 or null (the layer stays in float) are honoured; anything else per layer is
    listed as ignored (NNCF sets one method for the whole model)."""
    if not isinstance(value, dict):
        raise UserError(f"{path}: expected a mapping of layer: settings, got {value!r}")
    floats, ints, ignored = [], [], []
    for layer, settings in value.items():
        if not isinstance(settings, dict):
            raise UserError(f"{path}.{layer}: expected a mapping of settings, got {settings!r}")
        bits = {k: _bits(f"{path}.{layer}.{k}", v) for k, v in settings.items() if k in BITS}
        if any(b is None for b in bits.values()):
            floats.append(strip_prefix(str(layer)))
        elif bits:
            ints.append(strip_prefix(str(layer)))
        ignored += [f"{path}.{layer}.{k}" for k in settings if k not in BITS and k != "bits_bias"]
    return {"float": tuple(floats), "int8": tuple(ints), "ignored": tuple(ignored)}


def _int8(args: Args) -> Int8Options:
    overrides = [args.get(k, {}) for k in ("overrides", "bits_overrides")]
    floats = tuple(layer for o in overrides for layer in o.get("float", ()))
    ints = tuple(layer for o in overrides for layer in o.get("int8", ()))
    default_float = any(args.get(k, 8) is None for k in
                        ("bits_activations", "bits_parameters", "bits_weights"))
    return Int8Options(asymmetric_activations=args.get("mode", "SYMMETRIC") != "SYMMETRIC",
                       per_channel=args.get("per_channel_wts", True),
                       mean_ranges=args.get("clip_acts", "NONE") == "AVG",
                       float_layers=floats, int8_layers=ints if default_float else None)


def _int8_both(path: str, args: Args) -> None:
    """Activations and weights both int8 or both float by default (NNCF quantises a layer's
    inputs and weights together)."""
    bits = {args[k] for k in ("bits_activations", "bits_parameters", "bits_weights") if k in args}
    if len(bits) > 1:
        raise UserError(f"{path}: int8 weights with float activations (or the reverse): NNCF "
                        "quantises a layer's inputs and weights together; set both to 8 or "
                        "both to null")


_NNCF_RANGES = "NNCF calibrates activation ranges on training images itself"
_PTQ_OPTIONAL: dict[str, Check] = {
    "bits_activations": _bits, "bits_parameters": _bits, "bits_weights": _bits,
    "bits_accum": _only(32, "OpenVINO accumulates int8 products in 32 bits"),
    "mode": _mode, "per_channel_wts": _flag, "clip_acts": _clip, "overrides": _overrides,
    "backend": _one_of("nncf"), "model_activation_stats": _text,
    "inputs_quant_auto_fallback": _flag,
    "scale_approx_mult_bits": _only(None, "OpenVINO computes scales in float"),
    "clip_n_stds": _only(None, "only for N_STD clipping, which NNCF has no equivalent of"),
    "clip_half_range": _only(False, "NNCF has no half-range clipping"),
    "fp16": _only(False, "the deployed model is int8, not float16")}
_PTQ_IGNORED = {"bits_accum": "OpenVINO accumulates in 32 bits",
                "model_activation_stats": _NNCF_RANGES,
                "inputs_quant_auto_fallback": "NNCF decides which inputs to quantise",
                "scale_approx_mult_bits": "null is Distiller's default",
                "clip_n_stds": "null is Distiller's default",
                "clip_half_range": "false is Distiller's default",
                "fp16": "false is Distiller's default", "backend": "edge_tune's own key"}
_QAT_OPTIONAL: dict[str, Check] = {
    "bits_activations": _bits, "bits_weights": _bits, "bits_parameters": _bits,
    "num_bits_inputs": _bits, "mode": _mode, "per_channel_wts": _flag,
    "ema_decay": _gamma, "overrides": _overrides, "bits_overrides": _overrides,
    "quantize_bias": _flag, "act_clip_init_val": _positive}
_QAT_IGNORED = {"ema_decay": "NNCF learns the ranges with the weights (from calibration)",
                "num_bits_inputs": "8 is NNCF's input precision",
                "quantize_bias": "OpenVINO keeps biases in 32 bits",
                "act_clip_init_val": "NNCF learns the ranges with the weights (from "
                                     "calibration)"}


def _overrides_ignored(args: Args) -> list[str]:
    return [*args.get("overrides", {}).get("ignored", ()),
            *args.get("bits_overrides", {}).get("ignored", ())]


def _lambda_lr(args: Args, opt: torch.optim.Optimizer) -> Any:
    milestones, gammas = args["milestones"], args["gammas"]

    def factor(epoch: int) -> float:
        out = 1.0
        for milestone, gamma in zip(milestones, gammas, strict=False):
            out *= gamma if epoch >= milestone else 1.0
        return out
    return _LR.LambdaLR(opt, factor)


def _gammas_match(path: str, args: Args) -> None:
    if len(args["gammas"]) != len(args["milestones"]):
        raise UserError(f"{path}.gammas: expected one per milestone ({len(args['milestones'])}),"
                        f" got {len(args['gammas'])}")


def _plateau(args: Args, opt: torch.optim.Optimizer) -> Any:
    return _LR.ReduceLROnPlateau(opt, mode=args.get("mode", "min"),
                                 factor=args.get("factor", 0.1),
                                 patience=args.get("patience", 10),
                                 threshold=args.get("threshold", 1e-4),
                                 threshold_mode=args.get("threshold_mode", "rel"),
                                 cooldown=args.get("cooldown", 0), min_lr=args.get("min_lr", 0),
                                 eps=args.get("eps", 1e-8))


_LR = torch.optim.lr_scheduler
_AGP = {"initial_sparsity": _ratio, "final_sparsity": _ratio, "weights": _weights}
_THINNER = {"thinning_func_str": _one_of("remove_filters", "remove_channels",
                                         "resnet_cifar_remove_filters",
                                         "resnet_cifar_remove_channels"),
            "arch": _text, "dataset": _text}
_THINNER_IGNORED = {"arch": "edge_tune thins the configured model, whatever its name",
                    "dataset": "edge_tune thins the configured model, whatever its data"}
_GAMMA = {"gamma": _gamma}
_STRUCTURE = {"group_dependency": _one_of("Leader"), "kwargs": _block_kwargs}
_SPLICING = {"low_thresh_mult": _positive, "hi_thresh_mult": _positive,
             "sensitivities": _sensitivities}


def _thinner(*removes: str) -> ClassSpec:
    return ClassSpec("extensions", {}, dict(_THINNER), removes=removes,
                     ignored=dict(_THINNER_IGNORED))


def _ptq() -> ClassSpec:
    return ClassSpec("quantizers", {}, dict(_PTQ_OPTIONAL), int8=_int8, check=_int8_both,
                     ignored=dict(_PTQ_IGNORED))


def _qat_whole(path: str, args: Args) -> None:
    """Quantisation-aware training quantises the whole model (no layer left in float)."""
    _int8_both(path, args)
    options = _int8(args)
    if options.float_layers or options.int8_layers is not None:
        raise UserError(f"{path}: layers left in float (null bits) with quantisation-aware "
                        "training: edge_tune trains the whole model as int8 (NNCF)")


def _qat() -> ClassSpec:
    return ClassSpec("quantizers", {}, dict(_QAT_OPTIONAL), int8=_int8, qat=True,
                     check=_qat_whole, ignored=dict(_QAT_IGNORED))


CLASSES: dict[str, ClassSpec] = {
    "AutomatedGradualPruner": ClassSpec("pruners", dict(_AGP), pruner=Magnitude(),
                                        check=_agp_order),
    "MagnitudeParameterPruner": ClassSpec("pruners", {"thresholds": _thresholds},
                                          pruner=MagnitudeThreshold()),
    "SparsityLevelParameterPruner": ClassSpec("pruners", {"levels": _levels},
                                              pruner=SparsityLevel()),
    "SensitivityPruner": ClassSpec("pruners", {"sensitivities": _sensitivities},
                                   pruner=Sensitivity()),
    "SplicingPruner": ClassSpec("pruners", dict(_SPLICING),
                                {"sensitivity_multiplier": _non_negative}, pruner=Splicing()),
    "L1RankedStructureParameterPruner": ClassSpec(
        "pruners", {}, {"group_type": _group_type, "desired_sparsity": _ratio,
                        "weights": _weights, "reg_regims": _rank_regims, **_STRUCTURE},
        pruner=L1RankedStructure(), check=_ranked_checks),
    "L1RankedStructureParameterPruner_AGP": ClassSpec(
        "pruners", {**_AGP, "group_type": _group_type}, dict(_STRUCTURE),
        pruner=L1RankedStructure(), check=_agp_blocks),
    "ActivationAPoZRankedFilterPruner": ClassSpec(
        "pruners", {"group_type": _one_of("Filters"), "desired_sparsity": _ratio,
                    "weights": _weights}, {"group_dependency": _one_of("Leader")},
        pruner=APoZRanked()),
    "ActivationAPoZRankedFilterPruner_AGP": ClassSpec(
        "pruners", {**_AGP, "group_type": _one_of("Filters")},
        {"group_dependency": _one_of("Leader")}, pruner=APoZRanked(), check=_agp_order),
    "RandomLevelStructureParameterPruner": ClassSpec(
        "pruners", {"group_type": _group_type, "sparsity_range": _range, "weights": _weights},
        dict(_STRUCTURE), pruner=RandomLevelStructure(), check=_blocks),
    "BernoulliFilterPruner": ClassSpec(
        "pruners", {"group_type": _one_of("Filters"), "desired_sparsity": _ratio,
                    "weights": _weights}, pruner=BernoulliFilters()),
    "BernoulliFilterPruner_AGP": ClassSpec(
        "pruners", {**_AGP, "group_type": _one_of("Filters")}, pruner=BernoulliFilters(),
        check=_agp_order),
    "GroupLassoRegularizer": ClassSpec("regularizers", {"reg_regims": _reg_regims},
                                       {"threshold_criteria": _one_of("Mean_Abs", "Max")},
                                       regularizer=GroupLasso(), rescale=_scaled_strength),
    "GroupVarianceRegularizer": ClassSpec("regularizers", {"reg_regims": _channel_regims},
                                          regularizer=GroupVariance(),
                                          rescale=_scaled_strength),
    "L1Regularizer": ClassSpec("regularizers", {"reg_regims": _strengths},
                               {"threshold_criteria": _one_of("Mean_Abs", "Max")},
                               regularizer=L1(), rescale=_scaled_strength),
    "StepLR": ClassSpec("lr_schedulers", {"step_size": _epochs_int}, dict(_GAMMA),
                        lr_scheduler=lambda a, opt: _LR.StepLR(opt, a["step_size"],
                                                               a.get("gamma", 0.1)),
                        rescale=_scaled_epochs("step_size")),
    "MultiStepLR": ClassSpec("lr_schedulers", {"milestones": _milestones}, dict(_GAMMA),
                             lr_scheduler=lambda a, opt: _LR.MultiStepLR(
                                 opt, list(a["milestones"]), a.get("gamma", 0.1)),
                             rescale=_scaled_milestones),
    "MultiStepMultiGammaLR": ClassSpec("lr_schedulers", {"milestones": _milestones,
                                                         "gammas": _gammas},
                                       lr_scheduler=_lambda_lr, rescale=_scaled_milestones,
                                       check=_gammas_match),
    "ExponentialLR": ClassSpec("lr_schedulers", dict(_GAMMA),
                               lr_scheduler=lambda a, opt: _LR.ExponentialLR(opt, a["gamma"])),
    "CosineAnnealingLR": ClassSpec("lr_schedulers", {"T_max": _epochs_int},
                                   {"eta_min": _non_negative},
                                   lr_scheduler=lambda a, opt: _LR.CosineAnnealingLR(
                                       opt, a["T_max"], a.get("eta_min", 0)),
                                   rescale=_scaled_epochs("T_max")),
    "PolynomialLR": ClassSpec("lr_schedulers", {"T_max": _epochs_int, "power": _positive},
                              lr_scheduler=lambda a, opt: _LR.PolynomialLR(
                                  opt, a["T_max"], a["power"]),
                              rescale=_scaled_epochs("T_max")),
    "ReduceLROnPlateau": ClassSpec(
        "lr_schedulers", {}, {"mode": _one_of("min", "max"), "factor": _gamma,
                              "patience": _count, "threshold": _non_negative,
                              "threshold_mode": _one_of("rel", "abs"), "cooldown": _count,
                              "min_lr": _non_negative, "eps": _non_negative,
                              "verbose": _flag},
        lr_scheduler=_plateau, rescale=_scaled_counts("patience", "cooldown"), metric=True,
        ignored={"verbose": "edge_tune logs every epoch's learning rate itself"}),
    "FilterRemover": _thinner("Filters"),
    "ResnetCifarFilterRemover": _thinner("Filters"),
    "ChannelRemover": _thinner("Channels"),
    "ResnetCifarChannelRemover": _thinner("Channels"),
    "StructureRemover": _thinner("Filters", "Channels"),
    "PostTrainLinearQuantizer": _ptq(),
    "QuantAwareTrainRangeLinearQuantizer": _qat(),
    # quantisation-aware training below 8 bits: _bits refuses fewer bits by name; at 8 bits
    # they train as int8 through NNCF like the linear one
    "DorefaQuantizer": _qat(),
    "PACTQuantizer": _qat(),
    "WRPNQuantizer": _qat(),
}

POLICY_ARGS: dict[str, dict[str, Check]] = {
    "pruner": {"keep_mask": _flag, "mini_batch_pruning_frequency": _count,
               "mask_on_forward_only": _flag, "use_double_copies": _flag,
               "mask_gradients": _flag, "discard_masks_at_minibatch_end": _flag,
               "skip_first_minibatch": _flag, "fold_batchnorm": _flag, "levels": _levels},
    "regularizer": {"keep_mask": _flag},
}
POLICY_IGNORED = {"skip_first_minibatch": "the first masks are set at the start of the epoch "
                                          "either way (one mini-batch of difference)"}


def strip_prefix(name: str) -> str:
    """A weight name without Distiller's DataParallel ``module`` components: the leading
    ``module.``, and AlexNet's and VGG's ``features.module.3.weight`` (only their features
    were wrapped)."""
    return ".".join(part for part in name.split(".") if part != "module")


@dataclass(frozen=True)
class Instance:
    """One configured pruner/regularizer/quantizer/lr scheduler/extension."""

    name: str
    section: str
    cls: str
    args: dict[str, Any]

    @property
    def spec(self) -> ClassSpec:
        """The registry entry of this instance's class (its behaviour)."""
        return CLASSES[self.cls]

    def weights(self) -> tuple[str, ...]:
        """The weight names this instance acts on (empty for schedulers and extensions)."""
        for key in ("weights", "levels", "thresholds", "reg_regims", "sensitivities"):
            if key in self.args:
                return tuple(w for w in self.args[key] if w != "*")
        return ()


@dataclass(frozen=True)
class Policy:
    """When an instance acts: at listed epochs, or from start to end (exclusive) every freq."""

    kind: str  # pruner | regularizer | quantizer | lr_scheduler | extension
    instance: str
    args: dict[str, Any]
    epochs: tuple[int, ...] | None = None
    starting_epoch: int = 0
    ending_epoch: int = 0
    frequency: int = 1

    def fires(self, epoch: int) -> bool:
        """Whether the policy acts at the start of ``epoch`` (0-based)."""
        if self.epochs is not None:
            return epoch in self.epochs
        return (self.starting_epoch <= epoch < self.ending_epoch
                and (epoch - self.starting_epoch) % self.frequency == 0)


@dataclass(frozen=True)
class Recipe:
    """A validated recipe: instances by name and policies in declaration order."""

    instances: dict[str, Instance]
    policies: tuple[Policy, ...]
    source: str = "<dict>"
    ignored: tuple[str, ...] = ()  # accepted options that change nothing here, and why
    header_epochs: int | None = None  # the training length its header's command line gives
    resumed: bool = False  # its header resumes a run: its timeline starts at its first policy

    def origin(self) -> int:
        """The epoch the recipe's run starts at: its first policy's when it resumes a run
        (Distiller's ``--resume``), else 0."""
        starts = [min(p.epochs) if p.epochs is not None else p.starting_epoch
                  for p in self.policies]
        return min(starts) if self.resumed and starts else 0

    def at(self, epoch: int) -> list[Policy]:
        """Policies firing at ``epoch``, in declaration order (Distiller's tie-break)."""
        return [p for p in self.policies if p.fires(epoch)]


def _instance(section: str, name: str, raw: Any) -> Instance:
    path = f"{section}.{name}"
    if not isinstance(raw, dict) or "class" not in raw:
        raise UserError(f"{path}: expected a mapping with 'class', got {raw!r}")
    cls = raw["class"]
    spec = CLASSES.get(cls) if isinstance(cls, str) else None
    if spec is None:
        raise unknown(f"{path}.class", str(cls),
                      [c for c, s in CLASSES.items() if s.section == section])
    if spec.section != section:
        raise UserError(f"{path}.class: {cls} belongs under {spec.section}, not {section}")
    args = {k: v for k, v in raw.items() if k != "class"}
    valid = {**spec.required, **spec.optional}
    for key in args:
        if key not in valid:
            raise unknown(path, str(key), valid)
    for key in spec.required:
        if key not in args:
            raise UserError(f"{path}.{key}: required by {cls}, missing")
    checked = {key: valid[key](f"{path}.{key}", value) for key, value in args.items()}
    if spec.check is not None:
        spec.check(path, checked)
    return Instance(str(name), section, cls, checked)


def _epoch(path: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserError(f"{path}: expected an integer >= 0, got {value!r}")
    return value


def _policy_args(path: str, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """A policy's ``args`` (how a pruner or regulariser policy applies its masks), checked."""
    for key in body:
        if key not in ("instance_name", "args"):
            raise unknown(path, str(key), ["instance_name", "args"])
    args = body.get("args") or {}
    if not isinstance(args, dict):
        raise UserError(f"{path}.args: expected a mapping, got {args!r}")
    valid = POLICY_ARGS.get(kind, {})
    for key in args:
        if key not in valid:
            if not valid:
                raise UserError(f"{path}.args.{key}: a {kind} policy takes no args")
            raise unknown(f"{path}.args", str(key), valid)
    checked = {k: valid[k](f"{path}.args.{k}", v) for k, v in args.items()}
    if checked.get("mask_gradients") and not checked.get("mask_on_forward_only"):
        raise UserError(f"{path}.args.mask_gradients: needs mask_on_forward_only: true "
                        "(Distiller: they are mutually exclusive otherwise)")
    return checked


def _policy(i: int, raw: Any, instances: dict[str, Instance]) -> Policy:
    path = f"policies[{i}]"
    kinds = [k for k in SECTIONS.values() if isinstance(raw, dict) and k in raw]
    if len(kinds) != 1:
        raise UserError(f"{path}: expected exactly one of {', '.join(SECTIONS.values())}, "
                        f"got {raw!r}")
    kind = kinds[0]
    body = raw[kind]
    if not isinstance(body, dict) or "instance_name" not in body:
        raise UserError(f"{path}.{kind}.instance_name: missing")
    name = body["instance_name"]
    section = next(s for s, k in SECTIONS.items() if k == kind)
    if name not in instances or instances[name].section != section:
        raise unknown(f"{path}.{kind}.instance_name", str(name),
                      [n for n, inst in instances.items() if inst.section == section])
    args = _policy_args(f"{path}.{kind}", kind, body)
    extra = set(raw) - {kind, "epochs", "starting_epoch", "ending_epoch", "frequency"}
    if extra:
        raise unknown(path, sorted(extra)[0], ["epochs", "starting_epoch", "ending_epoch",
                                               "frequency"])
    if "epochs" in raw:
        epochs = raw["epochs"]
        if not isinstance(epochs, list) or not epochs:
            raise UserError(f"{path}.epochs: expected a non-empty list, got {epochs!r}")
        return Policy(kind, name, args, tuple(_epoch(f"{path}.epochs[{j}]", e)
                                              for j, e in enumerate(epochs)))
    if "starting_epoch" not in raw or "ending_epoch" not in raw:
        raise UserError(f"{path}: needs epochs: [...] or starting_epoch and ending_epoch")
    start = _epoch(f"{path}.starting_epoch", raw["starting_epoch"])
    end = _epoch(f"{path}.ending_epoch", raw["ending_epoch"])
    if end <= start:
        raise UserError(f"{path}.ending_epoch: expected > starting_epoch {start}, got {end}")
    freq = _epochs_int(f"{path}.frequency", raw.get("frequency", 1))
    return Policy(kind, name, args, None, start, end, freq)


def recipe_from_dict(raw: Any, source: str = "<dict>") -> Recipe:
    """Validate a parsed recipe; every error names its key."""
    if not isinstance(raw, dict):
        raise UserError(f"{source}: expected a recipe mapping, got {type(raw).__name__}")
    known = ["version", "policies", *SECTIONS]
    for key in raw:
        if key not in known:
            raise unknown("recipe", str(key), known)
    instances: dict[str, Instance] = {}
    for section in SECTIONS:
        entries = raw.get(section) or {}
        if not isinstance(entries, dict):
            raise UserError(f"{section}: expected a mapping of name: {{class: ...}}, "
                            f"got {entries!r}")
        for name, body in entries.items():
            if name in instances:
                raise UserError(f"{section}.{name}: name already used under "
                                f"{instances[name].section}")
            instances[name] = _instance(section, name, body)
    policies = raw.get("policies") or []
    if not isinstance(policies, list):
        raise UserError(f"policies: expected a list, got {policies!r}")
    checked = tuple(_policy(i, p, instances) for i, p in enumerate(policies))
    return Recipe(instances, checked, source, _ignored(instances, checked))


def _ignored(instances: dict[str, Instance], policies: tuple[Policy, ...]) -> tuple[str, ...]:
    """Every accepted option that changes nothing in edge_tune, as ``key: why``."""
    out = []
    used = {p.instance for p in policies}
    for inst in instances.values():
        path = f"{inst.section}.{inst.name}"
        if inst.name not in used and not inst.spec.int8:  # a quantizer acts without a policy
            out.append(f"{path}: no policy uses it")
        out += [f"{path}.{k}: {why}" for k, why in inst.spec.ignored.items() if k in inst.args]
        out += [f"{key}: NNCF sets one method for the whole model"
                for key in _overrides_ignored(inst.args)]
    for i, policy in enumerate(policies):
        out += [f"policies[{i}].{policy.kind}.args.{k}: {why}"
                for k, why in POLICY_IGNORED.items() if k in policy.args]
    return tuple(out)


def read_header(text: str) -> tuple[int | None, bool]:
    """What a recipe's comments say of its run: the first ``--epochs N`` of a command line in
    them, and whether a command there resumes a run (``--resume``, ``--resume-from``)."""
    comments = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("#"))
    found = re.search(r"--epochs[= ]+(\d+)", comments)
    return (int(found.group(1)) if found else None), "--resume" in comments


@dataclass(frozen=True)
class PublishedLayer:
    """One row of the weights table Distiller printed after a run (recipe headers quote it)."""

    shape: tuple[int, ...]
    dense: int  # elements
    nonzero: int
    fine: float  # % of elements that are zero


_ROW = re.compile(r"\|\s*[\d.]+\s*\|\s*([\w.]+)\s*\|\s*\(([\d, ]+)\)\s*\|\s*(\d+)\s*\|"
                  r"\s*(\d+)\s*\|(?:[^|]*\|){5}\s*([\d.]+)\s*\|")


def published_layers(text: str) -> dict[str, PublishedLayer]:
    """The first weights table in a recipe's header comments: weight name (``module.``
    dropped) -> its shape, element count, non-zeros and fine-grained sparsity."""
    rows: dict[str, PublishedLayer] = {}
    for line in text.splitlines():
        if not line.lstrip().startswith("#"):
            continue
        for found in _ROW.finditer(line):  # a header may have two rows run together
            name, shape, dense, nonzero, fine = found.groups()
            rows[strip_prefix(name)] = PublishedLayer(
                tuple(int(d) for d in shape.replace(" ", "").split(",") if d), int(dense),
                int(nonzero), float(fine))
        if rows and "Total sparsity" in line:
            break
    return rows


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file (safe YAML), with what its header says of its run."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"--recipe: no such file {str(file)!r}")
    epochs, resumed = read_header(file.read_text(errors="replace"))
    return replace(recipe_from_dict(read_yaml(file), str(file)), header_epochs=epochs,
                   resumed=resumed)


def check_weights(recipe: Recipe, parameter_names: list[str]) -> None:
    """Every weight a recipe names must be a parameter of the model (``module.`` dropped)."""
    names = set(parameter_names)
    for inst in recipe.instances.values():
        for weight in inst.weights():
            if weight not in names:
                raise unknown(f"{inst.section}.{inst.name}.weights", weight,
                              sorted(n for n in names if n.endswith(".weight")))


def agp_sparsity(initial: float, final: float, starting_epoch: int, ending_epoch: int,
                 frequency: int, epoch: int) -> float:
    """Zhu & Gupta's cubic schedule as Distiller computes it, at the start of ``epoch``.

    s(t) = s_f + (s_i - s_f) * (1 - (t - t0) / span)^3, span = the last pruning step's
    offset from t0; before t0 it is s_i, from the last step on s_f.
    """
    span = ((ending_epoch - starting_epoch - 1) // frequency) * frequency
    if span <= 0 or epoch >= starting_epoch + span:
        return final
    progress = max(0.0, (epoch - starting_epoch) / span)
    return final + (initial - final) * (1.0 - progress) ** 3


def rescale(recipe: Recipe, from_epochs: int, to_epochs: int, origin: int = 0) -> Recipe:
    """Map every policy's epochs from a ``from_epochs`` run starting at ``origin`` onto
    ``to_epochs`` starting at 0, proportionally.

    Rounded to whole epochs; a range keeps at least one epoch and a frequency of at least 1.
    Each class's own arguments rescale as its registry entry says (LR step sizes, T_max and
    milestones with the epochs; a regulariser's strength by ``from_epochs / to_epochs``, since
    it acts on every mini-batch: without that SSL's 0.0008 removes nothing in a few epochs).
    """
    if from_epochs < 1 or to_epochs < 1:
        raise UserError(f"--epochs: expected an integer >= 1, got {to_epochs}")
    factor = to_epochs / from_epochs

    def scale(epoch: int) -> int:
        # an action in a recipe's last epoch (SSL thins at 179 of 180) stays inside the run
        return max(0, min(round((epoch - origin) * factor), to_epochs - 1))

    policies = []
    for p in recipe.policies:
        if p.epochs is not None:
            policies.append(replace(p, epochs=tuple(sorted({scale(e) for e in p.epochs}))))
            continue
        start = scale(p.starting_epoch)
        end = max(start + 1, round((p.ending_epoch - origin) * factor))
        policies.append(replace(p, starting_epoch=start, ending_epoch=end,
                                frequency=max(1, min(round(p.frequency * factor),
                                                     to_epochs - 1))))
    instances = {name: inst if inst.spec.rescale is None
                 else replace(inst, args=inst.spec.rescale(inst.args, factor))
                 for name, inst in recipe.instances.items()}
    return replace(recipe, instances=instances, policies=tuple(policies))
