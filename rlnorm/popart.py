"""PopArt (van Hasselt et al. 2016, "Learning values across many orders of magnitude"): the
value head learns NORMALIZED targets, and whenever the targets' statistics move, the head's
weights and bias are rescaled so the unnormalized outputs stay exactly what they were.

    V(s) = std * (w . h(s) + b) + mean                 (h: the value net's last hidden layer)
    after mean, std -> mean', std':
        w' = w * std / std',   b' = (std * b + mean - mean') / std'
    so std' * (w' . h + b') + mean' = std * (w . h + b) + mean for every h ("Preserving
    Outputs Precisely"); the loss is (target_norm - head)^2 with target_norm = (R - mean') / std'
    ("Adaptively Rescaling Targets"). The policy gradient uses advantages / std' (the
    actor-critic form of Hessel et al. 2019, "Multi-task Deep RL with PopArt"), so neither loss
    changes with the reward scale.

The statistics are the running mean and variance of every value target so far, float64,
merged exactly with the observation normalizer's parallel formula (Chan, Golub & LeVeque
1979), not the paper's exponential moving averages. They update once per update, AFTER its
gradient step, from the update's valid targets (as the observation normalizer merges after the
step): the update's loss, the diagnostics' pass over it and the acting values all see the same
statistics; the very first batch's update uses that batch's own statistics, stored after its
step without rescaling the head (`for_batch`, `initialize`: an untrained head has no outputs
worth preserving). std is clipped to [1e-4, 1e6] (the bounds of Hessel et al. 2019's PopArt), so a
batch of equal targets cannot blow the head's weights up by 1/sqrt(eps).

The variables are Keras variables, listed in the value network's `non_trainable_weights` (so
what saves and restores the network's state around a pass restores them too) and tracked by
the checkpoint through the value network (`value.popart`, exposed as `A2CAgent.popart`).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

STD_BOUNDS = (1e-4, 1e6)


class PopArt(tf.Module):
    """Running statistics of the value targets and the head rescaling that preserves outputs.

    State (float64 [] each, non-trainable): `count`, `mean`, `var` (population variance).
    """

    def __init__(self, name: str = "popart"):
        super().__init__(name=name)

        def scalar(value, var_name):
            return keras.Variable(
                np.float64(value), dtype="float64", trainable=False, name=var_name
            )

        self.count = scalar(0.0, "count")
        self.mean = scalar(0.0, "mean")
        self.var = scalar(1.0, "var")

    @property
    def variables_list(self) -> list:
        return [self.count, self.mean, self.var]

    def std(self) -> tf.Tensor:
        """float64 []: sqrt(var), clipped to STD_BOUNDS."""
        return tf.clip_by_value(tf.sqrt(tf.convert_to_tensor(self.var)), *STD_BOUNDS)

    def normalize(self, targets, stats=None) -> tf.Tensor:
        """float [N] -> float32 [N] = (targets - mean) / std, in float64 before the cast.
        `stats`: (mean, std) from `for_batch`, else the stored ones."""
        mean, std = stats if stats is not None else (tf.convert_to_tensor(self.mean), self.std())
        return tf.cast((tf.cast(targets, tf.float64) - mean) / std, tf.float32)

    def denormalize(self, head, stats=None) -> tf.Tensor:
        """The head's output float32 [N] -> unnormalized values float32 [N]."""
        mean, std = stats if stats is not None else (tf.convert_to_tensor(self.mean), self.std())
        return tf.cast(tf.cast(head, tf.float64) * std + mean, tf.float32)

    def _batch_moments(self, targets, keep):
        x = tf.cast(targets, tf.float64)
        w = tf.cast(keep, tf.float64)
        n = tf.reduce_sum(w)
        mean = tf.reduce_sum(w * x) / tf.maximum(n, 1.0)
        var = tf.reduce_sum(w * tf.square(x - mean)) / tf.maximum(n, 1.0)
        empty = tf.equal(tf.convert_to_tensor(self.count), 0.0)
        # Only a usable batch sets the first statistics (a NaN batch sets nothing).
        first = tf.logical_and(empty, tf.logical_and(n > 0, tf.math.is_finite(mean + var)))
        return first, n, mean, var

    def for_batch(self, targets, keep):
        """(mean, std) float64 [] an update on this batch uses: the stored statistics or, before
        the first update (count 0), the `keep` rows' own, which `initialize` stores after the
        step. Reads only: the loss, the diagnostics' pass and the step agree."""
        first, _, mean, var = self._batch_moments(targets, keep)
        std = tf.clip_by_value(tf.sqrt(var), *STD_BOUNDS)
        return (
            tf.where(first, mean, tf.convert_to_tensor(self.mean)),
            tf.where(first, std, self.std()),
        )

    def initialize(self, targets, keep) -> tf.Tensor:
        """After the first update only (count 0): store the `keep` rows' mean and variance (what
        `for_batch` gave that update) WITHOUT rescaling the head, and return True (a bool []
        tensor); else change nothing and return False. The untrained head's outputs are its
        initialization's (of order 1 in whatever units), nothing to preserve; rescaling them
        into the first targets' units, as `update` would, gives a head of weights ~ 1/std:
        1000x larger at a reward scale of 1e-3 than at 1."""
        first, n, mean, var = self._batch_moments(targets, keep)
        self.mean.assign(tf.where(first, mean, tf.convert_to_tensor(self.mean)))
        self.var.assign(tf.where(first, var, tf.convert_to_tensor(self.var)))
        self.count.assign(tf.where(first, n, tf.convert_to_tensor(self.count)))
        return first

    def update(self, targets, keep, head: keras.layers.Dense) -> None:
        """Merge the `keep` rows (bool [N]) of `targets` (float [N]) into the statistics, then
        rescale `head` (kernel [h, 1], bias [1]) so its unnormalized outputs do not change.

        A weighted merge (weights 0/1) rather than boolean_mask: fixed shapes, so it compiles
        with XLA too."""
        old_mean, old_std = tf.convert_to_tensor(self.mean), self.std()
        count, var = tf.convert_to_tensor(self.count), tf.convert_to_tensor(self.var)
        x = tf.cast(targets, tf.float64)
        w = tf.cast(keep, tf.float64)
        n = tf.reduce_sum(w)
        # The kept rows' two-pass moments, then ObservationNormalizer.update's exact merge.
        batch_mean = tf.reduce_sum(w * x) / tf.maximum(n, 1.0)
        batch_m2 = tf.reduce_sum(w * tf.square(x - batch_mean))
        total = count + n
        safe_total = tf.maximum(total, 1.0)
        delta = batch_mean - old_mean
        m2 = var * count + batch_m2 + tf.square(delta) * (count * n / safe_total)
        has = n > 0  # no row kept: the statistics stay as they are
        mean = tf.where(has, old_mean + delta * (n / safe_total), old_mean)
        self.mean.assign(mean)
        self.var.assign(tf.where(has, m2 / safe_total, var))
        self.count.assign(total)
        new_std = self.std()
        kernel = tf.cast(head.kernel, tf.float64) * (old_std / new_std)
        bias = (old_std * tf.cast(head.bias, tf.float64) + old_mean - mean) / new_std
        head.kernel.assign(tf.cast(kernel, tf.float32))
        head.bias.assign(tf.cast(bias, tf.float32))

    def state_dict(self) -> dict[str, float]:
        """The statistics as Python floats (diagnostics, tests)."""
        return {
            "count": float(self.count.numpy()),
            "mean": float(self.mean.numpy()),
            "var": float(self.var.numpy()),
            "std": float(self.std().numpy()),
        }
