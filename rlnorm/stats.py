"""Aggregate statistics over seeds, as Agarwal et al. recommend ("Deep RL at the Edge of the
Statistical Precipice", NeurIPS 2021): the interquartile mean (IQM), the median, 95% stratified
bootstrap confidence intervals, and the probability of improvement P(X > Y).

Scores are `float [runs]` (one task) or `float [runs, tasks]`, higher is better (negate a
lower-is-better metric such as steps to a target). "Stratified" means each task's runs are
resampled separately, so every resample keeps every task; with one task it is the plain
bootstrap over seeds.

The bootstrap is SciPy's `scipy.stats.bootstrap` with each task's column passed as its own
sample (SciPy resamples the samples independently: a stratified bootstrap). Not `rliable`: it
is an sdist only and pulls in arch, pandas, seaborn and absl for these ~60 lines of NumPy.
The percentile method, as rliable uses: BCa breaks down on the ties censoring makes (all runs
unsolved -> a constant statistic). Fixed `seed` -> the same interval on every call.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import stats as scipy_stats

CONFIDENCE = 0.95
N_RESAMPLES = 10_000


def _as_matrix(scores) -> np.ndarray:
    """`float [runs, tasks]` from `[runs]` or `[runs, tasks]`."""
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"scores must be [runs] or [runs, tasks] with runs >= 1; got {x.shape}")
    return x


def iqm(scores, axis=None) -> np.ndarray | float:
    """Interquartile mean: the mean of the middle 50% of the scores (25% trimmed from each end,
    `scipy.stats.trim_mean`, as rliable computes it). `axis=None`: over all runs and tasks."""
    x, axis = _flatten_axes(scores, axis)
    return scipy_stats.trim_mean(x, 0.25, axis=axis)


def median(scores, axis=None) -> np.ndarray | float:
    """The median of the scores (over all runs and tasks for `axis=None`)."""
    x, axis = _flatten_axes(scores, axis)
    return np.median(x, axis=axis)


def _flatten_axes(scores, axis) -> tuple[np.ndarray, int | None]:
    """`scores` as float64 with a tuple of trailing axes merged into one (trim_mean takes one)."""
    x = np.asarray(scores, dtype=np.float64)
    if not isinstance(axis, tuple):
        return x, axis
    k = len(axis)
    if sorted(a % x.ndim for a in axis) != list(range(x.ndim - k, x.ndim)):
        raise ValueError(f"axis must name trailing axes; got {axis} for shape {x.shape}")
    return x.reshape(*x.shape[: x.ndim - k], -1), -1


def probability_of_improvement(x, y) -> float:
    """P(X > Y) + P(X = Y) / 2 for a run X of `x` and a run Y of `y`, averaged over tasks: the
    Mann-Whitney U statistic over n * m. `x`: `[n]` or `[n, tasks]`; `y`: `[m]` or `[m, tasks]`.
    0.5 means neither is better; ties count one half, so two sets of runs that are all
    censored at the same budget compare as 0.5."""
    x, y = _as_matrix(x), _as_matrix(y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same tasks; got {x.shape} and {y.shape}")
    return float(np.mean([_poi(x[:, j], y[:, j]) for j in range(x.shape[1])]))


def _poi(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) + P(X = Y) / 2 over the last axis of x `[..., n]` and y `[..., m]`."""
    diff = x[..., :, None] - y[..., None, :]
    return np.mean((diff > 0) + 0.5 * (diff == 0), axis=(-2, -1))


def stratified_bootstrap_ci(
    scores,
    statistic: Callable = iqm,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """The `confidence` percentile-bootstrap interval of `statistic(scores)`, runs resampled
    with replacement within each task. `statistic(matrix, axis)` takes `[..., runs, tasks]`
    and reduces the last two axes (as `iqm`/`median` do with `axis=(-2, -1)`)."""
    x = _as_matrix(scores)
    if x.shape[0] == 1:  # one run: nothing to resample
        value = float(statistic(x, axis=(-2, -1)))
        return value, value

    def stat(*columns, axis=-1):
        return statistic(np.stack(columns, axis=-1), axis=(-2, -1))

    return _bootstrap(tuple(x.T), stat, confidence, n_resamples, seed)


def probability_of_improvement_ci(
    x,
    y,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """The `confidence` percentile-bootstrap interval of `probability_of_improvement(x, y)`,
    the runs of x and of y resampled independently within each task."""
    x, y = _as_matrix(x), _as_matrix(y)
    tasks = x.shape[1]
    if x.shape[0] == 1 and y.shape[0] == 1:
        value = probability_of_improvement(x, y)
        return value, value

    def stat(*columns, axis=-1):
        return np.mean([_poi(columns[j], columns[tasks + j]) for j in range(tasks)], axis=0)

    return _bootstrap((*x.T, *y.T), stat, confidence, n_resamples, seed)


def _bootstrap(samples, stat, confidence, n_resamples, seed) -> tuple[float, float]:
    result = scipy_stats.bootstrap(
        samples,
        stat,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        vectorized=True,
        paired=False,
        batch=1_000,
        rng=np.random.default_rng(seed),
    )
    ci = result.confidence_interval
    return float(ci.low), float(ci.high)


def aggregate(scores, confidence: float = CONFIDENCE, seed: int = 0) -> dict:
    """IQM and median of `scores` with their stratified-bootstrap intervals, as one dict:
    {"iqm", "iqm_ci": [lo, hi], "median", "median_ci": [lo, hi], "mean", "runs"}."""
    x = _as_matrix(scores)
    return {
        "iqm": float(iqm(x)),
        "iqm_ci": list(stratified_bootstrap_ci(x, iqm, confidence, seed=seed)),
        "median": float(median(x)),
        "median_ci": list(stratified_bootstrap_ci(x, median, confidence, seed=seed)),
        "mean": float(np.mean(x)),
        "runs": int(x.shape[0]),
    }
