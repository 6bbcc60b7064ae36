"""The Gymnasium env adapter: one A2C update as ONE compiled call, rollout -> targets -> train
step -> normalizer merge.

The training loop (`rlnorm.loop`) calls `VectorEnvUpdater.update()` once per update. The graph
runs, in this order:

    1. rollout: n_steps of act (inference mode) + env step (`RolloutCollector`, the env is
       stepped from inside the graph by `tf.numpy_function`); RAW observations stored;
    2. targets: rewards scaled (if norm_reward), GAE(lambda), V(final obs) on truncation;
    3. train step (training mode), with the normalizer statistics that acted;
    4. the normalizer merges the rollout's valid raw observations, once, AFTER the step.

Why one call: a `tf.function` call's fixed overhead is larger than a small update's arithmetic,
so four calls per update (rollout, targets, train step, merge) cost about twice one call
(figures: docs/throughput.md). The call goes to the traced function through
`rlnorm._fast.call_concrete`, which skips `tf.function`'s per-call argument binding.

The call returns two tensors, the next observation and the train-step metrics stacked in one
vector: each returned tensor costs Python time per call. The batch, which only diagnostics
updates and a NaN report read, is written to variables inside the graph
(`UpdateOutput.batch` reads it on demand).

A diagnostics update is the same call: `ScaleDiagnostics.record_update` then runs its pass on
the update's batch with the variables put back as they were before the update.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from rlnorm import _fast
from rlnorm.a2c import compute_gae, next_state_values
from rlnorm.agent import compile_function
from rlnorm.envs import autoreset_mode_of
from rlnorm.rollout import Rollout, RolloutCollector


class Batch(NamedTuple):
    """A flattened update batch (N = n_steps * n_envs), as `A2CAgent.train_step` takes it."""

    obs: tf.Tensor  # raw [N, *obs_shape]
    actions: tf.Tensor  # int32 [N] or float32 [N, d] (unclipped)
    advantages: tf.Tensor  # float32 [N]
    returns: tf.Tensor  # float32 [N]
    valid: tf.Tensor  # float32 [N], 0 for NEXT_STEP reset steps and dropped steps


class UpdateOutput:
    """The result of one adapter call of `n_updates` updates: `metrics` (train-step scalars as
    Python floats, means over the call's updates; `update_applied` is 1.0 when every update was
    applied), and, read on demand from the variables (or tensors) the graph wrote them to, the
    last update's `batch`, `rewards` (raw env rewards), `values` (V(s_t) at acting time) and
    `log_probs` (of the actions at acting time), all [N]. Read them before the next update
    overwrites the variables."""

    wall_time: float | None = None  # time.perf_counter() when it ended, if not "now"

    def __init__(self, metrics: dict, stash: dict, n_updates: int = 1):
        self.metrics = metrics
        self.n_updates = n_updates
        self._stash = stash
        self._read: dict | None = None

    def _field(self, name: str) -> tf.Tensor:
        if self._read is None:
            # A snapshot: TF copies a variable's buffer on write while a read of it is alive.
            self._read = {k: tf.convert_to_tensor(v) for k, v in self._stash.items()}
        return self._read[name]

    @property
    def batch(self) -> Batch:
        return Batch(*(self._field(f) for f in Batch._fields))

    rewards = property(lambda self: self._field("rewards"))
    values = property(lambda self: self._field("values"))
    log_probs = property(lambda self: self._field("log_probs"))


def flatten(x):
    """[T, B, ...] -> [T * B, ...] (static shapes)."""
    return tf.reshape(x, [x.shape[0] * x.shape[1], *x.shape[2:]])


def targets(rollout: Rollout, gamma: float, gae_lambda: float, reward_scaler=None) -> Batch:
    """Step 2 on a Rollout of tensors [T, B]: rewards scaled by the running std of the
    discounted return (if `reward_scaler`), GAE(lambda) with V(final obs) on truncation and 0
    on termination; returns the flattened update batch (row t * B + b)."""
    rewards = rollout.rewards
    if reward_scaler is not None:
        rewards = reward_scaler.scale_rollout(rewards, rollout.dones())
    next_values = next_state_values(
        rollout.values, rollout.last_values, rollout.truncated, rollout.final_values
    )
    advantages, returns = compute_gae(
        rewards,
        rollout.values,
        next_values,
        rollout.terminated,
        rollout.dones(),
        gamma,
        gae_lambda,
    )
    return Batch(
        flatten(rollout.obs),
        flatten(rollout.actions),
        flatten(advantages),
        flatten(returns),
        flatten(rollout.valid),
    )


class VectorEnvUpdater:
    """The compiled update on a Gymnasium vector env (the collector holds the current obs)."""

    def __init__(self, agent, envs, reward_scaler=None, seed: int | None = None):
        config = agent.config
        collector = RolloutCollector(
            envs, agent, config.n_steps, autoreset_mode_of(envs), config.nonfinite, seed=seed
        )
        self.agent, self.collector, self.reward_scaler = agent, collector, reward_scaler
        self.gamma, self.gae_lambda = config.gamma, config.gae_lambda
        mode = config.compile
        # With compile = "xla" the train step is its own XLA cluster inside the update graph
        # (the graph as a whole holds the env's numpy_function, which XLA cannot compile).
        self._train_step = (
            compile_function(agent.gradient_step, None, mode)
            if mode == "xla"
            else agent.gradient_step
        )
        self.update_fn = compile_function(self._update, [collector.obs_spec], mode, jit=False)
        self._update_call = None  # the concrete function, traced at the first update
        self.metric_names: list[str] = []  # the metrics vector's order, set when tracing
        # Where the graph leaves the update's batch (not checkpointed: rebuilt every update).
        n = collector.n_steps * collector.n_envs
        shapes = {
            "obs": ([n, *collector.obs_shape], collector.obs_dtype),
            "actions": ([n, *agent.action_spec.shape[1:]], agent.action_spec.dtype),
            **{k: ([n], tf.float32) for k in ("advantages", "returns", "valid")},
            **{k: ([n], tf.float32) for k in ("rewards", "values", "log_probs")},
        }
        self.stash = {
            k: tf.Variable(tf.zeros(shape, dtype), trainable=False, name=f"last_{k}")
            for k, (shape, dtype) in shapes.items()
        }

    # -- the graphs ---------------------------------------------------------------------------
    def _update(self, obs):
        """The four steps in one graph. obs: the current raw obs [B, ...]. Returns (next obs,
        metrics float32 [len(metric_names)]); the batch goes to `self.stash`."""
        # 1. Rollout, acting in inference mode (BatchNorm: moving statistics).
        rollout, next_obs = self.collector.rollout_graph(obs)
        # 2. Targets.
        batch = targets(rollout, self.gamma, self.gae_lambda, self.reward_scaler)
        # 3. Gradient step (training mode), with the normalizer statistics that acted.
        metrics = self._train_step(*batch)
        # 4. The normalizer merges the valid raw obs of an applied update: a skipped update
        # (NaN/Inf loss) merges an empty batch, which changes nothing, so the loop can save the
        # last good state. Training never freezes the normalizer (evaluation and export do);
        # that flag is read at trace time.
        if not self.agent.normalizer.frozen:
            keep = tf.logical_and(batch.valid > 0, metrics["update_applied"])
            self.agent.normalizer.merge(tf.boolean_mask(batch.obs, keep))
        acting = [flatten(x) for x in (rollout.rewards, rollout.values, rollout.log_probs)]
        for name, x in zip(self.stash, [*batch, *acting], strict=True):
            self.stash[name].assign(x)
        self.metric_names = list(metrics)
        return next_obs, tf.stack([tf.cast(m, tf.float32) for m in metrics.values()])

    # -- the Python side --------------------------------------------------------------------------
    def updates_in_next_call(self, env_step: int, diagnosed: bool) -> int:
        return 1  # the env is stepped from Python: one update per call is all the graph holds

    def update(
        self, env_step: int, n: int = 1, episode_callback=None, keep_batch: bool = True
    ) -> UpdateOutput:
        """One whole update (one compiled call; `n` is always 1 here, and the batch is always
        kept); finished episodes go to `episode_callback(returns, lengths)`."""
        if self._update_call is None:
            eager = self.agent.config.compile == "eager"
            on = _fast.enabled(self.agent.config)
            self._update_call = (
                self.update_fn
                if eager
                else _fast.call_concrete(self.update_fn.get_concrete_function(), on)
            )
        metrics = self.collector.run(self._update_call, env_step, episode_callback).numpy()
        return UpdateOutput(dict(zip(self.metric_names, metrics.tolist())), self.stash)

    def segments(self, env_step: int, n: int = 1, episode_callback=None, keep_batch=True):
        """The loop's view of a call: one output per log point it spans (here one update)."""
        return iter([self.update(env_step, n, episode_callback, keep_batch)])

    def summary_fields(self) -> dict:
        return {
            "dropped_steps": self.collector.n_dropped,
            "first_env_step_time": self.collector.first_step_time,
            "autoreset_mode": self.collector.autoreset_mode,
        }

    def trace_counts(self) -> dict[str, int]:
        """Traces of the update graph (1 once used: the signature is fixed)."""
        fn = self.update_fn
        if not hasattr(fn, "experimental_get_tracing_count"):  # compile = "eager"
            return {}
        return {"update": int(fn.experimental_get_tracing_count())}
