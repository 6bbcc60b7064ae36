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
import resource
import signal
import warnings
from contextlib import contextmanager
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from rlnorm import _fast
from rlnorm import config as config_lib
from rlnorm.agent import A2CAgent
from rlnorm.checkpoint import Checkpointer, atomic_write_text
from rlnorm.diagnostics import ScaleDiagnostics
from rlnorm.logger import RunLogger
from rlnorm.normalizer import RewardScaler
from rlnorm.run_dir import checkpoint_dir, load_run_config, new_run_dir

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
    single envs to train on instead of `config.env_id` (see `rlnorm.envs.open_envs`).
    `agent_callback(agent, run_dir)` receives the trained agent before the envs close."""
    config = resume_config(resume, config) if resume is not None else config_lib.validate(config)
    configure_tensorflow(config.tf_threads)
    seed_everything(config.seed)
    # Envs first: a bad env id or a missing dependency must not leave an empty run folder.
    envs, observation_space, action_space = open_envs(config, env)
    try:
        if resume is not None:
            run_dir = Path(resume)
        else:
            run_dir = new_run_dir(config)
            atomic_write_text(run_dir / "config.toml", config_lib.to_toml(config))
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
        logger = RunLogger(run_dir, config, step, quiet, trainer_state)
    except BaseException:
        envs.close()
        raise
    try:
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
    finally:  # also on errors: close the progress bar, flush events, stop env workers
        logger.close()
        envs.close()
    return summary


def run_updates(config, run_dir, agent, updater, checkpointer, logger, diagnostics, step):
    """The loop over updates, until total_steps, the target return or a signal."""
    steps_per_update = config.n_steps * config.n_envs
    updates_left = -(-(config.total_steps - step) // steps_per_update)
    next_checkpoint = (step // config.checkpoint_every + 1) * config.checkpoint_every
    metrics: dict = {}
    stopped_by = None
    with stop_on_signal() as interrupt:
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
                checkpointer.save(step, logger.state())
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
    summary = logger.summary(
        step,
        config.agent,
        {
            "run_dir": str(run_dir),
            "stopped_by": stopped_by or "total_steps",
            "backend": config.backend,
            **updater.summary_fields(),
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
def stop_on_signal():
    """SIGINT / SIGTERM ask the loop to stop after the current update (and save)."""
    flag = {"stop": False, "signal": None}

    def handler(signum, _frame):
        if flag["stop"]:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        flag["stop"], flag["signal"] = True, signal.Signals(signum).name

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for s in previous:
            signal.signal(s, handler)
    except ValueError:  # not the main thread: no signal handling
        previous = {}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


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
    CLI builds it) if it changes nothing that shapes the networks or spaces."""
    saved = load_run_config(run_dir)
    if tf.train.latest_checkpoint(str(checkpoint_dir(run_dir))) is None:
        raise FileNotFoundError(f"Cannot resume {str(run_dir)!r}: it has no checkpoint.")
    if requested is None:
        return saved
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
    if requested != saved:  # the run folder records what the run continues with
        atomic_write_text(Path(run_dir) / "config.toml", config_lib.to_toml(requested))
    return requested


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

    checkpointer.save(step, None)  # the weights are the last good ones (update skipped)
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
