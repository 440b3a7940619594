"""Which layers compression acts on: the convs filter pruning may cut, the stage each belongs
to, each conv's filter ratio (kept counts aligned to a channel multiple the device runs well,
when asked) and the convs fine-grained pruning zeroes."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edge_tune.core.errors import UserError


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
                  by_stage: dict[str, float]) -> dict[str, float]:
    """Per-conv filter ratio from ``by_stage`` (stage, or ``*`` for every conv, -> the fraction
    of filters removed): the conv's stage ratio, else ``*``'s.

    Convs outside any stage (the stem) feed the first stage's residual stream, so they take
    that stage's ratio: a residual group must be cut by one ratio.
    """
    default = by_stage.get("*", 0.0)
    return {name: by_stage.get(stage_of(name, stages), default)
            for name in conv_layers(model)}


def fine_layers(model: nn.Module) -> list[str]:
    """Convs that fine-grained pruning zeroes: all but the first (3 input channels, sensitive)."""
    return conv_layers(model)[1:]




def widths(model: nn.Module) -> dict[str, int]:
    """Filters of each conv filter pruning may cut."""
    modules = dict(model.named_modules())
    return {name: int(modules[name].out_channels) for name in conv_layers(model)}


def aligned_ratios(ratios: dict[str, float], width: dict[str, int],
                   multiple: int) -> tuple[dict[str, float], dict[str, str]]:
    """Each conv's filter ratio moved so that the filters it keeps are the nearest multiple
    of ``multiple`` (at least one multiple, at most its width); a conv asked to lose filters
    that is narrower than ``multiple`` is left whole: the ratios, and those convs with why."""
    if multiple <= 1:
        return dict(ratios), {}
    out, whole = {}, {}
    for name, ratio in ratios.items():
        filters = width[name]
        removed = round(ratio * filters)
        if removed <= 0:
            out[name] = ratio
            continue
        if filters < multiple:
            out[name] = 0.0
            whole[name] = (f"{filters} filters: narrower than the channel multiple {multiple} "
                           "(prune.channel_multiple), left whole")
            continue
        kept = min(filters, max(multiple, multiple * round((filters - removed) / multiple)))
        out[name] = (filters - kept) / filters
    return out, whole


def check_multiple(model: nn.Module, multiple: int | str, name: str) -> None:
    """A channel multiple some prunable conv of ``model`` (``name``) is at least as wide as."""
    widest = max(widths(model).values(), default=0)
    if isinstance(multiple, int) and multiple > widest:
        raise UserError(f"prune.channel_multiple: {multiple} is wider than every conv filter "
                        f"pruning may cut in {name} (the widest has {widest} filters)")


def forward_once(model: nn.Module, example: torch.Tensor, handles: list[Any]) -> None:
    """One forward pass of ``example`` in eval mode without gradients (what the hooks behind
    ``handles`` watch); the model's mode restored and the hooks removed after."""
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example)
    finally:
        model.train(training)
        for handle in handles:
            handle.remove()
