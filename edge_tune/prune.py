"""Pruners and regularisers: what Distiller's classes compute, on weight tensors.

A pruner turns weights into 0/1 masks (the one-method :class:`Pruner` protocol); a regulariser
adds a penalty to the loss and may mask the groups it drove to zero. Which Distiller class name
maps to which implementation is :data:`edge_tune.distiller.CLASSES` (one entry per class). The
recipe runner (:mod:`edge_tune.scheduler`) decides when (policies), re-applies the masks after
every optimiser step, and removes all-zero structures physically (thinning, torch-pruning).
Fine-grained masks leave tensors dense; structure masks (whole filters, input channels, fc rows)
are what thinning can remove.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from edge_tune.recipe import Schedule

Weights = Mapping[str, torch.Tensor]  # weight name (no "module.") -> tensor (detached)


@dataclass(frozen=True)
class Tied:
    """Conv weights whose output filters must go together (a residual add, a depthwise conv,
    a concatenation ties them); ``channel_groups`` > 1 when a grouped conv reads them, which
    torch-pruning cuts only at the same positions in every group; not ``removable`` when
    thinning could not take them out (zeros there would cost accuracy and buy no speed)."""

    names: list[str]
    channel_groups: int = 1
    removable: bool = True  # False: thinning could not remove them, so they are not masked


class Context(Protocol):
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
              ctx: Context) -> dict[str, torch.Tensor]:
        ...


def level_mask(weight: torch.Tensor, level: float) -> torch.Tensor:
    """Mask keeping all but the ``level`` fraction of smallest-magnitude elements."""
    count = round(level * weight.numel())
    if count <= 0:
        return torch.ones_like(weight)
    threshold = weight.abs().flatten().kthvalue(count).values
    return (weight.abs() > threshold).to(weight.dtype)


# Distiller's group types: Filters (= 3D, whole filters), Channels (input channels), Rows (of
# an fc weight: input features), 2D (= Kernels: one kxk kernel per filter and channel), 4D (the
# whole layer), Blocks (``block_shape`` [filters, channels, h, w])
GROUP_ALIASES = {"3D": "Filters", "Kernels": "2D"}


def group_dim(group_type: str) -> int:
    """The weight dimension a filter/channel/row group indexes: filters are dim 0; channels
    and fc rows dim 1 (Distiller's "Rows" of a fully-connected weight are counted on its
    transpose: input features)."""
    return 0 if GROUP_ALIASES.get(group_type, group_type) == "Filters" else 1


def _block_view(weight: torch.Tensor, shape: tuple[int, ...]) -> tuple[torch.Tensor, list[int]]:
    full = list(weight.shape) + [1] * (4 - weight.dim())
    if any(n % b for n, b in zip(full, shape, strict=True)):
        raise ValueError(f"block_shape {list(shape)} does not divide weight shape {full}")
    split = [x for n, b in zip(full, shape, strict=True) for x in (n // b, b)]
    return weight.reshape(split).permute(0, 2, 4, 6, 1, 3, 5, 7), split


def group_matrix(weight: torch.Tensor, group_type: str,
                 block_shape: tuple[int, ...] = (1, 1, 1, 1)) -> torch.Tensor:
    """The weight as (groups, elements per group) for a Distiller group type."""
    kind = GROUP_ALIASES.get(group_type, group_type)
    if kind == "4D":
        return weight.reshape(1, -1)
    if kind == "2D":
        return weight.reshape(weight.shape[0] * weight.shape[1], -1)
    if kind == "Blocks":
        view, split = _block_view(weight, block_shape)
        return view.reshape(split[0] * split[2] * split[4] * split[6], -1)
    dim = group_dim(kind)
    return weight.transpose(0, dim).reshape(weight.shape[dim], -1)


def expand(keep: torch.Tensor, weight: torch.Tensor, group_type: str,
           block_shape: tuple[int, ...] = (1, 1, 1, 1)) -> torch.Tensor:
    """A 0/1 mask of ``weight``'s shape from one value per group (:func:`group_matrix`)."""
    kind = GROUP_ALIASES.get(group_type, group_type)
    keep = keep.to(weight.dtype)
    if kind == "4D":
        return keep.reshape(()).expand_as(weight).clone()
    if kind == "2D":
        return keep.reshape(weight.shape[:2] + (1,) * (weight.dim() - 2)).expand_as(weight).clone()
    if kind == "Blocks":
        view, split = _block_view(torch.ones_like(weight), block_shape)
        grid = keep.reshape(split[0], split[2], split[4], split[6], 1, 1, 1, 1) * view
        return grid.permute(0, 4, 1, 5, 2, 6, 3, 7).reshape(weight.shape).contiguous()
    shape = [1] * weight.dim()
    shape[group_dim(kind)] = -1
    return keep.reshape(shape).expand_as(weight).clone()


