"""The A2C agent: the shared normalizer, the two networks, their optimizers, and the compiled
hot paths (`act`, `act_deterministic`, `predict_value`, `train_step`, `update_normalizer`).

The math is plain TF, callable eagerly or inside any graph: `forward` (sample + value),
`sample`, `mode`, `state_values`, `gradient_step`, `loss_and_gradients`. The env adapters
(`rlnorm.update`, `rlnorm.compiled.loop`) trace it into their own update graphs; the compiled
versions above are those same functions under `compile_function`.

`tf.function` is applied in ONE place, `compile_function`, with fixed input signatures so
nothing retraces (a new batch size, a float64 input or a Python float argument would each
cost a retrace of the whole graph). `compile="eager"` runs everything eagerly for debugging.
"""

from __future__ import annotations

from contextlib import contextmanager

import gymnasium as gym
import numpy as np
import tensorflow as tf

from rlnorm import _fast
from rlnorm.a2c import a2c_loss, explained_variance, masked_mean
from rlnorm.networks import build_networks
from rlnorm.optimizers import make_optimizer


def observation_spec(space: gym.Space) -> tf.TensorSpec:
    """Batched TensorSpec of raw observations: int64 [None] (Discrete) or [None, *shape]."""
    if isinstance(space, gym.spaces.Discrete):
        return tf.TensorSpec([None], tf.int64, name="observation")
    dtype = tf.float64 if np.dtype(space.dtype) == np.float64 else tf.float32
    return tf.TensorSpec([None, *space.shape], dtype, name="observation")


def action_spec(space: gym.Space) -> tf.TensorSpec:
    if isinstance(space, gym.spaces.Discrete):
        return tf.TensorSpec([None], tf.int32, name="action")
    return tf.TensorSpec([None, *space.shape], tf.float32, name="action")


def compile_function(fn, input_signature, mode: str, jit: bool | None = None):
    """THE place rlnorm applies `tf.function`: fixed signature, XLA when mode == "xla",
    untouched when mode == "eager" (debugging). No autograph: rlnorm's graphs use explicit
    `tf.cond` and Python loops over static sizes only, and autograph's conversion would only
    add tracing time before the first env step."""
    if mode == "eager":
        return fn
    return tf.function(
        fn,
        input_signature=input_signature,
        jit_compile=(mode == "xla") if jit is None else jit,
        autograph=False,
    )


