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


Tie = Callable[[tuple[str, ...]], list[Tied]]  # weights -> the groups that tie their filters


class Pruner(Protocol):
    """Masks for the weights an instance names, at sparsity ``level`` (0..1) where it has one."""

    def masks(self, weights: Weights, args: Mapping[str, Any], level: float,
              tie: Tie) -> dict[str, torch.Tensor]:
        ...


def level_mask(weight: torch.Tensor, level: float) -> torch.Tensor:
    """Mask keeping all but the ``level`` fraction of smallest-magnitude elements."""
    count = round(level * weight.numel())
    if count <= 0:
        return torch.ones_like(weight)
    threshold = weight.abs().flatten().kthvalue(count).values
    return (weight.abs() > threshold).to(weight.dtype)


def group_dim(group_type: str) -> int:
    """The weight dimension a group indexes: filters are dim 0; channels and fc rows dim 1.

    Distiller's "Rows" of a fully-connected weight are counted on its transpose: input features.
    """
    return 0 if group_type == "Filters" else 1


def group_scores(weight: torch.Tensor, group_type: str) -> torch.Tensor:
    """Mean |w| of every filter, input channel or fc row."""
    dim = group_dim(group_type)
    return weight.abs().mean(dim=[d for d in range(weight.dim()) if d != dim])


def structure_mask(weight: torch.Tensor, drop: torch.Tensor, group_type: str) -> torch.Tensor:
    """Mask zeroing the groups ``drop`` (indices along the group dimension)."""
    mask = torch.ones_like(weight)
    if group_dim(group_type) == 0:
        mask[drop] = 0
    else:
        mask[:, drop] = 0
    return mask


class SparsityLevel:
    """``SparsityLevelParameterPruner``: each weight to its own ``levels`` sparsity."""

    def masks(self, weights: Weights, args: Mapping[str, Any], level: float,
              tie: Tie) -> dict[str, torch.Tensor]:
        return {name: level_mask(weights[name], target) for name, target in args["levels"].items()}


class MagnitudeThreshold:
    """``MagnitudeParameterPruner``: zero every element with |w| <= its weight's threshold."""

    def masks(self, weights: Weights, args: Mapping[str, Any], level: float,
              tie: Tie) -> dict[str, torch.Tensor]:
        return {name: (weights[name].abs() > threshold).float()
                for name, threshold in args["thresholds"].items()}


class Magnitude:
    """``AutomatedGradualPruner``: every listed weight to the schedule's current ``level``."""

    def masks(self, weights: Weights, args: Mapping[str, Any], level: float,
              tie: Tie) -> dict[str, torch.Tensor]:
        return {name: level_mask(weights[name], level) for name in args["weights"]}


class L1RankedStructure:
    """``L1RankedStructureParameterPruner[_AGP]``: drop the ``level`` fraction of weakest groups.

    Filters tied by a residual add are ranked together (summed scores), so every conv of the
    group loses the same filters and thinning can remove them consistently.
    """

    def masks(self, weights: Weights, args: Mapping[str, Any], level: float,
              tie: Tie) -> dict[str, torch.Tensor]:
        group_type = args["group_type"]
        names = tuple(args["weights"])
        groups = tie(names) if group_type == "Filters" else [Tied([n]) for n in names]
        out = {}
        for group in groups:
            if not group.removable:
                continue
            scores = torch.stack([group_scores(weights[n], group_type)
                                  for n in group.names]).sum(0)
            drop = weakest(scores, level, group.channel_groups)
            out.update({n: structure_mask(weights[n], drop, group_type) for n in group.names})
        return out


def weakest(scores: torch.Tensor, level: float, channel_groups: int = 1) -> torch.Tensor:
    """Indices of the ``level`` fraction of lowest scores; with ``channel_groups`` > 1 the
    same positions in every group (their scores summed over the groups)."""
    per = scores.numel() // channel_groups
    positions = scores.view(channel_groups, per).sum(0).argsort()[:round(level * per)]
    return (positions[None, :] + per * torch.arange(channel_groups)[:, None]).flatten()


class GroupLasso:
    """``GroupLassoRegularizer``: strength x the sum of its groups' L2 norms, per weight;
    with ``threshold_criteria`` (Mean_Abs or Max) groups below the strength are masked after
    every epoch, as Distiller does."""

    def penalty(self, params: Mapping[str, torch.Tensor], args: Mapping[str, Any]) -> torch.Tensor:
        total = torch.zeros(())
        for name, (strength, group_type) in args["reg_regims"].items():
            weight = params[name]
            dim = group_dim(group_type)
            flat = weight.transpose(0, dim).reshape(weight.shape[dim], -1)
            total = total + strength * flat.norm(dim=1).sum()
        return total

    def masks(self, weights: Weights, args: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        criterion = args.get("threshold_criteria")
        if criterion is None:
            return {}
        out = {}
        for name, (strength, group_type) in args["reg_regims"].items():
            weight = weights[name]
            dim = group_dim(group_type)
            flat = weight.transpose(0, dim).reshape(weight.shape[dim], -1).abs()
            score = flat.max(dim=1).values if criterion == "Max" else flat.mean(dim=1)
            out[name] = structure_mask(weight, torch.nonzero(score < strength).flatten(),
                                       group_type)
        return out


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
