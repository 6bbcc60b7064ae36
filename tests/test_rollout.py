"""Rollout collection across Gymnasium 1.x autoreset modes, checked on an env whose every
observation, reward and episode end is known (tests/fake_envs.py), with a stub agent whose
value is a known function of the observation, V(obs) = 10 * episode_id + step_index.

Expected targets are computed by walking the env's own specification forward from each
stored observation, never from the rollout arrays the code under test filled in.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import threading
import types
from dataclasses import fields

import fake_envs
import numpy as np
import pytest
import tensorflow as tf
from fake_envs import EPISODE_LENGTHS, TERMINATES, kind_of, reward_at

from rlnorm._fast import keep_thread_state
from rlnorm.envs import autoreset_mode_of, make_vec_env
from rlnorm.rollout import Rollout, RolloutCollector
from rlnorm.update import targets

ENV = f"{fake_envs.__name__}:{fake_envs.ENV_ID}"
N_ENVS, N_STEPS, N_ROLLOUTS, GAMMA = 3, 7, 2, 0.9


def v_of(episode_id, step_index) -> float:
    return 10.0 * episode_id + step_index


class StubAgent:
    """A2CAgent's acting interface (`act`, `predict_value`, their uncompiled `forward`, `sample`
    and `state_values`, `weights_read_once`, `obs_spec`, `config.compile`) in plain TF ops,
    so it also runs inside the collector's graph. Actions are 0 (the env ignores them); V(obs) is `v_of(obs)`."""

    obs_spec = tf.TensorSpec([None, 2], tf.float32, name="observation")
    config = types.SimpleNamespace(compile="graph", env_id="stub")

    def state_values(self, obs):
        obs = tf.cast(obs, tf.float32)
        return 10.0 * obs[:, 0] + obs[:, 1]

    def sample(self, obs):
        n = tf.shape(obs)[0:1]
        return tf.zeros(n, tf.int32), tf.zeros(n, tf.float32)

    def forward(self, obs):
        return *self.sample(obs), self.state_values(obs)

    act, predict_value = forward, state_values
    weights_read_once = contextlib.nullcontext  # no weights


def collect(mode: str):
    """N_ROLLOUTS consecutive rollouts (copied: the collector reuses its buffer) and the
    finished episodes the callback saw."""
    envs = make_vec_env(
        ENV,
        N_ENVS,
        seed=0,
        vectorization_mode="sync",
        autoreset_mode=mode,
        episode_statistics=False,
    )
    assert autoreset_mode_of(envs) == mode
    collector = RolloutCollector(envs, StubAgent(), N_STEPS, autoreset_mode_of(envs), seed=0)
    episodes = []

    def record(returns, lengths):
        episodes.extend(zip(returns, lengths))

    rollouts = [
        copy.deepcopy(collector.collect(i * N_STEPS * N_ENVS, record)) for i in range(N_ROLLOUTS)
    ]
    envs.close()
    return rollouts, episodes


@pytest.fixture(scope="module", params=["same_step", "next_step"])
def collected(request):
    return request.param, *collect(request.param)


def stacked(rollouts, name):
    return np.concatenate([getattr(r, name) for r in rollouts], axis=0)


def test_no_transition_crosses_an_episode_boundary(collected):
    mode, rollouts, _ = collected
    obs, valid = stacked(rollouts, "obs"), stacked(rollouts, "valid")
    term, trunc = stacked(rollouts, "terminated"), stacked(rollouts, "truncated")
    rewards = stacked(rollouts, "rewards")
    seen = {"terminated": 0, "self_truncated": 0, "time_limit": 0}
    for b in range(N_ENVS):
        for t in range(len(obs) - 2):
            if valid[t, b] == 0:
                continue
            e, k = obs[t, b]
            kind, length = kind_of(e), EPISODE_LENGTHS[kind_of(e)]
            assert rewards[t, b] == reward_at(k + 1)
            if k + 1 < length:  # mid-episode: the next stored step is the same episode's next
                assert not (term[t, b] or trunc[t, b])
                assert tuple(obs[t + 1, b]) == (e, k + 1) and valid[t + 1, b] == 1
                continue
            # The episode ends at this step, with the right flag.
            assert term[t, b] == TERMINATES[kind] and trunc[t, b] == (not TERMINATES[kind])
            seen[("terminated", "self_truncated", "time_limit")[kind]] += 1
            if mode == "same_step":  # next stored obs: the new episode's reset obs
                assert tuple(obs[t + 1, b]) == (e + 1, 0) and valid[t + 1, b] == 1
            else:  # NEXT_STEP: a reset step holding the final obs, masked, then the reset obs
                assert tuple(obs[t + 1, b]) == (e, k + 1) and valid[t + 1, b] == 0
                assert rewards[t + 1, b] == 0 and not (term[t + 1, b] or trunc[t + 1, b])
                assert tuple(obs[t + 2, b]) == (e + 1, 0) and valid[t + 2, b] == 1
    assert all(n > 0 for n in seen.values()), seen  # every kind of episode end was exercised


