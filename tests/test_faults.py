"""Issue #5's faults: a process killed mid-save, Ctrl-C / SIGTERM, SIGKILL then `--resume`, and
eval / export that must not touch the run.

Killing needs real processes: each fixture below starts its subprocesses together (they spend
most of their time importing TensorFlow, so on two cores this costs about one start-up), and
the tests read the outcome.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf

import rlnorm.evaluate
import rlnorm.export
from rlnorm.agent import A2CAgent
from rlnorm.checkpoint import Checkpointer, atomic_write_text
from rlnorm.cli import main
from rlnorm.config import Config, to_toml
from rlnorm.evaluate import load_agent, variables_snapshot
from rlnorm.run_dir import checkpoint_dir

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
TIMEOUT = 300  # seconds; generous: CI machines are slow and these processes import TensorFlow


def read_tensor(path: str, name: str):
    return tf.train.load_checkpoint(path).get_tensor(f"{name}/.ATTRIBUTES/VARIABLE_VALUE")


def wait_for(predicate, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


# -- atomic checkpoints ---------------------------------------------------------------------------
# The child builds an agent, fills every variable with 1 and saves at step 1, fills them with 2,
# then saves at step 2 with the writer patched to die (os._exit, no cleanup) at one point:
#   sidecar:      after trainer_state-2.json is written, before TensorFlow writes anything;
#   before_merge: after the data shard is written to ckpt-2_temp/, before it is renamed into
#                 place as ckpt-2.index / ckpt-2.data-*;
#   before_index: after ckpt-2 is complete on disk, before the `checkpoint` index names it.
KILLED_SAVE = textwrap.dedent(
    """
    import os, sys
    import gymnasium as gym, numpy as np, tensorflow as tf
    from tensorflow.python.checkpoint import checkpoint_management
    from tensorflow.python.ops import gen_io_ops
    from rlnorm.agent import A2CAgent
    from rlnorm.checkpoint import Checkpointer
    from rlnorm.config import Config

    point, directory = sys.argv[1], sys.argv[2]
    config = Config(hidden_sizes=(4,), compile="eager")
    obs_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    agent = A2CAgent(config, obs_space, gym.spaces.Discrete(2))

    def fill(value):
        for v in [*agent.variables, *agent.normalizer.variables]:
            if v.dtype.is_floating:
                v.assign(tf.fill(v.shape, tf.cast(value, v.dtype)))

    ckpt = Checkpointer(directory, agent)
    fill(1.0)
    ckpt.save(1, {"episodes": 1})
    fill(2.0)

    def die(*args, **kwargs):
        sys.stdout.flush()
        os._exit(17)

    if point == "sidecar":
        ckpt.manager.save = die
    elif point == "before_merge":
        gen_io_ops.merge_v2_checkpoints = die
    elif point == "before_index":
        checkpoint_management.update_checkpoint_state_internal = die
    ckpt.save(2, {"episodes": 2})
    print("save returned: the kill point was never reached")
    """
)
KILL_POINTS = ("sidecar", "before_merge", "before_index")


@pytest.fixture(scope="module")
def killed_saves(tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    root = tmp_path_factory.mktemp("killed_saves")
    procs = {
        point: subprocess.Popen(
            [sys.executable, "-c", KILLED_SAVE, point, str(root / point)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        for point in KILL_POINTS
    }
    results = {}
    for point, proc in procs.items():
        out, err = proc.communicate(timeout=TIMEOUT)
        results[point] = (
            root / point,
            subprocess.CompletedProcess(proc.args, proc.returncode, out, err),
        )
    return results


def fresh_agent() -> A2CAgent:
    config = Config(hidden_sizes=(4,), compile="eager")
    return A2CAgent(config, gym.spaces.Box(-1.0, 1.0, (3,), np.float32), gym.spaces.Discrete(2))


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_save_killed_midway_leaves_the_previous_checkpoint_loadable(killed_saves, point):
    directory, result = killed_saves[point]
    assert result.returncode == 17, result.stdout + result.stderr[-3000:]  # it died mid-save
    files = {p.name for p in directory.iterdir()}
    # Where it died: what of step 2 had reached the disk.
    assert "trainer_state-2.json" in files
    if point == "before_merge":
        assert [p.name for p in (directory / "ckpt-2_temp").iterdir()]  # the data shard
        assert "ckpt-2.index" not in files
    if point == "before_index":
        assert {"ckpt-2.index", "ckpt-2.data-00000-of-00001"} <= files

    # The index still names step 1, and step 1 loads, whole.
    assert tf.train.latest_checkpoint(str(directory)) == str(directory / "ckpt-1")
    agent = fresh_agent()
    checkpointer = Checkpointer(directory, agent)
    step, trainer_state = checkpointer.restore()
    assert step == 1 and trainer_state == {"episodes": 1}
    for v in [*agent.variables, *agent.normalizer.variables]:
        if v.dtype.is_floating:
            np.testing.assert_array_equal(v.numpy(), 1.0, err_msg=v.name)

    # And the run can go on: the next save over the debris becomes the latest.
    checkpointer.save(2, {"episodes": 2})
    assert tf.train.latest_checkpoint(str(directory)) == str(directory / "ckpt-2")
    assert Checkpointer(directory, fresh_agent()).restore() == (2, {"episodes": 2})


# -- SIGINT / SIGTERM / SIGKILL during `rlnorm train` ---------------------------------------------
# CartPole, 8 envs x 5 steps = 40 env steps per update, a checkpoint every 200 env steps.
TRAIN_FLAGS = ["--quiet", "--set", "checkpoint_every=200", "--set", "diagnostics=false"]
KILL_TOTAL_STEPS = 1010  # not a multiple of 40: the loop stops at the first update >= it, 1040
KILL_FINAL_STEP = 1040


def start_training(run_dir: Path, total_steps: int) -> subprocess.Popen:
    # --env: the defaults (SyncVectorEnv, every step valid), not the cartpole recipe.
    argv = [sys.executable, "-m", "rlnorm.cli", "train", "--env", "CartPole-v1"]
    argv += ["--total-steps", str(total_steps)]
    argv += ["--run-dir", str(run_dir), *TRAIN_FLAGS]
    with open(run_dir.with_suffix(".log"), "w") as log:  # a file, not a pipe: never fills up
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=ENV)


@pytest.fixture(scope="module")
def signalled_runs(tmp_path_factory) -> dict[str, tuple[Path, int, str]]:
    """Three `rlnorm train` processes; each gets its signal once its first checkpoint exists
    (so training is under way). SIGINT / SIGTERM runs are 10M steps long: only the signal
    stops them. Returns {signal name: (run dir, exit code, output)}."""
    root = tmp_path_factory.mktemp("signalled")
    runs = {"SIGINT": 10_000_000, "SIGTERM": 10_000_000, "SIGKILL": KILL_TOTAL_STEPS}
    procs = {name: start_training(root / name, total) for name, total in runs.items()}
    waiting = dict(procs)

    def signal_the_ready_ones() -> bool:  # whichever gets there first, at once
        for name, proc in list(waiting.items()):
            if proc.poll() is not None:
                pytest.fail(f"the {name} run ended (rc {proc.returncode}) before its signal")
            if (checkpoint_dir(root / name) / "checkpoint").exists():
                proc.send_signal(getattr(signal, name))
                del waiting[name]
        return not waiting

    try:
        wait_for(signal_the_ready_ones, "the first checkpoint of every run")
        codes = {name: proc.wait(timeout=TIMEOUT) for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return {
        name: (root / name, codes[name], (root / name).with_suffix(".log").read_text())
        for name in runs
    }


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM"])
def test_sigint_and_sigterm_finish_the_update_save_and_exit_cleanly(signalled_runs, name):
    run_dir, code, output = signalled_runs[name]
    assert code == 0, output[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    step = summary["total_steps"]
    assert summary["stopped_by"] == name and 0 < step < 10_000_000 and step % 40 == 0
    assert f"{name} received: saved a checkpoint at step {step}; continue with " in output
    assert f"`rlnorm train --resume {run_dir}`" in output
    # The checkpoint at that step holds the finished update: every rollout went through the
    # normalizer and through one optimizer step.
    latest = tf.train.latest_checkpoint(str(checkpoint_dir(run_dir)))
    assert latest == str(checkpoint_dir(run_dir) / f"ckpt-{step}")
    assert read_tensor(latest, "env_step") == step
    assert read_tensor(latest, "normalizer/count") == step
    for opt in ("policy_optimizer", "value_optimizer"):
        assert read_tensor(latest, f"{opt}/_iterations") == step // 40


def test_sigkill_then_resume_reaches_the_same_final_step(signalled_runs, capsys):
    run_dir, code, output = signalled_runs["SIGKILL"]
    assert code == -signal.SIGKILL, output[-3000:]
    assert not (run_dir / "summary.json").exists()  # it really died part-way
    killed_at = int(
        read_tensor(tf.train.latest_checkpoint(str(checkpoint_dir(run_dir))), "env_step")
    )
    assert 0 < killed_at < KILL_TOTAL_STEPS

    assert main(["train", "--resume", str(run_dir), "--quiet"]) == 0, capsys.readouterr().err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["total_steps"] == KILL_FINAL_STEP and summary["stopped_by"] == "total_steps"
    # As an uninterrupted run: every step counted once, one optimizer step per 40 env steps.
    latest = tf.train.latest_checkpoint(str(checkpoint_dir(run_dir)))
    assert latest == str(checkpoint_dir(run_dir) / f"ckpt-{KILL_FINAL_STEP}")
    assert read_tensor(latest, "normalizer/count") == KILL_FINAL_STEP
    for opt in ("policy_optimizer", "value_optimizer"):
        assert read_tensor(latest, f"{opt}/_iterations") == KILL_FINAL_STEP // 40


# -- eval and export change nothing ---------------------------------------------------------------
@pytest.fixture
def batchnorm_run(tmp_path) -> Path:
    """A CartPole run folder with BatchNorm in both networks and non-trivial statistics (so a
    training-mode call or a normalizer update during eval/export would move them)."""
    run_dir = tmp_path / "run"
    config = Config(
        hidden_sizes=(8,), policy_norm="batch", value_norm="batch", run_dir=str(run_dir)
    )
    envs = gym.make_vec(config.env_id, num_envs=1)
    agent = A2CAgent(config, envs.single_observation_space, envs.single_action_space)
    envs.close()
    agent.normalizer.set_state(500, [0.1, -0.2, 0.03, 0.4], [0.5, 2.0, 0.01, 1.5])
    rng = np.random.default_rng(0)
    for v in [*agent.policy.non_trainable_weights, *agent.value.non_trainable_weights]:
        v.assign(rng.uniform(0.5, 1.5, v.shape).astype(np.float32))  # moving means and variances
    run_dir.mkdir()
    atomic_write_text(run_dir / "config.toml", to_toml(config))
    Checkpointer(checkpoint_dir(run_dir), agent).save(1000, {"episodes": 3})
    return run_dir


def folder_state(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("command", ["eval", "export"])
def test_eval_and_export_change_no_file_and_no_statistic(
    batchnorm_run, command, tmp_path, monkeypatch, capsys
):
    before = folder_state(batchnorm_run)
    loaded = []

    def spy(*args, **kwargs):  # the agent the command uses, with its variables right after restore
        config, agent, ckpt = load_agent(*args, **kwargs)
        loaded.append((agent, variables_snapshot(agent)))
        return config, agent, ckpt

    monkeypatch.setattr(rlnorm.evaluate, "load_agent", spy)
    monkeypatch.setattr(rlnorm.export, "load_agent", spy)
    argv = [command, str(batchnorm_run)]
    argv += ["--episodes", "2"] if command == "eval" else [str(tmp_path / "exported")]
    assert main(argv) == 0, capsys.readouterr().err

    after = folder_state(batchnorm_run)
    if command == "eval":  # its report is the one new file, beside the checkpoints
        assert set(after) - set(before) == {"eval.json"}
        del after["eval.json"]
    assert after == before  # no checkpoint written, rewritten or touched
    ((agent, snapshot),) = loaded
    now = variables_snapshot(agent)
    assert any("moving_mean" in k for k in snapshot) and any(
        "moving_variance" in k for k in snapshot
    )
    for key in snapshot:
        np.testing.assert_array_equal(now[key], snapshot[key], err_msg=key)
    assert float(agent.normalizer.count.numpy()) == 500  # the restored statistics, unchanged
