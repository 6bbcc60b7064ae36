"""`rlnorm eval` and `rlnorm export` on tiny trained runs: evaluation changes nothing, and the
SavedModel, loaded by plain TensorFlow in a process that never imports rlnorm, acts exactly
as the in-process agent (Discrete CartPole with BatchNorm, Box Pendulum with clipping)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import fake_envs
import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf

import rlnorm.evaluate
from rlnorm.agent import A2CAgent
from rlnorm.checkpoint import Checkpointer, atomic_write_text
from rlnorm.cli import main
from rlnorm.config import Config, to_toml
from rlnorm.evaluate import evaluate, load_agent, variables_snapshot
from rlnorm.loop import train
from rlnorm.run_dir import checkpoint_dir, load_run_config

TINY = dict(total_steps=2000, checkpoint_every=1000, log_every=1000, diagnostics=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A CartPole run with BatchNorm in both networks (so any training-mode call during
    evaluation would move its moving statistics) and a Pendulum run."""
    root = str(tmp_path_factory.mktemp("runs"))
    cartpole = train(
        Config(policy_norm="batch", value_norm="batch", runs_root=root, **TINY), quiet=True
    )
    pendulum = train(
        Config(env_id="Pendulum-v1", norm_reward=True, policy_norm="layer", runs_root=root, **TINY),
        quiet=True,
    )
    return {"cartpole": Path(cartpole["run_dir"]), "pendulum": Path(pendulum["run_dir"])}


