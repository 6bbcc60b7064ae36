"""Train K seeds of one compiled-backend config in one graph (`rlnorm.compiled.seeds`) and
summarize each seed as `rlnorm.loop.train` would: `rlnorm regress`'s batched path.

The calls end where a single run's calls end (the first update crossing a multiple of
`log_every` or `checkpoint_every`), and after each call every running seed is judged as its
own run judges itself: a return-curve point (step, last-100 mean) when `log_every` steps have
passed since its last one, then the target check (last-100 mean >= target_return over a full
100 episodes). A seed that reaches it stops there; the others go on until the budget.

What a seed's summary holds: the fields regress reads (seed, run_dir, total_steps,
steps_to_target, mean_return_last_100, return_curve) and stopped_by. Not written per seed:
checkpoints, TensorBoard events, losses.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from rlnorm import config as config_lib
from rlnorm.compiled.loop import RECENT
from rlnorm.compiled.seeds import SeedBatchLoop, check_seed_batch
from rlnorm.lifecycle import configure_tensorflow


class SeedRecord:
    """One seed's view of training, the part of `rlnorm.logger.RunLogger` regress reads."""

    def __init__(self, seed: int):
        self.seed, self.step, self.last_log_step = seed, 0, 0
        self.curve: list[list[float]] = []
        self.mean: float | None = None
        self.full = False  # 100 episodes or more
        self.steps_to_target: int | None = None
        self.stopped_by: str | None = None

    def observe(self, step: int, recent: np.ndarray, episodes: int, config) -> bool:
        """After a call: log point if due, then the target check. True: this seed stops."""
        self.step = step
        rows = recent[RECENT - min(episodes, RECENT) :, 0]
        self.mean = math.fsum(rows) / len(rows) if len(rows) else None
        self.full = len(rows) >= RECENT
        if step - self.last_log_step >= config.log_every:
            self.last_log_step = step
            if self.mean is not None:
                self.curve.append([step, self.mean])
        target = config.target_return
        if target is not None and self.full and self.mean >= target:
            self.steps_to_target, self.stopped_by = step, "target_return"
            return True
        return False

    def summary(self, run_dir: str | None) -> dict:
        if self.step > self.last_log_step and self.mean is not None:  # the run's last log
            self.curve.append([self.step, self.mean])
        return {
            "seed": self.seed,
            "run_dir": run_dir,
            "total_steps": self.step,
            "steps_to_target": self.steps_to_target,
            "mean_return_last_100": self.mean,
            "return_curve": self.curve,
            "stopped_by": self.stopped_by or "total_steps",
        }


class _NoRetracingWarning(logging.Filter):
    """Each smaller graph (`SeedBatchLoop.keep`) traces `_run` anew, on purpose: TF's
    frequent-retracing warning would say otherwise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


def updates_in_next_call(config, step: int) -> int:
    """`CompiledUpdater.updates_in_next_call` without diagnostics."""
    spu = config.n_steps * config.n_envs

    def updates_to_cross(every: int) -> int:
        return -(-((step // every + 1) * every - step) // spu)

    return max(
        min(updates_to_cross(config.log_every), updates_to_cross(config.checkpoint_every)), 1
    )


def train_seeds_batched(config, seeds: list[int], out=None, quiet: bool = True) -> list[dict]:
    """Train `seeds` of `config` in one graph; returns one summary per seed, in seed order
    (written to `out/seed<k>/summary.json` when `out` is given). ConfigError for a config the
    batched trainer does not support (`check_seed_batch`)."""
    config = config_lib.validate(config)
    check_seed_batch(config)
    configure_tensorflow(config.tf_threads)
    tf.config.experimental.enable_op_determinism()  # as `rlnorm.lifecycle.seed_everything`
    quiet_retracing = _NoRetracingWarning()
    tf.get_logger().addFilter(quiet_retracing)
    try:
        return _train(config, seeds, out, quiet)
    finally:
        tf.get_logger().removeFilter(quiet_retracing)


def _train(config, seeds, out, quiet) -> list[dict]:
    t0 = time.perf_counter()
    loop = SeedBatchLoop(config, seeds)
    carry = loop.initial_carry()
    records = [SeedRecord(s) for s in seeds]
    spu = config.n_steps * config.n_envs
    updates_left = -(-config.total_steps // spu)
    step = 0
    rows = list(range(len(seeds)))  # the record of each of the loop's seeds
    running = rows
    while updates_left > 0 and running:
        n = min(updates_in_next_call(config, step), updates_left)
        carry = loop.run(carry, tf.constant(n, tf.int32))
        step += n * spu
        updates_left -= n
        recent, episodes = carry.recent.numpy(), carry.episodes.numpy()
        active, failed = loop.active.numpy(), loop.failed.numpy()
        for i, r in enumerate(rows):
            if records[r].stopped_by is not None:
                continue
            stop = records[r].observe(step, recent[i], int(episodes[i]), config)
            if failed[i]:  # a non-finite update: the single run raises NonFiniteLossError
                records[r].stopped_by = "nonfinite_loss"
            active[i] = active[i] and not stop and not failed[i]
        loop.active.assign(active)
        running = [i for i in range(len(rows)) if active[i]]
        if running and len(running) <= len(rows) // 2:  # stopped seeds: half the work
            loop, carry = loop.keep(running, carry)
            rows, running = [rows[i] for i in running], list(range(len(running)))
        if not quiet:
            print(f"  step {step:,}: {len(running)}/{len(seeds)} seeds running", flush=True)
    summaries = []
    for record in records:
        run_dir = None if out is None else str(Path(out) / f"seed{record.seed}")
        summary = record.summary(run_dir)
        summary["wall_seconds_all_seeds"] = time.perf_counter() - t0
        if run_dir is not None:
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            (Path(run_dir) / "summary.json").write_text(json.dumps(summary, indent=1))
        summaries.append(summary)
    return summaries