def group_scores(weight: torch.Tensor, group_type: str,
                 block_shape: tuple[int, ...] = (1, 1, 1, 1)) -> torch.Tensor:
    """Mean |w| of every group (filter, input channel, fc row, kernel, block, layer)."""
    return group_matrix(weight, group_type, block_shape).abs().mean(dim=1)


def structure_mask(weight: torch.Tensor, drop: torch.Tensor, group_type: str,
                   block_shape: tuple[int, ...] = (1, 1, 1, 1)) -> torch.Tensor:
    """Mask zeroing the groups ``drop`` (indices into :func:`group_matrix`'s rows)."""
    keep = torch.ones(group_matrix(weight, group_type, block_shape).shape[0],
                      device=weight.device)
    keep[drop] = 0
    return expand(keep, weight, group_type, block_shape)


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
              ctx: Context) -> dict[str, torch.Tensor]:
        return {name: level_mask(weights[name], target) for name, target in args["levels"].items()}


class MagnitudeThreshold:
    """``MagnitudeParameterPruner``: zero every element with |w| <= its weight's threshold."""

    def masks(self, weights: Weights, args: Mapping[str, Any], level: float,
              ctx: Context) -> dict[str, torch.Tensor]:
        return {name: (weights[name].abs() > threshold).float()
                for name, threshold in args["thresholds"].items()}


class Sensitivity:
    """``SensitivityPruner`` (Han et al. 2015): zero |w| <= std(w) x sensitivity, the std
    taken once, when the pruner first sees the weight (as Distiller: as pruning pulls weights
    to zero, the fixed threshold traps more of them)."""

    def masks(self, weights: Weights, args: Mapping[str, Any], level: float,
              ctx: Context) -> dict[str, torch.Tensor]:
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
              ctx: Context) -> dict[str, torch.Tensor]:
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
              ctx: Context) -> dict[str, torch.Tensor]:
        return {name: level_mask(weights[name], level) for name in args["weights"]}


def _levels(args: Mapping[str, Any], level: float) -> dict[str, tuple[float, str]]:
    """Weight -> (level, group type): the listed weights at ``level``, or Distiller's older
    form ``reg_regims: {weight: [level, group type]}``."""
    if "reg_regims" in args:
        return dict(args["reg_regims"])
    return {name: (level, args["group_type"]) for name in args["weights"]}


def _ranked(weights: Weights, args: Mapping[str, Any], level: float, ctx: Context,
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
              ctx: Context) -> dict[str, torch.Tensor]:
        block = tuple(args.get("block_shape", (1, 1, 1, 1)))
        return _ranked(weights, args, level, ctx, lambda names, kind: torch.stack(
            [group_scores(weights[n], kind, block) for n in names]).sum(0))


class APoZRanked:
    """``ActivationAPoZRankedFilterPruner[_AGP]`` (network trimming, Hu et al. 2016): drop
    the ``level`` fraction of filters whose activations are most often zero (APoZ)."""

    def masks(self, weights: Weights, args: Mapping[str, Any], level: float,
              ctx: Context) -> dict[str, torch.Tensor]:
        apoz = ctx.apoz(tuple(_levels(args, level)))
        return _ranked(weights, args, level, ctx,
                       lambda names, kind: -torch.stack([apoz[n] for n in names]).sum(0))


class RandomLevelStructure:
    """``RandomLevelStructureParameterPruner``: L1-ranked structure pruning at a level drawn
    uniformly from ``sparsity_range`` each time it fires."""

    def masks(self, weights: Weights, args: Mapping[str, Any], level: float,
              ctx: Context) -> dict[str, torch.Tensor]:
        low, high = args["sparsity_range"]
        drawn = low + (high - low) * float(torch.rand((), generator=ctx.generator))
        return L1RankedStructure().masks(weights, args, drawn, ctx)


class BernoulliFilters:
    """``BernoulliFilterPruner[_AGP]`` (drop-filter): each filter dropped with probability
    ``level``, drawn anew each time it fires; tied filters drop together."""

    def masks(self, weights: Weights, args: Mapping[str, Any], level: float,
              ctx: Context) -> dict[str, torch.Tensor]:
        out = {}
        for group in ctx.tie(tuple(args["weights"])):
            count = weights[group.names[0]].shape[0]
            drop = torch.nonzero(torch.rand(count, generator=ctx.generator) < level).flatten()
            out.update({n: structure_mask(weights[n], drop, "Filters") for n in group.names})
        return out


def weakest(scores: torch.Tensor, level: float, channel_groups: int = 1) -> torch.Tensor:
    """Indices of the ``level`` fraction of lowest scores; with ``channel_groups`` > 1 the
    same positions in every group (their scores summed over the groups)."""
    per = scores.numel() // channel_groups
    positions = scores.view(channel_groups, per).sum(0).argsort()[:round(level * per)]
    offsets = per * torch.arange(channel_groups, device=positions.device)[:, None]
    return (positions[None, :] + offsets).flatten()


