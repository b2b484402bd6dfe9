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

from nsr_env.atomic import atomic_write, exclusive
from nsr_env.backbones import Backbone
from nsr_env.data import Task
from nsr_env.data.datasets import load_selection
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


def data_fingerprint(images: np.ndarray, labels: np.ndarray) -> str:
    """SHA-256 of the selected images and labels, so two data roots with different content never share an entry."""
    digest = hashlib.sha256()
    images = np.ascontiguousarray(images)
    digest.update(f"{images.dtype.str}{images.shape}".encode())
    digest.update(images)
    digest.update(np.ascontiguousarray(labels, dtype="<i8"))
    return digest.hexdigest()


def describe(
    backbone: Backbone, dataset: str, split: str, indices: np.ndarray, images: np.ndarray, labels: np.ndarray
) -> dict:
    """Everything that affects an entry's content (``images`` and ``labels``: the samples at ``indices``);
    its hash is the entry's key."""
    indices = np.ascontiguousarray(indices, dtype="<i8")
    return {
        "format": CACHE_FORMAT,
        "backbone": backbone.name,
        "adapted_layer": backbone.adapted_layer,
        "weights": backbone.fingerprint(),
        "transform": backbone.transform.key(),
        "dataset": dataset,
        "split": split,
        "num_samples": len(indices),
        "indices_sha256": hashlib.sha256(indices.tobytes()).hexdigest(),
        "data_sha256": data_fingerprint(images, labels),
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


def _extract_entry(backbone, images, labels, description, batch_size, progress, dataset, split) -> dict:
    """Run the backbone on the selected images: the payload of a cache entry."""
    inputs, base_outputs = extract(backbone, images, batch_size, progress, label=f"{dataset}/{split}")
    return {
        "description": json.dumps(description, sort_keys=True),
        "inputs": inputs,
        "base_outputs": base_outputs,
        "labels": torch.from_numpy(np.array(labels, dtype=np.int64)),
    }


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

    The selected images are loaded either way (the dataset is kept in memory; a derived dataset
    derives only them): the key hashes them.
    """
    images, labels = load_selection(dataset, split, indices, data_root)
    indices = np.asarray(indices).astype(np.int64, copy=False)
    description = describe(backbone, dataset, split, indices, images, labels)
    key = entry_key(description)
    path = cache_dir(cache) / "features" / backbone.name / f"{key}.pt"
    payload = _load_entry(path, description)
    from_cache = payload is not None
    if payload is None:
        with exclusive(path):  # another process may be extracting the same entry: wait for it, then read
            payload = _load_entry(path, description)
            from_cache = payload is not None
            if payload is None:
                payload = _extract_entry(backbone, images, labels, description, batch_size, progress, dataset, split)
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
