"""The update graph (`rlnorm.update`): ONE compiled call runs rollout -> targets -> train step ->
normalizer merge. Checked against NumPy over the observations the update itself reports,
against the acting-time log-probs (the order of the four steps), and against the split path
that a diagnostics update takes.
"""

from __future__ import annotations

import numpy as np
import pytest

from rlnorm.agent import A2CAgent
from rlnorm.config import Config
from rlnorm.envs import autoreset_mode_of, make_vec_env
from rlnorm.rollout import RolloutCollector
from rlnorm.update import Updater

CONFIG = Config(
    env_id="CartPole-v1", n_envs=4, n_steps=5, seed=3, learning_rate=1e-2, diagnostics=False
)
N_UPDATES = 30


def make_updater(config: Config):
    envs = make_vec_env(
        config.env_id,
        config.n_envs,
        config.seed,
        autoreset_mode=config.autoreset_mode,
        episode_statistics=False,
    )
    agent = A2CAgent(config, envs.single_observation_space, envs.single_action_space)
    collector = RolloutCollector(
        envs, agent, config.n_steps, autoreset_mode_of(envs), seed=config.seed
    )
    return envs, agent, Updater(agent, collector)


@pytest.mark.parametrize("autoreset_mode", ["same_step", "next_step"])
def test_update_steps_with_acting_statistics_then_merges_exactly_the_valid_obs(autoreset_mode):
    envs, agent, updater = make_updater(CONFIG.replace(autoreset_mode=autoreset_mode))
    episodes = []
    merged = []
    for i in range(N_UPDATES):
        out = updater.update(i * 20, lambda r, n: episodes.extend(r))
        valid = out.batch.valid.numpy() > 0
        # The train step's forward pass used the normalizer statistics (and weights) that
        # acted: its mean log-prob of the taken actions is the acting-time one. A merge before
        # the step would change the inputs under the stored log-probs.
        assert out.metrics["update_applied"].numpy()
        np.testing.assert_allclose(
            out.metrics["log_prob"].numpy(), out.log_probs.numpy()[valid].mean(), rtol=1e-5
        )
        merged.append(out.batch.obs.numpy()[valid])
    envs.close()
    if autoreset_mode == "next_step":  # reset steps happened and were left out
        assert sum(len(m) for m in merged) < N_UPDATES * 20
    everything = np.concatenate(merged).astype(np.float64)
    norm = agent.normalizer
    assert norm.count.numpy() == len(everything)
    np.testing.assert_allclose(norm.mean.numpy(), everything.mean(axis=0), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(norm.var.numpy(), everything.var(axis=0), rtol=1e-10)
    assert episodes and updater.trace_counts() == {"update": 1, "collect": 0}


def test_one_call_update_equals_the_split_path_of_a_diagnostics_update():
    """Two agents with the same seed: one takes whole updates, the other the split path
    (collect, then train_step, then update_normalizer) as train.py does on a diagnostics
    update. Weights, normalizer and metrics stay equal."""
    envs_a, agent_a, fused = make_updater(CONFIG)
    envs_b, agent_b, split = make_updater(CONFIG)
    for i in range(10):
        out_a = fused.update(i * 20, lambda r, n: None)
        out_b = split.collect(i * 20, lambda r, n: None)
        metrics_b = agent_b.train_step(*out_b.batch)
        agent_b.update_normalizer(split.valid_obs(out_b.batch))
        np.testing.assert_allclose(out_a.batch.obs.numpy(), out_b.batch.obs.numpy(), rtol=1e-6)
        for key in ("policy_loss", "value_loss", "policy_grad_norm", "value_grad_norm"):
            np.testing.assert_allclose(
                out_a.metrics[key].numpy(), metrics_b[key].numpy(), rtol=1e-5, err_msg=key
            )
    for a, b in zip(agent_a.trainable_variables, agent_b.trainable_variables, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7, err_msg=a.name)
    for name in ("count", "mean", "var"):
        np.testing.assert_allclose(
            getattr(agent_a.normalizer, name).numpy(),
            getattr(agent_b.normalizer, name).numpy(),
            rtol=1e-12,
        )
    envs_a.close()
    envs_b.close()
