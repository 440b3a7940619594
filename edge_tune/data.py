"""Data sets by name: ``digits`` (ships with scikit-learn), ``cifar10``, ``imagefolder``.

The registry :data:`DATASETS` maps a name to a :class:`DatasetSpec`: its loader, how many
classes it has (known before loading, for checkpoints and models) and whether it needs
``data.root``. Adding a data set is one entry plus its loader.

Every loader returns a :class:`Splits` of train/val/test datasets of (3, S, S) float tensors
normalised with the training split's per-channel mean and std, and integer labels. Splits are
fixed by ``data.seed`` so every trial and every baseline sees the same images.
"""

from __future__ import annotations

import pickle
import tarfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_digits as sk_digits
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from edge_tune.errors import UserError, lookup

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp"}


@dataclass(frozen=True)
class DataConfig:
    """Which data set, where it lives and how it is split and batched (``data:`` section)."""

    name: str = "digits"
    root: str | None = None  # directory for cifar10 / imagefolder
    image_size: int = 32  # px, square input of the model
    batch_size: int = 64
    val_fraction: float = 0.15  # of the data the set ships for training
    # digits only (it ships no test split): 25% = 450 images, one image = 0.22 points of top-1;
    # at 15% (270) one image was 0.37 points and a "1 point" threshold meant 2 images.
    test_fraction: float = 0.25
    seed: int = 0  # split seed, fixed so every trial sees the same split
    download: bool = False  # cifar10: fetch the archive into ``root`` if it is missing


@dataclass(frozen=True)
class Splits:
    """Train/validation/test datasets and the number of classes."""

    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    image_size: int  # px


def _split_indices(labels: np.ndarray, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Stratified, seeded split of ``range(len(labels))``; the remainder is the first part."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        start = 0
        counts = [round(f * len(idx)) for f in fractions]
        for part, count in zip(parts[1:], counts, strict=True):
            part.extend(idx[start:start + count].tolist())
            start += count
        parts[0].extend(idx[start:].tolist())
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def _normalise(images: torch.Tensor, train_idx: np.ndarray) -> torch.Tensor:
    """Per-channel standardisation with statistics of the training images only."""
    train = images[torch.as_tensor(train_idx)]
    mean = train.mean(dim=(0, 2, 3), keepdim=True)
    std = train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return (images - mean) / std


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear",
                                           align_corners=False)


def load_digits(config: DataConfig) -> Splits:
    """scikit-learn's 1,797 handwritten 8x8 digits, upsampled to 3 x S x S (CIFAR's shape)."""
    bunch = sk_digits()
    labels = bunch.target.astype(np.int64)
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = _resize(images, config.image_size).repeat(1, 3, 1, 1)
    train_idx, val_idx, test_idx = _split_indices(
        labels, (config.val_fraction, config.test_fraction), config.seed)
    images = _normalise(images, train_idx)
    y = torch.as_tensor(labels)
    train, val, test = (TensorDataset(images[i], y[i]) for i in (train_idx, val_idx, test_idx))
    return Splits(train, val, test, num_classes=10, image_size=config.image_size)


def _require_root(config: DataConfig) -> Path:
    if config.root is None:
        raise UserError(f"data.root: required for data set {config.name!r}, got null")
    root = Path(config.root).expanduser()
    if not root.is_dir() and not (config.name == "cifar10" and config.download):
        raise UserError(f"data.root: no such directory {str(root)!r}")
    return root


def _cifar_dir(root: Path, download: bool) -> Path:
    for candidate in (root, root / "cifar-10-batches-py"):
        if (candidate / "test_batch").is_file():
            return candidate
    if not download:
        raise UserError(f"data.root: {str(root)!r} holds no CIFAR-10 python batches "
                        "(data_batch_1..5, test_batch); set data.download: true to fetch them")
    root.mkdir(parents=True, exist_ok=True)
    archive = root / "cifar-10-python.tar.gz"
    print(f"edge_tune: downloading CIFAR-10 to {archive}", flush=True)
    urllib.request.urlretrieve(CIFAR10_URL, archive)
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")
    return root / "cifar-10-batches-py"


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with path.open("rb") as handle:
        # The official format is a pickle; only files the user points at are read.
        batch = pickle.load(handle, encoding="bytes")  # noqa: S301
    data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return data, np.asarray(batch[b"labels"], dtype=np.int64)


def load_cifar10(config: DataConfig) -> Splits:
    """CIFAR-10 from its python-pickle batches in ``data.root`` (or its cifar-10-batches-py)."""
    folder = _cifar_dir(_require_root(config), config.download)
    parts = [_read_cifar_batch(p) for p in sorted(folder.glob("data_batch_*"))]
    if not parts:
        raise UserError(f"data.root: {str(folder)!r} has test_batch but no data_batch_* files")
    test_x, test_y = _read_cifar_batch(folder / "test_batch")
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    images = torch.as_tensor(np.concatenate([train_x, test_x]), dtype=torch.float32) / 255.0
    images = _resize(images, config.image_size)
    train_idx, val_idx = _split_indices(train_y, (config.val_fraction,), config.seed)
    test_idx = np.arange(len(train_y), len(train_y) + len(test_y))
    images = _normalise(images, train_idx)
    y = torch.as_tensor(np.concatenate([train_y, test_y]))
    train, val, test = (TensorDataset(images[i], y[i]) for i in (train_idx, val_idx, test_idx))
    return Splits(train, val, test, num_classes=10, image_size=config.image_size)


