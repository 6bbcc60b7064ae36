"""Fake Gymnasium envs whose every number is known in advance, for rollout and training tests.

`FakeCounter-v0` (registered on import as `rlnorm_test/FakeCounter-v0`, so the id
`fake_envs:rlnorm_test/FakeCounter-v0` works through rlnorm's `module:EnvName-vN` form):

- observation float32 [2] = (episode id, step index). The step index is 0 after reset and
  k after the k-th step of the episode. Episode ids are `1000 * reset_seed + c` for the
  c-th episode of this env instance, so ids are unique across the envs of a vector env
  (Gymnasium seeds sub-env i with seed + i).
- reward of the step that reaches step index k: `REWARD_SCALE * k` (an episode of length L
  returns REWARD_SCALE * L * (L + 1) / 2).
- the episode's kind is `episode_id % 3` (`kind_of`):
    0: terminated at step 3,
    1: truncated by the env itself at step 4,
    2: never ends on its own; `max_episode_steps=6` (Gymnasium's TimeLimit) truncates it at 6.
- actions (Discrete(2)) are ignored, so the trajectory does not depend on the policy.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

ENV_ID = "rlnorm_test/FakeCounter-v0"
MAX_EPISODE_STEPS = 6
TERMINATE_AT = 3  # kind 0
SELF_TRUNCATE_AT = 4  # kind 1
REWARD_SCALE = 10.0
EPISODE_LENGTHS = {0: TERMINATE_AT, 1: SELF_TRUNCATE_AT, 2: MAX_EPISODE_STEPS}
TERMINATES = {0: True, 1: False, 2: False}


def kind_of(episode_id: int) -> int:
    return int(episode_id) % 3


def episode_return(kind: int) -> float:
    length = EPISODE_LENGTHS[kind]
    return REWARD_SCALE * length * (length + 1) / 2


def reward_at(step_index: int) -> float:
    return REWARD_SCALE * step_index


class FakeCounterEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self):
        self.observation_space = gym.spaces.Box(0.0, 1e7, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.base = 0
        self.n_resets = 0
        self.episode_id = 0
        self.step_index = 0

    def _obs(self) -> np.ndarray:
        return np.array([self.episode_id, self.step_index], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.base, self.n_resets = 1000 * int(seed), 0
        self.episode_id = self.base + self.n_resets
        self.n_resets += 1
        self.step_index = 0
        return self._obs(), {}

    def step(self, action):
        self.step_index += 1
        kind = kind_of(self.episode_id)
        terminated = kind == 0 and self.step_index == TERMINATE_AT
        truncated = kind == 1 and self.step_index == SELF_TRUNCATE_AT
        return self._obs(), reward_at(self.step_index), terminated, truncated, {}


if ENV_ID not in gym.registry:  # imported as `fake_envs` and as `tests.fake_envs`: register once
    gym.register(ENV_ID, entry_point=FakeCounterEnv, max_episode_steps=MAX_EPISODE_STEPS)
