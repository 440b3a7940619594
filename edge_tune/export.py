"""Torch -> ONNX export and the torch-side facts verification compares against."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import torch
import torch_pruning as tp
from torch import nn
from torch.fx.experimental.optimization import fuse

from edge_tune.verify import WeightStats


def _fold_batchnorm(model: nn.Module) -> nn.Module:
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


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | Path) -> Path:
    """Export ``model`` (eval mode, batch 1) to ONNX with the TorchScript exporter.

    BatchNorm is folded into the convs first (:func:`_fold_batchnorm`, as OpenVINO would at
    compile time) and constant folding is off, so every initializer keeps torch's parameter
    name: that is what lets verification find each layer in the exported file. The TorchScript
    path takes 0.2 s for ResNet-20 where the dynamo exporter took 2.2-2.9 s
    (``benchmarks/overhead.py``), and a trial exports twice.
    """
    model.eval()
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(_fold_batchnorm(model), (example,), str(path), dynamo=False,
                          input_names=["input"], output_names=["logits"],
                          do_constant_folding=False)
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
