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
