import hashlib

import numpy as np
import pytest

from nsr_env.data import (
    FIVE_DATASETS,
    ImageArray,
    class_split,
    consecutive_groups,
    dataset_tasks,
    split_cifar100,
    split_fashion_mnist,
)
from nsr_env.data import tasks as tasks_module
from nsr_env.data.tasks import DEFAULT_EVAL_PER_CLASS, DEFAULT_TRAIN_PER_CLASS


@pytest.fixture(scope="module")
def tasks():
    return split_fashion_mnist(train_per_class=100, eval_per_class=40, seed=3)


def test_split_fashion_mnist_is_five_tasks_of_two_consecutive_classes(tasks):
    assert [t.classes for t in tasks] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    assert [t.index for t in tasks] == list(range(5))


def test_subsets_hold_exactly_their_classes_and_counts(tasks, fmnist_train, fmnist_test):
    for task in tasks:
        train_labels = fmnist_train.labels[task.train_indices]
        eval_labels = fmnist_test.labels[task.eval_indices]
        assert np.bincount(train_labels, minlength=10)[list(task.classes)].tolist() == [100, 100]
        assert np.bincount(eval_labels, minlength=10)[list(task.classes)].tolist() == [40, 40]
        assert set(train_labels.tolist()) == set(task.classes)
        assert len(np.unique(task.train_indices)) == len(task.train_indices)
        assert sorted(set(task.local_labels(train_labels).tolist())) == [0, 1]


def test_tasks_do_not_share_samples(tasks):
    all_train = np.concatenate([t.train_indices for t in tasks])
    assert len(np.unique(all_train)) == len(all_train)


def test_same_seed_same_subsets_other_seed_other_subsets(tasks):
    again = split_fashion_mnist(train_per_class=100, eval_per_class=40, seed=3)
    other = split_fashion_mnist(train_per_class=100, eval_per_class=40, seed=4)
    for a, b, c in zip(tasks, again, other, strict=True):
        np.testing.assert_array_equal(a.train_indices, b.train_indices)
        np.testing.assert_array_equal(a.eval_indices, b.eval_indices)
        assert not np.array_equal(a.train_indices, c.train_indices)


def test_a_class_subset_does_not_depend_on_how_classes_are_grouped():
    grouped = class_split("fashion_mnist", [[0, 1], [2, 3]], train_per_class=50, seed=1)
    single = class_split("fashion_mnist", [[2]], train_per_class=50, seed=1)
    np.testing.assert_array_equal(grouped[1].train_indices[:50], single[0].train_indices)


def test_none_takes_every_sample():
    (task,) = class_split("fashion_mnist", [[7]], train_per_class=None, eval_per_class=None, probe_per_class=0)
    assert len(task.train_indices) == 6_000 and len(task.eval_indices) == 1_000


def test_local_labels_reject_foreign_classes(tasks):
    with pytest.raises(ValueError, match="labels \\[2\\] are outside its classes"):
        tasks[0].local_labels(np.array([0, 1, 2]))


@pytest.mark.parametrize(
    ("groups", "kwargs", "message"),
    [
        ([[0, 1], []], {}, "empty group"),
        ([[0, 1], [1, 2]], {}, "overlap on classes \\[1\\]"),
        ([[0, 11]], {}, "classes \\[11\\]"),
        ([[0]], {"train_per_class": 7000}, "only 6000"),
        ([[0]], {"eval_per_class": 0}, "eval_per_class=0"),
    ],
)
def test_bad_splits_name_the_problem(groups, kwargs, message):
    with pytest.raises(ValueError, match=message):
        class_split("fashion_mnist", groups, **kwargs)


def test_consecutive_groups():
    assert consecutive_groups(100, 20)[1] == [5, 6, 7, 8, 9]
    assert len(consecutive_groups(100, 10)) == 10
    with pytest.raises(ValueError, match="num_tasks=3"):
        consecutive_groups(10, 3)


# The default scenario's sample indices (Split-FashionMNIST, seed 0), hashed. Every feature-cache key and every
# published result depends on them: a change to the subset selection silently invalidates everyone's caches and makes
# new results incomparable with old ones. If you change the selection on purpose, say so and update this hash.
DEFAULT_INDICES_SHA256 = "4b745e6cd04083c29cea1baea72fc3779fa7e50e8b7c1f842405bbc2f1c6af46"


def test_default_split_indices_are_frozen():
    digest = hashlib.sha256()
    for task in split_fashion_mnist(train_per_class=DEFAULT_TRAIN_PER_CLASS, eval_per_class=DEFAULT_EVAL_PER_CLASS):
        digest.update(np.ascontiguousarray(task.train_indices, "<i8"))
        digest.update(np.ascontiguousarray(task.eval_indices, "<i8"))
    assert digest.hexdigest() == DEFAULT_INDICES_SHA256


@pytest.fixture
def synthetic_loader(monkeypatch):
    """Replaces the dataset loader with small in-memory synthetic splits (10 classes, or 100 for cifar100)."""
    loaded = []

    def load(name, split, root=None):
        loaded.append((name, split))
        num_classes = 100 if name == "cifar100" else 10
        labels = np.tile(np.arange(num_classes), 6 if split == "train" else 4)
        images = np.zeros((len(labels), 8, 8), np.uint8)
        return ImageArray(name, split, images, labels.astype(np.int64), "synthetic, in memory")

    monkeypatch.setattr(tasks_module, "load_dataset", load)
    return loaded


@pytest.mark.parametrize(("num_tasks", "per_task"), [(10, 10), (20, 5)])
def test_split_cifar100_cuts_consecutive_classes(synthetic_loader, num_tasks, per_task):
    tasks = split_cifar100(num_tasks, train_per_class=3, eval_per_class=2, probe_per_class=3, seed=0)
    labels = {split: tasks_module.load_dataset("cifar100", split).labels for split in ("train", "test")}
    assert [t.classes for t in tasks] == [tuple(range(i * per_task, (i + 1) * per_task)) for i in range(num_tasks)]
    for task in tasks:
        assert task.dataset == "cifar100"
        assert sorted(labels["train"][task.train_indices].tolist()) == sorted(task.classes * 3)
        assert sorted(labels["test"][task.eval_indices].tolist()) == sorted(task.classes * 2)
        assert sorted(labels["train"][task.probe_indices].tolist()) == sorted(task.classes * 3)
        assert not set(task.probe_indices) & set(task.train_indices)  # the rest of each class: 6 = 3 + 3
    everything = np.concatenate([t.train_indices for t in tasks])
    assert len(np.unique(everything)) == len(everything) == 100 * 3


def test_split_cifar100_rejects_an_uneven_cut(synthetic_loader):
    with pytest.raises(ValueError, match="num_tasks=3"):
        split_cifar100(3)


def test_dataset_tasks_make_one_ten_class_task_per_dataset(synthetic_loader):
    tasks = dataset_tasks(train_per_class=2, eval_per_class=1, probe_per_class=2, seed=0)
    assert [t.dataset for t in tasks] == list(FIVE_DATASETS)
    assert [t.index for t in tasks] == [0, 1, 2, 3, 4]
    assert all(t.classes == tuple(range(10)) for t in tasks)
    assert all(len(t.train_indices) == 20 and len(t.eval_indices) == 10 and len(t.probe_indices) == 20 for t in tasks)
    assert {name for name, _ in synthetic_loader} == set(FIVE_DATASETS)
    assert tasks[2].name == "svhn[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]"
