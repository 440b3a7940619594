"""CNNs: Distiller-named CIFAR ResNets and a small CNN for fast tests.

Layer names match Distiller's ``resnet20_cifar``/``resnet56_cifar`` (``conv1``, ``bn1``,
``layerN.M.conv1|bn1|conv2|bn2``, ``layerN.0.downsample.0|1``, ``fc``) so its recipes apply as
written. :data:`MODELS` maps a config name to a :class:`ModelSpec`: how to build the network
for a class count, and its stages (the groups that per-stage pruning parameters address).
Adding a model is one entry plus its ``nn.Module``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from edge_tune.errors import lookup


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual; a 1x1 conv + BN shortcut when the shape changes."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + residual)


class ResNetCifar(nn.Module):
    """CIFAR ResNet (He et al. 2016, section 4.2): 3 stages of 16/32/64 channels."""

    def __init__(self, blocks_per_stage: int, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        self.layer1 = self._stage(16, 16, blocks_per_stage, 1)
        self.layer2 = self._stage(16, 32, blocks_per_stage, 2)
        self.layer3 = self._stage(32, 64, blocks_per_stage, 2)
        # Adaptive pooling equals Distiller's AvgPool2d(8) at 32x32 and accepts other sizes.
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def _stage(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(inplanes, planes, stride)]
        layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU layers and a linear head (~25k params): for fast tests."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(32)
        self.conv3 = nn.Conv2d(32, 64, 3, 2, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.relu(self.bn3(self.conv3(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its builder (class count -> fresh network) and its stages."""

    build: Callable[[int], nn.Module]
    # top-level modules per-stage parameters address; convs outside them (the stem) take the
    # first stage's ratio, since they feed its residual stream
    stages: tuple[str, ...] = ()


_RESNET_STAGES = ("layer1", "layer2", "layer3")

MODELS: dict[str, ModelSpec] = {
    "resnet20_cifar": ModelSpec(lambda num_classes: ResNetCifar(3, num_classes), _RESNET_STAGES),
    "resnet56_cifar": ModelSpec(lambda num_classes: ResNetCifar(9, num_classes), _RESNET_STAGES),
    "simple_cnn": ModelSpec(SmallCNN),
}


def model_spec(name: str) -> ModelSpec:
    """A registered model by config name (a miss lists the valid names)."""
    return lookup(MODELS, "model", name)


def create_model(name: str, num_classes: int) -> nn.Module:
    """A freshly initialised model by registry name (``model`` in the config)."""
    return model_spec(name).build(num_classes)
