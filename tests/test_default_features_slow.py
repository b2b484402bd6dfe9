"""End-to-end determinism of the default scenario's features (about a minute: marked slow)."""

import pytest
import torch

from nsr_env.backbones import make_backbone
from nsr_env.data import split_fashion_mnist
from nsr_env.data.tasks import DEFAULT_EVAL_PER_CLASS, DEFAULT_TRAIN_PER_CLASS
from nsr_env.features import task_features


@pytest.mark.slow
def test_default_features_are_bit_identical_across_fresh_caches(tmp_path):
    runs = []
    for name in ("first", "second"):
        tasks = split_fashion_mnist(train_per_class=DEFAULT_TRAIN_PER_CLASS, eval_per_class=DEFAULT_EVAL_PER_CLASS)
        runs.append(task_features(make_backbone(), tasks, cache=tmp_path / name, progress=False))
    for first, second in zip(*runs, strict=True):
        assert first.train.key == second.train.key
        assert first.train.inputs.shape == (2 * DEFAULT_TRAIN_PER_CLASS, 4, 320)
        assert first.held_out.base_outputs.shape == (2 * DEFAULT_EVAL_PER_CLASS, 4, 1280)
        for a, b in ((first.train, second.train), (first.held_out, second.held_out)):
            assert torch.equal(a.inputs, b.inputs) and torch.equal(a.base_outputs, b.base_outputs)
