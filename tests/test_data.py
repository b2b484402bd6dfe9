import gzip
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from nsr_env.data import DataNotFoundError, load_dataset, read_idx
from nsr_env.data import datasets as datasets_module


def write_idx(path, array, compress=False):
    codes = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    raw = header + array.tobytes()
    opener = gzip.open if compress else open
    with opener(path, "wb") as handle:
        handle.write(raw)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip_on_a_synthetic_file(tmp_path, compress):
    array = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    path = tmp_path / ("synthetic.idx.gz" if compress else "synthetic.idx")
    write_idx(path, array, compress)
    np.testing.assert_array_equal(read_idx(path), array)


def test_idx_reads_big_endian_ints(tmp_path):
    array = np.array([1, -2, 70000], dtype=">i4")
    write_idx(tmp_path / "ints.idx", array)
    result = read_idx(tmp_path / "ints.idx")
    assert result.tolist() == [1, -2, 70000]
    assert result.dtype.byteorder in ("=", "<", "|")


def test_idx_rejects_a_bad_magic_number(tmp_path):
    (tmp_path / "bad.idx").write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="bad magic"):
        read_idx(tmp_path / "bad.idx")


def test_idx_rejects_a_truncated_file(tmp_path):
    write_idx(tmp_path / "full.idx", np.zeros((4, 4), np.uint8))
    raw = (tmp_path / "full.idx").read_bytes()
    (tmp_path / "cut.idx").write_bytes(raw[:-3])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "cut.idx")


def test_fashion_mnist_has_the_published_sizes(fmnist_train, fmnist_test):
    assert fmnist_train.images.shape == (60_000, 28, 28)
    assert fmnist_test.images.shape == (10_000, 28, 28)
    assert fmnist_train.images.dtype == np.uint8
    assert np.bincount(fmnist_train.labels).tolist() == [6_000] * 10
    assert np.bincount(fmnist_test.labels).tolist() == [1_000] * 10
    # real images: not blank, and classes differ on average
    assert fmnist_train.images.mean() > 50
    means = [fmnist_train.images[fmnist_train.labels == c].mean() for c in range(10)]
    assert np.ptp(means) > 20


def test_loaded_arrays_are_read_only(fmnist_train):
    with pytest.raises(ValueError):
        fmnist_train.images[0, 0, 0] = 1


def test_explicit_root_comes_before_the_debian_folder(tmp_path, monkeypatch):
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        write_idx(tmp_path / name, np.zeros((3, 28, 28) if "images" in name else (3,), np.uint8))
    data = datasets_module.load_fashion_mnist("test", root=tmp_path)
    assert len(data) == 3 and data.source == str(tmp_path)
    monkeypatch.setenv("NSR_DATA", str(tmp_path))
    assert len(datasets_module.load_fashion_mnist("test")) == 3


