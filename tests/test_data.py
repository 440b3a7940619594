import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_tune.data import DataConfig, load_data
from edge_tune.errors import UserError


def test_digits_split_is_fixed_shaped_and_normalised() -> None:
    splits = load_data(DataConfig())
    again = load_data(DataConfig())
    assert len(splits.train) + len(splits.val) + len(splits.test) == 1797
    assert len(splits.test) == pytest.approx(450, abs=10)
    x, y = splits.test[0]
    assert x.shape == (3, 32, 32) and 0 <= int(y) < 10
    assert torch.equal(splits.test[5][0], again.test[5][0])
    train_x = torch.stack([splits.train[i][0] for i in range(len(splits.train))])
    assert abs(train_x.mean().item()) < 0.05 and abs(train_x.std().item() - 1) < 0.05
    other = load_data(DataConfig(seed=1))
    assert not torch.equal(other.test[0][0], splits.test[0][0])


def _write_cifar(folder: Path, per_batch: int = 20) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in ["data_batch_1", "data_batch_2", "test_batch"]:
        labels = [i % 10 for i in range(per_batch)]
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        data[:, :1024] = np.asarray(labels, dtype=np.uint8)[:, None] * 25  # red plane = label
        with (folder / name).open("wb") as f:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": name.encode()}, f)


def test_cifar10_reads_python_batches(tmp_path: Path) -> None:
    _write_cifar(tmp_path / "cifar-10-batches-py")
    splits = load_data(DataConfig(name="cifar10", root=str(tmp_path), val_fraction=0.2))
    assert len(splits.train) == 30 and len(splits.val) == 10 and len(splits.test) == 20
    assert splits.test[0][0].shape == (3, 32, 32)
    labels = [int(splits.test[i][1]) for i in range(20)]
    assert labels == [i % 10 for i in range(20)]
    # the red plane carries the label: the loader kept pixel order (channel-major, 32x32)
    reds = [splits.test[i][0][0].mean().item() for i in range(10)]
    assert reds == sorted(reds)


def test_cifar10_resizes(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    splits = load_data(DataConfig(name="cifar10", root=str(tmp_path), image_size=16))
    assert splits.train[0][0].shape == (3, 16, 16)


def _write_images(folder: Path, classes: int, per_class: int) -> None:
    from PIL import Image

    for c in range(classes):
        (folder / f"class_{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = np.full((20, 24, 3), c * 40 + i, dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"class_{c}" / f"{i}.png")


def test_imagefolder_with_train_and_val(tmp_path: Path) -> None:
    _write_images(tmp_path / "train", classes=3, per_class=10)
    _write_images(tmp_path / "val", classes=3, per_class=2)
    splits = load_data(DataConfig(name="imagefolder", root=str(tmp_path), image_size=12,
                                  val_fraction=0.2))
    assert splits.num_classes == 3
    assert len(splits.test) == 6 and len(splits.train) == 24 and len(splits.val) == 6
    x, y = splits.test[5]
    assert x.shape == (3, 12, 12) and y == 2


def test_imagefolder_flat_is_split(tmp_path: Path) -> None:
    _write_images(tmp_path, classes=4, per_class=10)
    splits = load_data(DataConfig(name="imagefolder", root=str(tmp_path), image_size=8,
                                  val_fraction=0.2, test_fraction=0.2))
    assert splits.num_classes == 4
    assert (len(splits.train), len(splits.val), len(splits.test)) == (24, 8, 8)


@pytest.mark.parametrize("name", ["cifar10", "imagefolder"])
def test_missing_directory_is_a_user_error(tmp_path: Path, name: str) -> None:
    with pytest.raises(UserError, match=r"data.root: no such directory .*nowhere"):
        load_data(DataConfig(name=name, root=str(tmp_path / "nowhere")))
    with pytest.raises(UserError, match="data.root: required"):
        load_data(DataConfig(name=name))


def test_cifar10_directory_without_batches(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="holds no CIFAR-10 python batches"):
        load_data(DataConfig(name="cifar10", root=str(tmp_path)))
