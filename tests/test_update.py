"""The update graph (`rlnorm.update`): ONE compiled call runs rollout -> targets -> train step ->
normalizer merge. Checked against NumPy over the observations the update itself reports,
against the acting-time log-probs (the order of the four steps), and, for a diagnostics
update, against the diagnostic pass run by hand before a plain train_step.
"""

from __future__ import annotations

import numpy as np
import pytest

from rlnorm.agent import A2CAgent
from rlnorm.config import Config
from rlnorm.envs import make_vec_env
from rlnorm.update import VectorEnvUpdater

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
    return envs, agent, VectorEnvUpdater(agent, envs, seed=config.seed)


@pytest.mark.parametrize("autoreset_mode", ["same_step", "next_step"])
def test_update_steps_with_acting_statistics_then_merges_exactly_the_valid_obs(autoreset_mode):
    envs, agent, updater = make_updater(CONFIG.replace(autoreset_mode=autoreset_mode))
    episodes = []
    merged = []
    for i in range(N_UPDATES):
        out = updater.update(i * 20, 1, lambda r, n: episodes.extend(r))
        valid = out.batch.valid.numpy() > 0
        # The train step's forward pass used the normalizer statistics (and weights) that
        # acted: its mean log-prob of the taken actions is the acting-time one. A merge before
        # the step would change the inputs under the stored log-probs.
        assert out.metrics["update_applied"] == 1.0
        np.testing.assert_allclose(
            out.metrics["log_prob"], out.log_probs.numpy()[valid].mean(), rtol=1e-5
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
    assert episodes and updater.trace_counts() == {"update": 1}


def test_diagnostics_of_an_update_see_the_variables_from_before_it():
    """`record_update` after the one-call update writes what `before_update` on the same batch
    and pre-update state, then the same update as `train_step`, writes; and it leaves the
    updated variables in place."""
    import tensorflow as tf

    from rlnorm.diagnostics import ScaleDiagnostics

    config = CONFIG.replace(policy_norm="batch", value_norm="layer")
    envs, agent, updater = make_updater(config)
    for i in range(3):
        updater.update(i * 20, 1, lambda r, n: None)
    diagnostics = ScaleDiagnostics(agent, tf.summary.create_noop_writer(), config)
    captured = diagnostics.capture()
    optimizer_vars = agent.policy_optimizer.variables + agent.value_optimizer.variables
    optimizer_state = [v.numpy() for v in optimizer_vars]
    out = updater.update(60, 1, lambda r, n: None)
    updated = diagnostics.capture()
    diagnostics.record_update(80, out.batch, out.metrics, captured)
    after_record = diagnostics.capture()
    for a, b in zip(updated, after_record, strict=True):
        np.testing.assert_array_equal(a, b)
    written = diagnostics.last

    # Reference: restore the whole pre-update state (optimizer slots too) by hand, diagnose,
    # and take the update by the plain train_step on the same batch.
    for v, x in zip(
        diagnostics.variables + optimizer_vars, captured + optimizer_state, strict=True
    ):
        v.assign(x)
    reference = ScaleDiagnostics(agent, tf.summary.create_noop_writer(), config)
    reference.before_update(80, *out.batch)
    agent.train_step(*out.batch)
    agent.update_normalizer(out.batch.obs.numpy()[out.batch.valid.numpy() > 0])
    reference.after_update(80, out.metrics)
    assert written.keys() == reference.last.keys()
    for key, value in reference.last.items():
        np.testing.assert_allclose(written[key], value, rtol=1e-5, atol=1e-7, err_msg=key)
    envs.close()
