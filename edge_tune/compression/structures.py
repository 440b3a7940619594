"""Weights as groups of structures (filters, input channels, fc rows, kernels, blocks): how a
Distiller group type slices a weight, scores its groups and masks the weakest. Structure masks
are what thinning can remove; fine-grained ones (:func:`level_mask`) leave tensors dense."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

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


def weakest(scores: torch.Tensor, level: float, channel_groups: int = 1) -> torch.Tensor:
    """Indices of the ``level`` fraction of lowest scores; with ``channel_groups`` > 1 the
    same positions in every group (their scores summed over the groups)."""
    per = scores.numel() // channel_groups
    positions = scores.view(channel_groups, per).sum(0).argsort()[:round(level * per)]
    offsets = per * torch.arange(channel_groups, device=positions.device)[:, None]
    return (positions[None, :] + offsets).flatten()


