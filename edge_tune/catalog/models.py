"""CNNs by name: built-in Distiller-named CIFAR ResNets, torchvision's, and the user's own.

``model:`` in the config is one of

- a built-in name (:data:`MODELS`: Distiller's ``resnet20_cifar``, ``resnet56_cifar``,
  ``plain20_cifar``, ``preact_resnet20_cifar``, ``vgg16_cifar``, ``mobilenet``, and
  ``simple_cnn``), module names as Distiller's (``conv1``, ``layerN.M.conv1|bn1|conv2|bn2``,
  ``layerN.0.downsample.0|1``, ``fc``; ``features.N``; ``model.N.M``) so its recipes apply as
  written (:mod:`edge_tune.catalog.architectures`);
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

from edge_tune.catalog.architectures import (
    MobileNetV1,
    PreactResNetCifar,
    ResNetCifar,
    SmallCNN,
    VGGCifar,
)
from edge_tune.core.errors import UserError, first_line, unknown


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
    min_image_size: int = 8  # px: smaller inputs pool away to nothing (VGG: five 2x2 pools)


_RESNET_STAGES = ("layer1", "layer2", "layer3")

MODELS: dict[str, ModelSpec] = {
    "resnet20_cifar": ModelSpec(lambda num_classes: ResNetCifar(3, num_classes), _RESNET_STAGES),
    "resnet56_cifar": ModelSpec(lambda num_classes: ResNetCifar(9, num_classes), _RESNET_STAGES),
    "plain20_cifar": ModelSpec(lambda num_classes: ResNetCifar(3, num_classes, plain=True),
                               _RESNET_STAGES),
    "preact_resnet20_cifar": ModelSpec(lambda num_classes: PreactResNetCifar(3, num_classes),
                                       _RESNET_STAGES),
    "vgg16_cifar": ModelSpec(VGGCifar, None, min_image_size=32),
    "mobilenet": ModelSpec(MobileNetV1, None, min_image_size=32),
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
    """A built-in model must fit the image size; one that is not built in must build and map
    (2, 3, S, S) images to (2, classes)."""
    spec = model_spec(name)
    if spec.builtin:
        if image_size < spec.min_image_size:
            raise UserError(f"data.image_size: {name} needs at least {spec.min_image_size} px "
                            f"(its poolings leave nothing of smaller inputs), got {image_size}")
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
