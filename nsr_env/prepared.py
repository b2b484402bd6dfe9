"""A scenario made ready to run: its tasks' tensors and their reference accuracies a*.

:func:`prepare` loads (or extracts) the features through the scenario's task source and
calibrates a* once per scenario, caching it on disk beside the features.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nsr_env.atomic import atomic_write, exclusive
from nsr_env.learner import FRESH, ContinualLearner, TaskData
from nsr_env.paths import cache_dir
from nsr_env.scenarios import FIELDS, TASK_SOURCES, Scenario, make_scenario

CALIBRATION_FORMAT = 3
CALIBRATION_EXEMPT = frozenset(
    {"name", "description", "online", "cycles", "schedule", "zipf_exponent", "phase_length", "tolerance", "slots",
     "bank_capacity", "retention", "probe_size", "key", "candidates", "probe_labels"}
)  # fmt: skip
"""Scenario fields that cannot change a*: they shape the stream, how recovery is judged, how a
controller recognises a task and what it is shown, or the memory's capacity, never one task
trained alone in one fresh slot (calibration uses one slot and never writes the memory). Every other field, present or
future, is part of the cache key: deliberately conservative (the memory mechanism, for one, stays
in it, since a mechanism may one day shape training)."""


@dataclass(frozen=True, eq=False)
class ScenarioData:
    """A scenario with its tasks' tensors and reference accuracies, ready to run."""

    scenario: Scenario
    tasks: list[TaskData]
    pool_kind: str
    reference: np.ndarray  # a* per task
    digest: str  # data_digest(tasks): keys what is cached from a stream of these tensors

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
        curve = [learner.decision_step().accuracy for _ in range(scenario.calibration_steps)]
        reference.append(float(np.mean(curve[-10:])))
    return np.array(reference)


def calibration_key(scenario: Scenario) -> str:
    """A digest of every scenario field that can change a* (all but :data:`CALIBRATION_EXEMPT`)."""
    fields = {name: getattr(scenario, name) for name in FIELDS if name not in CALIBRATION_EXEMPT}
    return hashlib.sha256(json.dumps([CALIBRATION_FORMAT, fields], sort_keys=True).encode()).hexdigest()


def _hashed(digest, tasks: list[TaskData], probes: bool):
    """``digest`` updated with the tasks' training and held-out tensors (and probe inputs if ``probes``)."""
    for task in tasks:
        tensors = (task.train_inputs, task.train_labels, task.eval_inputs, task.eval_labels)
        for tensor in (*tensors, task.probe_inputs) if probes else tensors:
            digest.update(tensor.numpy().tobytes())
    return digest


def data_digest(tasks: list[TaskData]) -> str:
    """SHA-256 of every tensor the tasks are trained, evaluated and probed on: what a cache computed
    from a whole stream of them (the similarity rule's threshold) depends on besides the fields."""
    return _hashed(hashlib.sha256(), tasks, probes=True).hexdigest()


def _calibration_path(scenario: Scenario, tasks: list[TaskData], cache) -> Path:
    digest = _hashed(hashlib.sha256(calibration_key(scenario).encode()), tasks, probes=False)
    return cache_dir(cache) / "calibration" / f"{scenario.source}-{digest.hexdigest()[:20]}.json"


def reference_accuracies(scenario: Scenario, tasks: list[TaskData], pool_kind: str, cache=None) -> np.ndarray:
    """a* per task, from the on-disk cache when this exact calibration was run before."""
    path = _calibration_path(scenario, tasks, cache)

    def stored() -> np.ndarray | None:
        try:
            reference = json.loads(path.read_text())["reference"]
            return np.array(reference, dtype=float) if len(reference) == len(tasks) else None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    if (reference := stored()) is not None:
        return reference
    with exclusive(path):  # another process may be calibrating the same scenario: wait for it, then read
        if (reference := stored()) is not None:
            return reference
        reference = calibrate(scenario, tasks, pool_kind)
        record = {"scenario": scenario.name, "tasks": [t.name for t in tasks], "reference": reference.tolist()}
        text = json.dumps(record)
        atomic_write(path, lambda temporary: temporary.write_text(text))
    return reference


def prepare(
    scenario: Scenario | str, *, cache: str | Path | None = None, data_root: str | Path | None = None, progress=True
) -> ScenarioData:
    """Load (or extract) the scenario's features and its reference accuracies."""
    if isinstance(scenario, str):
        scenario = make_scenario(scenario)
    tasks, pool_kind = TASK_SOURCES.get(scenario.source)(scenario, cache, data_root, progress)
    scenario.check_probe_split(min(len(task.probe_inputs) for task in tasks))  # a source that did not check early
    limit = min(tasks[0].train_inputs.shape[2], tasks[0].train_base.shape[2])
    if scenario.rank > limit:
        raise ValueError(
            f"scenario {scenario.name!r}: rank={scenario.rank} is larger than the adapted layer allows ({limit})"
        )
    reference = reference_accuracies(scenario, tasks, pool_kind, cache)
    return ScenarioData(scenario, tasks, pool_kind, reference, data_digest(tasks))
