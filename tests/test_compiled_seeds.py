"""The seed-batched compiled trainer (rlnorm.compiled.seeds): K seeds in one graph are the K
agents the seeds train alone.

Tolerance: rtol 1e-5 / atol 1e-6 after a few updates. Not bit-exact: the batched matmuls and
the per-seed reductions over one axis of [K, M] sum in another order than a single run's 2-D
matmuls and full reductions (float32 rounding, measured ~1e-7 after 6 updates)."""

import json

import numpy as np
import pytest
import tensorflow as tf

from rlnorm import config as config_lib
from rlnorm import regress as rg
from rlnorm.agent import A2CAgent
from rlnorm.cli import make_parser
from rlnorm.compiled.loop import CompiledUpdater, make_compiled_env
from rlnorm.compiled.seed_runs import train_seeds_batched
from rlnorm.compiled.seeds import SeedBatchLoop
from rlnorm.normalizer import RewardScaler
from rlnorm.recipes import load_recipe

SEEDS = [0, 1, 7]
UPDATES = 6
TOL = {"rtol": 1e-5, "atol": 1e-6}


def tiny(**overrides):
    config = load_recipe("agents/cartpole_compiled.py")
    return config.replace(n_envs=16, hidden_sizes=(8, 8), **overrides)


def flat(variables):
    return np.concatenate([np.reshape(v.numpy(), -1) for v in variables])


def single_run(config, seed):
    """One seed through the single-seed compiled adapter, seeded as `rlnorm.loop.train`
    seeds it (agent: config.seed; envs: config.seed + step at step 0)."""
    config = config.replace(seed=seed)
    env = make_compiled_env(config)
    agent = A2CAgent(config, env.observation_space, env.action_space)
    scaler = RewardScaler(config.n_envs, config.gamma, config.reward_clip)
    updater = CompiledUpdater(config, agent, env, scaler if config.norm_reward else None, seed=seed)
    updater.update(0, UPDATES, lambda *args: None)
    return agent, scaler, updater.carry


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # the recipe: Adam, norm_reward, normalized advantages, per-network clipping
        {
            "optimizer": "rmsprop",
            "grad_clip": "global",
            "lr_schedule": "linear",
            "normalize_advantage": False,
            "norm_reward": False,
            "ent_coef": 0.01,
            "total_steps": 2_000,
            "ortho_init": False,
        },
        {"env_id": "Pendulum-v1", "activation": "relu", "gae_lambda": 1.0, "n_steps": 5},
    ],
    ids=["recipe", "rmsprop-global-linear", "pendulum-box"],
)
def test_k_seeds_in_one_graph_are_the_k_single_seed_runs(overrides):
    config = config_lib.validate(tiny(**overrides))
    loop = SeedBatchLoop(config, SEEDS)
    carry = loop.run(loop.initial_carry(), tf.constant(UPDATES, tf.int32))
    for i, seed in enumerate(SEEDS):
        agent, scaler, single = single_run(config, seed)
        np.testing.assert_allclose(
            loop.policy.numpy()[i], flat(agent.policy.trainable_weights), **TOL
        )
        np.testing.assert_allclose(
            loop.value.numpy()[i], flat(agent.value.trainable_weights), **TOL
        )
        for mine, theirs in (
            (loop.policy_opt, agent.policy_optimizer),
            (loop.value_opt, agent.value_optimizer),
        ):
            assert int(mine.counter[i]) == int(theirs.iterations) == UPDATES
            for slot, their_slot in zip(mine.slots, theirs.slots, strict=True):
                np.testing.assert_allclose(slot.numpy()[i], their_slot.numpy(), **TOL)
        norm = agent.normalizer
        assert loop.obs_stats.count.numpy()[i] == norm.count.numpy()
        np.testing.assert_allclose(loop.obs_stats.mean.numpy()[i], norm.mean.numpy(), **TOL)
        np.testing.assert_allclose(loop.obs_stats.var.numpy()[i], norm.var.numpy(), **TOL)
        if config.norm_reward:
            stats = scaler.return_stats
            np.testing.assert_allclose(loop.return_stats.var.numpy()[i], stats.var.numpy(), **TOL)
        # The envs and the finished episodes: returns, lengths and their order.
        assert int(carry.episodes[i]) == int(single.episodes)
        np.testing.assert_allclose(carry.recent.numpy()[i], single.recent.numpy(), **TOL)
        np.testing.assert_allclose(carry.physics.numpy()[i], single.env.physics.numpy(), **TOL)


