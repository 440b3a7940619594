from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edge_tune.catalog.data import load_data
from edge_tune.catalog.models import create_model
from edge_tune.compression.baseline import (
    baseline_model,
    cache_key,
    load_checkpoint,
    loss_rise,
)
from edge_tune.config import config_from_dict
from edge_tune.core.errors import UserError


def test_baseline_is_trained_once_then_cached(small_config: dict, tmp_path: Path) -> None:
    config = config_from_dict({**small_config, "cache_dir": str(tmp_path),
                               "baseline": {"epochs": 2, "lr": 0.05}})
    splits = load_data(config.data)
    said: list[str] = []
    model, info = baseline_model(config, splits, log=said.append)
    assert info["cached"] is False and info["top1_torch"] > 30  # 2 epochs: well above chance
    assert not any("warning" in line for line in said)  # its loss fell
    again, info2 = baseline_model(config, splits, log=lambda _: None)
    assert info2["cached"] is True and info2["top1_torch"] == info["top1_torch"]
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    other = config_from_dict({**small_config, "baseline": {"epochs": 3}})
    assert cache_key(other) != cache_key(config)
    assert cache_key(config).startswith("simple_cnn-digits-s0-e2-")


def test_a_loss_that_rises_for_epochs_is_found() -> None:
    # torchvision:mobilenet_v2 on Fashion-MNIST at lr 0.1 (8 epochs): it reached 77.8%
    mobilenet = [1.1776, 1.6687, 2.1694, 1.9, 1.4, 1.0, 0.75, 0.5675]
    assert loss_rise(mobilenet) == (0, 2)
    assert loss_rise([0.94, 0.56, 0.48, 0.22]) is None  # lr 0.02: 86.6%
    assert loss_rise([1.0, 1.05, 0.9, 0.8]) is None  # a wobble within 20%
    # ResNet-20 on digits, converged: 0.0013 -> 0.0021 is no divergence
    assert loss_rise([0.19, 0.08, 0.0018, 0.0013, 0.0021, 0.0015]) is None
    assert loss_rise([1.0, 0.8, 0.9, 1.1, 0.5]) == (1, 3)
    assert loss_rise([]) is None and loss_rise([2.0]) is None


def test_distiller_checkpoint_with_module_prefix_loads(tmp_path: Path) -> None:
    source = create_model("resnet20_cifar", 10)
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    path = tmp_path / "checkpoint.pth.tar"
    torch.save({"state_dict": state, "epoch": 179, "arch": "resnet20_cifar"}, path)
    target = create_model("resnet20_cifar", 10)
    load_checkpoint(path, target)
    assert torch.equal(target.fc.weight, source.fc.weight)


def test_user_checkpoint_is_the_baseline(small_config: dict, tmp_path: Path) -> None:
    source = create_model("simple_cnn", 10)
    torch.save(source.state_dict(), tmp_path / "mine.pt")
    mine = str(tmp_path / "mine.pt")
    config = config_from_dict({**small_config, "baseline": {"checkpoint": mine}})
    model, info = baseline_model(config, load_data(config.data), log=lambda _: None)
    assert info["source"] == str(tmp_path / "mine.pt")
    assert torch.equal(model.conv1.weight, source.conv1.weight)


def test_bad_checkpoints_are_user_errors(tmp_path: Path) -> None:
    model = create_model("resnet20_cifar", 10)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="baseline.checkpoint: .* is not a readable torch"):
        load_checkpoint(corrupt, model)
    other = tmp_path / "other.pt"
    torch.save(create_model("simple_cnn", 10).state_dict(), other)
    with pytest.raises(UserError, match="does not fit model ResNetCifar"):
        load_checkpoint(other, model)
    with pytest.raises(UserError, match="no such file"):
        load_checkpoint(tmp_path / "absent.pt", model)


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self) -> tuple:
            return (print, ("executed",))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": Payload()}, path)
    with pytest.raises(UserError, match="not a readable torch state_dict"):
        load_checkpoint(path, create_model("simple_cnn", 10))


def _save_as_distiller(obj: dict, path: Path) -> None:
    """torch.save as Distiller did: its ThinningRecipe pickles as distiller.thinning's."""
    import collections
    import sys
    import types

    module = types.ModuleType("distiller.thinning")
    recipe = collections.namedtuple("ThinningRecipe", ["modules", "parameters"])
    recipe.__module__ = "distiller.thinning"
    module.ThinningRecipe = recipe  # type: ignore[attr-defined]
    sys.modules["distiller"] = types.ModuleType("distiller")
    sys.modules["distiller.thinning"] = module
    try:
        obj["thinning_recipes"] = [recipe(modules={"conv1": {"out_channels": 8}},
                                          parameters={"conv1.weight": [(0, torch.arange(8))]})]
        torch.save(obj, path)
    finally:
        del sys.modules["distiller.thinning"], sys.modules["distiller"]


def test_a_thinned_distiller_checkpoint_loads_with_its_smaller_layers(tmp_path: Path) -> None:
    from edge_tune.compression.plan import plan_compression
    from edge_tune.compression.runner import apply_recipe
    from edge_tune.search.params import schedule_from_params

    config = config_from_dict({})
    thinned = create_model("resnet20_cifar", 10).eval()
    schedule = schedule_from_params({"filter_ratio": 0.5}, ("layer1", "layer2", "layer3"), 0)
    apply_recipe(thinned, plan_compression(schedule, thinned, config).recipe,
                 torch.zeros(1, 3, 32, 32))
    assert thinned.conv1.out_channels == 8
    path = tmp_path / "thinned.pth.tar"
    optimizer = torch.optim.SGD(thinned.parameters(), lr=0.1)
    _save_as_distiller({"state_dict": {f"module.{k}": v for k, v in thinned.state_dict().items()},
                        "arch": "resnet20_cifar", "epoch": 179,
                        "optimizer_state_dict": optimizer.state_dict(),
                        "optimizer_type": type(optimizer), "extras": {"best_top1": 91.2}}, path)
    target = create_model("resnet20_cifar", 10).eval()
    load_checkpoint(path, target)
    assert target.conv1.weight.shape == (8, 3, 3, 3) and target.fc.in_features == 32
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(target(x), thinned(x))


def test_a_checkpoint_is_never_fully_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple:
            return (Path.touch, (marker,))

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "extras": Evil()}, path)
    with pytest.raises(UserError, match=r"baseline.checkpoint: .* is not a readable torch"):
        load_checkpoint(path, create_model("simple_cnn", 10))
    assert not marker.exists()


def test_a_checkpoint_of_another_architecture_names_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "resnet56.pth"
    torch.save({"state_dict": create_model("resnet56_cifar", 10).state_dict(),
                "arch": "resnet56_cifar"}, path)
    with pytest.raises(UserError) as err:
        load_checkpoint(path, create_model("resnet20_cifar", 10))
    message = str(err.value)
    assert "(saved for arch 'resnet56_cifar') does not fit model ResNetCifar: unexpected " \
           "layer1.3.bn1.bias" in message and "\n" not in message
