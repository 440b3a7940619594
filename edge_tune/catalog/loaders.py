"""The loaders of the built-in data sets: ``digits`` (ships with scikit-learn),
``fashion_mnist`` (Debian's ``dataset-fashion-mnist``, IDX files), ``cifar10`` and
``cifar100`` (the Python pickles) and ``imagefolder`` (a folder per class). Each returns
:class:`~edge_tune.catalog.splits.Splits`."""

from __future__ import annotations

import gzip
import pickle
import tarfile
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, TensorDataset

from edge_tune.catalog.splits import (
    ByteImages,
    DataConfig,
    Splits,
    byte_splits,
    byte_stats,
    normalise,
    require_root,
    resize,
    resize_bytes,
    split_indices,
    stratified_subset,
    train_val,
)
from edge_tune.core.errors import UserError, first_line

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp"}

FASHION_ROOT = "/usr/share/datasets/fashion-mnist"  # where Debian's dataset-fashion-mnist puts it

# (images, labels) IDX files of each Fashion-MNIST split, each gzipped (.gz) or not
FASHION_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                 "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}

IDX_UBYTE = 0x08  # IDX type code of unsigned bytes

# imagefolder decodes every image once into uint8 when all splits fit in this many bytes
# (N x 3 x S x S: 349,525 images at 32 px, 87,381 at 64 px, 7,133 at 224 px), else per item
DECODE_BUDGET = 1 << 30  # bytes (1 GiB)

IDX_MAX_BYTES = 1 << 30  # larger IDX data than this is a corrupt header (Fashion-MNIST: 47 MB)

_PICKLE_ERRORS = (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError,
                  AttributeError, ImportError, IndexError)


def load_digits(config: DataConfig) -> Splits:
    """scikit-learn's 1,797 handwritten 8x8 digits, upsampled to 3 x S x S (CIFAR's shape)."""
    from sklearn.datasets import load_digits as sk_digits  # heavy (~2 s): digits only

    bunch = sk_digits()
    labels = bunch.target.astype(np.int64)
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = resize(images, config.image_size).repeat(1, 3, 1, 1)
    train_idx, val_idx, test_idx = split_indices(
        labels, (config.val_fraction, config.test_fraction), config.seed)
    train_idx = stratified_subset(train_idx, labels, config.train_subset, config.seed)
    images = normalise(images, train_idx)
    y = torch.as_tensor(labels)
    train, val, test = (TensorDataset(images[i], y[i]) for i in (train_idx, val_idx, test_idx))
    return Splits(train, val, test, num_classes=10, image_size=config.image_size)


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """The uint8 array of an IDX file (gzipped or not) with ``ndim`` dimensions (3: images,
    1: labels); a wrong magic, a size other than its header's or bad gzip data is a UserError."""
    expected = IDX_UBYTE << 8 | ndim
    gzipped = False
    try:
        with path.open("rb") as raw:
            gzipped = raw.read(2) == b"\x1f\x8b"
        with (gzip.open(path, "rb") if gzipped else path.open("rb")) as handle:
            magic = int.from_bytes(handle.read(4), "big")
            if magic != expected:
                raise UserError(f"data.root: {str(path)!r} is not an IDX file of {ndim}-d bytes "
                                f"(magic 0x{magic:08x}, expected 0x{expected:08x})")
            head = handle.read(4 * ndim)
            if len(head) != 4 * ndim:
                raise UserError(f"data.root: {str(path)!r} is truncated: its IDX header ends "
                                f"after {4 + len(head)} of {4 + 4 * ndim} bytes")
            dims = np.frombuffer(head, dtype=">u4").tolist()
            size = int(np.prod(dims, dtype=np.float64))
            if size > IDX_MAX_BYTES:
                raise UserError(f"data.root: {str(path)!r} is corrupt: its IDX header "
                                f"announces {dims} (at most {IDX_MAX_BYTES:,} bytes)")
            data = bytearray(size)
            got = handle.readinto(data)
            extra = len(handle.read(1))
    except (OSError, EOFError, zlib.error) as err:
        what = "bad gzip data" if gzipped else "cannot be read"
        raise UserError(f"data.root: {str(path)!r}: {what} ({first_line(err)})") from None
    if got != size or extra:
        state = f"holds {got:,} of" if got != size else "holds more than"
        raise UserError(f"data.root: {str(path)!r} is truncated or corrupt: it {state} the "
                        f"{size:,} bytes its header announces ({'x'.join(map(str, dims))})")
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def fashion_files(config: DataConfig) -> dict[str, Path]:
    """The four Fashion-MNIST IDX files (``.gz`` or not) by base name; absent ones: UserError."""
    folder = Path(config.root or FASHION_ROOT).expanduser()
    if config.root is not None and not folder.is_dir():
        raise UserError(f"data.root: no such directory {str(folder)!r}")
    names = [name for pair in FASHION_FILES.values() for name in pair]
    found = {name: next((p for p in (folder / f"{name}.gz", folder / name) if p.is_file()), None)
             for name in names}
    missing = [f"{name}.gz" for name, path in found.items() if path is None]
    lacks = "all four" if len(missing) == len(names) else ", ".join(missing)
    four = ", ".join(f"{name}.gz" for name in names)
    if config.root is None and missing:
        raise UserError(f"data.root: null reads Fashion-MNIST from {FASHION_ROOT}, which lacks "
                        f"{lacks}: apt-get install dataset-fashion-mnist, or set data.root to "
                        f"a folder with {four} (gzipped or not)")
    if missing:
        raise UserError(f"data.root: {str(folder)!r} lacks {lacks} of {four} (gzipped or not); "
                        "or set data.root: null after apt-get install dataset-fashion-mnist")
    return {name: path for name, path in found.items() if path is not None}


