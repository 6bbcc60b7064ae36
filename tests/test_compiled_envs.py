"""TF-native classic-control envs (rlnorm.compiled) against Gymnasium itself.

Gymnasium is stepped first and its trajectory recorded (states, actions, observations,
rewards, flags, the reset states after each done). The TF env is then checked two ways:

* one eager, batched step from every recorded pre-step state: the dynamics must match
  Gymnasium bit-for-bit (eager TF runs the same float64 operations in the same order, and its
  CPU sin/cos agree with glibc), except for two documented `x**2` cases;
* a free-running replay of the same action sequence inside one XLA-compiled loop, re-synced to
  Gymnasium's reset state after each done (reset RNG streams differ), which checks SAME_STEP
  auto-reset, the time limit and the compiled path. XLA contracts a*b+c into fused
  multiply-adds and replaces division by a constant with multiplication by its reciprocal, so
  this path agrees to about 1e-13 per step rather than bit-for-bit.
"""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf

from rlnorm.compiled import SUPPORTED_ENV_IDS, EnvState, make_tf_env

# Steps recorded per env and number of parallel copies. Long enough to pass each time limit
# at least once (CartPole 500 with a balancing controller, Acrobot 500, MountainCar 200,
# MountainCarContinuous 999, Pendulum 200) and to see terminations where reachable.
N_STEPS = {
    "CartPole-v1": 520,
    "Acrobot-v1": 520,
    "MountainCar-v0": 260,
    "MountainCarContinuous-v0": 1010,
    "Pendulum-v1": 260,
}
N_ROWS = 4

# Eager one-step check: relative tolerance on the float64 physics state. 0 = bit-identical.
# Acrobot: `dtheta**2` and `d2**2` on NumPy float64 scalars call libm pow(), which is off by
# one ulp from the correctly rounded square (tf.square) in ~0.1% of cases; after RK4 that is
# a few ulps (~1e-15 relative), 1e-12 leaves ample room.
EXACT_PHYSICS_RTOL = {"Acrobot-v1": 1e-12}
# The same pow() effect in Pendulum's cost only touches the reward (float64, then cast to
# float32); a float32 rounding flip is possible in principle, so allow one float32 ulp.
EXACT_REWARD_RTOL = {"Pendulum-v1": 2e-7}
# float32 observations: exact wherever the float64 state is; Acrobot's may flip one float32
# rounding (an ulp is <= 2e-6 for |dtheta2| <= 9 pi).
EXACT_OBS_ATOL = {"Acrobot-v1": 2e-6}

# XLA replay. Per-step differences are ~1 ulp per fused operation (see the module docstring).
# Replaying recorded actions open-loop, CartPole's upright pole (unstable) and Acrobot (chaotic)
# amplify them exponentially (CartPole ~x7 every 25 steps: 1e-16 -> 0.8 over 500 steps), so
# their TF state is re-synced to Gymnasium's every 50 steps as well as after each done;
# measured worst deviations in between are 4e-15 (CartPole) and 3e-12 (Acrobot). The other
# envs run free between episodes (MountainCar and MountainCarContinuous stay bit-identical,
# Pendulum drifts to 3e-12). 1e-9 on the float64 physics is loose for all of them yet far below
# what a wrong constant or operation would give.
XLA_PHYSICS_TOL = 1e-9
RESYNC_PERIOD = {"CartPole-v1": 50, "Acrobot-v1": 50}
# Observations are float32 casts: a flipped float32 rounding is an error of one float32 ulp.
XLA_OBS_RTOL, XLA_OBS_ATOL = 1e-6, 1e-6


def _policy(env_id: str, row: int, rng: np.random.Generator, obs: np.ndarray):
    """Actions fed to Gymnasium (and replayed in TF): mostly random, with a few rows driven
    by simple controllers so that time limits and goal states are actually reached."""
    if env_id == "CartPole-v1":
        if row == 0:  # balances for 500 steps -> truncation
            return int(np.dot([0.1, 0.5, 10.0, 2.0], obs) > 0)
        return int(rng.integers(2))
    if env_id == "Acrobot-v1":
        return int(rng.integers(3))
    if env_id == "MountainCar-v0":
        if row < 2 and rng.random() < 0.9:  # energy pumping reaches the goal (termination)
            return 2 if obs[1] > 0 else 0
        return int(rng.integers(3))
    if env_id == "MountainCarContinuous-v0":
        u = rng.random()
        if row < 2 and u < 0.8:  # pumping with forces beyond the [-1, 1] clip
            a = np.sign(obs[1] + 1e-9) * rng.uniform(0.5, 2.0)
        elif u < 0.85:  # the bounds themselves (kept in float32 by Gymnasium)
            a = rng.choice([-1.0, 1.0])
        else:
            a = rng.uniform(-1.5, 1.5)
        return np.array([a], dtype=np.float32)
    if env_id == "Pendulum-v1":  # torques beyond the [-2, 2] clip
        return rng.uniform(-3.0, 3.0, size=(1,)).astype(np.float32)
    raise AssertionError(env_id)


