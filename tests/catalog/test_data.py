import dataclasses
import gzip
import pickle
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edge_tune.catalog import loaders
from edge_tune.catalog.data import DATASETS, check_data, load_data, num_classes
from edge_tune.catalog.splits import DataConfig, Splits, loader
from edge_tune.core.errors import UserError


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
    for c in range(classes):
        (folder / f"class_{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = np.full((20, 24, 3), (c * 40 + i) % 256, dtype=np.uint8)
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


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "imagefolder"])
def test_missing_directory_is_a_user_error(tmp_path: Path, name: str) -> None:
    with pytest.raises(UserError, match=r"data.root: no such directory .*nowhere"):
        load_data(DataConfig(name=name, root=str(tmp_path / "nowhere")))
    with pytest.raises(UserError, match="data.root: required"):
        load_data(DataConfig(name=name))


def test_cifar10_directory_without_batches(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="holds no CIFAR-10 python batches"):
        load_data(DataConfig(name="cifar10", root=str(tmp_path)))


# --- Fashion-MNIST (IDX files) ---------------------------------------------------------------

FASHION = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
           "t10k-labels-idx1-ubyte"]


def _idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file's bytes: magic (0, 0, 0x08 = ubyte, ndim), big-endian dims, the data."""
    head = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return head + array.astype(np.uint8).tobytes()


def _write_fashion(folder: Path, train: int = 40, test: int = 20, gz: bool = True) -> None:
    """Tiny Fashion-MNIST files: label i % 10, every pixel of an image = 20 x label + row."""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, count in (("train", train), ("t10k", test)):
        labels = np.arange(count) % 10
        images = labels[:, None, None] * 20 + np.arange(28)[None, :, None] + np.zeros((1, 1, 28))
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            data = _idx_bytes(array)
            name = f"{prefix}-{kind}-ubyte"
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)


def _one_line_error(config: DataConfig) -> str:
    with pytest.raises(UserError) as caught:
        load_data(config)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_fashion_mnist_reads_gzipped_idx_files(tmp_path: Path) -> None:
    _write_fashion(tmp_path)
    splits = load_data(DataConfig(name="fashion_mnist", root=str(tmp_path), val_fraction=0.25,
                                  image_size=16))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (30, 10, 20)
    assert splits.num_classes == 10
    x, _ = splits.test[3]
    assert x.shape == (3, 16, 16)
    assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])  # grayscale -> 3 channels
    assert [int(splits.test[i][1]) for i in range(20)] == [i % 10 for i in range(20)]
    # pixel order kept: brightness grows with the label and down the rows
    means = [splits.test[i][0].mean().item() for i in range(10)]
    assert means == sorted(means) and means[0] < means[-1]
    assert bool((x[0, 1:, 0] > x[0, :-1, 0]).all())
    train_x = torch.stack([splits.train[i][0] for i in range(len(splits.train))])
    assert abs(train_x.mean().item()) < 1e-3 and abs(train_x.std().item() - 1) < 0.05


def test_fashion_mnist_batches_match_items(tmp_path: Path) -> None:
    _write_fashion(tmp_path)
    splits = load_data(DataConfig(name="fashion_mnist", root=str(tmp_path)))
    x, y = next(iter(loader(splits.train, batch_size=8)))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(x[5], splits.train[5][0]) and int(y[5]) == int(splits.train[5][1])


def test_fashion_mnist_accepts_ungzipped_files(tmp_path: Path) -> None:
    _write_fashion(tmp_path / "gz")
    _write_fashion(tmp_path / "raw", gz=False)
    gz = load_data(DataConfig(name="fashion_mnist", root=str(tmp_path / "gz")))
    raw = load_data(DataConfig(name="fashion_mnist", root=str(tmp_path / "raw")))
    assert len(raw.test) == 20
    assert torch.equal(raw.test[7][0], gz.test[7][0])


