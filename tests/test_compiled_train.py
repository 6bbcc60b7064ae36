"""The compiled env adapter (rlnorm.compiled.loop) under the one training loop: the same math as the Python-stepped path, the
same run folder, determinism, and the recipe's CartPole regression (slow).

Runs use compile="graph", as the recipe does (an XLA compile of the whole loop costs ~11 CPU-s
here); XLA gives the same summary twice in a row too (checked by hand, not in the suite).
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from test_train import SUMMARY_KEYS, WALL_CLOCK, checkpoint_value, read_events

from rlnorm.a2c import compute_gae
from rlnorm.agent import A2CAgent
from rlnorm.compiled import make_tf_env
from rlnorm.compiled.loop import RECENT, CompiledLoop, push_recent
from rlnorm.config import Config, ConfigError, load_toml
from rlnorm.loop import train

SHORT = dict(
    backend="compiled",
    compile="graph",
    n_envs=8,
    n_steps=8,
    total_steps=2048,  # 32 updates of 64 steps
    hidden_sizes=(16,),
    log_every=512,
    checkpoint_every=1024,
    diagnostics_every=1024,
    histograms_every=10**6,
)
# Recorded by the compiled backend beyond the Python path's keys; not the run's numbers.
COMPILED_WALL_CLOCK = WALL_CLOCK | {"compile_seconds"}
pytestmark = pytest.mark.filterwarnings("ignore:rlnorm scale alarm")  # tiny runs: expected


# -- the run folder, determinism ---------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    config = Config(runs_root=str(root), **SHORT)
    # The same run without diagnostics: every update fused into the compiled loop, none split.
    return config, [train(c, quiet=True) for c in (config, config.replace(diagnostics=False))]


def test_run_folder_matches_the_python_path(runs):
    config, (summary, _) = runs
    run_dir = Path(summary["run_dir"])
    assert run_dir.parent == Path(config.runs_root) / "CartPole-v1"
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert SUMMARY_KEYS <= on_disk.keys()
    assert on_disk["total_steps"] == 2048 and on_disk["backend"] == "compiled"
    assert on_disk["episodes"] > 0 and on_disk["return_curve"][-1][0] == 2048
    assert on_disk["stopped_by"] == "total_steps"
    assert on_disk["trace_counts"]["compiled_run_logged"] == 1  # no retracing across calls
    assert (run_dir / "config.toml").is_file()
    assert (run_dir / "checkpoints" / "ckpt-2048.index").is_file()
    assert int(checkpoint_value(run_dir, "env_step")) == 2048
    # The normalizer merged every env step once (SAME_STEP autoreset: all steps are valid).
    assert checkpoint_value(run_dir, "normalizer/count", 1024) == 1024
    assert checkpoint_value(run_dir, "normalizer/count") == 2048
    for opt in ("policy_optimizer", "value_optimizer"):
        assert int(checkpoint_value(run_dir, f"{opt}/_iterations")) == 32


def test_tensorboard_tags_on_the_env_step_axis(runs):
    _, (summary, _) = runs
    events = read_events(summary["run_dir"])
    for tag in (
        "charts/episodic_return",
        "charts/mean_return_last_100",
        "charts/steps_per_second",
        "losses/policy_loss",
        "losses/value_loss",
        "losses/entropy",
        "losses/explained_variance",
    ):
        assert [s for s, _ in events[tag]] == [512, 1024, 1536, 2048], tag
    # Diagnostics at the first update and at the update that crosses each multiple of 1024.
    policy = read_events(Path(summary["run_dir"]) / "policy")  # the policy's sibling run
    assert [s for s, _ in policy["scale/grad_norm"]] == [64, 1024, 2048]
    assert [v for _, v in events["normalizer/count"]] == [0, 960, 1984]  # before the merge


def test_same_seed_same_numbers_split_or_fused(runs):
    """Same seed, same numbers; and the diagnostics' split update (three graphs) is the fused
    update's math: the run with diagnostics gives the same summary as the run without."""
    _, summaries = runs
    a, b = (
        {
            k: v
            for k, v in json.loads((Path(s["run_dir"]) / "summary.json").read_text()).items()
            if k not in COMPILED_WALL_CLOCK | {"trace_counts"}  # the split path traces more
        }
        for s in summaries
    )
    assert a == b


