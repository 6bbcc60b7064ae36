"""Learning-rate schedules, computed in the graph from the optimizer's update counter.

The compiled backend runs many updates inside one call, so a schedule cannot be a Python value
the loop sets between calls: it is a function of `iterations` (the updates applied so far,
checkpointed with the optimizer), evaluated inside each update.

`linear` is SB3's / rl-zoo's `lin_<lr>` (`linear_schedule(initial)(progress_remaining)`):
SB3 sets progress_remaining = 1 - num_timesteps / total_timesteps after collecting the
rollout and before training on it, so update k (1-based) uses

    lr_k = learning_rate * (1 - k * n_steps * n_envs / total_steps)

clamped at 0 (rlnorm's last update may end past total_steps; SB3's would go negative).
"""

from __future__ import annotations

import tensorflow as tf


def linear_factor(steps_per_update: int, total_steps: int):
    """iterations (int []) -> float32 [] multiplier 1 - min(1, (iterations + 1) * spu / total)."""

    def factor(iterations):
        done = tf.cast(iterations + 1, tf.float64) * float(steps_per_update)
        return tf.cast(1.0 - tf.minimum(done / float(total_steps), 1.0), tf.float32)

    return factor


def lr_factor(config):
    """The learning-rate multiplier of `config.lr_schedule` (None for "constant": the rate is
    used as it is, with no extra op, so constant runs keep their numbers bit for bit)."""
    if config.lr_schedule == "constant":
        return None
    return linear_factor(config.n_steps * config.n_envs, config.total_steps)
