"""Scenarios: which tasks, in which order, with how much adapter memory.

A :class:`Scenario` is plain configuration: a task source (a dataset split into tasks),
a schedule of phases (cyclic M x T, sequential, random recurrence), the phase length L,
the capacity S, the LoRA rank r, the bank cap K and the learner's per-step budget.
:func:`prepare` turns it into :class:`ScenarioData`: the tasks' cached tensors and their
reference accuracies a* (calibrated once, cached on disk beside the features).

A new scenario is one :func:`register_scenario` call; a new task source is one function
plus one line in ``TASK_SOURCES``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nsr_env.atomic import atomic_write
from nsr_env.backbones import DEFAULT_BACKBONE, make_backbone
from nsr_env.data import dataset_tasks, split_cifar100, split_fashion_mnist
from nsr_env.features import task_features
from nsr_env.learner import FRESH, ContinualLearner, LearnerConfig, TaskData
from nsr_env.paths import cache_dir

SCHEDULES = ("cyclic", "sequential", "random")
CALIBRATION_FORMAT = 1


@dataclass(frozen=True)
class Scenario:
    """A continual-learning stream and the memory the learner has for it (all fields overridable)."""

    name: str
    source: str  # a key of TASK_SOURCES
    schedule: str = "cyclic"
    tasks_per_cycle: int = 5  # M
    cycles: int = 3  # T
    phase_length: int = 40  # L, decision steps per phase
    slots: int = 2  # S
    rank: int = 4  # r
    bank_capacity: int = 8  # K
    backbone: str = DEFAULT_BACKBONE
    train_per_class: int = 500
    eval_per_class: int = 200
    optimizer_steps: int = 1
    batch_size: int = 16
    lr: float = 5e-4
    distill_weight: float = 1.0
    svd_energy: float = 0.99
    bank_float16: bool = False
    retention: str = "lru"
    heads: str = "task"  # "task": a head per task; "slot": a slot's tasks share its head (forgetting is possible)
    tolerance: float = 0.03  # recovered = within this of the reference accuracy
    calibration_steps: int = 120  # decision steps of the one-slot run that defines a*
    data_seed: int = 0
    online: bool = False  # needs data that is not on this machine by default
    description: str = ""

    def __post_init__(self) -> None:
        positive = ("tasks_per_cycle", "cycles", "phase_length", "slots", "rank", "bank_capacity")
        positive += ("train_per_class", "eval_per_class", "optimizer_steps", "batch_size", "calibration_steps")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"scenario {self.name!r}: {name}={value!r} must be an integer >= 1")
        if self.source not in TASK_SOURCES:
            raise ValueError(
                f"scenario {self.name!r}: source={self.source!r} is unknown; one of {sorted(TASK_SOURCES)}"
            )
        if self.schedule not in SCHEDULES:
            raise ValueError(f"scenario {self.name!r}: schedule={self.schedule!r} is unknown; one of {SCHEDULES}")
        if self.schedule == "sequential" and self.cycles != 1:
            raise ValueError(f"scenario {self.name!r}: a sequential schedule visits each task once; set cycles=1")
        if not 0 < self.svd_energy <= 1:
            raise ValueError(f"scenario {self.name!r}: svd_energy={self.svd_energy} must be in (0, 1]")
        if isinstance(self.data_seed, bool) or not isinstance(self.data_seed, int) or self.data_seed < 0:
            raise ValueError(f"scenario {self.name!r}: data_seed={self.data_seed!r} must be an integer >= 0")
        if not 0 < self.tolerance < 1:
            raise ValueError(f"scenario {self.name!r}: tolerance={self.tolerance} must be in (0, 1)")
        try:
            self.learner_config()
        except ValueError as error:
            raise ValueError(f"scenario {self.name!r}: {error}") from None

    @property
    def num_phases(self) -> int:
        return self.tasks_per_cycle * self.cycles

    @property
    def num_steps(self) -> int:
        """Decision steps in one episode (one pass over the stream)."""
        return self.num_phases * self.phase_length

    def phase_tasks(self, rng: np.random.Generator | None = None) -> np.ndarray:
        """The task of every phase. Only ``random`` uses ``rng``: after one pass in order, each
        later phase draws a task uniformly among the others than the previous one."""
        M = self.tasks_per_cycle
        if self.schedule in ("cyclic", "sequential"):
            return np.tile(np.arange(M), self.cycles)
        if rng is None:
            raise ValueError(f"scenario {self.name!r}: a random schedule needs rng= (a numpy Generator)")
        tasks = list(range(M))
        for _ in range(M * (self.cycles - 1)):
            draw = int(rng.integers(M - 1)) if M > 1 else 0
            tasks.append(draw if draw < tasks[-1] or M == 1 else draw + 1)
        return np.array(tasks)

    def learner_config(self) -> LearnerConfig:
        return LearnerConfig(
            slots=self.slots,
            rank=self.rank,
            optimizer_steps=self.optimizer_steps,
            batch_size=self.batch_size,
            lr=self.lr,
            distill_weight=self.distill_weight,
            bank_capacity=self.bank_capacity,
            svd_energy=self.svd_energy,
            bank_float16=self.bank_float16,
            retention=self.retention,
            heads=self.heads,
        )


# --- task sources: scenario -> TaskData list ----------------------------------------------


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


TASK_SOURCES: dict[str, Callable[..., tuple[list[TaskData], str]]] = {
    "split_fashion_mnist": functools.partial(_image_tasks, split_fashion_mnist),
    "split_cifar100": functools.partial(_image_tasks, split_cifar100),
    "five_datasets": functools.partial(_image_tasks, dataset_tasks),
    "synthetic": synthetic_tasks,
}


# --- the registry ----------------------------------------------------------------------------

SCENARIOS: dict[str, Scenario] = {}


def register_scenario(scenario: Scenario) -> Scenario:
    """Add a named scenario to the registry (``make_scenario`` and the environment ids use it)."""
    SCENARIOS[scenario.name] = scenario
    return scenario


FIELDS = tuple(field.name for field in dataclasses.fields(Scenario))


def make_scenario(name: str, /, **overrides) -> Scenario:
    """The registered scenario ``name`` with some fields replaced, e.g. ``cycles=2``."""
    if name not in SCENARIOS:
        raise ValueError(f"scenario name {name!r} is unknown; registered: {sorted(SCENARIOS)}")
    unknown = sorted(set(overrides) - set(FIELDS[1:]))  # ``name`` is the registry key, not an override
    if unknown:
        raise ValueError(f"scenario {name!r} has no field {unknown[0]!r} to override; fields: {', '.join(FIELDS[1:])}")
    return dataclasses.replace(SCENARIOS[name], **overrides)


register_scenario(
    Scenario(
        "default",
        "split_fashion_mnist",
        description="Split-FashionMNIST 5x2 (offline), cyclic, 2 slots for 5 tasks, EfficientNet-Lite0 at 64 px",
    )
)
register_scenario(
    Scenario(
        "five_datasets",
        "five_datasets",
        schedule="sequential",
        cycles=1,
        online=True,
        description="5-Datasets (CIFAR-10, MNIST, SVHN, Fashion-MNIST, notMNIST), sequential; needs those datasets",
    )
)
register_scenario(
    Scenario(
        "split_cifar100",
        "split_cifar100",
        tasks_per_cycle=10,
        train_per_class=100,
        eval_per_class=50,
        bank_capacity=16,
        online=True,
        description="Split-CIFAR-100 10x10, cyclic, 2 slots; needs the CIFAR-100 files",
    )
)
register_scenario(
    Scenario(
        "synthetic",
        "synthetic",
        tasks_per_cycle=4,
        cycles=3,
        phase_length=10,
        train_per_class=100,
        eval_per_class=50,
        lr=2e-2,
        calibration_steps=60,
        description="SYNTHETIC Gaussian features through a random 16->32 layer: 4 tasks, for fast tests",
    )
)


# --- prepared data ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ScenarioData:
    """A scenario with its tasks' tensors and reference accuracies, ready to run."""

    scenario: Scenario
    tasks: list[TaskData]
    pool_kind: str
    reference: np.ndarray  # a* per task

    def learner(self, seed: int = 0) -> ContinualLearner:
        return ContinualLearner(self.tasks, self.pool_kind, self.scenario.learner_config(), seed=seed)