def _fashion_split(files: dict[str, Path], split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 1, H, W) and int64 labels of one Fashion-MNIST split, checked."""
    images_name, labels_name = FASHION_FILES[split]
    images = _read_idx(files[images_name], 3)
    labels = _read_idx(files[labels_name], 1).astype(np.int64)
    if len(images) != len(labels):
        raise UserError(f"data.root: {str(files[images_name])!r} holds {len(images):,} images "
                        f"but {str(files[labels_name])!r} {len(labels):,} labels")
    if len(labels) and labels.max() >= 10:
        raise UserError(f"data.root: {str(files[labels_name])!r} has label {labels.max()}, "
                        "Fashion-MNIST's are 0..9")
    return images[:, None], labels


def load_fashion_mnist(config: DataConfig) -> Splits:
    """Fashion-MNIST's 60,000 + 10,000 28x28 grayscale IDX images, at S x S, 3 channels.

    Read from ``data.root``, or with root null from Debian's ``dataset-fashion-mnist``
    (``/usr/share/datasets/fashion-mnist``). Validation is split off the 60,000 training images.
    Memory: the images are held as single-channel uint8 at S x S, 70,000 x S^2 bytes (72 MB at
    32 px, less with train_subset) instead of 860 MB as 3 x 32 x 32 float32; each batch is
    converted to 3-channel floats when read (:class:`ByteImages`).
    """
    files = fashion_files(config)
    train_x, train_y = _fashion_split(files, "train")
    test_x, test_y = _fashion_split(files, "test")
    images = torch.cat([resize_bytes(train_x, config.image_size),
                        resize_bytes(test_x, config.image_size)])
    train_idx, val_idx = train_val(train_y, config)
    test_idx = np.arange(len(train_y), len(train_y) + len(test_y))
    return byte_splits(images, np.concatenate([train_y, test_y]), (train_idx, val_idx, test_idx),
                        10, config.image_size)


def _cifar_dir(root: Path, download: bool) -> Path:
    """The folder holding CIFAR-10's batches (fetched first when ``download`` and absent)."""
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