def _physics(env) -> np.ndarray:
    return np.asarray(env.unwrapped.state, dtype=np.float64)


@functools.cache
def _record(env_id: str) -> dict:
    """Step N_ROWS Gymnasium envs for N_STEPS[env_id] steps; arrays are [T, R, ...]."""
    T, R = N_STEPS[env_id], N_ROWS
    rng = np.random.default_rng(12345)
    envs = [gym.make(env_id) for _ in range(R)]
    obs = [e.reset(seed=100 + i)[0] for i, e in enumerate(envs)]
    rec = {
        "init_physics": np.stack([_physics(e) for e in envs]),
        "init_obs": np.stack(obs),
    }
    keys = ["action", "pre_physics", "pre_elapsed", "post_physics", "obs", "reward"]
    keys += ["terminated", "truncated", "sync_physics", "elapsed"]
    steps = {k: [] for k in keys}
    elapsed = np.zeros(R, np.int32)
    for _ in range(T):
        row = {k: [] for k in keys}
        for i, e in enumerate(envs):
            action = _policy(env_id, i, rng, obs[i])
            row["action"].append(action)
            row["pre_physics"].append(_physics(e))
            row["pre_elapsed"].append(elapsed[i])
            o, r, term, trunc, _ = e.step(action)
            assert e._elapsed_steps == elapsed[i] + 1  # TimeLimit's counter
            row["post_physics"].append(_physics(e))
            row["obs"].append(o)
            row["reward"].append(r)
            row["terminated"].append(term)
            row["truncated"].append(trunc)
            elapsed[i] += 1
            if term or trunc:
                o, _ = e.reset()
                elapsed[i] = 0
            obs[i] = o
            row["sync_physics"].append(_physics(e))  # post-step, or post-reset after a done
            row["elapsed"].append(elapsed[i])
        for k in keys:
            steps[k].append(np.stack(row[k]))
    rec.update({k: np.stack(v) for k, v in steps.items()})
    done = rec["terminated"] | rec["truncated"]
    assert rec["truncated"].any(), "no time limit reached"
    if env_id not in ("Acrobot-v1", "Pendulum-v1"):  # random Acrobot rarely swings up
        assert rec["terminated"].any(), "no termination reached"
    assert done.any()
    return rec


@pytest.mark.parametrize("env_id", SUPPORTED_ENV_IDS)
def test_spaces_and_limits_match_gymnasium(env_id):
    env = make_tf_env(env_id, n_envs=3)
    ref = gym.make(env_id)
    assert env.observation_space == ref.observation_space
    assert env.observation_space.dtype == ref.observation_space.dtype == np.float32
    assert env.action_space == ref.action_space
    assert env.action_space.dtype == ref.action_space.dtype
    assert env.max_episode_steps == ref.spec.max_episode_steps
    assert env.obs_dim == ref.observation_space.shape[0]
    ref.reset(seed=0)
    assert env.state_dim == _physics(ref).shape[0]


def test_unknown_env_id_names_supported_ids():
    with pytest.raises(ValueError, match="supported ids: CartPole-v1, Acrobot-v1"):
        make_tf_env("LunarLander-v3", n_envs=4)