def test_fashion_mnist_missing_file_says_how_to_get_it(tmp_path: Path) -> None:
    _write_fashion(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    config = DataConfig(name="fashion_mnist", root=str(tmp_path))
    message = _one_line_error(config)
    assert message.startswith("data.root: ") and "lacks t10k-labels-idx1-ubyte.gz" in message
    assert "train-images" not in message.split(" of ")[0]  # only the missing one is "lacked"
    assert "apt-get install dataset-fashion-mnist" in message
    with pytest.raises(UserError, match="lacks t10k-labels"):
        check_data(config)  # the cheap check finds it before any loading


def test_fashion_mnist_default_folder_missing(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loaders, "FASHION_ROOT", str(tmp_path / "nowhere"))
    message = _one_line_error(DataConfig(name="fashion_mnist"))
    assert message.startswith(f"data.root: null reads Fashion-MNIST from {tmp_path}/nowhere")
    assert "lacks all four" in message and "apt-get install dataset-fashion-mnist" in message
    message = _one_line_error(DataConfig(name="fashion_mnist", root=str(tmp_path / "gone")))
    assert message == f"data.root: no such directory {str(tmp_path / 'gone')!r}"


def _cut_gzip(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-30])


def _short_data(path: Path) -> None:
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:1000]))


def _wrong_magic(path: Path) -> None:
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + gzip.decompress(path.read_bytes())[4:]))


def _cut_header(path: Path) -> None:
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:10]))


@pytest.mark.parametrize(("corrupt", "expected"), [
    (_cut_header, "is truncated: its IDX header ends after 10 of 16 bytes"),
    (_cut_gzip, "bad gzip data (Compressed file ended"),
    (_short_data, "is truncated or corrupt: it holds 984 of the 31,360 bytes its header announces "
                  "(40x28x28)"),
    (_wrong_magic, "is not an IDX file of 3-d bytes (magic 0x00000801, expected 0x00000803)"),
])
def test_fashion_mnist_corrupt_file_is_named(tmp_path: Path, corrupt: Callable[[Path], None],
                                             expected: str) -> None:
    _write_fashion(tmp_path)
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    corrupt(bad)
    message = _one_line_error(DataConfig(name="fashion_mnist", root=str(tmp_path)))
    assert message.startswith(f"data.root: {str(bad)!r}")
    assert expected in message


def test_fashion_mnist_counts_must_agree(tmp_path: Path) -> None:
    _write_fashion(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(_idx_bytes(np.arange(19) % 10)))
    message = _one_line_error(DataConfig(name="fashion_mnist", root=str(tmp_path)))
    assert "holds 20 images but" in message and "t10k-labels-idx1-ubyte.gz' 19 labels" in message


def _debian_fashion_mnist() -> bool:
    try:
        listing = subprocess.run(["dpkg", "-L", "dataset-fashion-mnist"], capture_output=True,
                                 text=True, check=False).stdout
    except FileNotFoundError:
        return False
    return f"{loaders.FASHION_ROOT}/t10k-labels-idx1-ubyte.gz" in listing


@pytest.mark.skipif(not _debian_fashion_mnist(),
                    reason="dataset-fashion-mnist not installed (apt-get; .ci/run installs it)")
def test_the_real_debian_fashion_mnist() -> None:
    config = DataConfig(name="fashion_mnist", train_subset=1000)
    assert num_classes(config) == 10
    splits = load_data(config)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (1000, 9000, 10000)
    for part, per_class in ((splits.train, 100), (splits.val, 900), (splits.test, 1000)):
        assert np.bincount([int(part[i][1]) for i in range(len(part))]).tolist() == [per_class] * 10
    x, _ = splits.test[0]
    assert x.shape == (3, 32, 32) and torch.equal(x[0], x[2])


# --- CIFAR-100 ---------------------------------------------------------------------------------

