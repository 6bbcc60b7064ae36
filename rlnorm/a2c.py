"""A2C's math in one place: the targets and the loss. Both env adapters (`rlnorm.update`,
`rlnorm.compiled.loop`) trace these functions into their update graphs.

Targets: returns and advantages by GAE(lambda), with lambda = 1 giving n-step returns.

Time-limit handling (Pardo et al. 2018, "Time Limits in Reinforcement Learning"; SB3 issue #633):
a *terminated* step does not bootstrap (the true value after it is 0), a *truncated* step
bootstraps from V(final observation), because the episode was cut, not finished. Both end the
lambda-recursion, so no advantage ever crosses an episode boundary.

One implementation for both backends: the arithmetic works on NumPy arrays (Python-stepped
loop) and on TF tensors (compiled loop, unrolled over the static T).

The loss: A2C's (Mnih et al. 2016), as in SB3's `A2C.train`, with a validity mask.

    policy_loss  = -mean(A * log pi(a|s))
    value_loss   =  mean((R - V(s))^2)
    entropy_loss = -mean(H[pi(.|s)])
    policy network minimizes  policy_loss + ent_coef * entropy_loss
    value network  minimizes  vf_coef * value_loss

`valid` (float [N], 1 or 0) drops transitions that are not real: the reset step of Gymnasium's
NEXT_STEP autoreset, and steps dropped for non-finite input. Means are over valid steps only.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


# -- targets -------------------------------------------------------------------------------------
def next_state_values(values, last_values, truncated, final_values):
    """V(s_{t+1}) for every step [T, B]: values[t+1], last_values at t = T-1, and V(final obs)
    where the step was truncated (SAME_STEP autoreset: the env already returned the reset obs).

    values: [T, B] V(s_t) at acting time; last_values: [B] V(obs after the rollout);
    truncated: bool [T, B]; final_values: [T, B] V(final obs), read only where truncated.
    """
    if tf.is_tensor(values):  # TF path: also traces inside tf.function
        nxt = tf.concat([values[1:], last_values[None]], axis=0)
        return tf.where(tf.cast(truncated, tf.bool), final_values, nxt)
    nxt = np.concatenate([values[1:], last_values[None]], axis=0)
    return np.where(truncated, final_values, nxt)


def compute_gae(rewards, values, next_values, terminated, dones, gamma: float, gae_lambda: float):
    """GAE(lambda) advantages and lambda-returns, all [T, B].

        delta_t = r_t + gamma * (1 - terminated_t) * V(s_{t+1}) - V(s_t)
        A_t     = delta_t + gamma * lambda * (1 - done_t) * A_{t+1},   A_T = 0
        R_t     = A_t + V(s_t)

    rewards, values, next_values: float [T, B]; terminated, dones (terminated | truncated,
    or any step after which the next stored step belongs to another episode): bool/float [T, B].
    """
    is_tf = tf.is_tensor(rewards)
    cast = (
        (lambda x: tf.cast(x, rewards.dtype)) if is_tf else (lambda x: np.asarray(x, rewards.dtype))
    )
    not_terminated = 1.0 - cast(terminated)
    not_done = 1.0 - cast(dones)
    deltas = rewards + gamma * not_terminated * next_values - values
    n_steps = rewards.shape[0]
    advantages = [None] * n_steps
    running = deltas[n_steps - 1] * 0.0
    for t in reversed(range(n_steps)):
        running = deltas[t] + gamma * gae_lambda * not_done[t] * running
        advantages[t] = running
    advantages = tf.stack(advantages) if is_tf else np.stack(advantages)
    return advantages, advantages + values


# -- the loss ------------------------------------------------------------------------------------
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
