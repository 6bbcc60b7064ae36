"""The A2C loss (Mnih et al. 2016), as in SB3's `A2C.train`, with a validity mask.

    policy_loss  = -mean(A * log pi(a|s))
    value_loss   =  mean((R - V(s))^2)
    entropy_loss = -mean(H[pi(.|s)])
    policy network minimizes  policy_loss + ent_coef * entropy_loss
    value network  minimizes  vf_coef * value_loss

`valid` (float [N], 1 or 0) drops transitions that are not real: the reset step of Gymnasium's
NEXT_STEP autoreset, and steps dropped for non-finite input. Means are over valid steps only.
"""

from __future__ import annotations

import tensorflow as tf


def masked_mean(x: tf.Tensor, valid: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(x * valid) / tf.maximum(tf.reduce_sum(valid), 1.0)


def normalize_advantages(advantages: tf.Tensor, valid: tf.Tensor) -> tf.Tensor:
    """Standardize over valid steps (population std, +1e-8 as SB3)."""
    mean = masked_mean(advantages, valid)
    std = tf.sqrt(masked_mean(tf.square(advantages - mean), valid))
    return (advantages - mean) / (std + 1e-8)


def a2c_loss(
    log_prob,
    entropy,
    values,
    advantages,
    returns,
    valid,
    ent_coef: float,
    vf_coef: float,
    normalize_advantage: bool,
) -> dict[str, tf.Tensor]:
    """All inputs float32 [N] (N = T * B). Returns the scalar losses of both networks."""
    if normalize_advantage:
        advantages = normalize_advantages(advantages, valid)
    advantages = tf.stop_gradient(advantages)
    returns = tf.stop_gradient(returns)
    policy_loss = -masked_mean(advantages * log_prob, valid)
    entropy_loss = -masked_mean(entropy, valid)
    value_loss = masked_mean(tf.square(returns - values), valid)
    return {
        "policy_loss": policy_loss,
        "value_loss": value_loss,
        "entropy": -entropy_loss,
        "policy_total_loss": policy_loss + ent_coef * entropy_loss,
        "value_total_loss": vf_coef * value_loss,
    }


def explained_variance(values: tf.Tensor, returns: tf.Tensor, valid: tf.Tensor) -> tf.Tensor:
    """1 - Var[R - V] / Var[R] over valid steps (SB3's definition; NaN-free: 0 if Var[R] = 0)."""

    def var(x):
        return masked_mean(tf.square(x - masked_mean(x, valid)), valid)

    var_returns = var(returns)
    return tf.where(
        var_returns > 0, 1.0 - var(returns - values) / tf.maximum(var_returns, 1e-12), 0.0
    )
