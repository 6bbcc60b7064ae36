"""The observation running normalizer: ONE instance, shared by the policy and the value network.

State is float64 and held in non-trainable `tf.Variable`s, so `tf.train.Checkpoint` and
SavedModel carry it (TF-Agents' habit). `update` merges a batch exactly with the parallel
mean/variance formula (Chan, Golub & LeVeque 1979), so after any sequence of batches the
mean and variance equal NumPy's over the concatenated data. A naive running update
(E[x^2] - E[x]^2, or float32 state) drifts: the tests show both. Features whose squares
overflow float64 (|x| beyond ~1e150) merge again in units of a power of two (an exact scaling).
"""

from __future__ import annotations

from contextlib import contextmanager

import gymnasium as gym
import numpy as np
import tensorflow as tf

UNSUPPORTED_SPACES = (
    gym.spaces.Dict,
    gym.spaces.Tuple,
    gym.spaces.Text,
    gym.spaces.Graph,
    gym.spaces.Sequence,
    gym.spaces.MultiDiscrete,
)


def check_observation_space(space: gym.Space) -> None:
    """Raise a clear error for observation spaces the networks cannot read."""
    if isinstance(space, UNSUPPORTED_SPACES):
        raise ValueError(
            f"Observation space {space} ({type(space).__name__}) is not supported: rlnorm's "
            "networks read a flat vector. Wrap the environment with Gymnasium's "
            "`gymnasium.wrappers.FlattenObservation` (for vector envs: "
            "`gymnasium.wrappers.vector.FlattenObservation`), which flattens Dict/Tuple spaces "
            "and one-hot encodes MultiDiscrete ones."
        )
    if not isinstance(space, gym.spaces.Box | gym.spaces.Discrete | gym.spaces.MultiBinary):
        raise ValueError(
            f"Observation space {type(space).__name__} is not supported; use Box, Discrete or "
            "MultiBinary, or wrap the env with gymnasium.wrappers.FlattenObservation."
        )


def observation_dim(space: gym.Space) -> int:
    """Length of the flat feature vector: one-hot size for Discrete, product of shape else."""
    check_observation_space(space)
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n)
    return int(np.prod(space.shape))


class StatisticsOverflowError(FloatingPointError):
    """A running variance does not fit in float64: the data's spread exceeds ~1e154."""


OVERFLOW_MESSAGE = "the variance of a feature overflows float64"


@contextmanager
def statistics_overflow_as_error():
    """Around a compiled call that merges statistics: the graph's failed overflow assertion (an
    InvalidArgumentError carrying the message and a graph trace) as StatisticsOverflowError."""
    try:
        yield
    except tf.errors.InvalidArgumentError as e:
        lines = [line for line in e.message.splitlines() if OVERFLOW_MESSAGE in line]
        if not lines:
            raise
        raise StatisticsOverflowError(lines[0].strip()) from None


def power_of_two_below(x: tf.Tensor) -> tf.Tensor:
    """2**floor(log2(x)) for finite float64 x > 0, exactly: x with its mantissa bits cleared.
    Dividing by it is exact, so scaling adds no rounding."""
    bits = tf.bitwise.bitwise_and(tf.bitcast(x, tf.int64), tf.constant(0x7FF << 52, tf.int64))
    return tf.bitcast(bits, tf.float64)


def chan_merge(x, n, count, total, mean, var, pivot=None):
    """(mean, var) of the state (count, mean, var) merged with the batch x [B, D] (n = B rows,
    total = count + n), by the parallel formula in `ObservationNormalizer.update`.

    `pivot` [D] (a row of x): the batch moments are taken of x - pivot, so a constant feature
    gets variance 0 exactly, not the rounding of its mean (which, scaled back from huge units,
    would be a variance beyond float64)."""
    if pivot is None:
        batch_mean = tf.reduce_mean(x, axis=0)
        batch_m2 = tf.reduce_sum(tf.square(x - batch_mean), axis=0)
    else:
        d = x - pivot
        d_mean = tf.reduce_mean(d, axis=0)
        batch_mean = pivot + d_mean
        batch_m2 = tf.reduce_sum(tf.square(d - d_mean), axis=0)
    delta = batch_mean - mean
    new_mean = mean + delta * (n / total)
    m2 = var * count + batch_m2 + tf.square(delta) * (count * n / total)
    return new_mean, m2 / total


