"""Data sets by name: ``digits`` (ships with scikit-learn), ``fashion_mnist`` (Debian's
``dataset-fashion-mnist``), ``cifar10``, ``cifar100`` and ``imagefolder``.

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

import gzip
import pickle
import tarfile
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from edge_tune.errors import UserError, first_line, lookup

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
RESIZE_CHUNK = 4096  # images resized (or counted) at once: 4096 x C x S x S x 4-8 bytes at most
_PICKLE_ERRORS = (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError,
                  AttributeError, ImportError, IndexError)


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


def _subset(idx: np.ndarray, labels: np.ndarray, count: int, seed: int) -> np.ndarray:
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


def _train_val(labels: np.ndarray, config: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """Indices of train and val in a set's training data: val first, then ``train_subset``."""
    train_idx, val_idx = _split_indices(labels, (config.val_fraction,), config.seed)
    return _subset(train_idx, labels, config.train_subset, config.seed), val_idx


def _normalise(images: torch.Tensor, train_idx: np.ndarray) -> torch.Tensor:
    """Per-channel standardisation with statistics of the training images only."""
    train = images[torch.as_tensor(train_idx)]
    mean = train.mean(dim=(0, 2, 3), keepdim=True)
    std = train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return (images - mean) / std


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of float (N, C, H, W) to (N, C, size, size) px."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear",
                                           align_corners=False)


