"""End-to-end `train()`: env ids, raw episode returns, determinism, the run folder, resume.

Runs are tiny (a few thousand CartPole steps, a few hundred on the fake env); each module
fixture trains once and several tests read the result.
"""

from __future__ import annotations

import collections
import importlib
import json
import re
import sys
from pathlib import Path

import fake_envs
import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf

from rlnorm.config import Config, ConfigError, load_toml
from rlnorm.envs import EnvError, resolve_env_id
from rlnorm.loop import train

SUMMARY_KEYS = {
    "env_id",
    "agent",
    "seed",
    "total_steps",
    "wall_seconds",
    "steps_per_second",
    "episodes",
    "mean_return_last_100",
    "best_mean_return_last_100",
    "return_curve",
}
# Summary fields that measure the machine, not the run (each one added here on purpose).
WALL_CLOCK = {
    "wall_seconds",
    "steps_per_second",
    "steady_steps_per_second",
    "steady_steps_per_cpu_second",
    "first_update_seconds",
    "run_dir",
    "first_env_step_seconds",
    "peak_rss_mb",
}
STEP_TAGS = (
    "charts/episodic_return",
    "charts/episodic_length",
    "charts/steps_per_second",
    "losses/policy_loss",
    "losses/value_loss",
    "losses/entropy",
    "losses/explained_variance",
)
CARTPOLE = dict(total_steps=4000, log_every=1000, checkpoint_every=2000, diagnostics=False)


