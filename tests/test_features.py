import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from nsr_env.backbones import make_backbone
from nsr_env.features import cached_features

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
