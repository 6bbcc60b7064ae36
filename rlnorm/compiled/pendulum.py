"""Pendulum-v1 as pure TF ops (mirrors gymnasium/envs/classic_control/pendulum.py, g = 10).

Physics state: float64 [N, 2] = (theta, theta_dot), Gymnasium's `env.unwrapped.state`.
Observation: float32 [N, 3] = (cos theta, sin theta, theta_dot). Action: float32 [N, 1], the
torque, clipped to [-2, 2]. Reward: -(angle_normalize(theta)**2 + 0.1 * theta_dot**2
+ 0.001 * u**2), computed from the state *before* the step. Never terminates; time limit 200.

Gymnasium receives a float32 action, so `u` is a NumPy float32 scalar and, under NumPy 2's
promotion rules (NEP 50), `u**2`, `0.001 * u**2` and `3.0 * u` are float32 operations; they
are emulated here with `round_f32` so the float64 state stays bit-identical.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from gymnasium import spaces

from rlnorm.compiled.core import round_f32, uniform_from_bits

MAX_SPEED = 8
MAX_TORQUE = 2.0
DT = 0.05
G = 10.0
M = 1.0
L = 1.0
DEFAULT_X = np.pi  # reset: theta ~ U(-pi, pi)
DEFAULT_Y = 1.0  # reset: theta_dot ~ U(-1, 1)


def angle_normalize(x: tf.Tensor) -> tf.Tensor:
    """((x + pi) % (2 pi)) - pi with Python's floored modulo (tf.math.floormod matches it)."""
    return tf.math.floormod(x + np.pi, 2 * np.pi) - np.pi


class PendulumDynamics:
    """Batched Pendulum physics; see the module docstring for shapes and dtypes."""

    env_id = "Pendulum-v1"
    state_dim = 2
    obs_dim = 3
    max_episode_steps = 200

    def __init__(self):
        high = np.array([1.0, 1.0, MAX_SPEED], dtype=np.float32)
        self.action_space = spaces.Box(
            low=-MAX_TORQUE, high=MAX_TORQUE, shape=(1,), dtype=np.float32
        )
        self.observation_space = spaces.Box(low=-high, high=high, dtype=np.float32)

    def sample_initial(self, bits: tf.Tensor) -> tf.Tensor:
        # Gymnasium: np_random.uniform(low=-[pi, 1], high=[pi, 1]) in float64.
        return uniform_from_bits(bits, [-DEFAULT_X, -DEFAULT_Y], [DEFAULT_X, DEFAULT_Y])

    def observe(self, physics: tf.Tensor) -> tf.Tensor:
        theta, theta_dot = tf.unstack(physics, axis=1)
        return tf.cast(tf.stack([tf.cos(theta), tf.sin(theta), theta_dot], axis=1), tf.float32)

    def transition(self, physics, action, elapsed):
        del elapsed
        th, thdot = tf.unstack(physics, axis=1)
        g, m, l, dt = G, M, L, DT  # noqa: E741  (Gymnasium's names)

        # np.clip of a float32 array stays float32; exact in float64 as well.
        u = tf.cast(tf.clip_by_value(action[:, 0], -MAX_TORQUE, MAX_TORQUE), tf.float64)
        # 0.001 * (u**2): both float32 operations (u*u is exact in float64, then rounded).
        control_cost = round_f32(float(np.float32(0.001)) * round_f32(tf.square(u)))
        costs = tf.square(angle_normalize(th)) + 0.1 * tf.square(thdot) + control_cost

        # 3.0 / (m * l**2) * u is a float32 product; the rest is float64.
        newthdot = thdot + (3 * g / (2 * l) * tf.sin(th) + round_f32(3.0 / (m * l**2) * u)) * dt
        newthdot = tf.clip_by_value(newthdot, -MAX_SPEED, MAX_SPEED)
        newth = th + newthdot * dt

        terminated = tf.zeros_like(th, dtype=tf.bool)
        return tf.stack([newth, newthdot], axis=1), -costs, terminated
