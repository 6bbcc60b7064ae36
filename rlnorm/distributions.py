"""Action distributions: Categorical (Discrete actions) and diagonal Gaussian (Box actions).

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
