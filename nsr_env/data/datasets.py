"""Image datasets as uint8 arrays, found offline first.

Lookup order for every dataset: an explicit ``root`` argument, else the ``NSR_DATA``
environment variable; for Fashion-MNIST then the Debian package location
(``/usr/share/datasets/fashion-mnist``, package ``dataset-fashion-mnist``); then
``<cache>/data``; last a torchvision download into ``<cache>/data`` (needs internet).
Downloads never go into ``root`` or ``NSR_DATA``: those may be shared or read-only.
When nothing works, one :class:`DataNotFoundError` says where it looked, which files it
expects under a root, and how to get them. ``digits`` ships inside scikit-learn (always
offline); ``<name>@invert`` and ``<name>@rot<degrees>`` derive from ``<name>`` in memory
(:mod:`nsr_env.data.variants`).
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from nsr_env.data.idx import read_idx
from nsr_env.data.variants import derive, invert, load_digits_split, parse_variant, quarter_turns, rotate_bilinear
from nsr_env.paths import cache_dir

if TYPE_CHECKING:
    from torchvision.datasets import VisionDataset

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
SPLITS = ("train", "test")


class DataNotFoundError(FileNotFoundError):
    """A dataset is not on disk and could not be downloaded."""


@dataclass(frozen=True)
class ImageArray:
    """One split of a dataset: ``images`` uint8 (N, H, W) or (N, H, W, 3), ``labels`` int64 (N,)."""

    name: str
    split: str
    images: np.ndarray
    labels: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not one of {SPLITS}")


def _explicit_root(root: str | Path | None) -> Path | None:
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("NSR_DATA")
    return Path(env).expanduser() if env else None


def _find_idx_pair(folder: Path, split: str) -> tuple[Path, Path] | None:
    prefix = "train" if split == "train" else "t10k"
    for sub in ("", "fashion-mnist", "FashionMNIST/raw"):
        base = folder / sub if sub else folder
        for suffix in (".gz", ""):
            images = base / f"{prefix}-images-idx3-ubyte{suffix}"
            labels = base / f"{prefix}-labels-idx1-ubyte{suffix}"
            if images.is_file() and labels.is_file():
                return images, labels
    return None


def download_dir() -> Path:
    """Where torchvision downloads go, and are looked for: ``<cache>/data``, never a data root (it may be shared)."""
    return cache_dir() / "data"


def load_fashion_mnist(split: str, root: str | Path | None = None, download: bool = True) -> ImageArray:
    """Fashion-MNIST (70,000 real 28x28 grayscale images, 10 classes)."""
    _check_split(split)
    explicit = _explicit_root(root)
    candidates = [folder for folder in (explicit, DEBIAN_FASHION_MNIST, download_dir()) if folder is not None]
    for folder in candidates:
        pair = _find_idx_pair(folder, split)
        if pair is not None:
            images, labels = (read_idx(p) for p in pair)
            if len(images) != len(labels):
                raise ValueError(f"{pair[0]} and {pair[1]} disagree on the number of samples")
            return ImageArray("fashion_mnist", split, images, labels.astype(np.int64), str(pair[0].parent))
    how_to = (
        "Install it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or put the four idx files in "
        f"a folder as {TORCHVISION_LAYOUTS['fashion_mnist']} and pass root=... or set NSR_DATA."
    )
    return _download("fashion_mnist", split, candidates, download, how_to)


_TORCHVISION = {
    "fashion_mnist": "FashionMNIST",
    "mnist": "MNIST",
    "cifar10": "CIFAR10",
    "cifar100": "CIFAR100",
    "svhn": "SVHN",
}
TORCHVISION_LAYOUTS = {
    "fashion_mnist": "<root>/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] "
    "(or the same in <root>/fashion-mnist/ or <root>/FashionMNIST/raw/, torchvision's layout)",
    "mnist": "<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte (the four idx files, unpacked)",
    "cifar10": "<root>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta} (cifar-10-python.tar.gz unpacked)",
    "cifar100": "<root>/cifar-100-python/{train,test,meta} (cifar-100-python.tar.gz unpacked)",
    "svhn": "<root>/{train,test}_32x32.mat",
}
"""The files torchvision (or, for Fashion-MNIST, :func:`read_idx`) expects under a data root, for error messages."""
DATASETS = (*_TORCHVISION, "notmnist", "digits")
NOTMNIST_FOLDERS = ("notMNIST_small", "notmnist")


def load_notmnist(split: str, root: Path | None) -> ImageArray:
    """notMNIST from a folder (no download exists): ``<root>/notMNIST_small/A..J/*.png``.

    Every fifth file of each letter (in sorted order) is the test split. Unreadable files,
    which the public archive contains, are skipped and counted in ``source``.
    """
    from PIL import Image

    folders = [root / name for name in NOTMNIST_FOLDERS] if root is not None else []
    folder = next((f for f in folders if (f / "A").is_dir()), None)
    if folder is None:
        where = ", ".join(map(str, folders)) or "nowhere (no root given and NSR_DATA unset)"
        raise DataNotFoundError(
            f"notMNIST not found: looked in {where}. Unpack notMNIST_small (folders A..J of PNGs) "
            "into a folder and pass root=... or set NSR_DATA to it."
        )
    images, labels, skipped = [], [], 0
    for label, letter in enumerate("ABCDEFGHIJ"):
        files = sorted((folder / letter).glob("*.png"))
        for position, file in enumerate(files):
            if (position % 5 == 0) != (split == "test"):
                continue
            try:
                with Image.open(file) as image:
                    images.append(np.asarray(image.convert("L").resize((28, 28))))
            except OSError:
                skipped += 1
                continue
            labels.append(label)
    return ImageArray(
        "notmnist",
        split,
        np.stack(images),
        np.asarray(labels, np.int64),
        f"{folder} ({skipped} unreadable files skipped)",
    )


def torchvision_to_image_array(name: str, split: str, dataset: VisionDataset, source: str) -> ImageArray:
    """A loaded torchvision dataset as an :class:`ImageArray`, channels last like every other dataset.

    SVHN ships its images channels first, (N, 3, H, W), and its labels as ``labels``; the
    others ship (N, H, W) or (N, H, W, 3) and ``targets``.
    """
    images = np.asarray(dataset.data)
    if name == "svhn":
        images = images.transpose(0, 2, 3, 1)
    labels = np.asarray(dataset.labels if name == "svhn" else dataset.targets, dtype=np.int64)
    return ImageArray(name, split, np.ascontiguousarray(images, dtype=np.uint8), labels, source)


def _torchvision(name: str, folder: Path, split: str, download: bool) -> VisionDataset:
    """torchvision's class for ``name`` on ``folder`` (imported late: torchvision is slow to import)."""
    import torchvision

    split_kwargs = {"split": split} if name == "svhn" else {"train": split == "train"}
    return getattr(torchvision.datasets, _TORCHVISION[name])(str(folder), download=download, **split_kwargs)


def _torchvision_dataset(name: str, split: str, root: Path | None, download: bool) -> ImageArray:
    """``name`` in torchvision's layout under ``root``, else under :func:`download_dir`, else downloaded there."""
    folders = list(dict.fromkeys(folder for folder in (root, download_dir()) if folder is not None))
    for folder in folders:
        try:
            return torchvision_to_image_array(name, split, _torchvision(name, folder, split, False), str(folder))
        except RuntimeError:  # torchvision's "Dataset not found or corrupted"
            continue
    how_to = f"Put its files in a folder as {TORCHVISION_LAYOUTS[name]} and pass root=... or set NSR_DATA."
    return _download(name, split, folders, download, how_to)


def _download(name: str, split: str, looked: list[Path], download: bool, how_to: str) -> ImageArray:
    """The last resort: a torchvision download into :func:`download_dir`; else one :class:`DataNotFoundError`."""
    where = ", ".join(map(str, looked))
    if not download:
        raise DataNotFoundError(f"{name} {split} split is not in {where}. {how_to}")
    folder = download_dir()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            dataset = _torchvision(name, folder, split, True)
    except Exception as error:  # urllib, ssl and socket errors all mean "could not download"
        lines = [line.strip() for line in str(error).splitlines() if len(line.strip()) > 2]
        reason = lines[-1] if lines else type(error).__name__  # torchvision puts the cause last
        raise DataNotFoundError(
            f"{name} {split} split is not in {where} and could not be downloaded into {folder} ({reason}). {how_to}"
        ) from None
    return torchvision_to_image_array(name, split, dataset, str(folder))


def _check_name(name: str) -> tuple[str, str]:
    """``(base, variant)`` of a dataset name (variant "" for a plain one); one ValueError for an unknown name."""
    base, separator, variant = name.partition("@")
    if base not in DATASETS:
        raise ValueError(
            f"dataset={name!r} is unknown; choose one of {list(DATASETS)}, or one of them followed by "
            "@invert or @rot<degrees>"
        )
    if separator:
        parse_variant(variant)
    return base, variant


def check_indices(indices: np.ndarray, data: ImageArray) -> None:
    """Reject what numpy would accept silently: empty, float or negative (wrap-around) indices."""
    valid = f"integers in 0..{len(data) - 1} (the {len(data)} samples of {data.name}/{data.split})"
    if indices.ndim != 1 or len(indices) == 0:
        raise ValueError(f"indices must be a non-empty 1-d array of {valid}, got shape {indices.shape}")
    if not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"indices must be {valid}, got dtype {indices.dtype}")
    if indices.min() < 0 or indices.max() >= len(data):
        raise ValueError(f"indices must be {valid}, got values from {indices.min()} to {indices.max()}")


def load_selection(
    name: str, split: str, indices: np.ndarray, root: str | Path | None = None, download: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """``(images, labels)`` of ``load_dataset(name, split)`` at ``indices`` (checked), without deriving a
    whole derived split: its base is loaded and only the selected images are derived (the same images,
    since each is derived alone). A feature-cache lookup of a few rotated images so costs no rotation of
    60,000."""
    _check_split(split)
    base, variant = _check_name(name)
    data = _load_cached(name if not variant else base, split, _explicit_root(root), download)
    indices = np.asarray(indices)
    check_indices(indices, data if not variant else ImageArray(name, split, data.images, data.labels, data.source))
    images = data.images[indices]
    return (derive(images, variant) if variant else images), data.labels[indices]


def labels_of(name: str, split: str, root: str | Path | None = None, download: bool = True) -> np.ndarray:
    """The labels of ``name``/``split``; a derived dataset's are its base's, read without deriving its images."""
    _check_split(split)
    base, variant = _check_name(name)
    return _load_cached(base if variant else name, split, _explicit_root(root), download).labels


def load_dataset(name: str, split: str, root: str | Path | None = None, download: bool = True) -> ImageArray:
    """Load ``name`` (one of :data:`DATASETS`, or a derived ``<name>@invert`` / ``<name>@rot<degrees>``)
    for ``split`` ("train" or "test").

    Loaded splits, derived ones included, are kept in memory (read-only arrays), so building
    many tasks from one dataset reads its files, and derives its images, once.
    """
    _check_split(split)
    _check_name(name)
    return _load_cached(name, split, _explicit_root(root), download)


def _derive(name: str, split: str, root: Path | None, download: bool) -> ImageArray:
    """``<base>@<variant>`` from the (cached) base split; a rotation beyond 90 degrees from the cached
    rotation by its remainder modulo 90, turned exactly (see :func:`nsr_env.data.variants.rotate`)."""
    base_name, _, variant = name.partition("@")
    degrees = parse_variant(variant)
    base = _load_cached(base_name, split, root, download)
    if degrees is None:
        images = invert(base.images)
    else:
        turns, rest = divmod(degrees, 90)
        if turns == 0:
            images = rotate_bilinear(base.images, rest)
        else:
            source = _load_cached(f"{base_name}@rot{rest}", split, root, download) if rest else base
            images = quarter_turns(source.images, turns)
    return ImageArray(name, split, images, base.labels, f"{base.source} ({variant})")


@functools.lru_cache(maxsize=32)  # a whole task library: 12 rotations, inverted and digits, two splits each
def _load_cached(name: str, split: str, root: Path | None, download: bool) -> ImageArray:
    if "@" in name:
        data = _derive(name, split, root, download)
    elif name == "fashion_mnist":
        data = load_fashion_mnist(split, root, download)
    elif name == "notmnist":
        data = load_notmnist(split, root)
    elif name == "digits":
        images, labels = load_digits_split(split)
        data = ImageArray("digits", split, images, labels, "scikit-learn load_digits (bundled), seeded 80/20 split")
    else:
        data = _torchvision_dataset(name, split, root, download)
    data.images.flags.writeable = False
    data.labels.flags.writeable = False
    return data
