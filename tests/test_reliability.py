"""Misbehaving envs, refused resumes, blocked envs, eval caps, write failures: each ends as a
user would want (one-line error, exit 2; or the documented behaviour), nothing written lost.
The fault table in docs/faults.md points at these tests."""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf

import rlnorm
from rlnorm.cli import main
from rlnorm.config import Config, ConfigError
from rlnorm.envs import EnvError
from rlnorm.loop import train

TESTS = Path(__file__).parent
TINY = dict(
    total_steps=400, n_envs=2, log_every=200, checkpoint_every=200, diagnostics=False, seed=0
)


class Misbehaving(gym.Env):
    """A 3-feature env; `fault` decides what goes wrong at its `at`-th step() call."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, fault: str = "none", at: int = 3, index_of_fault: int = 1, ids=None):
        self.fault, self.at, self.calls = fault, at, 0
        self.index_of_fault, self.ids = index_of_fault, ids
        self.index = None

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if self.index is None:  # Gymnasium seeds sub-env i with seed + i
            self.index = (seed or 0) % 100
        if self.fault == "reset_raises" and self.index == self.index_of_fault:
            raise RuntimeError("the simulator did not start")
        return np.zeros(3, np.float32), {}

    def step(self, action):
        self.calls += 1
        obs, reward, terminated, truncated = np.zeros(3, np.float32), 1.0, False, False
        if self.index == self.index_of_fault and self.calls == self.at:
            if self.fault == "step_raises":
                raise ConnectionError("lost the simulator")
            if self.fault == "blocks":
                time.sleep(3600)
            if self.fault == "wrong_shape":
                obs = np.zeros(5, np.float32)
            if self.fault == "string_reward":
                reward = "1.0"
            if self.fault == "array_reward":
                reward = np.ones(2)
            if self.fault == "string_terminated":
                terminated = "no"
            if self.fault == "four_tuple":
                return obs, reward, False, {}
        return obs, reward, terminated, truncated, {}


def train_on(fault: str, tmp_path, **kw):
    config = Config(env_id="Misbehaving-v0", runs_root=str(tmp_path), **{**TINY, **kw})
    return train(config, quiet=True, env=lambda: Misbehaving(fault))


# -- the env misbehaves ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fault, call, expected",
    [
        ("step_raises", "step", r"raised ConnectionError: lost the simulator"),
        ("reset_raises", "reset", r"raised RuntimeError: the simulator did not start"),
        ("wrong_shape", "step", r"returned an observation of shape \(5,\).*expects shape \(3,\)"),
        ("string_reward", "step", r"returned reward '1.0'; a reward is one real number"),
        ("array_reward", "step", r"returned reward ndarray \(2,\); a reward is one real number"),
        ("string_terminated", "step", r"returned terminated = 'no' \(str\); it must be a bool"),
        ("four_tuple", "step", r"returned 4 values.*\(obs, reward, terminated, truncated, info\)"),
    ],
)
def test_env_faults_are_one_env_error_naming_env_index_and_call(fault, call, expected, tmp_path):
    with pytest.raises(EnvError, match=rf"'Misbehaving-v0', env index 1: {call}\(\) {expected}"):
        train_on(fault, tmp_path)


gym.register(id="rlnorm_test/StepRaises-v0", entry_point=lambda: Misbehaving("step_raises"))


def test_an_env_fault_through_the_cli_is_one_line_exit_2(tmp_path, capsys):
    """A registered env whose sub-env 1 raises: `rlnorm train` prints one line, exit 2."""
    argv = ["train", "--env", "test_reliability:rlnorm_test/StepRaises-v0", "--quiet"]
    argv += ["--set", f"runs_root={tmp_path}", "--set", "n_envs=2", "--set", "diagnostics=false"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(
        "rlnorm train: error: Environment 'test_reliability:rlnorm_test/StepRaises-v0', env "
        "index 1: step() raised ConnectionError: lost the simulator"
    )


def test_an_observation_space_without_features_is_refused(tmp_path):
    class Empty(Misbehaving):
        observation_space = gym.spaces.Box(-1.0, 1.0, (0,), np.float32)

    config = Config(env_id="Empty-v0", runs_root=str(tmp_path), **TINY)
    with pytest.raises(EnvError, match=r"has no features \(shape \(0,\)\)"):
        train(config, quiet=True, env=lambda: Empty())
    assert not any(tmp_path.iterdir())


def test_every_step_dropped_is_an_error_not_a_silent_success(tmp_path):
    class AllNaN(Misbehaving):
        def step(self, action):
            return np.full(3, np.nan, np.float32), 1.0, False, False, {}

    config = Config(env_id="AllNaN-v0", runs_root=str(tmp_path), nonfinite="drop", **TINY)
    with (
        pytest.warns(UserWarning, match="dropped"),
        pytest.raises(rlnorm.NonFiniteError, match="Every env step of this run"),
    ):
        train(config, quiet=True, env=lambda: AllNaN())


# -- signals: a blocked env cannot hang a run ----------------------------------------------------
def test_sigint_ends_a_run_whose_env_blocks(tmp_path):
    """The env's 3rd step sleeps for an hour inside the compiled update; SIGINT must still end
    the process after `stop_grace_seconds`, naming the last checkpoint."""
    code = f"""
