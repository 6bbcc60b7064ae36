"""Shared test fixtures: a tiny agent config and the action spaces the suite parametrizes over."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from rlnorm.config import Config  # noqa: E402

ACTION_SPACES = {
    "discrete": gym.spaces.Discrete(3),
    "box": gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
}


@pytest.fixture
def tiny_config():
    """Factory: a validated Config with one hidden layer of 4 units, plus any overrides."""

    def make(**changes) -> Config:
        return Config(hidden_sizes=(4,), seed=3, diagnostics=False).replace(**changes)

    return make


@pytest.fixture(params=sorted(ACTION_SPACES))
def action_space(request) -> gym.Space:
    """Parametrizes a test over a Discrete(3) and a Box(2,) action space."""
    return ACTION_SPACES[request.param]