def _write_cifar100(folder: Path, per_class: int = 2) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in ("train", "test"):
        fine = [i % 100 for i in range(100 * per_class)]
        pixels = rng.integers(0, 256, size=(len(fine), 3072), dtype=np.uint8)
        pixels[:, 1024:2048] = np.asarray(fine, dtype=np.uint8)[:, None] * 2  # green = label
        batch = {b"data": pixels, b"fine_labels": fine, b"coarse_labels": [f // 5 for f in fine],
                 b"filenames": [b"x.png"] * len(fine), b"batch_label": name.encode()}
        with (folder / name).open("wb") as f:
            pickle.dump(batch, f)
    with (folder / "meta").open("wb") as f:
        pickle.dump({b"fine_label_names": [b"c%d" % i for i in range(100)]}, f)


@pytest.mark.parametrize("sub", ["cifar-100-python", "."])
def test_cifar100_reads_fine_labels(tmp_path: Path, sub: str) -> None:
    _write_cifar100(tmp_path / sub)
    config = DataConfig(name="cifar100", root=str(tmp_path), val_fraction=0.5)
    assert num_classes(config) == 100
    splits = load_data(config)
    assert splits.num_classes == 100
    assert (len(splits.train), len(splits.val), len(splits.test)) == (100, 100, 200)
    labels = sorted(int(splits.train[i][1]) for i in range(100))
    assert labels == list(range(100))  # fine labels (coarse ones stop at 19), one per class
    greens = [splits.test[i][0][1].mean().item() for i in range(100)]
    assert greens == sorted(greens)  # channel-major pixels kept


def test_cifar100_without_files(tmp_path: Path) -> None:
    config = DataConfig(name="cifar100", root=str(tmp_path))
    with pytest.raises(UserError, match=r"data.root: .* holds no CIFAR-100 python files"):
        check_data(config)
    (tmp_path / "train").write_bytes(b"not a pickle")
    (tmp_path / "test").write_bytes(b"not a pickle")
    message = _one_line_error(config)
    assert message.startswith(f"data.root: {str(tmp_path / 'train')!r} is not a CIFAR python")


# --- imagefolder ------------------------------------------------------------------------------

def test_imagefolder_with_100_classes_decodes_once(tmp_path: Path) -> None:
    _write_images(tmp_path / "train", classes=100, per_class=2)
    _write_images(tmp_path / "val", classes=60, per_class=1)  # val may lack classes
    (tmp_path / "train" / ".ipynb_checkpoints").mkdir()  # hidden: not a class
    config = DataConfig(name="imagefolder", root=str(tmp_path), image_size=8, val_fraction=0.5)
    assert num_classes(config) == 100
    splits = load_data(config)
    assert splits.num_classes == 100
    assert (len(splits.train), len(splits.val), len(splits.test)) == (100, 100, 60)
    assert sorted(int(splits.train[i][1]) for i in range(100)) == list(range(100))
    before = splits.test[59][0].clone()
    shutil.rmtree(tmp_path / "train")
    shutil.rmtree(tmp_path / "val")
    # every image was decoded at load: reading items (every epoch) touches no file
    assert torch.equal(splits.test[59][0], before)
    names = sorted(f"class_{c}" for c in range(100))  # labels follow the sorted names
    test_labels = [int(splits.test[i][1]) for i in range(60)]
    assert test_labels == sorted(names.index(f"class_{c}") for c in range(60))


def test_imagefolder_over_the_budget_reads_per_item(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _write_images(tmp_path, classes=3, per_class=8)
    config = DataConfig(name="imagefolder", root=str(tmp_path), image_size=12)
    decoded = load_data(config)
    monkeypatch.setattr(loaders, "DECODE_BUDGET", 0)
    lazy = load_data(config)
    assert isinstance(lazy.test, loaders.ImageFiles)
    assert not isinstance(decoded.test, loaders.ImageFiles)
    assert len(lazy.test) == len(decoded.test) == 6
    for i in range(6):
        assert torch.allclose(lazy.test[i][0], decoded.test[i][0], atol=1e-4)
        assert int(lazy.test[i][1]) == int(decoded.test[i][1])


def test_imagefolder_grayscale_becomes_3_channels(tmp_path: Path) -> None:
    for c in range(2):
        (tmp_path / f"c{c}").mkdir()
        for i in range(6):
            pixels = np.arange(100, dtype=np.uint8).reshape(10, 10) + 40 * c + i
            Image.fromarray(pixels, mode="L").save(tmp_path / f"c{c}" / f"{i}.png")
    splits = load_data(DataConfig(name="imagefolder", root=str(tmp_path), image_size=10))
    x, _ = splits.train[0]
    assert x.shape == (3, 10, 10)
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2]) and x[0].std() > 0


def test_imagefolder_val_class_missing_from_train(tmp_path: Path) -> None:
    _write_images(tmp_path / "train", classes=2, per_class=4)
    _write_images(tmp_path / "val", classes=3, per_class=1)
    message = _one_line_error(DataConfig(name="imagefolder", root=str(tmp_path)))
    assert message.startswith("data.root: ") and message.endswith("lacks: class_2")


