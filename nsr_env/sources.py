"""Task sources: a scenario's dataset split into tasks, as the learner's cached tensors.

Each source is a function ``(scenario, cache, data_root, progress) -> (tasks, pool_kind)``,
listed by name in :data:`nsr_env.scenarios.TASK_SOURCES`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from nsr_env.backbones import make_backbone
from nsr_env.data import dataset_tasks, split_cifar100, split_fashion_mnist
from nsr_env.features import task_features
from nsr_env.learner import TaskData
from nsr_env.scenarios import Scenario


def _image_tasks(split: Callable, scenario: Scenario, cache, data_root, progress) -> tuple[list[TaskData], str]:
    backbone = make_backbone(scenario.backbone)
    tasks = split(
        train_per_class=scenario.train_per_class,
        eval_per_class=scenario.eval_per_class,
        seed=scenario.data_seed,
        root=data_root,
    )
    if scenario.tasks_per_cycle > len(tasks):
        raise ValueError(
            f"scenario {scenario.name!r}: tasks_per_cycle={scenario.tasks_per_cycle} but the source "
            f"{scenario.source!r} has {len(tasks)} tasks"
        )
    tasks = tasks[: scenario.tasks_per_cycle]
    features = task_features(backbone, tasks, cache=cache, data_root=data_root, progress=progress)
    data = []
    for item in features:
        task = item.task
        train_labels = torch.from_numpy(task.local_labels(item.train.labels.numpy()))
        eval_labels = torch.from_numpy(task.local_labels(item.held_out.labels.numpy()))
        key = item.train.inputs.mean(dim=(0, 1))
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
                key=key,
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
    in_features, out_features, positions, classes = 16, 32, 2, 2
    weight = torch.from_numpy(rng.normal(size=(out_features, in_features)) / np.sqrt(in_features)).float()
    data = []
    for task in range(scenario.tasks_per_cycle):
        means = rng.normal(scale=1.5, size=(classes, in_features))

        train_inputs, train_labels = _gaussian_clusters(rng, means, scenario.train_per_class, positions)
        eval_inputs, eval_labels = _gaussian_clusters(rng, means, scenario.eval_per_class, positions)
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
                key=train_inputs.mean(dim=(0, 1)),
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
