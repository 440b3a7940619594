"""Pruners: a one-method protocol and a registry of the pruning kinds edge_tune applies.

- ``filters``: structural; removes whole output filters ranked by L1 norm with torch-pruning,
  which tracks dependencies (residual adds, BatchNorm, the next layer's input channels) so the
  network stays consistent and physically smaller: Distiller's pruning + "thinning".
- ``fine``: fine-grained; zeroes the smallest-magnitude weights with torch.nn.utils.prune masks
  (kept during fine-tuning, made permanent by :func:`finalize`). The tensors stay dense.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from edge_tune.errors import lookup
from edge_tune.recipe import Schedule


class Pruner(Protocol):
    """Prunes named conv/linear modules of ``model`` in place, each to its own ratio (0..1)."""

    def apply(self, model: nn.Module, example: torch.Tensor, ratios: Mapping[str, float]) -> None:
        ...


class FilterPruner:
    """Removes ``ratio`` of each named conv's output filters (L1 magnitude), with dependents."""

    def apply(self, model: nn.Module, example: torch.Tensor, ratios: Mapping[str, float]) -> None:
        import torch_pruning as tp

        modules = dict(model.named_modules())
        targets = {modules[name]: ratio for name, ratio in ratios.items() if ratio > 0}
        if not targets:
            return
        classifier = [m for m in model.modules() if isinstance(m, nn.Linear)][-1:]
        pruner = tp.pruner.MetaPruner(
            model, example, importance=tp.importance.MagnitudeImportance(p=1),
            pruning_ratio=0.0, pruning_ratio_dict=targets, ignored_layers=classifier)
        pruner.step()


class MagnitudePruner:
    """Zeroes ``ratio`` of each named module's weights by absolute value (masks kept)."""

    def apply(self, model: nn.Module, example: torch.Tensor, ratios: Mapping[str, float]) -> None:
        modules = dict(model.named_modules())
        for name, ratio in ratios.items():
            if ratio > 0:
                torch_prune.l1_unstructured(modules[name], "weight", amount=float(ratio))


PRUNERS: dict[str, Pruner] = {"filters": FilterPruner(), "fine": MagnitudePruner()}


def get_pruner(name: str) -> Pruner:
    """A registered pruner by name (a miss lists the valid names)."""
    return lookup(PRUNERS, "pruner", name)


def conv_layers(model: nn.Module) -> list[str]:
    """Names of the model's conv layers, in definition order."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def filter_ratios(model: nn.Module, schedule: Schedule) -> dict[str, float]:
    """Per-conv filter ratio: the conv's stage ratio, else ``filter_ratio`` (``*``).

    Convs outside any stage (the stem) feed the first stage's residual stream, so they take
    that stage's ratio: a residual group must be cut by one ratio.
    """
    stages: tuple[str, ...] = getattr(model, "stages", ())
    default = schedule.filter_ratios.get("*", 0.0)
    ratios = {}
    for name in conv_layers(model):
        head = name.split(".")[0]
        stage = head if head in stages else (stages[0] if stages else "")
        ratios[name] = schedule.filter_ratios.get(stage, default)
    return ratios


def fine_layers(model: nn.Module) -> list[str]:
    """Convs that fine-grained pruning zeroes: all but the first (3 input channels, sensitive)."""
    return conv_layers(model)[1:]


def finalize(model: nn.Module) -> None:
    """Make fine-grained masks permanent (zeros written into ``weight``, hooks removed)."""
    for module in model.modules():
        if torch_prune.is_pruned(module) and hasattr(module, "weight_mask"):
            torch_prune.remove(module, "weight")
