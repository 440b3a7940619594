"""Data sets by name: ``digits`` (ships with scikit-learn), ``fashion_mnist`` (Debian's
``dataset-fashion-mnist``), ``cifar10``, ``cifar100`` and ``imagefolder`` (loaders in
:mod:`edge_tune.catalog.loaders`).

The registry :data:`DATASETS` maps a name to a :class:`DatasetSpec`: its loader, how many
classes it has (known before loading, for checkpoints and models), whether it needs
``data.root`` and an optional cheap check of its files. Adding a data set is one entry plus its
loader.

Every loader returns a :class:`Splits` of train/val/test datasets of (3, S, S) float tensors
normalised with the training split's per-channel mean and std, and integer labels; grayscale
images are replicated to 3 channels. Splits are fixed by ``data.seed`` so every trial and every
baseline sees the same images. Apart from digits (1,797 images, held as float), images are held
as uint8 at S x S and turned into standardised floats per item or batch (:class:`ByteImages`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from edge_tune.catalog.loaders import (
    cifar100_dir,
    fashion_files,
    image_classes,
    load_cifar10,
    load_cifar100,
    load_digits,
    load_fashion_mnist,
    load_imagefolder,
)
from edge_tune.catalog.splits import DataConfig, Splits, require_root
from edge_tune.core.errors import UserError, lookup


@dataclass(frozen=True)
class DatasetSpec:
    """A registered data set: its loader, its class count and whether it reads ``data.root``."""

    load: Callable[[DataConfig], Splits]
    num_classes: Callable[[DataConfig], int]  # cheap: before any image is read
    needs_root: bool
    check: Callable[[DataConfig], object] | None = None  # cheap: its files are there


DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(load_digits, lambda _: 10, needs_root=False),
    "fashion_mnist": DatasetSpec(load_fashion_mnist, lambda _: 10, needs_root=False,
                                 check=fashion_files),
    "cifar10": DatasetSpec(load_cifar10, lambda _: 10, needs_root=True),
    "cifar100": DatasetSpec(load_cifar100, lambda _: 100, needs_root=True, check=cifar100_dir),
    "imagefolder": DatasetSpec(load_imagefolder, image_classes, needs_root=True),
}


def check_data(config: DataConfig) -> DatasetSpec:
    """Cheap checks of the data config (name, train_subset, directory, files) before any work."""
    spec = lookup(DATASETS, "data.name", config.name)
    if config.train_subset < 0:
        raise UserError(f"data.train_subset: expected an integer >= 0, got {config.train_subset!r}")
    if spec.needs_root:
        require_root(config)
    if spec.check is not None:
        spec.check(config)
    return spec


def num_classes(config: DataConfig) -> int:
    """The configured data set's class count, without loading it."""
    return check_data(config).num_classes(config)


def load_data(config: DataConfig) -> Splits:
    """The train/val/test splits of the configured data set."""
    return check_data(config).load(config)