def read_events(run_dir) -> dict[str, list[tuple[int, object]]]:
    """{tag: [(step, value), ...]} over every TensorBoard event file of the run, in order."""
    out = collections.defaultdict(list)
    for path in sorted(Path(run_dir).glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for v in event.summary.value:
                value = tf.make_ndarray(v.tensor)
                out[v.tag].append((event.step, value.item() if value.ndim == 0 else value))
    return dict(out)


def checkpoint_value(run_dir, name: str, step: int | None = None):
    """A variable read straight from the checkpoint file (not through rlnorm's restore)."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    path = str(ckpt_dir / f"ckpt-{step}") if step else tf.train.latest_checkpoint(str(ckpt_dir))
    return tf.train.load_checkpoint(path).get_tensor(f"{name}/.ATTRIBUTES/VARIABLE_VALUE")


# -- environment ids --------------------------------------------------------------------------
def test_module_prefixed_ids_import_the_module():
    assert resolve_env_id("gymnasium.envs.classic_control:CartPole-v1") == "CartPole-v1"
    with pytest.raises(EnvError, match="no_such_module_xyz"):
        resolve_env_id("no_such_module_xyz:Foo-v0")
    with pytest.raises(EnvError, match="CartPole-v1"):
        resolve_env_id("CartPole-v2")  # unknown id: the close match is named


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    """200 steps on the fake env, given as `module:id` with the module NOT yet imported,
    rewards normalized."""
    module = fake_envs.__name__
    sys.modules.pop(module)
    del gym.registry[fake_envs.ENV_ID]
    config = Config(
        env_id=f"{module}:{fake_envs.ENV_ID}",
        n_envs=4,
        n_steps=5,
        total_steps=200,
        seed=5,
        norm_reward=True,
        log_every=60,
        diagnostics=False,
        runs_root=str(tmp_path_factory.mktemp("runs")),
    )
    try:
        summary = train(config, quiet=True)
    finally:  # leave the module importable and the id registered for the other tests
        importlib.import_module(module)
    return config, summary


def test_module_env_id_trains(fake_run):
    config, summary = fake_run
    assert fake_envs.ENV_ID in gym.registry  # train imported the module, which registered it
    assert summary["env_id"] == config.env_id and summary["total_steps"] == 200
    run_dir = Path(summary["run_dir"])
    assert run_dir.parent.name == config.env_id.replace(":", "_").replace("/", "_")


def test_episode_returns_are_raw_with_norm_reward(fake_run):
    """Episodes are fixed by the env's spec whatever the policy: env i (seed 5 + i) plays
    episodes 1000 (5 + i) + c of kind (5 + i + c) % 3, 50 steps each (200 / 4 envs)."""
    config, summary = fake_run
    expected = []
    for i in range(config.n_envs):
        t, c = 0, 0
        while True:
            kind = fake_envs.kind_of(1000 * (config.seed + i) + c)
            t += fake_envs.EPISODE_LENGTHS[kind]
            if t > config.total_steps // config.n_envs:
                break
            expected.append(fake_envs.episode_return(kind))
            c += 1
    assert len(expected) < 100  # so the last-100 mean is the mean of all
    assert summary["episodes"] == len(expected)
    assert summary["mean_return_last_100"] == pytest.approx(np.mean(expected))
    logged = [v for _, v in read_events(summary["run_dir"])["charts/episodic_return"]]
    assert logged and min(expected) <= min(logged) and max(logged) <= max(expected)
    # The scaler did divide rewards by a std >> 1, so scaled returns could not pass above.
    std = np.sqrt(checkpoint_value(summary["run_dir"], "reward_return_stats/var")[0])
    assert std > 10


# -- determinism, run folder ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def cartpole_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    configs = [Config(seed=s, runs_root=str(root), **CARTPOLE) for s in (0, 0, 1)]
    return configs, [train(c, quiet=True) for c in configs]


def test_same_seed_same_numbers_other_seed_differs(cartpole_runs):
    _, summaries = cartpole_runs
    on_disk = [json.loads((Path(s["run_dir"]) / "summary.json").read_text()) for s in summaries]
    a, b, c = ({k: v for k, v in s.items() if k not in WALL_CLOCK} for s in on_disk)
    assert a == b
    assert a["return_curve"] != c["return_curve"]


def test_run_folder_layout(cartpole_runs):
    (config, *_), (summary, *_) = cartpole_runs
    run_dir = Path(summary["run_dir"])
    assert run_dir.parent == Path(config.runs_root) / "CartPole-v1"
    assert re.fullmatch(r"a2c__seed0__\d{8}-\d{6}(-\d+)?", run_dir.name)
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    assert load_toml(run_dir / "config.toml") == config
    ckpt = run_dir / "checkpoints"
    assert (ckpt / "checkpoint").is_file() and (ckpt / "ckpt-4000.index").is_file()
    assert int(checkpoint_value(run_dir, "env_step")) == 4000
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert SUMMARY_KEYS <= on_disk.keys()
    assert on_disk["total_steps"] == 4000 and on_disk["seed"] == 0
    assert on_disk["env_id"] == "CartPole-v1" and on_disk["agent"] == "a2c"
    assert on_disk["episodes"] > 0 and on_disk["wall_seconds"] > 0
    assert on_disk["return_curve"][-1] == [4000, on_disk["mean_return_last_100"]]
    # Fewer than 100 episodes: the best last-100 mean is provisional, never below the current.
    assert on_disk["best_mean_return_last_100"] >= on_disk["mean_return_last_100"]


def test_tensorboard_scalars_on_the_env_step_axis(cartpole_runs):
    (config, *_), (summary, *_) = cartpole_runs
    events = read_events(summary["run_dir"])
    for tag in STEP_TAGS:
        steps = [s for s, _ in events[tag]]
        assert steps == sorted(set(steps)), (tag, steps)  # one point per step
        assert steps[-1] == config.total_steps, tag
        assert all(s % (config.n_steps * config.n_envs) == 0 for s in steps), tag
    sps = [v for _, v in events["charts/steps_per_second"]]
    assert [s for s, _ in events["charts/steps_per_second"]] == [1000, 2000, 3000, 4000]
    assert all(v > 0 for v in sps)
    ((step, text),) = events["config"]
    assert step == 0 and b"| env_id | `CartPole-v1` |" in text and b"| seed | `0` |" in text


# -- resume ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    config = Config(
        total_steps=2000,
        checkpoint_every=1000,
        log_every=1000,
        diagnostics=False,
        runs_root=str(tmp_path_factory.mktemp("runs")),
    )
    first = train(config, quiet=True)
    before = json.loads((Path(first["run_dir"]) / "summary.json").read_text())
    second = train(config.replace(total_steps=4000), resume=first["run_dir"], quiet=True)
    return before, second


def test_resume_continues_from_the_saved_step(resumed):
    before, after = resumed
    run_dir = after["run_dir"]
    assert run_dir == before["run_dir"]
    assert after["total_steps"] == 4000 and after["episodes"] > before["episodes"]
    assert after["return_curve"][: len(before["return_curve"])] == before["return_curve"]
    updates = 4000 // 40  # n_steps * n_envs = 5 * 8 env steps per update
    for opt in ("policy_optimizer", "value_optimizer"):
        assert int(checkpoint_value(run_dir, f"{opt}/_iterations", 2000)) == updates // 2
        assert int(checkpoint_value(run_dir, f"{opt}/_iterations")) == updates
    # same_step autoreset: every step is valid, so the normalizer saw every observation.
    assert checkpoint_value(run_dir, "normalizer/count", 2000) == 2000
    assert checkpoint_value(run_dir, "normalizer/count") == 4000
    events = read_events(run_dir)
    assert len(list(Path(run_dir).glob("events.out.tfevents.*"))) == 2
    for tag in STEP_TAGS:
        steps = [s for s, _ in events[tag]]
        assert steps == [1000, 2000, 3000, 4000], (tag, steps)


def test_resume_refuses_a_shape_change(resumed):
    _, summary = resumed
    with pytest.raises(ConfigError, match="hidden_sizes"):
        train(Config(hidden_sizes=(32,)), resume=summary["run_dir"], quiet=True)


def test_best_mean_is_over_full_100_episode_windows(tmp_path):
    """Before 100 episodes the best is the current mean (provisional); from then on it is the
    maximum over full windows, so a lucky start on a few episodes does not stick."""
    from rlnorm.logger import RunLogger

    logger = RunLogger(tmp_path, Config(log_every=1, total_steps=10), quiet=True)
    best = []
    for step, (n, ret) in enumerate([(50, 100.0), (50, 0.0), (100, 80.0), (100, 10.0)], 1):
        logger.record_episodes(np.full(n, ret), np.full(n, 5))
        logger.log_update(step, {})
        best.append(logger.best_mean)
    logger.close()
    assert best == [100.0, 50.0, 80.0, 80.0]


def test_logged_scalars_are_tensorboard_scalars_with_the_hand_computed_values(tmp_path):
    """Each log writes one raw Summary (rlnorm.logger): TensorBoard must still see scalar
    events (the `scalars` plugin) at the env step, with the means of the episodes finished
    since the previous log, the last-100 mean and the losses."""
    import tensorflow as tf
    from tensorboard.backend.event_processing import event_file_loader

    from rlnorm.logger import RunLogger

    logger = RunLogger(tmp_path, Config(log_every=100, total_steps=1000), quiet=True)
    logger.record_episodes(np.array([10.0, 20.0]), np.array([10, 20]))
    logger.log_update(40, {"policy_loss": 0.25})  # not due: nothing written
    logger.record_episodes(np.array([60.0]), np.array([60]))
    logger.log_update(120, {"policy_loss": 0.5, "value_loss": 2.0, "entropy": 0.6})
    logger.record_episodes(np.array([100.0]), np.array([100]))
    logger.log_update(240, {"policy_loss": -1.0})
    logger.close()
    points, plugins = {}, set()
    for path in sorted(tmp_path.glob("events.out.tfevents.*")):
        for event in event_file_loader.EventFileLoader(str(path)).Load():
            for v in event.summary.value:
                if v.tag.startswith(("charts/", "losses/")):
                    points.setdefault(v.tag, []).append(
                        (event.step, float(tf.make_ndarray(v.tensor)))
                    )
                    plugins.add(v.metadata.plugin_data.plugin_name)
    assert plugins == {"scalars"}
    assert points["charts/episodic_return"] == [(120, 30.0), (240, 100.0)]  # (10+20+60)/3
    assert points["charts/episodic_length"] == [(120, 30.0), (240, 100.0)]
    assert points["charts/mean_return_last_100"] == [(120, 30.0), (240, 47.5)]  # 190/4
    assert points["losses/policy_loss"] == [(120, 0.5), (240, -1.0)]
    assert points["losses/value_loss"] == [(120, 2.0)]
    assert [s for s, _ in points["charts/steps_per_second"]] == [120, 240]