class ObservationNormalizer(tf.Module):
    """Running mean/variance of observation features, and the normalization that uses them.

    Args:
        observation_space: the env's single observation space (Box of any shape, Discrete
            one-hot encoded, MultiBinary).
        epsilon: added to the variance before the square root (> 0).
        clip: normalized values are clipped to [-clip, clip] (> 0).
        enabled: if False, `normalize` only encodes (flattens / one-hots) and casts; the
            statistics are still tracked, for the diagnostics.

    State (float64, non-trainable): `count` [], `mean` [obs_dim], `var` [obs_dim]
    (population variance). `frozen` is a Python flag: a frozen normalizer ignores `update`;
    evaluation and export freeze it.
    """

    def __init__(
        self,
        observation_space: gym.Space,
        epsilon: float = 1e-20,
        clip: float = 10.0,
        enabled: bool = True,
        name: str = "observation_normalizer",
    ):
        super().__init__(name=name)
        if not epsilon > 0:
            raise ValueError(f"obs_epsilon must be > 0, got {epsilon!r} (default 1e-20).")
        if not clip > 0:
            raise ValueError(f"obs_clip must be > 0, got {clip!r} (default 10).")
        self.observation_space = observation_space
        self.obs_dim = observation_dim(observation_space)
        self.one_hot = isinstance(observation_space, gym.spaces.Discrete)
        self.epsilon = float(epsilon)
        self.clip = float(clip)
        self.enabled = bool(enabled)
        self.frozen = False
        self._read_once = None  # (mean, 1/std) tensors inside `read_once()`, else None
        self.count = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="count")
        self.mean = tf.Variable(tf.zeros([self.obs_dim], tf.float64), trainable=False, name="mean")
        self.var = tf.Variable(tf.ones([self.obs_dim], tf.float64), trainable=False, name="var")

    # -- encoding ---------------------------------------------------------------------------
    def encode(self, raw_obs) -> tf.Tensor:
        """Raw observations [B, *obs_shape] (or [B] ints for Discrete) -> float64 [B, obs_dim]."""
        if self.one_hot:
            idx = tf.cast(tf.reshape(raw_obs, [-1]), tf.int32) - int(self.observation_space.start)
            return tf.one_hot(idx, self.obs_dim, dtype=tf.float64)
        x = tf.cast(raw_obs, tf.float64)
        return tf.reshape(x, [-1, self.obs_dim])

    # -- statistics -------------------------------------------------------------------------
    def update(self, raw_obs) -> None:
        """Merge a batch of raw observations [B, *obs_shape] into the running statistics.

        Exact parallel merge of (count_a, mean_a, M2_a) with the batch's (n, mean_b, M2_b):
            delta = mean_b - mean_a,  N = count_a + n
            mean  = mean_a + delta * n / N
            M2    = M2_a + M2_b + delta^2 * count_a * n / N
        The batch's own moments are two-pass in float64, so no E[x^2] - E[x]^2 cancellation.
        """
        if not self.frozen:
            self.merge(raw_obs)

    def merge(self, raw_obs) -> None:
        """The merge itself, regardless of `frozen` (compiled by the agent; see `update`).

        Beyond ~1e150 the squares overflow and the unscaled merge gives Inf/NaN. Only then
        (never on ordinary data, whose bits stay those of the unscaled formula) the features
        concerned are merged again in units of a power of two near their magnitude. A variance
        that overflows float64 even so raises `StatisticsOverflowError` (eagerly; in a graph,
        an InvalidArgumentError with the same message) before any state changes.
        """
        x = self.encode(raw_obs)
        n = tf.cast(tf.shape(x)[0], tf.float64)
        count = self.count
        total = count + n
        new_mean, new_var = chan_merge(x, n, count, total, self.mean, self.var)
        unscaled_ok = (n == 0) | tf.reduce_all(tf.math.is_finite(new_var))
        new_mean, new_var = tf.cond(
            unscaled_ok,
            lambda: (new_mean, new_var),
            lambda: self._scaled_merge(x, n, count, total, new_mean, new_var),
        )
        # An empty batch (every step of a rollout dropped) must change nothing: its mean is
        # 0/0 = NaN, which would poison the statistics for good.
        self.mean.assign(tf.where(n > 0, new_mean, self.mean))
        self.var.assign(tf.where(n > 0, new_var, self.var))
        self.count.assign(total)

    def _scaled_merge(self, x, n, count, total, mean_u, var_u):
        """(mean, var) with the features whose unscaled merge (mean_u, var_u) overflowed from
        finite inputs merged again in scaled units; the other features keep mean_u, var_u."""
        magnitude = tf.maximum(
            tf.reduce_max(tf.abs(x), axis=0), tf.maximum(tf.abs(self.mean), tf.sqrt(self.var))
        )
        redo = ~tf.math.is_finite(var_u) & tf.math.is_finite(magnitude)  # not Inf/NaN input
        scale = tf.where(redo, power_of_two_below(magnitude), tf.ones_like(magnitude))
        x_s = x / scale
        pivot = tf.reduce_sum(x_s[:1], axis=0)  # the first row
        mean_s, var_s = chan_merge(
            x_s, n, count, total, self.mean / scale, self.var / scale / scale, pivot
        )
        mean = tf.where(redo, mean_s * scale, mean_u)
        var = tf.where(redo, var_s * scale * scale, var_u)
        with tf.control_dependencies(
            self._check_overflow(redo & ~tf.math.is_finite(var), magnitude)
        ):
            return tf.identity(mean), tf.identity(var)

    def _check_overflow(self, overflow, magnitude) -> list:
        head = (
            f"{self.name}: {OVERFLOW_MESSAGE} (any spread beyond "
            "~1e154 does, and non-constant features of |x| > ~1e170 always do). Rescale "
            "the observations or rewards before rlnorm sees them (e.g. a Gymnasium "
            "TransformObservation / TransformReward wrapper)."
        )
        if tf.executing_eagerly():
            if bool(tf.reduce_any(overflow)):
                index = np.flatnonzero(overflow.numpy())
                raise StatisticsOverflowError(
                    f"{head} Features {index.tolist()}, |x| up to "
                    f"{magnitude.numpy()[index].max():.3g}."
                )
            return []
        features = tf.reshape(tf.where(overflow), [-1])
        return [tf.debugging.Assert(~tf.reduce_any(overflow), [head, "features", features])]

    def set_state(self, count: float, mean, var) -> None:
        """Set the statistics directly (tests, and importing SB3 VecNormalize stats)."""
        self.count.assign(float(count))
        self.mean.assign(np.asarray(mean, np.float64).reshape(self.obs_dim))
        self.var.assign(np.asarray(var, np.float64).reshape(self.obs_dim))

    # -- normalization ------------------------------------------------------------------------
    def normalize(self, raw_obs) -> tf.Tensor:
        """float32 [B, obs_dim] = clip((x - mean) / sqrt(var + epsilon), -clip, clip).

        A constant feature (var 0) gives (x - mean) / sqrt(epsilon) = 0 for x == mean and a
        clipped finite value otherwise: never inf or NaN. Observations of magnitude 1e9 stay
        finite because the arithmetic is float64 and the result is clipped before the cast.
        """
        x = self.encode(raw_obs)
        if not self.enabled:
            return tf.cast(x, tf.float32)
        mean, inv_std = self._read_once or self._mean_and_inv_std()
        z = (x - mean) * inv_std
        return tf.cast(tf.clip_by_value(z, -self.clip, self.clip), tf.float32)

    __call__ = normalize

    def _mean_and_inv_std(self):
        return self.mean.read_value(), tf.math.rsqrt(self.var + self.epsilon)

    @contextmanager
    def read_once(self):
        """While tracing a block in which the statistics cannot change (a rollout), read them
        and compute 1/std once for every `normalize` in it, instead of once per call (four
        graph ops fewer per env step; the same arithmetic, so the same bits)."""
        self._read_once = self._mean_and_inv_std()
        try:
            yield
        finally:
            self._read_once = None

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"count": self.count.numpy(), "mean": self.mean.numpy(), "var": self.var.numpy()}


