"""Task splits: one dataset cut into tasks by class groups, or several datasets as tasks.

A :class:`Task` holds indices into its dataset's train split (training subset and, disjoint
from it, a probe subset: unlabelled images a controller may look at to recognise the task)
and test split (held-out subset), drawn per class by a seeded generator, so the same seed
gives the same subsets on every machine. Labels inside a task are local: the position of the
original class in ``Task.classes`` (task-incremental learning, one head per task).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nsr_env.data.datasets import DATASETS, load_dataset
from nsr_env.data.variants import parse_variant

# The default scenario's subsets: 500 training, 200 held-out and 50 probe images per class.
DEFAULT_TRAIN_PER_CLASS = 500
DEFAULT_EVAL_PER_CLASS = 200
DEFAULT_PROBE_PER_CLASS = 50


@dataclass(frozen=True, eq=False)
class Task:
    """One task: which classes of which dataset, and the sample indices it uses."""

    index: int
    name: str
    dataset: str
    classes: tuple[int, ...]
    train_indices: np.ndarray
    eval_indices: np.ndarray
    probe_indices: np.ndarray  # train split, disjoint from train_indices

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def local_labels(self, labels: np.ndarray) -> np.ndarray:
        """Map original dataset labels of this task's samples to 0..num_classes-1."""
        labels = np.asarray(labels)
        foreign = sorted(set(labels[~np.isin(labels, self.classes)].tolist()))
        if foreign:
            raise ValueError(f"task {self.name}: labels {foreign} are outside its classes {self.classes}")
        return np.argmax(labels[:, None] == np.array(self.classes)[None, :], axis=1).astype(np.int64)


def _per_class_subset(labels: np.ndarray, cls: int, count: int | None, seed: int, salt: int) -> np.ndarray:
    pool = np.flatnonzero(labels == cls)
    if count is None:
        return pool
    if count > len(pool):
        raise ValueError(f"asked for {count} samples of class {cls}, the split has only {len(pool)}")
    rng = np.random.default_rng([seed, salt, cls])
    return np.sort(rng.choice(pool, size=count, replace=False))


def _subset(labels: np.ndarray, classes: Sequence[int], count: int | None, seed: int, salt: int) -> np.ndarray:
    return np.concatenate([_per_class_subset(labels, c, count, seed, salt) for c in classes])


def _probe_subset(labels: np.ndarray, classes: Sequence[int], train: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` samples per class from the train split, none of them in the training subset ``train``."""
    rest = np.ones(len(labels), dtype=bool)
    rest[train] = False
    parts = []
    for cls in classes:
        pool = np.flatnonzero((labels == cls) & rest)
        if count > len(pool):
            raise ValueError(
                f"probe_per_class={count}: class {cls} has only {len(pool)} training-split samples outside the "
                "training subset; lower probe_per_class or train_per_class"
            )
        parts.append(np.sort(np.random.default_rng([seed, 2, cls]).choice(pool, size=count, replace=False)))
    return np.concatenate(parts)


def _labels(dataset: str, split: str, root: str | Path | None) -> np.ndarray:
    """A split's labels; a derived dataset's are its base's, read without deriving its images."""
    base, separator, variant = dataset.partition("@")
    if separator and base in DATASETS:
        parse_variant(variant)  # a bad variant raises here, naming it
        return load_dataset(base, split, root).labels
    return load_dataset(dataset, split, root).labels  # an unknown name raises there


def class_split(
    dataset: str,
    class_groups: Sequence[Sequence[int]],
    train_per_class: int | None = None,
    eval_per_class: int | None = None,
    seed: int = 0,
    root: str | Path | None = None,
    first_index: int = 0,
    probe_per_class: int = DEFAULT_PROBE_PER_CLASS,
) -> list[Task]:
    """Cut ``dataset`` into one task per class group.

    ``train_per_class`` / ``eval_per_class`` samples per class are drawn from the train /
    test split (``None``: all of them), ``probe_per_class`` from the train split outside the
    training subset. Groups must be non-empty and disjoint.
    """
    seen: set[int] = set()
    for group in class_groups:
        if len(group) == 0:
            raise ValueError(f"class_groups holds an empty group: {list(class_groups)}")
        if seen & set(group):
            raise ValueError(f"class_groups overlap on classes {sorted(seen & set(group))}")
        seen |= set(group)
    for argument, value in (("train_per_class", train_per_class), ("eval_per_class", eval_per_class)):
        if value is not None and value < 1:
            raise ValueError(f"{argument}={value} must be at least 1 (or None for all samples)")
    if probe_per_class < 0:
        raise ValueError(f"probe_per_class={probe_per_class} must be >= 0")
    train_labels, test_labels = (_labels(dataset, split, root) for split in ("train", "test"))
    unknown = sorted(seen - set(np.unique(train_labels).tolist()))
    if unknown:
        raise ValueError(f"class_groups name classes {unknown} that {dataset} does not have")
    tasks = []
    for offset, group in enumerate(class_groups):
        classes = tuple(int(c) for c in group)
        train_indices = _subset(train_labels, classes, train_per_class, seed, salt=0)
        tasks.append(
            Task(
                index=first_index + offset,
                name=f"{dataset}{list(classes)}",
                dataset=dataset,
                classes=classes,
                train_indices=train_indices,
                eval_indices=_subset(test_labels, classes, eval_per_class, seed, salt=1),
                probe_indices=_probe_subset(train_labels, classes, train_indices, probe_per_class, seed),
            )
        )
    return tasks


def consecutive_groups(num_classes: int, num_tasks: int) -> list[list[int]]:
    """Classes 0..num_classes-1 in order, cut into ``num_tasks`` equal groups."""
    if num_tasks < 1 or num_classes % num_tasks:
        raise ValueError(f"num_tasks={num_tasks} must divide the {num_classes} classes evenly")
    size = num_classes // num_tasks
    return [list(range(start, start + size)) for start in range(0, num_classes, size)]


def split_fashion_mnist(num_tasks: int = 5, **kwargs) -> list[Task]:
    """Split-FashionMNIST: 5 tasks of 2 consecutive classes by default (offline)."""
    return class_split("fashion_mnist", consecutive_groups(10, num_tasks), **kwargs)


def split_cifar100(num_tasks: int = 10, **kwargs) -> list[Task]:
    """Split-CIFAR-100: 10 tasks of 10 classes, or 20 tasks of 5 (needs the CIFAR-100 files)."""
    return class_split("cifar100", consecutive_groups(100, num_tasks), **kwargs)


FIVE_DATASETS = ("cifar10", "mnist", "svhn", "fashion_mnist", "notmnist")


def dataset_tasks(datasets: Sequence[str] = FIVE_DATASETS, **kwargs) -> list[Task]:
    """A list of datasets as tasks, each with all ten of its classes (5-Datasets by default)."""
    return [class_split(name, [list(range(10))], first_index=i, **kwargs)[0] for i, name in enumerate(datasets)]
