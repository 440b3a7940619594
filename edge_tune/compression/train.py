"""Training, evaluation and BatchNorm re-estimation (plain SGD loops, CPU or GPU)."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import Dataset

from edge_tune.catalog.splits import loader, take


def set_threads(threads: int) -> None:
    """Torch intra-op threads for training; 0 means every core."""
    torch.set_num_threads(threads or os.cpu_count() or 1)


def device_for(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def train(model: nn.Module, dataset: Dataset, epochs: int, lr: float, weight_decay: float,
          batch_size: int, seed: int = 0,
          log: Callable[[str], None] | None = None) -> list[float]:
    """SGD (momentum 0.9) with a per-step cosine schedule; the mean loss of each epoch, said
    to ``log`` as each epoch ends.

    A non-finite loss stops training with a RuntimeError naming the epoch.
    """
    if epochs == 0:
        return []
    torch.manual_seed(seed)
    device = device_for(model)
    batches = loader(dataset, batch_size, shuffle=True, seed=seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9,
                                weight_decay=weight_decay, nesterov=True)
    total = epochs * len(batches)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
    losses = []
    started = time.perf_counter()
    model.train()
    for epoch in range(epochs):
        running, count = 0.0, 0
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            loss = nn.functional.cross_entropy(model(x), y)
            if not torch.isfinite(loss):
                raise RuntimeError(f"training diverged: loss {loss.item()} in epoch {epoch}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            running += loss.item() * len(y)
            count += len(y)
        losses.append(running / max(1, count))
        if log is not None:
            log(f"epoch {epoch + 1}/{epochs}: loss {losses[-1]:.4f}, "
                f"{time.perf_counter() - started:.0f} s")
    model.eval()
    return losses


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Top-1 and top-5 accuracy in percent."""
    k = min(5, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    hit1 = (top[:, 0] == labels).float().mean().item()
    hit5 = (top == labels[:, None]).any(dim=1).float().mean().item()
    return 100.0 * hit1, 100.0 * hit5


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, batch_size: int = 256) -> tuple[float, float]:
    """Top-1 and top-5 accuracy (percent) of the torch model on ``dataset``."""
    model.eval()
    device = device_for(model)
    logits, labels = [], []
    for x, y in loader(dataset, batch_size):
        logits.append(model(x.to(device)).cpu())
        labels.append(y)
    return topk_accuracy(torch.cat(logits), torch.cat(labels))


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, dataset: Dataset, images: int,
                          batch_size: int = 64) -> None:
    """Re-estimate BatchNorm running statistics from ``images`` training images.

    After filters are removed the old statistics describe a different network: accuracy is at
    chance until they are re-estimated (cumulative average, train-mode forward, no updates).
    """
    if images == 0:
        return
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    device = device_for(model)
    for x, _ in loader(take(dataset, images), batch_size):
        model(x.to(device))
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum
    model.eval()
