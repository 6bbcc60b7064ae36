"""Damaged run folders: a corrupt newest checkpoint falls back to an older intact one with a
warning naming it; none intact, a garbage index, a corrupt sidecar, a non-finite state and a
checkpoint pruned while being read each get their own handling.

A run folder here has three checkpoints, ckpt-1..ckpt-3, in which every float variable holds
its step number, so which one was restored is read off any weight.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf

from rlnorm.agent import A2CAgent
from rlnorm.checkpoint import (
    CheckpointCorruptError,
    Checkpointer,
    CheckpointMismatchError,
    NonFiniteStateError,
    atomic_write_text,
)
from rlnorm.cli import main
from rlnorm.config import Config, to_toml
from rlnorm.evaluate import load_agent
from rlnorm.normalizer import RewardScaler
from rlnorm.run_dir import checkpoint_dir, require_checkpoint

CONFIG = Config(hidden_sizes=(4,), compile="eager", diagnostics=False)
STEPS = (1, 2, 3)


def make_agent(config: Config = CONFIG) -> A2CAgent:
    envs = gym.make_vec(config.env_id, num_envs=1)
    agent = A2CAgent(config, envs.single_observation_space, envs.single_action_space)
    envs.close()
    return agent


def fill(checkpointer: Checkpointer, value: float) -> None:
    for _, v in checkpointer.float_variables:
        v.assign(tf.fill(v.shape, tf.cast(value, v.dtype)))


def restored_value(checkpointer: Checkpointer) -> float:
    """The one value every float variable holds (asserting they agree)."""
    values = {float(np.unique(v.numpy())[0]) for _, v in checkpointer.float_variables}
    assert len(values) == 1, values
    return values.pop()


def folder_state(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def run_dir(tmp_path) -> Path:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    atomic_write_text(run_dir / "config.toml", to_toml(CONFIG))
    checkpointer = Checkpointer(checkpoint_dir(run_dir), make_agent())
    for step in STEPS:
        fill(checkpointer, step)
        checkpointer.save(step, {"episodes": step})
    return run_dir


def ckpt(run_dir: Path, step: int, part: str = "") -> Path:
    return checkpoint_dir(run_dir) / f"ckpt-{step}{part}"


DATA, INDEX = ".data-00000-of-00001", ".index"


def corrupt(path: Path, how: str) -> None:
    size = path.stat().st_size
    if how == "truncated":
        with open(path, "r+b") as f:
            f.truncate(size // 2)
    elif how == "zeroed":
        path.write_bytes(bytes(size))
    elif how == "byte_flipped":
        data = bytearray(path.read_bytes())
        data[size // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif how == "deleted":
        path.unlink()
    else:
        raise AssertionError(how)


DAMAGE = {  # (file, how)
    "data_truncated": (DATA, "truncated"),
    "data_zeroed": (DATA, "zeroed"),
    "data_byte_flipped": (DATA, "byte_flipped"),
    "data_deleted": (DATA, "deleted"),
    "index_truncated": (INDEX, "truncated"),
}


# -- a corrupt newest checkpoint ------------------------------------------------------------------
@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("read_only", [True, False], ids=["eval", "resume"])
def test_corrupt_latest_falls_back_to_the_older_one_with_a_warning(run_dir, damage, read_only):
    part, how = DAMAGE[damage]
    corrupt(ckpt(run_dir, 3, part), how)
    before = folder_state(run_dir)
    checkpointer = Checkpointer(checkpoint_dir(run_dir), make_agent(), read_only=read_only)
    with pytest.warns(UserWarning) as caught:
        step, state = checkpointer.restore()
    assert (step, state) == (2, {"episodes": 2}) and restored_value(checkpointer) == 2.0
    assert checkpointer.restored == str(ckpt(run_dir, 2))
    (warning,) = [str(w.message) for w in caught]
    assert warning.startswith(f"Checkpoint {ckpt(run_dir, 3)} is corrupt (") and "\n" not in warning
    assert warning.endswith(f"restored the older {ckpt(run_dir, 2)}.")
    if read_only:  # eval/export write nothing
        assert folder_state(run_dir) == before
    else:  # a resume names the checkpoint it continues from, and saves on from there
        assert tf.train.latest_checkpoint(str(checkpoint_dir(run_dir))) == str(ckpt(run_dir, 2))
        checkpointer.save(4, {"episodes": 4})
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert Checkpointer(checkpoint_dir(run_dir), make_agent()).restore()[0] == 4


@pytest.mark.parametrize("damage", ["data_zeroed", "index_truncated"])
def test_load_agent_falls_back_too(run_dir, damage):
    part, how = DAMAGE[damage]
    corrupt(ckpt(run_dir, 3, part), how)
    with pytest.warns(UserWarning, match="ckpt-3 is corrupt"):
        _, agent, path = load_agent(run_dir)
    assert path == str(ckpt(run_dir, 2))
    np.testing.assert_array_equal(agent.policy.trainable_weights[0].numpy(), 2.0)


def test_no_intact_checkpoint_is_one_error_naming_every_file(run_dir, capsys):
    for step, damage in zip(STEPS, ["data_zeroed", "data_deleted", "index_truncated"]):
        part, how = DAMAGE[damage]
        corrupt(ckpt(run_dir, step, part), how)
    with pytest.raises(CheckpointCorruptError) as error:
        Checkpointer(checkpoint_dir(run_dir), make_agent()).restore()
    message = str(error.value)
    assert message.startswith(f"No intact checkpoint in {checkpoint_dir(run_dir)}: ")
    assert all(str(ckpt(run_dir, step)) in message for step in STEPS)
    assert "\n" not in message and isinstance(error.value, ValueError)
    assert main(["eval", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "rlnorm eval: error: No intact checkpoint in" in err and "Traceback" not in err


# -- the `checkpoint` index file ---------------------------------------------------------------
@pytest.mark.parametrize("index", ["garbage", "missing"])
@pytest.mark.parametrize("read_only", [True, False], ids=["eval", "resume"])
def test_garbage_or_missing_index_is_rebuilt_from_the_files(run_dir, index, read_only):
    index_file = checkpoint_dir(run_dir) / "checkpoint"
    if index == "garbage":
        index_file.write_bytes(b"\x00model_checkpoint_path: {{{ not a CheckpointState")
    else:
        index_file.unlink()
    require_checkpoint(run_dir)  # not "no checkpoint yet"
    before = folder_state(run_dir)
    checkpointer = Checkpointer(checkpoint_dir(run_dir), make_agent(), read_only=read_only)
    with pytest.warns(UserWarning, match="missing or unreadable; restored .*ckpt-3"):
        assert checkpointer.restore() == (3, {"episodes": 3})
    assert restored_value(checkpointer) == 3.0
    if read_only:
        assert folder_state(run_dir) == before
    else:  # rebuilt, with every checkpoint in it, so the manager prunes them as before
        state = tf.train.get_checkpoint_state(str(checkpoint_dir(run_dir)))
        assert state.model_checkpoint_path == str(ckpt(run_dir, 3))
        assert list(state.all_model_checkpoint_paths) == [str(ckpt(run_dir, s)) for s in STEPS]
        checkpointer.save(4, {"episodes": 4})
        assert not ckpt(run_dir, 1, INDEX).exists() and ckpt(run_dir, 2, INDEX).exists()


# -- the trainer-state sidecar ---------------------------------------------------------------
def test_corrupt_sidecar_warns_for_eval_and_stops_a_resume_naming_it(run_dir):
    sidecar = checkpoint_dir(run_dir) / "trainer_state-3.json"
    sidecar.write_text('{"episodes": 3, "return_cur')
    reader = Checkpointer(checkpoint_dir(run_dir), make_agent(), read_only=True)
    with pytest.warns(UserWarning, match=f"{sidecar} is corrupt .*; ignored"):
        assert reader.restore() == (3, {})
    writer = Checkpointer(checkpoint_dir(run_dir), make_agent())
    with pytest.raises(CheckpointCorruptError, match=f"{sidecar} is corrupt") as error:
        writer.restore()
    assert "delete it to resume with an empty history" in str(error.value)
    sidecar.unlink()  # the fix the message offers
    assert writer.restore() == (3, {})


# -- non-finite state ------------------------------------------------------------------------
def nan_at(variable) -> None:
    value = np.array(variable.numpy())
    value.flat[0] = np.nan
    variable.assign(value)


@pytest.mark.parametrize("where", ["policy", "value_optimizer", "normalizer", "reward_stats"])
def test_non_finite_state_is_not_saved_and_names_the_variable(tmp_path, where):
    agent = make_agent()
    scaler = RewardScaler(n_envs=1, gamma=0.99)
    checkpointer = Checkpointer(tmp_path / "checkpoints", agent, scaler)
    checkpointer.save(1, {"episodes": 1})
    before = folder_state(tmp_path)
    variable, name = {
        "policy": (agent.policy.trainable_weights[0], "policy/"),
        "value_optimizer": (agent.value_optimizer.variables[-1], "value_optimizer/"),
        "normalizer": (agent.normalizer.var, "normalizer/var"),
        "reward_stats": (scaler.return_stats.mean, "reward_return_stats/mean"),
    }[where]
    nan_at(variable)
    assert [n for n in checkpointer.nonfinite_variables()] == [
        n for n, v in checkpointer.float_variables if v is variable
    ]
    with pytest.raises(NonFiniteStateError, match=f"hold NaN or Inf \\({name}") as error:
        checkpointer.save(2, {"episodes": 2})
    assert isinstance(error.value, FloatingPointError)
    assert f"the last good checkpoint, {tmp_path / 'checkpoints' / 'ckpt-1'}, is kept" in str(
        error.value
    )
    assert folder_state(tmp_path) == before  # nothing written, not even the sidecar


def test_eval_and_export_refuse_a_non_finite_checkpoint(run_dir, tmp_path, capsys):
    """One written by a version without the guard (here: TF's manager, bypassing `save`)."""
    checkpointer = Checkpointer(checkpoint_dir(run_dir), make_agent())
    checkpointer.restore()
    nan_at(checkpointer.checkpoint.policy.trainable_weights[0])
    checkpointer.env_step.assign(4)
    checkpointer.manager.save(checkpoint_number=4)
    with pytest.raises(NonFiniteStateError, match=f"Checkpoint {ckpt(run_dir, 4)} holds NaN"):
        load_agent(run_dir)
    for argv in (["eval", str(run_dir)], ["export", str(run_dir), str(tmp_path / "exported")]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"rlnorm {argv[0]}: error: Checkpoint ") and "\n" not in err
    assert not (tmp_path / "exported").exists()


# -- a mismatch, and a checkpoint pruned while being read ---------------------------------------
def test_mismatch_names_the_cause_and_the_fix(run_dir):
    wider = make_agent(CONFIG.replace(hidden_sizes=(8,)))
    with pytest.raises(CheckpointMismatchError) as error:
        Checkpointer(checkpoint_dir(run_dir), wider).restore()
    message = str(error.value)
    assert message.startswith(f"Checkpoint {ckpt(run_dir, 3)} does not fit the agent the run's")
    assert "If you edited config.toml, restore it; otherwise the checkpoint was written by " in (
        message
    )
    assert message.endswith("another rlnorm version: start a new run.") and "#" not in message


def test_a_checkpoint_pruned_between_lookup_and_restore_gives_the_new_latest(run_dir):
    """A trainer saves ckpt-4 and ckpt-5 (keeping 2) just as the reader opens ckpt-3: the reader
    looks up the new latest instead, and warns of no corruption."""
    trainer = Checkpointer(checkpoint_dir(run_dir), make_agent(), max_to_keep=2)
    reader = Checkpointer(checkpoint_dir(run_dir), make_agent(), read_only=True)
    real = reader._restore_one
    opened = []

    def racing_restore(path, partial):
        opened.append(Path(path).name)
        if len(opened) == 1:
            for step in (4, 5):
                fill(trainer, step)
                trainer.save(step, {"episodes": step})
            assert not os.path.exists(f"{path}{INDEX}")  # pruned under the reader
        real(path, partial)

    reader._restore_one = racing_restore
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert reader.restore() == (5, {"episodes": 5})
    assert opened == ["ckpt-3", "ckpt-5"] and restored_value(reader) == 5.0
    assert json.loads((checkpoint_dir(run_dir) / "trainer_state-5.json").read_text())
