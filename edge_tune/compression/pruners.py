"""Distiller's pruners, on weight tensors: each turns the weights an instance names into 0/1
masks (the one-method :class:`Pruner` protocol). Which Distiller class name maps to which
pruner is :data:`edge_tune.compression.classes.CLASSES`; the recipe runner
(:mod:`edge_tune.compression.runner`) decides when (policies), re-applies the masks after
every optimiser step, and removes all-zero structures physically
(:mod:`edge_tune.compression.thinning`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import torch

from edge_tune.compression.structures import (
    GROUP_ALIASES,
    Tied,
    Weights,
    group_matrix,
    group_scores,
    level_mask,
    structure_mask,
    weakest,
)


class PrunerContext(Protocol):
    """What a pruner may ask of the run beyond the weights (the recipe runner implements it)."""

    epoch: int  # 0-based epoch now
    starting_epoch: int  # of the firing policy
    generator: torch.Generator  # seeded: random pruners repeat run to run

    def tie(self, weights: tuple[str, ...]) -> list[Tied]:
        """Partition conv weights into the groups whose output filters the graph ties."""
        ...

    def apoz(self, weights: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """Average percentage of zeros (0..1) of each filter's activation, per conv weight,
        gathered on training batches."""
        ...

    def previous(self, weight: str) -> torch.Tensor | None:
        """The mask this instance last set on ``weight`` (None: none yet)."""
        ...

    def memo(self, key: str, compute: Callable[[], float]) -> float:
        """``compute()`` the first time ``key`` is asked in this run, the same value after."""
        ...


class Pruner(Protocol):
    """Masks for the weights an instance names, at sparsity ``level`` (0..1) where it has one."""

    def masks(self, weights: Weights, args: Mapping[str, Any], level: float,
              ctx: PrunerContext) -> dict[str, torch.Tensor]:
        ...


def _sensitivity(args: Mapping[str, Any], name: str) -> float | None:
    table = args["sensitivities"]
    return table.get(name, table.get("*"))


def _sensitive_weights(weights: Weights, args: Mapping[str, Any]) -> list[str]:
    """The weights a ``sensitivities`` table names; ``'*'``: every conv/fc weight (dim > 1)
    the table does not name (Distiller also thresholds biases and BatchNorm there)."""
    table = args["sensitivities"]
    named = [w for w in table if w != "*"]
    if "*" in table:
        named += [w for w, t in weights.items() if t.dim() > 1 and w not in table]
    return named


def _stat(tensor: torch.Tensor, kind: str) -> float:
    return float(tensor.std() if kind == "std" else tensor.mean())


class SparsityLevel:
    """``SparsityLevelParameterPruner``: each weight to its own ``levels`` sparsity."""

    def masks(self, weights: Weights, args: Mapping[str, Any], level: float,
              ctx: PrunerContext) -> dict[str, torch.Tensor]:
        return {name: level_mask(weights[name], target) for name, target in args["levels"].items()}


class MagnitudeThreshold:
    """``MagnitudeParameterPruner``: zero every element with |w| <= its weight's threshold."""

    def masks(self, weights: Weights, args: Mapping[str, Any], level: float,
              ctx: PrunerContext) -> dict[str, torch.Tensor]:
        return {name: (weights[name].abs() > threshold).float()
                for name, threshold in args["thresholds"].items()}


class Sensitivity:
    """``SensitivityPruner`` (Han et al. 2015): zero |w| <= std(w) x sensitivity, the std
    taken once, when the pruner first sees the weight (as Distiller: as pruning pulls weights
    to zero, the fixed threshold traps more of them)."""

    def masks(self, weights: Weights, args: Mapping[str, Any], level: float,
              ctx: PrunerContext) -> dict[str, torch.Tensor]:
        out = {}
        for name in _sensitive_weights(weights, args):
            w = weights[name]
            std = ctx.memo(f"std:{name}", functools.partial(_stat, w, "std"))
            sensitivity = _sensitivity(args, name)
            assert sensitivity is not None  # _sensitive_weights lists only covered names
            out[name] = (w.abs() > std * sensitivity).float()
        return out


class Splicing:
    """``SplicingPruner``: dynamic network surgery (Guo et al. 2016). With a = (mean|w| +
    std|w| x s) x low_thresh_mult and b = the same x hi_thresh_mult (mean and std taken once),
    |w| < a is pruned, |w| >= b is spliced back, and in the band between the mask stays as it
    was; s grows by ``sensitivity_multiplier`` per epoch of the policy."""

    def masks(self, weights: Weights, args: Mapping[str, Any], level: float,
              ctx: PrunerContext) -> dict[str, torch.Tensor]:
        out = {}
        growth = (ctx.epoch - ctx.starting_epoch) * args.get("sensitivity_multiplier", 0.0) + 1
        for name in _sensitive_weights(weights, args):
            w = weights[name].abs()
            mean = ctx.memo(f"mean:{name}", functools.partial(_stat, w, "mean"))
            std = ctx.memo(f"std:{name}", functools.partial(_stat, w, "std"))
            sensitivity = _sensitivity(args, name)
            assert sensitivity is not None
            base = mean + std * sensitivity * growth
            previous = ctx.previous(name)
            mask = torch.ones_like(w) if previous is None else previous.clone()
            mask[w < base * args["low_thresh_mult"]] = 0
            mask[w >= base * args["hi_thresh_mult"]] = 1
            out[name] = mask
        return out


