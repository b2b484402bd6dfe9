"""On-disk cache of what the frozen backbone computes: adapted-layer inputs and base outputs.

One entry per (backbone weights, transform, dataset, split, sample indices, selected images
and labels), stored under ``<cache>/features/<backbone>/<key>.pt`` where ``key`` hashes all
of these. A derived dataset (``fashion_mnist@rot30``) has its own name and images, so its
entries never collide with its base's, and a change to how it is derived changes their keys.
Entries are written to a temporary file in the same folder and renamed into place, so a
killed extraction leaves no file that a later run would load; a stale temporary file is
ignored. An entry that cannot be read, or whose recorded description
differs from the request, is recomputed (with a warning) instead of trusted.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from nsr_env.atomic import atomic_write
from nsr_env.backbones import Backbone
from nsr_env.data import ImageArray, Task, load_dataset
from nsr_env.paths import cache_dir

CACHE_FORMAT = 1
"""Bump it whenever the extraction code or the entry layout changes: nothing else in the key would notice."""


@dataclass(frozen=True)
class CachedFeatures:
    """Frozen-path tensors of one sample subset.

    ``inputs`` (N, P, in) feed the adapted layer; ``base_outputs`` (N, P, out) are its frozen
    outputs ``inputs @ W0.T + b0``; ``labels`` (N,) are the dataset's original labels.
    """

    inputs: torch.Tensor
    base_outputs: torch.Tensor
    labels: torch.Tensor
    indices: np.ndarray
    key: str
    path: Path
    from_cache: bool

    def __len__(self) -> int:
        return len(self.labels)


def _check_indices(indices: np.ndarray, data: ImageArray) -> None:
    """Reject what numpy would accept silently: empty, float or negative (wrap-around) indices."""
    valid = f"integers in 0..{len(data) - 1} (the {len(data)} samples of {data.name}/{data.split})"
    if indices.ndim != 1 or len(indices) == 0:
        raise ValueError(f"indices must be a non-empty 1-d array of {valid}, got shape {indices.shape}")
    if not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"indices must be {valid}, got dtype {indices.dtype}")
    if indices.min() < 0 or indices.max() >= len(data):
        raise ValueError(f"indices must be {valid}, got values from {indices.min()} to {indices.max()}")


def data_fingerprint(data: ImageArray, indices: np.ndarray) -> str:
    """SHA-256 of the selected images and labels, so two data roots with different content never share an entry."""
    digest = hashlib.sha256()
    images = np.ascontiguousarray(data.images[indices])
    digest.update(f"{images.dtype.str}{images.shape}".encode())
    digest.update(images)
    digest.update(np.ascontiguousarray(data.labels[indices], dtype="<i8"))
    return digest.hexdigest()


def describe(backbone: Backbone, data: ImageArray, indices: np.ndarray) -> dict:
    """Everything that affects an entry's content; its hash is the entry's key."""
    indices = np.ascontiguousarray(indices, dtype="<i8")
    return {
        "format": CACHE_FORMAT,
        "backbone": backbone.name,
        "adapted_layer": backbone.adapted_layer,
        "weights": backbone.fingerprint(),
        "transform": backbone.transform.key(),
        "dataset": data.name,
        "split": data.split,
        "num_samples": len(indices),
        "indices_sha256": hashlib.sha256(indices.tobytes()).hexdigest(),
        "data_sha256": data_fingerprint(data, indices),
    }


def entry_key(description: dict) -> str:
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:32]


def extract(
    backbone: Backbone, images: np.ndarray, batch_size: int = 256, progress: bool = True, label: str = ""
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the frozen backbone over uint8 ``images``: (inputs, base_outputs)."""
    inputs, base_outputs = [], []
    batches = range(0, len(images), batch_size)
    with torch.inference_mode():
        for start in tqdm(batches, desc=f"features {label}".strip(), unit="batch", disable=not progress):
            x = backbone.encode(backbone.transform(images[start : start + batch_size]))
            inputs.append(x)
            base_outputs.append(backbone.base_output(x))
    return torch.cat(inputs), torch.cat(base_outputs)


def _load_entry(path: Path, description: dict) -> dict | None:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload["description"] != json.dumps(description, sort_keys=True):
            raise ValueError("its description differs from the request")
        n = description["num_samples"]
        if not (len(payload["inputs"]) == len(payload["base_outputs"]) == len(payload["labels"]) == n):
            raise ValueError("its tensors do not hold the recorded number of samples")
    except FileNotFoundError:
        return None
    except Exception as error:  # truncated zip, unpickling error, missing key, ...
        warnings.warn(f"feature cache entry {path} is unreadable ({error}); recomputing it", stacklevel=3)
        return None
    return payload


def cached_features(
    backbone: Backbone,
    dataset: str,
    split: str,
    indices: np.ndarray,
    *,
    cache: str | Path | None = None,
    data_root: str | Path | None = None,
    batch_size: int = 256,
    progress: bool = True,
) -> CachedFeatures:
    """The frozen-path tensors of ``indices`` in ``dataset``/``split``, from disk when cached.

    The dataset is loaded either way (it is kept in memory): the key hashes the selected images.
    """
    data = load_dataset(dataset, split, data_root)
    indices = np.asarray(indices)
    _check_indices(indices, data)
    indices = indices.astype(np.int64, copy=False)
    description = describe(backbone, data, indices)
    key = entry_key(description)
    path = cache_dir(cache) / "features" / backbone.name / f"{key}.pt"
    payload = _load_entry(path, description)
    from_cache = payload is not None
    if payload is None:
        inputs, base_outputs = extract(backbone, data.images[indices], batch_size, progress, label=f"{dataset}/{split}")
        payload = {
            "description": json.dumps(description, sort_keys=True),
            "inputs": inputs,
            "base_outputs": base_outputs,
            "labels": torch.from_numpy(data.labels[indices].copy()),
        }
        atomic_write(path, lambda temporary: torch.save(payload, temporary))
    return CachedFeatures(
        inputs=payload["inputs"],
        base_outputs=payload["base_outputs"],
        labels=payload["labels"],
        indices=indices,
        key=key,
        path=path,
        from_cache=from_cache,
    )


@dataclass(frozen=True)
class TaskFeatures:
    """A task's cached training subset, held-out subset and probe subset (None when it has none)."""

    task: Task
    train: CachedFeatures
    held_out: CachedFeatures
    probe: CachedFeatures | None = None


def task_features(backbone: Backbone, tasks: list[Task], **kwargs) -> list[TaskFeatures]:
    """Cached features of every task's subsets (kwargs as in :func:`cached_features`)."""
    return [
        TaskFeatures(
            task,
            cached_features(backbone, task.dataset, "train", task.train_indices, **kwargs),
            cached_features(backbone, task.dataset, "test", task.eval_indices, **kwargs),
            cached_features(backbone, task.dataset, "train", task.probe_indices, **kwargs)
            if len(task.probe_indices)
            else None,
        )
        for task in tasks
    ]
