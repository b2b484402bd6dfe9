"""Aggregate statistics for few-seed experiments, computed with rliable (Agarwal et al. 2021).

Following "Deep RL at the edge of the statistical precipice": with a handful of seeds per
configuration, report an aggregate with a percentile-bootstrap confidence interval that
resamples runs with replacement *within* each stratum (one scenario with its overrides), so
every resample keeps the design's number of seeds per stratum; and report the interquartile
mean (IQM), robust to an outlying seed but less noisy than the median. The aggregates are
rliable's definitions (``rliable.metrics.aggregate_mean``, ``aggregate_iqm``) taken along the
seed axis; the stratified bootstrap
(``rliable.library.get_interval_estimates``, each stratum resampled on its own, so strata may
hold different numbers of seeds) and the probability of improvement are rliable's; this
module only pools strata and seeds the bootstrap.

rliable draws its resamples from numpy's global generator; every function here seeds it
from ``seed`` and restores it afterwards, so the same input and seed give the same interval.
Observations may be vectors (a regret curve per seed: a stratum of shape ``(n_seeds,
*shape)``); statistics reduce the seed axis only, and intervals are pointwise, as rliable's
curves are: each element's interval is the percentiles of its own resampled statistic (one
draw of seeds serves every element of a resample).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from numpy.typing import ArrayLike
from rliable import library
from rliable import metrics as rliable_metrics

__all__ = ["Statistic", "iqm", "mean", "probability_of_improvement", "stratified_bootstrap"]

Statistic = Callable[[np.ndarray, int], np.ndarray]
"""``statistic(values, axis)``: reduces ``axis`` of ``values`` (like ``np.mean``)."""


def mean(values: ArrayLike, axis: int = 0) -> np.ndarray:
    """Arithmetic mean along ``axis``: rliable's ``aggregate_mean`` of each element's runs."""
    return np.mean(_runs(values, axis), axis=0)


def iqm(values: ArrayLike, axis: int = 0) -> np.ndarray:
    """Interquartile mean along ``axis``: rliable's ``aggregate_iqm`` of each element's runs.

    rliable defines it as ``scipy.stats.trim_mean(values, 0.25)``; here it is taken along one
    axis and without scipy's per-call argument handling (2 ms, most of a report's time), so a
    bootstrap of many metrics or curve points costs one cheap call per resample (tests check
    it against rliable's own function and scipy's). With ``n`` values, ``n // 4`` are dropped at each
    end: for ``n < 4`` it is the plain mean, for ``n = 8`` the mean of the middle four.
    """
    runs = np.sort(_runs(values, axis), axis=0)
    cut = len(runs) // 4  # scipy's int(0.25 * n)
    return runs[cut : len(runs) - cut].mean(axis=0)


def _runs(values: ArrayLike, axis: int) -> np.ndarray:
    runs = np.asarray(values, dtype=float)
    runs = runs if axis == 0 else np.moveaxis(runs, axis, 0)
    if runs.shape[0] == 0:
        raise ValueError("an aggregate of no runs is undefined; pass at least one value")
    return runs


def _strata(strata: Sequence[ArrayLike]) -> list[np.ndarray]:
    """Each stratum as a finite float array with at least one seed, all with the same trailing shape."""
    arrays = [np.asarray(s, dtype=float) for s in strata]
    if not arrays:
        raise ValueError("stratified_bootstrap needs at least one stratum")
    for i, a in enumerate(arrays):
        if a.ndim == 0 or a.shape[0] == 0:
            raise ValueError(f"stratum {i} has no seeds; drop empty strata before bootstrapping")
        if a.shape[1:] != arrays[0].shape[1:]:
            raise ValueError(f"stratum {i} has observations of shape {a.shape[1:]}, stratum 0 {arrays[0].shape[1:]}")
        if not np.isfinite(a).all():
            raise ValueError(f"stratum {i} holds a NaN or inf; drop missing values before bootstrapping")
    return arrays


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """numpy's global generator seeded with ``seed`` (rliable resamples with it), restored afterwards."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _check(resamples: int, confidence: float) -> None:
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def stratified_bootstrap(
    strata: Sequence[ArrayLike],
    statistic: Statistic = mean,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point estimate and percentile-bootstrap confidence interval of ``statistic`` over all seeds.

    ``strata[k]`` holds the observations of stratum ``k``, one per seed (shape ``(n_k,
    *shape)``). The point estimate is ``statistic`` of all strata pooled along the seed axis.
    rliable's stratified bootstrap draws ``n_k`` seeds with replacement from every stratum
    ``k`` separately, ``resamples`` times; the interval is the ``(1 - confidence) / 2`` and
    ``(1 + confidence) / 2`` percentiles of the resampled statistic.

    ``statistic`` may return any shape (say, a mean and an IQM stacked): one bootstrap then
    serves several statistics, metrics or curve points, which is how the report stays fast.
    Returns ``(estimate, low, high)``, each of the statistic's shape (``shape`` for ``mean``
    and ``iqm``; 0-d for scalar observations).
    """
    arrays = _strata(strata)
    _check(resamples, confidence)

    shape = np.shape(statistic(np.concatenate(arrays, axis=0), 0))

    def pooled(*parts: np.ndarray) -> np.ndarray:  # arch's bootstrap takes a flat vector of parameters
        return np.asarray(statistic(np.concatenate(parts, axis=0), 0)).reshape(-1)

    with _seeded(seed):
        estimates, intervals = library.get_interval_estimates(
            {"x": tuple(arrays)}, pooled, reps=resamples, confidence_interval_size=confidence
        )
    low, high = intervals["x"]
    return tuple(np.asarray(values).reshape(shape) for values in (estimates["x"], low, high))


def probability_of_improvement(
    better: ArrayLike, worse: ArrayLike, resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """P(X > Y) of a score X of ``better``'s runs over a score Y of ``worse``'s (higher is better),
    with a percentile-bootstrap interval: rliable's ``probability_of_improvement`` and its
    independent bootstrap (each side's runs resampled on their own). Both: one score per run."""
    x, y = (np.asarray(values, dtype=float).reshape(-1, 1) for values in (better, worse))
    if len(x) == 0 or len(y) == 0 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("probability_of_improvement needs finite scores for at least one run on each side")
    _check(resamples, confidence)
    with _seeded(seed):
        estimates, intervals = library.get_interval_estimates(
            {"x": (x, y)},
            rliable_metrics.probability_of_improvement,
            reps=resamples,
            confidence_interval_size=confidence,
        )
    low, high = intervals["x"]
    return float(estimates["x"]), float(np.squeeze(low)), float(np.squeeze(high))
