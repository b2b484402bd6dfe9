"""Scenarios: which tasks, in which order, with how much adapter memory.

A :class:`Scenario` is plain configuration: a task source (a dataset split into tasks),
a schedule of phases (cyclic M x T, sequential, random recurrence), the phase length L,
the capacity S, the LoRA rank r, the memory (mechanism, cap K), the protection rule and
the learner's per-step budget. :func:`prepare` turns it into a
:class:`nsr_env.prepared.ScenarioData`: the tasks' cached tensors and their reference
accuracies a* (calibrated once, cached on disk beside the features).

A new scenario is one :func:`register_scenario` call, which also registers its Gymnasium
id; a new task source is one function plus one ``TASK_SOURCES.register`` line. This module
imports no torch (names are checked against registries of import paths), so a sweep config
or ``nsr report`` can use the registry without it.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from gymnasium.envs.registration import register, registry

from nsr_env.config import KEYS, LEARNER_FIELDS, LearnerConfig
from nsr_env.registry import Registry

if TYPE_CHECKING:
    from nsr_env.prepared import ScenarioData

SCHEDULES = ("cyclic", "sequential", "random", "zipf")
DEFAULT_BACKBONE = "efficientnet_lite0"  # nsr_env.backbones.DEFAULT_BACKBONE, named here without importing torch

TASK_SOURCES = Registry("source")
TASK_SOURCES.register("split_fashion_mnist", "nsr_env.sources:split_fashion_mnist_tasks")
TASK_SOURCES.register("split_cifar100", "nsr_env.sources:split_cifar100_tasks")
TASK_SOURCES.register("five_datasets", "nsr_env.sources:five_datasets_tasks")
TASK_SOURCES.register("synthetic", "nsr_env.sources:synthetic_tasks")
TASK_SOURCES.register("pairs", "nsr_env.sources:pairs_tasks")
TASK_SOURCES.register("rotated", "nsr_env.sources:rotated_tasks")
TASK_SOURCES.register("traps", "nsr_env.sources:traps_tasks")
TASK_SOURCES.register("mixed", "nsr_env.sources:mixed_tasks")
TASK_SOURCES.register("long", "nsr_env.sources:long_tasks")


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
    svd_energy: float | None = 0.99
    bank_float16: bool = False
    retention: str = "lru"
    heads: str = "task"  # "task": a head per task; "slot": a slot's tasks share its head (forgetting is possible)
    memory: str = "svd"  # the memory mechanism, a name in nsr_env.memories.MEMORIES
    protect: str = "distill"  # how a shared slot protects its earlier users, a name in nsr_env.protection.PROTECTIONS
    lora_alpha: float | None = None  # LoRA scale alpha / r; None: alpha = r
    distill_temperature: float = 2.0
    eblora_energy: float = 0.99  # protect="eblora": gradient energy a task's protected subspace holds
    share_basis: int = 32  # memory="share": directions of each shared basis
    moram_topk: int | None = None  # memory="moram": atoms active per input; None: the LoRA rank
    moram_temperature: float = 0.01  # memory="moram": softmax temperature of the gates
    moram_threshold: float = 0.2  # memory="moram": evaluation drops gates scored below this
    svd_rank: int | None = None  # a fixed compression rank instead of svd_energy (then set svd_energy=None)
    eval_size: int | None = 200  # held-out samples evaluated per decision step; None: all
    probe_per_class: int = 50  # the probe split: unlabelled images per class apart from training and held-out
    probe_size: int = 0  # probe images drawn at each task boundary to key the incoming task; 0: the exact key
    key: str = "input"  # the embedding: "input", "pooled" or "arrow" (see nsr_env.learner.KEYS)
    zipf_exponent: float = 1.0  # the "zipf" schedule's popularity law, P(rank k) ~ k^-exponent
    candidates: int = 8  # the controller recalls among the top-k entries by similarity; 0: by memory position
    probe_labels: bool = False  # also show each candidate's zero-shot accuracy on the visit's probe, labelled
    tolerance: float = 0.03  # recovered = within this of the reference accuracy
    calibration_steps: int = 120  # decision steps of the one-slot run that defines a*
    data_seed: int = 0
    online: bool = False  # needs data that is not on this machine by default
    description: str = ""

    def __post_init__(self) -> None:
        positive = ("tasks_per_cycle", "cycles", "phase_length", "train_per_class", "eval_per_class")
        for name in (*positive, "calibration_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"scenario {self.name!r}: {name}={value!r} must be an integer >= 1")
        try:
            TASK_SOURCES.check(self.source)
            self.learner_config()  # the learner's fields are checked once, there
        except ValueError as error:
            raise ValueError(f"scenario {self.name!r}: {error}") from None
        if self.schedule not in SCHEDULES:
            raise ValueError(f"scenario {self.name!r}: schedule={self.schedule!r} is unknown; one of {SCHEDULES}")
        if self.schedule == "sequential" and self.cycles != 1:
            raise ValueError(f"scenario {self.name!r}: a sequential schedule visits each task once; set cycles=1")
        if isinstance(self.data_seed, bool) or not isinstance(self.data_seed, int) or self.data_seed < 0:
            raise ValueError(f"scenario {self.name!r}: data_seed={self.data_seed!r} must be an integer >= 0")
        if not 0 < self.tolerance < 1:
            raise ValueError(f"scenario {self.name!r}: tolerance={self.tolerance} must be in (0, 1)")
        for name in ("probe_size", "probe_per_class"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"scenario {self.name!r}: {name}={value!r} must be an integer >= 0")
        if self.key not in KEYS:
            raise ValueError(f"scenario {self.name!r}: key={self.key!r} is unknown; choose one of {list(KEYS)}")
        if self.key == "arrow" and self.probe_size == 0:
            raise ValueError(
                f"scenario {self.name!r}: key='arrow' scores memory entries by the probe's inputs; set probe_size >= 1"
            )
        if self.probe_size > 0 and self.probe_per_class == 0:
            raise ValueError(f"scenario {self.name!r}: probe_size={self.probe_size} needs probe_per_class >= 1")
        if isinstance(self.candidates, bool) or not isinstance(self.candidates, int) or self.candidates < 0:
            raise ValueError(
                f"scenario {self.name!r}: candidates={self.candidates!r} must be an integer >= 0 (0: recall by "
                "memory position)"
            )
        if not isinstance(self.probe_labels, bool):
            raise ValueError(f"scenario {self.name!r}: probe_labels={self.probe_labels!r} must be True or False")
        if self.probe_labels and (self.candidates == 0 or self.probe_size == 0):
            raise ValueError(
                f"scenario {self.name!r}: probe_labels=True scores candidates on the visit's probe images; it needs "
                f"candidates >= 1 and probe_size >= 1 (got candidates={self.candidates}, probe_size={self.probe_size})"
            )
        exponent = self.zipf_exponent
        if isinstance(exponent, bool) or not isinstance(exponent, (int, float)) or not 0 < exponent < 10:
            raise ValueError(f"scenario {self.name!r}: zipf_exponent={exponent!r} must be a number in (0, 10)")

    def check_probe_split(self, smallest: int) -> None:
        """One ValueError naming ``probe_size`` when the smallest probe split (``smallest`` images) cannot
        hold a visit's probe; task sources call it as soon as they know their subsets, before extraction."""
        if self.probe_size > smallest:
            raise ValueError(
                f"scenario {self.name!r}: probe_size={self.probe_size} is larger than the smallest probe split "
                f"({smallest} images); lower probe_size or raise probe_per_class"
            )

    @property
    def num_phases(self) -> int:
        return self.tasks_per_cycle * self.cycles

    @property
    def num_steps(self) -> int:
        """Decision steps in one episode (one pass over the stream)."""
        return self.num_phases * self.phase_length

    def phase_tasks(self, rng: np.random.Generator | None = None) -> np.ndarray:
        """The task of every phase. ``random`` and ``zipf`` use ``rng``: after one pass in order,
        each later phase draws a task other than the previous one, uniformly (``random``) or by a
        Zipf law over a popularity ranking drawn once per episode (``zipf``: P(rank k) ~ k^-s, s =
        ``zipf_exponent``; a few tasks recur often, most seldom, as in the stochastic streams of
        Hemati et al. 2023, "Class-incremental learning with repetition")."""
        M = self.tasks_per_cycle
        if self.schedule in ("cyclic", "sequential"):
            return np.tile(np.arange(M), self.cycles)
        if rng is None:
            raise ValueError(f"scenario {self.name!r}: a {self.schedule} schedule needs rng= (a numpy Generator)")
        tasks = list(range(M))
        if self.schedule == "random":
            for _ in range(M * (self.cycles - 1)):
                draw = int(rng.integers(M - 1)) if M > 1 else 0
                tasks.append(draw if draw < tasks[-1] or M == 1 else draw + 1)
            return np.array(tasks)
        popularity = np.empty(M)
        popularity[rng.permutation(M)] = np.arange(1, M + 1, dtype=float) ** -self.zipf_exponent
        for _ in range(M * (self.cycles - 1)):
            weights = popularity.copy()
            if M > 1:
                weights[tasks[-1]] = 0.0
            tasks.append(int(rng.choice(M, p=weights / weights.sum())))
        return np.array(tasks)

    def learner_config(self) -> LearnerConfig:
        """The learner's configuration: every LearnerConfig field, read from the field of the same name."""
        return LearnerConfig(**{name: getattr(self, name) for name in LEARNER_FIELDS})


