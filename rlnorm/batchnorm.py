"""BatchNorm variants whose acting (inference) and learning (training) outputs agree.

Plain ``keras.layers.BatchNormalization`` normalizes with *batch* statistics when
``training=True`` and with *moving* statistics when ``training=False``. In on-policy
actor-critic the agent acts with ``training=False`` but the update recomputes log-probs
with ``training=True``, so the policy being optimized is not the one that collected the
data. The two layers below remove (or bound) that mismatch.

Both layers take float32 inputs of shape ``[B, ..., units]``, normalize each feature of the
last axis (statistics are reduced over every other axis), return the same shape, and
take ``training`` as a Python bool (``None`` means inference). All ops are XLA-compatible,
so the layers can run inside ``tf.function(jit_compile=True)``.
"""

from __future__ import annotations

import keras
import tensorflow as tf

__all__ = ["BatchRenormalization", "MovingStatsBatchNormalization", "BATCHNORM_VARIANTS"]


class _MovingStatsBase(keras.layers.Layer):
    """Shared weights: gamma/beta, moving mean/var (init 0/1 as Keras) and a step counter.

    epsilon defaults to 1e-3 as in Keras BatchNormalization and CrossQ's BatchRenorm; it bounds
    the gain 1/sqrt(var + eps) <= 31.6 when a feature is constant (e.g. a batch of one).
    """

    def __init__(
        self, momentum=0.99, epsilon=1e-3, center=True, scale=True, warm_start=True, **kwargs
    ):
        super().__init__(**kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.center = bool(center)
        self.scale = bool(scale)
        self.warm_start = bool(warm_start)
        self.supports_masking = True  # `mask` selects the rows of the batch statistics

    def build(self, input_shape):
        shape = (int(input_shape[-1]),)
        self.gamma = (
            self.add_weight(name="gamma", shape=shape, initializer="ones") if self.scale else None
        )
        self.beta = (
            self.add_weight(name="beta", shape=shape, initializer="zeros") if self.center else None
        )
        self.moving_mean = self.add_weight(
            name="moving_mean", shape=shape, initializer="zeros", trainable=False
        )
        self.moving_variance = self.add_weight(
            name="moving_variance", shape=shape, initializer="ones", trainable=False
        )
        # Number of training-mode calls so far (drives renorm warm-up / EMA bias correction).
        self.step = self.add_weight(
            name="step", shape=(), initializer="zeros", dtype="int64", trainable=False
        )
        super().build(input_shape)

    def _batch_moments(self, x, mask=None):
        """Mean and biased variance over the batch [B, units]; with `mask` (bool [B]) over its
        True rows only (NEXT_STEP reset steps and dropped steps stay out, as Keras
        BatchNormalization does with a mask). A mask with no False row gives exactly the
        unmasked moments; one with no True row gives the unmasked ones too (no 0/0)."""
        axes = list(range(len(x.shape) - 1))
        mean = tf.reduce_mean(x, axis=axes)
        # Two-pass biased (population) variance, like Keras: >= 0, exactly 0 for B == 1.
        var = tf.reduce_mean(tf.square(x - mean), axis=axes)
        if mask is None:
            return mean, var
        w = tf.cast(tf.reshape(mask, [-1, *[1] * (len(x.shape) - 1)]), x.dtype)
        n = tf.reduce_sum(w)
        masked_mean = tf.reduce_sum(w * x, axis=axes) / tf.maximum(n, 1.0)
        masked_var = tf.reduce_sum(w * tf.square(x - masked_mean), axis=axes) / tf.maximum(n, 1.0)
        use_all = tf.logical_or(tf.reduce_all(mask), n == 0.0)
        return tf.where(use_all, mean, masked_mean), tf.where(use_all, var, masked_var)

    def _affine(self, x_hat):
        if self.gamma is not None:
            x_hat = x_hat * self.gamma
        if self.beta is not None:
            x_hat = x_hat + self.beta
        return x_hat

    def _moving_stats(self):
        return tf.convert_to_tensor(self.moving_mean), tf.convert_to_tensor(self.moving_variance)

    def update_rate(self, step):
        """EMA rate a_t used by the training call that makes ``step`` = t (float32 scalar).

        stat <- stat + a_t * (batch_stat - stat). Without warm start a_t = 1 - momentum. With
        ``warm_start`` a_t = (1 - momentum) / (1 - momentum**t), t = 1, 2, ... counting training
        calls: Adam's bias correction (Kingma & Ba 2015, Sec. 3) applied in place, so the stored
        statistic is the debiased EMA sum_k momentum**(t-k) batch_k / sum_k momentum**(t-k) and
        the 0/1 initial values carry no weight once t >= 1 (a_1 = 1).
        """
        one_minus_m = 1.0 - tf.constant(self.momentum, tf.float32)
        if not self.warm_start:
            return one_minus_m
        t = tf.cast(step, tf.float32)
        # Same float32 expression in numerator and denominator: a_1 == 1 exactly.
        return one_minus_m / (1.0 - tf.pow(tf.constant(self.momentum, tf.float32), t))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            momentum=self.momentum,
            epsilon=self.epsilon,
            center=self.center,
            scale=self.scale,
            warm_start=self.warm_start,
        )
        return config


