"""The A2C training loop, ONE for both backends. Reads top to bottom:

    envs -> run folder -> agent -> checkpointer / logger / diagnostics -> loop over updates:
        update (rollout -> targets -> train_step -> normalizer merge) -> log -> checkpoint

The update's four steps run compiled, inside an env adapter: `rlnorm.update.VectorEnvUpdater`
(Gymnasium vector envs stepped from inside the graph, one update per call) or
`rlnorm.compiled.loop.CompiledUpdater` (TF-native envs, many updates per call). The loop
around them does everything that leaves the graph, the same way for both.

The order inside an update is the point. Acting, the bootstrap values and the gradient step all
use the SAME normalizer statistics, so with norm=none the log-probabilities recomputed in the
train step equal those at acting time; the normalizer then absorbs the rollout's raw
observations, once, after the gradient step. Updating it before the step would change the
inputs under the stored log-probs and values.
"""

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
from contextlib import ExitStack, contextmanager
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from rlnorm import _fast
from rlnorm import config as config_lib
from rlnorm.agent import A2CAgent
from rlnorm.checkpoint import (
    WRITTEN_WITH,
    Checkpointer,
    NonFiniteStateError,
    atomic_write_text,
    checkpoint_candidates,
    checkpoint_number,
)
from rlnorm.diagnostics import ScaleDiagnostics
from rlnorm.logger import RunLogger
from rlnorm.normalizer import RewardScaler, statistics_overflow_as_error
from rlnorm.rollout import NonFiniteError
from rlnorm.run_dir import (
    RunLock,
    checkpoint_dir,
    load_run_config,
    new_run_dir,
    refuse_existing_run,
    require_checkpoint,
)

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


class NonFiniteLossError(FloatingPointError):
    """A loss or gradient became NaN/Inf; the last good checkpoint and a scale dump were saved."""


def train(
    config: config_lib.Config | None = None,
    resume: str | Path | None = None,
    quiet: bool = False,
    env=None,
    agent_callback=None,
) -> dict:
    """Train A2C as `config` says (or continue the run folder `resume`); returns the run
    summary (also written to summary.json). `env`: a Gymnasium vector env or a factory of
    single envs to train on instead of `config.env_id` (see `rlnorm.envs.open_vec_env`).
    `agent_callback(agent, run_dir)` receives the trained agent before the envs close.

    The run folder is locked while this process writes it (`RunLock`): a second writer is
    refused, naming this process."""
    with ExitStack() as stack:
        if resume is not None:
            stack.enter_context(RunLock(resume))
            config = resume_config(resume, config)
        else:
            config = config_lib.validate(config)
        configure_tensorflow(config.tf_threads)
        seed_everything(config.seed)
        # Envs first: a bad env id or a missing dependency must not leave an empty run folder.
        envs, observation_space, action_space = open_envs(config, env)
        stack.callback(close_envs, envs)  # also on errors: stop env workers
        if resume is not None:
            run_dir = Path(resume)
        else:
            run_dir = new_run_dir(config)
            stack.enter_context(RunLock(run_dir))
            refuse_existing_run(run_dir)  # again, under the lock: two runs given one --run-dir
            atomic_write_text(run_dir / "config.toml", config_lib.to_toml(config))
        checkpoint_dir(run_dir).mkdir(exist_ok=True)  # fails now, not at the first save
        if resume is None:  # what built the checkpoints (names the keys of an edited config)
            atomic_write_text(checkpoint_dir(run_dir) / WRITTEN_WITH, config_lib.to_toml(config))
        agent = A2CAgent(config, observation_space, action_space)
        reward_scaler = (
            RewardScaler(config.n_envs, config.gamma, config.reward_clip)
            if config.norm_reward
            else None
        )
        checkpointer = Checkpointer(
            checkpoint_dir(run_dir), agent, reward_scaler, config.keep_checkpoints
        )
        step, trainer_state = checkpointer.restore() if resume is not None else (0, {})
        if resume is not None:
            done = finished_summary(run_dir, config, step)
            if done is not None:  # nothing to add: the run folder stays as it is
                if agent_callback is not None:
                    agent_callback(agent, run_dir)
                return done
            atomic_write_text(run_dir / "config.toml", config_lib.to_toml(config))
            atomic_write_text(checkpoint_dir(run_dir) / WRITTEN_WITH, config_lib.to_toml(config))
            drop_orphaned_events(run_dir, step)  # steps trained after the checkpoint, again
        logger = RunLogger(run_dir, config, step, quiet, trainer_state)
        stack.callback(logger.close)  # close the progress bar, flush events
        diagnostics = (
            ScaleDiagnostics(agent, logger.writer, config, report=logger.alarm, logdir=run_dir)
            if config.diagnostics
            else None
        )
        # A resumed run gets fresh env seeds derived from the step, so it replays no episode.
        updater = make_updater(config, envs, agent, reward_scaler, seed=config.seed + step)
        logger.note_autoreset(updater.summary_fields().get("autoreset_mode"))
        summary = run_updates(
            config, run_dir, agent, updater, checkpointer, logger, diagnostics, step
        )
        if agent_callback is not None:
            agent_callback(agent, run_dir)
    return summary


