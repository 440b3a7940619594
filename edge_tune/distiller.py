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

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from edge_tune.config import read_yaml
from edge_tune.errors import UserError, unknown
from edge_tune.prune import (
    GroupLasso,
    L1RankedStructure,
    Magnitude,
    MagnitudeThreshold,
    Pruner,
    Regularizer,
    SparsityLevel,
)

SECTIONS = {"pruners": "pruner", "regularizers": "regularizer", "quantizers": "quantizer",
            "lr_schedulers": "lr_scheduler", "extensions": "extension"}
GROUP_TYPES = ("Filters", "Channels", "Rows")

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
    if not isinstance(value, list) or not value or not all(isinstance(w, str) for w in value):
        raise UserError(f"{path}: expected a non-empty list of weight names, got {value!r}")
    return tuple(strip_prefix(w) for w in value)


def _group_type(path: str, value: Any) -> str:
    if value not in GROUP_TYPES:
        raise UserError(f"{path}: expected one of {', '.join(GROUP_TYPES)}, got {value!r}")
    return str(value)


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


def _reg_regims(path: str, value: Any) -> dict[str, tuple[float, str]]:
    if not isinstance(value, dict) or not value:
        raise UserError(f"{path}: expected a mapping of weight name: [strength, group type], "
                        f"got {value!r}")
    out = {}
    for k, v in value.items():
        if not isinstance(v, list) or len(v) != 2:
            raise UserError(f"{path}.{k}: expected [strength, group type], got {v!r}")
        out[strip_prefix(str(k))] = (_positive(f"{path}.{k}[0]", v[0]),
                                     _group_type(f"{path}.{k}[1]", v[1]))
    return out


