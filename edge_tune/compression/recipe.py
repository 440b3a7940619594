"""Distiller's YAML compression-scheduling recipes: loading and validation.

A recipe has top-level ``version`` (optional), ``pruners``, ``regularizers``, ``quantizers``,
``lr_schedulers``, ``extensions`` (each ``name: {class: X, ...}``) and ``policies`` (each names
one instance, optionally with ``args``, and fires at ``epochs: [...]`` or from
``starting_epoch`` to ``ending_epoch`` every ``frequency`` epochs). Every error names its key:
``pruners.low_pruner.final_sparsity: expected 0 <= x < 1, got 1.3``. Weight names may carry
Distiller's ``module.`` prefix (its models were wrapped in DataParallel); it is dropped.

Each class is checked and given its behaviour by its entry in
:data:`edge_tune.compression.classes.CLASSES`; :mod:`edge_tune.compression.runner` runs a
loaded recipe.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edge_tune.compression.checks import epochs_int, strip_prefix
from edge_tune.compression.classes import (
    CLASSES,
    POLICY_ARGS,
    POLICY_IGNORED,
    SECTIONS,
    ClassSpec,
    overrides_ignored,
)
from edge_tune.core.console import log_stderr
from edge_tune.core.errors import UserError, unknown
from edge_tune.core.files import read_yaml


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
    freq = epochs_int(f"{path}.frequency", raw.get("frequency", 1))
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
                for key in overrides_ignored(inst.args)]
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


DEFAULT_RECIPE_EPOCHS = 180  # Distiller's CIFAR runs, when a recipe's header says nothing


def fit_epochs(recipe: Recipe, recipe_epochs: int | None,
               epochs: int | None) -> tuple[Recipe, int]:
    """The recipe rescaled from ``recipe_epochs`` (None: what its header's command line
    says, else 180) onto ``epochs`` (None: as written). A recipe whose header resumes a run
    is mapped from its first policy's epoch (``network_surgery``: 180-360 -> 0-N)."""
    if recipe_epochs is None:
        recipe_epochs = recipe.header_epochs or DEFAULT_RECIPE_EPOCHS
        where = "its header" if recipe.header_epochs else "the default"
        log_stderr(f"recipe written for {recipe_epochs} epochs ({where}; --recipe-epochs "
                   "to change)")
    if recipe_epochs < 1:
        raise UserError(f"--recipe-epochs: expected an integer >= 1, got {recipe_epochs}")
    if epochs is None:
        return recipe, recipe_epochs
    if epochs < 0:
        raise UserError(f"--epochs: expected an integer >= 0, got {epochs}")
    origin = recipe.origin()
    if epochs == 0:
        log_stderr("--epochs 0: the recipe's epoch-0 actions only, no training")
    elif epochs != recipe_epochs or origin:
        recipe = rescale(recipe, recipe_epochs, epochs, origin)
        scaled = [i.name for i in recipe.instances.values() if i.section == "regularizers"]
        note = (f"; strength of {', '.join(scaled)} x{recipe_epochs / epochs:g}"
                if scaled else "")
        start = f" (resumed at epoch {origin})" if origin else ""
        log_stderr(f"recipe rescaled from {recipe_epochs}{start} to {epochs} epochs{note}")
    return recipe, epochs


