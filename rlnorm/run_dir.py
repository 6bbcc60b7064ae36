"""The run folder: runs/<env_id>/<agent>__seed<seed>__<YYYYmmdd-HHMMSS>/.

It holds everything about a run: TensorBoard events, the resolved `config.toml`,
`checkpoints/`, `summary.json` (and `eval.json` after `rlnorm eval`).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from rlnorm import config as config_lib


class RunDirError(ValueError):
    """A folder given as a run is not one, already holds one, or is being written."""


def holds_run(path: Path) -> bool:
    """Whether `path` already holds a run: a config, checkpoints or TensorBoard events."""
    return (
        (path / "config.toml").exists()
        or (path / "checkpoints").exists()
        or any(path.glob("events.out.tfevents.*"))
    )


def refuse_existing_run(path: str | Path) -> None:
    """For a NEW run: refuse a folder that is a file or already holds a run."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"{str(path)!r} is a file, not a run folder: give a new --run-dir.")
    if path.is_dir() and holds_run(path):
        raise RunDirError(
            f"{str(path)!r} already holds a run; continue it with `rlnorm train --resume "
            f"{path}`, or give a new --run-dir."
        )


def new_run_dir(config: config_lib.Config) -> Path:
    """Create the folder of a new run (refusing one that holds a run) and return it."""
    if config.run_dir:
        path = Path(config.run_dir)
    else:
        root = Path(config.runs_root)
        if root.exists() and not root.is_dir():
            raise RunDirError(f"runs_root {str(root)!r} is a file, not a folder.")
        env = config.env_id.replace(":", "_").replace("/", "_")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = root / env / f"{config.agent}__seed{config.seed}__{stamp}"
        # The agent name and env id become path parts: neither may lead out of runs_root.
        if path.resolve().parent != root.resolve() / env or env in ("", ".", ".."):
            raise RunDirError(
                f"agent {config.agent!r} / env_id {config.env_id!r} would put the run outside "
                f"runs_root {str(root)!r}: use a name without '/', '\\' or '..'."
            )
        n = 1
        while path.exists():  # two runs started in the same second
            n += 1
            path = path.with_name(f"{config.agent}__seed{config.seed}__{stamp}-{n}")
    refuse_existing_run(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"Cannot create the run folder {str(path)!r}: {e.strerror}.") from e
    return path


class RunLock:
    """`with RunLock(run_dir):` while a process writes the run; a second writer is refused.

    An advisory exclusive `fcntl.flock` on run_dir/.lock, whose text names the holder (PID,
    host, start time) for the message. The OS releases a flock when its holder exits, however
    it dies (SIGKILL included), so a lock is never stale; a clean exit also removes the file
    (a run folder is left as it was), and a taker checks that the file it locked is still the
    one at the path, so removal races no one. Forked children (multiprocessing env workers)
    share the lock until they exit. flock may not lock across hosts on network file systems.
    """

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / ".lock"
        self._file = None

    def __enter__(self) -> RunLock:
        import fcntl

        if not self.run_dir.is_dir():  # a resume of a missing folder must not create it
            raise RunDirError(f"{str(self.run_dir)!r} is not a directory.")
        while True:
            f = open(self.path, "a+")  # never truncated before the lock is ours
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "another process (starting)"
                f.close()
                raise RunDirError(
                    f"Run {str(self.run_dir)!r} is being written by {holder}; wait for it or "
                    "pass another --run-dir."
                ) from None
            try:
                if os.stat(self.path).st_ino == os.fstat(f.fileno()).st_ino:
                    break
            except FileNotFoundError:
                pass
            f.close()  # its holder removed the file after we opened it: lock the new one
        started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        f.seek(0)
        f.truncate()
        f.write(f"process {os.getpid()} on {socket.gethostname()} (started {started})\n")
        f.flush()
        self._file = f
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            self.path.unlink(missing_ok=True)  # while still held: see the class docstring
            self._file.close()  # releases the flock
            self._file = None


def load_run_config(run_dir: str | Path) -> config_lib.Config:
    path = Path(run_dir)
    if not path.is_dir():
        raise RunDirError(
            f"{str(path)!r} is not a directory. Give a run folder such as "
            "runs/CartPole-v1/cartpole__seed0__20260101-120000."
        )
    if not (path / "config.toml").is_file():
        raise RunDirError(
            f"{str(path)!r} is not an rlnorm run: it has no config.toml. Give a "
            "folder made by `rlnorm train` (see `ls runs/*/`)."
        )
    return config_lib.load_toml(path / "config.toml")


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def require_checkpoint(run_dir: str | Path) -> None:
    """Refuse a run with no checkpoint files (a garbage or missing index does not count:
    the checkpoints are then found by their file names)."""
    from rlnorm.checkpoint import checkpoint_candidates

    if not checkpoint_candidates(checkpoint_dir(run_dir)):
        raise RunDirError(
            f"Run {str(run_dir)!r} has no checkpoint yet (checkpoints/ is empty): "
            "train longer than `checkpoint_every` steps or resume it with "
            "`rlnorm train --resume`."
        )