# --- the registry ----------------------------------------------------------------------------

SCENARIOS: dict[str, Scenario] = {}
ENV_IDS: dict[str, str] = {}
"""Gymnasium id -> scenario name, one per registered scenario."""


def default_env_id(name: str) -> str:
    """``nsr_env/NSR-<Name>-v0`` with the scenario name in CamelCase (``my_stream`` -> ``NSR-MyStream-v0``)."""
    words = re.split(r"[_\W]+", name)
    return f"nsr_env/NSR-{''.join(word.capitalize() for word in words)}-v0"


def register_scenario(scenario: Scenario, env_id: str | None = None) -> Scenario:
    """Add a named scenario and its Gymnasium id (``env_id``, default :func:`default_env_id`).

    A name or an id that is already registered raises instead of replacing the first.
    """
    env_id = env_id or default_env_id(scenario.name)
    if scenario.name in SCENARIOS:
        raise ValueError(f"scenario {scenario.name!r} is already registered; choose another name")
    if env_id in ENV_IDS:
        raise ValueError(f"environment id {env_id!r} already belongs to scenario {ENV_IDS[env_id]!r}; pass env_id=")
    if env_id in registry and registry[env_id].kwargs.get("scenario") != scenario.name:
        raise ValueError(f"Gymnasium already has an environment {env_id!r} of another origin; pass env_id=")
    SCENARIOS[scenario.name] = scenario
    ENV_IDS[env_id] = scenario.name
    if env_id not in registry:
        register(
            id=env_id,
            entry_point="nsr_env.envs.nsr:NSREnv",
            vector_entry_point="nsr_env.envs.vector:NSRVectorEnv",
            kwargs={"scenario": scenario.name},
        )
    return scenario


