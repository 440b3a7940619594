"""A model of the user's own: ``model: examples/my_model.py:build`` in the config.

edge_tune calls ``build(num_classes=N)`` and expects an ``nn.Module`` mapping (B, 3, S, S)
images to (B, N) logits. Its stages (for ``filter_ratio_<stage>``) are read from the model
itself: ``python -m edge_tune.trial --config examples/my_model.yaml --stages``.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv(cin: int, cout: int, stride: int = 1, groups: int = 1, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Block(nn.Module):
    """Depthwise-separable conv with a residual add when the shape allows it."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.depthwise = _conv(cin, cin, stride, groups=cin)
        self.pointwise = _conv(cin, cout, k=1)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pointwise(self.depthwise(x))
        return out + x if self.residual else out


class MyNet(nn.Module):
    """Stem, three stages of depthwise-separable blocks, global pooling, a linear head."""

    def __init__(self, num_classes: int, width: int = 32) -> None:
        super().__init__()
        self.stem = _conv(3, width)
        self.stage1 = nn.Sequential(Block(width, width, 1), Block(width, width, 1))
        self.stage2 = nn.Sequential(Block(width, 2 * width, 2), Block(2 * width, 2 * width, 1))
        self.stage3 = nn.Sequential(Block(2 * width, 4 * width, 2),
                                    Block(4 * width, 4 * width, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage3(self.stage2(self.stage1(self.stem(x))))
        return self.classifier(torch.flatten(self.pool(x), 1))


def build(num_classes: int) -> nn.Module:
    return MyNet(num_classes)
