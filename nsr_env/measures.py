"""One definition of each per-step measure: regret, recovery (and its censoring), retrieval precision.

The environment computes them online, the sweep and the PPO logger from a run's steps, and
:mod:`analysis.metrics` wraps them with argument checks; all call these functions, so the
numbers cannot drift apart. Plain numpy: the report can use them without torch.

Recovery of a visit: the number of decision steps until the task's accuracy is within
``tolerance`` of the visit's target (0 = at once, before any training). The target is
min(a*, the task's best earlier accuracy) for a returning task and a* on a first visit. A
visit that never gets there within its ``L`` steps is censored and counted as ``L + 1``,
the first step not observed: a lower bound on its true recovery time.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

NOT_RECOVERED = -1  # what the environment reports while a visit has not recovered yet


def step_regret(accuracy: ArrayLike, reference: ArrayLike) -> np.ndarray:
    """Regret of a decision step: ``max(0, reference - accuracy)``; the environment's reward is minus it."""
    return np.maximum(0.0, np.asarray(reference, dtype=float) - np.asarray(accuracy, dtype=float))


def is_recovered(accuracy: ArrayLike, target: ArrayLike, tolerance: float) -> np.ndarray:
    """Whether an accuracy is back within ``tolerance`` of its visit's target (inclusive)."""
    return np.asarray(accuracy) >= np.asarray(target) - tolerance


def visit_target(reference: float, best_earlier: float | None) -> float:
    """What a visit must get back to: a*, or the task's best earlier accuracy when that is lower."""
    return reference if best_earlier is None else min(reference, best_earlier)


def censored_recovery(recovery: ArrayLike, phase_length: int) -> np.ndarray:
    """Recovery steps with visits that never recovered (``NOT_RECOVERED``) counted as ``phase_length + 1``."""
    recovery = np.asarray(recovery, dtype=np.int64)
    return np.where(recovery < 0, phase_length + 1, recovery)


def returning(phase_tasks: ArrayLike) -> np.ndarray:
    """Per phase, whether its task was trained in an earlier phase (a returning visit)."""
    tasks = np.asarray(phase_tasks)
    seen: set = set()
    flags = np.zeros(len(tasks), dtype=bool)
    for phase, task in enumerate(tasks.tolist()):
        flags[phase] = task in seen
        seen.add(task)
    return flags


def returning_recovery(phase_tasks: ArrayLike, recovery: ArrayLike, phase_length: int) -> np.ndarray:
    """Censored recovery steps of the returning visits, given each phase's task and final recovery count."""
    return censored_recovery(recovery, phase_length)[returning(phase_tasks)]


def retrieval_precision(recalled_task: ArrayLike, current_task: ArrayLike) -> float:
    """Fraction of recalls whose memory entry belongs to the task being trained; NaN without recalls.

    ``recalled_task`` is -1 where nothing was recalled (fresh or keep). Hidden labels: for analysis only.
    """
    recalled, current = np.asarray(recalled_task), np.asarray(current_task)
    recalls = recalled >= 0
    return float((recalled[recalls] == current[recalls]).mean()) if recalls.any() else float("nan")
