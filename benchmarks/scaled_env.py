"""Gymnasium envs with their observations and rewards rescaled: the scale-invariance benchmark's
envs (benchmarks/scale_invariance.py). Imports only Gymnasium and NumPy, so SB3's throwaway
venv runs the same envs.

`make_scaled(env_id, level)`: every observation feature i becomes `o_i * f_i + b_i` with
f_i = level * 10**u_i (u_i spread evenly over [-1, 1], in a fixed shuffled order) and an offset
b_i = 3 * f_i * (-1)**i (three of the feature's new units, alternating in sign), and every
reward becomes `r * level`. Level 1 is the plain env (factors 0.1..10 around 1 still apply to
the observations, so level 1 is not the identity; `level=None` is).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np


def feature_affine(obs_dim: int, level: float) -> tuple[np.ndarray, np.ndarray]:
    """(factors, offsets) float64 [obs_dim] for one level (see the module docstring)."""
    u = np.linspace(-1.0, 1.0, obs_dim) if obs_dim > 1 else np.zeros(1)
    u = u[np.random.default_rng(0).permutation(obs_dim)]
    factors = level * 10.0**u
    offsets = 3.0 * factors * (-1.0) ** np.arange(obs_dim)
    return factors, offsets


def make_scaled(env_id: str, level: float | None) -> gym.Env:
    env = gym.make(env_id)
    if level is None:
        return env
    space = env.observation_space
    factors, offsets = feature_affine(int(np.prod(space.shape)), level)
    factors = factors.reshape(space.shape)
    offsets = offsets.reshape(space.shape)
    low = np.asarray(space.low, np.float64) * factors + offsets
    high = np.asarray(space.high, np.float64) * factors + offsets
    scaled_space = gym.spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)
    env = gym.wrappers.TransformObservation(
        env, lambda o: (o * factors + offsets).astype(np.float32), scaled_space
    )
    return gym.wrappers.TransformReward(env, lambda r: r * level)