def test_unsupported_env_id_is_refused_before_a_run_folder(tmp_path):
    config = Config(env_id="LunarLander-v3", runs_root=str(tmp_path), **SHORT)
    with pytest.raises(ConfigError, match="SUPPORTED_ENV_IDS.*CartPole-v1"):
        train(config)
    assert not any(tmp_path.iterdir())  # refused before any run folder is made


def test_resume_continues_to_the_new_budget(tmp_path):
    """The one loop resumes the compiled backend too: weights, normalizer and step from the
    checkpoint, envs restarted from fresh seeds."""
    first = train(Config(runs_root=str(tmp_path), **{**SHORT, "total_steps": 1024}), quiet=True)
    run_dir = first["run_dir"]
    resumed = train(
        load_toml(Path(run_dir) / "config.toml").replace(total_steps=2048),
        resume=run_dir,
        quiet=True,
    )
    assert resumed["total_steps"] == 2048 and resumed["run_dir"] == run_dir
    assert checkpoint_value(run_dir, "normalizer/count", 1024) == 1024
    assert checkpoint_value(run_dir, "normalizer/count", 2048) == 2048
    assert int(checkpoint_value(run_dir, "policy_optimizer/_iterations", 2048)) == 32
    assert resumed["episodes"] > first["episodes"]


# -- the episode buffer --------------------------------------------------------------------------
def test_push_recent_keeps_the_last_episodes_in_order():
    rng = np.random.default_rng(0)
    expected = collections.deque(maxlen=RECENT)
    recent, count = tf.zeros([RECENT, 2], tf.float64), 0
    for size, p in ((50, 0.5), (30, 0.1), (400, 0.6), (7, 0.0), (200, 0.2)):
        new = rng.normal(size=(size, 2))
        finished = rng.random(size) < p
        expected.extend(new[finished])
        recent = push_recent(recent, min(count, RECENT), tf.constant(new), tf.constant(finished))
        count += int(finished.sum())
        real = min(count, RECENT)
        np.testing.assert_array_equal(recent.numpy()[RECENT - real :], np.array(expected))


# -- one compiled update against the Python-stepped math ---------------------------------------
def variables_of(agent) -> tuple[list, list]:
    """(exact, noisy): every variable an update changes. `noisy` holds the Dense biases that
    feed a BatchNorm and the optimizer slots: such a bias has zero gradient in exact
    arithmetic (BatchNorm subtracts the batch mean), so its float noise (~1e-6) differs between
    a graph and eager execution, and the optimizer's division by sqrt(v) + eps amplifies it."""
    nets = (agent.policy, agent.value)
    noisy = [d.bias for n in nets if n.norm.startswith("batch") for d in n.dense_layers]
    exact = [
        w
        for n in nets
        for w in n.trainable_weights + n.non_trainable_weights
        if all(w is not b for b in noisy)
    ]
    exact += [agent.normalizer.count, agent.normalizer.mean, agent.normalizer.var, agent.rng.state]
    return exact, noisy + agent.policy_optimizer.variables + agent.value_optimizer.variables


def state_of(agent) -> tuple[list, list]:
    return tuple([np.array(v.numpy()) for v in group] for group in variables_of(agent))


def set_state(agent, values) -> None:
    for group, arrays in zip(variables_of(agent), values, strict=True):
        for v, x in zip(group, arrays, strict=True):
            v.assign(x)


