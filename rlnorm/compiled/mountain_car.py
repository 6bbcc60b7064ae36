"""MountainCar-v0 and MountainCarContinuous-v0 as pure TF ops.

Mirrors gymnasium/envs/classic_control/mountain_car.py and continuous_mountain_car.py.

Physics state: float64 [N, 2] = (position, velocity), Gymnasium's `env.unwrapped.state`.
Observation: the state cast to float32 [N, 2].

* MountainCar-v0: action int32 [N] in {0, 1, 2} (push left, none, right; out-of-range actions
  are clipped, Gymnasium would raise). Reward -1 per step. Terminates at position >= 0.5 with
  velocity >= 0. Time limit 200. Gymnasium computes in float64 throughout.
* MountainCarContinuous-v0: action float32 [N, 1], clipped to [-1, 1] for the force, power
  0.0015. Reward -0.1 * action**2 (unclipped action) plus 100 on reaching position >= 0.45
  with velocity >= 0. Time limit 999. Gymnasium mixes float32 and float64 here (see
  `MountainCarContinuousDynamics.transition`), which is reproduced exactly.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from gymnasium import spaces

from rlnorm.compiled.core import round_f32, uniform_from_bits

MIN_POSITION = -1.2
MAX_POSITION = 0.6
MAX_SPEED = 0.07
GRAVITY = 0.0025
RESET_LOW, RESET_HIGH = -0.6, -0.4


def _f32(value: float) -> float:
    """A Python float rounded to float32 (how NumPy 2 treats a Python float next to a
    float32 scalar, NEP 50)."""
    return float(np.float32(value))


def _pick(fresh: tf.Tensor, if_fresh: float, otherwise: float) -> tf.Tensor:
    """float64 [N]: `if_fresh` where `fresh`, else `otherwise`."""
    return tf.where(fresh, tf.constant(if_fresh, tf.float64), tf.constant(otherwise, tf.float64))


def _observation_space() -> spaces.Box:
    low = np.array([MIN_POSITION, -MAX_SPEED], dtype=np.float32)
    high = np.array([MAX_POSITION, MAX_SPEED], dtype=np.float32)
    return spaces.Box(low, high, dtype=np.float32)


def _sample_initial(bits: tf.Tensor) -> tf.Tensor:
    # Gymnasium: np.array([np_random.uniform(low=-0.6, high=-0.4), 0]) in float64; the second
    # column of random bits is unused.
    position = uniform_from_bits(bits[:, 0], RESET_LOW, RESET_HIGH)
    return tf.stack([position, tf.zeros_like(position)], axis=1)


class MountainCarDynamics:
    """Batched discrete MountainCar physics; see the module docstring."""

    env_id = "MountainCar-v0"
    state_dim = 2
    obs_dim = 2
    max_episode_steps = 200
    force = 0.001
    goal_position = 0.5
    goal_velocity = 0

    def __init__(self):
        self.action_space = spaces.Discrete(3)
        self.observation_space = _observation_space()

    def sample_initial(self, bits: tf.Tensor) -> tf.Tensor:
        return _sample_initial(bits)

    def observe(self, physics: tf.Tensor) -> tf.Tensor:
        return tf.cast(physics, tf.float32)

    def transition(self, physics, action, elapsed):
        del elapsed
        position, velocity = tf.unstack(physics, axis=1)
        push = tf.cast(tf.clip_by_value(action, 0, 2) - 1, tf.float64)
        # `velocity += a + b` adds the parenthesised sum in one go.
        velocity = velocity + (push * self.force + tf.cos(3 * position) * (-GRAVITY))
        velocity = tf.clip_by_value(velocity, -MAX_SPEED, MAX_SPEED)
        position = position + velocity
        position = tf.clip_by_value(position, MIN_POSITION, MAX_POSITION)
        # Inelastic wall on the left.
        velocity = tf.where(
            (position == MIN_POSITION) & (velocity < 0), tf.zeros_like(velocity), velocity
        )
        terminated = (position >= self.goal_position) & (velocity >= self.goal_velocity)
        reward = tf.fill(tf.shape(position), tf.constant(-1.0, tf.float64))
        return tf.stack([position, velocity], axis=1), reward, terminated


class MountainCarContinuousDynamics:
    """Batched continuous MountainCar physics; see the module docstring.

    Gymnasium stores the state as float32 after every step (but float64 right after reset),
    and NumPy 2 evaluates `np.float32 op python_float` in float32. The transition reproduces
    both: rows with `elapsed == 0` take the float64 path of the first step, the others the
    float32 path, and float32 arithmetic is emulated with `round_f32` on float64 values.
    """

    env_id = "MountainCarContinuous-v0"
    state_dim = 2
    obs_dim = 2
    max_episode_steps = 999
    min_action = -1.0
    max_action = 1.0
    goal_position = 0.45  # 0.5 in the discrete version
    goal_velocity = 0
    power = 0.0015

    def __init__(self):
        self.action_space = spaces.Box(
            low=self.min_action, high=self.max_action, shape=(1,), dtype=np.float32
        )
        self.observation_space = _observation_space()

    def sample_initial(self, bits: tf.Tensor) -> tf.Tensor:
        return _sample_initial(bits)

    def observe(self, physics: tf.Tensor) -> tf.Tensor:
        return tf.cast(physics, tf.float32)

    def transition(self, physics, action, elapsed):
        position, velocity = tf.unstack(physics, axis=1)
        fresh = tf.equal(elapsed, 0)  # state still float64, straight from reset
        a = tf.cast(action[:, 0], tf.float64)  # exact: the action is float32

        # force = min(max(a, -1.0), 1.0): an in-range a stays a float32 scalar, so
        # force * power is a float32 product; a clipped a becomes the Python float +-1.0.
        in_range = (a >= self.min_action) & (a <= self.max_action)
        clipped = tf.clip_by_value(a, self.min_action, self.max_action)
        force_power = tf.where(in_range, round_f32(a * _f32(self.power)), clipped * self.power)

        # 3 * position is a float32 product once the state is float32; math.cos is float64.
        three_p = tf.where(fresh, 3 * position, round_f32(3 * position))
        gravity_term = GRAVITY * tf.cos(three_p)
        # float32 force_power minus a Python float is a float32 subtraction.
        delta = tf.where(
            in_range, round_f32(force_power - round_f32(gravity_term)), force_power - gravity_term
        )
        velocity = tf.where(fresh, velocity + delta, round_f32(velocity + round_f32(delta)))

        # Comparisons of a float32 scalar with a Python float happen in float32 (NEP 50), so
        # the bounds become their float32 roundings on the float32 path.
        max_speed = _pick(fresh, MAX_SPEED, _f32(MAX_SPEED))
        velocity = tf.where(velocity > max_speed, max_speed, velocity)
        velocity = tf.where(velocity < -max_speed, -max_speed, velocity)
        # position += velocity (a float32 sum when position is float32)
        position = tf.where(fresh, position + velocity, round_f32(position + velocity))
        max_position = _pick(fresh, MAX_POSITION, _f32(MAX_POSITION))
        min_position = _pick(fresh, MIN_POSITION, _f32(MIN_POSITION))
        position = tf.where(position > max_position, max_position, position)
        position = tf.where(position < min_position, min_position, position)
        velocity = tf.where(
            (position == min_position) & (velocity < 0), tf.zeros_like(velocity), velocity
        )

        goal = _pick(fresh, self.goal_position, _f32(self.goal_position))
        terminated = (position >= goal) & (velocity >= self.goal_velocity)
        # reward = 100.0 if terminated else 0, minus math.pow(action[0], 2) * 0.1 in float64
        # on the unclipped action.
        reward = tf.where(terminated, tf.constant(100.0, tf.float64), tf.constant(0.0, tf.float64))
        reward = reward - tf.square(a) * 0.1
        # Gymnasium stores np.array([position, velocity], dtype=np.float32).
        return round_f32(tf.stack([position, velocity], axis=1)), reward, terminated
