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

from dataclasses import dataclass

import gymnasium as gym
import numpy as np


class NonFiniteError(FloatingPointError):
    """NaN or Inf in an observation or reward; the message names env, step and feature."""


@dataclass
class Rollout:
    """Preallocated storage, reused every update. Shapes [T, B, ...], T = n_steps, B = n_envs."""

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

    @classmethod
    def allocate(cls, n_steps: int, n_envs: int, obs_space: gym.Space, action_space: gym.Space):
        t, b = n_steps, n_envs
        if isinstance(obs_space, gym.spaces.Discrete):
            obs = np.zeros((t, b), np.int64)
        else:
            obs_dtype = np.float64 if np.dtype(obs_space.dtype) == np.float64 else np.float32
            obs = np.zeros((t, b, *obs_space.shape), obs_dtype)
        if isinstance(action_space, gym.spaces.Discrete):
            actions = np.zeros((t, b), np.int32)
        else:
            actions = np.zeros((t, b, *action_space.shape), np.float32)
        f = lambda: np.zeros((t, b), np.float32)  # noqa: E731
        return cls(
            obs,
            actions,
            f(),
            f(),
            f(),
            np.zeros((t, b), bool),
            np.zeros((t, b), bool),
            f(),
            np.ones((t, b), np.float32),
            np.zeros(b, np.float32),
        )

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


def describe_nonfinite(x: np.ndarray, what: str, step: int) -> str:
    bad = np.argwhere(~np.isfinite(x.reshape(len(x), -1)))
    env_i, feat = (int(v) for v in bad[0])
    return (
        f"Non-finite {what} at env step {step}: env index {env_i}, feature {feat} = "
        f"{x.reshape(len(x), -1)[env_i, feat]!r} ({len(bad)} entries in this step). Fix the "
        'environment, or set `nonfinite = "drop"` to mask such steps with a warning.'
    )


class RolloutCollector:
    """Steps the vector env for n_steps per call, carrying the current observation across calls.

    `episode_callback(returns, lengths)` receives finished episodes' raw returns and lengths.
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
        self.envs = envs
        self.agent = agent
        self.n_envs = envs.num_envs
        self.autoreset_mode = autoreset_mode
        self.nonfinite = nonfinite
        self.buffer = Rollout.allocate(
            n_steps, self.n_envs, envs.single_observation_space, envs.single_action_space
        )
        self.obs, _ = envs.reset(seed=seed)
        self.prev_done = np.zeros(self.n_envs, bool)  # NEXT_STEP: next step is a reset step
        self.n_dropped = 0

    def collect(self, env_step: int, episode_callback) -> Rollout:
        buf, envs, agent = self.buffer, self.envs, self.agent
        next_step_mode = self.autoreset_mode == "next_step"
        for t in range(buf.obs.shape[0]):
            obs = self.obs
            valid = np.ones(self.n_envs, np.float32)
            if next_step_mode:
                valid[self.prev_done] = 0.0
            bad = check_finite(obs, "observation", env_step)
            if bad is not None:
                obs = self._handle_nonfinite(obs, bad, "observation", env_step)
                valid[bad] = 0.0
            action, log_prob, value = agent.act(obs)
            action = action.numpy()
            next_obs, reward, terminated, truncated, info = envs.step(action)
            bad_r = check_finite(np.asarray(reward), "reward", env_step)
            if bad_r is not None:
                reward = self._handle_nonfinite(
                    np.asarray(reward, np.float64), bad_r, "reward", env_step
                )
                valid[bad_r] = 0.0
            buf.obs[t] = obs
            buf.actions[t] = action
            buf.log_probs[t] = log_prob.numpy()
            buf.values[t] = value.numpy()
            buf.rewards[t] = reward
            buf.terminated[t] = terminated
            buf.truncated[t] = truncated
            buf.valid[t] = valid
            if not next_step_mode and truncated.any():
                # Bootstrap target for cut episodes: V(final obs), not V(reset obs).
                idx = np.flatnonzero(truncated & info["_final_obs"])
                final_obs = np.stack(info["final_obs"][idx])
                buf.final_values[t, idx] = agent.predict_value(final_obs).numpy()
            if "_episode" in info and info["_episode"].any():
                done_idx = info["_episode"]
                episode_callback(info["episode"]["r"][done_idx], info["episode"]["l"][done_idx])
            self.prev_done = terminated | truncated
            self.obs = next_obs
            env_step += self.n_envs
        obs = self.obs
        bad = check_finite(obs, "observation", env_step)
        if bad is not None:
            obs = self._handle_nonfinite(obs, bad, "observation", env_step)
        buf.last_values[:] = agent.predict_value(obs).numpy()
        return buf

    def _handle_nonfinite(self, x: np.ndarray, bad_rows: np.ndarray, what: str, step: int):
        if self.nonfinite == "error":
            raise NonFiniteError(describe_nonfinite(x, what, step))
        import warnings

        self.n_dropped += int(bad_rows.sum())
        warnings.warn(
            describe_nonfinite(x, what, step).split(" Fix")[0] + " -> step dropped.", stacklevel=2
        )
        return np.where(np.isfinite(x), x, 0.0).astype(x.dtype)