def calibrate(scenario: Scenario, tasks: list[TaskData], pool_kind: str) -> np.ndarray:
    """Reference accuracy a* of each task: trained alone in one fresh slot for
    ``calibration_steps`` decision steps; a* is the mean of the last ten evaluations
    (the evaluations are noisy; a single best one would be out of reach on most returns)."""
    config = dataclasses.replace(scenario.learner_config(), slots=1)
    reference = []
    for task in range(len(tasks)):
        learner = ContinualLearner(tasks, pool_kind, config, seed=scenario.data_seed)
        learner.begin_phase(task, 0, FRESH)
        curve = [learner.decision_step()[0] for _ in range(scenario.calibration_steps)]
        reference.append(float(np.mean(curve[-10:])))
    return np.array(reference)


def _calibration_path(scenario: Scenario, tasks: list[TaskData], cache) -> Path:
    learner_fields = ("rank", "optimizer_steps", "batch_size", "lr", "svd_energy", "calibration_steps", "data_seed")
    digest = hashlib.sha256(json.dumps([CALIBRATION_FORMAT, scenario.source, scenario.backbone]).encode())
    digest.update(json.dumps({name: getattr(scenario, name) for name in learner_fields}, sort_keys=True).encode())
    for task in tasks:
        for tensor in (task.train_inputs, task.train_labels, task.eval_inputs, task.eval_labels):
            digest.update(tensor.numpy().tobytes())
    return cache_dir(cache) / "calibration" / f"{scenario.source}-{digest.hexdigest()[:20]}.json"


def reference_accuracies(scenario: Scenario, tasks: list[TaskData], pool_kind: str, cache=None) -> np.ndarray:
    """a* per task, from the on-disk cache when this exact calibration was run before."""
    path = _calibration_path(scenario, tasks, cache)
    try:
        stored = json.loads(path.read_text())
        if len(stored["reference"]) == len(tasks):
            return np.array(stored["reference"], dtype=float)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    reference = calibrate(scenario, tasks, pool_kind)
    text = json.dumps({"scenario": scenario.name, "tasks": [t.name for t in tasks], "reference": reference.tolist()})
    atomic_write(path, lambda temporary: temporary.write_text(text))
    return reference


def prepare(
    scenario: Scenario | str, *, cache: str | Path | None = None, data_root: str | Path | None = None, progress=True
) -> ScenarioData:
    """Load (or extract) the scenario's features and its reference accuracies."""
    if isinstance(scenario, str):
        scenario = make_scenario(scenario)
    tasks, pool_kind = TASK_SOURCES[scenario.source](scenario, cache, data_root, progress)
    limit = min(tasks[0].train_inputs.shape[2], tasks[0].train_base.shape[2])
    if scenario.rank > limit:
        raise ValueError(
            f"scenario {scenario.name!r}: rank={scenario.rank} is larger than the adapted layer allows ({limit})"
        )
    return ScenarioData(scenario, tasks, pool_kind, reference_accuracies(scenario, tasks, pool_kind, cache))
