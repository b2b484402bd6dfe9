import numpy as np
import pytest

from nsr_env.data import class_split, consecutive_groups, split_fashion_mnist


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
    (task,) = class_split("fashion_mnist", [[7]], train_per_class=None, eval_per_class=None)
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
