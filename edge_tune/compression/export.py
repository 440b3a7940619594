"""Torch -> ONNX export and the torch-side facts verification compares against."""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch_pruning as tp
from torch import nn
from torch.fx.experimental.optimization import fuse

from edge_tune.edge.verify import WeightStats


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval) with every BatchNorm that follows a conv folded into it, the
    convs keeping their names (torch.fx); ``model`` itself when fx cannot trace it.

    The exported file must not hold BatchNorm as a node of its own: NNCF would quantise
    between conv and BatchNorm (53 FakeQuantize nodes instead of 32 in ResNet-20), which cost
    one fine-tuned Fashion-MNIST model 12 points of top-1 where the folded graph lost 0.9.
    """
    try:
        return fuse(model, inplace=False)
    except (torch.fx.proxy.TraceError, TypeError, RuntimeError, AttributeError,
            NotImplementedError):  # dynamic control flow: export as it is
        return model


def _upsampling_pools(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """Adaptive average pools (name -> factor) whose output is a whole multiple of their input
    (torchvision's AlexNet and VGG pool to 6x6 / 7x7; at 32-64 px their features are 1x1):
    there each output is one input pixel repeated, which is nearest-neighbour upsampling, and
    the TorchScript exporter refuses adaptive pooling to a size its input does not divide."""
    found: dict[str, int] = {}

    def hook(name: str, module: nn.AdaptiveAvgPool2d) -> Callable[..., None]:
        def record(_: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            height, width = (int(d) for d in args[0].shape[-2:])
            out: Any = module.output_size
            sizes = [out, out] if isinstance(out, int) else list(out or ())
            if not all(isinstance(v, int) for v in sizes) or height != width \
                    or sizes[0] != sizes[1]:
                return
            target = int(sizes[0])
            if target > height and target % height == 0:
                found[name] = target // height
        return record

    pools = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
    handles = [m.register_forward_pre_hook(hook(n, m)) for n, m in pools]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    return found


def _exportable(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """``model``, or a copy whose upsampling adaptive pools are nearest upsampling (the same
    function, which ONNX can express)."""
    factors = _upsampling_pools(model, example)
    if not factors:
        return model
    model = copy.deepcopy(model)
    for name, factor in factors.items():
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, nn.Upsample(scale_factor=factor))
    return model


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | Path,
                fold: bool = True) -> Path:
    """Export ``model`` (eval mode, batch 1) to ONNX with the TorchScript exporter.

    BatchNorm is folded into the convs first (:func:`fold_batchnorm`, as OpenVINO would at
    compile time; ``fold=False`` for a model NNCF fake-quantises, whose quantisers torch.fx's
    trace would drop) and constant folding is off, so every initializer keeps torch's
    parameter name: that is what lets verification find each layer in the exported file. The
    TorchScript path takes 0.2 s for ResNet-20 where the dynamo exporter took 2.2-2.9 s
    (``benchmarks/overhead.py``), and a trial exports twice.
    """
    model.eval()
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    exportable = _exportable(model, example)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(fold_batchnorm(exportable) if fold else exportable, (example,),
                          str(path), dynamo=False, input_names=["input"],
                          output_names=["logits"], do_constant_folding=False)
    return Path(path)


def weight_stats(model: nn.Module) -> WeightStats:
    """Shape and sparsity (0..1) of every conv/linear weight, keyed ``<module>.weight``."""
    stats: WeightStats = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            weight = module.weight.detach()
            stats[f"{name}.weight"] = (tuple(weight.shape),
                                       float((weight == 0).sum().item()) / weight.numel())
    return stats


def count_macs(model: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    """Multiply-accumulates of one forward pass at ``example``'s shape, and parameter count."""
    macs, params = tp.utils.count_ops_and_params(model, example)
    return int(macs), int(params)
