"""The shared observation normalizer and the reward scaler, checked against NumPy.

Every expected number is computed here, from the raw data (np.mean / np.var over the
concatenated batches, a float32 and a naive E[x^2] - E[x]^2 re-implementation for contrast).
"""

from fractions import Fraction

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf

from rlnorm.agent import A2CAgent
from rlnorm.networks import build_networks
from rlnorm.normalizer import (
    ObservationNormalizer,
    RewardScaler,
    StatisticsOverflowError,
    statistics_overflow_as_error,
)

BOX3 = gym.spaces.Box(-np.inf, np.inf, (3,), np.float64)


def split(data: np.ndarray, sizes) -> list[np.ndarray]:
    """Cut `data` [N, ...] into consecutive batches of the given sizes (which sum to N)."""
    assert sum(sizes) == len(data)
    return np.split(data, np.cumsum(sizes)[:-1])


def random_sizes(n: int, seed: int, high: int) -> list[int]:
    rng = np.random.default_rng(seed)
    sizes = []
    while sum(sizes) < n:
        sizes.append(int(min(rng.integers(1, high + 1), n - sum(sizes))))
    return sizes


N_ROWS = 120
SPLITS = {
    "all_ones": [1] * N_ROWS,
    "one_batch": [N_ROWS],
    "one_then_rest": [1, N_ROWS - 1],
    "rest_then_one": [N_ROWS - 1, 1],
    "random_small": random_sizes(N_ROWS, seed=1, high=7),
    "random_large": random_sizes(N_ROWS, seed=2, high=50),
}


@pytest.mark.parametrize("pattern", sorted(SPLITS))
def test_merge_equals_numpy_over_concatenated_data(pattern):
    rng = np.random.default_rng(0)
    # Three features with very different locations and scales.
    data = rng.normal([5.0, -300.0, 0.0], [0.1, 40.0, 1e-4], size=(N_ROWS, 3))
    norm = ObservationNormalizer(BOX3)
    for batch in split(data, SPLITS[pattern]):
        norm.update(batch)
    assert norm.count.numpy() == N_ROWS
    np.testing.assert_allclose(norm.mean.numpy(), np.mean(data, axis=0), rtol=1e-12, atol=0)
    np.testing.assert_allclose(norm.var.numpy(), np.var(data, axis=0), rtol=1e-10, atol=0)


def test_hard_data_merge_stays_exact_while_float32_state_and_naive_formula_drift():
    """|x| ~ 1e6, spread ~ 1e-3, 12 batches of 1e6 rows (count 1.2e7).

    The data drift by 2e-4 per batch (a slowly moving sensor), so the batch means differ by
    less than float32's spacing at 1e6 (0.0625): a float32 state cannot represent the deltas.
    """
    n_batches, rows, loc, spread, drift = 12, 1_000_000, 1e6, 1e-3, 2e-4
    rng = np.random.default_rng(0)
    data = rng.standard_normal((n_batches * rows, 1))
    data *= spread
    data += loc
    for i in range(n_batches):
        data[i * rows : (i + 1) * rows] += i * drift
    ref_mean, ref_var = np.mean(data, axis=0), np.var(data, axis=0)

    norm = ObservationNormalizer(gym.spaces.Box(-np.inf, np.inf, (1,), np.float64))
    # The same Chan et al. merge with float32 state, and the naive running E[x^2] - E[x]^2.
    count32, mean32, var32 = np.float32(0), np.zeros(1, np.float32), np.ones(1, np.float32)
    sum_x, sum_x2, n = np.zeros(1), np.zeros(1), 0
    for i in range(n_batches):
        batch = data[i * rows : (i + 1) * rows]
        norm.update(batch)
        b_mean = batch.mean(axis=0)
        b_m2 = np.sum(np.square(batch - b_mean), axis=0)
        nb = np.float32(rows)
        total = count32 + nb
        delta = b_mean.astype(np.float32) - mean32
        m2 = var32 * count32 + b_m2.astype(np.float32) + delta * delta * (count32 * nb / total)
        mean32, var32, count32 = mean32 + delta * (nb / total), m2 / total, total
        # Sum of x^2 from the batch moments: one rounding per batch, fewer than a running
        # float64 sum would make, so the naive drift below is if anything understated.
        sum_x += rows * b_mean
        sum_x2 += b_m2 + rows * np.square(b_mean)
        n += rows
    naive_var = sum_x2 / n - np.square(sum_x / n)

    def rel(v):
        return float(np.max(np.abs(np.asarray(v, np.float64) - ref_var) / ref_var))

    assert norm.count.numpy() == n_batches * rows > 1e7
    err_ours, err_f32, err_naive = rel(norm.var.numpy()), rel(var32), rel(naive_var)
    assert err_ours < 1e-6
    assert err_f32 > 1e-2 and err_f32 > 1e4 * err_ours
    assert err_naive > 1e-2 and err_naive > 1e4 * err_ours
    # The mean, in units of the data's std: exact here, about one std off in float32.
    std = np.sqrt(ref_var)
    assert np.all(np.abs(norm.mean.numpy() - ref_mean) / std < 1e-3)
    assert np.all(np.abs(mean32 - ref_mean) / std > 0.1)


