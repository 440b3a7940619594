"""Distiller's classes: :data:`CLASSES` is the one registry, each :class:`ClassSpec` holding a
class's section, the checks of its arguments (:mod:`edge_tune.compression.checks`) and its
behaviour: the pruner or regulariser that computes it, the LR scheduler it builds, the
structures it removes, the int8 options a quantizer's arguments map to, how its arguments
rescale with the run's length. :mod:`edge_tune.compression.recipe` loads recipes against it
and :mod:`edge_tune.compression.runner` runs them from it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from edge_tune.compression import checks
from edge_tune.compression.checks import Args, Check, strip_prefix
from edge_tune.compression.pruners import (
    APoZRanked,
    BernoulliFilters,
    L1RankedStructure,
    Magnitude,
    MagnitudeThreshold,
    Pruner,
    RandomLevelStructure,
    Sensitivity,
    SparsityLevel,
    Splicing,
)
from edge_tune.compression.quantize import Int8Options
from edge_tune.compression.regularizers import L1, GroupLasso, GroupVariance, Regularizer
from edge_tune.core.errors import UserError, unknown

SECTIONS = {"pruners": "pruner", "regularizers": "regularizer", "quantizers": "quantizer",
            "lr_schedulers": "lr_scheduler", "extensions": "extension"}

LRBuilder = Callable[[Args, torch.optim.Optimizer], Any]  # a torch LR scheduler


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
    return checks.one_of(*MODES)(path, value)


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
        bits = {k: checks.bits(f"{path}.{layer}.{k}", v) for k, v in settings.items() if k in BITS}
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
    "bits_activations": checks.bits, "bits_parameters": checks.bits, "bits_weights": checks.bits,
    "bits_accum": _only(32, "OpenVINO accumulates int8 products in 32 bits"),
    "mode": _mode, "per_channel_wts": checks.flag, "clip_acts": _clip, "overrides": _overrides,
    "backend": checks.one_of("nncf"), "model_activation_stats": checks.text,
    "inputs_quant_auto_fallback": checks.flag,
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
    "bits_activations": checks.bits, "bits_weights": checks.bits, "bits_parameters": checks.bits,
    "num_bits_inputs": checks.bits, "mode": _mode, "per_channel_wts": checks.flag,
    "ema_decay": checks.gamma, "overrides": _overrides, "bits_overrides": _overrides,
    "quantize_bias": checks.flag, "act_clip_init_val": checks.positive}

_QAT_IGNORED = {"ema_decay": "NNCF learns the ranges with the weights (from calibration)",
                "num_bits_inputs": "8 is NNCF's input precision",
                "quantize_bias": "OpenVINO keeps biases in 32 bits",
                "act_clip_init_val": "NNCF learns the ranges with the weights (from "
                                     "calibration)"}


def overrides_ignored(args: Args) -> list[str]:
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

_AGP = {"initial_sparsity": checks.ratio, "final_sparsity": checks.ratio,
        "weights": checks.weight_names}

_THINNER = {"thinning_func_str": checks.one_of("remove_filters", "remove_channels",
                                         "resnet_cifar_remove_filters",
                                         "resnet_cifar_remove_channels"),
            "arch": checks.text, "dataset": checks.text}

_THINNER_IGNORED = {"arch": "edge_tune thins the configured model, whatever its name",
                    "dataset": "edge_tune thins the configured model, whatever its data"}

_GAMMA = {"gamma": checks.gamma}

_STRUCTURE = {"group_dependency": checks.one_of("Leader"), "kwargs": checks.block_kwargs}

_SPLICING = {"low_thresh_mult": checks.positive, "hi_thresh_mult": checks.positive,
             "sensitivities": checks.sensitivities}


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
                                        check=checks.agp_order),
    "MagnitudeParameterPruner": ClassSpec("pruners", {"thresholds": checks.thresholds},
                                          pruner=MagnitudeThreshold()),
    "SparsityLevelParameterPruner": ClassSpec("pruners", {"levels": checks.levels},
                                              pruner=SparsityLevel()),
    "SensitivityPruner": ClassSpec("pruners", {"sensitivities": checks.sensitivities},
                                   pruner=Sensitivity()),
    "SplicingPruner": ClassSpec("pruners", dict(_SPLICING),
                                {"sensitivity_multiplier": checks.non_negative}, pruner=Splicing()),
    "L1RankedStructureParameterPruner": ClassSpec(
        "pruners", {}, {"group_type": checks.group_type, "desired_sparsity": checks.ratio,
                        "weights": checks.weight_names, "reg_regims": checks.rank_regims,
                        **_STRUCTURE},
        pruner=L1RankedStructure(), check=checks.ranked_checks),
    "L1RankedStructureParameterPruner_AGP": ClassSpec(
        "pruners", {**_AGP, "group_type": checks.group_type}, dict(_STRUCTURE),
        pruner=L1RankedStructure(), check=checks.agp_blocks),
    "ActivationAPoZRankedFilterPruner": ClassSpec(
        "pruners", {"group_type": checks.one_of("Filters"), "desired_sparsity": checks.ratio,
                    "weights": checks.weight_names}, {"group_dependency": checks.one_of("Leader")},
        pruner=APoZRanked()),
    "ActivationAPoZRankedFilterPruner_AGP": ClassSpec(
        "pruners", {**_AGP, "group_type": checks.one_of("Filters")},
        {"group_dependency": checks.one_of("Leader")}, pruner=APoZRanked(), check=checks.agp_order),
    "RandomLevelStructureParameterPruner": ClassSpec(
        "pruners", {"group_type": checks.group_type, "sparsity_range": checks.sparsity_range,
                    "weights": checks.weight_names},
        dict(_STRUCTURE), pruner=RandomLevelStructure(), check=checks.blocks),
    "BernoulliFilterPruner": ClassSpec(
        "pruners", {"group_type": checks.one_of("Filters"), "desired_sparsity": checks.ratio,
                    "weights": checks.weight_names}, pruner=BernoulliFilters()),
    "BernoulliFilterPruner_AGP": ClassSpec(
        "pruners", {**_AGP, "group_type": checks.one_of("Filters")}, pruner=BernoulliFilters(),
        check=checks.agp_order),
    "GroupLassoRegularizer": ClassSpec("regularizers", {"reg_regims": checks.reg_regims},
                                       {"threshold_criteria": checks.one_of("Mean_Abs", "Max")},
                                       regularizer=GroupLasso(), rescale=_scaled_strength),
    "GroupVarianceRegularizer": ClassSpec("regularizers", {"reg_regims": checks.channel_regims},
                                          regularizer=GroupVariance(),
                                          rescale=_scaled_strength),
    "L1Regularizer": ClassSpec("regularizers", {"reg_regims": checks.strengths},
                               {"threshold_criteria": checks.one_of("Mean_Abs", "Max")},
                               regularizer=L1(), rescale=_scaled_strength),
    "StepLR": ClassSpec("lr_schedulers", {"step_size": checks.epochs_int}, dict(_GAMMA),
                        lr_scheduler=lambda a, opt: _LR.StepLR(opt, a["step_size"],
                                                               a.get("gamma", 0.1)),
                        rescale=_scaled_epochs("step_size")),
    "MultiStepLR": ClassSpec("lr_schedulers", {"milestones": checks.milestones}, dict(_GAMMA),
                             lr_scheduler=lambda a, opt: _LR.MultiStepLR(
                                 opt, list(a["milestones"]), a.get("gamma", 0.1)),
                             rescale=_scaled_milestones),
    "MultiStepMultiGammaLR": ClassSpec("lr_schedulers", {"milestones": checks.milestones,
                                                         "gammas": checks.gammas},
                                       lr_scheduler=_lambda_lr, rescale=_scaled_milestones,
                                       check=_gammas_match),
    "ExponentialLR": ClassSpec("lr_schedulers", dict(_GAMMA),
                               lr_scheduler=lambda a, opt: _LR.ExponentialLR(opt, a["gamma"])),
    "CosineAnnealingLR": ClassSpec("lr_schedulers", {"T_max": checks.epochs_int},
                                   {"eta_min": checks.non_negative},
                                   lr_scheduler=lambda a, opt: _LR.CosineAnnealingLR(
                                       opt, a["T_max"], a.get("eta_min", 0)),
                                   rescale=_scaled_epochs("T_max")),
    "PolynomialLR": ClassSpec("lr_schedulers",
                              {"T_max": checks.epochs_int, "power": checks.positive},
                              lr_scheduler=lambda a, opt: _LR.PolynomialLR(
                                  opt, a["T_max"], a["power"]),
                              rescale=_scaled_epochs("T_max")),
    "ReduceLROnPlateau": ClassSpec(
        "lr_schedulers", {}, {"mode": checks.one_of("min", "max"), "factor": checks.gamma,
                              "patience": checks.count, "threshold": checks.non_negative,
                              "threshold_mode": checks.one_of("rel", "abs"),
                              "cooldown": checks.count,
                              "min_lr": checks.non_negative, "eps": checks.non_negative,
                              "verbose": checks.flag},
        lr_scheduler=_plateau, rescale=_scaled_counts("patience", "cooldown"), metric=True,
        ignored={"verbose": "edge_tune logs every epoch's learning rate itself"}),
    "FilterRemover": _thinner("Filters"),
    "ResnetCifarFilterRemover": _thinner("Filters"),
    "ChannelRemover": _thinner("Channels"),
    "ResnetCifarChannelRemover": _thinner("Channels"),
    "StructureRemover": _thinner("Filters", "Channels"),
    "PostTrainLinearQuantizer": _ptq(),
    "QuantAwareTrainRangeLinearQuantizer": _qat(),
    # quantisation-aware training below 8 bits: checks.bits refuses fewer bits by name; at 8 bits
    # they train as int8 through NNCF like the linear one
    "DorefaQuantizer": _qat(),
    "PACTQuantizer": _qat(),
    "WRPNQuantizer": _qat(),
}

# policy ``args`` a pruner or regulariser policy accepts (Distiller's PruningPolicy)
POLICY_ARGS: dict[str, dict[str, Check]] = {
    "pruner": {"keep_mask": checks.flag, "mini_batch_pruning_frequency": checks.count,
               "mask_on_forward_only": checks.flag, "use_double_copies": checks.flag,
               "mask_gradients": checks.flag, "discard_masks_at_minibatch_end": checks.flag,
               "skip_first_minibatch": checks.flag, "fold_batchnorm": checks.flag,
               "levels": checks.levels},
    "regularizer": {"keep_mask": checks.flag},
}

POLICY_IGNORED = {"skip_first_minibatch": "the first masks are set at the start of the epoch "
                                          "either way (one mini-batch of difference)"}