def test_only_next_step_reset_steps_are_invalid(collected):
    mode, rollouts, _ = collected
    valid = stacked(rollouts, "valid")
    dones = stacked(rollouts, "terminated") | stacked(rollouts, "truncated")
    if mode == "same_step":
        assert (valid == 1).all()
    else:
        expected = np.ones_like(valid)
        expected[1:][dones[:-1]] = 0  # the step after a done is the reset step
        np.testing.assert_array_equal(valid, expected)
        assert (valid == 0).sum() > 0


def test_episode_callback_gets_raw_returns_and_lengths(collected):
    _, rollouts, episodes = collected
    dones = stacked(rollouts, "terminated") | stacked(rollouts, "truncated")
    assert len(episodes) == dones.sum() > 0
    expected = {(fake_envs.episode_return(k), EPISODE_LENGTHS[k]) for k in range(3)}
    assert {(float(r), int(n)) for r, n in episodes} <= expected


def hand_gae(e, k, t, gamma, lam):
    """(advantage, return) of the stored step (e, k) at rollout slot t, by walking the env's
    specification forward: bootstrap V(final obs) on truncation, 0 on termination, V(obs after
    the rollout) at its end, no crossing into the next episode."""
    kind = kind_of(e)
    length = EPISODE_LENGTHS[kind]
    advantage = 0.0
    for i in range(N_STEPS - t):
        s = k + i
        r, v = reward_at(s + 1), v_of(e, s)
        if s + 1 == length:
            next_v = 0.0 if TERMINATES[kind] else v_of(e, length)  # V(final obs)
        else:
            next_v = v_of(e, s + 1)
        advantage += (gamma * lam) ** i * (r + gamma * next_v - v)
        if s + 1 == length:
            break
    return advantage, advantage + v_of(e, k)


def graph_targets(rollout, lam):
    """(advantages, returns) [T, B] as training computes them: `rlnorm.update.targets` on the
    rollout's tensors (TF ops, as inside the update graph)."""
    as_tensors = Rollout(*(tf.constant(getattr(rollout, f.name)) for f in fields(Rollout)))
    batch = targets(as_tensors, GAMMA, lam)
    shape = (N_STEPS, N_ENVS)
    return batch.advantages.numpy().reshape(shape), batch.returns.numpy().reshape(shape)


@pytest.mark.parametrize("lam", [0.0, 0.8, 1.0])
def test_gae_targets_equal_a_hand_calculation(collected, lam):
    _, rollouts, _ = collected
    checked = 0
    for r in rollouts:
        adv, ret = graph_targets(r, lam)
        for t in range(N_STEPS):
            for b in range(N_ENVS):
                if r.valid[t, b] == 0:
                    continue
                e, k = (int(x) for x in r.obs[t, b])
                want_adv, want_ret = hand_gae(e, k, t, GAMMA, lam)
                np.testing.assert_allclose(adv[t, b], want_adv, rtol=1e-5, atol=1e-3)
                np.testing.assert_allclose(ret[t, b], want_ret, rtol=1e-5, atol=1e-3)
                checked += 1
    assert checked >= N_STEPS * N_ENVS


def test_done_steps_bootstrap_only_on_truncation(collected):
    """One-step targets (lambda = 0) at every episode end, written out: truncated steps
    bootstrap from V(final obs) = 10 e + L, terminated ones from nothing."""
    _, rollouts, _ = collected
    checked = {True: 0, False: 0}
    for r in rollouts:
        _, ret = graph_targets(r, 0.0)
        for t, b in zip(*np.nonzero(r.dones())):
            e, k = (int(x) for x in r.obs[t, b])
            length = k + 1
            if r.terminated[t, b]:
                assert ret[t, b] == pytest.approx(reward_at(length))
            else:
                assert ret[t, b] == pytest.approx(reward_at(length) + GAMMA * v_of(e, length))
            checked[bool(r.terminated[t, b])] += 1
    assert checked[True] > 0 and checked[False] > 0


def test_box_actions_are_clipped_at_the_env_and_the_bounds_stay_visible():
    envs = make_vec_env("Pendulum-v1", 2, seed=0)
    space = envs.single_action_space
    assert np.all(space.low == -2.0) and np.all(space.high == 2.0)  # the agent sees the bounds
    np.testing.assert_array_equal(envs.actions(np.array([[5.0], [-0.5]])), [[2.0], [-0.5]])
    envs.close()