def test_empty_batch_leaves_statistics_unchanged():
    """A rollout whose steps were all dropped gives an empty update; it must not give NaN."""
    norm = ObservationNormalizer(BOX3)
    data = np.random.default_rng(0).normal(size=(10, 3))
    norm.update(data)
    before = norm.state_dict()
    norm.update(np.zeros((0, 3)))
    for key, value in norm.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)
    fresh = ObservationNormalizer(BOX3)
    fresh.update(np.zeros((0, 3)))
    assert fresh.count.numpy() == 0 and np.all(np.isfinite(fresh.mean.numpy()))
    assert np.all(np.isfinite(fresh.var.numpy()))


def test_normalize_matches_numpy():
    rng = np.random.default_rng(1)
    mean, var = rng.normal(size=3) * 10, rng.uniform(0.01, 5.0, size=3)
    eps, clip = 1e-4, 3.0
    norm = ObservationNormalizer(BOX3, epsilon=eps, clip=clip)
    norm.set_state(100, mean, var)
    x = rng.normal(mean, 4.0 * np.sqrt(var), size=(200, 3))
    expected = np.clip((x - mean) / np.sqrt(var + eps), -clip, clip).astype(np.float32)
    out = norm.normalize(x)
    assert out.dtype == tf.float32 and out.shape == (200, 3)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6, atol=0)
    # Both regimes are exercised: some entries clipped, most not.
    assert 0 < np.mean(np.abs(expected) == clip) < 0.5


def test_constant_feature_gives_zero_and_no_inf():
    norm = ObservationNormalizer(BOX3)
    data = np.random.default_rng(2).normal(size=(50, 3))
    data[:, 1] = 7.25
    norm.update(data)
    assert norm.var.numpy()[1] == 0.0
    out = norm.normalize(data).numpy()
    assert np.all(out[:, 1] == 0.0)
    off = norm.normalize(np.array([[0.0, 7.5, 0.0], [0.0, 7.0, 0.0]])).numpy()
    assert np.all(np.isfinite(off))
    np.testing.assert_array_equal(off[:, 1], [10.0, -10.0])


def test_huge_observations_stay_finite():
    norm = ObservationNormalizer(BOX3)
    norm.update(np.random.default_rng(3).normal(size=(20, 3)))
    x = np.array([[1e9, -1e9, 3e9], [-5e9, 2e9, 0.0]])
    out = norm.normalize(x).numpy()
    assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(out[0], [10.0, -10.0, 10.0])
    # Statistics of huge data stay finite too, and normalize those data to finite values.
    norm.update(x * 1e3)
    assert np.all(np.isfinite(norm.var.numpy()))
    assert np.all(np.isfinite(norm.normalize(x).numpy()))


@pytest.mark.parametrize(
    ("kwarg", "value", "key"),
    [
        ("epsilon", 0.0, "obs_epsilon"),
        ("epsilon", -1e-8, "obs_epsilon"),
        ("epsilon", float("nan"), "obs_epsilon"),
        ("clip", 0.0, "obs_clip"),
        ("clip", -1.0, "obs_clip"),
    ],
)
def test_nonpositive_epsilon_or_clip_raise_naming_the_key(kwarg, value, key):
    with pytest.raises(ValueError, match=key):
        ObservationNormalizer(BOX3, **{kwarg: value})


def test_frozen_normalizer_ignores_update():
    norm = ObservationNormalizer(BOX3)
    norm.update(np.random.default_rng(4).normal(size=(10, 3)))
    before = norm.state_dict()
    norm.frozen = True
    norm.update(np.random.default_rng(5).normal(5.0, 3.0, size=(10, 3)))
    for key, value in norm.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)


