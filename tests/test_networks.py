"""Policy and value networks: layer order, widths, initialization, separation, head shapes."""

import gymnasium as gym
import numpy as np
import pytest

from rlnorm.networks import build_networks, make_norm_layer

OBS_SPACE = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
NORMS = ["none", "batch", "layer"]


def randomize_norm_layers(net, rng):
    """Non-trivial gamma/beta (and moving statistics), so the check below sees each term."""
    for layer in net.norm_layers:
        if layer is None:
            continue
        layer.gamma.assign(rng.uniform(0.5, 2.0, layer.gamma.shape))
        layer.beta.assign(rng.normal(size=layer.beta.shape))
        if hasattr(layer, "moving_mean"):
            layer.moving_mean.assign(rng.normal(size=layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.2, 3.0, layer.moving_variance.shape))


def numpy_norm(layer, pre, training):
    """The norm layer's output, from its weights and the layer definitions (float64)."""
    gamma, beta = layer.gamma.numpy().astype(np.float64), layer.beta.numpy().astype(np.float64)
    if hasattr(layer, "moving_mean"):  # BatchNormalization
        if training:
            mu, var = pre.mean(axis=0), pre.var(axis=0)
        else:
            mu, var = layer.moving_mean.numpy(), layer.moving_variance.numpy()
    else:  # LayerNormalization: per sample, over features
        mu, var = pre.mean(axis=1, keepdims=True), pre.var(axis=1, keepdims=True)
    return (pre - mu) / np.sqrt(var + layer.epsilon) * gamma + beta


@pytest.mark.parametrize("norm", NORMS)
def test_layer_order_is_dense_norm_activation(tiny_config, action_space, norm):
    config = tiny_config(hidden_sizes=(5, 4), policy_norm=norm, value_norm=norm)
    normalizer, policy, value = build_networks(config, OBS_SPACE, action_space)
    rng = np.random.default_rng(0)
    mean, var = rng.normal(size=3), rng.uniform(0.5, 2.0, size=3)
    normalizer.set_state(10.0, mean, var)
    obs = rng.normal(mean, 2.0, size=(6, 3)).astype(np.float32)
    for net in (policy, value):
        randomize_norm_layers(net, rng)
        for training in (False, True) if norm == "batch" else (False,):
            record = {}
            out = net(obs, training=training, record=record).numpy()
            x = np.clip((obs - mean) / np.sqrt(var + 1e-8), -10, 10)
            np.testing.assert_allclose(record["input"].numpy(), x, rtol=1e-6, atol=1e-6)
            for i, (dense, norm_layer) in enumerate(zip(net.dense_layers, net.norm_layers)):
                pre = x @ dense.kernel.numpy() + dense.bias.numpy()
                np.testing.assert_allclose(record[f"layer{i}/pre_norm"], pre, atol=1e-5)
                if norm == "none":
                    assert norm_layer is None and f"layer{i}/post_norm" not in record
                    post = pre
                else:
                    post = numpy_norm(norm_layer, pre, training)
                    np.testing.assert_allclose(record[f"layer{i}/post_norm"], post, atol=1e-4)
                x = np.tanh(post)
                np.testing.assert_allclose(record[f"layer{i}/out"], x, atol=1e-5)
            head = x @ net.head.kernel.numpy() + net.head.bias.numpy()
            np.testing.assert_allclose(out, head, atol=1e-5)


def test_widths_and_activation_come_from_config(tiny_config):
    config = tiny_config(hidden_sizes=(5, 7, 3), activation="relu")
    normalizer, policy, value = build_networks(config, OBS_SPACE, gym.spaces.Discrete(4))
    for net, out_dim in ((policy, 4), (value, 1)):
        shapes = [tuple(d.kernel.shape) for d in net.dense_layers]
        assert shapes == [(3, 5), (5, 7), (7, 3)]
        assert tuple(net.head.kernel.shape) == (3, out_dim)
        record = {}
        net(np.random.default_rng(1).normal(size=(8, 3)).astype(np.float32), record=record)
        for i in range(3):
            pre = record[f"layer{i}/pre_norm"].numpy()
            np.testing.assert_array_equal(record[f"layer{i}/out"].numpy(), np.maximum(pre, 0.0))
            assert np.any(pre < 0)  # relu actually clipped something


