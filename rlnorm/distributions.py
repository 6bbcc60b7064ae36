"""Action distributions: Categorical (Discrete actions), diagonal Gaussian and gSDE's
state-dependent Gaussian (Box actions).

Plain functions of the head's outputs, written with TF ops so they compile inside the act
and train steps (no tensorflow-probability dependency for two closed-form distributions).
Shapes: logits float32 [B, n]; mean, log_std float32 [B, d] (log_std broadcast from [d]).
"""

from __future__ import annotations

import math

import tensorflow as tf

LOG_2PI = math.log(2.0 * math.pi)


class Categorical:
    """Categorical over `n` actions; `sample` uses a `tf.random.Generator` for determinism."""

    def __init__(self, logits: tf.Tensor):
        self.logits = logits
        self.log_probs_all = tf.nn.log_softmax(logits)

    def log_prob(self, actions: tf.Tensor) -> tf.Tensor:
        """actions int [B] -> float32 [B]."""
        idx = tf.cast(actions, tf.int32)
        return tf.gather(self.log_probs_all, idx, axis=1, batch_dims=1)

    def entropy(self) -> tf.Tensor:
        return -tf.reduce_sum(tf.exp(self.log_probs_all) * self.log_probs_all, axis=-1)

    def sample(self, rng: tf.random.Generator) -> tf.Tensor:
        # Gumbel-max: argmax(logits + Gumbel noise) is a draw from softmax(logits). It uses the
        # stateful Generator, which is checkpointed and deterministic, unlike tf.random.categorical.
        u = rng.uniform(tf.shape(self.logits), minval=1e-20, maxval=1.0)
        return tf.argmax(self.logits - tf.math.log(-tf.math.log(u)), axis=-1, output_type=tf.int32)

    def mode(self) -> tf.Tensor:
        return tf.argmax(self.logits, axis=-1, output_type=tf.int32)


class DiagGaussian:
    """Diagonal Gaussian with a state-independent log-std; actions are NOT clipped here.

    The env boundary clips the sampled action to the Box (see `rlnorm.rollout`); log-probs are
    of the unclipped sample, as in SB3 and CleanRL, so the gradient is unbiased.
    """

    def __init__(self, mean: tf.Tensor, log_std: tf.Tensor):
        self.mean = mean
        self.log_std = tf.broadcast_to(log_std, tf.shape(mean))

    def log_prob(self, actions: tf.Tensor) -> tf.Tensor:
        """actions float32 [B, d] -> float32 [B] (sum over action dims)."""
        z = (tf.cast(actions, tf.float32) - self.mean) * tf.exp(-self.log_std)
        return tf.reduce_sum(-0.5 * tf.square(z) - self.log_std - 0.5 * LOG_2PI, axis=-1)

    def entropy(self) -> tf.Tensor:
        return tf.reduce_sum(self.log_std + 0.5 * (1.0 + LOG_2PI), axis=-1)

    def sample(self, rng: tf.random.Generator) -> tf.Tensor:
        return self.mean + tf.exp(self.log_std) * rng.normal(tf.shape(self.mean))

    def mode(self) -> tf.Tensor:
        return self.mean


class StateDependentGaussian(DiagGaussian):
    """gSDE (Raffin et al. 2021), as SB3's StateDependentNoiseDistribution with
    use_expln=False, learn_features=False and no squashing.

    The action is mean + latent @ W, W [latent_dim, act_dim] an exploration matrix with
    entries ~ N(0, std^2) drawn every few steps (`PolicyNetwork.resample_exploration`), so
    for fixed features the action is Gaussian with
        variance = (latent^2) @ std^2      [B, act_dim]
    and its log-prob and entropy are those of N(mean, sqrt(variance + 1e-6)) (SB3's epsilon).
    The features are the policy's last hidden layer, with no gradient through them here
    (learn_features=False): the hidden layers learn through the mean only.

    mean [B, d]; latent [B, latent_dim]; log_std [latent_dim, d] (full_std) or
    [latent_dim, 1]; exploration_matrices [n_envs, latent_dim, d] and exploration_mat
    [latent_dim, d]: one matrix per env for a batch of n_envs rows, else the single one.
    """

    EPSILON = 1e-6

    @staticmethod
    def weights_std(log_std, full_std: bool, act_dim: int) -> tf.Tensor:
        """The std of the exploration weights [latent_dim, act_dim] (SB3's `get_std`)."""
        std = tf.exp(tf.convert_to_tensor(log_std))
        if full_std:
            return std
        return tf.broadcast_to(std, [std.shape[0], act_dim])

    def __init__(
        self, mean, latent, log_std, full_std, exploration_matrices=None, exploration_mat=None
    ):
        self.mean = mean
        self.latent = tf.stop_gradient(latent)
        std = self.weights_std(log_std, full_std, mean.shape[-1])
        variance = tf.matmul(tf.square(self.latent), tf.square(std))
        self.std = tf.sqrt(variance + self.EPSILON)
        self.log_std = tf.math.log(self.std)
        self.exploration_matrices = exploration_matrices
        self.exploration_mat = exploration_mat

    def noise(self) -> tf.Tensor:
        """latent @ W [B, d]: each env's own matrix when B == n_envs > 1, else the single one
        (SB3's `get_noise`)."""
        n_envs = self.exploration_matrices.shape[0]
        rows = self.latent.shape[0]
        if rows is not None:  # the batch size is known when tracing (the rollouts)
            if rows == n_envs and n_envs > 1:
                return tf.einsum("bl,bld->bd", self.latent, self.exploration_matrices)
            return tf.matmul(self.latent, self.exploration_mat)
        # Any batch size (`act`): pick the matrices per row in a cond, multiply outside it.
        batch = tf.shape(self.latent)[0]
        single = tf.convert_to_tensor(self.exploration_mat)
        weights = tf.cond(
            tf.logical_and(tf.equal(batch, n_envs), n_envs > 1),
            lambda: tf.convert_to_tensor(self.exploration_matrices),
            lambda: tf.broadcast_to(single, [batch, *single.shape]),
        )
        return tf.einsum("bl,bld->bd", self.latent, weights)

    def sample(self, rng: tf.random.Generator | None = None) -> tf.Tensor:
        """The exploration matrices hold the randomness: `rng` is not drawn from here."""
        return self.mean + self.noise()
