"""Image datasets as uint8 arrays, found offline first.

Lookup order for every dataset: an explicit ``root`` argument, else the ``NSR_DATA``
environment variable; for Fashion-MNIST then the Debian package location
(``/usr/share/datasets/fashion-mnist``, package ``dataset-fashion-mnist``); last a
torchvision download into ``<cache>/data`` (needs internet). When nothing works, one
:class:`DataNotFoundError` says where it looked and how to get the data.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nsr_env.data.idx import read_idx
from nsr_env.paths import cache_dir

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


def load_fashion_mnist(split: str, root: str | Path | None = None, download: bool = True) -> ImageArray:
    """Fashion-MNIST (70,000 real 28x28 grayscale images, 10 classes)."""
    _check_split(split)
    explicit = _explicit_root(root)
    candidates = [explicit] if explicit is not None else []
    candidates.append(DEBIAN_FASHION_MNIST)
    for folder in candidates:
        pair = _find_idx_pair(folder, split)
        if pair is not None:
            images, labels = (read_idx(p) for p in pair)
            if len(images) != len(labels):
                raise ValueError(f"{pair[0]} and {pair[1]} disagree on the number of samples")
            return ImageArray("fashion_mnist", split, images, labels.astype(np.int64), str(pair[0].parent))
    looked = ", ".join(str(c) for c in candidates)
    how_to = (
        f"Looked for its idx files in {looked}. Install them with `sudo apt-get install dataset-fashion-mnist` "
        "(Debian/Ubuntu), or put the four idx files in a folder and pass root=... or set NSR_DATA."
    )
    if not download:
        raise DataNotFoundError(f"Fashion-MNIST {split} split not found. {how_to}")
    return _torchvision_dataset("fashion_mnist", split, explicit, how_to=how_to)


_TORCHVISION = {
    "fashion_mnist": "FashionMNIST",
    "mnist": "MNIST",
    "cifar10": "CIFAR10",
    "cifar100": "CIFAR100",
    "svhn": "SVHN",
}
DATASETS = (*_TORCHVISION, "notmnist")
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


def _torchvision_dataset(
    name: str, split: str, root: Path | None, download: bool = True, how_to: str | None = None
) -> ImageArray:
    import torchvision

    folder = root if root is not None else cache_dir() / "data"
    cls = getattr(torchvision.datasets, _TORCHVISION[name])
    split_kwargs = {"split": split} if name == "svhn" else {"train": split == "train"}
    how_to = how_to or f"Copy torchvision's {_TORCHVISION[name]} files into {folder}, pass root=..., or set NSR_DATA."
    try:
        dataset = cls(str(folder), download=False, **split_kwargs)
    except RuntimeError:
        if not download:
            raise DataNotFoundError(f"{name} {split} split is not in {folder}. {how_to}") from None
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                dataset = cls(str(folder), download=True, **split_kwargs)
        except Exception as error:  # urllib, ssl and socket errors all mean "could not download"
            lines = [line.strip() for line in str(error).splitlines() if len(line.strip()) > 2]
            reason = lines[-1] if lines else type(error).__name__  # torchvision puts the cause last
            raise DataNotFoundError(
                f"{name} {split} split is not in {folder} and could not be downloaded ({reason}). {how_to}"
            ) from None
    images = np.asarray(dataset.data)
    if name == "svhn":
        images = images.transpose(0, 2, 3, 1)  # SVHN ships channels first
    labels = np.asarray(dataset.labels if name == "svhn" else dataset.targets, dtype=np.int64)
    return ImageArray(name, split, images.astype(np.uint8), labels, str(folder))


def load_dataset(name: str, split: str, root: str | Path | None = None, download: bool = True) -> ImageArray:
    """Load ``name`` (one of :data:`DATASETS`) for ``split`` ("train" or "test").

    Loaded splits are kept in memory (read-only arrays), so building many tasks from one
    dataset reads its files once.
    """
    _check_split(split)
    if name not in DATASETS:
        raise ValueError(f"dataset={name!r} is unknown; choose one of {list(DATASETS)}")
    return _load_cached(name, split, _explicit_root(root), download)


@functools.lru_cache(maxsize=16)
def _load_cached(name: str, split: str, root: Path | None, download: bool) -> ImageArray:
    if name == "fashion_mnist":
        data = load_fashion_mnist(split, root, download)
    elif name == "notmnist":
        data = load_notmnist(split, root)
    else:
        data = _torchvision_dataset(name, split, root, download)
    data.images.flags.writeable = False
    data.labels.flags.writeable = False
    return data
