"""A run's lifecycle around the training loop: TensorFlow's threads and seeds, signals that
stop a run (even one whose env blocks), and what a resume may and may not change."""

from __future__ import annotations

import json
import math
import os
import resource
import select
import signal
import socket
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import keras
import tensorflow as tf

from rlnorm import config as config_lib
from rlnorm.checkpoint import checkpoint_candidates, checkpoint_number
from rlnorm.run_dir import checkpoint_dir, load_run_config, require_checkpoint

# Fields that define the networks' and spaces' shapes: a resume must not change them.
SHAPE_FIELDS = (
    "env_id",
    "hidden_sizes",
    "activation",
    "policy_norm",
    "value_norm",
    "n_envs",
    "n_steps",
    "norm_reward",
    "optimizer",
    "backend",
    "use_sde",
    "full_std",
    "value_target_norm",
)


def configure_tensorflow(threads: int) -> None:
    """Thread counts can only be set before TF's runtime starts; later calls keep what is set."""
    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:
            pass  # TF already initialized in this process (tests, notebooks)


XLA_CACHE_FLAG = "--tf_xla_persistent_cache_directory"


def xla_cache_dir() -> Path:
    """Where compiled XLA programs are kept: $RLNORM_XLA_CACHE, else the user's cache folder
    ($XDG_CACHE_HOME or ~/.cache)/rlnorm/xla, per TF version (a program is TF-build specific)."""
    if os.environ.get("RLNORM_XLA_CACHE"):
        return Path(os.environ["RLNORM_XLA_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rlnorm" / "xla" / f"tf-{tf.__version__}"


def use_xla_cache(config) -> None:
    """compile = "xla" with xla_cache: TF's persistent XLA cache in `xla_cache_dir()`, so a
    later run of the same graph loads its program instead of compiling it. TF reads
    TF_XLA_FLAGS when its runtime starts: set later (tests, notebooks) it changes nothing, and
    a cache folder the user already gave TF wins."""
    flags = os.environ.get("TF_XLA_FLAGS", "")
    if config.compile != "xla" or not config.xla_cache or XLA_CACHE_FLAG in flags:
        return
    try:
        folder = xla_cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return  # no writable cache folder: compile as without one
    os.environ["TF_XLA_FLAGS"] = f"{flags} {XLA_CACHE_FLAG}={folder}".strip()


def seed_everything(seed: int) -> None:
    """Same seed + config + machine -> same numbers (TF op determinism, Python/NumPy/TF seeds)."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


@contextmanager
def stop_on_signal(grace_seconds: float = 30.0):
    """SIGINT / SIGTERM ask the loop to stop after the current update (and save).

    A Python handler runs only when the main thread runs Python, and an env that blocks
    inside the compiled update keeps it from ever running; so the signals also reach a watcher
    thread, through the C-level handler's wakeup fd (`signal.set_wakeup_fd`). If the update
    has not ended `grace_seconds` after a signal, or at a second signal, the watcher ends the
    process, naming the last checkpoint: a blocked env never hangs a run."""
    flag = {"stop": False, "signal": None, "checkpoint": None}
    signals = (signal.SIGINT, signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread():
        yield flag  # signals can only be handled on the main thread
        return

    def handler(signum, _frame):
        if not flag["stop"]:
            flag["stop"], flag["signal"] = True, signal.Signals(signum).name

    previous = {s: signal.signal(s, handler) for s in signals}
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    old_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    done = threading.Event()

    def watch():
        received, deadline = 0, None
        while not done.is_set():
            if select.select([reader], [], [], 0.2)[0]:
                for signum in reader.recv(64):
                    if signum in signals:
                        received += 1
                        handler(signum, None)
                        deadline = deadline or time.monotonic() + grace_seconds
            late = deadline is not None and time.monotonic() > deadline
            if (received >= 2 or late) and not done.is_set():
                print(
                    f"rlnorm: {flag['signal']} received and the update did not end (an env "
                    f"step may be blocked): stopping now. Last checkpoint: "
                    f"{flag['checkpoint'] or 'none'}.",
                    file=sys.stderr,
                    flush=True,
                )
                os._exit(128 + signal.Signals[flag["signal"]].value)

    watcher = threading.Thread(target=watch, name="rlnorm-signals", daemon=True)
    watcher.start()
    try:
        yield flag
    finally:
        done.set()
        writer.send(b"\0")  # wake the watcher's select now (not a signal number)
        watcher.join()
        signal.set_wakeup_fd(old_fd)
        for s, h in previous.items():
            signal.signal(s, h)
        reader.close()
        writer.close()


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM (Linux) belongs to the process image;
    getrusage's ru_maxrss also carries the parent's peak across fork + exec: only a fallback."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def resume_config(run_dir: str | Path, requested: config_lib.Config | None) -> config_lib.Config:
    """The run's saved config, or `requested` (the saved config with the user's changes, as the
    CLI builds it) if it changes nothing that shapes the networks or spaces, does not move the
    run and does not cut its history."""
    saved = load_run_config(run_dir)
    require_checkpoint(run_dir)
    if requested is None:
        return saved
    if requested.run_dir not in (None, saved.run_dir) and Path(requested.run_dir) != Path(run_dir):
        raise config_lib.ConfigError(
            f"--run-dir {requested.run_dir!r} with --resume {str(run_dir)!r}: a resumed run "
            "stays in its folder. Drop --run-dir (or start a new run there without --resume)."
        )
    requested = config_lib.validate(requested.replace(run_dir=saved.run_dir))
    bad = [k for k in SHAPE_FIELDS if getattr(requested, k) != getattr(saved, k)]
    if bad:
        detail = "; ".join(
            f"{k}: run has {getattr(saved, k)!r}, asked {getattr(requested, k)!r}" for k in bad
        )
        raise config_lib.ConfigError(
            f"Cannot resume {str(run_dir)!r} with a config that changes network shapes or "
            f"spaces ({detail}). Start a new run instead."
        )
    at = max(
        (checkpoint_number(p) for p in checkpoint_candidates(checkpoint_dir(run_dir))), default=0
    )
    if requested.total_steps < at:
        raise config_lib.ConfigError(
            f"Cannot resume {str(run_dir)!r} with total_steps = {requested.total_steps}: the "
            f"run is at step {at} already. Give a larger --total-steps."
        )
    return requested


def finished_summary(run_dir: Path, config, step: int) -> dict | None:
    """A resumed run's saved summary when it has nothing to add (its budget is spent, or it
    stopped at the target it still has), else None."""
    path = run_dir / "summary.json"
    saved = json.loads(path.read_text()) if path.is_file() else None
    if saved is None or saved.get("total_steps") != step:
        return None  # killed before its end: it has steps to retrain
    at_target = saved.get("stopped_by") == "target_return" and config.target_return is not None
    if step >= config.total_steps or (
        at_target and (saved.get("mean_return_last_100") or -math.inf) >= config.target_return
    ):
        warnings.warn(
            f"{str(run_dir)!r} is finished at step {step} ({saved.get('stopped_by')}): nothing "
            "to train. Give a larger --total-steps (or another target_return) to continue.",
            stacklevel=3,
        )
        return saved
    return None


def drop_orphaned_events(run_dir: Path, step: int) -> None:
    """Remove the events after `step` that a killed run wrote past its last checkpoint, so the
    resumed run draws one curve (what TensorBoard's purge_orphaned_data does with a SessionLog
    START event, done on disk for every reader). Each file is rewritten atomically."""
    for path in sorted(Path(run_dir).rglob("events.out.tfevents.*")):
        records = [r.numpy() for r in tf.data.TFRecordDataset(str(path))]
        keep = [r for r in records if tf.compat.v1.Event.FromString(r).step <= step]
        if len(keep) == len(records):
            continue
        tmp = path.with_name(f".{path.name}.tmp")
        with tf.io.TFRecordWriter(str(tmp)) as writer:
            for record in keep:
                writer.write(record)
        os.replace(tmp, path)