def _read_cifar_batch(path: Path, label_key: bytes, num_classes: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 3, 32, 32) and int64 labels of one CIFAR python-pickle file."""
    try:
        with path.open("rb") as handle:
            # The official format is a pickle; only files the user points at are read.
            batch = pickle.load(handle, encoding="bytes")  # noqa: S301
        data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[label_key], dtype=np.int64).reshape(-1)
    except _PICKLE_ERRORS as err:
        raise UserError(f"data.root: {str(path)!r} is not a CIFAR python batch with "
                        f"{label_key.decode()} ({first_line(err)})") from None
    bad_label = len(labels) > 0 and (labels.min() < 0 or labels.max() >= num_classes)
    if len(labels) != len(data) or bad_label:
        raise UserError(f"data.root: {str(path)!r} has {len(data)} images and {len(labels)} "
                        f"labels (expected equal counts, labels 0..{num_classes - 1})")
    return data, labels


def _cifar_splits(config: DataConfig, train: list[tuple[np.ndarray, np.ndarray]],
                  test: tuple[np.ndarray, np.ndarray], num_classes: int) -> Splits:
    """Splits of CIFAR's uint8 batches: val split off the training batches, test as shipped."""
    train_y = np.concatenate([p[1] for p in train])
    labels = np.concatenate([train_y, test[1]])
    images = resize_bytes(np.concatenate([p[0] for p in train] + [test[0]]), config.image_size)
    train_idx, val_idx = train_val(train_y, config)
    test_idx = np.arange(len(train_y), len(labels))
    return byte_splits(images, labels, (train_idx, val_idx, test_idx), num_classes,
                        config.image_size)


def load_cifar10(config: DataConfig) -> Splits:
    """CIFAR-10 from its python-pickle batches in ``data.root`` (or its cifar-10-batches-py)."""
    folder = _cifar_dir(require_root(config), config.download)
    parts = [_read_cifar_batch(p, b"labels", 10) for p in sorted(folder.glob("data_batch_*"))]
    if not parts:
        raise UserError(f"data.root: {str(folder)!r} has test_batch but no data_batch_* files")
    return _cifar_splits(config, parts, _read_cifar_batch(folder / "test_batch", b"labels", 10),
                         10)


def cifar100_dir(config: DataConfig) -> Path:
    """The folder holding CIFAR-100's ``train`` and ``test`` pickles: root or cifar-100-python/."""
    root = require_root(config)
    for candidate in (root, root / "cifar-100-python"):
        if (candidate / "train").is_file() and (candidate / "test").is_file():
            return candidate
    raise UserError(f"data.root: {str(root)!r} holds no CIFAR-100 python files (train, test), "
                    "nor a cifar-100-python/ folder with them")


def load_cifar100(config: DataConfig) -> Splits:
    """CIFAR-100 (fine labels, 100 classes) from its python pickles ``train`` and ``test``."""
    folder = cifar100_dir(config)
    train = _read_cifar_batch(folder / "train", b"fine_labels", 100)
    test = _read_cifar_batch(folder / "test", b"fine_labels", 100)
    return _cifar_splits(config, [train], test, 100)


def _decode(path: Path, size: int) -> np.ndarray:
    """One image file as uint8 (size, size, 3) RGB (grayscale replicated); unreadable: UserError."""
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
            return np.array(rgb, dtype=np.uint8)  # a writable copy (torch.from_numpy)
    except (OSError, ValueError) as err:
        raise UserError(f"data.root: cannot read image {str(path)!r} ({first_line(err)})") from None


class ImageFiles(Dataset):
    """Images decoded from disk on every read (splits over the memory budget), S x S RGB."""

    def __init__(self, files: list[tuple[Path, int]], size: int,
                 mean: torch.Tensor | None = None, std: torch.Tensor | None = None) -> None:
        self.files, self.size = files, size
        self.mean = torch.zeros(3, 1, 1) if mean is None else mean
        self.std = torch.ones(3, 1, 1) if std is None else std

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.files[index]
        x = torch.from_numpy(_decode(path, self.size)).permute(2, 0, 1).float() / 255.0
        return (x - self.mean) / self.std, label