@pytest.mark.parametrize(
    "env_id,norm", [("CartPole-v1", "none"), ("Pendulum-v1", "batch")], ids=["discrete", "box"]
)
def test_one_compiled_update_is_the_python_paths_math(env_id, norm):
    config = Config(
        env_id=env_id,
        policy_norm=norm,
        value_norm=norm,
        gae_lambda=0.9,
        normalize_advantage=True,
        **{**SHORT, "n_envs": 16, "n_steps": 16},
    )
    env = make_tf_env(env_id, config.n_envs)
    agent = A2CAgent(config, env.observation_space, env.action_space)
    loop = CompiledLoop(config, agent, env)
    start = loop.initial_carry(seed=7)
    # Warm the normalizer so that normalization is not the identity.
    agent.normalizer.merge(tf.random.stateless_normal([64, env.obs_dim], [1, 2]) * 3.0 + 1.0)
    before = state_of(agent)

    # The rollout and its targets, as the compiled update sees them (collect does not train).
    _, batch, _ = loop.collect(start)
    obs, actions = batch.obs.numpy(), batch.actions.numpy()
    T, n = config.n_steps, config.n_envs

    # 1. Replay the env eagerly with the batch's actions (clipped to the Box, like ClipAction).
    state, values, rewards, terms, truncs, finals = start.env, [], [], [], [], []
    for t in range(T):
        a = actions[t * n : (t + 1) * n]
        if env.act_dim:
            a = np.clip(a, env.action_space.low, env.action_space.high)
        np.testing.assert_array_equal(env.observe(state).numpy(), obs[t * n : (t + 1) * n])
        state, out = env.step(state, a)
        rewards.append(out.reward.numpy())
        terms.append(out.terminated.numpy())
        truncs.append(out.truncated.numpy())
        finals.append(agent.state_values(out.final_obs).numpy())
    assert env.act_dim is None or np.abs(actions).max() > env.action_space.high[0]
    # 2. The targets with NumPy: V(s_t) at acting time, V(final obs) on truncation.
    values = agent.state_values(obs).numpy().reshape(T, n)
    last = agent.state_values(env.observe(state)).numpy()
    nxt = np.concatenate([values[1:], last[None]])
    nxt = np.where(np.array(truncs), np.array(finals), nxt)
    terms, dones = np.array(terms), np.array(terms) | np.array(truncs)
    adv, ret = compute_gae(np.array(rewards), values, nxt, terms, dones, 0.99, 0.9)
    np.testing.assert_allclose(batch.advantages.numpy(), adv.reshape(-1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(batch.returns.numpy(), ret.reshape(-1), rtol=1e-5, atol=1e-5)

    # 3. One whole compiled update from the same start ...
    set_state(agent, before)
    _, total, _ = loop.run(start, tf.constant(1, tf.int32))
    compiled = state_of(agent)
    # ... equals A2CAgent.gradient_step run eagerly on that batch, then the normalizer merge.
    set_state(agent, before)
    agent.rng.state.assign(compiled[0][-1])  # the RNG as the rollout left it
    metrics = agent.gradient_step(*batch)
    agent.normalizer.merge(batch.obs)
    for key, value in metrics.items():
        np.testing.assert_allclose(float(total[key]), float(value), rtol=1e-5, err_msg=key)
    (exact, noisy), (exact_want, noisy_want) = compiled, state_of(agent)
    for got, want in zip(exact, exact_want, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for got, want in zip(noisy, noisy_want, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    assert float(agent.normalizer.count) == 64 + T * n


# -- the recipe solves CartPole (slow) -----------------------------------------------------------
@pytest.mark.slow
def test_recipe_solves_cartpole(tmp_path):
    import importlib.util

    path = Path(__file__).parents[1] / "agents" / "cartpole_compiled.py"
    spec = importlib.util.spec_from_file_location("cartpole_compiled", path)
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    summary = train(recipe.CONFIG.replace(runs_root=str(tmp_path)), quiet=True)
    assert summary["stopped_by"] == "target_return"
    assert summary["mean_return_last_100"] >= 475
    # Measured here: 655,360 env steps for seed 0 (0.59-2.2M over seeds 0-5), ~4 s.
    assert summary["steps_to_target"] <= 5_000_000
