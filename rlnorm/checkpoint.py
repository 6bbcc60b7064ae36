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
import re
import warnings
from pathlib import Path

import tensorflow as tf


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write then rename: readers see the old file or the new one, never half of one. The
    temporary file is created anew (O_EXCL | O_NOFOLLOW): a file or link planted at its name
    is removed, never written through."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# The config that built a run's checkpoints, beside them: an edited config.toml is then named.
WRITTEN_WITH = "config.toml"


def config_drift(directory: Path) -> str:
    """'key: checkpoints have A, config.toml says B; ...' for the keys where the run's
    config.toml differs from the config its checkpoints were written with ('' if none)."""
    import tomllib

    try:
        written = tomllib.loads((directory / WRITTEN_WITH).read_text())
        now = tomllib.loads((directory.parent / "config.toml").read_text())
    except (OSError, ValueError):
        return ""
    keys = sorted(k for k in written.keys() | now.keys() if written.get(k) != now.get(k))
    return "; ".join(
        f"{k}: checkpoints have {written.get(k)!r}, config.toml says {now.get(k)!r}" for k in keys
    )


class CheckpointMismatchError(ValueError):
    """A checkpoint's variables do not fit the agent the run's config builds."""


class CheckpointCorruptError(ValueError):
    """No checkpoint (or trainer-state sidecar) of a run can be read."""


class NonFiniteStateError(FloatingPointError):
    """The state to save (or just restored) holds NaN or Inf."""


# A checkpoint that does not fit the agent raises these on restore. Anything else means damaged
# files: TF's DataLossError (checksum mismatch, bad index), NotFoundError (a missing shard), or
# IndexError ("Read less bytes than requested") from the reader of a truncated data file.
MISMATCH = (ValueError, AssertionError)

CKPT_NAME = re.compile(r"ckpt-(\d+)\.index")


def checkpoint_candidates(directory: str | Path) -> list[str]:
    """Checkpoint prefixes of `directory`, newest first.

    From the `checkpoint` index file when it parses and names a checkpoint (a ckpt-N complete
    on disk but not yet named there is not committed: a save killed before its index moved);
    else, the index being garbage or missing, from the ckpt-N.index files, by N."""
    directory = Path(directory)
    state = tf.train.get_checkpoint_state(str(directory))  # None on garbage (TF warns)
    if state is not None and state.model_checkpoint_path:
        latest = state.model_checkpoint_path  # get_checkpoint_state joined it to the directory
        older = sorted(set(state.all_model_checkpoint_paths) - {latest}, key=checkpoint_number)
        return [latest, *reversed(older)]
    found = [m for f in directory.glob("ckpt-*.index") if (m := CKPT_NAME.fullmatch(f.name))]
    return [str(directory / f"ckpt-{m[1]}") for m in sorted(found, key=lambda m: -int(m[1]))]


def checkpoint_number(path: str) -> int:
    m = re.fullmatch(r"ckpt-(\d+)", Path(path).name)
    return int(m[1]) if m else -1


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def float_variables(objects: dict) -> list[tuple[str, object]]:
    """(name, variable) for every float variable of the checkpointed objects, once each: Keras
    weights (networks, optimizers) and tf.Variables (normalizer, reward statistics)."""
    seen, found = set(), []
    for key, obj in objects.items():
        weights = getattr(obj, "trainable_weights", []) + getattr(obj, "non_trainable_weights", [])
        for v in [*weights, *getattr(obj, "variables", [])]:
            if id(v) not in seen and tf.as_dtype(v.dtype).is_floating:
                seen.add(id(v))
                found.append((f"{key}/{getattr(v, 'path', v.name).removesuffix(':0')}", v))
    return found


