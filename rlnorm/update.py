"""One A2C update as ONE compiled call: rollout -> targets -> train step -> normalizer merge.

`rlnorm.train` calls `Updater.update()` once per update. The graph runs, in this order:

    1. rollout: n_steps of act (inference mode) + env step (`RolloutCollector`, the env is
       stepped from inside the graph by `tf.numpy_function`); RAW observations stored;
    2. targets: rewards scaled (if norm_reward), GAE(lambda), V(final obs) on truncation;
    3. train step (training mode), with the normalizer statistics that acted;
    4. the normalizer merges the rollout's valid raw observations, once, AFTER the step.

Why one call: on this CPU a `tf.function` call costs 0.15-0.4 ms before any arithmetic, and
an update of CartPole x8 x5 steps does only ~4 ms of work in all. The loop as separate calls
(rollout, NumPy targets, train_step, normalizer merge) spent 7.5 ms per update; one call
spends about 4 ms (benchmarks/throughput.py). The call goes through the traced concrete
function, which skips `tf.function`'s per-call argument binding (another ~0.2 ms).

A diagnostics update is the same call: `ScaleDiagnostics.record_update` then runs its pass on
the returned batch with the variables put back as they were before the update.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from rlnorm.agent import compile_function
from rlnorm.returns import compute_gae, next_state_values
from rlnorm.rollout import Rollout


class Batch(NamedTuple):
    """A flattened update batch (N = n_steps * n_envs), as `A2CAgent.train_step` takes it."""

    obs: tf.Tensor  # raw [N, *obs_shape]
    actions: tf.Tensor  # int32 [N] or float32 [N, d] (unclipped)
    advantages: tf.Tensor  # float32 [N]
    returns: tf.Tensor  # float32 [N]
    valid: tf.Tensor  # float32 [N], 0 for NEXT_STEP reset steps and dropped steps


class UpdateOutput(NamedTuple):
    batch: Batch
    rewards: tf.Tensor  # float32 [N], raw env rewards (the NaN-loss dump reports them)
    values: tf.Tensor  # float32 [N], V(s_t) at acting time
    log_probs: tf.Tensor  # float32 [N], log-prob of the action at acting time
    metrics: dict  # train-step metrics (scalars)


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


class Updater:
    """The compiled update of the Python-stepped loop (the collector holds the current obs)."""

    def __init__(self, agent, collector, reward_scaler=None):
        self.agent, self.collector, self.reward_scaler = agent, collector, reward_scaler
        config = agent.config
        self.gamma, self.gae_lambda = config.gamma, config.gae_lambda
        mode = config.compile
        # With compile = "xla" the train step is its own XLA cluster inside the update graph
        # (the graph as a whole holds the env's numpy_function, which XLA cannot compile).
        self._train_step = (
            compile_function(agent._train_step, None, mode) if mode == "xla" else agent._train_step
        )
        self.update_fn = compile_function(self._update, [collector.obs_spec], mode, jit=False)
        self._update_call = None  # the concrete function, traced at the first update

    # -- the graphs ---------------------------------------------------------------------------
    def _update(self, obs):
        """The four steps in one graph. obs: the current raw obs [B, ...]. Returns (next obs,
        UpdateOutput)."""
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
        return next_obs, UpdateOutput(batch, *acting, metrics)

    # -- the Python side --------------------------------------------------------------------------
    def update(self, env_step: int, episode_callback) -> UpdateOutput:
        """One whole update (one compiled call); finished episodes go to `episode_callback`."""
        if self._update_call is None:
            eager = self.agent.config.compile == "eager"
            self._update_call = self.update_fn if eager else self.update_fn.get_concrete_function()
        return self.collector.run(self._update_call, env_step, episode_callback)

    def trace_counts(self) -> dict[str, int]:
        """Traces of the update graph (1 once used: the signature is fixed)."""
        fn = self.update_fn
        if not hasattr(fn, "experimental_get_tracing_count"):  # compile = "eager"
            return {}
        return {"update": int(fn.experimental_get_tracing_count())}
