"""Checkpoints: networks + the ONE normalizer + optimizers + reward scaler + RNG + env step.

Atomicity comes from TensorFlow's own guarantee, shown in tests/test_faults.py: a
`tf.train.Checkpoint` writes its shards to a temporary prefix and renames them into place,
and `CheckpointManager` rewrites its `checkpoint` index file atomically only after the data
is complete. A process killed mid-save therefore leaves the previous checkpoint loadable. The
small JSON sidecar (episode history for the progress curve) is written to a temp file and
`os.replace`d before the index moves, for the same reason.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import tensorflow as tf


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write then rename: readers see the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class CheckpointMismatchError(ValueError):
    """A checkpoint's variables do not fit the agent (another rlnorm's layout)."""


class Checkpointer:
    """Saves and restores everything a run needs to continue exactly where it stopped."""

    def __init__(self, directory: str | Path, agent, reward_scaler=None, max_to_keep: int = 3):
        self.directory = Path(directory)
        self.env_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="env_step")
        objects = dict(
            normalizer=agent.normalizer,
            policy=agent.policy,
            value=agent.value,
            policy_optimizer=agent.policy_optimizer,
            value_optimizer=agent.value_optimizer,
            rng=agent.rng,
            env_step=self.env_step,
        )
        if reward_scaler is not None:
            objects["reward_return_stats"] = reward_scaler.return_stats
        self.checkpoint = tf.train.Checkpoint(**objects)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, str(self.directory), max_to_keep=max_to_keep
        )

    @property
    def latest(self) -> str | None:
        return self.manager.latest_checkpoint

    def save(self, env_step: int, trainer_state: dict | None = None) -> str:
        self.env_step.assign(env_step)
        self.directory.mkdir(parents=True, exist_ok=True)
        if trainer_state is not None:
            atomic_write_text(
                self.directory / f"trainer_state-{env_step}.json", json.dumps(trainer_state)
            )
        path = self.manager.save(checkpoint_number=env_step)
        self._prune_sidecars()
        return path

    def restore(self, path: str | None = None, partial: bool = False) -> tuple[int, dict]:
        """Restore `path` (default: latest). Returns (env_step, trainer_state)."""
        path = path or self.latest
        if path is None:
            raise FileNotFoundError(f"No checkpoint in {self.directory}.")
        try:
            status = self.checkpoint.restore(path)
            if partial:
                status.expect_partial()
            else:
                status.assert_existing_objects_matched()
        except (ValueError, AssertionError) as e:
            # TF names the variable but not the cause: the config is checked before this
            # (train.SHAPE_FIELDS), so what is left is a checkpoint written by another layout.
            raise CheckpointMismatchError(
                f"Checkpoint {path} does not fit the agent its run's config builds: "
                f"{str(e).splitlines()[0]} It was written by an rlnorm whose checkpoint layout "
                "differs (the optimizer slots became one flat vector per network in issue #6); "
                "it cannot be resumed or evaluated by this version: start a new run."
            ) from e
        step = int(self.env_step.numpy())
        sidecar = self.directory / f"trainer_state-{step}.json"
        state = json.loads(sidecar.read_text()) if sidecar.exists() else {}
        return step, state

    def _prune_sidecars(self) -> None:
        keep = {Path(p).name.split("-")[-1] for p in self.manager.checkpoints}
        for f in self.directory.glob("trainer_state-*.json"):
            if f.stem.split("-")[-1] not in keep:
                f.unlink(missing_ok=True)