class Magnitude:
    """``AutomatedGradualPruner``: every listed weight to the schedule's current ``level``."""

    def masks(self, weights: Weights, args: Mapping[str, Any], level: float,
              ctx: PrunerContext) -> dict[str, torch.Tensor]:
        return {name: level_mask(weights[name], level) for name in args["weights"]}


def _levels(args: Mapping[str, Any], level: float) -> dict[str, tuple[float, str]]:
    """Weight -> (level, group type): the listed weights at ``level``, or Distiller's older
    form ``reg_regims: {weight: [level, group type]}``."""
    if "reg_regims" in args:
        return dict(args["reg_regims"])
    return {name: (level, args["group_type"]) for name in args["weights"]}


def _ranked(weights: Weights, args: Mapping[str, Any], level: float, ctx: PrunerContext,
            score: Callable[[list[str], str], torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``level`` fraction of lowest-``score`` groups of every listed weight; filters
    tied by a residual add are scored together (summed; ``group_dependency: Leader``: the
    group's first listed weight alone), so thinning can remove them consistently. With
    ``Leader``, channels (and other groups) of every listed weight follow the first weight's
    ranking: the readers of one residual stream lose the same channels (Distiller's
    ResNet-56 channel ranking), which thinning can then remove with their producers."""
    out = {}
    block = tuple(args.get("block_shape", (1, 1, 1, 1)))
    by_type: dict[tuple[str, float], list[str]] = {}
    for name, (lvl, group_type) in _levels(args, level).items():
        by_type.setdefault((GROUP_ALIASES.get(group_type, group_type), lvl), []).append(name)
    leader = args.get("group_dependency") == "Leader"
    for (group_type, lvl), names in by_type.items():
        if group_type == "Filters":
            groups = ctx.tie(tuple(names))
        elif leader:  # one mask for every listed weight of the leader's width: its own
            width = group_matrix(weights[names[0]], group_type, block).shape[0]
            same = [n for n in names if group_matrix(weights[n], group_type, block).shape[0]
                    == width]
            groups = [Tied(same)] + [Tied([n]) for n in names if n not in same]
        else:
            groups = [Tied([n]) for n in names]
        for group in groups:
            if not group.removable:
                continue
            leaders = group.names[:1] if args.get("group_dependency") == "Leader" else group.names
            scores = score(leaders, group_type)
            drop = weakest(scores, lvl, group.channel_groups)
            out.update({n: structure_mask(weights[n], drop, group_type, block)
                        for n in group.names})
    return out


class L1RankedStructure:
    """``L1RankedStructureParameterPruner[_AGP]``: drop the ``level`` fraction of groups with
    the lowest mean |w| (filters, channels, fc rows, blocks)."""

    def masks(self, weights: Weights, args: Mapping[str, Any], level: float,
              ctx: PrunerContext) -> dict[str, torch.Tensor]:
        block = tuple(args.get("block_shape", (1, 1, 1, 1)))
        return _ranked(weights, args, level, ctx, lambda names, kind: torch.stack(
            [group_scores(weights[n], kind, block) for n in names]).sum(0))


class APoZRanked:
    """``ActivationAPoZRankedFilterPruner[_AGP]`` (network trimming, Hu et al. 2016): drop
    the ``level`` fraction of filters whose activations are most often zero (APoZ)."""

    def masks(self, weights: Weights, args: Mapping[str, Any], level: float,
              ctx: PrunerContext) -> dict[str, torch.Tensor]:
        apoz = ctx.apoz(tuple(_levels(args, level)))
        return _ranked(weights, args, level, ctx,
                       lambda names, kind: -torch.stack([apoz[n] for n in names]).sum(0))


class RandomLevelStructure:
    """``RandomLevelStructureParameterPruner``: L1-ranked structure pruning at a level drawn
    uniformly from ``sparsity_range`` each time it fires."""

    def masks(self, weights: Weights, args: Mapping[str, Any], level: float,
              ctx: PrunerContext) -> dict[str, torch.Tensor]:
        low, high = args["sparsity_range"]
        drawn = low + (high - low) * float(torch.rand((), generator=ctx.generator))
        return L1RankedStructure().masks(weights, args, drawn, ctx)


class BernoulliFilters:
    """``BernoulliFilterPruner[_AGP]`` (drop-filter): each filter dropped with probability
    ``level``, drawn anew each time it fires; tied filters drop together."""

    def masks(self, weights: Weights, args: Mapping[str, Any], level: float,
              ctx: PrunerContext) -> dict[str, torch.Tensor]:
        out = {}
        for group in ctx.tie(tuple(args["weights"])):
            count = weights[group.names[0]].shape[0]
            drop = torch.nonzero(torch.rand(count, generator=ctx.generator) < level).flatten()
            out.update({n: structure_mask(weights[n], drop, "Filters") for n in group.names})
        return out


