"""The seed-batched trainer's state and its math (`rlnorm.compiled.seeds`): weights as one
flat float32 vector per network and seed [K, P] (`rlnorm.optimizers`' layout), the optimizers'
slots on it, and the running statistics [K, D] of the normalizers.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from rlnorm.networks import pytorch_default_init
from rlnorm.normalizer import OVERFLOW_MESSAGE, chan_merge
from rlnorm.optimizers import Adam, FlatOptimizer, RMSprop
from rlnorm.schedules import lr_factor


def layer_shapes(in_dim: int, hidden, out_dim: int) -> list[tuple[int, ...]]:
    """The networks' trainable weights in `trainable_weights` order: kernel, bias per layer."""
    shapes, fan_in = [], in_dim
    for width in (*hidden, out_dim):
        shapes += [(fan_in, width), (width,)]
        fan_in = width
    return shapes


def initial_weights(config, base: int, shapes, out_gain: float) -> tf.Tensor:
    """float32 [P]: the flat weights `rlnorm.networks.Network` initializes for `seed` (its
    initializers with its seeds: seed*1000 policy, +500 value; layer i +i, head +99)."""
    n_layers, parts = len(shapes) // 2, []
    for i in range(n_layers):
        kernel_shape = shapes[2 * i]
        layer_seed = base + (99 if i == n_layers - 1 else i)
        if config.ortho_init:
            gain = out_gain if i == n_layers - 1 else 2.0**0.5
            kernel = keras.initializers.Orthogonal(gain=gain, seed=layer_seed)
            bias = keras.initializers.Zeros()
        else:
            kernel, bias = pytorch_default_init(kernel_shape[0], layer_seed)
        parts += [kernel(kernel_shape, "float32"), bias(shapes[2 * i + 1], "float32")]
    return tf.concat([tf.reshape(tf.convert_to_tensor(p), [-1]) for p in parts], 0)


def mlp(flat, shapes, x, activation):
    """Batched MLP: flat [K, P] weights, x float32 [K, B, in] -> [K, B, out] (Dense: x@W+b)."""
    k = flat.shape[0]
    pieces = tf.split(flat, [math.prod(s) for s in shapes], axis=1)
    n_layers = len(shapes) // 2
    for i in range(n_layers):
        kernel = tf.reshape(pieces[2 * i], [k, *shapes[2 * i]])
        x = tf.matmul(x, kernel) + pieces[2 * i + 1][:, None, :]
        if i < n_layers - 1:
            x = activation(x)
    return x


def masked_mean(x, valid):
    """`rlnorm.a2c.masked_mean` per seed: [K, M] -> [K]."""
    return tf.reduce_sum(x * valid, -1) / tf.maximum(tf.reduce_sum(valid, -1), 1.0)


def clip_scale(norm, max_norm: float):
    """tf.clip_by_global_norm's factor per seed (NaN norm -> NaN scale, as there)."""
    return max_norm * tf.minimum(1.0 / norm, 1.0 / max_norm) + (norm - norm)


class Optimizer:
    """An `rlnorm.optimizers` optimizer's state for K seeds: slots [K, P], iterations [K];
    its step is the class's own `_flat_step`, on [K, P] with per-seed [K, 1] scalars."""

    def __init__(self, config, k: int, size: int, name: str):
        cls = RMSprop if config.optimizer == "rmsprop" else Adam
        self.step_fn = cls._flat_step
        self.learning_rate = tf.constant(config.learning_rate, tf.float32)
        self.lr_factor = lr_factor(config)
        self.rho, self.epsilon = config.rms_decay, config.optimizer_eps
        self.beta_1, self.beta_2 = 0.9, 0.999  # make_optimizer's Adam keeps Keras' defaults
        self.slots = [
            tf.Variable(tf.zeros([k, size]), trainable=False, name=f"{name}_{s}")
            for s in cls.slot_names
        ]
        self.counter = tf.Variable(tf.zeros([k], tf.int64), trainable=False, name=f"{name}_it")

    def apply(self, weights: tf.Variable, grad, applied):
        """One step on weights [K, P] where applied (bool [K]); elsewhere nothing changes."""
        self.iterations = self.counter[:, None]  # read by _flat_step / the schedule
        lr = FlatOptimizer.scheduled_learning_rate(self)
        old = [tf.convert_to_tensor(s) for s in self.slots]
        new, delta = self.step_fn(self, grad, old, lr)
        mask = applied[:, None]
        for slot, n, o in zip(self.slots, new, old, strict=True):
            slot.assign(tf.where(mask, n, o))
        weights.assign_sub(tf.where(mask, delta, 0.0))
        self.counter.assign_add(tf.cast(applied, tf.int64))


class SeedStatistics(tf.Module):
    """K seeds' running (count, mean, var), float64 [K], [K, D], [K, D], merged with
    `ObservationNormalizer.merge`'s formula (`chan_merge`) for every seed at once."""

    def __init__(self, k: int, dim: int, epsilon: float, name: str):
        super().__init__(name=name)
        self.epsilon = epsilon
        self.count = tf.Variable(tf.zeros([k], tf.float64), trainable=False, name="count")
        self.mean = tf.Variable(tf.zeros([k, dim], tf.float64), trainable=False, name="mean")
        self.var = tf.Variable(tf.ones([k, dim], tf.float64), trainable=False, name="var")

    def merge(self, x, where):
        """x float64 [B, K, D] (each seed's rows down axis 0); only seeds where bool [K]."""
        n = tf.cast(tf.shape(x)[0], tf.float64)
        count = self.count[:, None]
        mean, var = chan_merge(x, n, count, count + n, self.mean, self.var)
        # Beyond ~1e150 a single run merges again in scaled units; no classic-control
        # observation or return comes near, so here that is an error.
        ok = tf.reduce_all(tf.math.is_finite(var) | ~where[:, None])
        check = tf.debugging.Assert(
            ok, [f"{self.name}: {OVERFLOW_MESSAGE}; train these seeds one by one"]
        )
        with tf.control_dependencies([check]):
            self.mean.assign(tf.where(where[:, None], mean, self.mean))
            self.var.assign(tf.where(where[:, None], var, self.var))
            self.count.assign(tf.where(where, self.count + n, self.count))