def test_box_of_shape_2x3_is_flattened_row_major():
    space = gym.spaces.Box(-np.inf, np.inf, (2, 3), np.float32)
    norm = ObservationNormalizer(space)
    assert norm.obs_dim == 6
    data = np.random.default_rng(6).normal(np.arange(6).reshape(2, 3), 1.0, size=(40, 2, 3))
    norm.update(data[:15])
    norm.update(data[15:])
    flat = data.reshape(40, 6)
    np.testing.assert_allclose(norm.mean.numpy(), flat.mean(0), rtol=1e-12)
    np.testing.assert_allclose(norm.var.numpy(), flat.var(0), rtol=1e-10)
    expected = np.clip((flat - flat.mean(0)) / np.sqrt(flat.var(0) + 1e-20), -10, 10)
    np.testing.assert_allclose(norm.normalize(data).numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("start", [0, -2, 5])
def test_discrete_observations_are_one_hot(start):
    space = gym.spaces.Discrete(4, start=start)
    norm = ObservationNormalizer(space)
    assert norm.obs_dim == 4
    obs = np.array([0, 1, 1, 3, 3, 3, 2, 1]) + start
    one_hot = np.eye(4)[obs - start]
    np.testing.assert_array_equal(norm.encode(obs).numpy(), one_hot)
    norm.update(obs)
    np.testing.assert_allclose(norm.mean.numpy(), one_hot.mean(0), rtol=1e-12)
    np.testing.assert_allclose(norm.var.numpy(), one_hot.var(0), rtol=1e-12)
    expected = (one_hot - one_hot.mean(0)) / np.sqrt(one_hot.var(0) + 1e-20)
    np.testing.assert_allclose(norm.normalize(obs).numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize(
    "space",
    [
        gym.spaces.Dict({"a": gym.spaces.Box(-1, 1, (2,))}),
        gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Box(-1, 1, (2,)))),
        gym.spaces.MultiDiscrete([3, 2]),
    ],
    ids=["dict", "tuple", "multidiscrete"],
)
def test_structured_spaces_raise_pointing_to_flatten_observation(space):
    with pytest.raises(ValueError, match="FlattenObservation"):
        ObservationNormalizer(space)


def test_one_instance_shared_by_both_networks(tiny_config):
    normalizer, policy, value = build_networks(tiny_config(), BOX3, gym.spaces.Discrete(2))
    assert policy.normalizer is normalizer and value.normalizer is normalizer
    normalizer.update(np.random.default_rng(7).normal(3.0, 2.0, size=(30, 3)))
    np.testing.assert_array_equal(policy.normalizer.mean.numpy(), normalizer.mean.numpy())
    np.testing.assert_array_equal(value.normalizer.var.numpy(), normalizer.var.numpy())


