"""lr_schedule: the rate used at update k is learning_rate * (1 - k * n_steps * n_envs /
total_steps), SB3's `lin_<lr>`, computed in the graph from the optimizer's update counter."""

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf

from rlnorm.agent import A2CAgent
from rlnorm.config import Config
from rlnorm.optimizers import RMSprop
from rlnorm.schedules import linear_factor


def hand_lr(lr: float, k: int, spu: int, total: int) -> float:
    """SB3: progress_remaining = 1 - num_timesteps / total after the k-th rollout."""
    return lr * max(0.0, 1.0 - k * spu / total)


def test_rmsprop_steps_use_the_linear_rate_of_each_update():
    lr, rho, eps, spu, total = 0.01, 0.9, 1e-5, 40, 200  # 5 updates reach progress 1
    opt = RMSprop(learning_rate=lr, rho=rho, epsilon=eps)
    opt.lr_factor = linear_factor(spu, total)
    w = tf.Variable(np.zeros(3, np.float32))
    opt.build([w])
    rng = np.random.default_rng(0)
    expected, v = np.zeros(3), np.zeros(3)
    step = tf.function(lambda g: opt.apply([g], [w]))  # in a graph, as the updates run
    for k in range(1, 8):  # past total_steps: the rate stays 0
        g = rng.normal(size=3).astype(np.float32)
        step(tf.constant(g))
        v = rho * v + (1 - rho) * g.astype(np.float64) ** 2
        expected -= hand_lr(lr, k, spu, total) * g / (np.sqrt(v) + eps)
        np.testing.assert_allclose(w.numpy(), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("schedule", ["constant", "linear"])
def test_agent_rate_at_update_k(schedule):
    config = Config(
        hidden_sizes=(4,),
        n_envs=2,
        n_steps=3,
        total_steps=60,
        lr_schedule=schedule,
        learning_rate=1e-3,
        diagnostics=False,
    )
    obs_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    agent = A2CAgent(config, obs_space, gym.spaces.Discrete(2))
    n = 6
    obs = np.random.default_rng(1).normal(size=(n, 2)).astype(np.float32)
    ones = np.ones(n, np.float32)
    for k in range(1, 5):
        want = hand_lr(1e-3, k, 6, 60) if schedule == "linear" else 1e-3
        assert agent.learning_rate() == pytest.approx(want, rel=1e-6)
        agent.train_step(obs, np.zeros(n, np.int32), ones, ones, ones)
    assert int(agent.policy_optimizer.iterations.numpy()) == 4


def test_compiled_loop_schedules_inside_one_call_of_many_updates():
    from rlnorm.compiled import make_tf_env
    from rlnorm.compiled.loop import CompiledLoop

    config = Config(
        backend="compiled",
        n_envs=4,
        n_steps=8,
        total_steps=3200,
        hidden_sizes=(8,),
        lr_schedule="linear",
        diagnostics=False,
    )
    env = make_tf_env("CartPole-v1", config.n_envs)
    agent = A2CAgent(config, env.observation_space, env.action_space)
    loop = CompiledLoop(config, agent, env)
    _, _, ran = loop.run(loop.initial_carry(0), tf.constant(5, tf.int32))
    assert int(ran) == 5 and int(agent.value_optimizer.iterations.numpy()) == 5
    assert agent.learning_rate() == pytest.approx(hand_lr(7e-4, 6, 32, 3200), rel=1e-6)
