"""The A2C training loop, ONE for both backends. Reads top to bottom:

    envs -> run folder -> agent -> checkpointer / logger / diagnostics -> loop over updates:
        update (rollout -> targets -> train_step -> normalizer merge) -> log -> checkpoint

The update's four steps run compiled, inside an env adapter: `rlnorm.update.VectorEnvUpdater`
(Gymnasium vector envs stepped from inside the graph, one update per call) or
`rlnorm.compiled.loop.CompiledUpdater` (TF-native envs, many updates per call). The loop
around them does everything that leaves the graph, the same way for both.

The run's lifecycle around it (TF threads and seeds, signals, what a resume may change) is
`rlnorm.lifecycle`. The order inside an update is the point. Acting, the bootstrap values and the gradient step all
use the SAME normalizer statistics, so with norm=none the log-probabilities recomputed in the
train step equal those at acting time; the normalizer then absorbs the rollout's raw
observations, once, after the gradient step. Updating it before the step would change the
inputs under the stored log-probs and values.
"""

from __future__ import annotations

import json
import sys
import warnings
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from rlnorm import _fast
from rlnorm import config as config_lib
from rlnorm.agent import A2CAgent
from rlnorm.checkpoint import (
    WRITTEN_WITH,
    Checkpointer,
    NonFiniteStateError,
    atomic_write_text,
)
from rlnorm.diagnostics import ScaleDiagnostics
from rlnorm.lifecycle import (
    configure_tensorflow,
    drop_orphaned_events,
    finished_summary,
    peak_rss_mb,
    resume_config,
    seed_everything,
    stop_on_signal,
    use_xla_cache,
)
from rlnorm.logger import RunLogger
from rlnorm.normalizer import RewardScaler, statistics_overflow_as_error
from rlnorm.rollout import NonFiniteError
from rlnorm.run_dir import (
    RunLock,
    checkpoint_dir,
    new_run_dir,
    refuse_existing_run,
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
            config = with_backend_cadences(config_lib.validate(config), quiet)
        configure_tensorflow(config.tf_threads)
        use_xla_cache(config)  # before TF's runtime starts, as the thread counts
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
            # where the loop must save or diagnose, and hands back one output per log point.
            diagnose = diagnostics is not None and diagnostics.due(step + steps_per_update)
            n = 1 if diagnose else updater.updates_in_next_call(step, diagnostics is not None)
            n = min(n, updates_left)
            before = diagnostics.capture() if diagnose else None
            with statistics_overflow_as_error():
                segments = updater.segments(step, n, logger.record_episodes, keep_batch=diagnose)
            for update in segments:  # its episodes reach the logger as the loop reaches it
                metrics = update.metrics
                step += update.n_updates * steps_per_update
                updates_left -= update.n_updates
                if diagnose:  # the update's batch, with the variables as they were before it
                    diagnostics.record_update(step, update.batch, metrics, before)
                if metrics["update_applied"] < 1.0:  # NaN/Inf loss or gradient: update skipped
                    raise_nonfinite_loss(run_dir, checkpointer, step, metrics, update)

                # 5. Logging.
                logger.log_update(step, metrics, now=update.wall_time)
                solved = logger.target_reached(step)

                # 6. Checkpoint (the previous one stays loadable until this one is complete).
                if step >= next_checkpoint:
                    interrupt["checkpoint"] = checkpointer.save(step, logger.state())
                    next_checkpoint = (
                        step // config.checkpoint_every + 1
                    ) * config.checkpoint_every
                if solved:
                    stopped_by = "target_return"
                    break
            if stopped_by:
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


def with_backend_cadences(config, quiet: bool):
    """A new compiled run's cadences left at their defaults get the compiled backend's
    (`rlnorm.compiled.cadences`), said in one line."""
    if config.backend != "compiled":
        return config
    from rlnorm.compiled.cadences import with_compiled_cadences

    config, line = with_compiled_cadences(config)
    if line and not quiet:
        print(line, file=sys.stderr)
    return config


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
