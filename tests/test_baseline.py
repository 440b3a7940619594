from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edge_tune.baseline import baseline_model, cache_key, load_checkpoint
from edge_tune.config import config_from_dict
from edge_tune.data import load_data
from edge_tune.errors import UserError
from edge_tune.models import create_model


def test_baseline_is_trained_once_then_cached(small_config: dict, tmp_path: Path) -> None:
    config = config_from_dict({**small_config, "cache_dir": str(tmp_path),
                               "baseline": {"epochs": 2, "lr": 0.05}})
    splits = load_data(config.data)
    model, info = baseline_model(config, splits, log=lambda _: None)
    assert info["cached"] is False and info["top1_torch"] > 30  # 2 epochs: well above chance
    again, info2 = baseline_model(config, splits, log=lambda _: None)
    assert info2["cached"] is True and info2["top1_torch"] == info["top1_torch"]
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    other = config_from_dict({**small_config, "baseline": {"epochs": 3}})
    assert cache_key(other) != cache_key(config)
    assert cache_key(config).startswith("simple_cnn-digits-s0-e2-")


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