def test_the_env_callback_thread_keeps_its_python_thread_state():
    """`tf.numpy_function` runs the env callback on a TF thread whose Python thread state
    `PyGILState_Release` destroys after each call, unless `keep_thread_state` pinned it. A
    thread-local counter shows which: it survives between calls only on a kept state."""
    local = threading.local()
    calls = []

    def callback(x):
        keep_thread_state()
        local.n = getattr(local, "n", 0) + 1
        calls.append((threading.get_ident(), local.n))
        return x

    graph = tf.function(
        lambda x: tf.numpy_function(callback, [x], tf.float32, stateful=True),
        input_signature=[tf.TensorSpec([], tf.float32)],
        autograph=False,
    )
    for _ in range(40):  # more calls than TF has inter-op threads: some thread runs several
        graph(tf.constant(0.0))
    by_thread: dict[int, list[int]] = {}
    for thread, n in calls:
        by_thread.setdefault(thread, []).append(n)
    assert threading.get_ident() not in by_thread  # the callback ran on TF's threads
    assert max(len(ns) for ns in by_thread.values()) > 1
    for ns in by_thread.values():  # 1, 2, 3, ...: the thread-local dict was never lost
        assert ns == list(range(1, len(ns) + 1))


class CartPoleStubAgent(StubAgent):
    """StubAgent for CartPole's 4-dim observations: always pushes left (short episodes)."""

    obs_spec = tf.TensorSpec([None, 4], tf.float32, name="observation")

    def state_values(self, obs):
        return tf.reduce_sum(obs, axis=1)

    act, predict_value = StubAgent.forward, state_values


def test_numpy_vectorized_cartpole_is_collected_with_next_step_bookkeeping():
    """The default recipe's env, Gymnasium's NumPy-vectorized CartPole, autoresets NEXT_STEP
    whatever is asked. Checked against CartPole's own rules: reward 1 per real step, so every
    episode's return equals its length; the step after a done is a masked reset step with
    reward 0; the step after that starts from CartPole's reset state (every |component| <=
    0.05); episode lengths add up to the valid steps between resets."""
    n_envs, n_steps, n_rollouts = 4, 16, 4
    envs = make_vec_env("CartPole-v1", n_envs, seed=3, vectorization_mode="vector_entry_point")
    assert type(envs.unwrapped).__name__ == "CartPoleVectorEnv"
    assert autoreset_mode_of(envs) == "next_step"
    collector = RolloutCollector(envs, CartPoleStubAgent(), n_steps, "next_step", seed=3)
    episodes = []
    rollouts = [
        copy.deepcopy(
            collector.collect(i * n_steps * n_envs, lambda r, n: episodes.extend(zip(r, n)))
        )
        for i in range(n_rollouts)
    ]
    obs, valid, rewards = (stacked(rollouts, k) for k in ("obs", "valid", "rewards"))
    dones = stacked(rollouts, "terminated") | stacked(rollouts, "truncated")
    assert dones.sum() >= 2 * n_envs  # pushing left ends an episode in ~10 steps
    expected_valid = np.ones_like(valid)
    expected_valid[1:][dones[:-1]] = 0
    np.testing.assert_array_equal(valid, expected_valid)
    np.testing.assert_array_equal(rewards, valid)  # 1 per real step, 0 at reset steps
    starts = np.zeros_like(dones)
    starts[2:] = dones[:-2]
    assert np.abs(obs[starts]).max() <= 0.05  # CartPole's reset state
    assert len(episodes) == dones.sum()
    for returns, length in episodes:
        assert returns == length
    lengths = []  # episodes that began inside the collected steps, walked from the flags
    for b in range(n_envs):
        begun = np.flatnonzero(starts[:, b])
        ends = np.flatnonzero(dones[:, b])
        lengths += [int(e - s + 1) for s in begun for e in ends[ends >= s][:1]]
    reported = collections.Counter(int(n) for _, n in episodes)
    assert lengths and not collections.Counter(lengths) - reported  # a sub-multiset
    envs.close()


def test_a_long_rollout_in_a_while_loop_collects_what_the_unrolled_one_does(monkeypatch):
    """Rollouts longer than UNROLLED_STEPS run as a tf.while_loop: the same transitions, log
    probs and values, bit for bit, as the unrolled graph (real agent, CartPole, 20 steps)."""
    import gymnasium as gym

    import rlnorm.rollout as rollout_module
    from rlnorm.agent import A2CAgent
    from rlnorm.config import Config

    config = Config(env_id="CartPole-v1", n_envs=2, n_steps=20, hidden_sizes=(8,), seed=3)
    results = []
    for unrolled in (rollout_module.UNROLLED_STEPS, 64):
        monkeypatch.setattr(rollout_module, "UNROLLED_STEPS", unrolled)
        envs = gym.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync")
        agent = A2CAgent(config, envs.single_observation_space, envs.single_action_space)
        collector = RolloutCollector(envs, agent, 20, autoreset_mode_of(envs), seed=3)
        results.append([copy.deepcopy(collector.collect(40 * i, lambda *_: None)) for i in (0, 1)])
        envs.close()
    for looped, unrolled in zip(*results, strict=True):
        for f in fields(Rollout):
            np.testing.assert_array_equal(
                getattr(looped, f.name), getattr(unrolled, f.name), f.name
            )
