"""PopArt (value_target_norm = "popart"): the value head's unnormalized outputs are preserved
across statistics updates, the statistics equal NumPy's over every kept target, the value loss
is in normalized units, and both env adapters train with it and checkpoint its statistics."""

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from test_train import checkpoint_value

from rlnorm.agent import A2CAgent
from rlnorm.checkpoint import Checkpointer
from rlnorm.config import Config
from rlnorm.loop import train

OBS = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
pytestmark = pytest.mark.filterwarnings("ignore:rlnorm scale alarm")  # tiny runs: expected


def agent(**changes):
    config = Config(hidden_sizes=(8, 8), value_target_norm="popart", diagnostics=False)
    return A2CAgent(config.replace(**changes), OBS, gym.spaces.Discrete(2))


def test_outputs_are_preserved_and_statistics_exact_over_masked_batches():
    a = agent()
    rng = np.random.default_rng(0)
    head = a.value.head
    head.kernel.assign(rng.normal(size=head.kernel.shape).astype(np.float32))
    head.bias.assign(np.array([0.3], np.float32))
    obs = rng.normal(size=(64, 3)).astype(np.float32)
    kept = []
    for scale, offset in ((1.0, 0.0), (1e3, -500.0), (1e-2, 7.0), (1e4, 1e4)):
        targets = (rng.normal(size=40) * scale + offset).astype(np.float32)
        keep = rng.random(40) < 0.8
        before = a.value.value(obs).numpy()
        a.popart.update(targets, keep, head)
        after = a.value.value(obs).numpy()
        np.testing.assert_allclose(after, before, rtol=2e-5, atol=1e-4 * np.abs(before).max())
        kept.append(targets[keep].astype(np.float64))
        every = np.concatenate(kept)
        stats = a.popart.state_dict()
        assert stats["count"] == every.size
        np.testing.assert_allclose(stats["mean"], every.mean(), rtol=1e-12)
        np.testing.assert_allclose(stats["var"], every.var(), rtol=1e-10)
        assert stats["std"] == pytest.approx(np.clip(every.std(), 1e-4, 1e6), rel=1e-12)
    # A batch with no kept row changes neither the statistics nor the outputs.
    a.popart.update(np.full(40, 1e9, np.float32), np.zeros(40, bool), head)
    assert a.popart.state_dict() == stats
    np.testing.assert_allclose(a.value.value(obs).numpy(), after, rtol=1e-6)


def test_value_loss_is_in_normalized_units_and_values_are_not():
    a = agent(compile="eager")
    a.popart.count.assign(50.0)
    a.popart.mean.assign(-120.0)
    a.popart.var.assign(900.0)
    rng = np.random.default_rng(1)
    n = 24
    obs = rng.normal(size=(n, 3)).astype(np.float32)
    returns = (rng.normal(size=n) * 30 - 120).astype(np.float32)
    ones = np.ones(n, np.float32)
    losses, _, values, _, _ = a.loss_and_gradients(obs, np.zeros(n, np.int32), ones, returns, ones)
    head = a.value.head_values(obs, training=True).numpy().astype(np.float64)
    want = np.mean(((returns - -120.0) / 30.0 - head) ** 2)
    assert float(losses["value_loss"]) == pytest.approx(want, rel=1e-5)
    np.testing.assert_allclose(values.numpy(), head * 30.0 - 120.0, rtol=1e-5)


def test_policy_gradient_uses_advantages_in_normalized_units():
    """-mean(A / std * log pi(a|s)): the policy loss (and so its step) is the same whether the
    rewards, hence A and std, are scaled by 1 or by 1000."""
    rng = np.random.default_rng(2)
    n = 24
    obs = rng.normal(size=(n, 3)).astype(np.float32)
    actions = rng.integers(0, 2, n).astype(np.int32)
    adv = rng.normal(size=n).astype(np.float32) * 30.0
    ones = np.ones(n, np.float32)
    losses = {}
    for scale in (1.0, 1000.0):
        a = agent(compile="eager")
        a.popart.count.assign(50.0)
        a.popart.var.assign(900.0 * scale**2)
        out, _, _, log_prob, _ = a.loss_and_gradients(obs, actions, adv * scale, adv * scale, ones)
        want = -np.mean(adv * scale / (30.0 * scale) * log_prob.numpy().astype(np.float64))
        assert float(out["policy_loss"]) == pytest.approx(want, rel=1e-5)
        losses[scale] = float(out["policy_loss"])
    assert losses[1000.0] == pytest.approx(losses[1.0], rel=1e-5)


