"""Acrobot-v1 as pure TF ops (mirrors gymnasium/envs/classic_control/acrobot.py).

Physics state: float64 [N, 4] = (theta1, theta2, dtheta1, dtheta2), Gymnasium's
`env.unwrapped.state`. Observation: float32 [N, 6] =
(cos theta1, sin theta1, cos theta2, sin theta2, dtheta1, dtheta2). Action: int32 [N] in
{0, 1, 2} -> torque (-1, 0, +1) (out-of-range actions are clipped; Gymnasium would raise).
Reward: -1 per step, 0 on the terminating step. Time limit 500.

Dynamics: the "book" equations integrated with one classical RK4 step of dt = 0.2, then the
angles are wrapped to [-pi, pi] and the velocities bounded, all in Gymnasium's operation order.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from gymnasium import spaces

from rlnorm.compiled.core import round_f32, uniform_from_bits

pi = np.pi  # the same float64 value as numpy.pi used by Gymnasium

DT = 0.2
LINK_LENGTH_1 = 1.0
LINK_MASS_1 = 1.0
LINK_MASS_2 = 1.0
LINK_COM_POS_1 = 0.5
LINK_COM_POS_2 = 0.5
LINK_MOI = 1.0
MAX_VEL_1 = 4 * pi
MAX_VEL_2 = 9 * pi
RESET_LOW, RESET_HIGH = -0.1, 0.1

# `wrap` in Gymnasium is a while loop of exact +-2pi steps. From a wrapped state one RK4 step
# moves an angle by well under 2pi in practice (random rollouts peak near 1.3 pi before
# wrapping), so a few unrolled iterations reproduce the loop exactly without a data-dependent
# tf.while_loop; anything further out (only reachable through set_state) is brought into range
# with floor division, which is correct but not guaranteed bit-identical.
_WRAP_UNROLL = 3


def wrap(x: tf.Tensor, m: float, M: float) -> tf.Tensor:
    """Gymnasium's `wrap`: shift x by multiples of (M - m) into [m, M]. float64 in/out."""
    diff = M - m
    for _ in range(_WRAP_UNROLL):
        x = tf.where(x > M, x - diff, x)
    x = tf.where(x > M, x - diff * tf.math.ceil((x - M) / diff), x)
    for _ in range(_WRAP_UNROLL):
        x = tf.where(x < m, x + diff, x)
    x = tf.where(x < m, x + diff * tf.math.ceil((m - x) / diff), x)
    return x


def bound(x: tf.Tensor, m: float, M: float) -> tf.Tensor:
    """Gymnasium's `bound`: min(max(x, m), M)."""
    return tf.minimum(tf.maximum(x, m), M)


def _dsdt(theta1, theta2, dtheta1, dtheta2, a):
    """Time derivatives (dtheta1, dtheta2, ddtheta1, ddtheta2); float64 [N] each.

    Written with the same expressions as AcrobotEnv._dsdt ("book" variant) so the float64
    operations happen in the same order. `x**2` on NumPy float64 scalars calls libm `pow`,
    which is not always correctly rounded; tf.square is, so an occasional 1-ulp difference
    remains here (see the tests' tolerance)."""
    m1 = LINK_MASS_1
    m2 = LINK_MASS_2
    l1 = LINK_LENGTH_1
    lc1 = LINK_COM_POS_1
    lc2 = LINK_COM_POS_2
    I1 = LINK_MOI
    I2 = LINK_MOI
    g = 9.8
    cos, sin = tf.cos, tf.sin
    d1 = m1 * lc1**2 + m2 * (l1**2 + lc2**2 + 2 * l1 * lc2 * cos(theta2)) + I1 + I2
    d2 = m2 * (lc2**2 + l1 * lc2 * cos(theta2)) + I2
    phi2 = m2 * lc2 * g * cos(theta1 + theta2 - pi / 2.0)
    phi1 = (
        -m2 * l1 * lc2 * tf.square(dtheta2) * sin(theta2)
        - 2 * m2 * l1 * lc2 * dtheta2 * dtheta1 * sin(theta2)
        + (m1 * lc1 + m2 * l1) * g * cos(theta1 - pi / 2)
        + phi2
    )
    ddtheta2 = (a + d2 / d1 * phi1 - m2 * l1 * lc2 * tf.square(dtheta1) * sin(theta2) - phi2) / (
        m2 * lc2**2 + I2 - tf.square(d2) / d1
    )
    ddtheta1 = -(d2 * ddtheta2 + phi1) / d1
    return dtheta1, dtheta2, ddtheta1, ddtheta2


def rk4_step(y0: list, a: tf.Tensor) -> list:
    """One RK4 step of length DT, as Gymnasium's `rk4(derivs, y0, [0, dt])`.

    Gymnasium integrates the 5-vector (state, torque) whose torque derivative is 0.0, so the
    torque stays constant (a + dt2 * 0.0 == a); here it is simply passed along."""
    dt = DT - 0
    dt2 = dt / 2.0
    k1 = _dsdt(*y0, a)
    k2 = _dsdt(*[y + dt2 * k for y, k in zip(y0, k1)], a)
    k3 = _dsdt(*[y + dt2 * k for y, k in zip(y0, k2)], a)
    k4 = _dsdt(*[y + dt * k for y, k in zip(y0, k3)], a)
    return [
        y + dt / 6.0 * (ka + 2 * kb + 2 * kc + kd) for y, ka, kb, kc, kd in zip(y0, k1, k2, k3, k4)
    ]


class AcrobotDynamics:
    """Batched Acrobot physics; see the module docstring for shapes and dtypes."""

    env_id = "Acrobot-v1"
    state_dim = 4
    obs_dim = 6
    max_episode_steps = 500

    def __init__(self):
        high = np.array([1.0, 1.0, 1.0, 1.0, MAX_VEL_1, MAX_VEL_2], dtype=np.float32)
        self.observation_space = spaces.Box(low=-high, high=high, dtype=np.float32)
        self.action_space = spaces.Discrete(3)

    def sample_initial(self, bits: tf.Tensor) -> tf.Tensor:
        # Gymnasium draws uniform(-0.1, 0.1, size=(4,)) and stores it as float32.
        return round_f32(uniform_from_bits(bits, RESET_LOW, RESET_HIGH))

    def observe(self, physics: tf.Tensor) -> tf.Tensor:
        theta1, theta2, dtheta1, dtheta2 = tf.unstack(physics, axis=1)
        obs = tf.stack(
            [tf.cos(theta1), tf.sin(theta1), tf.cos(theta2), tf.sin(theta2), dtheta1, dtheta2],
            axis=1,
        )
        return tf.cast(obs, tf.float32)

    def transition(self, physics, action, elapsed):
        del elapsed
        # AVAIL_TORQUE = [-1.0, 0.0, +1] indexed by the action.
        torque = tf.cast(tf.clip_by_value(action, 0, 2) - 1, tf.float64)
        ns = rk4_step(tf.unstack(physics, axis=1), torque)
        theta1 = wrap(ns[0], -pi, pi)
        theta2 = wrap(ns[1], -pi, pi)
        dtheta1 = bound(ns[2], -MAX_VEL_1, MAX_VEL_1)
        dtheta2 = bound(ns[3], -MAX_VEL_2, MAX_VEL_2)
        physics = tf.stack([theta1, theta2, dtheta1, dtheta2], axis=1)
        terminated = -tf.cos(theta1) - tf.cos(theta2 + theta1) > 1.0
        reward = tf.where(terminated, tf.constant(0.0, tf.float64), tf.constant(-1.0, tf.float64))
        return physics, reward, terminated