class RewardScaler(tf.Module):
    """Divides rewards by the running std of the discounted return, then clips (SB3
    VecNormalize's `norm_reward`; Engstrom et al. 2020 "Implementation Matters").

    Hand-written rather than Gymnasium's `NormalizeReward` because that wrapper keeps its
    statistics in a Python object outside any checkpoint (resume would lose them) and resets its
    discounted return only on termination. Here the statistics are an `ObservationNormalizer`
    over the 1-D return (exact float64 merge, checkpointed) and the per-env discounted return
    resets on every episode end (it is not checkpointed: a resumed run starts new episodes).
    Statistics update once per rollout, from all its returns. TF ops throughout, so the update
    graph (`rlnorm.update`) can call it.
    """

    def __init__(self, n_envs: int, gamma: float, clip: float = 10.0, epsilon: float = 1e-8):
        super().__init__(name="reward_scaler")
        self.gamma = float(gamma)
        self.clip = float(clip)
        self.epsilon = float(epsilon)
        self.return_stats = ObservationNormalizer(
            gym.spaces.Box(-np.inf, np.inf, (1,), np.float64),
            epsilon=epsilon,
            clip=clip,
            name="reward_return_stats",  # names it in an overflow error
        )
        self.discounted_return = tf.Variable(
            tf.zeros([n_envs], tf.float64), trainable=False, name="discounted_return"
        )

    def scale_rollout(self, rewards, dones) -> tf.Tensor:
        """rewards float [T, B], dones bool [T, B] -> scaled float32 [T, B] (T static)."""
        rewards = tf.cast(rewards, tf.float64)
        dones = tf.cast(dones, tf.bool)
        running = self.discounted_return.read_value()
        returns = []
        for t in range(rewards.shape[0]):
            running = running * self.gamma + rewards[t]
            returns.append(running)
            running = tf.where(dones[t], tf.zeros_like(running), running)
        self.discounted_return.assign(running)
        self.return_stats.merge(tf.reshape(tf.stack(returns), [-1, 1]))
        std = tf.sqrt(self.return_stats.var[0] + self.epsilon)
        return tf.cast(tf.clip_by_value(rewards / std, -self.clip, self.clip), tf.float32)