@pytest.mark.parametrize("backend", ["python", "compiled"])
def test_both_adapters_train_and_checkpoint_the_statistics(tmp_path, backend):
    config = Config(
        backend=backend,
        compile="graph",
        n_envs=4,
        n_steps=8,
        total_steps=1024,
        hidden_sizes=(16,),
        value_target_norm="popart",
        norm_reward=backend == "compiled",
        log_every=512,
        checkpoint_every=512,
        diagnostics_every=512,
        diagnostics=backend == "python",  # its pass restores the statistics it reads
        runs_root=str(tmp_path),
    )
    trained = {}
    summary = train(config, quiet=True, agent_callback=lambda a, _: trained.update(a=a))
    stats = trained["a"].popart.state_dict()
    assert stats["count"] == 1024  # every step of both adapters is a valid target here
    run_dir = Path(summary["run_dir"])
    assert checkpoint_value(run_dir, "value/popart/mean") == stats["mean"]
    fresh = A2CAgent(config, trained["a"].observation_space, trained["a"].action_space)
    Checkpointer(run_dir / "checkpoints", fresh).restore(partial=True)
    assert fresh.popart.state_dict() == stats
    np.testing.assert_array_equal(fresh.value.head.kernel.numpy(), trained["a"].value.head.kernel)


def test_the_first_batch_sets_the_statistics_without_rescaling_the_head():
    a = agent(compile="eager")
    head = a.value.head
    kernel, bias = head.kernel.numpy().copy(), head.bias.numpy().copy()
    returns = np.array([3.0, 5.0, 100.0, 7.0], np.float32)
    keep = np.array([True, True, False, True])
    assert bool(a.popart.initialize(returns, keep))
    s = a.popart.state_dict()
    assert (s["count"], s["mean"]) == (3.0, pytest.approx(5.0))
    assert s["var"] == pytest.approx(np.var([3.0, 5.0, 7.0]))
    np.testing.assert_array_equal(head.kernel.numpy(), kernel)
    np.testing.assert_array_equal(head.bias.numpy(), bias)
    assert not bool(a.popart.initialize(returns * 10, keep))  # only while empty
    assert a.popart.state_dict() == s


def test_updates_are_the_same_at_any_reward_scale():
    """The whole update under PopArt is invariant to the reward scale: two identical agents fed
    the same observations and actions, advantages and returns x1 and x1000, take the same
    steps (policy and value weights, the value head in normalized units) for several updates."""
    rng = np.random.default_rng(3)
    n = 32
    batches = [
        (
            rng.normal(size=(n, 3)).astype(np.float32),
            rng.integers(0, 2, n).astype(np.int32),
            rng.normal(size=n).astype(np.float32) * 4.0,
            rng.normal(size=n).astype(np.float32) * 20.0 + 50.0,
        )
        for _ in range(4)
    ]
    ones = np.ones(n, np.float32)
    weights = {}
    for scale in (1.0, 1000.0):
        a = agent(compile="eager", norm_obs=False)
        for obs, actions, adv, ret in batches:
            assert bool(
                a.gradient_step(obs, actions, adv * scale, ret * scale, ones)["update_applied"]
            )
        weights[scale] = [w.numpy() for w in a.policy.trainable_weights + a.value.trainable_weights]
        assert a.popart.state_dict()["count"] == 4 * n
    for w1, w1000 in zip(weights[1.0], weights[1000.0], strict=True):
        np.testing.assert_allclose(w1000, w1, rtol=1e-4, atol=1e-6)
