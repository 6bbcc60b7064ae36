"""gSDE (use_sde): log-prob and entropy against NumPy's Gaussian with variance
(features^2) @ std^2, noise = features @ exploration matrix, the resampling cadence, and the
features' gradient stopped (SB3's learn_features=False)."""

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from rlnorm.agent import A2CAgent
from rlnorm.config import Config
from rlnorm.distributions import StateDependentGaussian

OBS = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
ACT = gym.spaces.Box(-2.0, 2.0, (2,), np.float32)


@pytest.mark.parametrize("full_std", [True, False])
def test_log_prob_and_entropy_match_numpy(full_std):
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(20, 2)).astype(np.float32)
    latent = rng.normal(size=(20, 5)).astype(np.float32)
    log_std = rng.normal(-0.5, 0.3, size=(5, 2 if full_std else 1)).astype(np.float32)
    actions = rng.normal(mean, 0.5).astype(np.float32)
    std_w = np.broadcast_to(np.exp(log_std.astype(np.float64)), (5, 2))
    scale = np.sqrt(latent.astype(np.float64) ** 2 @ std_w**2 + 1e-6)
    dist = StateDependentGaussian(tf.constant(mean), tf.constant(latent), log_std, full_std)
    want = stats.norm.logpdf(actions, mean, scale).sum(axis=1)
    np.testing.assert_allclose(dist.log_prob(actions).numpy(), want, rtol=1e-5, atol=1e-5)
    want_h = stats.norm.entropy(mean, scale).sum(axis=1)
    np.testing.assert_allclose(dist.entropy().numpy(), want_h, rtol=1e-5, atol=1e-5)


def test_noise_is_features_times_each_envs_matrix():
    rng = np.random.default_rng(1)
    latent = rng.normal(size=(4, 5)).astype(np.float32)
    mats = rng.normal(size=(4, 5, 2)).astype(np.float32)
    mat = rng.normal(size=(5, 2)).astype(np.float32)
    mean = np.zeros((4, 2), np.float32)
    dist = StateDependentGaussian(mean, latent, np.zeros((5, 2), np.float32), True, mats, mat)
    want = np.einsum("bl,bld->bd", latent, mats)
    np.testing.assert_allclose(dist.sample().numpy(), want, rtol=1e-5, atol=1e-6)
    # Another batch size (here 3 rows, with an unknown static size) uses the single matrix.
    fn = tf.function(
        lambda x: StateDependentGaussian(
            tf.zeros([tf.shape(x)[0], 2]), x, np.zeros((5, 2), np.float32), True, mats, mat
        ).sample(),
        input_signature=[tf.TensorSpec([None, 5], tf.float32)],
    )
    np.testing.assert_allclose(fn(latent[:3]).numpy(), latent[:3] @ mat, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fn(latent).numpy(), want, rtol=1e-5, atol=1e-6)


def agent(**changes):
    config = Config(hidden_sizes=(6, 6), n_envs=3, n_steps=5, use_sde=True, diagnostics=False)
    return A2CAgent(config.replace(**changes), OBS, ACT)


@pytest.mark.parametrize(("freq", "new_at"), [(-1, [0, 5, 10]), (2, [0, 2, 4, 5, 7, 9, 10])])
def test_exploration_matrix_is_resampled_on_sb3s_cadence(freq, new_at):
    """SB3's collect_rollouts: at each rollout's start, and where step % freq == 0 in it."""
    a = agent(sde_sample_freq=freq)
    obs = np.random.default_rng(2).normal(size=(3, 3)).astype(np.float32)
    seen, changed = a.policy.exploration_matrices.numpy(), []
    for t in range(12):
        a.act(obs)
        now = a.policy.exploration_matrices.numpy()
        if not np.array_equal(now, seen):
            changed.append(t)
        seen = now
    assert changed == new_at


def test_actions_and_matrices_follow_the_features_and_std():
    a = agent(log_std_init=-1.0, full_std=False)
    assert a.policy.log_std.shape == (6, 1)
    obs = np.random.default_rng(3).normal(size=(3, 3)).astype(np.float32)
    action, log_prob, _ = a.act(obs)
    latent = a.policy.features(obs).numpy()
    mean = a.policy(obs).numpy()
    mats = a.policy.exploration_matrices.numpy()
    np.testing.assert_allclose(
        action.numpy(), mean + np.einsum("bl,bld->bd", latent, mats), rtol=1e-5, atol=1e-6
    )
    # Entries ~ N(0, exp(-1)^2): 3 * 6 * 2 draws, loosely (a chi-square bound at 1e-6).
    draws = mats.ravel() / np.exp(-1.0)
    assert stats.chi2.sf(np.sum(draws**2), draws.size) > 1e-6
    assert stats.chi2.cdf(np.sum(draws**2), draws.size) > 1e-6
    scale = np.sqrt(latent.astype(np.float64) ** 2 @ np.full((6, 2), np.exp(-2.0)) + 1e-6)
    want = stats.norm.logpdf(action.numpy(), mean, scale).sum(axis=1)
    np.testing.assert_allclose(log_prob.numpy(), want, rtol=1e-4, atol=1e-4)


def test_no_gradient_through_the_features_of_the_noise():
    a = agent(compile="eager")
    obs = np.random.default_rng(4).normal(size=(3, 3)).astype(np.float32)
    hidden = [w for d in a.policy.dense_layers for w in d.trainable_weights]
    with tf.GradientTape() as tape:
        entropy = tf.reduce_sum(a.policy.distribution(obs).entropy())
    grads = tape.gradient(entropy, hidden + [a.policy.log_std])
    assert all(g is None for g in grads[:-1])  # the entropy reaches log_std only
    assert grads[-1] is not None


@pytest.mark.parametrize("policy_norm", ["none", "batch"])
def test_diagnostics_read_gsde_per_row_std(tmp_path, policy_norm):
    """The diagnostics' entropy is the mean over rows of gSDE's per-state Gaussian entropy
    (scipy on the stds computed from the features), and the BatchNorm train/infer KL works
    with state-dependent stds."""
    from rlnorm.diagnostics import ScaleDiagnostics

    a = agent(policy_norm=policy_norm)
    rng = np.random.default_rng(3)
    n = 16
    obs = rng.normal(size=(n, 3)).astype(np.float32)
    batch = (
        obs,
        rng.normal(size=(n, 2)).astype(np.float32),
        rng.normal(size=n).astype(np.float32),
        rng.normal(size=n).astype(np.float32),
        np.ones(n, np.float32),
    )
    dist = a.policy.distribution(obs, training=True)
    want = stats.norm.entropy(dist.mean.numpy(), dist.std.numpy()).sum(axis=1).mean()
    writer = tf.summary.create_file_writer(str(tmp_path))
    diagnostics = ScaleDiagnostics(a, writer, a.config)
    diagnostics.before_update(10, *batch)
    diagnostics.after_update(10, {})
    got = diagnostics.last
    np.testing.assert_allclose(got["outputs/policy_entropy"], want, rtol=1e-4)
    if policy_norm == "batch":
        assert np.isfinite(got["batchnorm/policy_kl_train_infer"])