def test_a_stopped_seed_stops_changing():
    loop = SeedBatchLoop(config_lib.validate(tiny()), SEEDS)
    carry = loop.run(loop.initial_carry(), tf.constant(2, tf.int32))
    loop.active.assign([True, False, True])

    def state(c):
        tensors = [loop.policy, loop.value, loop.obs_stats.mean, loop.obs_stats.count]
        tensors += [*loop.policy_opt.slots, loop.value_opt.counter, loop.return_stats.var]
        return [tf.convert_to_tensor(t).numpy() for t in (*tensors, *c)]

    before = state(carry)
    carry = loop.run(carry, tf.constant(3, tf.int32))
    for old, new in zip(before, state(carry), strict=True):
        np.testing.assert_array_equal(old[1], new[1])  # seed 1 frozen
        assert not np.array_equal(old[[0, 2]], new[[0, 2]])  # the others went on


def test_keeping_some_seeds_in_a_smaller_graph_changes_nothing_for_them():
    loop = SeedBatchLoop(config_lib.validate(tiny()), SEEDS)
    carry = loop.run(loop.initial_carry(), tf.constant(2, tf.int32))
    small, small_carry = loop.keep([0, 2], carry)
    carry = loop.run(carry, tf.constant(3, tf.int32))
    small_carry = small.run(small_carry, tf.constant(3, tf.int32))
    assert small.seeds == [0, 7]
    for mine, theirs in zip(small.state_variables(), loop.state_variables(), strict=True):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy()[[0, 2]], **TOL)
    for mine, theirs in zip(small_carry, carry, strict=True):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy()[[0, 2]], **TOL)


def test_an_unsupported_key_is_a_config_error_naming_it():
    with pytest.raises(config_lib.ConfigError, match="policy_norm.*--no-seed-batch"):
        train_seeds_batched(tiny(policy_norm="layer"), [0, 1])


def test_regress_falls_back_to_seed_by_seed_with_a_note(capsys):
    assert rg.train_seeds_batched(tiny(value_norm="batch"), [0, 1], None, quiet=True) is None
    assert "one by one: value_norm = 'batch'" in capsys.readouterr().err
    args = make_parser().parse_args(["regress", "cartpole_compiled", "--no-seed-batch"])
    assert args.seed_batch is False
    command = rg.command_line("cartpole_compiled", 4, 0, {}, False, seed_batch=False)
    assert command.endswith("--seeds 4 --no-seed-batch")


def test_regress_batched_gives_the_separate_runs_metrics(tmp_path):
    """Both paths of `regress` on a budget where the seeds reach a low target at different
    steps: the same per-seed metrics and curves."""
    overrides = {"n_envs": 16, "hidden_sizes": [8, 8], "total_steps": 6_400}
    overrides.update(target_return=25.0, log_every=640, checkpoint_every=1_000)
    reports = {}
    for batched in (True, False):
        out = tmp_path / str(batched)
        reports[batched] = rg.regress(
            "agents/cartpole_compiled.py",
            seeds=3,
            overrides=overrides,
            baseline=tmp_path / f"baseline_{batched}.json",
            update_baseline=True,
            out=out,
            quiet=True,
            workers=1,
            seed_batch=batched,
        )
        summary = json.loads((out / "seed1" / "summary.json").read_text())
        assert summary["seed"] == 1
    batched, separate = reports[True], reports[False]
    assert batched["solved"] == separate["solved"] and any(batched["solved"])
    for metric in rg.METRICS:
        np.testing.assert_allclose(batched["metrics"][metric], separate["metrics"][metric])
    np.testing.assert_allclose(batched["curves"]["per_seed"], separate["curves"]["per_seed"])