class A2CAgent(tf.Module):
    """Everything that learns, and everything a checkpoint must hold.

    Shapes: obs raw [B, *obs_shape] (int [B] for Discrete); actions int32 [B] or float32
    [B, act_dim]; batches for `train_step` are flattened rollouts, N = n_steps * n_envs.
    """

    def __init__(self, config, observation_space: gym.Space, action_space: gym.Space):
        super().__init__(name="a2c")
        self.config = config
        self.observation_space = observation_space
        self.action_space = action_space
        self.normalizer, self.policy, self.value = build_networks(
            config, observation_space, action_space
        )
        # PopArt's value-target statistics (rlnorm.popart), or None; the checkpoint holds them
        # through the value network.
        self.popart = self.value.popart
        self.policy_optimizer = make_optimizer(config, "policy_optimizer")
        self.value_optimizer = make_optimizer(config, "value_optimizer")
        # Build optimizer slots now: variables must not be created inside a traced function.
        self.policy_optimizer.build(self.policy.trainable_weights)
        self.value_optimizer.build(self.value.trainable_weights)
        self.rng = tf.random.Generator.from_seed(config.seed)
        self.obs_spec = observation_spec(observation_space)
        self.action_spec = action_spec(action_space)
        self._compile(config.compile)

    # -- the math (plain Python on tensors; compiled below) --------------------------------
    @contextmanager
    def weights_read_once(self):
        """Trace a block in which no weight and no normalizer statistic changes (the rollout:
        T act steps and its value pass) with each of them read ONCE, at the block's start.

        Keras reads a layer's variables at every call (a ReadVariableOp per weight per act
        step, plus the normalizer's 1/std), each costing as much as the arithmetic of these
        small networks, so the rollout reuses one read (`rlnorm._fast.read_once`). Same values, same arithmetic:
        the same bits as reading at every call."""
        weights = [
            w
            for net in (self.policy, self.value)
            for w in net.trainable_weights + net.non_trainable_weights
        ]
        with _fast.read_once(weights, _fast.enabled(self.config)), self.normalizer.read_once():
            yield

    def forward(self, obs):
        """Sample actions in inference mode (BatchNorm: moving statistics).
        Returns (action, log_prob float32 [B], value float32 [B])."""
        x = self.normalizer(obs)  # once, for both networks
        action, log_prob = self.sample(obs, x)
        return action, log_prob, self.value.value(obs, normalized_obs=x)

    def sample(self, obs, normalized_obs=None):
        """The policy half of `forward`: (action, log_prob float32 [B]). The rollout samples with
        it and gets V(s_t) for all its steps from one batched value pass afterwards."""
        x = self.normalizer(obs) if normalized_obs is None else normalized_obs
        if self.policy.use_sde:  # gSDE: new exploration matrices where the rollout is due
            c = self.config
            self.policy.resample_exploration(self.rng, c.n_steps, c.sde_sample_freq)
        dist = self.policy.distribution(obs, training=False, normalized_obs=x)
        action = dist.sample(self.rng)
        return action, dist.log_prob(action)

    def mode(self, obs):
        return self.policy.distribution(obs, training=False).mode()

    def state_values(self, obs):
        return self.value.value(obs, training=False)

    def loss_and_gradients(self, obs, actions, advantages, returns, valid, records=None):
        """The A2C loss in training mode and its gradients, without touching the weights.

        Shared by `gradient_step` and the diagnostics pass, so the diagnostics see exactly the
        update's forward pass. `records` ({"policy": dict, "value": dict}) collects activations.
        Returns (losses, dist, values, log_prob, grads); grads follow policy then value weights.
        With PopArt the value loss is in normalized units (targets and head both normalized by
        the statistics before this update), the advantages are divided by the same std;
        `values` are unnormalized either way.
        """
        c = self.config
        records = records or {"policy": None, "value": None}
        mask = valid > 0  # masked steps stay out of BatchNorm's batch statistics too
        x = self.normalizer(obs)  # once, for both networks (not differentiated: no weights)
        with tf.GradientTape() as tape:
            dist = self.policy.distribution(obs, True, records["policy"], mask, normalized_obs=x)
            log_prob = dist.log_prob(actions)
            values = self.value.head_values(obs, True, records["value"], mask, normalized_obs=x)
            targets, stats = returns, None
            if self.popart is not None:
                stats = self.popart.for_batch(returns, mask)
                targets = self.popart.normalize(returns, stats)
                # The policy gradient in the same normalized units (PopArt's actor-critic form,
                # Hessel et al. 2019): its step size then does not depend on the reward scale.
                advantages = advantages / tf.cast(stats[1], advantages.dtype)
            losses = a2c_loss(
                log_prob,
                dist.entropy(),
                values,
                advantages,
                targets,
                valid,
                c.ent_coef,
                c.vf_coef,
                c.normalize_advantage,
            )
            total = losses["policy_total_loss"] + losses["value_total_loss"]
        grads = tape.gradient(total, self.policy.trainable_weights + self.value.trainable_weights)
        if self.popart is not None:
            values = self.popart.denormalize(values, stats)
        return losses, dist, values, log_prob, grads

    def gradient_step(self, obs, actions, advantages, returns, valid):
        """One gradient step on each network from a flattened rollout (training=True).

        obs [N, *obs_shape] raw; actions [N] / [N, d]; advantages, returns, valid float32 [N].
        Returns a dict of scalar tensors (losses, pre-clip gradient norms, scales)."""
        c = self.config
        policy_vars = self.policy.trainable_weights
        value_vars = self.value.trainable_weights
        losses, _, values, log_prob, grads = self.loss_and_gradients(
            obs, actions, advantages, returns, valid
        )
        total = losses["policy_total_loss"] + losses["value_total_loss"]
        policy_grads, value_grads = grads[: len(policy_vars)], grads[len(policy_vars) :]
        if c.grad_clip == "global":
            # SB3: one optimizer over both networks, so ONE clip over all their gradients.
            policy_grad_norm = tf.linalg.global_norm(policy_grads)
            value_grad_norm = tf.linalg.global_norm(value_grads)
            clipped, _ = tf.clip_by_global_norm(policy_grads + value_grads, c.max_grad_norm)
            policy_grads, value_grads = clipped[: len(policy_vars)], clipped[len(policy_vars) :]
        else:
            # One global-norm clip per network (the two never share a gradient scale).
            policy_grads, policy_grad_norm = tf.clip_by_global_norm(policy_grads, c.max_grad_norm)
            value_grads, value_grad_norm = tf.clip_by_global_norm(value_grads, c.max_grad_norm)
        # A NaN/Inf loss or gradient skips the update, so the weights stay the last good ones
        # and the loop can save them before it stops (see train.raise_nonfinite_loss).
        finite = tf.reduce_all(
            tf.math.is_finite(tf.stack([total, policy_grad_norm, value_grad_norm]))
        )
        self.policy_optimizer.apply(policy_grads, policy_vars, applied=finite)
        self.value_optimizer.apply(value_grads, value_vars, applied=finite)
        if self.popart is not None:
            # After the step, from an applied update's valid targets (as the observation
            # normalizer merges): the first update stores its batch's statistics as they are,
            # later ones merge and rescale the head so V(s) is unchanged.
            keep = tf.logical_and(valid > 0, finite)
            first = self.popart.initialize(returns, keep)
            self.popart.update(
                returns, tf.logical_and(keep, tf.logical_not(first)), self.value.head
            )
        metrics = dict(losses)
        metrics["update_applied"] = finite
        metrics.update(
            policy_grad_norm=policy_grad_norm,
            value_grad_norm=value_grad_norm,
            explained_variance=explained_variance(values, returns, valid),
            log_prob=masked_mean(log_prob, valid),
        )
        return metrics

    def learning_rate(self) -> float:
        """The learning rate the next update uses (after `lr_schedule`), for the diagnostics."""
        return float(self.policy_optimizer.scheduled_learning_rate())

    # -- the one place tf.function is applied ------------------------------------------------
    def _compile(self, mode: str) -> None:
        obs, act = self.obs_spec, self.action_spec
        vec = tf.TensorSpec([None], tf.float32)
        self.act = compile_function(self.forward, [obs], mode)
        self.act_deterministic = compile_function(self.mode, [obs], mode)
        self.predict_value = compile_function(self.state_values, [obs], mode)
        self.train_step = compile_function(self.gradient_step, [obs, act, vec, vec, vec], mode)
        self._merge_normalizer = compile_function(self.normalizer.merge, [obs], mode, jit=False)

    def update_normalizer(self, raw_obs) -> None:
        """Merge raw observations into the shared normalizer, unless it is frozen."""
        if not self.normalizer.frozen:  # checked in Python: a traced graph would bake it in
            self._merge_normalizer(raw_obs)

    def trace_counts(self) -> dict[str, int]:
        """How many times each compiled function was traced (1 each after warm-up)."""
        fns = {
            "act": self.act,
            "predict_value": self.predict_value,
            "train_step": self.train_step,
            "update_normalizer": self._merge_normalizer,
        }
        return {
            k: int(f.experimental_get_tracing_count())
            for k, f in fns.items()
            if hasattr(f, "experimental_get_tracing_count")
        }
