import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import nsr_env.features as features_module
from nsr_env.backbones import make_backbone
from nsr_env.data import ImageArray
from nsr_env.features import cached_features, describe, entry_key

INDICES = np.arange(0, 600, 5)


class CountingBackbone:
    """Wraps a backbone and counts how often its ``encode`` runs."""

    def __init__(self, monkeypatch, backbone):
        self.calls = 0
        original = backbone.encode

        def counted(x):
            self.calls += 1
            return original(x)

        monkeypatch.setattr(backbone, "encode", counted)


def test_miss_then_hit_gives_identical_tensors(cache, monkeypatch):
    backbone = make_backbone("tiny_cnn")
    counter = CountingBackbone(monkeypatch, backbone)
    first = cached_features(backbone, "fashion_mnist", "train", INDICES, cache=cache, progress=False)
    calls_after_miss = counter.calls
    second = cached_features(backbone, "fashion_mnist", "train", INDICES, cache=cache, progress=False)
    assert not first.from_cache and second.from_cache
    assert calls_after_miss > 0 and counter.calls == calls_after_miss
    torch.testing.assert_close(first.inputs, second.inputs, rtol=0, atol=0)
    torch.testing.assert_close(first.base_outputs, second.base_outputs, rtol=0, atol=0)
    assert first.inputs.shape == (len(INDICES), 16, 16)
    assert first.path.is_file() and first.path.parent.parent.parent == cache


def test_cached_tensors_match_a_direct_computation(cache, fmnist_train):
    backbone = make_backbone("tiny_cnn")
    entry = cached_features(backbone, "fashion_mnist", "train", INDICES, cache=cache, progress=False, batch_size=7)
    with torch.inference_mode():
        direct = backbone.encode(backbone.transform(fmnist_train.images[INDICES]))
    torch.testing.assert_close(entry.inputs, direct)
    torch.testing.assert_close(entry.base_outputs, backbone.base_output(direct))
    np.testing.assert_array_equal(entry.labels.numpy(), fmnist_train.labels[INDICES])


@pytest.mark.parametrize(
    "change",
    ["weights", "transform", "split", "indices", "dataset_order"],
)
def test_changing_any_part_of_the_key_recomputes(cache, change):
    base = dict(backbone=make_backbone("tiny_cnn"), dataset="fashion_mnist", split="train", indices=INDICES)
    cached_features(**base, cache=cache, progress=False)
    changed = dict(base)
    if change == "weights":
        changed["backbone"] = make_backbone("tiny_cnn", seed=1)
    elif change == "transform":
        changed["backbone"] = make_backbone("tiny_cnn", image_size=20)
    elif change == "split":
        changed["split"] = "test"
    elif change == "indices":
        changed["indices"] = INDICES + 1
    else:
        changed["indices"] = INDICES[::-1]
    entry = cached_features(**changed, cache=cache, progress=False)
    assert not entry.from_cache
    assert len(list((cache / "features" / "tiny_cnn").glob("*.pt"))) == 2


def test_cache_root_comes_from_nsr_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NSR_CACHE", str(tmp_path / "env-cache"))
    entry = cached_features(make_backbone("tiny_cnn"), "fashion_mnist", "test", INDICES, progress=False)
    assert entry.path.is_relative_to(tmp_path / "env-cache")


def test_a_failed_write_leaves_nothing_behind(cache, monkeypatch):
    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cached_features(make_backbone("tiny_cnn"), "fashion_mnist", "train", INDICES, cache=cache, progress=False)
    assert list(cache.rglob("*")) == [cache / "features", cache / "features" / "tiny_cnn"]


KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np, torch
    import nsr_env.features as features
    from nsr_env.backbones import make_backbone

    def save_then_die(payload, path):
        with open(path, "wb") as handle:
            handle.write(b"PK\\x03\\x04 half of a zip file")
            handle.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    features.torch.save = save_then_die
    features.cached_features(make_backbone("tiny_cnn"), "fashion_mnist", "train",
                             np.arange(0, 600, 5), cache=sys.argv[1], progress=False)
    """
)


def test_a_process_killed_mid_write_leaves_no_trusted_entry(cache):
    result = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(cache)], capture_output=True)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()
    folder = cache / "features" / "tiny_cnn"
    assert list(folder.glob("*.pt")) == []  # only the hidden temporary file exists
    assert len(list(folder.glob(".*.tmp"))) == 1
    entry = cached_features(make_backbone("tiny_cnn"), "fashion_mnist", "train", INDICES, cache=cache, progress=False)
    assert not entry.from_cache and entry.inputs.shape[0] == len(INDICES)
    assert cached_features(make_backbone("tiny_cnn"), "fashion_mnist", "train", INDICES, cache=cache).from_cache


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_a_damaged_entry_is_recomputed_not_trusted(cache, damage):
    backbone = make_backbone("tiny_cnn")
    good = cached_features(backbone, "fashion_mnist", "train", INDICES, cache=cache, progress=False)
    raw = good.path.read_bytes()
    good.path.write_bytes(raw[: len(raw) // 2] if damage == "truncate" else b"garbage" * 100)
    with pytest.warns(UserWarning, match="unreadable"):
        again = cached_features(backbone, "fashion_mnist", "train", INDICES, cache=cache, progress=False)
    assert not again.from_cache
    torch.testing.assert_close(again.inputs, good.inputs)
    assert good.path.read_bytes() != b"garbage" * 100


def synthetic_split(changed_pixel: bool = False) -> ImageArray:
    """A small in-memory dataset; ``changed_pixel`` flips one pixel of one selected image."""
    images = np.random.default_rng(0).integers(0, 255, (30, 28, 28), dtype=np.uint8)
    if changed_pixel:
        images[10, 5, 5] ^= 1
    return ImageArray("synthetic", "train", images, np.arange(30, dtype=np.int64) % 3, "synthetic, in memory")


def test_image_content_is_part_of_the_key():
    backbone = make_backbone("tiny_cnn")

    def described(data, indices):
        return describe(backbone, data.name, data.split, indices, data.images[indices], data.labels[indices])

    same = [described(synthetic_split(), np.arange(0, 30, 2)) for _ in range(2)]
    assert entry_key(same[0]) == entry_key(same[1])
    changed = described(synthetic_split(changed_pixel=True), np.arange(0, 30, 2))
    assert entry_key(changed) != entry_key(same[0])
    assert described(synthetic_split(changed_pixel=True), np.arange(1, 30, 2)) == described(
        synthetic_split(), np.arange(1, 30, 2)
    )  # the changed image (index 10) is not selected: same content, same entry


def test_two_data_roots_with_different_images_do_not_share_an_entry(cache, monkeypatch):
    roots = {"root-a": synthetic_split(), "root-b": synthetic_split(changed_pixel=True), "root-c": synthetic_split()}
    monkeypatch.setattr(
        features_module,
        "load_selection",
        lambda name, split, indices, root: (roots[root].images[indices], roots[root].labels[indices]),
    )
    backbone = make_backbone("tiny_cnn")

    def entry(root):
        indices = np.arange(30)
        return cached_features(backbone, "synthetic", "train", indices, cache=cache, data_root=root, progress=False)

    first, other, same_content = entry("root-a"), entry("root-b"), entry("root-c")
    assert not first.from_cache and not other.from_cache and same_content.from_cache
    assert first.key != other.key and first.key == same_content.key


@pytest.mark.parametrize(
    ("indices", "problem"),
    [
        (np.array([], np.int64), "got shape \\(0,\\)"),
        (np.zeros((2, 2), np.int64), "got shape \\(2, 2\\)"),
        (np.array([0.0, 1.0]), "got dtype float64"),
        (np.array([-1, 3]), "got values from -1 to 3"),
        (np.array([0, 10_000]), "got values from 0 to 10000"),
    ],
)
def test_bad_indices_are_named_with_the_valid_range(cache, indices, problem):
    with pytest.raises(ValueError, match=f"indices must be .*0\\.\\.9999 .*fashion_mnist/test.*{problem}"):
        cached_features(make_backbone("tiny_cnn"), "fashion_mnist", "test", indices, cache=cache, progress=False)