# --- data.train_subset ---------------------------------------------------------------------------

def test_train_subset_is_stratified_and_seeded(tmp_path: Path) -> None:
    for c, count in enumerate((40, 20, 12)):  # 20/10/6 left for train after val and test
        (tmp_path / f"c{c}").mkdir()
        for i in range(count):
            Image.fromarray(np.full((4, 4, 3), 6 * i, dtype=np.uint8)).save(
                tmp_path / f"c{c}" / f"{i}.png")
    base = {"name": "imagefolder", "root": str(tmp_path), "image_size": 4, "val_fraction": 0.25,
            "test_fraction": 0.25}
    full = load_data(DataConfig(**base))
    assert np.bincount(full.train.labels).tolist() == [20, 10, 6]
    sub = load_data(DataConfig(**base, train_subset=18))
    assert np.bincount(sub.train.labels).tolist() == [10, 5, 3]  # 18 x (20, 10, 6) / 36
    assert torch.equal(sub.val.images, full.val.images)  # val is split off before subsetting
    assert torch.equal(sub.test.images, full.test.images)
    again = load_data(DataConfig(**base, train_subset=18))
    other = load_data(DataConfig(**base, train_subset=18, seed=1))
    assert torch.equal(again.train.images, sub.train.images)
    assert not torch.equal(other.train.images, sub.train.images)


def test_train_subset_on_digits_keeps_class_shares() -> None:
    full = load_data(DataConfig())
    sub = load_data(DataConfig(train_subset=100))
    counts = np.bincount([int(sub.train[i][1]) for i in range(len(sub.train))], minlength=10)
    shares = np.bincount([int(full.train[i][1]) for i in range(len(full.train))]) / len(full.train)
    assert counts.sum() == 100 and np.abs(counts - 100 * shares).max() < 1
    assert len(sub.val) == len(full.val) and torch.equal(sub.val[0][1], full.val[0][1])


def test_negative_train_subset_is_a_user_error() -> None:
    config = DataConfig(train_subset=-1)
    with pytest.raises(UserError, match=r"^data.train_subset: expected an integer >= 0, got -1$"):
        check_data(config)
    assert _one_line_error(config).startswith("data.train_subset: ")


# --- the registry -----------------------------------------------------------------------------

def _unreadable_files(root: Path) -> None:
    """Files with the right names and no content: counting classes must not read them."""
    for name in FASHION:
        (root / f"{name}.gz").write_bytes(b"")
    for name in ("train", "test"):
        (root / name).write_bytes(b"")
    for c in range(7):
        (root / "images" / f"class_{c}").mkdir(parents=True)
        (root / "images" / f"class_{c}" / "0.png").write_bytes(b"")


EXPECTED_CLASSES = {"digits": (10, None), "fashion_mnist": (10, "."), "cifar10": (10, "."),
                    "cifar100": (100, "."), "imagefolder": (7, "images")}


def test_every_data_set_has_a_class_count_case() -> None:
    assert set(EXPECTED_CLASSES) == set(DATASETS), "add the new data set to EXPECTED_CLASSES"


@pytest.mark.parametrize("name", sorted(EXPECTED_CLASSES))
def test_num_classes_is_answered_without_loading(tmp_path: Path, name: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _unreadable_files(tmp_path)
    expected, sub = EXPECTED_CLASSES[name]

    def no_load(config: DataConfig) -> Splits:
        raise AssertionError(f"{config.name} was loaded")

    monkeypatch.setitem(DATASETS, name, dataclasses.replace(DATASETS[name], load=no_load))
    root = None if sub is None else str(tmp_path / sub)
    assert num_classes(DataConfig(name=name, root=root)) == expected


def test_train_subset_leaves_fashion_mnist_val_and_test_alone(tmp_path: Path) -> None:
    _write_fashion(tmp_path, train=60)
    base = {"name": "fashion_mnist", "root": str(tmp_path), "val_fraction": 1 / 6}
    full = load_data(DataConfig(**base))
    sub = load_data(DataConfig(**base, train_subset=20))
    assert np.bincount(full.train.labels).tolist() == [5] * 10
    assert np.bincount(sub.train.labels).tolist() == [2] * 10
    assert torch.equal(sub.val.images, full.val.images) and len(sub.val) == 10
    assert torch.equal(sub.test.images, full.test.images)
