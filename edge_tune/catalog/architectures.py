"""The built-in networks, with Intel Distiller's module names so its recipes apply as written.

Written from the papers and from the layer listings in Distiller's recipe headers (parameter
shapes there are matched exactly, ``tests/catalog/test_models.py``); registered by name in
:data:`edge_tune.catalog.models.MODELS`. Where edge_tune differs from Distiller's code it says so:
global pooling is adaptive (Distiller's fixed ``AvgPool2d(8)`` / ``AvgPool2d(7)`` equal it at
32x32 CIFAR / 224x224 ImageNet inputs and fail at other sizes), the class count comes from
the data set, and ReLUs are not in-place (torch-pruning and the fx BatchNorm folding trace
them either way).
"""

from __future__ import annotations

import torch
from torch import nn


def _conv3x3(inplanes: int, planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)


def _kaiming(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual; a 1x1 conv + BN shortcut when the shape changes.
    ``shortcut=False``: no residual at all (He et al. 2016's "plain" baseline)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 shortcut: bool = True) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.shortcut = shortcut
        self.downsample: nn.Module | None = None
        if shortcut and (stride != 1 or inplanes != planes):
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu2(out)


class ResNetCifar(nn.Module):
    """CIFAR ResNet (He et al. 2016, section 4.2): 3 stages of 16/32/64 channels, 6n+2 layers;
    ``plain``: the same network without shortcuts (Distiller's ``plain20_cifar``)."""

    def __init__(self, blocks_per_stage: int, num_classes: int = 10, plain: bool = False) -> None:
        super().__init__()
        self.conv1 = _conv3x3(3, 16)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        stages = []
        for inplanes, planes, stride in ((16, 16, 1), (16, 32, 2), (32, 64, 2)):
            blocks = [BasicBlock(inplanes, planes, stride, shortcut=not plain)]
            blocks += [BasicBlock(planes, planes, shortcut=not plain)
                       for _ in range(blocks_per_stage - 1)]
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # AvgPool2d(8) at 32x32
        self.fc = nn.Linear(64, num_classes)
        _kaiming(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class PreactBlock(nn.Module):
    """Pre-activation block (He et al. 2016b): BN-ReLU before each conv, identity added after.

    The shortcut that halves the resolution and doubles the channels has no weights, as in
    Distiller's default: 2x2 average pooling, then zero channels padded on both sides.
    """

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.pre_bn = nn.BatchNorm2d(inplanes)
        self.pre_relu = nn.ReLU()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = _conv3x3(planes, planes)
        self.pad = (planes - inplanes) // 2  # zero channels on each side of the shortcut
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn(self.conv1(self.pre_relu(self.pre_bn(x)))))
        out = self.conv2(out)
        residual = x
        if self.stride != 1 or self.pad:
            residual = nn.functional.avg_pool2d(x, self.stride)
            residual = nn.functional.pad(residual, (0, 0, 0, 0, self.pad, self.pad))
        return out + residual


class PreactResNetCifar(nn.Module):
    """Pre-activation CIFAR ResNet (Distiller's ``preact_resnet20_cifar``): conv1, 3 stages,
    ``final_bn`` + ReLU, pooling, fc."""

    def __init__(self, blocks_per_stage: int, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = _conv3x3(3, 16)
        stages = []
        for inplanes, planes, stride in ((16, 16, 1), (16, 32, 2), (32, 64, 2)):
            blocks = [PreactBlock(inplanes, planes, stride)]
            blocks += [PreactBlock(planes, planes) for _ in range(blocks_per_stage - 1)]
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.final_bn = nn.BatchNorm2d(64)
        self.final_relu = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # AvgPool2d(8) at 32x32
        self.fc = nn.Linear(64, num_classes)
        _kaiming(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        x = self.final_relu(self.final_bn(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGGCifar(nn.Module):
    """VGG-16 (Simonyan & Zisserman, configuration D) for 32x32 inputs, as in Distiller:
    13 3x3 convs with biases and no BatchNorm in ``features`` (indices as torchvision's),
    one linear ``classifier`` on the 512 features left after five poolings (a global average
    of them here, the identity at 32x32, so larger inputs work too)."""

    def __init__(self, num_classes: int = 10, layout: tuple[int | str, ...] = VGG16) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for v in layout:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, int(v), 3, padding=1), nn.ReLU()]
                channels = int(v)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # 1x1 in, 1x1 out at 32x32
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _conv_bn_relu(inplanes: int, planes: int, kernel: int, stride: int = 1,
                  groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(inplanes, planes, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(planes), nn.ReLU()]


class MobileNetV1(nn.Module):
    """MobileNet v1 (Howard et al. 2017), width 1.0, as Distiller's ``mobilenet``: ``model.0``
    the stem (conv, BN, ReLU); ``model.1`` .. ``model.13`` each a depthwise 3x3 (``.0``, BN
    ``.1``) then a pointwise 1x1 (``.3``, BN ``.4``); ``model.14`` the pooling; ``fc``."""

    WIDTHS = ((32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1),
              (256, 512, 2), (512, 512, 1), (512, 512, 1), (512, 512, 1), (512, 512, 1),
              (512, 512, 1), (512, 1024, 2), (1024, 1024, 1))  # (in, out, stride) per block

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        blocks: list[nn.Module] = [nn.Sequential(*_conv_bn_relu(3, 32, 3, stride=2))]
        for inplanes, planes, stride in self.WIDTHS:
            blocks.append(nn.Sequential(*_conv_bn_relu(inplanes, inplanes, 3, stride, inplanes),
                                        *_conv_bn_relu(inplanes, planes, 1)))
        blocks.append(nn.AdaptiveAvgPool2d(1))  # AvgPool2d(7) at 224x224
        self.model = nn.Sequential(*blocks)
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.model(x), 1))


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
