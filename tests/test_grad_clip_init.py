"""grad_clip = "global" (SB3's one clip over both networks' gradients) against
np.linalg.norm of the concatenated gradients, and ortho_init = false (PyTorch's nn.Linear
default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for kernels and biases)."""

import gymnasium as gym
import numpy as np
import pytest

from rlnorm.agent import A2CAgent
from rlnorm.config import Config

OBS = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)


def batch(n=16):
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(n, 3)).astype(np.float32)
    f32 = lambda x: x.astype(np.float32)  # noqa: E731
    return (
        obs,
        rng.integers(0, 2, n).astype(np.int32),
        f32(rng.normal(size=n) * 5),
        f32(rng.normal(size=n) * 50),
        np.ones(n, np.float32),
    )


@pytest.mark.parametrize("mode", ["global", "per_network"])
def test_clip_scales_the_gradients_the_optimizers_get(mode):
    config = Config(
        hidden_sizes=(8,), compile="eager", max_grad_norm=0.5, grad_clip=mode, diagnostics=False
    )
    agent = A2CAgent(config, OBS, gym.spaces.Discrete(2))
    data = batch()
    *_, grads = agent.loss_and_gradients(*data)
    flat = [np.asarray(g, np.float64).ravel() for g in grads]
    n_policy = len(agent.policy.trainable_weights)
    got = {}
    for name in ("policy", "value"):
        opt = getattr(agent, f"{name}_optimizer")
        apply = opt.apply
        opt.apply = lambda g, v, applied=None, name=name, apply=apply: (
            got.__setitem__(name, [np.asarray(x).ravel() for x in g]),
            apply(g, v, applied),
        )
    metrics = agent.train_step(*data)
    norms = {
        "policy": np.linalg.norm(np.concatenate(flat[:n_policy])),
        "value": np.linalg.norm(np.concatenate(flat[n_policy:])),
    }
    total = np.linalg.norm(np.concatenate(flat))
    assert total > 0.5  # the clip is active
    for name, part in (("policy", flat[:n_policy]), ("value", flat[n_policy:])):
        scale = 0.5 / max(total if mode == "global" else norms[name], 0.5)
        want = np.concatenate(part) * scale
        np.testing.assert_allclose(np.concatenate(got[name]), want, rtol=1e-5, atol=1e-8)
        assert float(metrics[f"{name}_grad_norm"]) == pytest.approx(norms[name], rel=1e-5)


def test_ortho_init_false_is_pytorchs_linear_default():
    config = Config(hidden_sizes=(256, 256), ortho_init=False, diagnostics=False)
    agent = A2CAgent(config, OBS, gym.spaces.Box(-1, 1, (2,), np.float32))
    for net in (agent.policy, agent.value):
        fan_in = 3
        for layer in [*net.dense_layers, net.head]:
            kernel, bias = (np.asarray(w) for w in (layer.kernel, layer.bias))
            bound = 1.0 / np.sqrt(fan_in)
            assert np.abs(kernel).max() <= bound and np.abs(bias).max() <= bound
            if kernel.size > 1000:  # U(-b, b) has std b / sqrt(3)
                assert kernel.std() == pytest.approx(bound / np.sqrt(3), rel=0.05)
            assert np.any(bias != 0)
            fan_in = kernel.shape[1]
    # The default stays orthogonal (SB3 / CleanRL): hidden kernels have orthonormal columns.
    ortho = A2CAgent(Config(hidden_sizes=(8,), diagnostics=False), OBS, gym.spaces.Discrete(2))
    k = np.asarray(ortho.policy.dense_layers[0].kernel)  # [3, 8]: orthonormal rows, gain sqrt 2
    np.testing.assert_allclose(k @ k.T, 2 * np.eye(3), atol=1e-5)
