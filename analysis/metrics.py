"""Continual-learning metrics: accuracy-matrix summaries, recovery steps, regret, retrieval precision.

Plain numpy. Regret, recovery and retrieval precision are defined once, in
:mod:`nsr_env.measures` (which the environment, the sweep and the PPO logger call too);
the functions here check their arguments and call those definitions. Nothing here needs
torch, so a results table can be scored without it.

Accuracy matrix. ``R`` has shape ``(n_phases, n_tasks)``; ``R[i, j]`` is the accuracy on
task ``j`` measured at the end of training phase ``i``. A stream may revisit tasks (cyclic
M x T: phase ``i`` trains task ``i % M``), so every matrix function takes ``phase_tasks``,
the task trained in each phase. The default ``arange(n_phases)`` is the classic GEM setting
(each task once, in order) and needs a square ``R``. With ``f_j`` the first and ``l_j`` the
last phase that trains task ``j``, and ``last = n_phases - 1``:

- ACC        = mean over trained tasks of ``R[last, j]``
- BWT        = mean over trained ``j != phase_tasks[last]`` of ``R[last, j] - R[l_j, j]``
- FWT        = mean over trained ``j != phase_tasks[0]`` of ``R[f_j - 1, j] - baseline[j]``
- forgetting = mean over trained ``j != phase_tasks[last]`` of
  ``max(R[f_j : last, j]) - R[last, j]``

In the square case these are exactly the GEM formulas (Lopez-Paz and Ranzato 2017) and
Chaudhry et al. (2018)'s average forgetting, except that forgetting's maximum starts at the
phase that first trains ``j`` (accuracy before any training on a task is not knowledge that
could be forgotten). Tasks that no phase trains are left out of every mean.

Accuracies are fractions in [0, 1] throughout; nothing checks the range, so percentages
work too as long as references and tolerances use the same unit.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from nsr_env import measures

__all__ = [
    "average_accuracy",
    "backward_transfer",
    "cumulative_regret",
    "forgetting",
    "forward_transfer",
    "mean_recovery_steps",
    "recovery_steps",
    "retrieval_precision",
    "step_regret",
]


# --- input checks -----------------------------------------------------------------------


def _floats(x: ArrayLike, name: str, fix: str = "pass finite values") -> np.ndarray:
    """``x`` as a float array whose every entry is finite; ``fix`` says what to do if not."""
    try:
        a = np.asarray(x, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numeric; pass an array of numbers") from None
    if not np.isfinite(a).all():
        where = tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])
        at = f" at index {where}" if where else ""
        raise ValueError(f"{name} has a NaN or inf{at}; {fix}")
    return a


def _ints(x: ArrayLike, name: str) -> np.ndarray:
    """``x`` as a 1D int64 array; floats are accepted when they are whole numbers."""
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1D (one entry per step or phase), got shape {a.shape}")
    if a.dtype.kind in "iu":
        return a.astype(np.int64)
    if a.dtype.kind == "f" and np.isfinite(a).all() and (a == np.round(a)).all():
        return a.astype(np.int64)
    raise ValueError(f"{name} must hold integer task ids, got dtype {a.dtype}; pass ints")


def _per_item(x: ArrayLike, name: str, n: int, item: str) -> np.ndarray:
    """A finite scalar broadcast to ``(n,)``, or a finite 1D array of length ``n``."""
    a = _floats(x, name)
    if a.ndim == 0:
        return np.full(n, float(a))
    if a.shape != (n,):
        raise ValueError(f"{name} must be a scalar or one value per {item} ({n}), got shape {a.shape}")
    return a


def _matrix(R: ArrayLike, phase_tasks: ArrayLike | None) -> tuple[np.ndarray, np.ndarray]:
    """Check the accuracy matrix and the task of each phase."""
    acc = _floats(R, "R", "evaluate every task after every phase")
    if acc.ndim != 2 or 0 in acc.shape:
        raise ValueError(f"R must be a non-empty 2D array (n_phases, n_tasks), got shape {acc.shape}")
    n_phases, n_tasks = acc.shape
    if phase_tasks is None:
        if n_phases != n_tasks:
            raise ValueError(
                f"R is {n_phases}x{n_tasks}, not square, so the default phase_tasks=arange({n_phases}) "
                "does not fit; pass phase_tasks (the task trained in each phase)"
            )
        return acc, np.arange(n_phases)
    tasks = _ints(phase_tasks, "phase_tasks")
    if tasks.shape != (n_phases,):
        raise ValueError(f"phase_tasks has {tasks.size} entries but R has {n_phases} phases (rows); give one per phase")
    if tasks.min() < 0 or tasks.max() >= n_tasks:
        raise ValueError(f"phase_tasks must be task ids in [0, {n_tasks}) (the columns of R), got {tasks.tolist()}")
    return acc, tasks


def _first_last(tasks: np.ndarray) -> tuple[dict[int, int], dict[int, int]]:
    """First and last phase that trains each task, keyed by task id."""
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for phase, task in enumerate(tasks.tolist()):
        first.setdefault(task, phase)
        last[task] = phase
    return first, last


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


# --- accuracy matrix --------------------------------------------------------------------


def average_accuracy(R: ArrayLike, phase_tasks: ArrayLike | None = None) -> float:
    """ACC: mean final accuracy over the tasks trained at least once. Higher is better.

    Untrained tasks (columns no phase trains) are left out: their accuracy says nothing
    about what the system learned or kept.
    """
    acc, tasks = _matrix(R, phase_tasks)
    return float(acc[-1, np.unique(tasks)].mean())


def backward_transfer(R: ArrayLike, phase_tasks: ArrayLike | None = None) -> float:
    """BWT: how much later training changed each task since its last training phase.

    Mean over trained tasks ``j`` other than the last phase's task of
    ``R[last, j] - R[l_j, j]``, ``l_j`` the last phase that trained ``j`` (square case:
    ``l_j = j``, the GEM formula). Negative = forgetting, positive = later tasks helped.
    NaN when no task qualifies (a single phase, or only one task ever trained).
    """
    acc, tasks = _matrix(R, phase_tasks)
    end = acc.shape[0] - 1
    _, last = _first_last(tasks)
    return _mean([acc[end, j] - acc[lj, j] for j, lj in last.items() if j != tasks[end]])


def forward_transfer(R: ArrayLike, baseline: ArrayLike, phase_tasks: ArrayLike | None = None) -> float:
    """FWT: how much earlier training helps a task before it is first trained.

    Mean over trained tasks ``j`` other than the first phase's task of
    ``R[f_j - 1, j] - baseline[j]``, ``f_j`` the first phase that trains ``j``;
    ``baseline[j]`` is the untrained model's accuracy on ``j`` (one value per column of
    ``R``). Positive = transfer helped. NaN when only one task is ever trained.
    """
    acc, tasks = _matrix(R, phase_tasks)
    base = _floats(baseline, "baseline")
    if base.shape != (acc.shape[1],):
        raise ValueError(f"baseline must give one accuracy per task ({acc.shape[1]} columns of R), got {base.shape}")
    first, _ = _first_last(tasks)
    return _mean([acc[f - 1, j] - base[j] for j, f in first.items() if f > 0])


def forgetting(R: ArrayLike, phase_tasks: ArrayLike | None = None) -> float:
    """Average forgetting (Chaudhry et al. 2018): best accuracy ever held minus final accuracy.

    Mean over trained tasks ``j`` other than the last phase's task of
    ``max(R[f_j:last, j]) - R[last, j]``: the maximum runs over the phases before the last,
    from the first that trains ``j``. Positive = forgot; it can be negative when a task
    ends above every earlier value. Always ``>= -backward_transfer`` (equal when a task's
    best value is right after its last training). NaN when no task qualifies.
    """
    acc, tasks = _matrix(R, phase_tasks)
    end = acc.shape[0] - 1
    first, _ = _first_last(tasks)
    return _mean([acc[f:end, j].max() - acc[end, j] for j, f in first.items() if j != tasks[end]])


# --- recovery ---------------------------------------------------------------------------


def recovery_steps(curves: ArrayLike, reference: ArrayLike, tolerance: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """Decision steps each returning visit needs to get back within ``tolerance`` of ``reference``.

    ``curves`` is ``(visits, L + 1)``, or 1D for a single visit: ``curves[v, 0]`` is the
    accuracy right after the slot was set up for visit ``v`` (before any training),
    ``curves[v, k]`` after ``k`` decision steps. ``reference`` is a scalar or one value
    per visit (typically the task's best earlier accuracy). The step count is the first
    ``k`` with ``curves[v, k] >= reference[v] - tolerance`` (inclusive), so 0 = recovered
    at once. A visit that never gets there is censored: its count is ``L + 1``, the first
    step not observed and so the tightest lower bound on its true recovery time.

    Returns ``(steps, censored)``: int64 and bool arrays of shape ``(visits,)``.
    """
    c = _floats(curves, "curves")
    if c.ndim == 1:
        c = c[None, :]
    if c.ndim != 2 or c.shape[1] == 0:
        raise ValueError(f"curves must be (visits, L + 1), or 1D for one visit, with L >= 0; got shape {c.shape}")
    ref = _per_item(reference, "reference", c.shape[0], "visit")
    tol = _floats(tolerance, "tolerance")
    if tol.ndim != 0 or tol < 0:
        raise ValueError(f"tolerance must be a scalar >= 0, got {tolerance!r}")
    reached = measures.is_recovered(c, ref[:, None], float(tol))
    recovered = reached.any(axis=1)
    first = np.where(recovered, reached.argmax(axis=1), measures.NOT_RECOVERED)
    steps = measures.censored_recovery(first, c.shape[1] - 1)
    return steps, ~recovered


def mean_recovery_steps(steps: ArrayLike, censored: ArrayLike) -> float:
    """Mean recovery steps, censored visits counted at their lower bound (``L + 1``).

    With any censored visit the result is therefore a lower bound on the true mean; report
    the censored fraction beside it. NaN when there are no visits.
    """
    s = _floats(steps, "steps")
    cens = np.asarray(censored)
    if s.ndim != 1 or cens.ndim != 1:
        raise ValueError(f"steps and censored must be 1D (one entry per visit), got shapes {s.shape} and {cens.shape}")
    if s.size != cens.size:
        raise ValueError(f"steps has {s.size} visits but censored has {cens.size}; pass both from recovery_steps")
    if cens.size and not np.isin(cens, (0, 1)).all():
        raise ValueError("censored must be booleans (True = never recovered); pass the flags from recovery_steps")
    if (s < 0).any():
        raise ValueError("steps must be >= 0; pass the counts from recovery_steps")
    if (s[cens.astype(bool)] < 1).any():
        raise ValueError("a censored visit has steps 0, but censored counts are L + 1 >= 1; check the argument order")
    return float(s.mean()) if s.size else float("nan")


# --- regret -----------------------------------------------------------------------------


def step_regret(accuracy: ArrayLike, reference: ArrayLike) -> np.ndarray:
    """Regret of each decision step: ``max(0, reference - accuracy)``, never negative.

    ``accuracy`` is 1D, one value per step; ``reference`` (the task's converged accuracy
    a*) is a scalar or one value per step. The env's reward is minus this.
    """
    acc = _floats(accuracy, "accuracy")
    if acc.ndim != 1:
        raise ValueError(f"accuracy must be 1D (one value per decision step), got shape {acc.shape}")
    ref = _per_item(reference, "reference", acc.size, "decision step")
    return measures.step_regret(acc, ref)


def cumulative_regret(accuracy: ArrayLike, reference: ArrayLike) -> np.ndarray:
    """Running sum of :func:`step_regret`: non-decreasing, one value per decision step."""
    return np.cumsum(step_regret(accuracy, reference))


# --- retrieval --------------------------------------------------------------------------


def retrieval_precision(recalled_task: ArrayLike, current_task: ArrayLike) -> float:
    """Fraction of recalls whose bank entry belongs to the current task (hidden labels).

    ``recalled_task[t]`` is the hidden task of the entry recalled at step ``t``, or -1 when
    nothing was recalled (fresh start or keep); ``current_task[t]`` is the task being
    trained. Higher is better; NaN when nothing was ever recalled. For analysis only: a
    controller never sees task ids.
    """
    rec = _ints(recalled_task, "recalled_task")
    cur = _ints(current_task, "current_task")
    if rec.size != cur.size:
        raise ValueError(f"recalled_task has {rec.size} steps but current_task has {cur.size}; give one entry per step")
    if (rec < -1).any():
        raise ValueError("recalled_task must be a task id >= 0, or -1 for no recall")
    if (cur < 0).any():
        raise ValueError("current_task must be task ids >= 0")
    return measures.retrieval_precision(rec, cur)
