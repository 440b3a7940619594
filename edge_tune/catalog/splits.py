"""The shape every data set takes: its config section, train/val/test splits of (3, S, S)
float tensors normalised with the training split's per-channel statistics, stratified and
seeded splitting, and batching.

Apart from digits (1,797 images, held as float), images are held as uint8 at S x S and turned
into standardised floats per item or batch (:class:`ByteImages`); grayscale images are
replicated to 3 channels. Splits are fixed by ``data.seed`` so every trial and every baseline
sees the same images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from edge_tune.core.errors import UserError

RESIZE_CHUNK = 4096  # images resized (or counted) at once: 4096 x C x S x S x 4-8 bytes at most


@dataclass(frozen=True)
class DataConfig:
    """Which data set, where it lives and how it is split and batched (``data:`` section)."""

    name: str = "digits"
    root: str | None = None  # directory for cifar10 / cifar100 / imagefolder / fashion_mnist
    image_size: int = 32  # px, square input of the model
    batch_size: int = 64
    val_fraction: float = 0.15  # of the data the set ships for training
    # digits only (it ships no test split): 25% = 450 images, one image = 0.22 points of top-1;
    # at 15% (270) one image was 0.37 points and a "1 point" threshold meant 2 images.
    test_fraction: float = 0.25
    seed: int = 0  # split seed, fixed so every trial sees the same split
    download: bool = False  # cifar10: fetch the archive into ``root`` if it is missing
    # images trained on, stratified and seeded; 0 (or more than there are) = all. Validation
    # is split off the full training data first, so it is the same whatever the subset.
    train_subset: int = 0


@dataclass(frozen=True)
class Splits:
    """Train/validation/test datasets and the number of classes."""

    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    image_size: int  # px


class ByteImages(Dataset):
    """uint8 images (N, C, S, S), C = 1 or 3, standardised (and made 3-channel) when read.

    Holding bytes costs N x C x S x S bytes instead of 4 x N x 3 x S x S as float32; the float
    conversion is done per item, or per batch through ``__getitems__`` (DataLoader uses it).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: torch.Tensor,
                 std: torch.Tensor) -> None:
        self.images, self.labels = images, labels
        self.mean, self.std = mean, std  # (C, 1, 1), on the 0..1 scale

    def __len__(self) -> int:
        return len(self.images)

    def _floats(self, images: torch.Tensor) -> torch.Tensor:
        """Standardised float32 of uint8 ``(..., C, S, S)``, repeated to 3 channels when C = 1."""
        x = images.float().mul_(1 / 255.0).sub_(self.mean).div_(self.std)
        if x.shape[-3] == 1:  # a view: a batch is copied once more by the DataLoader's stack
            x = x.expand(*x.shape[:-3], 3, *x.shape[-2:])
        return x

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._floats(self.images[index]).contiguous(), self.labels[index]

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """A batch converted at once (one float conversion instead of one per image)."""
        index = torch.as_tensor(indices, dtype=torch.int64)  # index_select: [] on uint8 is slow
        x = self._floats(self.images.index_select(0, index))
        return list(zip(x.unbind(0), self.labels.index_select(0, index).unbind(0), strict=True))


