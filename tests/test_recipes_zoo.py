"""Every recipe in agents/ loads and its agent builds and acts on its env's spaces; the rl-zoo
translations hold the zoo's settings; a missing env extra is a one-line error naming it."""

import gymnasium as gym
import numpy as np
import pytest

from rlnorm.agent import A2CAgent
from rlnorm.envs import EnvError, make_vec_env
from rlnorm.recipes import load_recipe, recipe_names


def spaces_of(env_id: str):
    try:
        env = gym.make(env_id)
    except gym.error.DependencyNotInstalled as e:
        pytest.skip(f"{env_id} needs an extra that is not installed: {e}")
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


@pytest.mark.parametrize("name", recipe_names())
def test_recipe_builds_its_agent_and_acts(name):
    config = load_recipe(name).replace(compile="eager")  # no tracing: a build check
    obs_space, action_space = spaces_of(config.env_id)
    agent = A2CAgent(config, obs_space, action_space)
    obs = np.stack([obs_space.sample() for _ in range(config.n_envs)])
    action, log_prob, value = agent.act(obs)
    assert action.shape[0] == config.n_envs and np.all(np.isfinite(log_prob))
    assert np.all(np.isfinite(value))


# The zoo's a2c.yml entries (lin_<lr> is lr_schedule linear), key for key.
ZOO = {
    "pendulum": dict(n_envs=8, n_steps=8, gamma=0.9, gae_lambda=0.9, vf_coef=0.4,
                     lr_schedule="linear", use_sde=True, log_std_init=-2.0, ortho_init=False,
                     norm_reward=True, total_steps=1_000_000),
    "lunar_lander_continuous": dict(n_envs=4, n_steps=8, gamma=0.99, gae_lambda=0.9,
                                    vf_coef=0.4, lr_schedule="linear", use_sde=True,
                                    log_std_init=-2.0, ortho_init=False,
                                    total_steps=5_000_000),
    "mountain_car_continuous": dict(n_envs=4, n_steps=100, use_sde=True, sde_sample_freq=16,
                                    log_std_init=0.0, ortho_init=False, total_steps=100_000),
    "lunar_lander": dict(n_envs=8, n_steps=5, gamma=0.995, learning_rate=8.3e-4,
                         lr_schedule="linear", ent_coef=1e-5, norm_obs=False,
                         total_steps=200_000),
    "acrobot": dict(n_envs=16, norm_reward=True, total_steps=500_000),
    "mountain_car": dict(n_envs=16, norm_reward=True, total_steps=1_000_000),
    **{n: dict(n_envs=1, n_steps=5, norm_reward=True, total_steps=1_000_000)
       for n in ("halfcheetah", "hopper", "walker2d")},
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_recipes_hold_the_zoos_settings(name):
    config = load_recipe(name)
    assert {k: getattr(config, k) for k in ZOO[name]} == ZOO[name]
    assert config.grad_clip == "global"  # SB3: one optimizer, one clip


def test_a_missing_extra_is_one_line_naming_it(monkeypatch):
    def missing(*args, **kwargs):
        raise gym.error.DependencyNotInstalled("Box2D is not installed, run `pip install swig`")

    monkeypatch.setattr(gym, "make_vec", missing)
    with pytest.raises(EnvError) as info:
        make_vec_env("LunarLander-v3", 2)
    message = str(info.value)
    assert "pip install 'rlnorm[box2d]'" in message and "\n" not in message
    with pytest.raises(EnvError, match=r"rlnorm\[mujoco\]"):
        make_vec_env("Hopper-v5", 2)
