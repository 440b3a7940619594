"""What structure ranking reads beyond a weight's magnitudes: conv weights with their
BatchNorm folded in (Distiller's ``fold_batchnorm``) and each filter's activation APoZ
(network trimming)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from edge_tune.catalog.splits import loader, take
from edge_tune.compression.train import device_for


def _following_bn(model: nn.Module) -> dict[str, nn.BatchNorm2d]:
    """Conv name -> the BatchNorm right after it in definition order (``conv1`` -> ``bn1``,
    ``downsample.0`` -> ``downsample.1``), where its width matches."""
    out = {}
    for (name, module), (_, after) in itertools.pairwise(model.named_modules()):
        if isinstance(module, nn.Conv2d) and isinstance(after, nn.BatchNorm2d) \
                and after.num_features == module.out_channels:
            out[name] = after
    return out


def folded_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Conv weights with their BatchNorm folded in (w x gamma / sqrt(var + eps) per filter),
    as the deployed model computes them (Distiller's ``fold_batchnorm`` ranking)."""
    modules = dict(model.named_modules())
    out = {}
    for name, bn in _following_bn(model).items():
        var = bn.running_var
        if var is None:  # no running statistics: nothing to fold
            continue
        scale = (bn.weight.detach() if bn.affine else torch.ones_like(var)) \
            / torch.sqrt(var + bn.eps)
        out[f"{name}.weight"] = modules[name].weight.detach() * scale.view(-1, 1, 1, 1)
    return out


def activation_apoz(model: nn.Module, weights: tuple[str, ...], dataset: Any,
                    images: int) -> dict[str, torch.Tensor]:
    """APoZ (Hu et al. 2016) of every filter of each conv weight: the fraction of its
    activations that are zero after the conv, its BatchNorm and a ReLU, over ``images``
    training images (eval mode). A conv without a BatchNorm after it: its own output."""
    if dataset is None:
        raise RuntimeError("APoZ ranking needs training images (the run has none)")
    modules = dict(model.named_modules())
    bns = _following_bn(model)
    zeros: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def hook(name: str) -> Callable[..., None]:
        def record(module: nn.Module, args: Any, out: torch.Tensor) -> None:
            dead = (out <= 0).float().transpose(0, 1).reshape(out.shape[1], -1)
            zeros[name] = zeros.get(name, 0) + dead.sum(1)
            counts[name] = counts.get(name, 0) + dead.shape[1]
        return record

    handles = []
    for weight in weights:
        conv = weight.removesuffix(".weight")
        target: nn.Module = bns.get(conv) or modules[conv]
        handles.append(target.register_forward_hook(hook(weight)))
    training = model.training
    model.eval()
    device = device_for(model)
    try:
        with torch.no_grad():
            for x, _ in loader(take(dataset, images), 64):
                model(x.to(device))
    finally:
        model.train(training)
        for handle in handles:
            handle.remove()
    return {w: (zeros[w] / counts[w]).cpu() for w in weights}