def _resize_bytes(images: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (N, C, H, W) resized to (N, C, size, size) px, still uint8 (rounded: <= 0.5/255)."""
    x = torch.from_numpy(images)
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    out = torch.empty((len(x), x.shape[1], size, size), dtype=torch.uint8)
    for start in range(0, len(x), RESIZE_CHUNK):
        chunk = _resize(x[start:start + RESIZE_CHUNK].float(), size)
        out[start:start + RESIZE_CHUNK] = chunk.round_().clamp_(0, 255).to(torch.uint8)
    return out


def _byte_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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


def _byte_splits(images: torch.Tensor, labels: np.ndarray, parts: Sequence[np.ndarray],
                 num_classes: int, size: int) -> Splits:
    """ByteImages splits over the (train, val, test) indices, standardised with train's stats."""
    train_idx, val_idx, test_idx = (torch.as_tensor(p, dtype=torch.int64) for p in parts)
    mean, std = _byte_stats(images.index_select(0, train_idx))
    y = torch.as_tensor(labels, dtype=torch.int64)
    train, val, test = (ByteImages(images.index_select(0, i), y.index_select(0, i), mean, std)
                        for i in (train_idx, val_idx, test_idx))
    return Splits(train, val, test, num_classes=num_classes, image_size=size)


def load_digits(config: DataConfig) -> Splits:
    """scikit-learn's 1,797 handwritten 8x8 digits, upsampled to 3 x S x S (CIFAR's shape)."""
    from sklearn.datasets import load_digits as sk_digits  # heavy (~2 s): digits only

    bunch = sk_digits()
    labels = bunch.target.astype(np.int64)
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = _resize(images, config.image_size).repeat(1, 3, 1, 1)
    train_idx, val_idx, test_idx = _split_indices(
        labels, (config.val_fraction, config.test_fraction), config.seed)
    train_idx = _subset(train_idx, labels, config.train_subset, config.seed)
    images = _normalise(images, train_idx)
    y = torch.as_tensor(labels)
    train, val, test = (TensorDataset(images[i], y[i]) for i in (train_idx, val_idx, test_idx))
    return Splits(train, val, test, num_classes=10, image_size=config.image_size)


def _require_root(config: DataConfig) -> Path:
    """``data.root`` as an existing directory (cifar10 with download may create it)."""
    if config.root is None:
        raise UserError(f"data.root: required for data set {config.name!r}, got null")
    root = Path(config.root).expanduser()
    if not root.is_dir() and not (config.name == "cifar10" and config.download):
        raise UserError(f"data.root: no such directory {str(root)!r}")
    return root


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


def _fashion_files(config: DataConfig) -> dict[str, Path]:
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
    files = _fashion_files(config)
    train_x, train_y = _fashion_split(files, "train")
    test_x, test_y = _fashion_split(files, "test")
    images = torch.cat([_resize_bytes(train_x, config.image_size),
                        _resize_bytes(test_x, config.image_size)])
    train_idx, val_idx = _train_val(train_y, config)
    test_idx = np.arange(len(train_y), len(train_y) + len(test_y))
    return _byte_splits(images, np.concatenate([train_y, test_y]), (train_idx, val_idx, test_idx),
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
    images = _resize_bytes(np.concatenate([p[0] for p in train] + [test[0]]), config.image_size)
    train_idx, val_idx = _train_val(train_y, config)
    test_idx = np.arange(len(train_y), len(labels))
    return _byte_splits(images, labels, (train_idx, val_idx, test_idx), num_classes,
                        config.image_size)


def load_cifar10(config: DataConfig) -> Splits:
    """CIFAR-10 from its python-pickle batches in ``data.root`` (or its cifar-10-batches-py)."""
    folder = _cifar_dir(_require_root(config), config.download)
    parts = [_read_cifar_batch(p, b"labels", 10) for p in sorted(folder.glob("data_batch_*"))]
    if not parts:
        raise UserError(f"data.root: {str(folder)!r} has test_batch but no data_batch_* files")
    return _cifar_splits(config, parts, _read_cifar_batch(folder / "test_batch", b"labels", 10),
                         10)


def _cifar100_dir(config: DataConfig) -> Path:
    """The folder holding CIFAR-100's ``train`` and ``test`` pickles: root or cifar-100-python/."""
    root = _require_root(config)
    for candidate in (root, root / "cifar-100-python"):
        if (candidate / "train").is_file() and (candidate / "test").is_file():
            return candidate
    raise UserError(f"data.root: {str(root)!r} holds no CIFAR-100 python files (train, test), "
                    "nor a cifar-100-python/ folder with them")


def load_cifar100(config: DataConfig) -> Splits:
    """CIFAR-100 (fine labels, 100 classes) from its python pickles ``train`` and ``test``."""
    folder = _cifar100_dir(config)
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
        mean, std = _byte_stats(train_x)
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
    root = _require_root(config)
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
        train_idx, val_idx = _train_val(labels, config)
        test_files = _scan(held_out, classes)
    else:
        train_idx, val_idx, test_idx = _split_indices(
            labels, (config.val_fraction, config.test_fraction), config.seed)
        train_idx = _subset(train_idx, labels, config.train_subset, config.seed)
        test_files = [files[i] for i in test_idx]
    if len(files) == 0 or len(test_files) == 0:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise UserError(f"data.root: {str(root)!r} holds no images ({suffixes})")
    parts = [[files[i] for i in train_idx], [files[i] for i in val_idx], test_files]
    return _image_splits(parts, len(classes), config.image_size)


def _image_classes(config: DataConfig) -> int:
    """Class count of an image folder: its (train/) subfolders, counted without reading images."""
    root = _require_root(config)
    train_dir = root / "train" if (root / "train").is_dir() else root
    return max(2, len(_class_names(train_dir)))


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
                                 check=_fashion_files),
    "cifar10": DatasetSpec(load_cifar10, lambda _: 10, needs_root=True),
    "cifar100": DatasetSpec(load_cifar100, lambda _: 100, needs_root=True, check=_cifar100_dir),
    "imagefolder": DatasetSpec(load_imagefolder, _image_classes, needs_root=True),
}


def check_data(config: DataConfig) -> DatasetSpec:
    """Cheap checks of the data config (name, train_subset, directory, files) before any work."""
    spec = lookup(DATASETS, "data.name", config.name)
    if config.train_subset < 0:
        raise UserError(f"data.train_subset: expected an integer >= 0, got {config.train_subset!r}")
    if spec.needs_root:
        _require_root(config)
    if spec.check is not None:
        spec.check(config)
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
