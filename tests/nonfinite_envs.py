"""Fake Gymnasium envs that misbehave at a known env, step and feature, for tests/test_errors.py
and tests/test_faults.py. Registered on import, so ids work in-process and, as
`nonfinite_envs:<id>`, in a subprocess whose PYTHONPATH holds tests/.

Every env: observation float32 [3] = (step index in the episode, 1.0, -1.0) unless said
otherwise, reward 1.0, actions Discrete(2) ignored, episodes terminate after `EPISODE_LENGTH`
steps. Which env of a vector env misbehaves is chosen by its reset seed: Gymnasium seeds sub-env
i with `seed + i`, and rlnorm resets a fresh run with `config.seed`, so with `seed = 0` the env
whose first seeded reset gets `BAD_SEED` is env index `BAD_SEED`.

- `NAN_OBS_ID`: feature `BAD_FEATURE` of the observation returned by the env's `BAD_STEP`-th
  `step()` call (counted over its whole life, not per episode) is NaN. Once only.
- `INF_REWARD_ID`: the reward of the `BAD_STEP`-th `step()` call is +inf. Once only.
- `NAN_RESET_ID`: feature `BAD_FEATURE` of the very first reset observation is NaN.
- `HUGE_REWARD_ID`: the reward of the `BAD_STEP`-th `step()` call is `HUGE_REWARD` = 1e38, finite
  in float32, so it passes the input checks, but its square overflows: the value loss is inf.
- `EXTREME_SCALE_ID`: well-behaved but badly scaled observations: feature 0 varies around 1e9,
  feature 1 is the constant 3.0 (zero variance), feature 2 is the constant -1e9.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

NAN_OBS_ID = "rlnorm_test/NaNObservation-v0"
INF_REWARD_ID = "rlnorm_test/InfReward-v0"
NAN_RESET_ID = "rlnorm_test/NaNReset-v0"
HUGE_REWARD_ID = "rlnorm_test/HugeReward-v0"
EXTREME_SCALE_ID = "rlnorm_test/ExtremeScale-v0"

BAD_SEED = 2  # env index 2 of a vector env reset with seed 0
BAD_STEP = 7  # the 7th step() call of that env
BAD_FEATURE = 1
HUGE_REWARD = 1e38
EPISODE_LENGTH = 20


class FaultyEnv(gym.Env):
    """See the module docstring. `fault` is one of: none, nan_obs, inf_reward, nan_reset,
    huge_reward, extreme_scale."""

    metadata = {"render_modes": []}

    def __init__(self, fault: str = "none"):
        self.fault = fault
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.bad = None  # decided at the first seeded reset
        self.n_steps = 0  # step() calls over the env's life
        self.t = 0  # step index in the episode

    def _obs(self) -> np.ndarray:
        if self.fault == "extreme_scale":
            return np.array([1e9 * (1.0 + 0.01 * self.t), 3.0, -1e9], np.float32)
        return np.array([self.t, 1.0, -1.0], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        first = self.bad is None
        if first:
            self.bad = seed == BAD_SEED
        self.t = 0
        obs = self._obs()
        if first and self.bad and self.fault == "nan_reset":
            obs[BAD_FEATURE] = np.nan
        return obs, {}

    def step(self, action):
        self.n_steps += 1
        self.t += 1
        obs, reward = self._obs(), 1.0
        if self.bad and self.n_steps == BAD_STEP:
            if self.fault == "nan_obs":
                obs[BAD_FEATURE] = np.nan
            elif self.fault == "inf_reward":
                reward = np.inf
            elif self.fault == "huge_reward":
                reward = HUGE_REWARD
        return obs, reward, self.t >= EPISODE_LENGTH, False, {}


for _id, _fault in (
    (NAN_OBS_ID, "nan_obs"),
    (INF_REWARD_ID, "inf_reward"),
    (NAN_RESET_ID, "nan_reset"),
    (HUGE_REWARD_ID, "huge_reward"),
    (EXTREME_SCALE_ID, "extreme_scale"),
):
    if _id not in gym.registry:  # imported as `nonfinite_envs` and as `tests.nonfinite_envs`
        gym.register(_id, entry_point=FaultyEnv, kwargs={"fault": _fault})