def split_indices(labels: np.ndarray, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
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


def stratified_subset(idx: np.ndarray, labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` of the indices ``idx``, stratified by ``labels[idx]`` and seeded; 0 = all.

    Each class gets its share of ``count`` rounded down, and the images left over go to the
    classes with the largest remainders, so the total is exactly ``count``.
    """
    if count == 0 or count >= len(idx):
        return idx
    classes, sizes = np.unique(labels[idx], return_counts=True)
    exact = sizes * count / len(idx)
    quota = np.floor(exact).astype(np.int64)
    quota[np.argsort(quota - exact, kind="stable")[:count - int(quota.sum())]] += 1
    rng = np.random.default_rng([seed, 1])  # not the split's stream
    chosen = [rng.permutation(idx[labels[idx] == c])[:q]
              for c, q in zip(classes, quota, strict=True)]
    return np.sort(np.concatenate(chosen))


def train_val(labels: np.ndarray, config: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """Indices of train and val in a set's training data: val first, then ``train_subset``."""
    train_idx, val_idx = split_indices(labels, (config.val_fraction,), config.seed)
    return stratified_subset(train_idx, labels, config.train_subset, config.seed), val_idx


def normalise(images: torch.Tensor, train_idx: np.ndarray) -> torch.Tensor:
    """Per-channel standardisation with statistics of the training images only."""
    train = images[torch.as_tensor(train_idx)]
    mean = train.mean(dim=(0, 2, 3), keepdim=True)
    std = train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return (images - mean) / std


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of float (N, C, H, W) to (N, C, size, size) px."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear",
                                           align_corners=False)


def resize_bytes(images: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (N, C, H, W) resized to (N, C, size, size) px, still uint8 (rounded: <= 0.5/255)."""
    x = torch.from_numpy(images)
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    out = torch.empty((len(x), x.shape[1], size, size), dtype=torch.uint8)
    for start in range(0, len(x), RESIZE_CHUNK):
        chunk = resize(x[start:start + RESIZE_CHUNK].float(), size)
        out[start:start + RESIZE_CHUNK] = chunk.round_().clamp_(0, 255).to(torch.uint8)
    return out


def byte_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (0..1 scale, (C, 1, 1)) of uint8 (N, C, S, S), from histograms."""
    levels = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for channel in range(images.shape[1]):
        hist = np.zeros(256, dtype=np.int64)
        for start in range(0, len(images), RESIZE_CHUNK):  # bincount makes int64: chunks
            chunk = images[start:start + RESIZE_CHUNK, channel].reshape(-1).numpy()
            hist += np.bincount(chunk, minlength=256)
        count = max(int(hist.sum()), 1)
        mean = float(hist @ levels) / count
        means.append(mean)
        stds.append(max(float(hist @ (levels - mean) ** 2) / max(count - 1, 1), 1e-12) ** 0.5)
    shape = (len(means), 1, 1)
    return (torch.tensor(means, dtype=torch.float32).view(shape),
            torch.tensor(stds, dtype=torch.float32).clamp_min(1e-6).view(shape))


def byte_splits(images: torch.Tensor, labels: np.ndarray, parts: Sequence[np.ndarray],
                 num_classes: int, size: int) -> Splits:
    """ByteImages splits over the (train, val, test) indices, standardised with train's stats."""
    train_idx, val_idx, test_idx = (torch.as_tensor(p, dtype=torch.int64) for p in parts)
    mean, std = byte_stats(images.index_select(0, train_idx))
    y = torch.as_tensor(labels, dtype=torch.int64)
    train, val, test = (ByteImages(images.index_select(0, i), y.index_select(0, i), mean, std)
                        for i in (train_idx, val_idx, test_idx))
    return Splits(train, val, test, num_classes=num_classes, image_size=size)


def require_root(config: DataConfig) -> Path:
    """``data.root`` as an existing directory (cifar10 with download may create it)."""
    if config.root is None:
        raise UserError(f"data.root: required for data set {config.name!r}, got null")
    root = Path(config.root).expanduser()
    if not root.is_dir() and not (config.name == "cifar10" and config.download):
        raise UserError(f"data.root: no such directory {str(root)!r}")
    return root


def loader(dataset: Dataset, batch_size: int, shuffle: bool = False, seed: int = 0) -> DataLoader:
    """A single-process DataLoader (workers cost more than they save at these sizes)."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)


def take(dataset: Dataset, count: int) -> Subset:
    """The first ``count`` items (all when fewer): calibration and BN re-estimation sets."""
    return Subset(dataset, range(min(count, len(dataset))))  # type: ignore[arg-type]