def test_torchvision_layout_under_a_root_is_found(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(datasets_module.DEBIAN_FASHION_MNIST / name, raw / name)
    assert len(datasets_module.load_fashion_mnist("test", root=tmp_path)) == 10_000


def test_missing_fashion_mnist_names_the_places_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets_module, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    with pytest.raises(DataNotFoundError) as error:
        datasets_module.load_fashion_mnist("train", root=tmp_path / "empty", download=False)
    message = str(error.value)
    assert str(tmp_path / "empty") in message and "apt-get install dataset-fashion-mnist" in message
    assert "NSR_DATA" in message and "<root>/FashionMNIST/raw/" in message


def test_offline_download_fails_with_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("NSR_CACHE", str(tmp_path))
    try:
        data = load_dataset("cifar10", "test", root=tmp_path / "cifar")
    except DataNotFoundError as error:
        assert "cifar10 test split is not in" in str(error) and "could not be downloaded" in str(error)
        assert error.__cause__ is None  # one error, not a chain of tracebacks
    else:  # a machine with internet downloads it: then it must be the real test split
        assert data.images.shape == (10_000, 32, 32, 3)


def test_no_download_means_no_download(tmp_path, monkeypatch):
    monkeypatch.setenv("NSR_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataNotFoundError, match="mnist test split is not in"):
        load_dataset("mnist", "test", root=tmp_path, download=False)


@pytest.mark.parametrize(
    ("name", "layout"),
    [
        ("mnist", "<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte"),
        ("cifar10", "<root>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}"),
        ("cifar100", "<root>/cifar-100-python/{train,test,meta}"),
        ("svhn", "<root>/{train,test}_32x32.mat"),
    ],
)
def test_missing_torchvision_data_names_both_places_and_the_expected_layout(tmp_path, monkeypatch, name, layout):
    monkeypatch.setenv("NSR_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataNotFoundError) as error:
        load_dataset(name, "test", root=tmp_path / "root", download=False)
    message = str(error.value)
    assert message.startswith(f"{name} test split is not in {tmp_path / 'root'}, {tmp_path / 'cache' / 'data'}.")
    assert layout in message and "NSR_DATA" in message


def write_synthetic_mnist(folder):
    """torchvision's MNIST layout, unpacked, with a few synthetic images per split."""
    folder.mkdir(parents=True)
    for prefix, count in (("train", 6), ("t10k", 4)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", np.full((count, 28, 28), 9, np.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", np.arange(count, dtype=np.uint8))


def test_torchvision_data_in_the_cache_folder_is_found_without_a_download(tmp_path, monkeypatch):
    monkeypatch.setenv("NSR_CACHE", str(tmp_path / "cache"))
    write_synthetic_mnist(tmp_path / "cache" / "data" / "MNIST" / "raw")
    data = load_dataset("mnist", "test", root=tmp_path / "empty-root", download=False)
    assert data.source == str(tmp_path / "cache" / "data")
    assert data.images.shape == (4, 28, 28) and data.labels.tolist() == [0, 1, 2, 3]


def test_downloads_go_into_the_cache_folder_never_into_nsr_data(tmp_path, monkeypatch):
    calls = []

    class OfflineMNIST:
        """Stands in for torchvision.datasets.MNIST: nothing on disk, a download yields synthetic data."""

        def __init__(self, root, download, train):
            calls.append((root, download))
            if not download:
                raise RuntimeError("Dataset not found. You can use download=True to download it")
            self.data = torch.zeros((3, 28, 28), dtype=torch.uint8)
            self.targets = torch.tensor([0, 1, 2])

    monkeypatch.setattr(torchvision.datasets, "MNIST", OfflineMNIST)
    monkeypatch.setenv("NSR_DATA", str(tmp_path / "shared-data"))
    monkeypatch.setenv("NSR_CACHE", str(tmp_path / "cache"))
    data = load_dataset("mnist", "train")
    downloads = str(tmp_path / "cache" / "data")
    assert calls == [(str(tmp_path / "shared-data"), False), (downloads, False), (downloads, True)]
    assert data.source == downloads and len(data) == 3


def test_svhn_channels_first_become_channels_last():
    channels_first = np.random.default_rng(0).integers(0, 255, (4, 3, 32, 32), dtype=np.uint8)
    synthetic_svhn = SimpleNamespace(data=channels_first, labels=np.array([1, 0, 9, 3]))
    data = datasets_module.torchvision_to_image_array("svhn", "test", synthetic_svhn, "synthetic")
    assert data.images.shape == (4, 32, 32, 3) and data.images.flags.c_contiguous
    for channel in range(3):
        np.testing.assert_array_equal(data.images[..., channel], channels_first[:, channel])
    assert data.labels.dtype == np.int64 and data.labels.tolist() == [1, 0, 9, 3]


def test_other_torchvision_datasets_keep_their_layout():
    synthetic_cifar = SimpleNamespace(data=np.zeros((2, 32, 32, 3), np.uint8), targets=[7, 2])
    cifar = datasets_module.torchvision_to_image_array("cifar10", "train", synthetic_cifar, "synthetic")
    assert cifar.images.shape == (2, 32, 32, 3) and cifar.labels.tolist() == [7, 2]
    synthetic_mnist = SimpleNamespace(data=torch.ones((2, 28, 28), dtype=torch.uint8), targets=torch.tensor([4, 5]))
    mnist = datasets_module.torchvision_to_image_array("mnist", "train", synthetic_mnist, "synthetic")
    assert mnist.images.dtype == np.uint8 and mnist.images.shape == (2, 28, 28) and mnist.labels.dtype == np.int64


def test_unknown_dataset_and_split_are_named():
    with pytest.raises(ValueError, match="dataset='imagenet'"):
        load_dataset("imagenet", "train")
    with pytest.raises(ValueError, match="split='validation'"):
        load_dataset("fashion_mnist", "validation")


def test_notmnist_from_a_synthetic_folder(tmp_path):
    rng = np.random.default_rng(0)
    for letter in "ABCDEFGHIJ":
        (tmp_path / "notMNIST_small" / letter).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(
                tmp_path / "notMNIST_small" / letter / f"synthetic{i}.png"
            )
    (tmp_path / "notMNIST_small" / "A" / "synthetic9.png").write_bytes(b"not a png")
    train = load_dataset("notmnist", "train", root=tmp_path)
    test = load_dataset("notmnist", "test", root=tmp_path)
    # every fifth file of each letter is test: A's sixth file (the unreadable one) is skipped
    assert len(test) == 10
    assert len(train) == 10 * 4
    assert "1 unreadable" in test.source
    assert sorted(set(train.labels.tolist())) == list(range(10))


def test_missing_notmnist_says_what_to_do(tmp_path):
    with pytest.raises(DataNotFoundError, match="notMNIST_small"):
        load_dataset("notmnist", "train", root=tmp_path)