@pytest.mark.parametrize("env_id", SUPPORTED_ENV_IDS)
def test_step_matches_gymnasium_bit_for_bit(env_id):
    """Every recorded transition at once, as one eager batch of T * R envs."""
    rec = _record(env_id)
    T, R = rec["reward"].shape
    n = T * R
    env = make_tf_env(env_id, n_envs=n)

    def flat(x):
        return x.reshape(n, *x.shape[2:])

    state = env.state_from_physics(flat(rec["pre_physics"]), elapsed=flat(rec["pre_elapsed"]))
    new_state, out = env.step(state, flat(rec["action"]))
    done = flat(rec["terminated"] | rec["truncated"])

    np.testing.assert_array_equal(out.terminated.numpy(), flat(rec["terminated"]))
    np.testing.assert_array_equal(out.truncated.numpy(), flat(rec["truncated"]))
    np.testing.assert_allclose(
        out.reward.numpy(),
        flat(rec["reward"]).astype(np.float32),
        rtol=EXACT_REWARD_RTOL.get(env_id, 0),
        atol=0,
    )
    np.testing.assert_allclose(
        out.final_obs.numpy(), flat(rec["obs"]), rtol=0, atol=EXACT_OBS_ATOL.get(env_id, 0)
    )
    rtol = EXACT_PHYSICS_RTOL.get(env_id, 0)
    physics = new_state.physics.numpy()
    np.testing.assert_allclose(
        physics[~done], flat(rec["post_physics"])[~done], rtol=rtol, atol=rtol
    )
    # SAME_STEP auto-reset: done rows hold a fresh state and report its observation.
    np.testing.assert_array_equal(new_state.elapsed.numpy(), flat(rec["elapsed"]))
    np.testing.assert_array_equal(out.obs.numpy(), env.observe(new_state).numpy())
    np.testing.assert_array_equal(out.obs.numpy()[~done], out.final_obs.numpy()[~done])


_REPLAY_DTYPES = {
    "obs": tf.float32,
    "final_obs": tf.float32,
    "reward": tf.float32,
    "terminated": tf.bool,
    "truncated": tf.bool,
    "physics": tf.float64,  # state after the step (and auto-reset), before re-syncing
    "elapsed": tf.int32,
}


def _replay_fn(env):
    """XLA-compiled replay of recorded actions: one tf.while_loop over T steps. After each
    step the physics of rows in `sync_mask[t]` is overwritten with `sync_physics[t]`."""

    @tf.function(jit_compile=True)
    def replay(state, actions, sync_mask, sync_physics):
        T = actions.shape[0]
        arrays = {k: tf.TensorArray(dtype, size=T) for k, dtype in _REPLAY_DTYPES.items()}

        def body(t, state, arrays):
            state, out = env.step(state, actions[t])
            values = out._asdict()
            values.update(physics=state.physics, elapsed=state.elapsed)
            arrays = {k: arrays[k].write(t, values[k]) for k in arrays}
            state = env.set_state(state, physics=sync_physics[t], mask=sync_mask[t])
            return t + 1, state, arrays

        _, _, arrays = tf.while_loop(lambda t, *_: t < T, body, (0, state, arrays))
        return {k: a.stack() for k, a in arrays.items()}

    return replay


