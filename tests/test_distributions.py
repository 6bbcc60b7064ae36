"""Categorical and diagonal Gaussian: log-probs and entropies against scipy.stats, samples
against the distribution they should come from (fixed seeds, chi-square / standard errors)."""

import numpy as np
import pytest
import tensorflow as tf
from scipy import special, stats

from rlnorm.distributions import Categorical, DiagGaussian


def test_categorical_log_prob_and_entropy_match_scipy():
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 3.0, size=(50, 5)).astype(np.float32)
    actions = rng.integers(0, 5, size=50)
    p = special.softmax(logits.astype(np.float64), axis=1)
    expected_lp = stats.multinomial.logpmf(np.eye(5)[actions], n=1, p=p)
    dist = Categorical(tf.constant(logits))
    lp = dist.log_prob(tf.constant(actions, tf.int32))
    assert lp.shape == (50,) and lp.dtype == tf.float32
    np.testing.assert_allclose(lp.numpy(), expected_lp, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dist.entropy().numpy(), stats.entropy(p, axis=1), rtol=1e-5)


def test_diag_gaussian_log_prob_and_entropy_match_scipy():
    rng = np.random.default_rng(1)
    mean = rng.normal(size=(40, 3)).astype(np.float32)
    log_std = np.array([-1.0, 0.0, 0.7], np.float32)  # [d], broadcast over the batch
    actions = rng.normal(mean, 2.0).astype(np.float32)
    std = np.exp(log_std.astype(np.float64))
    dist = DiagGaussian(tf.constant(mean), tf.constant(log_std))
    expected_lp = stats.norm.logpdf(actions, mean, std).sum(axis=1)
    np.testing.assert_allclose(dist.log_prob(actions).numpy(), expected_lp, rtol=1e-5, atol=1e-5)
    # Same number from the multivariate density with a diagonal covariance.
    mvn = stats.multivariate_normal(mean[0].astype(np.float64), np.diag(std**2))
    np.testing.assert_allclose(dist.log_prob(actions).numpy()[0], mvn.logpdf(actions[0]), rtol=1e-5)
    entropy = dist.entropy().numpy()
    assert entropy.shape == (40,)
    np.testing.assert_allclose(entropy, np.full(40, mvn.entropy()), rtol=1e-6)


def test_categorical_sample_frequencies_match_probabilities():
    logits = np.log(np.array([0.05, 0.1, 0.2, 0.25, 0.4], np.float32))
    n = 20_000
    dist = Categorical(tf.constant(np.tile(logits, (n, 1))))
    samples = dist.sample(tf.random.Generator.from_seed(0)).numpy()
    counts = np.bincount(samples, minlength=5)
    result = stats.chisquare(counts, n * np.exp(logits.astype(np.float64)))
    assert result.pvalue > 1e-3, (counts, result)
    # Fixed seed, fixed draws: sampling is reproducible.
    again = dist.sample(tf.random.Generator.from_seed(0)).numpy()
    np.testing.assert_array_equal(samples, again)


def test_categorical_never_samples_a_masked_action():
    logits = np.tile(np.array([0.0, -1e9, 1.0], np.float32), (5_000, 1))
    samples = Categorical(tf.constant(logits)).sample(tf.random.Generator.from_seed(1)).numpy()
    assert not np.any(samples == 1)
    assert set(np.unique(samples)) == {0, 2}


def test_diag_gaussian_sample_moments():
    n = 20_000
    mean = np.array([1.0, -2.0, 0.5], np.float32)
    log_std = np.array([0.0, -1.5, 1.0], np.float32)
    std = np.exp(log_std.astype(np.float64))
    dist = DiagGaussian(tf.constant(np.tile(mean, (n, 1))), tf.constant(log_std))
    x = dist.sample(tf.random.Generator.from_seed(2)).numpy().astype(np.float64)
    assert x.shape == (n, 3)
    # Within 5 standard errors: SE(mean) = std / sqrt(n), SE(std) ~ std / sqrt(2n).
    assert np.all(np.abs(x.mean(0) - mean) < 5 * std / np.sqrt(n))
    assert np.all(np.abs(x.std(0) - std) < 5 * std / np.sqrt(2 * n))
    # The dimensions are independent (diagonal covariance).
    corr = np.corrcoef(x.T)[np.triu_indices(3, 1)]
    assert np.all(np.abs(corr) < 5 / np.sqrt(n))


@pytest.mark.parametrize("kind", ["categorical", "gaussian"])
def test_mode(kind):
    if kind == "categorical":
        logits = np.array([[0.1, 2.0, -1.0], [3.0, 2.9, 0.0], [-5.0, -4.0, -3.0]], np.float32)
        mode = Categorical(tf.constant(logits)).mode()
        assert mode.dtype == tf.int32
        np.testing.assert_array_equal(mode.numpy(), [1, 0, 2])
    else:
        mean = np.array([[0.3, -0.2], [1.5, 4.0]], np.float32)
        mode = DiagGaussian(tf.constant(mean), tf.constant([0.5, -0.5])).mode()
        np.testing.assert_array_equal(mode.numpy(), mean)
