"""A2CAgent: acting vs learning agree (norm=none), no retracing, BatchNorm semantics, optimizers."""

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf

from rlnorm.agent import A2CAgent
from rlnorm.config import Config
from rlnorm.optimizers import Adam

OBS_SPACE = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
SPACES = {"discrete": gym.spaces.Discrete(3), "box": gym.spaces.Box(-1, 1, (2,), np.float32)}
OBS_MEAN, OBS_VAR = np.array([1.0, -2.0, 0.5]), np.array([4.0, 0.25, 1.0])


def config(**changes) -> Config:
    return Config(hidden_sizes=(8, 8), seed=5, diagnostics=False).replace(**changes)


def observations(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(OBS_MEAN, 2 * np.sqrt(OBS_VAR), size=(n, 3)).astype(np.float32)


def rollout_batch(agent, n: int, seed: int = 0):
    obs = observations(n, seed)
    actions, _, _ = agent.act(obs)
    rng = np.random.default_rng(seed + 100)
    f32 = lambda x: x.astype(np.float32)  # noqa: E731
    return obs, actions, f32(rng.normal(size=n)), f32(rng.normal(size=n)), np.ones(n, np.float32)


@pytest.fixture(scope="module", params=sorted(SPACES))
def graph_agent(request):
    """One compiled agent per action space, norm none, shared by the tests below (each traces
    a compiled function once; tracing is the expensive part)."""
    agent = A2CAgent(config(), OBS_SPACE, SPACES[request.param])
    agent.normalizer.set_state(100.0, OBS_MEAN, OBS_VAR)
    return agent


def test_act_log_probs_equal_those_recomputed_for_the_update(graph_agent):
    agent = graph_agent
    obs = observations(16, seed=1)
    actions, log_prob, value = agent.act(obs)
    recomputed = agent.policy.distribution(obs, training=True).log_prob(actions)
    np.testing.assert_allclose(recomputed.numpy(), log_prob.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(agent.value.value(obs, training=True), value, rtol=1e-6, atol=1e-6)
    # train_step's own forward pass (before it moves the weights) reports the same mean.
    n = len(obs)
    ones = np.ones(n, np.float32)
    metrics = agent.train_step(obs, actions, ones, ones, ones)
    np.testing.assert_allclose(metrics["log_prob"].numpy(), np.mean(log_prob), rtol=1e-6)


def test_no_retracing_for_new_batch_sizes(graph_agent):
    agent = graph_agent
    for n in (8, 8, 3, 1, 32):
        agent.act(observations(n, seed=n))
        agent.predict_value(observations(n, seed=n))
        agent.act_deterministic(observations(n, seed=n))
    for n in (8, 8, 6, 40):
        agent.train_step(*rollout_batch(agent, n, seed=n))
    counts = agent.trace_counts()
    assert counts["act"] == counts["predict_value"] == counts["train_step"] == 1, counts
    assert all(c <= 1 for c in counts.values()), counts
    assert agent.act_deterministic.experimental_get_tracing_count() == 1


def test_compiled_normalizer_update_matches_numpy_and_skips_empty_batches():
    agent = A2CAgent(config(), OBS_SPACE, SPACES["discrete"])
    data = observations(30, seed=7)
    for batch in (data[:1], data[1:12], data[12:12], data[12:]):  # sizes 1, 11, 0, 18
        agent.update_normalizer(batch)
    norm = agent.normalizer
    assert norm.count.numpy() == 30
    np.testing.assert_allclose(norm.mean.numpy(), data.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(norm.var.numpy(), data.astype(np.float64).var(0), rtol=1e-10)
    assert agent.trace_counts()["update_normalizer"] == 1
    norm.frozen = True
    agent.update_normalizer(observations(5, seed=8))
    assert norm.count.numpy() == 30


def test_batchnorm_train_and_act_log_probs_differ():
    """The pitfall the batch_renorm / batch_moving variants exist for: with plain BN the update
    (batch statistics) optimizes another policy than the one that acted (moving statistics)."""
    agent = A2CAgent(config(policy_norm="batch", compile="eager"), OBS_SPACE, SPACES["discrete"])
    obs = observations(16)
    actions, log_prob, _ = agent.act(obs)
    recomputed = agent.policy.distribution(obs, training=True).log_prob(actions)
    assert np.max(np.abs(recomputed.numpy() - log_prob.numpy())) > 1e-4


# -- BatchNorm semantics on an agent --------------------------------------------------------------
def batchnorm_layers(agent):
    return [layer for net in (agent.policy, agent.value) for layer in net.norm_layers]


def moving_stats(agent):
    return [
        (layer.moving_mean.numpy().copy(), layer.moving_variance.numpy().copy())
        for layer in batchnorm_layers(agent)
    ]


@pytest.fixture(scope="module")
def batchnorm_agent():
    """A compiled agent with plain BatchNorm in both networks."""
    agent = A2CAgent(
        config(policy_norm="batch", value_norm="batch", bn_momentum=0.9),
        OBS_SPACE,
        SPACES["discrete"],
    )
    agent.normalizer.set_state(100.0, OBS_MEAN, OBS_VAR)
    return agent


def test_acting_leaves_batchnorm_moving_statistics_unchanged(batchnorm_agent):
    agent = batchnorm_agent
    before = moving_stats(agent)
    for i in range(200):
        agent.act(observations(8, seed=i))
    agent.predict_value(observations(8))
    for (m0, v0), (m1, v1) in zip(before, moving_stats(agent)):
        np.testing.assert_array_equal(m1, m0)
        np.testing.assert_array_equal(v1, v0)


def test_weights_read_once_gives_the_same_bits_and_the_current_weights():
    """The rollout reads every weight, moving statistic and the normalizer's 1/std once
    (`weights_read_once`): inside it the forward passes must equal, bit for bit, the ones that
    read the variables at every call, and a later block must see weights changed since."""
    agent = A2CAgent(config(policy_norm="batch", value_norm="layer"), OBS_SPACE, SPACES["box"])
    agent.normalizer.set_state(100.0, OBS_MEAN, OBS_VAR)
    obs = observations(8, seed=4)
    rng = np.random.default_rng(0)

    def perturb():  # every variable, moving statistics and log_std included
        for net in (agent.policy, agent.value):
            for w in net.trainable_weights + net.non_trainable_weights:
                w.assign(w.numpy() + rng.normal(0, 0.1, w.shape).astype(np.float32) ** 2)
        agent.normalizer.set_state(50.0, OBS_MEAN + 1.0, OBS_VAR * 3.0)

    def forward():
        dist = agent.policy.distribution(obs, training=False)
        return [dist.mean.numpy(), dist.log_std.numpy(), agent.state_values(obs).numpy()]

    for _ in range(2):
        perturb()
        expected = forward()
        with agent.weights_read_once():
            got = forward()
        for e, g in zip(expected, got, strict=True):
            np.testing.assert_array_equal(g, e)
    assert agent.normalizer._read_once is None  # the scope is gone after the block


def test_weights_read_once_reads_each_variable_once_however_many_calls():
    """In a traced block the number of variable reads must not grow with the number of forward
    passes (Keras would read every weight at every call: 3 more passes, 3x the reads)."""
    agent = A2CAgent(config(policy_norm="batch", value_norm="layer"), OBS_SPACE, SPACES["box"])
    n_variables = sum(
        len(net.trainable_weights + net.non_trainable_weights)
        for net in (agent.policy, agent.value)
    )

    def reads(n_calls: int) -> int:
        def block(obs):
            with agent.weights_read_once():
                return [agent.sample(obs)[1] + agent.state_values(obs) for _ in range(n_calls)]

        graph = tf.function(block).get_concrete_function(tf.TensorSpec([4, 3])).graph
        return sum(op.type == "ReadVariableOp" for op in graph.get_operations())

    assert reads(1) == reads(4)
    assert n_variables <= reads(1) <= n_variables + 3  # + the normalizer's statistics


def test_one_train_step_moves_batchnorm_statistics_one_ema_step(batchnorm_agent):
    agent = batchnorm_agent
    batch = rollout_batch(agent, 24, seed=3)
    z = np.clip((batch[0] - OBS_MEAN) / np.sqrt(OBS_VAR + 1e-8), -10, 10).astype(np.float64)
    expected = []
    for net in (agent.policy, agent.value):
        dense, bn = net.dense_layers[0], net.norm_layers[0]
        pre = z @ dense.kernel.numpy() + dense.bias.numpy()  # first layer's pre-norm, old weights
        m, v = bn.moving_mean.numpy(), bn.moving_variance.numpy()
        expected.append((0.9 * m + 0.1 * pre.mean(0), 0.9 * v + 0.1 * pre.var(0)))
    before = moving_stats(agent)
    agent.train_step(*batch)
    after = moving_stats(agent)
    for (m0, v0), (m1, v1) in zip(before, after):
        assert np.all(m1 != m0) and np.all(v1 != v0)
    for (m1, v1), (me, ve) in zip((after[0], after[2]), expected):  # layer 0 of each network
        np.testing.assert_allclose(m1, me, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(v1, ve, rtol=1e-5, atol=1e-6)


def test_batch_of_one_is_collapsed_only_in_training_mode():
    agent = A2CAgent(config(policy_norm="batch", compile="eager"), OBS_SPACE, SPACES["discrete"])
    bn = agent.policy.norm_layers[0]
    rng = np.random.default_rng(4)
    bn.moving_mean.assign(rng.normal(size=8))
    bn.moving_variance.assign(rng.uniform(0.5, 2.0, size=8))
    bn.beta.assign(rng.normal(size=8))
    one_a, one_b = observations(1, seed=5), observations(1, seed=6)

    hidden_inf = []
    for obs in (one_a, one_b):
        inference = {}
        agent.policy(obs, training=False, record=inference)
        pre = inference["layer0/pre_norm"].numpy()
        expected = (pre - bn.moving_mean.numpy()) / np.sqrt(bn.moving_variance.numpy() + 1e-3)
        expected = expected * bn.gamma.numpy() + bn.beta.numpy()
        np.testing.assert_allclose(inference["layer0/post_norm"], expected, rtol=1e-5, atol=1e-5)
        assert not np.allclose(inference["layer0/post_norm"], bn.beta.numpy())
        hidden_inf.append(inference["layer1/out"].numpy())
    assert np.max(np.abs(hidden_inf[0] - hidden_inf[1])) > 0.05

    # Training mode normalizes with the batch's own statistics: for one sample x - mean(x) = 0,
    # so every feature becomes beta, and the policy no longer depends on the observation.
    # (Keras folds the norm into x * s - mean * s with s = 1/sqrt(eps) ~ 32: float32 rounding.)
    hidden_train = []
    for obs in (one_a, one_b):
        training = {}
        agent.policy(obs, training=True, record=training)
        np.testing.assert_allclose(training["layer0/post_norm"][0], bn.beta.numpy(), atol=1e-4)
        hidden_train.append(training["layer1/out"].numpy())
    np.testing.assert_allclose(hidden_train[0], hidden_train[1], atol=1e-4)


# -- optimizers ----------------------------------------------------------------------------------
def test_adam_option_builds_and_takes_a_bounded_first_step():
    # value_target_norm none: PopArt rescales the value head after the step, by more than lr.
    adam = config(optimizer="adam", compile="eager", value_target_norm="none")
    agent = A2CAgent(adam, OBS_SPACE, SPACES["box"])
    assert isinstance(agent.policy_optimizer, Adam)
    assert agent.policy_optimizer is not agent.value_optimizer
    weights = agent.policy.trainable_weights + agent.value.trainable_weights
    before = [w.numpy().copy() for w in weights]
    metrics = agent.train_step(*rollout_batch(agent, 10))
    assert bool(metrics["update_applied"])
    steps = [np.abs(w.numpy() - b) for w, b in zip(weights, before)]
    # Adam's first step from zero moments is lr * g / (|g| + eps): at most lr per entry.
    lr = agent.config.learning_rate
    assert max(float(s.max()) for s in steps) <= lr * (1 + 1e-5)
    assert all(float(s.max()) > 0.5 * lr for s in steps)
    assert int(agent.policy_optimizer.iterations.numpy()) == 1


@pytest.mark.parametrize("norm", ["batch", "batch_renorm", "batch_moving"])
def test_masked_steps_stay_out_of_batchnorm_statistics(norm):
    """A masked row (NEXT_STEP reset step, dropped step) must not move BatchNorm's moving
    statistics: an extreme value in it changes nothing, while the same value in a valid row
    does (so the check can fail)."""

    def moving_mean_after_step(extreme: float, masked: bool) -> np.ndarray:
        agent = A2CAgent(
            Config(policy_norm=norm, value_norm=norm),
            gym.spaces.Box(-np.inf, np.inf, (4,), np.float32),
            gym.spaces.Discrete(2),
        )
        obs = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
        obs[3] = extreme
        valid = np.ones(10, np.float32)
        if masked:
            valid[3] = 0.0
        agent.train_step(obs, np.zeros(10, np.int32), valid, valid, valid)
        return agent.policy.norm_layers[0].moving_mean.numpy()

    np.testing.assert_array_equal(
        moving_mean_after_step(0.0, True), moving_mean_after_step(1e3, True)
    )
    assert (
        np.abs(moving_mean_after_step(0.0, False) - moving_mean_after_step(1e3, False)).max() > 1e-3
    )