def _milestones(path: str, value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise UserError(f"{path}: expected a non-empty list of epochs, got {value!r}")
    return tuple(_epochs_int(f"{path}[{i}]", v) for i, v in enumerate(value))


def _bits(path: str, value: Any) -> int:
    if value != 8:
        raise UserError(f"{path}: only 8-bit (int8, NNCF) is supported, got {value!r}")
    return 8


def _text(path: str, value: Any) -> str:
    if not isinstance(value, str):
        raise UserError(f"{path}: expected a string, got {value!r}")
    return value


def _agp_order(path: str, args: Args) -> None:
    if args["final_sparsity"] < args["initial_sparsity"]:
        raise UserError(f"{path}.final_sparsity: expected >= initial_sparsity "
                        f"{args['initial_sparsity']}, got {args['final_sparsity']}")


@dataclass(frozen=True)
class ClassSpec:
    """A Distiller class: its section, argument checks and behaviour, in one place.

    Exactly the behaviour field of its section is set: ``pruner`` (pruners), ``regularizer``
    (regularizers), ``lr_scheduler`` (lr_schedulers), ``removes`` (extensions: the structures
    thinning removes) or ``quantizes`` (quantizers: int8 after training).
    """

    section: str
    required: dict[str, Check]
    optional: dict[str, Check] = field(default_factory=dict)
    pruner: Pruner | None = None
    regularizer: Regularizer | None = None
    lr_scheduler: LRBuilder | None = None
    removes: tuple[str, ...] = ()  # "Filters" and/or "Channels"
    quantizes: bool = False
    # its arguments for a run ``factor`` times as long (epochs in the arguments scale)
    rescale: Callable[[Args, float], Args] | None = None
    check: Callable[[str, Args], None] | None = None  # cross-argument checks


def _scaled_epochs(key: str) -> Callable[[Args, float], Args]:
    return lambda args, factor: {**args, key: max(1, round(args[key] * factor))}


def _scaled_milestones(args: Args, factor: float) -> Args:
    return {**args, "milestones": tuple(max(1, round(m * factor)) for m in args["milestones"])}


def _scaled_strength(args: Args, factor: float) -> Args:
    # a regulariser acts on every mini-batch: a run 1/factor as long needs 1/factor the strength
    # to apply comparable shrinkage (and Distiller's Mean_Abs threshold is the strength)
    return {**args, "reg_regims": {w: (strength / factor, group)
                                   for w, (strength, group) in args["reg_regims"].items()}}


_LR = torch.optim.lr_scheduler
_AGP = {"initial_sparsity": _ratio, "final_sparsity": _ratio, "weights": _weights}
_THINNER = {"thinning_func_str": _text, "arch": _text, "dataset": _text}
_GAMMA = {"gamma": _gamma}

CLASSES: dict[str, ClassSpec] = {
    "AutomatedGradualPruner": ClassSpec("pruners", dict(_AGP), pruner=Magnitude(),
                                        check=_agp_order),
    "MagnitudeParameterPruner": ClassSpec("pruners", {"thresholds": _thresholds},
                                          pruner=MagnitudeThreshold()),
    "SparsityLevelParameterPruner": ClassSpec("pruners", {"levels": _levels},
                                              pruner=SparsityLevel()),
    "L1RankedStructureParameterPruner": ClassSpec(
        "pruners", {"group_type": _group_type, "desired_sparsity": _ratio, "weights": _weights},
        pruner=L1RankedStructure()),
    "L1RankedStructureParameterPruner_AGP": ClassSpec(
        "pruners", {**_AGP, "group_type": _group_type}, pruner=L1RankedStructure(),
        check=_agp_order),
    "GroupLassoRegularizer": ClassSpec("regularizers", {"reg_regims": _reg_regims},
                                       {"threshold_criteria": _text}, regularizer=GroupLasso(),
                                       rescale=_scaled_strength),
    "StepLR": ClassSpec("lr_schedulers", {"step_size": _epochs_int}, dict(_GAMMA),
                        lr_scheduler=lambda a, opt: _LR.StepLR(opt, a["step_size"],
                                                               a.get("gamma", 0.1)),
                        rescale=_scaled_epochs("step_size")),
    "MultiStepLR": ClassSpec("lr_schedulers", {"milestones": _milestones}, dict(_GAMMA),
                             lr_scheduler=lambda a, opt: _LR.MultiStepLR(
                                 opt, list(a["milestones"]), a.get("gamma", 0.1)),
                             rescale=_scaled_milestones),
    "ExponentialLR": ClassSpec("lr_schedulers", dict(_GAMMA),
                               lr_scheduler=lambda a, opt: _LR.ExponentialLR(opt, a["gamma"])),
    "CosineAnnealingLR": ClassSpec("lr_schedulers", {"T_max": _epochs_int},
                                   {"eta_min": _non_negative},
                                   lr_scheduler=lambda a, opt: _LR.CosineAnnealingLR(
                                       opt, a["T_max"], a.get("eta_min", 0)),
                                   rescale=_scaled_epochs("T_max")),
    "FilterRemover": ClassSpec("extensions", {}, dict(_THINNER), removes=("Filters",)),
    "ChannelRemover": ClassSpec("extensions", {}, dict(_THINNER), removes=("Channels",)),
    "StructureRemover": ClassSpec("extensions", {}, dict(_THINNER),
                                  removes=("Filters", "Channels")),
    "PostTrainLinearQuantizer": ClassSpec(
        "quantizers", {}, {"bits_activations": _bits, "bits_parameters": _bits,
                           "bits_accum": lambda p, v: v, "mode": _text, "backend": _text,
                           "per_channel_wts": lambda p, v: v}, quantizes=True),
}


def strip_prefix(name: str) -> str:
    """A weight name without Distiller's DataParallel ``module.`` prefix."""
    return name.removeprefix("module.")


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
        for key in ("weights", "levels", "thresholds", "reg_regims"):
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
    args = body.get("args") or {}
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
    return Recipe(instances, tuple(_policy(i, p, instances) for i, p in enumerate(policies)),
                  source)


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file (safe YAML)."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"--recipe: no such file {str(file)!r}")
    return recipe_from_dict(read_yaml(file), str(file))


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


def rescale(recipe: Recipe, from_epochs: int, to_epochs: int) -> Recipe:
    """Map every policy's epochs from a ``from_epochs`` run onto ``to_epochs`` proportionally.

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
        return min(round(epoch * factor), to_epochs - 1)

    policies = []
    for p in recipe.policies:
        if p.epochs is not None:
            policies.append(replace(p, epochs=tuple(sorted({scale(e) for e in p.epochs}))))
            continue
        start = scale(p.starting_epoch)
        end = max(start + 1, round(p.ending_epoch * factor))
        policies.append(replace(p, starting_epoch=start, ending_epoch=end,
                                frequency=max(1, scale(p.frequency))))
    instances = {name: inst if inst.spec.rescale is None
                 else replace(inst, args=inst.spec.rescale(inst.args, factor))
                 for name, inst in recipe.instances.items()}
    return Recipe(instances, tuple(policies), recipe.source)