def run_updates(config, run_dir, agent, updater, checkpointer, logger, diagnostics, step):
    """The loop over updates, until total_steps, the target return or a signal."""
    steps_per_update = config.n_steps * config.n_envs
    updates_left = -(-(config.total_steps - step) // steps_per_update)
    next_checkpoint = (step // config.checkpoint_every + 1) * config.checkpoint_every
    metrics: dict = {}
    stopped_by = None
    with stop_on_signal(config.stop_grace_seconds) as interrupt:
        while updates_left > 0 and not interrupt["stop"]:
            # 1-4. rollout (inference mode, RAW obs stored) -> targets (GAE; V(final obs) on
            # truncation, 0 on termination) -> gradient step (training mode, with the
            # normalizer statistics that acted) -> normalizer merge of the rollout's valid raw
            # obs, once, after the step. One compiled call runs `n` whole updates; it ends
            # where the loop must log, save or diagnose.
            diagnose = diagnostics is not None and diagnostics.due(step + steps_per_update)
            n = 1 if diagnose else updater.updates_in_next_call(step, diagnostics is not None)
            n = min(n, updates_left)
            before = diagnostics.capture() if diagnose else None
            with statistics_overflow_as_error():
                update = updater.update(step, n, logger.record_episodes, keep_batch=diagnose)
            metrics = update.metrics
            step += update.n_updates * steps_per_update
            updates_left -= update.n_updates
            if diagnose:  # the update's batch, with the variables as they were before it
                diagnostics.record_update(step, update.batch, metrics, before)
            if metrics["update_applied"] < 1.0:  # NaN/Inf loss or gradient: update skipped
                raise_nonfinite_loss(run_dir, checkpointer, step, metrics, update)

            # 5. Logging.
            logger.log_update(step, metrics)
            solved = logger.target_reached(step)

            # 6. Checkpoint (the previous one stays loadable until this one is complete).
            if step >= next_checkpoint:
                interrupt["checkpoint"] = checkpointer.save(step, logger.state())
                next_checkpoint = (step // config.checkpoint_every + 1) * config.checkpoint_every
            if solved:
                stopped_by = "target_return"
                break
        if interrupt["stop"]:
            stopped_by = interrupt["signal"]
            warnings.warn(
                f"{stopped_by} received: saved a checkpoint at step {step}; continue "
                f"with `rlnorm train --resume {run_dir}`.",
                stacklevel=1,
            )

    logger.log_update(step, metrics, force=True)
    checkpointer.save(step, logger.state())
    fields = updater.summary_fields()
    trained = step - logger.start_step
    if trained and fields.get("dropped_steps", 0) >= trained:
        raise NonFiniteError(
            f"Every env step of this run ({trained}) was dropped as non-finite (nonfinite = "
            '"drop"): nothing was learned. Fix the environment\'s observations or rewards.'
        )
    summary = logger.summary(
        step,
        config.agent,
        {
            "run_dir": str(run_dir),
            "stopped_by": stopped_by or "total_steps",
            "backend": config.backend,
            **fields,
            "trace_counts": {**agent.trace_counts(), **updater.trace_counts()},
            "fast_paths": _fast.active(config),
            "alarms": diagnostics.alarms.summary() if diagnostics is not None else [],
            "peak_rss_mb": peak_rss_mb(),
        },
    )
    logger.write_summary(summary)
    return summary


# -- the two env adapters ------------------------------------------------------------------------
def open_envs(config, env=None):
    """(envs, single observation space, single action space) for the config's backend."""
    if config.backend == "compiled":
        from rlnorm.compiled.loop import make_compiled_env

        if env is not None:
            raise config_lib.ConfigError(
                "backend = 'compiled' trains on rlnorm's TF-native envs (by env_id); pass "
                "`env` only with backend = 'python'."
            )
        envs = make_compiled_env(config)
        return envs, envs.observation_space, envs.action_space
    from rlnorm.envs import open_vec_env

    envs = open_vec_env(config, env)
    return envs, envs.single_observation_space, envs.single_action_space


def close_envs(envs) -> None:
    """Stop env workers; a worker that already died must not hide the error that ends the run."""
    try:
        envs.close()
    except Exception as e:  # e.g. EOFError from an async worker that died
        warnings.warn(f"Closing the envs failed ({type(e).__name__}: {e}).", stacklevel=2)


def make_updater(config, envs, agent, reward_scaler, seed: int):
    if config.backend == "compiled":
        from rlnorm.compiled.loop import CompiledUpdater

        return CompiledUpdater(config, agent, envs, reward_scaler, seed)
    from rlnorm.update import VectorEnvUpdater

    return VectorEnvUpdater(agent, envs, reward_scaler, seed)


# -- the run's lifecycle -------------------------------------------------------------------------
def configure_tensorflow(threads: int) -> None:
    """Thread counts can only be set before TF's runtime starts; later calls keep what is set."""
    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:
            pass  # TF already initialized in this process (tests, notebooks)


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


def raise_nonfinite_loss(run_dir, checkpointer, step, metrics, update):
    """Stop on a NaN/Inf loss: save the last good weights, dump the batch's scales, raise."""

    def stats(x):
        x = np.asarray(x, np.float64)
        finite = x[np.isfinite(x)]
        return {
            "min": float(finite.min()) if finite.size else None,
            "max": float(finite.max()) if finite.size else None,
            "nonfinite": int((~np.isfinite(x)).sum()),
        }

    try:
        checkpointer.save(step, None)  # the weights are the last good ones (update skipped)
    except NonFiniteStateError:
        pass  # the state itself went non-finite: the last checkpoint on disk is the good one
    dump = {
        "env_step": step,
        "metrics": {k: float(v) for k, v in metrics.items()},
        "observations": stats(update.batch.obs),
        "rewards": stats(update.rewards),
        "values": stats(update.values),
        "advantages": stats(update.batch.advantages),
        "returns": stats(update.batch.returns),
        "last_good_checkpoint": checkpointer.latest,
    }
    path = Path(run_dir) / "nonfinite_loss.json"
    atomic_write_text(path, json.dumps(dump, indent=1))
    raise NonFiniteLossError(
        f"Non-finite loss at env step {step} (policy {dump['metrics']['policy_loss']}, value "
        f"{dump['metrics']['value_loss']}). Scales of the batch written to {path}; last good "
        f"checkpoint: {checkpointer.latest}. Lower learning_rate or max_grad_norm, or check "
        "observations/rewards for extreme values."
    )