def _class_names(folder: Path) -> list[str]:
    """Sorted class folder names (hidden folders such as .ipynb_checkpoints are not classes)."""
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _scan(folder: Path, classes: list[str]) -> list[tuple[Path, int]]:
    """(image file, label) of every image in ``folder``'s class folders; absent ones are empty."""
    files = []
    for label, name in enumerate(classes):
        if (folder / name).is_dir():
            files += [(p, label) for p in sorted((folder / name).iterdir())
                      if p.suffix.lower() in IMAGE_SUFFIXES]
    return files


def _decoded(files: list[tuple[Path, int]], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image decoded once: uint8 (N, 3, size, size) and int64 labels (N,)."""
    images = torch.empty((len(files), 3, size, size), dtype=torch.uint8)
    for i, (path, _) in enumerate(files):
        images[i] = torch.from_numpy(_decode(path, size)).permute(2, 0, 1)
    return images, torch.as_tensor([label for _, label in files], dtype=torch.int64)


def _image_splits(parts: list[list[tuple[Path, int]]], num_classes: int, size: int) -> Splits:
    """Splits of (file, label) lists: decoded once within DECODE_BUDGET, else read per item."""
    if sum(map(len, parts)) * 3 * size * size <= DECODE_BUDGET:
        (train_x, train_y), (val_x, val_y), (test_x, test_y) = (_decoded(p, size) for p in parts)
        mean, std = byte_stats(train_x)
        return Splits(ByteImages(train_x, train_y, mean, std), ByteImages(val_x, val_y, mean, std),
                      ByteImages(test_x, test_y, mean, std), num_classes, size)
    raw = ImageFiles(parts[0], size)
    sample = torch.stack([raw[i][0] for i in range(0, len(raw), max(1, len(raw) // 256))])
    mean = sample.mean(dim=(0, 2, 3)).view(3, 1, 1)
    std = sample.std(dim=(0, 2, 3)).clamp_min(1e-6).view(3, 1, 1)
    train, val, test = (ImageFiles(p, size, mean, std) for p in parts)
    return Splits(train, val, test, num_classes=num_classes, image_size=size)


def load_imagefolder(config: DataConfig) -> Splits:
    """Class-per-subfolder images (ImageNet layout): ``root/train`` + ``root/val`` or one folder.

    With ``train/`` and ``val/`` (or ``test/``) subfolders, the latter is the test split (a class
    folder it lacks has no test images; one train/ lacks is an error); otherwise ``root``'s
    class folders are split seeded into train/val/test. Grayscale images become 3 equal channels.
    Each image is decoded once when all splits fit in DECODE_BUDGET (1 GiB) as uint8.
    """
    root = require_root(config)
    train_dir = root / "train" if (root / "train").is_dir() else root
    classes = _class_names(train_dir)
    if len(classes) < 2:
        raise UserError(f"data.root: {str(train_dir)!r} needs at least 2 class folders, "
                        f"found {len(classes)}")
    files = _scan(train_dir, classes)
    labels = np.asarray([label for _, label in files], dtype=np.int64)
    held_out = next((root / n for n in ("val", "test") if (root / n).is_dir()), None)
    if held_out is not None and train_dir != root:
        extra = sorted(set(_class_names(held_out)) - set(classes))
        if extra:
            raise UserError(f"data.root: {str(held_out)!r} has class folders that "
                            f"{str(train_dir)!r} lacks: {', '.join(extra[:5])}")
        train_idx, val_idx = train_val(labels, config)
        test_files = _scan(held_out, classes)
    else:
        train_idx, val_idx, test_idx = split_indices(
            labels, (config.val_fraction, config.test_fraction), config.seed)
        train_idx = stratified_subset(train_idx, labels, config.train_subset, config.seed)
        test_files = [files[i] for i in test_idx]
    if len(files) == 0 or len(test_files) == 0:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise UserError(f"data.root: {str(root)!r} holds no images ({suffixes})")
    parts = [[files[i] for i in train_idx], [files[i] for i in val_idx], test_files]
    return _image_splits(parts, len(classes), config.image_size)


def image_classes(config: DataConfig) -> int:
    """Class count of an image folder: its (train/) subfolders, counted without reading images."""
    root = require_root(config)
    train_dir = root / "train" if (root / "train").is_dir() else root
    return max(2, len(_class_names(train_dir)))