def test_checkpoint_holds_the_normalizer_state_once_and_restores_it(tiny_config, tmp_path):
    agent = A2CAgent(tiny_config(compile="eager"), BOX3, gym.spaces.Discrete(2))
    agent.normalizer.set_state(12.0, [1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    checkpoint = tf.train.Checkpoint(agent=agent)
    path = checkpoint.save(str(tmp_path / "ckpt"))
    names = [name.split("/.ATTRIBUTES")[0].split("/") for name, _ in tf.train.list_variables(path)]
    for stat in ("count", "mean", "var"):
        hits = [n for n in names if n[-1] == stat and "popart" not in n]  # PopArt's own count
        assert len(hits) == 1, (stat, hits)
        assert "normalizer" in hits[0]
    agent.normalizer.set_state(1.0, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    checkpoint.restore(path).assert_existing_objects_matched()
    assert agent.policy.normalizer.count.numpy() == 12.0
    np.testing.assert_array_equal(agent.value.normalizer.mean.numpy(), [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(agent.policy.normalizer.var.numpy(), [4.0, 5.0, 6.0])


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "graph"])
def test_reward_scaler_matches_numpy(compiled):
    """Eagerly and as the update graph calls it (one tf.function, state carried in variables
    from call to call)."""
    n_envs, n_steps, gamma, clip, eps = 3, 5, 0.9, 1.5, 1e-8
    rng = np.random.default_rng(8)
    scaler = RewardScaler(n_envs, gamma, clip=clip, epsilon=eps)
    scale = scaler.scale_rollout
    if compiled:
        scale = tf.function(
            scaler.scale_rollout,
            input_signature=[
                tf.TensorSpec([n_steps, n_envs], tf.float32),
                tf.TensorSpec([n_steps, n_envs], tf.bool),
            ],
        )
    running = np.zeros(n_envs)
    all_returns = []
    for _ in range(4):
        rewards = rng.normal(0.5, 2.0, size=(n_steps, n_envs)).astype(np.float32)
        rewards[0, 0] = 40.0  # an outlier, so the clip is exercised
        dones = rng.random((n_steps, n_envs)) < 0.25
        returns = np.zeros((n_steps, n_envs))
        for t in range(n_steps):
            for b in range(n_envs):
                running[b] = gamma * running[b] + rewards[t, b]
                returns[t, b] = running[b]
                if dones[t, b]:
                    running[b] = 0.0
        all_returns.append(returns.ravel())
        var = np.var(np.concatenate(all_returns))
        expected = np.clip(rewards / np.sqrt(var + eps), -clip, clip)
        out = scale(rewards, dones).numpy()
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, expected, rtol=1e-6)
        assert np.abs(rewards[0, 0]) / np.sqrt(var + eps) > clip and out[0, 0] == np.float32(clip)


# -- magnitudes near float64's limit ------------------------------------------------------------
def exact_moments(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population variance per column in exact rational arithmetic, then rounded."""
    means, variances = [], []
    for column in data.T:
        values = [Fraction(float(v)) for v in column]
        mean = sum(values) / len(values)
        means.append(float(mean))
        variances.append(float(sum((v - mean) ** 2 for v in values) / len(values)))
    return np.array(means), np.array(variances)


def previous_merge(count, mean, var, x):
    """The merge as it was before the scaled path existed, op for op (the same TF ops, so the
    same bits): what ordinary data must still get."""
    x = tf.constant(x, tf.float64)
    n = tf.cast(tf.shape(x)[0], tf.float64)
    batch_mean = tf.reduce_mean(x, axis=0)
    batch_m2 = tf.reduce_sum(tf.square(x - batch_mean), axis=0)
    total = count + n
    delta = batch_mean - mean
    new_mean = mean + delta * (n / total)
    m2 = var * count + batch_m2 + tf.square(delta) * (count * n / total)
    return total, new_mean, m2 / total


def previous_statistics(batches) -> tuple[np.ndarray, np.ndarray]:
    """(mean, var) of the unscaled merge over `batches`, from the initial state (0, 0, 1)."""
    dim = batches[0].shape[1]
    state = tf.constant(0.0, tf.float64), tf.zeros(dim, tf.float64), tf.ones(dim, tf.float64)
    for batch in batches:
        state = previous_merge(*state, batch)
    return state[1].numpy(), state[2].numpy()


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "graph"])
def test_ordinary_data_merge_bit_identical_to_the_unscaled_formula(compiled):
    rng = np.random.default_rng(9)
    norm = ObservationNormalizer(BOX3)
    merge = norm.merge
    if compiled:
        merge = tf.function(merge, input_signature=[tf.TensorSpec([None, 3], tf.float64)])
    count, mean, var = tf.constant(0.0, tf.float64), tf.zeros(3, tf.float64), tf.ones(3, tf.float64)
    for size in random_sizes(400, seed=3, high=40):
        # Scales from 1e-4 to 1e99, and an empty batch now and then.
        x = rng.normal([5.0, -3e8, 0.0], [0.1, 4e7, 1e-4], size=(size * (size % 7 > 0), 3))
        x[:, 2] *= 10.0 ** rng.integers(0, 100)
        merge(x)
        if len(x):
            count, mean, var = previous_merge(count, mean, var, x)
        np.testing.assert_array_equal(norm.count.numpy(), count.numpy())
        np.testing.assert_array_equal(norm.mean.numpy(), mean.numpy())
        np.testing.assert_array_equal(norm.var.numpy(), var.numpy())


def merged(data: np.ndarray, pattern: str) -> tuple[ObservationNormalizer, list[np.ndarray]]:
    norm = ObservationNormalizer(gym.spaces.Box(-np.inf, np.inf, data.shape[1:], np.float64))
    batches = split(data, SPLITS[pattern])
    for batch in batches:
        norm.update(batch)
    return norm, batches


@pytest.mark.parametrize("magnitude", [1e200, 1e300, -1.7e308])
def test_constant_huge_feature_beside_ordinary_ones_stays_exact(magnitude):
    """Unscaled, the first merge squares delta = 1e200 - 0 to Inf and multiplies it by count 0:
    NaN. Scaled, the huge feature's mean is exact and its variance 0, and the ordinary features
    keep the unscaled merge's bits."""
    rng = np.random.default_rng(10)
    data = rng.normal([2.0, 0.0, -7.0], [1.0, 1.0, 0.5], size=(N_ROWS, 3))
    data[:, 1] = magnitude
    norm, batches = merged(data, "random_small")
    mean, var = exact_moments(data)
    assert norm.mean.numpy()[1] == magnitude and norm.var.numpy()[1] == 0.0 == var[1]
    np.testing.assert_allclose(norm.mean.numpy(), mean, rtol=1e-12, atol=0)
    np.testing.assert_allclose(norm.var.numpy(), var, rtol=1e-10, atol=0)
    old_mean, old_var = previous_statistics(batches)
    assert np.isnan(old_var[1])
    np.testing.assert_array_equal(norm.mean.numpy()[[0, 2]], old_mean[[0, 2]])
    np.testing.assert_array_equal(norm.var.numpy()[[0, 2]], old_var[[0, 2]])
    assert np.all(np.isfinite(norm.normalize(data).numpy()))


@pytest.mark.parametrize("pattern", ["one_batch", "random_small", "rest_then_one"])
def test_overflowing_squares_with_a_finite_variance_match_exact_arithmetic(pattern):
    """Feature 0: spread 1e152 and one outlier 1.4e154 off, whose square (2e308) overflows
    though the variance (~2e306) does not. Feature 1: a constant 1e307, whose sum over the
    rows overflows. Feature 2: ~1e140, which overflows nothing and keeps the unscaled bits."""
    rng = np.random.default_rng(11)
    data = rng.normal([0.0, 1e307, -1e140], [1e152, 0.0, 2e139], size=(N_ROWS, 3))
    data[N_ROWS - 1, 0] = 1.4e154
    norm, batches = merged(data, pattern)
    mean, var = exact_moments(data)
    assert norm.count.numpy() == N_ROWS and np.all(var < 1.8e308) and var[0] > 1e306
    np.testing.assert_allclose(norm.mean.numpy(), mean, rtol=1e-12, atol=0)
    np.testing.assert_allclose(norm.var.numpy(), var, rtol=1e-10, atol=0)
    old_mean, old_var = previous_statistics(batches)
    assert not np.isfinite(old_var[0]) and not np.isfinite(old_var[1])
    assert norm.mean.numpy()[2] == old_mean[2] and norm.var.numpy()[2] == old_var[2]


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "graph"])
def test_variance_beyond_float64_raises_before_changing_the_state(compiled):
    """Values ~1e200 that are not all equal: variance ~1e398, more than float64 holds."""
    norm = ObservationNormalizer(BOX3)
    norm.update(np.random.default_rng(13).normal(size=(10, 3)))
    before = norm.state_dict()
    x = np.array([[1.0, 1e200, 0.0], [2.0, 2e200, 0.0]])
    merge = norm.merge
    error = StatisticsOverflowError
    if compiled:
        merge = tf.function(merge, input_signature=[tf.TensorSpec([None, 3], tf.float64)])
        error = tf.errors.InvalidArgumentError
    with pytest.raises(error, match="variance of a feature overflows float64"):
        merge(x)
    if compiled:  # as the training loop reports it
        with pytest.raises(StatisticsOverflowError, match="features.*1") as caught:
            with statistics_overflow_as_error():
                merge(x)
        assert str(caught.value).count("overflows float64") == 1
    for key, value in norm.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)


