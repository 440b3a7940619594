"""A model's prunable structure as per-layer allocation sees it: the dependency groups of
filters (convs whose output filters torch-pruning removes together: a residual stream, a conv
and the depthwise conv that follows it), the layers that read each group's channels, and each
layer's multiply-accumulates. From a kept fraction per group it tells each layer's share of
its MACs left, which the device profile turns into time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from edge_tune.compression.layers import conv_layers, forward_once
from edge_tune.compression.thinning import part_of, parts, tie_filters


@dataclass(frozen=True)
class Group:
    """Convs whose filters go together, and the layers that read them."""

    name: str  # its first conv
    width: int  # filters
    convs: tuple[str, ...]  # convs whose output filters these are
    readers: tuple[str, ...]  # convs and linears whose input channels these are


@dataclass(frozen=True)
class Structure:
    """The groups allocation may shrink, and every conv / linear layer's MACs."""

    groups: tuple[Group, ...]
    macs: dict[str, int]  # layer -> multiply-accumulates, batch 1, full width
    depthwise: frozenset[str]  # convs with one filter per input channel
    untraced: tuple[str, ...] = ()  # convs torch-pruning could not trace: left whole

    def layer_fractions(self, kept: dict[str, float]) -> dict[str, float]:
        """Each layer's MACs left (0..1) when every group keeps its ``kept`` fraction of
        filters (groups not named keep all)."""
        out_frac: dict[str, float] = {}
        in_frac: dict[str, float] = {}
        for group in self.groups:
            fraction = kept.get(group.name, 1.0)
            out_frac.update({c: fraction for c in group.convs})
            in_frac.update({r: fraction for r in group.readers})
        # a depthwise conv's filters are its input channels: it shrinks with its input
        return {layer: min(out_frac.get(layer, 1.0), in_frac.get(layer, 1.0))
                if layer in self.depthwise
                else out_frac.get(layer, 1.0) * in_frac.get(layer, 1.0)
                for layer in self.macs}

    def macs_fraction(self, layers: dict[str, float]) -> float:
        """The whole model's MACs left, from each layer's fraction."""
        total = sum(self.macs.values()) or 1
        return sum(self.macs[k] * layers.get(k, 1.0) for k in self.macs) / total


def layer_macs(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """Multiply-accumulates of every conv and linear layer at ``example``'s size, batch 1."""
    found: dict[str, int] = {}

    def hook(name: str) -> Callable[..., None]:
        def record(module: nn.Module, args: Any, out: torch.Tensor) -> None:
            if isinstance(module, nn.Conv2d):
                k = module.kernel_size[0] * module.kernel_size[1]
                found[name] = int(module.out_channels * module.in_channels // module.groups
                                  * k * out.shape[-1] * out.shape[-2])
            elif isinstance(module, nn.Linear):
                found[name] = int(module.in_features) * int(module.out_features)
        return record

    forward_once(model, example, [m.register_forward_hook(hook(n))
                                  for n, m in model.named_modules()
                                  if isinstance(m, nn.Conv2d | nn.Linear)])
    return found


def structure(model: nn.Module, example: torch.Tensor) -> Structure:
    """The groups of ``model``'s prunable convs (those filter pruning may cut, tied as
    torch-pruning ties them) and what reads each; convs it cannot trace are left out."""
    example = example.to(next(model.parameters()).device)  # the model may be on a GPU
    modules = dict(model.named_modules())
    skipped: dict[str, str] = {}
    weights = tuple(f"{c}.weight" for c in conv_layers(model))
    covering = parts(model, example)
    groups = []
    for tied in tie_filters(model, example, weights, skipped):
        if not tied.removable:
            continue
        first = tied.names[0].removesuffix(".weight")
        part = part_of(covering, first)
        assert part is not None  # removable groups lie in a traced part
        group, _ = part.group(modules[first], tp.prune_conv_out_channels, [0])
        readers = sorted({part.prefix + dep.target.name.split(" ")[0] for dep, _ in group
                          if getattr(dep.handler, "__name__", "") == "prune_in_channels"
                          and isinstance(dep.target.module, nn.Conv2d | nn.Linear)})
        convs = tuple(n.removesuffix(".weight") for n in tied.names)
        groups.append(Group(first, int(modules[first].out_channels), convs,
                            tuple(r for r in readers if r not in convs)))
    depthwise = frozenset(n for n, m in modules.items() if isinstance(m, nn.Conv2d)
                          and m.groups > 1 and m.groups == m.in_channels)
    return Structure(tuple(groups), layer_macs(model, example), depthwise,
                     tuple(sorted(skipped)))
