"""The compiled backend's adapter for `rlnorm.loop`: the Python side of `CompiledLoop`
(`rlnorm.compiled.graph`, whose public names this module also exports).

The carry (env state, episode statistics) stays here between calls. A call runs as many whole
updates as fit before the loop must save or diagnose, across the log points of about
CALL_SECONDS; the graph writes one row per log point (`CompiledLoop.run_logged`) and
`segments` hands the loop one output per row, with that row's finished episodes, so the run
logs, checks its target return and saves exactly as it would with one call per log point.
"""

from __future__ import annotations

import time

import tensorflow as tf

from rlnorm import config as config_lib
from rlnorm.compiled import SUPPORTED_ENV_IDS, TFVecEnv, make_tf_env
from rlnorm.compiled.graph import RECENT, Carry, CompiledLoop, push_recent
from rlnorm.update import UpdateOutput

__all__ = ["RECENT", "Carry", "CompiledLoop", "CompiledUpdater", "make_compiled_env", "push_recent"]

CALL_SECONDS = 1.0  # a call spans log points up to about this long: progress and Ctrl-C stay live


def make_compiled_env(config) -> TFVecEnv:
    if config.env_id not in SUPPORTED_ENV_IDS:
        raise config_lib.ConfigError(
            f"backend = 'compiled' has no TF-native env {config.env_id!r}; supported ids "
            f"(rlnorm.compiled.SUPPORTED_ENV_IDS): {', '.join(SUPPORTED_ENV_IDS)}. "
            "Use backend = 'python' for any other Gymnasium env."
        )
    return make_tf_env(config.env_id, config.n_envs)


class CompiledUpdater:
    """`rlnorm.loop`'s adapter for TF-native envs: the carry (env state, episode statistics)
    stays here between calls; each call runs as many updates as the loop allows, across as
    many log points as fit in about CALL_SECONDS (`segments` hands the loop one output per
    log point, each as a call ending there would have given it)."""

    def __init__(self, config, agent, env: TFVecEnv, reward_scaler=None, seed: int = 0):
        self.config, self.agent = config, agent
        self.loop = CompiledLoop(config, agent, env, reward_scaler)
        self.carry = self.loop.initial_carry(seed)
        self.steps_per_update = config.n_steps * config.n_envs
        self.episodes = 0  # finished so far, as counted in the carry
        self.compile_seconds: float | None = None
        self.seconds_per_update: float | None = None  # measured after the compiling call

    def updates_in_next_call(self, step: int, diagnosed: bool) -> int:
        """The next call ends at the update that crosses the k-th multiple of `log_every` (k
        log points in about CALL_SECONDS; 1 until the speed is known and the carry holds 100
        episodes, which the in-graph target check reads), or earlier at the first that crosses
        a multiple of `checkpoint_every` (where the loop saves), and, with diagnostics on, just
        BEFORE the update that crosses a multiple of `diagnostics_every` / `histograms_every`
        (that one runs split, alone). Every end is a log point or a save, as with one log point
        per call, so the numbers do not depend on k."""
        config, spu = self.config, self.steps_per_update

        def updates_to_cross(every: int, k: int = 1) -> int:
            return -(-((step // every + k) * every - step) // spu)

        k = 1
        if self.seconds_per_update is not None and self.episodes >= RECENT:
            budget = max(1, int(CALL_SECONDS / max(self.seconds_per_update, 1e-9)))
            k = max(1, budget * spu // config.log_every)
        n = min(updates_to_cross(config.log_every, k), updates_to_cross(config.checkpoint_every))
        if diagnosed:
            every = min(config.diagnostics_every, config.histograms_every)
            n = min(n, updates_to_cross(every) - 1)
        return max(n, 1)

    def segments(self, step: int, n: int, episode_callback, keep_batch: bool = False):
        """`n` whole updates in one call, run now; returns an iterator of one UpdateOutput per
        log segment (`wall_time`: when the segment ended, interpolated over the call). Each
        segment's finished episodes go to `episode_callback` as the iterator reaches it, so the
        loop logs each segment as if the call had ended there. keep_batch: `update`'s split
        update, alone."""
        if keep_batch:
            return iter([self.update(step, n, episode_callback, keep_batch=True)])
        check = self.config.target_return is not None
        t0 = time.perf_counter()
        self.carry, rows, n_rows = self.loop.run_logged(
            self.carry,
            tf.constant(n, tf.int32),
            tf.constant(step, tf.int64),
            tf.constant(self.config.log_every, tf.int64),
            tf.constant(check),
            tf.constant(self.config.target_return if check else 0.0, tf.float64),
        )
        n_rows = int(n_rows)  # waits for the call
        t1 = time.perf_counter()
        rows = tf.nest.map_structure(lambda x: x.numpy()[:n_rows], rows)
        ran = rows["ran"].tolist()
        if self.compile_seconds is None:  # the first call traces and compiles
            self.compile_seconds = t1 - t0
        else:
            self.seconds_per_update = (t1 - t0) / sum(ran)
        return self._replay(rows, ran, t0, t1, episode_callback)

    def _replay(self, rows, ran, t0, t1, episode_callback):
        done, total = 0, sum(ran)
        for r, n_updates in enumerate(ran):
            self._hand_over(int(rows["episodes"][r]), rows["recent"][r], episode_callback)
            metrics = {k: float(v[r]) / n_updates for k, v in rows["metrics"].items()}
            out = UpdateOutput(metrics, self.loop.stash, n_updates)
            done += n_updates
            out.wall_time = t0 + (t1 - t0) * done / total
            yield out

    def update(self, step: int, n: int, episode_callback, keep_batch: bool = False):
        """`n` whole updates in one call (keep_batch: one update, split, its batch kept)."""
        loop = self.loop
        if keep_batch:
            self.carry, batch, acting = loop.collect(self.carry)
            metrics = loop.train_step(*batch)
            if bool(metrics["update_applied"]):  # a skipped update's batch stays out
                self.agent.update_normalizer(batch.obs)
            out = UpdateOutput(
                {k: float(v) for k, v in metrics.items()}, {**batch._asdict(), **acting}
            )
        else:
            t0 = time.perf_counter()
            self.carry, total, ran = loop.run(self.carry, tf.constant(n, tf.int32))
            ran = int(ran)
            if self.compile_seconds is None:  # the first call traces and compiles
                self.compile_seconds = time.perf_counter() - t0
            out = UpdateOutput({k: float(v) / ran for k, v in total.items()}, loop.stash, ran)
        self._hand_over(int(self.carry.episodes), self.carry.recent.numpy(), episode_callback)
        return out

    def _hand_over(self, episodes: int, recent, episode_callback) -> None:
        """Episodes finished since the last hand-over: the last <= 100 go to the logger."""
        new = episodes - self.episodes
        self.episodes += new
        shown = min(new, RECENT)
        if shown:
            recent = recent[RECENT - shown :]
            episode_callback(recent[:, 0], recent[:, 1].astype(int), new - shown)

    def summary_fields(self) -> dict:
        return {"dropped_steps": 0, "compile_seconds": self.compile_seconds}

    def trace_counts(self) -> dict[str, int]:
        loop, counts = self.loop, {}
        compiled = {"run": loop.run, "run_logged": loop.run_logged, "collect": loop.collect}
        compiled["split_train_step"] = loop.train_step
        for name, fn in compiled.items():
            if hasattr(fn, "experimental_get_tracing_count"):
                counts[f"compiled_{name}"] = int(fn.experimental_get_tracing_count())
        return counts