@keras.saving.register_keras_serializable(package="rlnorm")
class BatchRenormalization(_MovingStatsBase):
    """Batch Renormalization (Ioffe 2017, arXiv:1702.03275, Algorithm 1), as used by CrossQ.

    training=True:  x_hat = (x - mu_B) / sigma_B * r + d, with sigma_B = sqrt(var_B + eps),
        sigma = sqrt(moving_var + eps) and (both treated as constants, stop_gradient)
        r = clip(sigma_B / sigma, 1/r_max_t, r_max_t), d = clip((mu_B - mu)/sigma, -d_max_t, d_max_t).
        When no clipping is active this equals (x - mu) / sigma, i.e. the inference output,
        while gradients still flow through mu_B, sigma_B as in batchnorm. Afterwards the moving
        mean/var take one EMA step towards (mu_B, var_B) and the step counter is incremented.
    training=False: x_hat = (x - moving_mean) / sqrt(moving_var + eps).
    Output: gamma * x_hat + beta, same shape as x ([B, units]).

    Warm-up (Ioffe 2017: train "with batchnorm alone, without the correction, then ramp up the
    amount of allowed correction"; the ImageNet experiments use plain BN (r_max=1, d_max=0) for the first 5k
    steps, then relax linearly to r_max=3, d_max=5 over the next ~20k-35k steps). With
    s = number of previous training calls,
        r_max_t = 1 + (r_max - 1) * f(s),   d_max_t = d_max * f(s),
        f(s) = clip((s - warmup_steps) / ramp_steps, 0, 1)   (ramp_steps = 0: step at s).
    So for the first ``warmup_steps`` updates the layer is plain BN while the moving statistics
    converge. CrossQ (adityab/CrossQ, sbx/sac/policies.py) instead uses plain BN for 100k
    gradient steps and then jumps to r_max=3, d_max=5 (ramp_steps=0 reproduces that; note it
    updates moving *variance*, not std as the paper's Algorithm 1, and so do we). Those step
    counts assume 10^5-10^6 updates; on-policy A2C takes one update per rollout (~total_steps/40,
    e.g. 12.5k updates for 500k env steps) and suffers from the train/infer mismatch while in
    the plain-BN phase, so the defaults are compressed: 500 plain-BN updates (5 EMA time
    constants at momentum 0.99, bias of the 0/1 init < 1%) and a 1500-update linear ramp, i.e.
    full renorm after 2000 updates (80k env steps at 40 samples per update).

    Moving statistics: stat <- stat + a_t * (batch_stat - stat), with a_t = 1 - momentum, or with
    ``warm_start=True`` (default) the bias-corrected a_t = (1 - momentum) / (1 - momentum**t)
    of ``update_rate`` (as MovingStatsBatchNormalization), so they are the debiased EMA of the
    batch moments and the 0/1 init carries no weight. Without it the init keeps weight
    momentum**t, 0.61 after the 500 warm-up updates at momentum 0.999, so renormalization would
    start (and r, d be clipped) against statistics still far from the activations'. On CartPole
    (benchmarks/results/batchnorm.md) momentum 0.999 with warm start solved 3/3 seeds, without
    it 2/3; at momentum 0.99 the warm start does not help (0/3 with it, 1/3 without), so the
    slow statistics matter most. agents/cartpole_batch_renorm.py sets 0.999.

    Args: momentum (EMA decay of moving stats, Keras convention), epsilon, center, scale,
        r_max (final bound on r, >= 1), d_max (final bound on |d|, >= 0), warmup_steps,
        ramp_steps (both counted in training calls), warm_start.
    """

    def __init__(
        self,
        momentum=0.99,
        epsilon=1e-3,
        center=True,
        scale=True,
        r_max=3.0,
        d_max=5.0,
        warmup_steps=500,
        ramp_steps=1500,
        warm_start=True,
        **kwargs,
    ):
        super().__init__(
            momentum=momentum,
            epsilon=epsilon,
            center=center,
            scale=scale,
            warm_start=warm_start,
            **kwargs,
        )
        if r_max < 1.0 or d_max < 0.0 or warmup_steps < 0 or ramp_steps < 0:
            raise ValueError("need r_max >= 1, d_max >= 0, warmup_steps >= 0, ramp_steps >= 0")
        self.r_max = float(r_max)
        self.d_max = float(d_max)
        self.warmup_steps = int(warmup_steps)
        self.ramp_steps = int(ramp_steps)

    def clip_bounds(self, step=None):
        """(r_max_t, d_max_t) as float32 scalars for ``step`` (default: the layer's counter)."""
        s = tf.cast(self.step if step is None else step, tf.float32)
        if self.ramp_steps > 0:
            frac = tf.clip_by_value((s - self.warmup_steps) / self.ramp_steps, 0.0, 1.0)
        else:
            frac = tf.cast(s >= self.warmup_steps, tf.float32)
        return 1.0 + (self.r_max - 1.0) * frac, self.d_max * frac

    def call(self, inputs, training=None, mask=None):
        x = tf.convert_to_tensor(inputs)
        mu, var = self._moving_stats()
        sigma = tf.sqrt(var + self.epsilon)
        if not training:
            return self._affine((x - mu) / sigma)

        mu_b, var_b = self._batch_moments(x, mask)
        sigma_b = tf.sqrt(var_b + self.epsilon)
        r_max_t, d_max_t = self.clip_bounds()
        r = tf.stop_gradient(tf.clip_by_value(sigma_b / sigma, 1.0 / r_max_t, r_max_t))
        d = tf.stop_gradient(tf.clip_by_value((mu_b - mu) / sigma, -d_max_t, d_max_t))
        x_hat = (x - mu_b) / sigma_b * r + d

        mu_b, var_b = tf.stop_gradient(mu_b), tf.stop_gradient(var_b)
        if self.warm_start:
            a = self.update_rate(self.step + 1)
            self.moving_mean.assign(mu + a * (mu_b - mu))
            self.moving_variance.assign(var + a * (var_b - var))
        else:  # the plain EMA, written as before warm_start existed (same float32 results)
            m = self.momentum
            self.moving_mean.assign(mu * m + mu_b * (1.0 - m))
            self.moving_variance.assign(var * m + var_b * (1.0 - m))
        self.step.assign_add(tf.constant(1, tf.int64))
        return self._affine(x_hat)

    def get_config(self):
        config = super().get_config()
        config.update(
            r_max=self.r_max,
            d_max=self.d_max,
            warmup_steps=self.warmup_steps,
            ramp_steps=self.ramp_steps,
        )
        return config