class ImageFiles(Dataset):
    """Images read lazily from disk, resized to S x S RGB and standardised."""

    def __init__(self, files: list[tuple[Path, int]], size: int,
                 mean: torch.Tensor | None = None, std: torch.Tensor | None = None) -> None:
        self.files, self.size = files, size
        self.mean = torch.zeros(3, 1, 1) if mean is None else mean
        self.std = torch.ones(3, 1, 1) if std is None else std

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.files[index]
        with Image.open(path) as image:
            rgb = image.convert("RGB").resize((self.size, self.size), Image.Resampling.BILINEAR)
        x = torch.as_tensor(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return (x - self.mean) / self.std, label


def _scan(folder: Path, classes: list[str]) -> list[tuple[Path, int]]:
    files = []
    for label, name in enumerate(classes):
        files += [(p, label) for p in sorted((folder / name).iterdir())
                  if p.suffix.lower() in IMAGE_SUFFIXES]
    return files


def load_imagefolder(config: DataConfig) -> Splits:
    """Class-per-subfolder images (ImageNet layout): ``root/train`` + ``root/val`` or one folder.

    With ``train/`` and ``val/`` (or ``test/``) subfolders, the latter is the test split;
    otherwise ``root``'s class folders are split seeded into train/val/test.
    """
    root = _require_root(config)
    train_dir = root / "train" if (root / "train").is_dir() else root
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise UserError(f"data.root: {str(train_dir)!r} needs at least 2 class folders, "
                        f"found {len(classes)}")
    files = _scan(train_dir, classes)
    labels = np.asarray([label for _, label in files])
    held_out = next((root / n for n in ("val", "test") if (root / n).is_dir()), None)
    if held_out is not None and train_dir != root:
        train_idx, val_idx = _split_indices(labels, (config.val_fraction,), config.seed)
        test_files = _scan(held_out, classes)
    else:
        train_idx, val_idx, test_idx = _split_indices(
            labels, (config.val_fraction, config.test_fraction), config.seed)
        test_files = [files[i] for i in test_idx]
    if len(files) == 0 or len(test_files) == 0:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise UserError(f"data.root: {str(root)!r} holds no images ({suffixes})")
    raw = ImageFiles([files[i] for i in train_idx], config.image_size)
    sample = torch.stack([raw[i][0] for i in range(0, len(raw), max(1, len(raw) // 256))])
    mean = sample.mean(dim=(0, 2, 3)).view(3, 1, 1)
    std = sample.std(dim=(0, 2, 3)).clamp_min(1e-6).view(3, 1, 1)

    def make(part: list[tuple[Path, int]]) -> ImageFiles:
        return ImageFiles(part, config.image_size, mean, std)

    return Splits(make([files[i] for i in train_idx]), make([files[i] for i in val_idx]),
                  make(test_files), num_classes=len(classes), image_size=config.image_size)


def _image_classes(config: DataConfig) -> int:
    """Class count of an image folder: its (train/) subfolders, counted without reading images."""
    root = _require_root(config)
    train_dir = root / "train" if (root / "train").is_dir() else root
    return max(2, sum(1 for p in train_dir.iterdir() if p.is_dir()))


@dataclass(frozen=True)
class DatasetSpec:
    """A registered data set: its loader, its class count and whether it reads ``data.root``."""

    load: Callable[[DataConfig], Splits]
    num_classes: Callable[[DataConfig], int]  # cheap: before any image is read
    needs_root: bool


DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(load_digits, lambda _: 10, needs_root=False),
    "cifar10": DatasetSpec(load_cifar10, lambda _: 10, needs_root=True),
    "imagefolder": DatasetSpec(load_imagefolder, _image_classes, needs_root=True),
}


def check_data(config: DataConfig) -> DatasetSpec:
    """Cheap checks of the data config (name, directory) before any expensive work."""
    spec = lookup(DATASETS, "data.name", config.name)
    if spec.needs_root:
        _require_root(config)
    return spec


def num_classes(config: DataConfig) -> int:
    """The configured data set's class count, without loading it."""
    return check_data(config).num_classes(config)


def load_data(config: DataConfig) -> Splits:
    """The train/val/test splits of the configured data set."""
    return check_data(config).load(config)


def loader(dataset: Dataset, batch_size: int, shuffle: bool = False, seed: int = 0) -> DataLoader:
    """A single-process DataLoader (workers cost more than they save at these sizes)."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)


def take(dataset: Dataset, count: int) -> Subset:
    """The first ``count`` items (all when fewer): calibration and BN re-estimation sets."""
    return Subset(dataset, range(min(count, len(dataset))))  # type: ignore[arg-type]
