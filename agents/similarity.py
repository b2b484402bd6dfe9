"""The paper's rule: at a task boundary, recall the most similar memory entry if it is similar enough."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from typing import TYPE_CHECKING

import numpy as np

from agents.base import Agent, action, register_agent
from agents.oracle import OracleAgent
from nsr_env.atomic import atomic_write, exclusive
from nsr_env.paths import cache_dir
from nsr_env.scenarios import Scenario

if TYPE_CHECKING:
    from nsr_env.prepared import ScenarioData

THRESHOLD_FORMAT = 3  # bump when the calibration rule changes: cached thresholds are then recomputed
EXACT_KEY_THRESHOLD = 0.99
CALIBRATION_SEED_OFFSET = 1  # the threshold is chosen on the scenario's stream with data_seed + this
CALIBRATION_CYCLES = 2
INTERFACE_FIELDS = ("name", "description", "candidates", "probe_labels")
"""Fields that cannot change a threshold: names, and how the observation presents what the rule reads."""
CALIBRATION_EPISODES = 3  # oracle episodes (seeds 0, 1, 2) whose boundaries the threshold is chosen on


@register_agent
class SimilarityAgent(Agent):
    """Recall the entry most similar to the incoming task if the similarity reaches ``threshold``,
    else start fresh; the slot is the least recently used.

    ``threshold=None`` (the default) follows a fixed rule, never tuned on the stream it is
    tested on. With exact keys (``probe_size=0``, the paper's setting) it is 0.99: a task's
    own entry has similarity 1 there, other tasks' at most 0.96 on Split-FashionMNIST. With
    observed keys it is :func:`calibrated_threshold`: chosen on the same tasks with another
    ``data_seed`` (another draw of the same classes' images).
    """

    name = "similarity"

    def __init__(self, env, seed: int | None = None, threshold: float | None = None) -> None:
        super().__init__(env, seed)
        if threshold is not None and not -1 <= threshold <= 1:
            raise ValueError(f"threshold={threshold} must be a similarity in [-1, 1], or None for the fixed rule")
        scenario = self.env.scenario
        if threshold is None and scenario.probe_size == 0:
            threshold = EXACT_KEY_THRESHOLD
        elif threshold is None:
            cache, root = (None if path is None else str(path) for path in (self.env.cache, self.env.data_root))
            threshold = calibrated_threshold(scenario, cache, root)
        self.threshold = threshold

    def place(self, observation: np.ndarray, info: dict) -> np.ndarray:
        best, similarity = self.most_similar(observation)
        slot = self.least_recently_used_slot(observation)
        return action(slot, best) if best is not None and similarity >= self.threshold else action(slot, "fresh")


def best_threshold(top: np.ndarray, correct: np.ndarray) -> float:
    """The threshold that maximises correct minus wrong recalls, for a rule that recalls the top entry
    when its similarity ``top`` reaches the threshold (``correct``: that entry is the task's own).

    Candidates are midpoints between consecutive observed values (and just above the largest,
    which means never recall); ties go to the highest threshold, the more cautious rule.
    """
    values = np.unique(top)
    candidates = np.append((values[:-1] + values[1:]) / 2, np.nextafter(values[-1], np.inf)) if len(values) else []
    if len(candidates) == 0:
        return EXACT_KEY_THRESHOLD
    gains = [int(np.sum(np.where(correct, 1, -1)[top >= t])) for t in candidates]
    best = max(gains)
    return float(max(t for t, gain in zip(candidates, gains, strict=True) if gain == best))


def calibration_scenario(scenario: Scenario) -> Scenario:
    """The stream a threshold for ``scenario`` is chosen on: the same tasks, memory and keys with
    ``data_seed`` + 1 (another draw of the same classes' images), long enough to hold returns. A cyclic or
    sequential stream becomes :data:`CALIBRATION_CYCLES` cycles of the tasks; a random or Zipf
    stream keeps its schedule with at least that many cycles' worth of phases. So one threshold
    serves every number of cycles of a cyclic stream, and a stream without returns of its own
    (``cycles=1``) still gets a threshold chosen on returns, not on first visits alone."""
    if scenario.schedule in ("cyclic", "sequential"):
        schedule, cycles = "cyclic", CALIBRATION_CYCLES
    else:
        schedule, cycles = scenario.schedule, max(scenario.cycles, CALIBRATION_CYCLES)
    return dataclasses.replace(
        scenario, data_seed=scenario.data_seed + CALIBRATION_SEED_OFFSET, schedule=schedule, cycles=cycles
    )


@functools.lru_cache(maxsize=32)
def calibrated_threshold(scenario: Scenario, cache: str | None = None, data_root: str | None = None) -> float:
    """The similarity rule's threshold for ``scenario``, chosen on :func:`calibration_scenario` (another
    ``data_seed``), so that it is never tuned on the stream it is tested on.

    An oracle runs :data:`CALIBRATION_EPISODES` episodes there; at every boundary where the memory
    holds entries, the top entry's similarity (as the controller sees it) and whether it is the
    task's own are recorded; :func:`best_threshold` picks the threshold. It is cached on disk under
    ``<cache>/calibration/``, keyed by every field of the calibration stream but
    :data:`INTERFACE_FIELDS` and by a digest of its tensors (so other data, or another backbone's
    weights, get a threshold of their own).
    """
    from nsr_env.scenarios import prepare  # torch: needed only when a threshold is looked up

    calibration = calibration_scenario(scenario)
    data = prepare(calibration, cache=cache, data_root=data_root, progress=False)
    fields = {k: v for k, v in dataclasses.asdict(calibration).items() if k not in INTERFACE_FIELDS}
    digest = hashlib.sha256(json.dumps([THRESHOLD_FORMAT, fields, data.digest], sort_keys=True, default=str).encode())
    path = cache_dir(cache) / "calibration" / f"threshold-{digest.hexdigest()[:20]}.json"

    def stored() -> float | None:
        try:
            return float(json.loads(path.read_text())["threshold"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    if (threshold := stored()) is not None:
        return threshold
    with exclusive(path):  # another process may be calibrating the same stream: wait for it, then read
        if (threshold := stored()) is not None:
            return threshold
        record = {"scenario": scenario.name, **_calibrate_threshold(data)}
        threshold = record["threshold"]
        atomic_write(path, lambda temporary: temporary.write_text(json.dumps(record)))
    return threshold


def _calibrate_threshold(data: ScenarioData) -> dict:
    """:func:`best_threshold` over the boundaries of :data:`CALIBRATION_EPISODES` oracle episodes of the
    calibration stream ``data``, with how many boundaries it saw and at how many the top entry was the
    task's own."""
    from nsr_env.envs.nsr import NSREnv  # torch: needed only when a threshold is calibrated

    env = NSREnv(data.scenario, data=data)
    oracle = OracleAgent(env)
    top, correct = [], []
    for seed in range(CALIBRATION_EPISODES):
        observation, info = env.reset(seed=seed)
        done = False
        while not done:
            if env.at_boundary and len(env.learner.memory) and env.learner.memory.recallable:
                best = int(np.argmax(env.visit_similarity.numpy()))
                top.append(float(env.visit_similarity[best]))
                correct.append(env.learner.memory.task_at(best) == env.current_task)
            observation, _, done, _, info = env.step(oracle.act(observation, info))
    env.close()
    threshold = best_threshold(np.array(top), np.array(correct, dtype=bool))
    return {"threshold": threshold, "recalls": len(top), "correct": int(sum(correct))}
