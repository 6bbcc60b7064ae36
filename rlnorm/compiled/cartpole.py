"""CartPole-v1 as pure TF ops (mirrors gymnasium/envs/classic_control/cartpole.py).

Physics state: float64 [N, 4] = (x, x_dot, theta, theta_dot), exactly Gymnasium's
`env.unwrapped.state`. Observation: the state cast to float32 [N, 4]. Action: int32 [N] in
{0, 1} (like Gymnasium, anything other than 1 pushes left). Reward: +1 on every step including
the terminating one (`sutton_barto_reward=False`, Gymnasium's default). Time limit 500.

The arithmetic is written in the same order as Gymnasium's (which runs on NumPy float64
scalars), so CPU results are bit-identical: TF's float64 sin/cos agree with glibc's libm.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
from gymnasium import spaces

from rlnorm.compiled.core import uniform_from_bits

# Constants computed exactly as in CartPoleEnv.__init__ (same Python expressions, so the same
# float64 values, e.g. total_mass = 1.1 + rounding).
GRAVITY = 9.8
MASSCART = 1.0
MASSPOLE = 0.1
TOTAL_MASS = MASSPOLE + MASSCART
LENGTH = 0.5  # half the pole's length
POLEMASS_LENGTH = MASSPOLE * LENGTH
FORCE_MAG = 10.0
TAU = 0.02  # seconds between state updates
THETA_THRESHOLD_RADIANS = 12 * 2 * math.pi / 360
X_THRESHOLD = 2.4
RESET_LOW, RESET_HIGH = -0.05, 0.05


class CartPoleDynamics:
    """Batched CartPole physics; see the module docstring for shapes and dtypes."""

    env_id = "CartPole-v1"
    state_dim = 4
    obs_dim = 4
    max_episode_steps = 500

    def __init__(self):
        high = np.array(
            [X_THRESHOLD * 2, np.inf, THETA_THRESHOLD_RADIANS * 2, np.inf], dtype=np.float32
        )
        self.action_space = spaces.Discrete(2)
        self.observation_space = spaces.Box(-high, high, dtype=np.float32)

    def sample_initial(self, bits: tf.Tensor) -> tf.Tensor:
        # Gymnasium: np_random.uniform(low=-0.05, high=0.05, size=(4,)) in float64.
        return uniform_from_bits(bits, RESET_LOW, RESET_HIGH)

    def observe(self, physics: tf.Tensor) -> tf.Tensor:
        return tf.cast(physics, tf.float32)

    def transition(self, physics, action, elapsed):
        del elapsed  # CartPole's arithmetic does not depend on it
        x, x_dot, theta, theta_dot = tf.unstack(physics, axis=1)
        force = tf.where(
            tf.equal(action, 1),
            tf.constant(FORCE_MAG, tf.float64),
            tf.constant(-FORCE_MAG, tf.float64),
        )
        costheta = tf.cos(theta)
        sintheta = tf.sin(theta)

        temp = (force + POLEMASS_LENGTH * tf.square(theta_dot) * sintheta) / TOTAL_MASS
        thetaacc = (GRAVITY * sintheta - costheta * temp) / (
            LENGTH * (4.0 / 3.0 - MASSPOLE * tf.square(costheta) / TOTAL_MASS)
        )
        xacc = temp - POLEMASS_LENGTH * thetaacc * costheta / TOTAL_MASS

        # kinematics_integrator == "euler" (Gymnasium's default): positions use old velocities.
        x = x + TAU * x_dot
        x_dot = x_dot + TAU * xacc
        theta = theta + TAU * theta_dot
        theta_dot = theta_dot + TAU * thetaacc
        physics = tf.stack([x, x_dot, theta, theta_dot], axis=1)

        terminated = (
            (x < -X_THRESHOLD)
            | (x > X_THRESHOLD)
            | (theta < -THETA_THRESHOLD_RADIANS)
            | (theta > THETA_THRESHOLD_RADIANS)
        )
        # sutton_barto_reward=False: +1 for every step, the terminating one included.
        reward = tf.ones_like(x)
        return physics, reward, terminated
