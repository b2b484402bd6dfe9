"""Datasets (offline first) and task splits."""

from nsr_env.data.datasets import DATASETS, DataNotFoundError, ImageArray, load_dataset
from nsr_env.data.idx import read_idx
from nsr_env.data.tasks import (
    FIVE_DATASETS,
    Task,
    class_split,
    consecutive_groups,
    dataset_tasks,
    split_cifar100,
    split_fashion_mnist,
)

__all__ = [
    "DATASETS",
    "FIVE_DATASETS",
    "DataNotFoundError",
    "ImageArray",
    "Task",
    "class_split",
    "consecutive_groups",
    "dataset_tasks",
    "load_dataset",
    "read_idx",
    "split_cifar100",
    "split_fashion_mnist",
]
