"""Shared pieces of the TF-native classic-control environments.

An environment is split in two by composition:

* a *dynamics* object (one per env family, see `Dynamics`) that only knows the physics of ONE
  time step of a batch: the reset distribution, the observation function and the transition
  (next physics state, reward, terminated). It mirrors Gymnasium's `step`/`reset` source
  operation by operation, so eager float64 results agree with Gymnasium bit-for-bit on CPU.
  Compiled code rounds differently in the last bit: XLA fuses a*b+c into multiply-adds and
  turns division by a constant into multiplication by its reciprocal (Grappler's constant
  folding does the latter in plain tf.function graphs too), about 1e-16 relative per step.
* `TFVecEnv`, which adds everything that is the same for every env: the batch size, the
  `TimeLimit` counter, the RNG key and Gymnasium's SAME_STEP auto-reset.

Every method of `TFVecEnv` is a pure function of tensors (no Python-side state changes), so a
whole rollout can live inside one `tf.function(jit_compile=True)` / `tf.while_loop`.

Shapes and dtypes (N = `n_envs`, k = physics-state size):

* `EnvState.physics`  float64 [N, k]   Gymnasium's `env.unwrapped.state`, one row per env
* `EnvState.elapsed`  int32   [N]      steps since the last reset (Gymnasium's `TimeLimit`)
* `EnvState.key`      int64   [2]      seed of the stateless RNG used for the next auto-reset
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import gymnasium as gym
import numpy as np
import tensorflow as tf

# The stateless ops below are pinned to Philox: "auto_select" may pick another algorithm per
# device, and ThreeFry has no eager kernels. Only *integer* draws are used: TF's own float
# conversion differs between the eager kernels and XLA, while the raw 64-bit Philox output is
# identical in both (checked on CPU), so a given seed gives the same keys and -- up to the last
# bit, see `uniform_from_bits` -- the same reset states eagerly, in a graph and under XLA.
RNG_ALG = "philox"
_MANTISSA_MASK = (1 << 53) - 1


class EnvState(NamedTuple):
    """Complete state of a batch of environments (a valid `tf.while_loop` loop variable)."""

    physics: tf.Tensor  # float64 [N, k]
    elapsed: tf.Tensor  # int32 [N]
    key: tf.Tensor  # int64 [2]


class StepOutput(NamedTuple):
    """What `TFVecEnv.step` returns besides the new state (Gymnasium SAME_STEP semantics)."""

    obs: tf.Tensor  # float32 [N, obs_dim]; the reset observation where the episode ended
    final_obs: tf.Tensor  # float32 [N, obs_dim]; the transition's true last observation
    reward: tf.Tensor  # float32 [N]
    terminated: tf.Tensor  # bool [N]
    truncated: tf.Tensor  # bool [N]; elapsed >= max_episode_steps (may coincide with terminated)


class Dynamics(Protocol):
    """One env family's physics, batched over the leading axis. Pure TF ops only."""

    env_id: str
    state_dim: int
    obs_dim: int
    max_episode_steps: int
    observation_space: gym.spaces.Space
    action_space: gym.spaces.Space

    def sample_initial(self, bits: tf.Tensor) -> tf.Tensor:
        """Fresh physics states, float64 [n, k], from Gymnasium's reset distribution, given
        int64 [n, k] random bits (see `uniform_from_bits`)."""

    def observe(self, physics: tf.Tensor) -> tf.Tensor:
        """float64 [n, k] physics -> float32 [n, obs_dim] observation."""

    def transition(
        self, physics: tf.Tensor, action: tf.Tensor, elapsed: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """One step: (physics float64 [n, k], reward float64 [n], terminated bool [n]).

        `elapsed` (int32 [n], before the step) is only needed where Gymnasium's arithmetic
        depends on whether the state came straight from `reset` (MountainCarContinuous)."""


def random_bits(key: tf.Tensor, n: int) -> tuple[tf.Tensor, tf.Tensor]:
    """One Philox draw from an int64 [2] key: (next key int64 [2], random bits int64 [n]).

    The next key comes out of the same draw as the bits (like a key split), so every step
    costs a single RNG op -- each one adds about a second of XLA compile time on CPU."""
    bits = tf.random.stateless_uniform(
        [n + 2], seed=key, minval=None, maxval=None, dtype=tf.int64, alg=RNG_ALG
    )
    return bits[:2], bits[2:]


def uniform_from_bits(bits: tf.Tensor, low, high) -> tf.Tensor:
    """float64 uniform values in [low, high) from int64 random bits (same shape as `bits`),
    broadcasting `low`/`high`.

    Same construction as NumPy's `Generator.uniform`: 53 random mantissa bits give u in
    [0, 1), then `low + (high - low) * u`. (XLA may fuse that into one multiply-add, so an
    XLA-compiled draw can differ from the eager one in the last bit.)"""
    u = tf.cast(tf.bitwise.bitwise_and(bits, _MANTISSA_MASK), tf.float64) * (2.0**-53)
    low = tf.constant(low, tf.float64)
    high = tf.constant(high, tf.float64)
    return low + (high - low) * u


def round_f32(x: tf.Tensor) -> tf.Tensor:
    """Round float64 values to the nearest float32, keeping dtype float64.

    Used where Gymnasium computes in (or stores) float32: for +, -, * on float32-representable
    inputs, the float64 result rounded once to float32 equals the native float32 result
    (float64 has more than 2 * 24 + 2 mantissa bits, so double rounding is harmless)."""
    return tf.cast(tf.cast(x, tf.float32), tf.float64)


class TFVecEnv:
    """A batch of `n_envs` copies of one environment, stepped with pure TF ops.

    Interface (all methods are pure; states are `EnvState` tuples of tensors)::

        state = env.reset(seed)                # seed: int or int tensor (scalar)
        obs = env.observe(state)               # float32 [N, obs_dim]
        state, out = env.step(state, action)   # out: StepOutput
        state = env.state_from_physics(physics, elapsed=0, seed=0)
        state = env.set_state(state, physics=..., elapsed=..., mask=...)

    `action` is int32 [N] for Discrete action spaces and float32 [N, act_dim] for Box ones.
    """

    def __init__(self, dynamics: Dynamics, n_envs: int):
        if int(n_envs) < 1:
            raise ValueError(f"n_envs must be a positive integer, got {n_envs!r}")
        self.dynamics = dynamics
        self.n_envs = int(n_envs)
        self.env_id = dynamics.env_id
        self.observation_space = dynamics.observation_space
        self.action_space = dynamics.action_space
        self.obs_dim = int(dynamics.obs_dim)
        self.state_dim = int(dynamics.state_dim)
        self.max_episode_steps = int(dynamics.max_episode_steps)
        self.reset_rows = -(-self.n_envs // 8)  # fresh states drawn per step, see _draw_resets
        self.is_discrete = isinstance(self.action_space, gym.spaces.Discrete)
        # Discrete: number of actions; Box: flat action size.
        self.n_actions = int(self.action_space.n) if self.is_discrete else None
        self.act_dim = None if self.is_discrete else int(np.prod(self.action_space.shape))

    def __repr__(self) -> str:
        return f"TFVecEnv({self.env_id}, n_envs={self.n_envs})"

    def close(self) -> None:
        """Nothing to release (a Gymnasium vector env's close stops workers)."""

    # -- state construction -------------------------------------------------------------------

    def reset(self, seed) -> EnvState:
        """Fresh states for all envs; deterministic given `seed` (int or int scalar tensor)."""
        seed = tf.cast(seed, tf.int64)
        key, physics = self._draw_initial(tf.stack([seed, tf.zeros_like(seed)]))
        return EnvState(physics, tf.zeros([self.n_envs], tf.int32), key)

    def state_from_physics(self, physics, elapsed=0, seed=0) -> EnvState:
        """An `EnvState` starting from explicit physics (float64 [N, k]), e.g. copied from
        Gymnasium's `env.unwrapped.state`. `elapsed` is a scalar or int [N]."""
        physics = self._check_physics(physics)
        elapsed = tf.broadcast_to(tf.cast(elapsed, tf.int32), [self.n_envs])
        key = tf.stack([tf.cast(seed, tf.int64), tf.constant(1, tf.int64)])
        return EnvState(physics, elapsed, key)

    def set_state(self, state: EnvState, physics=None, elapsed=None, mask=None) -> EnvState:
        """Replace physics and/or elapsed steps, only in rows where `mask` (bool [N]) is True
        (all rows when `mask` is None). The RNG key is kept."""
        new_physics, new_elapsed = state.physics, state.elapsed
        if physics is not None:
            new_physics = self._check_physics(physics)
        if elapsed is not None:
            new_elapsed = tf.broadcast_to(tf.cast(elapsed, tf.int32), [self.n_envs])
        if mask is not None:
            mask = tf.cast(mask, tf.bool)
            new_physics = tf.where(mask[:, None], new_physics, state.physics)
            new_elapsed = tf.where(mask, new_elapsed, state.elapsed)
        return EnvState(new_physics, new_elapsed, state.key)

    def _draw_initial(self, key: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(next key, fresh physics float64 [N, k]) from one RNG draw."""
        key, bits = random_bits(key, self.n_envs * self.state_dim)
        bits = tf.reshape(bits, [self.n_envs, self.state_dim])
        return key, self.dynamics.sample_initial(bits)

    def _draw_resets(self, key: tf.Tensor, done: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(next key, physics float64 [N, k] holding a fresh reset state in every `done` row;
        the other rows are unspecified, to be dropped with tf.where).

        Drawing N fresh states every step is a large share of a CartPole step. Few episodes end
        per step (~5% of envs under a random policy, ~0.2% once CartPole is solved), so
        usually only `reset_rows` (N/8) states are drawn and handed out to the done rows in
        index order; a step where more end draws all N. Each done row still gets its own
        independent draw; the branch depends only on `done`, so graph and XLA agree."""
        rows = self.reset_rows
        n_done = tf.reduce_sum(tf.cast(done, tf.int32))

        def few():
            next_key, bits = random_bits(key, rows * self.state_dim)
            fresh = self.dynamics.sample_initial(tf.reshape(bits, [rows, self.state_dim]))
            rank = tf.cumsum(tf.cast(done, tf.int32), exclusive=True)  # among the done rows
            return next_key, tf.gather(fresh, tf.minimum(rank, rows - 1))

        return tf.cond(n_done <= rows, few, lambda: self._draw_initial(key))

    def _check_physics(self, physics) -> tf.Tensor:
        physics = tf.cast(physics, tf.float64)
        physics.shape.assert_is_compatible_with([self.n_envs, self.state_dim])
        return tf.reshape(physics, [self.n_envs, self.state_dim])

    # -- stepping -----------------------------------------------------------------------------

    def observe(self, state: EnvState) -> tf.Tensor:
        """float32 [N, obs_dim] observation of the current state."""
        return self.dynamics.observe(state.physics)

    def step(self, state: EnvState, action) -> tuple[EnvState, StepOutput]:
        """Advance every env one step, auto-resetting finished ones (SAME_STEP)."""
        action = self._prepare_action(action)
        physics, reward, terminated = self.dynamics.transition(state.physics, action, state.elapsed)
        # Gymnasium's TimeLimit: counts every step and sets truncated independently of
        # terminated, so both flags can be True on the same step.
        elapsed = state.elapsed + 1
        truncated = elapsed >= self.max_episode_steps
        done = tf.logical_or(terminated, truncated)
        final_obs = self.dynamics.observe(physics)

        key, fresh = self._draw_resets(state.key, done)
        physics = tf.where(done[:, None], fresh, physics)
        elapsed = tf.where(done, tf.zeros_like(elapsed), elapsed)
        obs = self.dynamics.observe(physics)  # row-wise: final_obs where not done
        out = StepOutput(
            obs=obs,
            final_obs=final_obs,
            reward=tf.cast(reward, tf.float32),
            terminated=terminated,
            truncated=truncated,
        )
        return EnvState(physics, elapsed, key), out

    def random_action(self, key, scale: float = 1.0) -> tf.Tensor:
        """Uniform random actions for all envs from an int [2] stateless seed (the same
        values eagerly and under XLA, up to the last bit of Box actions).

        Discrete: int32 [N] in [0, n). Box: float32 [N, act_dim], uniform on the box widened
        by `scale` about its centre (scale > 1 exercises the envs' action clipping)."""
        width = 1 if self.is_discrete else self.act_dim
        _, bits = random_bits(tf.cast(key, tf.int64), self.n_envs * width)
        bits = tf.reshape(bits, [self.n_envs, width])
        if self.is_discrete:
            u = uniform_from_bits(bits[:, 0], 0.0, float(self.n_actions))
            return tf.minimum(tf.cast(tf.floor(u), tf.int32), self.n_actions - 1)
        low = np.asarray(self.action_space.low, np.float64).reshape(-1)
        high = np.asarray(self.action_space.high, np.float64).reshape(-1)
        mid, half = (high + low) / 2, (high - low) / 2 * scale
        return tf.cast(uniform_from_bits(bits, mid - half, mid + half), tf.float32)

    def _prepare_action(self, action) -> tf.Tensor:
        action = tf.convert_to_tensor(action)
        if self.is_discrete:
            return tf.reshape(tf.cast(action, tf.int32), [self.n_envs])
        # Gymnasium's Box action spaces here are float32; the envs' arithmetic on the action
        # (clipping, products) happens in float32 there too, so cast first.
        return tf.reshape(tf.cast(action, tf.float32), [self.n_envs, self.act_dim])