def _device(params: Mapping[str, torch.Tensor]) -> torch.device:
    """Where the model's weights live (a penalty is summed there)."""
    return next(iter(params.values())).device if params else torch.device("cpu")


class GroupLasso:
    """``GroupLassoRegularizer``: strength x the sum of its groups' L2 norms, per weight;
    with ``threshold_criteria`` (Mean_Abs or Max) groups below the strength (the recipe's,
    ``thresholds``, when the run was rescaled) are masked after every epoch, as Distiller
    does."""

    def penalty(self, params: Mapping[str, torch.Tensor], args: Mapping[str, Any]) -> torch.Tensor:
        total = torch.zeros((), device=_device(params))
        for name, (strength, group_type) in args["reg_regims"].items():
            total = total + strength * group_matrix(params[name], group_type).norm(dim=1).sum()
        return total

    def masks(self, weights: Weights, args: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        criterion = args.get("threshold_criteria")
        if criterion is None:
            return {}
        out = {}
        for name, (strength, group_type) in args["reg_regims"].items():
            flat = group_matrix(weights[name], group_type).abs()
            score = flat.max(dim=1).values if criterion == "Max" else flat.mean(dim=1)
            threshold = args.get("thresholds", {}).get(name, strength)
            out[name] = expand((score >= threshold).float(), weights[name], group_type)
        return out


class GroupVariance:
    """``GroupVarianceRegularizer`` (Torfi et al. 2018): strength / the variance of a weight's
    channel L2 norms, pushing channels apart so group lasso can zero the weak ones."""

    def penalty(self, params: Mapping[str, torch.Tensor], args: Mapping[str, Any]) -> torch.Tensor:
        total = torch.zeros((), device=_device(params))
        for name, (strength, group_type) in args["reg_regims"].items():
            norms = group_matrix(params[name], group_type).norm(dim=1)
            total = total + strength / norms.var().clamp_min(1e-12)
        return total

    def masks(self, weights: Weights, args: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        return {}


class L1:
    """``L1Regularizer``: strength x sum |w| per weight; with ``threshold_criteria`` elements
    with |w| <= strength are masked after every epoch."""

    def penalty(self, params: Mapping[str, torch.Tensor], args: Mapping[str, Any]) -> torch.Tensor:
        total = torch.zeros((), device=_device(params))
        for name, strength in args["reg_regims"].items():
            total = total + strength * params[name].abs().sum()
        return total

    def masks(self, weights: Weights, args: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        if args.get("threshold_criteria") is None:
            return {}
        thresholds = args.get("thresholds", {})
        return {name: (weights[name].abs() > thresholds.get(name, strength)).float()
                for name, strength in args["reg_regims"].items()}


class Regularizer(Protocol):
    """A loss penalty while its policy is active, and the masks it leaves after each epoch."""

    def penalty(self, params: Mapping[str, torch.Tensor], args: Mapping[str, Any]) -> torch.Tensor:
        ...

    def masks(self, weights: Weights, args: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        ...


def conv_layers(model: nn.Module) -> list[str]:
    """Names of the model's conv layers that filter pruning may cut, in definition order.

    A conv that computes the logits (the last conv or linear layer is a conv, as in
    SqueezeNet) keeps its filters: the output layer keeps the class count.
    """
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    head = layers[-1][0] if layers and isinstance(layers[-1][1], nn.Conv2d) else None
    return [n for n, m in layers if isinstance(m, nn.Conv2d) and n != head]


def stage_of(layer: str, stages: tuple[str, ...]) -> str:
    """The stage holding ``layer`` (the longest stage name that prefixes it), else the first
    stage: convs outside every stage (the stem) feed the first stage."""
    holding = [s for s in stages if layer == s or layer.startswith(f"{s}.")]
    return max(holding, key=len) if holding else (stages[0] if stages else "")


def filter_ratios(model: nn.Module, stages: tuple[str, ...],
                  schedule: Schedule) -> dict[str, float]:
    """Per-conv filter ratio: the conv's stage ratio, else ``filter_ratio`` (``*``).

    Convs outside any stage (the stem) feed the first stage's residual stream, so they take
    that stage's ratio: a residual group must be cut by one ratio.
    """
    default = schedule.filter_ratios.get("*", 0.0)
    return {name: schedule.filter_ratios.get(stage_of(name, stages), default)
            for name in conv_layers(model)}


def fine_layers(model: nn.Module) -> list[str]:
    """Convs that fine-grained pruning zeroes: all but the first (3 input channels, sensitive)."""
    return conv_layers(model)[1:]