@keras.saving.register_keras_serializable(package="rlnorm")
class MovingStatsBatchNormalization(_MovingStatsBase):
    """Batch norm that always normalizes with the moving statistics ("batch_moving").

    Both modes: y = gamma * (x - mu) / sqrt(var + eps) + beta, where (mu, var) are the moving
    statistics *as they were before this call*, read once and wrapped in stop_gradient. So the
    update's loss is computed with exactly the normalization the policy acted with: output for
    ``training=True`` is bit-identical to ``training=False`` (train/infer KL exactly 0), which
    plain BN cannot give (BN, Ioffe & Szegedy 2015, Sec. 3.1 normalizes with batch stats in
    training). Batch Renorm (Ioffe 2017) gets the same forward output only while r, d are
    unclipped; here it holds always, at the price of no gradient through the batch statistics.
    training=True additionally moves (mu, var) one EMA step towards the batch moments
    (mu_B, var_B) of x ([B, units]) after they have been read, so the statistics keep tracking
    the activation distribution for the *next* rollout.

    EMA: stat <- stat + a_t * (batch_stat - stat). Without warm start a_t = 1 - momentum.
    With ``warm_start=True`` (default) a_t = (1 - momentum) / (1 - momentum**t), t = 1, 2, ...
    counting training calls: this is Adam's bias correction (Kingma & Ba 2015, Sec. 3) applied
    in place, so the stored statistic equals the debiased EMA of the batch moments, i.e.
    sum_k momentum**(t-k) batch_k / sum_k momentum**(t-k), and the 0/1 initial values carry
    no weight once t >= 1 (a_1 = 1: the first update copies the first batch's moments).
    Without it, the init keeps weight momentum**t (0.37 after 100 updates at 0.99), so early
    in A2C training activations are normalized by badly lagging statistics. Caveat: with
    warm start a training batch of size 1 sets var to 0 (output scale 1/sqrt(epsilon)).

    Args: momentum, epsilon, center, scale, warm_start.
    """

    def call(self, inputs, training=None, mask=None):
        x = tf.convert_to_tensor(inputs)
        mu, var = self._moving_stats()
        mu, var = tf.stop_gradient(mu), tf.stop_gradient(var)
        y = self._affine((x - mu) / tf.sqrt(var + self.epsilon))
        if training:
            mu_b, var_b = self._batch_moments(tf.stop_gradient(x), mask)
            a = self.update_rate(self.step + 1)
            self.moving_mean.assign(mu + a * (mu_b - mu))
            self.moving_variance.assign(var + a * (var_b - var))
            self.step.assign_add(tf.constant(1, tf.int64))
        return y


BATCHNORM_VARIANTS = {
    "batch_renorm": BatchRenormalization,
    "batch_moving": MovingStatsBatchNormalization,
}
