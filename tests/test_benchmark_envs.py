"""The benchmark harnesses' own logic: the scale-invariance envs and the SB3 translation of a
recipe, checked against hand-computed values."""

import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from scaled_env import feature_affine, make_scaled  # noqa: E402


@pytest.mark.parametrize("level", [1e-3, 1.0, 1e3])
def test_scaled_env_is_an_affine_map_of_the_plain_env(level):
    plain, scaled = gym.make("CartPole-v1"), make_scaled("CartPole-v1", level)
    o_plain, _ = plain.reset(seed=3)
    o_scaled, _ = scaled.reset(seed=3)
    # factors level * 10**u, u evenly spread over [-1, 1] (in some order); offsets 3 * f * (+-1)
    f, b = feature_affine(4, level)
    np.testing.assert_allclose(sorted(f / level), [0.1, 10 ** (-1 / 3), 10 ** (1 / 3), 10.0])
    np.testing.assert_allclose(b, 3 * f * np.array([1, -1, 1, -1]))
    np.testing.assert_allclose(o_scaled, (o_plain * f + b).astype(np.float32), rtol=1e-6)
    for action in (0, 1, 1, 0):
        o_plain, r_plain, *_ = plain.step(action)
        o_scaled, r_scaled, *_ = scaled.step(action)
        np.testing.assert_allclose(o_scaled, (o_plain * f + b).astype(np.float32), rtol=1e-6)
        assert r_scaled == pytest.approx(r_plain * level)
    assert scaled.observation_space.contains(o_scaled)


def test_sb3_settings_translate_a_recipe_key_for_key():
    from zoo_suite import sb3_settings

    from rlnorm.recipes import load_recipe

    s = sb3_settings(load_recipe("lunar_lander_continuous"))
    assert (s["env_id"], s["n_envs"], s["norm_obs"], s["norm_reward"]) == (
        "LunarLanderContinuous-v3",
        4,
        True,
        True,
    )
    a2c = s["a2c"]
    assert a2c["learning_rate"] == "lin_0.0007"  # rl-zoo's lin_7e-4
    assert (a2c["n_steps"], a2c["gae_lambda"], a2c["vf_coef"], a2c["use_sde"]) == (
        8,
        0.9,
        0.4,
        True,
    )
    assert a2c["policy_kwargs"]["log_std_init"] == -2.0
    assert a2c["policy_kwargs"]["ortho_init"] is False
    assert a2c["use_rms_prop"] is True and a2c["rms_prop_eps"] == 1e-5