def test_reward_scaler_return_statistics_share_the_scaled_merge():
    """Returns of a constant 1e200 reward: mean and variance finite where the first unscaled
    merge gave NaN. (gamma 0, so every return equals the reward.)"""
    scaler = RewardScaler(n_envs=2, gamma=0.0)
    rewards = np.full((3, 2), 1e200)
    scaler.scale_rollout(rewards, np.zeros((3, 2), bool))
    stats = scaler.return_stats
    assert stats.mean.numpy()[0] == 1e200 and stats.var.numpy()[0] == 0.0


def test_default_epsilon_leaves_tiny_features_at_unit_scale():
    """A feature in other units (std 1e-5: a position in km moving by centimetres) normalizes
    to unit std as a feature of std 1 does; VecNormalize's epsilon 1e-8 would shrink it to ~0.1."""
    space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    data = np.random.default_rng(8).normal(0.0, 1.0, size=(4000, 2)) * [1.0, 1e-5]
    for epsilon, small_std in ((None, 1.0), (1e-8, 1e-5 / np.sqrt(1e-10 + 1e-8))):
        norm = (
            ObservationNormalizer(space)
            if epsilon is None
            else ObservationNormalizer(space, epsilon=epsilon)
        )
        norm.update(data)
        z = norm.normalize(data.astype(np.float32)).numpy()
        np.testing.assert_allclose(z.std(0), [1.0, small_std], rtol=2e-2)