class Checkpointer:
    """Saves and restores everything a run needs to continue exactly where it stopped.

    `read_only` (eval, export): `restore` never writes (no index rebuilt), needs no
    optimizer slots, and reads past a corrupt trainer-state sidecar with a warning."""

    def __init__(
        self,
        directory: str | Path,
        agent,
        reward_scaler=None,
        max_to_keep: int = 3,
        read_only: bool = False,
    ):
        self.directory = Path(directory)
        self.read_only = read_only
        self.max_to_keep = max_to_keep
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
        self.float_variables = float_variables(objects)
        self.manager = self._make_manager()
        self.restored: str | None = None  # the checkpoint `restore` read

    def _make_manager(self) -> tf.train.CheckpointManager:
        return tf.train.CheckpointManager(
            self.checkpoint, str(self.directory), max_to_keep=self.max_to_keep
        )

    @property
    def latest(self) -> str | None:
        return self.manager.latest_checkpoint

    def nonfinite_variables(self) -> list[str]:
        """Names of the float variables (weights, optimizer slots, statistics) holding NaN/Inf:
        a flag per variable, stacked and read in one go."""
        flags = tf.stack([tf.reduce_all(tf.math.is_finite(v)) for _, v in self.float_variables])
        return [name for (name, _), ok in zip(self.float_variables, flags.numpy()) if not ok]

    def save(self, env_step: int, trainer_state: dict | None = None) -> str:
        """Write checkpoint ckpt-<env_step>; refuses (writing nothing) a non-finite state."""
        bad = self.nonfinite_variables()
        if bad:
            raise NonFiniteStateError(
                f"Not saving the checkpoint at env step {env_step}: {len(bad)} variable(s) "
                f"hold NaN or Inf ({', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''}); "
                f"the last good checkpoint, {self.latest}, is kept."
            )
        self.env_step.assign(env_step)
        self.directory.mkdir(parents=True, exist_ok=True)
        if trainer_state is not None:
            atomic_write_text(
                self.directory / f"trainer_state-{env_step}.json", json.dumps(trainer_state)
            )
        path = self.manager.save(checkpoint_number=env_step)
        self._prune_sidecars()
        return path

    def restore(self, path: str | None = None, partial: bool | None = None) -> tuple[int, dict]:
        """Restore `path`, or the newest intact checkpoint. Returns (env_step, trainer_state).

        A corrupt newest checkpoint (truncated, zeroed, flipped or missing file) is skipped with
        a warning naming it. If the directory changes meanwhile (a trainer saved and pruned),
        the lookup starts again, twice at most. A writer then rewrites a garbage or stale
        index to name what it restored."""
        partial = self.read_only if partial is None else partial
        for _ in range(3):
            candidates = [path] if path else checkpoint_candidates(self.directory)
            if not candidates:
                raise FileNotFoundError(f"No checkpoint in {self.directory}.")
            failures: list[tuple[str, str]] = []
            for candidate in candidates:
                try:
                    self._restore_one(candidate, partial)
                except CheckpointMismatchError:
                    raise
                except Exception as e:  # unreadable: see MISMATCH's comment
                    failures.append((candidate, first_line(e)))
                    if not path and checkpoint_candidates(self.directory) != candidates:
                        break  # pruned or superseded under us: look again
                    continue
                self._report_fallback(candidate, failures, asked=path)
                self.restored = candidate
                return self._step_and_state()
            else:
                listed = "; ".join(f"{p} ({why})" for p, why in failures)
                raise CheckpointCorruptError(
                    f"No intact checkpoint in {self.directory}: {listed}. The run cannot be "
                    "resumed, evaluated or exported from these files; start a new run."
                )
        raise CheckpointCorruptError(
            f"The checkpoints in {self.directory} kept changing while being read (a trainer "
            "saving and pruning them?); try again."
        )

    def _report_fallback(self, restored: str, failures: list[tuple[str, str]], asked) -> None:
        for corrupt, why in failures:
            warnings.warn(
                f"Checkpoint {corrupt} is corrupt ({why}); restored the older {restored}.",
                stacklevel=3,
            )
        index_ok = asked or tf.train.get_checkpoint_state(str(self.directory)) is not None
        if not index_ok:
            warnings.warn(
                f"{self.directory / 'checkpoint'} is missing or unreadable; restored {restored}, "
                "the newest checkpoint found on disk.",
                stacklevel=3,
            )
        if (failures or not index_ok) and not self.read_only:
            self._rebuild_index(restored)

    def _restore_one(self, path: str, partial: bool) -> None:
        try:
            status = self.checkpoint.restore(path)
            if partial:
                status.expect_partial()
            else:
                status.assert_existing_objects_matched()
        except MISMATCH as e:
            # TF names the variable but not the cause: the config is checked before this
            # (lifecycle.SHAPE_FIELDS), so what is left is an edited config or another layout.
            drift = config_drift(self.directory)
            if drift:
                raise CheckpointMismatchError(
                    f"Checkpoint {path} does not fit the agent the run's config builds: "
                    f"config.toml was edited after the checkpoints were written ({drift}). "
                    f"Restore those values in {self.directory.parent / 'config.toml'}."
                ) from e
            raise CheckpointMismatchError(
                f"Checkpoint {path} does not fit the agent the run's config builds: "
                f"{first_line(e)} Its variables do not match that agent's. If you edited "
                "config.toml, restore it; otherwise the checkpoint was written by another "
                "rlnorm version: start a new run."
            ) from e

    def _step_and_state(self) -> tuple[int, dict]:
        step = int(self.env_step.numpy())
        sidecar = self.directory / f"trainer_state-{step}.json"
        if not sidecar.exists():
            return step, {}
        try:
            state = json.loads(sidecar.read_text())
            if not isinstance(state, dict):
                raise ValueError(f"a JSON {type(state).__name__}, not an object")
        except (ValueError, UnicodeDecodeError) as e:
            if not self.read_only:
                raise CheckpointCorruptError(
                    f"{sidecar} is corrupt ({first_line(e)}): resuming needs it for the "
                    "episode history. Restore it, or delete it to resume with an empty history."
                ) from e
            warnings.warn(f"{sidecar} is corrupt ({first_line(e)}); ignored.", stacklevel=3)
            return step, {}
        return step, state

    def _rebuild_index(self, restored: str) -> None:
        """Name `restored` and the older checkpoints as the index (the corrupt newer ones stay
        on disk, unnamed, for the user to inspect), and reload the manager from it."""
        kept = [
            p
            for p in checkpoint_candidates(self.directory)
            if checkpoint_number(p) < checkpoint_number(restored) and os.path.exists(f"{p}.index")
        ]
        paths = [*reversed(kept), restored]
        # Relative names (the folder may move) and file times (the manager prunes only
        # checkpoints with a timestamp).
        tf.compat.v1.train.update_checkpoint_state(
            str(self.directory),
            Path(restored).name,
            [Path(p).name for p in paths],
            all_model_checkpoint_timestamps=[os.path.getmtime(f"{p}.index") for p in paths],
            last_preserved_timestamp=0.0,
        )
        self.manager = self._make_manager()

    def _prune_sidecars(self) -> None:
        keep = {Path(p).name.split("-")[-1] for p in self.manager.checkpoints}
        for f in self.directory.glob("trainer_state-*.json"):
            if f.stem.split("-")[-1] not in keep:
                f.unlink(missing_ok=True)
