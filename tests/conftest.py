"""Shared fixtures. Real Fashion-MNIST throughout; `make test` installs it first."""

from __future__ import annotations

import pytest

from nsr_env.data import load_dataset


@pytest.fixture(scope="session")
def fmnist_train():
    return load_dataset("fashion_mnist", "train")


@pytest.fixture(scope="session")
def fmnist_test():
    return load_dataset("fashion_mnist", "test")


@pytest.fixture
def cache(tmp_path):
    """A fresh, empty feature-cache root for one test."""
    return tmp_path / "cache"


TINY_SYNTHETIC_SWEEP = """
name: tiny
scenarios:
  - scenario: synthetic
    grid: {tasks_per_cycle: [2, 3], cycles: [1, 2], slots: 1}
agents: [similarity, fresh, oracle]
seeds: [0, 1]
"""


@pytest.fixture(scope="session")
def tiny_sweep() -> str:
    """A sweep config of seconds: the SYNTHETIC scenario, 4 strata x 3 agents x 2 seeds (24 cells)."""
    return TINY_SYNTHETIC_SWEEP
