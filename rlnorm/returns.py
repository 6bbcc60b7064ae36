"""Returns and advantages: GAE(lambda), with lambda = 1 giving n-step returns.

Time-limit handling (Pardo et al. 2018, "Time Limits in Reinforcement Learning"; SB3 issue #633):
a *terminated* step does not bootstrap (the true value after it is 0), a *truncated* step
bootstraps from V(final observation), because the episode was cut, not finished. Both end the
lambda-recursion, so no advantage ever crosses an episode boundary.

One implementation for both backends: the arithmetic works on NumPy arrays (Python-stepped
loop) and on TF tensors (compiled loop, unrolled over the static T).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


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