def env_id_of(scenario: str) -> str:
    """The Gymnasium id of a registered scenario."""
    for env_id, name in ENV_IDS.items():
        if name == scenario:
            return env_id
    raise ValueError(f"scenario name {scenario!r} is unknown; registered: {sorted(SCENARIOS)}")


FIELDS = tuple(field.name for field in dataclasses.fields(Scenario))


def make_scenario(scenario: str | Scenario, /, **overrides) -> Scenario:
    """The registered scenario named ``scenario`` (or a :class:`Scenario` itself) with some fields
    replaced, e.g. ``cycles=2``; an unknown name or field raises one ValueError naming it."""
    if isinstance(scenario, str):
        if scenario not in SCENARIOS:
            raise ValueError(f"scenario name {scenario!r} is unknown; registered: {sorted(SCENARIOS)}")
        scenario = SCENARIOS[scenario]
    unknown = sorted(set(overrides) - set(FIELDS[1:]))  # ``name`` is the registry key, not an override
    if unknown:
        raise ValueError(
            f"scenario {scenario.name!r} has no field {unknown[0]!r} to override; fields: {', '.join(FIELDS[1:])}"
        )
    return dataclasses.replace(scenario, **overrides)


register_scenario(
    Scenario(
        "default",
        "split_fashion_mnist",
        probe_size=32,
        heads="slot",
        description=(
            "Split-FashionMNIST 5x2 (offline), cyclic, 2 slots for 5 tasks, EfficientNet-Lite0 at 64 px; "
            "observed keys (32 probe images per visit), heads shared by a slot's tasks"
        ),
    ),
    env_id="nsr_env/NSR-v0",
)
register_scenario(
    Scenario(
        "idealised",
        "split_fashion_mnist",
        description=(
            "the paper's idealised setting: default with the exact key (the mean of the task's whole training "
            "set, identical on every return) and a head per task outside the memory"
        ),
    )
)
LIBRARY = dict(train_per_class=200, eval_per_class=100, probe_size=32, heads="slot")
register_scenario(
    Scenario(
        "pairs",
        "pairs",
        schedule="random",
        tasks_per_cycle=10,
        **LIBRARY,
        description="10 of the 45 Fashion-MNIST class pairs (tasks sharing a class are related), random recurrence",
    )
)
register_scenario(
    Scenario(
        "rotated",
        "rotated",
        schedule="random",
        tasks_per_cycle=20,
        cycles=3,
        bank_capacity=16,
        **LIBRARY,
        description="5 class pairs at 0, 30, 60 and 90 degrees, random recurrence: neighbouring angles are related",
    )
)
register_scenario(
    Scenario(
        "traps",
        "traps",
        tasks_per_cycle=10,
        cycles=2,
        bank_capacity=10,
        **LIBRARY,
        description="5 class pairs, then their twins (same images, labels swapped): input keys cannot tell them apart",
    )
)
register_scenario(
    Scenario(
        "mixed",
        "mixed",
        tasks_per_cycle=8,
        cycles=2,
        **LIBRARY,
        description="a heterogeneous offline stream: Fashion-MNIST, scikit-learn digits, rotated and inverted pairs",
    )
)
register_scenario(
    Scenario(
        "long",
        "long",
        schedule="zipf",
        tasks_per_cycle=240,
        cycles=5,
        phase_length=10,
        bank_capacity=64,
        train_per_class=100,
        eval_per_class=50,
        probe_per_class=25,
        probe_size=32,
        heads="slot",
        description="240 rotated class pairs, 1,200 phases of Zipf recurrence, a memory of 64 entries",
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
    ),
    env_id="nsr_env/NSR-SplitCIFAR100-v0",
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


def prepare(
    scenario: Scenario | str, *, cache: str | Path | None = None, data_root: str | Path | None = None, progress=True
) -> ScenarioData:
    """Load (or extract) the scenario's features and its reference accuracies a* (see :mod:`nsr_env.prepared`)."""
    from nsr_env.prepared import prepare as prepare_scenario  # torch: loaded when data is first needed

    return prepare_scenario(scenario, cache=cache, data_root=data_root, progress=progress)
