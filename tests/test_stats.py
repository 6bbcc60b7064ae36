"""rlnorm.stats against hand-worked numbers, brute force and independent NumPy bootstraps."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats as scipy_stats

from rlnorm import stats


def test_iqm_is_the_mean_of_the_middle_half():
    # 8 runs: drop 2 from each end -> [2, 3, 4, 5]
    assert stats.iqm(np.arange(8.0)) == pytest.approx(3.5)
    # an outlier does not move it: sorted [1..7, 100], middle [3, 4, 5, 6]
    assert stats.iqm([1, 2, 3, 4, 100, 5, 6, 7]) == pytest.approx(4.5)
    # [runs, tasks] pools every score: 12 values 0..11, middle [3..8]
    assert stats.iqm(np.arange(12.0).reshape(4, 3)) == pytest.approx(5.5)
    # over trailing axes, per leading index
    x = np.stack([np.arange(8.0), 10 + np.arange(8.0)])
    np.testing.assert_allclose(stats.iqm(x[:, :, None], axis=(-2, -1)), [3.5, 13.5])


def test_median():
    assert stats.median([5, 1, 3]) == 3
    assert stats.median(np.arange(8.0).reshape(4, 2)) == pytest.approx(3.5)


def brute_force_poi(x, y) -> float:
    wins = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(x, y)]
    return sum(wins) / len(wins)


@pytest.mark.parametrize(
    ("x", "y", "expected"),
    [
        ([1, 2, 3], [2, 2, 2], 0.5),  # (0 + 3 * 0.5 + 3) / 9
        ([3, 4], [1, 2, 3], 5.5 / 6),  # 3 beats 1, 2, ties 3; 4 beats all
        ([0, 0], [1, 1, 1], 0.0),
        ([7], [7], 0.5),
    ],
)
def test_probability_of_improvement_by_hand(x, y, expected):
    assert stats.probability_of_improvement(x, y) == pytest.approx(expected)
    assert brute_force_poi(x, y) == pytest.approx(expected)
    assert stats.probability_of_improvement(y, x) == pytest.approx(1 - expected)


def test_probability_of_improvement_is_mann_whitney_u_over_nm():
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 6, 9).astype(float), rng.integers(0, 6, 7).astype(float)  # ties
    u = scipy_stats.mannwhitneyu(x, y).statistic
    assert stats.probability_of_improvement(x, y) == pytest.approx(u / (9 * 7))
    assert stats.probability_of_improvement(x, y) == pytest.approx(brute_force_poi(x, y))


def test_probability_of_improvement_averages_over_tasks():
    x = np.array([[1.0, 5.0], [2.0, 6.0]])
    y = np.array([[2.0, 0.0], [2.0, 0.0], [2.0, 0.0]])
    task0, task1 = brute_force_poi(x[:, 0], y[:, 0]), brute_force_poi(x[:, 1], y[:, 1])
    assert (task0, task1) == (0.25, 1.0)
    assert stats.probability_of_improvement(x, y) == pytest.approx((task0 + task1) / 2)


def test_censored_runs_tie():
    """Steps to target with unsolved runs at the budget, negated (higher = better)."""
    budget = 300_000.0
    unsolved = -np.full(8, budget)
    assert stats.probability_of_improvement(unsolved, unsolved) == 0.5
    assert stats.probability_of_improvement_ci(unsolved, unsolved) == (0.5, 0.5)
    solved = -np.array([90e3, 120e3, 130e3, 140e3, 150e3, 160e3, 170e3, 250e3])
    assert stats.probability_of_improvement(unsolved, solved) == 0.0
    assert stats.probability_of_improvement_ci(unsolved, solved) == (0.0, 0.0)
    # half unsolved against all solved: the solved half of x competes, the rest loses
    half = np.concatenate([solved[:4], unsolved[:4]])
    assert stats.probability_of_improvement(half, solved) == pytest.approx(
        brute_force_poi(half, solved)
    )


def numpy_percentile_bootstrap(x, statistic, n_resamples, rng):
    idx = rng.integers(0, len(x), size=(n_resamples, len(x)))
    values = statistic(x[idx], axis=-1)
    return np.percentile(values, [2.5, 97.5])


@pytest.mark.parametrize("statistic", [stats.iqm, stats.median])
def test_bootstrap_ci_matches_an_independent_numpy_bootstrap(statistic):
    x = np.random.default_rng(2).normal(10.0, 3.0, 16)
    lo, hi = stats.stratified_bootstrap_ci(x, statistic, n_resamples=20_000)
    ref = numpy_percentile_bootstrap(x, statistic, 20_000, np.random.default_rng(3))
    assert lo < statistic(x) < hi
    np.testing.assert_allclose([lo, hi], ref, atol=0.1 * (ref[1] - ref[0]))


def test_probability_of_improvement_ci_matches_an_independent_bootstrap():
    rng = np.random.default_rng(4)
    x, y = rng.normal(1.0, 1.0, 10), rng.normal(0.0, 1.0, 12)
    lo, hi = stats.probability_of_improvement_ci(x, y, n_resamples=5_000)
    ref_rng = np.random.default_rng(5)
    values = [
        brute_force_poi(x[ref_rng.integers(0, 10, 10)], y[ref_rng.integers(0, 12, 12)])
        for _ in range(3_000)
    ]
    ref = np.percentile(values, [2.5, 97.5])
    assert lo < stats.probability_of_improvement(x, y) < hi
    np.testing.assert_allclose([lo, hi], ref, atol=0.04)


def test_bootstrap_ci_covers_the_true_value():
    """95% intervals of the IQM of N(0, 1) samples (true IQM 0) cover 0 about 95% of the time;
    the percentile bootstrap runs a little narrow at n = 20."""
    rng = np.random.default_rng(6)
    covered = []
    for trial in range(200):
        lo, hi = stats.stratified_bootstrap_ci(rng.normal(size=20), n_resamples=2_000, seed=trial)
        covered.append(lo <= 0.0 <= hi)
    assert 0.85 <= np.mean(covered) <= 0.99, np.mean(covered)


def test_bootstrap_is_stratified_over_tasks():
    """Task 0 scores 0, task 1 scores 100: resampling within each task keeps the mean at 50
    exactly; pooling the runs would not."""
    scores = np.stack([np.zeros(6), np.full(6, 100.0)], axis=1)
    assert stats.stratified_bootstrap_ci(scores, stats.iqm) == (50.0, 50.0)


def test_bootstrap_is_reproducible_and_handles_one_run():
    x = np.random.default_rng(7).normal(size=8)
    assert stats.stratified_bootstrap_ci(x, seed=3) == stats.stratified_bootstrap_ci(x, seed=3)
    assert stats.stratified_bootstrap_ci([4.0]) == (4.0, 4.0)


def test_aggregate():
    a = stats.aggregate(np.arange(8.0))
    assert (a["iqm"], a["median"], a["mean"], a["runs"]) == (3.5, 3.5, 3.5, 8)
    assert a["iqm_ci"][0] < 3.5 < a["iqm_ci"][1]
    assert a["median_ci"][0] < 3.5 < a["median_ci"][1]


def test_rejects_bad_shapes():
    with pytest.raises(ValueError, match="runs"):
        stats.stratified_bootstrap_ci(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="same tasks"):
        stats.probability_of_improvement(np.zeros((3, 2)), np.zeros((3, 1)))
