"""CNNs by name: built-in Distiller-named CIFAR ResNets, torchvision's, and the user's own.

``model:`` in the config is one of

- a built-in name (:data:`MODELS`: ``resnet20_cifar``, ``resnet56_cifar``, ``simple_cnn``),
  layer names as Distiller's (``conv1``, ``layerN.M.conv1|bn1|conv2|bn2``,
  ``layerN.0.downsample.0|1``, ``fc``) so its recipes apply as written;
- ``torchvision:<name>``: any image-classification builder of ``torchvision.models``, built
  with ``num_classes`` from the data and no weights (they come from ``baseline.checkpoint`` or
  training);
- ``<module>:<callable>`` or ``<path/to/file.py>:<callable>``: the user's code, called with
  ``num_classes=`` and returning an ``nn.Module``.

A :class:`ModelSpec` builds the network for a class count and names its stages, the groups
that ``filter_ratio_<stage>`` addresses: fixed for built-ins, otherwise derived from the model
(its top-level containers that hold convolutions, descending through a lone container such as
``features``). Adding a built-in model is one entry plus its ``nn.Module``.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from edge_tune.errors import UserError, first_line, unknown


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
    """A model: its builder (class count -> fresh network) and its stages.

    ``stages`` None: derived from a built network (:func:`derive_stages`).
    """

    build: Callable[[int], nn.Module]
    # top-level modules per-stage parameters address; convs outside them (the stem) take the
    # first stage's ratio, since they feed its residual stream
    stages: tuple[str, ...] | None = ()
    builtin: bool = True  # False: checked by building it once (class count, output shape)


_RESNET_STAGES = ("layer1", "layer2", "layer3")

MODELS: dict[str, ModelSpec] = {
    "resnet20_cifar": ModelSpec(lambda num_classes: ResNetCifar(3, num_classes), _RESNET_STAGES),
    "resnet56_cifar": ModelSpec(lambda num_classes: ResNetCifar(9, num_classes), _RESNET_STAGES),
    "simple_cnn": ModelSpec(SmallCNN),
}
TORCHVISION = "torchvision:"
FORMS = ("torchvision:<name>", "<module>:<callable>", "<path/to/file.py>:<callable>")


def _torchvision(name: str) -> ModelSpec:
    import torchvision.models as tvm  # heavy (~2 s, torch._dynamo): torchvision: models only

    names = tvm.list_models(module=tvm)  # image classification only
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean {TORCHVISION}{close[0]}?)" if close else ""
        raise UserError(f"model: torchvision has no image-classification model {name!r}{hint}; "
                        f"e.g. {', '.join(TORCHVISION + n for n in names[:6])}, ...")
    return ModelSpec(lambda num_classes: tvm.get_model(name, weights=None,
                                                       num_classes=num_classes),
                     stages=None, builtin=False)


def _import(where: str) -> ModuleType:
    """A module by dotted name, or a Python file by path (run as a fresh module)."""
    if not where.endswith(".py"):
        return importlib.import_module(where)
    file = Path(where).expanduser().resolve()
    spec = importlib.util.spec_from_file_location(f"edge_tune_user.{file.stem}", file)
    if spec is None or spec.loader is None:
        raise UserError(f"model: cannot import {where!r} as Python")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _user_code(name: str) -> ModelSpec:
    """``<module>:<callable>`` or ``<file.py>:<callable>``, imported now (errors are the user's)."""
    where, _, attr = name.rpartition(":")
    if where.endswith(".py") and not Path(where).expanduser().is_file():
        raise UserError(f"model: no such file {where!r} (in {name!r})")
    try:
        module = _import(where)
    except UserError:
        raise
    except ModuleNotFoundError as err:
        if err.name is not None and where.startswith(err.name):
            raise UserError(f"model: no module {where!r} (in {name!r}); name a module on the "
                            "Python path or a path/to/file.py") from None
        raise UserError(f"model: importing {where!r} raised ModuleNotFoundError: "
                        f"{first_line(err)}") from None
    except Exception as err:  # noqa: BLE001 - the user's code may raise anything on import
        raise UserError(f"model: importing {where!r} raised {type(err).__name__}: "
                        f"{first_line(err)}") from None
    build = getattr(module, attr, None)
    if not callable(build):
        found = sorted(n for n, v in vars(module).items()
                       if callable(v) and not n.startswith("_") and not isinstance(v, ModuleType))
        raise UserError(f"model: {where!r} has no callable {attr!r}; callables: "
                        f"{', '.join(found) or 'none'}")
    return ModelSpec(lambda num_classes: build(num_classes=num_classes), stages=None,
                     builtin=False)


@functools.lru_cache(maxsize=16)
def model_spec(name: str) -> ModelSpec:
    """The model ``name`` names (a miss lists the built-ins and the other forms)."""
    if name in MODELS:
        return MODELS[name]
    if name.startswith(TORCHVISION):
        return _torchvision(name.removeprefix(TORCHVISION))
    if ":" in name:
        return _user_code(name)
    error = unknown("model", name, MODELS)
    raise UserError(f"{error}, or {', '.join(FORMS)}")


def create_model(name: str, num_classes: int) -> nn.Module:
    """A freshly initialised model by name (``model`` in the config)."""
    model = model_spec(name).build(num_classes)
    if not isinstance(model, nn.Module):
        raise UserError(f"model: {name!r} returned a {type(model).__name__}, expected a "
                        "torch.nn.Module")
    return model


def _conv_containers(parent: nn.Module) -> tuple[list[str], list[tuple[str, nn.Module]]]:
    """Children of ``parent`` that hold convs, and those of them that are not a conv."""
    holders = [(n, m) for n, m in parent.named_children()
               if any(isinstance(x, nn.Conv2d) for x in m.modules())]
    return [n for n, _ in holders], [(n, m) for n, m in holders if not isinstance(m, nn.Conv2d)]


def derive_stages(model: nn.Module) -> tuple[str, ...]:
    """Top-level containers that hold convolutions; a lone one (``features``) is descended
    into while it holds containers of its own."""
    prefix, parent = "", model
    while True:
        holders, containers = _conv_containers(parent)
        if len(containers) == 1 and len(holders) == 1 and _conv_containers(containers[0][1])[1]:
            name, parent = containers[0]
            prefix = f"{prefix}{name}."
            continue
        return tuple(f"{prefix}{n}" for n, _ in containers)


@functools.lru_cache(maxsize=16)
def model_stages(name: str) -> tuple[str, ...]:
    """The stages of model ``name`` (``filter_ratio_<stage>`` parameters)."""
    spec = model_spec(name)
    return spec.stages if spec.stages is not None else derive_stages(spec.build(10))


def check_model(name: str, num_classes: int, image_size: int) -> None:
    """A model that is not built in must build and map (2, 3, S, S) images to (2, classes)."""
    if model_spec(name).builtin:
        return
    model = create_model(name, num_classes).eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, 3, image_size, image_size))
    except Exception as err:  # noqa: BLE001 - the user's forward may raise anything
        raise UserError(f"model: {name!r} fails on a (2, 3, {image_size}, {image_size}) batch: "
                        f"{type(err).__name__}: {first_line(err)}") from None
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if shape != (2, num_classes):
        raise UserError(f"model: {name!r} gives {shape} for 2 images, expected (2, "
                        f"{num_classes}) logits (num_classes={num_classes} from the data set)")