def gram_of_smaller_side(kernel: np.ndarray) -> np.ndarray:
    """W W^T when fan_in <= fan_out (orthonormal rows), else W^T W (orthonormal columns)."""
    fan_in, fan_out = kernel.shape
    return kernel @ kernel.T if fan_in <= fan_out else kernel.T @ kernel


def test_orthogonal_init_gains_and_zero_biases(tiny_config, action_space):
    config = tiny_config(hidden_sizes=(64, 64))
    _, policy, value = build_networks(config, OBS_SPACE, action_space)
    for net, head_gain in ((policy, 0.01), (value, 1.0)):
        kernels = [(d, np.sqrt(2.0)) for d in net.dense_layers] + [(net.head, head_gain)]
        for layer, gain in kernels:
            k = layer.kernel.numpy().astype(np.float64)
            gram = gram_of_smaller_side(k)
            np.testing.assert_allclose(gram / gain**2, np.eye(len(gram)), atol=2e-5)
            np.testing.assert_array_equal(layer.bias.numpy(), 0.0)
    # The first hidden kernel is [3, 64]: fan_in < fan_out, so rows are orthonormal.
    first = policy.dense_layers[0].kernel.numpy()
    np.testing.assert_allclose(first @ first.T, 2.0 * np.eye(3), atol=2e-5)


@pytest.mark.parametrize("norm", NORMS)
def test_policy_and_value_never_share_a_weight(tiny_config, action_space, norm):
    config = tiny_config(hidden_sizes=(6, 6), policy_norm=norm, value_norm=norm)
    normalizer, policy, value = build_networks(config, OBS_SPACE, action_space)
    p_vars = policy.trainable_weights + policy.non_trainable_weights
    v_vars = value.trainable_weights + value.non_trainable_weights
    assert not {id(v) for v in p_vars} & {id(v) for v in v_vars}
    norm_vars = {id(normalizer.count), id(normalizer.mean), id(normalizer.var)}
    assert not norm_vars & {id(v) for v in p_vars + v_vars}
    # Not even equal values: the two networks are initialized from different seeds.
    for p, v in zip(policy.dense_layers, value.dense_layers):
        assert not np.allclose(p.kernel.numpy(), v.kernel.numpy())
    if norm == "batch":  # moving mean and variance per layer; the value net also holds PopArt's
        assert len(policy.non_trainable_weights) == 4
        assert len(value.non_trainable_weights) == 4 + len(value.popart.variables_list)


def test_gaussian_head_log_std_init(tiny_config):
    config = tiny_config(log_std_init=-0.7)
    _, policy, _ = build_networks(config, OBS_SPACE, gym.spaces.Box(-1, 1, (2,), np.float32))
    np.testing.assert_allclose(policy.log_std.numpy(), [-0.7, -0.7], rtol=1e-6)
    assert any(w is policy.log_std for w in policy.trainable_weights)
    _, discrete, _ = build_networks(config, OBS_SPACE, gym.spaces.Discrete(3))
    assert discrete.log_std is None


@pytest.mark.parametrize(
    ("space", "fix"),
    [
        (gym.spaces.MultiDiscrete([3, 2]), "Fix: flatten it to one Discrete"),
        (gym.spaces.MultiBinary(3), "Fix: map it to a Discrete"),
        (gym.spaces.Box(-1, 1, (2, 2), np.float32), "Fix: use a Discrete or a 1-D Box"),
    ],
    ids=["multidiscrete", "multibinary", "box2d"],
)
def test_unsupported_action_spaces_raise_naming_the_fix(tiny_config, space, fix):
    with pytest.raises(ValueError, match=fix) as info:
        build_networks(tiny_config(), OBS_SPACE, space)
    assert type(space).__name__ in str(info.value) and "ActionWrapper" in str(info.value)


def test_unknown_norm_names_the_allowed_ones():
    with pytest.raises(ValueError, match="none, layer, batch"):
        make_norm_layer("group", "x")