@pytest.mark.parametrize("env_id", SUPPORTED_ENV_IDS)
def test_compiled_rollout_matches_gymnasium(env_id):
    rec = _record(env_id)
    T, R = rec["reward"].shape
    env = make_tf_env(env_id, n_envs=R)
    state = env.state_from_physics(rec["init_physics"])
    # Acrobot's reset observation is computed by NumPy in float32 from a float32 state
    # (Gymnasium stores it so); TF computes cos/sin in float64, so allow one float32 ulp.
    np.testing.assert_allclose(env.observe(state).numpy(), rec["init_obs"], rtol=0, atol=1e-7)

    done = rec["terminated"] | rec["truncated"]
    period = RESYNC_PERIOD.get(env_id, T + 1)
    sync_mask = done | (np.arange(1, T + 1) % period == 0)[:, None]
    got = _replay_fn(env)(state, rec["action"], sync_mask, rec["sync_physics"])
    got = {k: v.numpy() for k, v in got.items()}

    np.testing.assert_array_equal(got["terminated"], rec["terminated"])
    np.testing.assert_array_equal(got["truncated"], rec["truncated"])
    np.testing.assert_array_equal(got["elapsed"], rec["elapsed"])
    np.testing.assert_allclose(got["reward"], rec["reward"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got["final_obs"], rec["obs"], rtol=XLA_OBS_RTOL, atol=XLA_OBS_ATOL)
    np.testing.assert_allclose(
        got["physics"][~done],
        rec["post_physics"][~done],
        rtol=XLA_PHYSICS_TOL,
        atol=XLA_PHYSICS_TOL,
    )
    # Where not done, obs == final_obs; where done, obs is the reset observation of the
    # (TF-drawn) fresh state, which is what the state holds before re-syncing.
    np.testing.assert_array_equal(got["obs"][~done], got["final_obs"][~done])
    fresh_obs = env.dynamics.observe(tf.constant(got["physics"][done])).numpy()
    np.testing.assert_array_equal(got["obs"][done], fresh_obs)
    assert not np.allclose(got["obs"][done], got["final_obs"][done])


# Gymnasium's reset ranges per physics column, [low, high); low == high means a constant.
RESET_RANGES = {
    "CartPole-v1": ([-0.05] * 4, [0.05] * 4),
    "Acrobot-v1": ([-0.1] * 4, [0.1] * 4),
    "MountainCar-v0": ([-0.6, 0.0], [-0.4, 0.0]),
    "MountainCarContinuous-v0": ([-0.6, 0.0], [-0.4, 0.0]),
    "Pendulum-v1": ([-np.pi, -1.0], [np.pi, 1.0]),
}


@pytest.mark.parametrize("env_id", SUPPORTED_ENV_IDS)
def test_reset_distribution(env_id):
    n = 4000
    env = make_tf_env(env_id, n_envs=n)
    state = env.reset(seed=7)
    physics = state.physics.numpy()
    assert state.physics.dtype == tf.float64 and physics.shape == (n, env.state_dim)
    assert state.elapsed.dtype == tf.int32 and not state.elapsed.numpy().any()
    low, high = (np.array(b) for b in RESET_RANGES[env_id])
    if env_id == "Acrobot-v1":  # Gymnasium stores its reset draw as float32
        np.testing.assert_array_equal(physics, physics.astype(np.float32))
        high = high.astype(np.float32)  # float32 rounding may land on 0.1f > 0.1
    const = low == high
    np.testing.assert_array_equal(physics[:, const], np.broadcast_to(low[const], (n, const.sum())))
    span = (high - low)[~const]
    values = physics[:, ~const]
    assert (values >= low[~const]).all() and (values <= high[~const]).all()
    # Uniform: mean at the centre, std = span / sqrt(12) (both within a few standard errors).
    np.testing.assert_allclose(values.mean(0), ((high + low) / 2)[~const], atol=0.03 * span.max())
    np.testing.assert_allclose(values.std(0), span / np.sqrt(12), rtol=0.05)
    assert env.observation_space.contains(env.observe(state).numpy()[0])

    # Deterministic given the seed, and seed-dependent. Under XLA the key is identical and the
    # draws agree up to the last bit (XLA fuses low + span * u into one multiply-add).
    np.testing.assert_array_equal(env.reset(seed=7).physics.numpy(), physics)
    compiled = tf.function(env.reset, jit_compile=True)(tf.constant(7))
    np.testing.assert_allclose(compiled.physics.numpy(), physics, rtol=0, atol=2e-15)
    np.testing.assert_array_equal(compiled.key.numpy(), state.key.numpy())
    assert not np.array_equal(env.reset(seed=8).physics.numpy(), physics)


def test_auto_reset_same_step_semantics():
    n = 64
    env = make_tf_env("CartPole-v1", n_envs=n)
    state = env.reset(seed=3)
    action = np.ones(n, np.int32)
    seen_done = np.zeros(n, bool)
    for _ in range(40):  # always pushing right topples every pole within ~10-30 steps
        prev_elapsed = state.elapsed.numpy()
        stepped, _, _ = env.dynamics.transition(state.physics, action, state.elapsed)
        state, out = env.step(state, action)
        done = out.terminated.numpy() | out.truncated.numpy()
        final_obs, new_obs = out.final_obs.numpy(), out.obs.numpy()
        assert out.obs.dtype == tf.float32 and out.reward.dtype == tf.float32
        # final_obs is always the transition's own last observation ...
        np.testing.assert_array_equal(final_obs, env.dynamics.observe(stepped).numpy())
        np.testing.assert_array_equal(new_obs[~done], final_obs[~done])
        np.testing.assert_array_equal(state.elapsed.numpy()[~done], prev_elapsed[~done] + 1)
        if done.any():
            # ... which is outside the thresholds where the episode terminated, ...
            terminal = final_obs[done]
            assert ((np.abs(terminal[:, 0]) > 2.4) | (np.abs(terminal[:, 2]) > 0.2094)).all()
            # ... while obs and the new state are a fresh reset.
            assert (np.abs(new_obs[done]) <= 0.05).all()
            np.testing.assert_array_equal(new_obs, env.observe(state).numpy())
            assert not state.elapsed.numpy()[done].any()
            seen_done |= done
    assert seen_done.all()


@pytest.mark.parametrize("every", [16, 2], ids=["few_done", "many_done"])
def test_every_done_env_gets_its_own_reset_state(every):
    """Few dones draw only `reset_rows` fresh states, many draw N (see TFVecEnv._draw_resets):
    either way each done row gets a distinct in-range state, the others are untouched, and
    the XLA-compiled step takes the same branch (same key, same states up to the last bit)."""
    n = 64
    env = make_tf_env("CartPole-v1", n_envs=n)
    done = np.arange(n) % every == 0
    assert (done.sum() <= env.reset_rows) == (every == 16)
    physics = np.where(done[:, None], [2.39, 1.0, 0.0, 0.0], [0.01, 0.0, 0.0, 0.0])
    state = env.state_from_physics(physics, seed=11)
    action = np.ones(n, np.int32)
    stepped, _, _ = env.dynamics.transition(state.physics, action, state.elapsed)
    new, out = env.step(state, action)
    np.testing.assert_array_equal(out.terminated.numpy(), done)
    fresh = new.physics.numpy()[done]
    assert (np.abs(fresh) <= 0.05).all()
    assert len(np.unique(fresh, axis=0)) == done.sum()
    np.testing.assert_array_equal(new.physics.numpy()[~done], stepped.numpy()[~done])
    compiled, _ = tf.function(env.step, jit_compile=True)(state, action)
    np.testing.assert_array_equal(compiled.key.numpy(), new.key.numpy())
    np.testing.assert_allclose(compiled.physics.numpy(), new.physics.numpy(), rtol=0, atol=2e-15)


def test_time_limit_and_termination_can_coincide_like_gymnasium():
    """TimeLimit sets truncated whenever elapsed >= max_episode_steps, even on a terminating
    step, so both flags are True together -- checked against Gymnasium itself."""
    ref = gym.make("CartPole-v1")
    ref.reset(seed=0)
    ref.unwrapped.state = np.array([2.39, 1.0, 0.0, 0.0])  # leaves the track this step
    ref._elapsed_steps = 499
    _, reward, terminated, truncated, _ = ref.step(1)
    assert terminated and truncated

    env = make_tf_env("CartPole-v1", n_envs=3)
    physics = np.array([[2.39, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [2.39, 1.0, 0.0, 0.0]])
    state = env.state_from_physics(physics, elapsed=[499, 499, 10])
    state, out = env.step(state, np.ones(3, np.int32))
    np.testing.assert_array_equal(out.terminated.numpy(), [True, False, True])
    np.testing.assert_array_equal(out.truncated.numpy(), [True, True, False])
    np.testing.assert_array_equal(out.reward.numpy(), [reward] * 3)
    np.testing.assert_array_equal(state.elapsed.numpy(), [0, 0, 0])


@pytest.mark.parametrize("env_id", SUPPORTED_ENV_IDS)
def test_xla_while_loop_rollout(env_id):
    n, steps = 256, 100
    env = make_tf_env(env_id, n_envs=n)

    @tf.function(jit_compile=True)
    def rollout(seed):
        def body(t, state, obs_sum, reward_sum, n_done):
            key = tf.stack([tf.cast(seed, tf.int64), tf.cast(t, tf.int64)])
            state, out = env.step(state, env.random_action(key, scale=1.5))
            done = tf.logical_or(out.terminated, out.truncated)
            return (
                t + 1,
                state,
                obs_sum + tf.reduce_sum(tf.abs(out.obs)) + tf.reduce_sum(tf.abs(out.final_obs)),
                reward_sum + tf.reduce_sum(out.reward),
                n_done + tf.reduce_sum(tf.cast(done, tf.int32)),
            )

        init = (tf.constant(0), env.reset(seed), tf.constant(0.0), tf.constant(0.0), 0)
        _, state, obs_sum, reward_sum, n_done = tf.while_loop(lambda t, *_: t < steps, body, init)
        return state, obs_sum, reward_sum, n_done

    state, obs_sum, reward_sum, n_done = rollout(tf.constant(1))
    assert isinstance(state, EnvState)
    assert np.isfinite(obs_sum.numpy()) and np.isfinite(reward_sum.numpy())
    assert np.isfinite(state.physics.numpy()).all()
    assert (state.elapsed.numpy() <= env.max_episode_steps).all()
    if env_id == "CartPole-v1":  # random actions topple the pole within ~20 steps
        assert n_done.numpy() > n
    again = rollout(tf.constant(1))
    np.testing.assert_array_equal(again[0].physics.numpy(), state.physics.numpy())