def file_states(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def raw_checkpoint_value(run_dir, name):
    path = tf.train.latest_checkpoint(str(checkpoint_dir(run_dir)))
    return tf.train.load_checkpoint(path).get_tensor(f"{name}/.ATTRIBUTES/VARIABLE_VALUE")


# -- eval -------------------------------------------------------------------------------------
def test_eval_prints_writes_and_changes_nothing(runs, monkeypatch, capsys):
    run_dir = runs["cartpole"]
    files_before = file_states(checkpoint_dir(run_dir))
    loaded = []

    def spy(*args, **kwargs):  # the agent evaluate uses, with its variables right after restore
        config, agent, ckpt = load_agent(*args, **kwargs)
        loaded.append((agent, variables_snapshot(agent)))
        return config, agent, ckpt

    monkeypatch.setattr(rlnorm.evaluate, "load_agent", spy)
    assert main(["eval", str(run_dir), "--episodes", "3", "--deterministic"]) == 0
    out = capsys.readouterr().out
    match = re.search(r"mean return (-?\d+\.\d+) \+- (\d+\.\d+) over 3 episodes", out)
    assert match, out
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["episodes"] == len(result["returns"]) == 3 and result["deterministic"]
    assert result["mean_return"] == pytest.approx(np.mean(result["returns"]))
    assert result["std_return"] == pytest.approx(np.std(result["returns"]))
    assert float(match[1]) == pytest.approx(result["mean_return"], abs=0.005)

    assert file_states(checkpoint_dir(run_dir)) == files_before
    ((agent, snapshot),) = loaded
    after = variables_snapshot(agent)
    assert after.keys() == snapshot.keys()
    for key in snapshot:
        np.testing.assert_array_equal(after[key], snapshot[key], err_msg=key)
    # It was the trained agent, restored (normalizer count read from the checkpoint file).
    count = raw_checkpoint_value(run_dir, "normalizer/count")
    assert count == 2000 and float(agent.normalizer.count.numpy()) == count
    assert any("moving_mean" in k for k in snapshot)  # BatchNorm statistics were compared


def test_eval_takes_episodes_evenly_from_the_envs(tmp_path):
    """With parallel envs, the first episodes to finish are the short ones. On the fake env
    (actions ignored), env i (seed s + i) must contribute its first (episodes + i) // n_envs
    episodes (SB3's evaluate_policy split), whatever their length."""
    config = Config(env_id=f"{fake_envs.__name__}:{fake_envs.ENV_ID}", hidden_sizes=(4,))
    envs = gym.make_vec(fake_envs.ENV_ID, num_envs=1)
    agent = A2CAgent(config, envs.single_observation_space, envs.single_action_space)
    envs.close()
    atomic_write_text(tmp_path / "config.toml", to_toml(config))
    Checkpointer(checkpoint_dir(tmp_path), agent).save(0)

    seed, episodes, n_envs = 7, 6, 4
    result = evaluate(tmp_path, episodes, deterministic=True, seed=seed, n_envs=n_envs)
    expected = []
    for i in range(n_envs):
        for c in range((episodes + i) // n_envs):
            kind = fake_envs.kind_of(1000 * (seed + i) + c)
            expected.append((fake_envs.episode_return(kind), fake_envs.EPISODE_LENGTHS[kind]))
    assert sorted(result["returns"]) == sorted(r for r, _ in expected)
    assert result["mean_length"] == pytest.approx(np.mean([n for _, n in expected]))


# -- export -----------------------------------------------------------------------------------
CONSUMER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import tensorflow as tf

    for name in sys.argv[1:]:
        model = tf.saved_model.load(f"{name}_model")
        obs = tf.constant(np.load(f"{name}_obs.npy"))
        np.save(f"{name}_served.npy", model.signatures["serving_default"](observation=obs)["action"])
        np.save(f"{name}_sampled.npy", model.signatures["sample"](observation=obs)["action"])
    assert "rlnorm" not in sys.modules, "the consumer imported rlnorm"
    print("ok")
    """
)


def spread_policy_head(run_dir: Path, obs: np.ndarray) -> None:
    """Rescale the Gaussian mean head so the mode actions on `obs` span bias +- 4, and save
    it as the latest checkpoint: some actions then leave [-2, 2] and the clip is exercised."""
    _, agent, _ = load_agent(run_dir)
    head = agent.policy.head
    spread = np.abs(agent.act_deterministic(obs).numpy() - head.bias.numpy()).max()
    head.kernel.assign(head.kernel * (4.0 / spread))
    Checkpointer(checkpoint_dir(run_dir), agent).save(10**6)


def observations(env_id: str, n: int = 64) -> np.ndarray:
    """Raw observations the policy may meet, plus a few far outside the training data."""
    env = gym.make(env_id)
    env.observation_space.seed(0)
    obs = [env.observation_space.sample() for _ in range(n // 2)] if env_id != "CartPole-v1" else []
    o, _ = env.reset(seed=0)
    while len(obs) < n:
        obs.append(o)
        o, _, term, trunc, _ = env.step(env.action_space.sample())
        if term or trunc:
            o, _ = env.reset()
    obs = np.array(obs, env.observation_space.dtype)
    obs[:4] *= 20.0  # beyond the normalizer's clip
    return obs


def test_export_matches_the_agent_without_rlnorm(runs, tmp_path):
    expected, spaces = {}, {}
    for name, run_dir in runs.items():
        obs = observations(load_run_config(run_dir).env_id)
        if name == "pendulum":
            spread_policy_head(run_dir, obs)
        assert main(["export", str(run_dir), str(tmp_path / f"{name}_model")]) == 0
        _, agent, _ = load_agent(run_dir)
        np.save(tmp_path / f"{name}_obs.npy", obs)
        action = agent.act_deterministic(obs).numpy()
        space = agent.action_space
        if isinstance(space, gym.spaces.Box):
            action = np.clip(action, space.low, space.high)
        expected[name], spaces[name] = action, space

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run(
        [sys.executable, "-c", CONSUMER, *runs],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]

    served = np.load(tmp_path / "cartpole_served.npy")
    assert served.dtype == np.int32 and set(np.unique(served)) <= {0, 1}
    np.testing.assert_array_equal(served, expected["cartpole"])

    served = np.load(tmp_path / "pendulum_served.npy")
    np.testing.assert_allclose(served, expected["pendulum"], rtol=1e-5, atol=1e-6)
    high = spaces["pendulum"].high
    clipped = np.isclose(np.abs(served), high)
    assert clipped.any() and (~clipped).any()  # both sides of the clip were compared
    sampled = np.load(tmp_path / "pendulum_sampled.npy")
    assert np.all(np.abs(sampled) <= high) and sampled.shape == served.shape
