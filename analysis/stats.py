"""Aggregate statistics for few-seed experiments: the interquartile mean and a stratified bootstrap.

Following Agarwal et al. (2021), "Deep RL at the edge of the statistical precipice": with a
handful of seeds per configuration, report an aggregate together with a percentile-bootstrap
confidence interval, resampling runs with replacement *within* each stratum (here: one
scenario with its overrides), so every resample keeps the design's number of seeds per
stratum; and report the interquartile mean (IQM), which is robust to an outlying seed but
less noisy than the median.

Plain numpy, like :mod:`analysis.metrics`. Observations may be vectors (e.g. a regret curve
per seed): a stratum is an array of shape ``(n_seeds, *shape)`` and every statistic reduces
the seed axis only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["Statistic", "iqm", "mean", "stratified_bootstrap"]

Statistic = Callable[[np.ndarray, int], np.ndarray]
"""``statistic(values, axis)``: reduces ``axis`` of ``values`` (like ``np.mean``)."""


def mean(values: ArrayLike, axis: int = 0) -> np.ndarray:
    """Arithmetic mean along ``axis``."""
    return np.mean(values, axis=axis)


def iqm(values: ArrayLike, axis: int = 0) -> np.ndarray:
    """Interquartile mean along ``axis``: the mean after dropping the lowest and highest quarter.

    With ``n`` values, ``n // 4`` are dropped at each end, as ``scipy.stats.trim_mean(values,
    0.25)`` does (and rliable, the reference implementation of Agarwal et al.): so for
    ``n < 4`` it is the plain mean, and for ``n = 8`` the mean of the middle four.
    """
    a = np.sort(np.asarray(values, dtype=float), axis=axis)
    n = a.shape[axis]
    if n == 0:
        raise ValueError("iqm of an empty array is undefined; pass at least one value")
    cut = n // 4
    return np.take(a, np.arange(cut, n - cut), axis=axis).mean(axis=axis)


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


def stratified_bootstrap(
    strata: Sequence[ArrayLike],
    statistic: Statistic = mean,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point estimate and percentile-bootstrap confidence interval of ``statistic`` over all seeds.

    ``strata[k]`` holds the observations of stratum ``k``, one per seed (shape
    ``(n_k, *shape)``). The point estimate is ``statistic`` of all strata pooled along the seed
    axis. Each of the ``resamples`` resamples draws ``n_k`` seeds with replacement from every
    stratum ``k`` separately and pools them; the interval is the ``(1 - confidence) / 2`` and
    ``(1 + confidence) / 2`` quantiles of the resampled statistic. The draws depend only on
    ``seed`` and the strata sizes, so a given input always gives the same interval.

    Returns ``(estimate, low, high)``, each of shape ``shape`` (0-d for scalar observations).
    """
    arrays = _strata(strata)
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    drawn = [a[rng.integers(0, len(a), size=(resamples, len(a)))] for a in arrays]
    replicates = statistic(np.concatenate(drawn, axis=1), 1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(replicates, [alpha, 1 - alpha], axis=0)
    return statistic(np.concatenate(arrays, axis=0), 0), low, high