import sys; sys.path.insert(0, {str(TESTS)!r})
from test_reliability import Misbehaving
from rlnorm.config import Config
from rlnorm.loop import train
config = Config(env_id="Blocks-v0", runs_root={str(tmp_path)!r}, total_steps=10**6, n_envs=2,
                diagnostics=False, stop_grace_seconds=2.0, checkpoint_every=10)
train(config, quiet=True, env=lambda: Misbehaving("blocks", at=30))
"""
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stderr=subprocess.PIPE, text=True, cwd=tmp_path
    )
    deadline = time.monotonic() + 120
    while not list(tmp_path.rglob("ckpt-*.index")) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2.0)  # the env is asleep by now: its 30th step comes ~30 updates after the first
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGINT, err
    assert "did not end (an env step may be blocked): stopping now" in err
    assert "Last checkpoint: " in err and "ckpt-" in err.splitlines()[-1]


# -- resume ---------------------------------------------------------------------------------------
@pytest.fixture
def finished_run(tmp_path):
    config = Config(env_id="CartPole-v1", runs_root=str(tmp_path / "runs"), **TINY)
    return Path(train(config, quiet=True)["run_dir"])


def snapshot(run_dir: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def test_resume_of_a_finished_run_changes_nothing(finished_run):
    before = snapshot(finished_run)
    with pytest.warns(UserWarning, match="nothing to train"):
        summary = train(None, resume=finished_run, quiet=True)
    assert summary["total_steps"] == 400 and snapshot(finished_run) == before


def test_resume_refuses_to_move_the_run_or_cut_its_history(finished_run, tmp_path, capsys):
    base = ["train", "--resume", str(finished_run), "--quiet"]
    assert main([*base, "--run-dir", str(tmp_path / "elsewhere")]) == 2
    assert "a resumed run stays in its folder" in capsys.readouterr().err
    assert main([*base, "--total-steps", "200"]) == 2
    assert "the run is at step 400 already" in capsys.readouterr().err
    assert not (tmp_path / "elsewhere").exists()


def test_a_killed_and_resumed_run_has_one_curve(tmp_path):
    """Events written after the last checkpoint by a run that died are dropped at resume, so
    every tag's steps increase strictly across the run's event files."""
    config = Config(
        env_id="CartPole-v1",
        runs_root=str(tmp_path),
        **{**TINY, "total_steps": 1200, "checkpoint_every": 400, "log_every": 40},
    )
    run_dir = Path(train(config, quiet=True)["run_dir"])
    # As if killed after step 800: the checkpoint of 1200 (and the summary) never happened.
    ckpt = run_dir / "checkpoints"
    for f in ckpt.glob("ckpt-1200*"):
        f.unlink()
    index = (ckpt / "checkpoint").read_text().replace("ckpt-1200", "ckpt-800")
    (ckpt / "checkpoint").write_text(index)
    (run_dir / "summary.json").unlink()
    train(None, resume=run_dir, quiet=True)
    steps: dict[str, list[int]] = {}
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for v in event.summary.value:
                steps.setdefault(v.tag, []).append(event.step)
    curve = steps["charts/steps_per_second"]
    assert curve[-1] == 1200 and 800 in curve
    for tag, s in steps.items():
        assert all(a < b for a, b in zip(s, s[1:])), (tag, s)


# -- eval ------------------------------------------------------------------------------------------
def test_eval_cuts_an_episode_the_env_never_ends(finished_run):
    class Endless(Misbehaving):
        pass  # never terminates nor truncates

    run = rlnorm.load(finished_run)
    from rlnorm.evaluate import evaluate_agent

    with pytest.warns(UserWarning, match="2 of 2 evaluation episodes were cut at"):
        report = evaluate_agent(
            run.agent,
            run.config,
            episodes=2,
            deterministic=True,
            seed=0,
            env=lambda: gym.wrappers.TransformObservation(
                Endless(), lambda o: np.zeros(4, np.float32), gym.spaces.Box(-1, 1, (4,))
            ),
            max_episode_steps=50,
        )
    assert report["episodes_cut"] == 2 and report["returns"] == [50.0, 50.0]


def test_eval_prints_its_result_when_eval_json_cannot_be_written(finished_run, capsys, monkeypatch):
    import rlnorm.evaluate as evaluate_module

    def read_only(path, text):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(evaluate_module, "atomic_write_text", read_only)
    with pytest.warns(UserWarning, match="eval.json not written"):
        assert main(["eval", str(finished_run), "--episodes", "2"]) == 0
    out = capsys.readouterr().out
    assert "mean return" in out and "eval.json NOT written" in out


@pytest.mark.parametrize(
    "flags, message",
    [(["--seed", "-1"], "seed must be in"), (["--max-episode-steps", "0"], "must be >= 1")],
)
def test_eval_refuses_bad_arguments_in_one_line(finished_run, capsys, flags, message):
    assert main(["eval", str(finished_run), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_exported_policy_refuses_nan_observations(finished_run, tmp_path):
    path = rlnorm.load(finished_run).export(tmp_path / "exported")
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    obs = np.zeros((1, 4), np.float32)
    assert serve(observation=tf.constant(obs))["action"].shape == (1,)
    obs[0, 2] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="observation holds NaN or Inf"):
        serve(observation=tf.constant(obs))


# -- writes that fail -----------------------------------------------------------------------------
def test_a_full_disk_at_a_save_is_one_line_and_keeps_the_last_checkpoint(
    tmp_path, capsys, monkeypatch
):
    from rlnorm.checkpoint import Checkpointer

    original, calls = Checkpointer.save, []

    def save(self, step, state=None):
        calls.append(step)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.directory))
        return original(self, step, state)

    monkeypatch.setattr(Checkpointer, "save", save)
    argv = ["train", "--env", "CartPole-v1", "--quiet", "--set", f"runs_root={tmp_path}"]
    argv += ["--total-steps", "800", "--set", "checkpoint_every=200", "--set", "diagnostics=false"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("rlnorm train: error: No space left on device: ")
    assert "Checkpoints already on disk are intact." in err and err.count("\n") == 1
    (run_dir,) = tmp_path.glob("CartPole-v1/*")
    assert tf.train.latest_checkpoint(str(run_dir / "checkpoints")).endswith("ckpt-200")


def test_a_dangling_checkpoints_link_fails_before_training(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    os.symlink(tmp_path / "nowhere", run_dir / "checkpoints")
    config = Config(env_id="CartPole-v1", run_dir=str(run_dir), **TINY)
    with pytest.raises((FileExistsError, rlnorm.RunDirError)):
        train(config, quiet=True)
    assert not (run_dir / "summary.json").exists()


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="tf_threads"):
        rlnorm.train("CartPole-v1", tf_threads=100_000, runs_root=str(tmp_path))
    assert not any(tmp_path.iterdir())


# -- files --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "content, message",
    [
        (b"gamma = 0.9\n", None),
        (b"\xef\xbb\xbfgamma = 0.9\n", None),  # a byte-order mark is fine
        (b'gamma = "\xff"\n', "is not UTF-8 text (byte 0xff at offset 9)"),
        ("folder", "is not a regular file (a folder or a device)"),
    ],
)
def test_toml_files_that_are_not_toml_text_are_named(tmp_path, content, message):
    from rlnorm.config import load_toml

    path = tmp_path / "c.toml"
    if content == "folder":
        path.mkdir()
    else:
        path.write_bytes(content)
    if message is None:
        assert load_toml(path).gamma == 0.9
    else:
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_toml(path)


def test_atomic_write_never_writes_through_a_planted_link(tmp_path):
    from rlnorm.checkpoint import atomic_write_text

    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    target = tmp_path / "summary.json"
    os.symlink(victim, tmp_path / f".summary.json.tmp{os.getpid()}")
    atomic_write_text(target, "{}")
    assert victim.read_text() == "keep me" and target.read_text() == "{}"
    assert not target.is_symlink()


def test_an_edited_config_is_named_with_its_keys(finished_run, capsys):
    config = finished_run / "config.toml"
    config.write_text(config.read_text().replace("hidden_sizes = [64, 64]", "hidden_sizes = [32]"))
    assert "hidden_sizes = [32]" in config.read_text()
    assert main(["eval", str(finished_run), "--episodes", "1"]) == 2
    err = capsys.readouterr().err
    assert "config.toml was edited after the checkpoints were written" in err
    assert "hidden_sizes: checkpoints have [64, 64], config.toml says [32]" in err


class DiesInWorker(Misbehaving):
    """Its worker process dies at the env's 3rd step (an async vector env's worker crash)."""

    def step(self, action):
        self.calls += 1
        if self.calls == 3:
            os._exit(1)
        return super().step(action)


gym.register(id="rlnorm_test/DiesInWorker-v0", entry_point=DiesInWorker)


def test_an_async_worker_that_dies_is_one_env_error(tmp_path):
    config = Config(
        env_id="test_reliability:rlnorm_test/DiesInWorker-v0",
        vectorization_mode="async",
        runs_root=str(tmp_path),
        **TINY,
    )
    with (
        pytest.warns(UserWarning, match="Closing the envs failed"),
        pytest.raises(EnvError, match=r"step\(\) raised EOFError.*An env worker process died"),
    ):
        train(config, quiet=True)


def test_export_to_a_file_is_one_line(finished_run, tmp_path, capsys):
    target = tmp_path / "a_file"
    target.write_text("")
    assert main(["export", str(finished_run), str(target)]) == 2
    err = capsys.readouterr().err
    assert "it is a file, not a folder" in err and err.count("\n") == 1


def test_a_full_disk_at_an_event_write_is_one_line(tmp_path, capsys, monkeypatch):
    """TensorBoard's writer reports a full disk when it writes; the CLI prints it as one line."""
    from rlnorm import _fast

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "events"))

    monkeypatch.setattr(_fast, "write_summaries", full)
    argv = ["train", "--env", "CartPole-v1", "--quiet", "--set", f"runs_root={tmp_path}"]
    assert main([*argv, "--total-steps", "400", "--set", "diagnostics=false"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rlnorm train: error: No space left on device: ") and err.count("\n") == 1


def test_an_unreadable_toml_file_is_named(tmp_path, monkeypatch):
    """Root reads every file, so the permission error is injected where the file is read."""
    from rlnorm.config import load_toml

    path = tmp_path / "c.toml"
    path.write_text("gamma = 0.9\n")

    def denied(self):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(ConfigError, match="c.toml' cannot be read: Permission denied"):
        load_toml(path)


def test_doctor_names_a_corrupt_event_file(finished_run, capsys):
    (events,) = finished_run.glob("events.out.tfevents.*")
    data = bytearray(events.read_bytes())
    for i in range(200, len(data), 97):  # flip bytes after the first records
        data[i] ^= 0xFF
    events.write_bytes(bytes(data))
    main(["doctor", str(finished_run)])
    out = capsys.readouterr().out
    assert f"event file {events} is corrupt (corrupted record at" in out
