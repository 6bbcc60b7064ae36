"""Rollout collection: n_steps of every env, acting in inference mode, RAW observations stored.

Autoreset (Gymnasium 1.x), both modes handled:
- SAME_STEP: the step that ends an episode returns the reset observation; the true last one is
  `info["final_obs"][i]` (masked by `info["_final_obs"]`). Truncated steps bootstrap from
  V(final obs), computed right here with the acting-time weights and normalizer.
- NEXT_STEP: the step AFTER a done is a reset step (action ignored, reward 0, no done flags):
  not a real transition, so it is stored with `valid = 0` and excluded from every loss. The obs
  stored at that step is the final obs, so V(s_{t+1}) of the done step is simply values[t+1].
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from rlnorm import _fast


class NonFiniteError(FloatingPointError):
    """NaN or Inf in an observation or reward; the message names env, step and feature."""


@dataclass
class Rollout:
    """One rollout: NumPy arrays from `collect`, tensors inside the update graph (`rlnorm.update`).
    Shapes [T, B, ...], T = n_steps, B = n_envs."""

    obs: np.ndarray  # raw observations s_t, [T, B, *obs_shape]
    actions: np.ndarray  # unclipped actions, int32 [T, B] or float32 [T, B, d]
    log_probs: np.ndarray  # float32 [T, B], at acting time
    values: np.ndarray  # float32 [T, B], V(s_t) at acting time
    rewards: np.ndarray  # float32 [T, B], raw env rewards
    terminated: np.ndarray  # bool [T, B]
    truncated: np.ndarray  # bool [T, B]
    final_values: np.ndarray  # float32 [T, B], V(final obs) where SAME_STEP truncated
    valid: np.ndarray  # float32 [T, B], 0 for NEXT_STEP reset steps and dropped steps
    last_values: np.ndarray  # float32 [B], V(obs after the last step)

    def dones(self) -> np.ndarray:
        return self.terminated | self.truncated


def check_finite(x: np.ndarray, what: str, step: int) -> np.ndarray | None:
    """Row mask of non-finite entries [B], or None when all are finite (the common case)."""
    if np.issubdtype(x.dtype, np.integer):
        return None
    ok = np.isfinite(x)
    if ok.all():
        return None
    return ~ok.reshape(len(x), -1).all(axis=1)


def as_env_error(error: BaseException, env_id: str, call: str):
    """An exception an env raised, as EnvError naming the env and the call (the sub-env's
    `EnvChecker` has already named its index where it could)."""
    from rlnorm.envs import EnvError

    if isinstance(error, EnvError):
        return error
    hint = ""
    if isinstance(error, EOFError | BrokenPipeError | ConnectionResetError):
        hint = " An env worker process died (async vector env): see its output above."
    if "expected 5, got 4" in str(error):
        hint = (
            " The env returns the old Gym API's 4-tuple; Gymnasium 1.x envs return (obs, "
            "reward, terminated, truncated, info)."
        )
    return EnvError(
        f"Environment {env_id!r}: {call}() raised {type(error).__name__}: {error}.{hint} "
        "(RLNORM_DEBUG=1 shows the traceback.)"
    )


def describe_nonfinite(x: np.ndarray, what: str, step: int) -> str:
    bad = np.argwhere(~np.isfinite(x.reshape(len(x), -1)))
    env_i, feat = (int(v) for v in bad[0])
    return (
        f"Non-finite {what} at env step {step}: env index {env_i}, feature {feat} = "
        f"{float(x.reshape(len(x), -1)[env_i, feat])!r} ({len(bad)} entries in this step). Fix the "
        'environment, or set `nonfinite = "drop"` to mask such steps with a warning.'
    )


# Rollouts of up to this many steps are traced unrolled (the fastest graph for A2C's usual
# 5-8 steps); longer ones run as a tf.while_loop, whose one body traces in constant time.
UNROLLED_STEPS = 16


class RolloutCollector:
    """Steps the vector env for n_steps per call, carrying the current observation across calls.

    Speed: the T act steps are unrolled in a graph (a tf.while_loop beyond UNROLLED_STEPS) and
    the env is stepped from inside it through `tf.numpy_function`, so the per-call overhead of TF (more than the network's
    arithmetic) is paid once per update (the update graph, `rlnorm.update`,
    traces `rollout_graph`) instead of once per env step. Everything NumPy-side (autoreset
    bookkeeping, episode statistics, finiteness checks) happens in `_env_step`, the callback,
    which hands back two arrays rather than six (each numpy_function output has a cost).
    With compile="eager" the same code runs eagerly, step by step, for debugging.

    Episode statistics are counted here rather than by Gymnasium's RecordEpisodeStatistics
    wrapper, which costs a sizeable fraction of CartPole's own step for the same two sums; both count like this: a NEXT_STEP reset step belongs to no episode.
    """

    def __init__(
        self,
        envs,
        agent,
        n_steps: int,
        autoreset_mode: str,
        nonfinite: str = "error",
        seed: int | None = None,
    ):
        from rlnorm.agent import compile_function

        self.envs = envs
        self.agent = agent
        self.n_steps = n_steps
        self.n_envs = envs.num_envs
        self.autoreset_mode = autoreset_mode
        self.nonfinite = nonfinite
        self.fast_paths = _fast.enabled(agent.config)  # keep the callback thread's state
        self.obs_dtype = agent.obs_spec.dtype
        self.obs_shape = tuple(agent.obs_spec.shape[1:])
        self.prev_done = np.zeros(self.n_envs, bool)  # NEXT_STEP: next step is a reset step
        self._no_rows = np.zeros(self.n_envs, bool)  # shared, never written to
        self._all_valid = np.ones(self.n_envs, np.float32)  # shared, never written to
        self._float_obs = not np.issubdtype(self.obs_dtype.as_numpy_dtype, np.integer)
        self._np_obs_dtype = self.obs_dtype.as_numpy_dtype
        self.bad_obs = self._no_rows  # current obs had NaN/Inf (dropped)
        self.n_dropped = 0
        self.env_step = 0
        self.first_step_time: float | None = None  # wall clock of the first env step (startup)
        self._episodes: list[tuple[np.ndarray, np.ndarray]] = []
        self.episode_return = np.zeros(self.n_envs, np.float64)  # of the running episodes
        self.episode_length = np.zeros(self.n_envs, np.int64)
        self._error: str | None = None
        self._env_exception: BaseException | None = None  # raised by the env in the graph
        self.env_id = agent.config.env_id
        try:
            obs, _ = envs.reset(seed=seed)
        except Exception as e:
            raise as_env_error(e, self.env_id, "reset") from e
        self.obs = self._check_obs(np.asarray(obs, self.obs_dtype.as_numpy_dtype))
        self.next_valid = (~self.bad_obs).astype(np.float32)  # valid flags of the next step
        self._raise_pending_error()
        self.obs_spec = tf.TensorSpec([self.n_envs, *self.obs_shape], self.obs_dtype)
        # Acting math under XLA when asked; the rollout graph itself holds a numpy_function,
        # which XLA cannot compile.
        mode = agent.config.compile
        self._sample = compile_function(agent.sample, None, mode) if mode == "xla" else agent.sample
        self._rollout = compile_function(self._rollout_graph, [self.obs_spec], mode, jit=False)

    # -- the graph: T x (act -> env step) ----------------------------------------------------
    def rollout_graph(self, obs) -> tuple[Rollout, tf.Tensor]:
        """obs [B, *obs_shape] -> (Rollout of [T, B, ...] tensors, next obs). Traced by the
        update graph (`rlnorm.update`) and by `collect`."""
        *fields, next_obs = self._rollout_graph(obs)
        return Rollout(*fields), next_obs

    def _rollout_graph(self, obs):
        """The Rollout fields in their order, stacked [T, B, ...], then the next obs."""
        T, B = self.n_steps, self.n_envs

        def act_and_step(obs):
            action, log_prob = self._sample(obs)  # inference mode
            obs_pair, step_scalars = tf.numpy_function(
                self._env_step,
                [action],
                [self.obs_dtype, tf.float32],
                stateful=True,
                name="env_step",
            )
            obs_pair.set_shape([2, *obs.shape])
            step_scalars.set_shape([4, B])
            return action, log_prob, obs_pair, step_scalars

        # The weights and the normalizer do not change during the rollout: read them once.
        with self.agent.weights_read_once():
            if T <= UNROLLED_STEPS:
                steps, obs_pairs, scalars = [], [], []
                for _ in range(T):
                    action, log_prob, obs_pair, step_scalars = act_and_step(obs)
                    steps.append((obs, action, log_prob))
                    obs_pairs.append(obs_pair)
                    scalars.append(step_scalars)
                    obs = obs_pair[0]
                obs_t, actions, log_probs = (tf.stack(x) for x in zip(*steps))
                obs_pairs, scalars = tf.stack(obs_pairs), tf.stack(scalars)
            else:  # long rollouts: one loop body to trace and optimize, not T copies
                obs, (obs_t, actions, log_probs, obs_pairs, scalars) = self._looped(
                    obs, act_and_step
                )
            # V(s_t) of every step, V(final obs) (read only where truncated) and V(obs after
            # the rollout) in ONE batched pass, off the env's critical path (faster than a
            # value pass at every act step). The same values up to float
            # rounding: a batched matmul may round a last bit differently, so a long run can
            # take another (equally deterministic) trajectory.
            final_obs = obs_pairs[:, 1]
            flat = [tf.reshape(x, [T * B, *obs.shape[1:]]) for x in (obs_t, final_obs)]
            all_values = self.agent.state_values(tf.concat([*flat, obs], axis=0))
        values, final_values, last_values = (
            tf.reshape(all_values[: T * B], [T, B]),
            tf.reshape(all_values[T * B : 2 * T * B], [T, B]),
            all_values[2 * T * B :],
        )
        scalars = tf.transpose(scalars, [1, 0, 2])  # [T, 4, B] -> [4, T, B]
        rewards, valid = scalars[0], scalars[3]
        terminated, truncated = scalars[1] > 0, scalars[2] > 0
        return (
            obs_t,
            actions,
            log_probs,
            values,
            rewards,
            terminated,
            truncated,
            final_values,
            valid,
            last_values,
            obs,
        )

    def _looped(self, obs, act_and_step):
        """`act_and_step` T times in a tf.while_loop: (next obs, (obs [T, B, ...], actions,
        log_probs [T, B], obs pairs [T, 2, B, ...], scalars [T, 4, B]))."""
        T = self.n_steps
        dtypes = (self.obs_dtype, self.agent.action_spec.dtype, tf.float32, self.obs_dtype)
        arrays = tuple(tf.TensorArray(d, size=T) for d in (*dtypes, tf.float32))

        def body(t, obs, arrays):
            action, log_prob, obs_pair, step_scalars = act_and_step(obs)
            row = (obs, action, log_prob, obs_pair, step_scalars)
            arrays = tuple(a.write(t, x) for a, x in zip(arrays, row, strict=True))
            return t + 1, tf.ensure_shape(obs_pair[0], obs.shape), arrays

        _, obs, arrays = tf.while_loop(
            lambda t, *_: t < T, body, (tf.constant(0), obs, arrays), maximum_iterations=T
        )
        return obs, tuple(a.stack() for a in arrays)

    def _env_step(self, action: np.ndarray):
        """NumPy side of one vector step (called from the graph). Returns the next and the final
        obs stacked [2, B, ...] (they differ where SAME_STEP autoreset reset an env) and
        float32 [4, B]: reward, terminated, truncated, valid. Runs 8 x 5 times per CartPole
        update, so it avoids NumPy calls it does not need (each one's overhead adds up)."""
        _fast.keep_thread_state(self.fast_paths)
        valid = self.next_valid  # 0 for a NEXT_STEP reset step or a step from a bad obs
        try:
            next_obs, reward, terminated, truncated, info = self.envs.step(action)
        except Exception as e:  # TF would wrap it in an opaque error: `run` re-raises it
            self._env_exception = e
            raise
        if self.first_step_time is None:
            self.first_step_time = time.time()
        reward = np.asarray(reward, np.float64)
        if not np.isfinite(reward).all():
            bad_reward = ~np.isfinite(reward)
            reward = self._handle_nonfinite(reward, bad_reward, "reward")
            valid = np.where(bad_reward, 0.0, valid)
        next_obs = np.asarray(next_obs, self._np_obs_dtype)
        obs_pair = np.empty((2, *next_obs.shape), next_obs.dtype)
        obs_pair[1] = next_obs  # NEXT_STEP: the obs returned at a done step IS the final obs
        if self.autoreset_mode == "same_step" and "_final_obs" in info and info["_final_obs"].any():
            idx = np.flatnonzero(info["_final_obs"])
            obs_pair[1, idx] = np.stack(info["final_obs"][idx])
        # Episode statistics (finite rewards: a dropped reward counts as 0). A NEXT_STEP reset
        # step (reward 0) is not part of any episode.
        done = terminated | truncated
        self.episode_return += reward
        self.episode_length += 1 if self.autoreset_mode == "same_step" else ~self.prev_done
        if done.any():
            self._episodes.append((self.episode_return[done], self.episode_length[done]))
            self.episode_return[done] = 0.0
            self.episode_length[done] = 0
        self.prev_done = done
        self.env_step += self.n_envs
        obs_pair[0] = self._check_obs(next_obs)
        skip_next = self.bad_obs | done if self.autoreset_mode == "next_step" else self.bad_obs
        self.next_valid = (~skip_next).astype(np.float32) if skip_next.any() else self._all_valid
        return obs_pair, np.array((reward, terminated, truncated, valid), np.float32)

    # -- one call ----------------------------------------------------------------------------
    def run(self, graph_fn, env_step: int, episode_callback):
        """Call a compiled function of the current obs that steps the envs (`_rollout` here,
        the update graph in `rlnorm.update`): it returns (next obs, result). Finished episodes
        go to `episode_callback(returns, lengths)`; a non-finite input raises here, after the
        call (the offending steps were masked inside it). Returns the result."""
        self.env_step = env_step
        try:
            next_obs, result = graph_fn(self.obs)
        except tf.errors.OpError:
            error, self._env_exception = self._env_exception, None
            if error is None:
                raise
            raise as_env_error(error, self.env_id, "step") from error
        for returns, lengths in self._episodes:
            episode_callback(returns, lengths)
        self._episodes.clear()
        self._raise_pending_error()
        self.obs = next_obs
        return result

    def collect(self, env_step: int, episode_callback) -> Rollout:
        """Run n_steps in every env; returns the Rollout as NumPy arrays."""

        def rollout(obs):
            *fields, next_obs = self._rollout(obs)
            return next_obs, Rollout(*(x.numpy() for x in fields))

        return self.run(rollout, env_step, episode_callback)

    # -- non-finite input ------------------------------------------------------------------------
    def _check_obs(self, obs: np.ndarray) -> np.ndarray:
        if not self._float_obs or np.isfinite(obs).all():  # the common case, checked cheaply
            self.bad_obs = self._no_rows
            return obs
        bad = check_finite(obs, "observation", self.env_step)
        self.bad_obs = bad
        return self._handle_nonfinite(obs, bad, "observation")

    def _handle_nonfinite(self, x: np.ndarray, bad_rows: np.ndarray, what: str) -> np.ndarray:
        """`error`: remember the message and raise it after the graph call returns (an exception
        inside numpy_function would reach the user as an opaque TF error). `drop`: warn once per
        step, zero the entries, and the step is masked (valid = 0)."""
        message = describe_nonfinite(x, what, self.env_step)
        if self.nonfinite == "error":
            self._error = self._error or message
        else:
            self.n_dropped += int(bad_rows.sum())
            warnings.warn(message.split(" Fix")[0] + " -> step dropped.", stacklevel=2)
        return np.where(np.isfinite(x), x, 0.0).astype(x.dtype)

    def _raise_pending_error(self) -> None:
        if self._error is not None:
            message, self._error = self._error, None
            raise NonFiniteError(message)
