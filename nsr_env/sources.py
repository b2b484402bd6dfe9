"""Task sources: a scenario's dataset split into tasks, as the learner's cached tensors.

Each source is a function ``(scenario, cache, data_root, progress) -> (tasks, pool_kind)``,
listed by name in :data:`nsr_env.scenarios.TASK_SOURCES`. The offline task library's sources
(``pairs``, ``rotated``, ``traps``, ``mixed``, ``long``; see :mod:`nsr_env.data.library`) extract
each (dataset variant, class) subset once and build every two-class task from its two classes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from nsr_env.backbones import Backbone, make_backbone
from nsr_env.data import dataset_tasks, split_cifar100, split_fashion_mnist
from nsr_env.data.library import LIBRARIES, LibraryTask, class_subsets
from nsr_env.features import TaskFeatures, task_features
from nsr_env.learner import TaskData, embed
from nsr_env.scenarios import Scenario


def _image_tasks(split: Callable, scenario: Scenario, cache, data_root, progress) -> tuple[list[TaskData], str]:
    backbone = make_backbone(scenario.backbone)
    tasks = split(
        train_per_class=scenario.train_per_class,
        eval_per_class=scenario.eval_per_class,
        probe_per_class=scenario.probe_per_class,
        seed=scenario.data_seed,
        root=data_root,
    )
    if scenario.tasks_per_cycle > len(tasks):
        raise ValueError(
            f"scenario {scenario.name!r}: tasks_per_cycle={scenario.tasks_per_cycle} but the source "
            f"{scenario.source!r} has {len(tasks)} tasks"
        )
    tasks = tasks[: scenario.tasks_per_cycle]
    scenario.check_probe_split(min(len(task.probe_indices) for task in tasks))
    features = task_features(backbone, tasks, cache=cache, data_root=data_root, progress=progress)
    data = []
    for item in features:
        task = item.task
        train_labels = torch.from_numpy(task.local_labels(item.train.labels.numpy()))
        eval_labels = torch.from_numpy(task.local_labels(item.held_out.labels.numpy()))
        probe_inputs, probe_base, probe_labels = _subset(item, "probe")
        data.append(
            TaskData(
                name=task.name,
                num_classes=task.num_classes,
                train_inputs=item.train.inputs,
                train_base=item.train.base_outputs,
                train_labels=train_labels,
                eval_inputs=item.held_out.inputs,
                eval_base=item.held_out.base_outputs,
                eval_labels=eval_labels,
                probe_inputs=probe_inputs,
                probe_base=probe_base,
                probe_labels=torch.from_numpy(task.local_labels(probe_labels.numpy())),
                key=embed(item.train.inputs, item.train.base_outputs, scenario.key, backbone.pool_kind),
            )
        )
    return data, backbone.pool_kind


def _gaussian_clusters(
    rng: np.random.Generator, means: np.ndarray, per_class: int, positions: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """SYNTHETIC samples: every position of a sample is its class mean plus unit Gaussian noise."""
    labels = np.repeat(np.arange(len(means)), per_class)
    noise = rng.normal(size=(len(labels), positions, means.shape[1]))
    return torch.from_numpy(means[labels][:, None, :] + noise).float(), torch.from_numpy(labels)


def synthetic_tasks(scenario: Scenario, *_unused) -> tuple[list[TaskData], str]:
    """SYNTHETIC features (Gaussian class clusters through a random frozen layer), for fast tests.

    Each task has its own class means, so tasks have distinct keys; the frozen layer is
    16 -> 32 with 2 positions and ReLU-mean pooling.
    """
    rng = np.random.default_rng([scenario.data_seed, 7919])
    probe_rng = np.random.default_rng([scenario.data_seed, 7919, 1])  # apart, so train and eval draws are unchanged
    in_features, out_features, positions, classes = 16, 32, 2, 2
    weight = torch.from_numpy(rng.normal(size=(out_features, in_features)) / np.sqrt(in_features)).float()
    data = []
    for task in range(scenario.tasks_per_cycle):
        means = rng.normal(scale=1.5, size=(classes, in_features))

        train_inputs, train_labels = _gaussian_clusters(rng, means, scenario.train_per_class, positions)
        eval_inputs, eval_labels = _gaussian_clusters(rng, means, scenario.eval_per_class, positions)
        probe_inputs, probe_labels = _gaussian_clusters(probe_rng, means, scenario.probe_per_class, positions)
        data.append(
            TaskData(
                name=f"synthetic[{task}]",
                num_classes=classes,
                train_inputs=train_inputs,
                train_base=train_inputs @ weight.T,
                train_labels=train_labels,
                eval_inputs=eval_inputs,
                eval_base=eval_inputs @ weight.T,
                eval_labels=eval_labels,
                probe_inputs=probe_inputs,
                probe_base=probe_inputs @ weight.T,
                probe_labels=probe_labels,
                key=embed(train_inputs, train_inputs @ weight.T, scenario.key, "relu_mean"),
            )
        )
    return data, "relu_mean"


def split_fashion_mnist_tasks(scenario: Scenario, cache, data_root, progress) -> tuple[list[TaskData], str]:
    """Split-FashionMNIST (5 tasks x 2 classes), offline."""
    return _image_tasks(split_fashion_mnist, scenario, cache, data_root, progress)


def split_cifar100_tasks(scenario: Scenario, cache, data_root, progress) -> tuple[list[TaskData], str]:
    """Split-CIFAR-100 (10 tasks x 10 classes); needs the CIFAR-100 files."""
    return _image_tasks(split_cifar100, scenario, cache, data_root, progress)


def five_datasets_tasks(scenario: Scenario, cache, data_root, progress) -> tuple[list[TaskData], str]:
    """5-Datasets (CIFAR-10, MNIST, SVHN, Fashion-MNIST, notMNIST); needs those datasets."""
    return _image_tasks(dataset_tasks, scenario, cache, data_root, progress)


def _class_features(
    chosen: list[LibraryTask], scenario: Scenario, backbone: Backbone, cache, data_root, progress
) -> dict[tuple[str, int], TaskFeatures]:
    """The cached features of every (dataset, class) that ``chosen`` uses, each extracted or loaded once."""
    needed: dict[str, set[int]] = {}
    for task in chosen:
        needed.setdefault(task.dataset, set()).update(task.classes)
    counts = (scenario.train_per_class, scenario.eval_per_class, scenario.probe_per_class, scenario.data_seed)
    subsets = {
        (dataset, cls): subset
        for dataset, classes in needed.items()
        for cls, subset in class_subsets(dataset, sorted(classes), *counts, data_root).items()
    }  # indices only: the probe split's size is checked before anything is extracted
    scenario.check_probe_split(min(sum(len(subsets[t.dataset, c].probe_indices) for c in t.classes) for t in chosen))
    features = {}
    for key, subset in tqdm(subsets.items(), desc=f"features {scenario.source}", disable=not progress):
        (features[key],) = task_features(backbone, [subset], cache=cache, data_root=data_root, progress=False)
    return features


def _subset(features: TaskFeatures, split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs, base outputs, original labels) of one of a task's subsets; no probe subset: empty tensors."""
    if split == "probe" and features.probe is None:
        return features.train.inputs[:0], features.train.base_outputs[:0], features.train.labels[:0]
    cached = {"train": features.train, "eval": features.held_out, "probe": features.probe}[split]
    return cached.inputs, cached.base_outputs, cached.labels


