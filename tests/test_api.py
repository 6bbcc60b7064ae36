"""The public API (`import rlnorm`): train -> Run -> predict / evaluate / export -> load.

The expected actions come from an independent NumPy forward pass of the policy (normalizer,
Dense + tanh layers, head, argmax) and from the exported SavedModel, not from `Run` itself.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf

import rlnorm
from rlnorm.evaluate import variables_snapshot

ROOT = Path(__file__).parents[1]
TINY = dict(total_steps=2000, log_every=1000, checkpoint_every=1000, diagnostics=False)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return rlnorm.train("CartPole-v1", runs_root=str(root), quiet=True, **TINY)


def numpy_policy_logits(agent, obs: np.ndarray) -> np.ndarray:
    """The policy's logits from its weights, by hand (norm = none, tanh)."""
    norm = agent.normalizer
    mean, var = norm.mean.numpy(), norm.var.numpy()
    c = agent.config
    x = np.clip(
        (obs.astype(np.float64) - mean) / np.sqrt(var + c.obs_epsilon), -c.obs_clip, c.obs_clip
    )
    h = x.astype(np.float32)
    for dense in agent.policy.dense_layers:
        kernel, bias = (w.numpy() for w in dense.weights)
        h = np.tanh(h @ kernel + bias)
    kernel, bias = (w.numpy() for w in agent.policy.head.weights)
    return h @ kernel + bias


def test_all_lists_the_api_and_import_is_lazy():
    assert {"train", "load", "Run", "Config", "ConfigError"} <= set(rlnorm.__all__)
    code = "import sys, rlnorm; print('tensorflow' in sys.modules, callable(rlnorm.train))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.split() == ["False", "True"], out.stderr
    importlib.import_module("rlnorm.loop")  # the loop module must not shadow the function

    assert callable(rlnorm.train) and rlnorm.train.__module__ == "rlnorm.api"


def test_run_exposes_config_agent_run_dir_summary(run):
    assert isinstance(run, rlnorm.Run) and isinstance(run.config, rlnorm.Config)
    assert run.config.env_id == "CartPole-v1" and run.summary["total_steps"] == 2000
    assert (run.run_dir / "summary.json").is_file() and run.run_dir.parent.name == "CartPole-v1"
    assert run.agent.policy.normalizer is run.agent.value.normalizer
    fast = run.summary["fast_paths"]  # which private fast paths ran (all, by default)
    assert fast and all(fast.values()), fast


def test_predict_matches_an_independent_forward_pass(run):
    obs = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    expected = numpy_policy_logits(run.agent, obs).argmax(axis=1)
    np.testing.assert_array_equal(run.predict(obs, deterministic=True), expected)
    # One observation gives one action; any NumPy dtype is accepted.
    for i in range(4):
        assert run.predict(obs[i], deterministic=True) == expected[i]
        assert run.predict(obs[i].astype(np.float64), deterministic=True) == expected[i]
    assert np.shape(run.predict(obs[0])) == () and run.predict(obs[0]) in (0, 1)
    assert run.predict(np.zeros(4, np.int64), deterministic=True) in (0, 1)


def test_predict_names_a_wrong_shape(run):
    with pytest.raises(ValueError, match=r"shape \(3,\).*shape \(4,\).*\(N, 4\)"):
        run.predict(np.zeros(3))
    with pytest.raises(ValueError, match=r"shape \(2, 2, 4\)"):
        run.predict(np.zeros((2, 2, 4)))


def test_evaluate_reports_and_never_changes_statistics(run):
    before = variables_snapshot(run.agent)
    report = run.evaluate(episodes=3, deterministic=True)
    after = variables_snapshot(run.agent)
    assert before.keys() == after.keys()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert report["episodes"] == 3 and len(report["returns"]) == 3
    assert report["mean_return"] == pytest.approx(np.mean(report["returns"]))
    assert report["std_return"] == pytest.approx(np.std(report["returns"]))
    assert not (run.run_dir / "eval.json").exists()  # the API writes nothing


def test_export_and_load_act_as_the_run(run, tmp_path):
    obs = np.random.default_rng(1).normal(size=(8, 4)).astype(np.float32)
    expected = run.predict(obs, deterministic=True)
    path = run.export(tmp_path / "exported")
    served = tf.saved_model.load(str(path)).signatures["serving_default"]
    np.testing.assert_array_equal(served(observation=tf.constant(obs))["action"].numpy(), expected)
    loaded = rlnorm.load(run.run_dir)
    assert loaded.config == run.config and loaded.summary["total_steps"] == 2000
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True), expected)


def test_train_takes_a_config_a_toml_file_and_a_recipe(tmp_path):
    config = rlnorm.Config(env_id="CartPole-v1", seed=3, runs_root=str(tmp_path), **TINY)
    from_config = rlnorm.train(config, quiet=True)
    assert from_config.config.seed == 3 and from_config.summary["total_steps"] == 2000
    toml = tmp_path / "c.toml"
    toml.write_text((from_config.run_dir / "config.toml").read_text())
    from_toml = rlnorm.train(toml, quiet=True, total_steps=1000)
    assert from_toml.config.seed == 3 and from_toml.summary["total_steps"] == 1000
    assert from_toml.run_dir != from_config.run_dir
    recipe = rlnorm.train("cartpole", quiet=True, runs_root=str(tmp_path), **TINY)
    assert recipe.config.agent == "cartpole" and recipe.config.target_return == 475.0


def test_train_takes_an_env_factory_and_an_instance(tmp_path):
    kw = dict(quiet=True, runs_root=str(tmp_path), **TINY)
    run = rlnorm.train(lambda: gym.make("Pendulum-v1"), n_envs=2, **kw)
    assert run.config.env_id == "Pendulum-v1" and run.config.n_envs == 2
    action = run.predict(np.zeros(3, np.float32))
    assert action.shape == (1,) and -2.0 <= action[0] <= 2.0  # clipped to the Box
    assert len(run.evaluate(episodes=2)["returns"]) == 2
    with pytest.warns(UserWarning, match="ONE env"):
        single = rlnorm.train(gym.make("CartPole-v1"), **{**kw, "total_steps": 500})
    assert single.config.n_envs == 1


def test_bad_input_is_a_clear_error(tmp_path):
    with pytest.raises(rlnorm.ConfigError, match="Unknown config key 'gama'"):
        rlnorm.train("CartPole-v1", gama=0.9, runs_root=str(tmp_path))
    with pytest.raises(rlnorm.EnvError, match="Unknown environment id 'CartPole-v2'"):
        rlnorm.train("CartPole-v2", runs_root=str(tmp_path))
    assert not any(tmp_path.iterdir())


def test_readme_python_example_runs(tmp_path, monkeypatch):
    """The README's first Python block, as a user pastes it (in a fresh folder)."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    assert isinstance(namespace["run"], rlnorm.Run)
    assert (tmp_path / "exported" / "saved_model.pb").is_file()
    assert "mean_return" in namespace["report"]