def _local_labels(labels: torch.Tensor, classes: tuple[int, ...]) -> torch.Tensor:
    """Original labels -> the position of each in ``classes``."""
    return torch.argmax((labels[:, None] == torch.tensor(classes)[None, :]).long(), dim=1)


def _library_tasks(scenario: Scenario, cache, data_root, progress) -> tuple[list[TaskData], str]:
    """The first ``tasks_per_cycle`` tasks of the library named by ``scenario.source``.

    A task's tensors are its two classes' cached tensors concatenated (lower class first), so
    tasks on the same classes and images (a ``traps`` twin and its original) share their
    tensors and have identical keys; only the labels differ.
    """
    library = LIBRARIES[scenario.source]()
    if scenario.tasks_per_cycle > len(library):
        raise ValueError(
            f"scenario {scenario.name!r}: tasks_per_cycle={scenario.tasks_per_cycle} but the library "
            f"{scenario.source!r} has {len(library)} tasks"
        )
    chosen = library[: scenario.tasks_per_cycle]
    backbone = make_backbone(scenario.backbone)
    per_class = _class_features(chosen, scenario, backbone, cache, data_root, progress)
    composed = {}  # (dataset, classes) -> ({split: (inputs, base outputs, original labels)}, key)
    data = []
    for task in chosen:
        classes = tuple(sorted(task.classes))
        if (task.dataset, classes) not in composed:
            parts = [per_class[task.dataset, cls] for cls in classes]
            tensors = {}
            for split in ("train", "eval", "probe"):
                inputs, base, labels = zip(*(_subset(part, split) for part in parts), strict=True)
                tensors[split] = (torch.cat(inputs), torch.cat(base), torch.cat(labels))
            key = embed(tensors["train"][0], tensors["train"][1], scenario.key, backbone.pool_kind)
            composed[task.dataset, classes] = tensors, key
        tensors, key = composed[task.dataset, classes]
        train_inputs, train_base, train_labels = tensors["train"]
        eval_inputs, eval_base, eval_labels = tensors["eval"]
        probe_inputs, probe_base, probe_labels = tensors["probe"]
        data.append(
            TaskData(
                name=task.name,
                num_classes=len(task.classes),
                train_inputs=train_inputs,
                train_base=train_base,
                train_labels=_local_labels(train_labels, task.classes),
                eval_inputs=eval_inputs,
                eval_base=eval_base,
                eval_labels=_local_labels(eval_labels, task.classes),
                probe_inputs=probe_inputs,
                probe_base=probe_base,
                probe_labels=_local_labels(probe_labels, task.classes),
                key=key,
                family=task.family,
            )
        )
    return data, backbone.pool_kind


def pairs_tasks(scenario: Scenario, cache, data_root, progress) -> tuple[list[TaskData], str]:
    """The 45 Fashion-MNIST class pairs in a fixed shuffle (offline)."""
    return _library_tasks(scenario, cache, data_root, progress)


def rotated_tasks(scenario: Scenario, cache, data_root, progress) -> tuple[list[TaskData], str]:
    """5 disjoint Fashion-MNIST pairs at 12 angles, angle-major: 60 tasks (offline)."""
    return _library_tasks(scenario, cache, data_root, progress)


def traps_tasks(scenario: Scenario, cache, data_root, progress) -> tuple[list[TaskData], str]:
    """5 disjoint Fashion-MNIST pairs, then their label-swapped twins: 10 tasks (offline)."""
    return _library_tasks(scenario, cache, data_root, progress)


def mixed_tasks(scenario: Scenario, cache, data_root, progress) -> tuple[list[TaskData], str]:
    """8 tasks: Fashion-MNIST, digits, rotated and inverted Fashion-MNIST pairs, interleaved (offline)."""
    return _library_tasks(scenario, cache, data_root, progress)


def long_tasks(scenario: Scenario, cache, data_root, progress) -> tuple[list[TaskData], str]:
    """All 45 Fashion-MNIST pairs at 12 angles, angle-major: 540 tasks (offline)."""
    return _library_tasks(scenario, cache, data_root, progress)
