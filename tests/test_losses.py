"""The A2C loss and one train_step, against a NumPy forward pass with constant weights.

The agent's weights are overwritten with known constants; NumPy (float64) recomputes the
forward pass, the losses and, by central finite differences, every gradient. Nothing in the
expected numbers comes from rlnorm's code.
"""

import math

import gymnasium as gym
import numpy as np
import pytest
from scipy.special import logsumexp

from rlnorm.agent import A2CAgent

OBS_SPACE = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
OBS_MEAN, OBS_VAR = np.array([0.5, -1.0, 2.0]), np.array([0.25, 4.0, 1.0])
LR, RHO, OPT_EPS, MAX_GRAD_NORM, ENT_COEF, VF_COEF = 0.1, 0.99, 1.0, 0.05, 0.05, 0.5


def loss_config(tiny_config, **changes):
    # optimizer_eps = 1 makes the first RMSprop step ~ lr * g, so it shows the gradient's scale
    # (with eps ~ 0 it would be lr * sign(g) / sqrt(1 - rho) and hide the clip).
    values = dict(
        hidden_sizes=(4,),
        ent_coef=ENT_COEF,
        vf_coef=VF_COEF,
        max_grad_norm=MAX_GRAD_NORM,
        learning_rate=LR,
        rms_decay=RHO,
        optimizer_eps=OPT_EPS,
        value_target_norm="none",  # SB3's raw-target loss, the NumPy reference below
    )
    values.update(changes)
    return tiny_config(**values)


def constant_params(discrete: bool, n_out: int) -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(42)
    p = {
        "policy": {
            "w1": rng.normal(0, 0.8, (3, 4)),
            "b1": rng.normal(0, 0.3, 4),
            "w2": rng.normal(0, 0.8, (4, n_out)),
            "b2": rng.normal(0, 0.3, n_out),
        },
        "value": {
            "w1": rng.normal(0, 0.8, (3, 4)),
            "b1": rng.normal(0, 0.3, 4),
            "w2": rng.normal(0, 0.8, (4, 1)),
            "b2": rng.normal(0, 0.3, 1),
        },
    }
    if not discrete:
        p["policy"]["log_std"] = np.array([-0.4, 0.3])
    # float32 values, held as float64: exactly what the agent's float32 variables will hold.
    return {
        net: {k: v.astype(np.float32).astype(np.float64) for k, v in d.items()}
        for net, d in p.items()
    }


def variables(agent) -> dict[str, dict]:
    """The agent's variables under the same names as `constant_params`."""
    out = {}
    for name, net in (("policy", agent.policy), ("value", agent.value)):
        d = {
            "w1": net.dense_layers[0].kernel,
            "b1": net.dense_layers[0].bias,
            "w2": net.head.kernel,
            "b2": net.head.bias,
        }
        if net.log_std is not None:
            d["log_std"] = net.log_std
        out[name] = d
    return out


def make_agent(config, action_space):
    agent = A2CAgent(config, OBS_SPACE, action_space)
    params = constant_params(isinstance(action_space, gym.spaces.Discrete), n_out(action_space))
    for net, d in variables(agent).items():
        for key, var in d.items():
            var.assign(params[net][key])
    agent.normalizer.set_state(50.0, OBS_MEAN, OBS_VAR)
    return agent, params


def n_out(space):
    return int(space.n) if isinstance(space, gym.spaces.Discrete) else int(space.shape[0])


def make_batch(action_space, seed=0, n=6):
    rng = np.random.default_rng(seed)
    obs = rng.normal(OBS_MEAN, 2 * np.sqrt(OBS_VAR), size=(n, 3)).astype(np.float32)
    if isinstance(action_space, gym.spaces.Discrete):
        actions = rng.integers(0, action_space.n, size=n).astype(np.int32)
    else:
        actions = rng.normal(0, 1, size=(n, action_space.shape[0])).astype(np.float32)
    advantages = rng.normal(0.3, 1.5, size=n).astype(np.float32)
    returns = rng.normal(1.0, 2.0, size=n).astype(np.float32)
    valid = np.ones(n, np.float32)
    valid[2] = 0.0
    return obs, actions, advantages, returns, valid


# -- the NumPy reference ------------------------------------------------------------------------
def np_forward(params, obs, actions):
    """log pi(a|s) [N], entropy [N], V(s) [N] in float64."""
    z = np.clip((obs - OBS_MEAN) / np.sqrt(OBS_VAR + 1e-8), -10, 10).astype(np.float32)
    z = z.astype(np.float64)
    p, v = params["policy"], params["value"]
    out = np.tanh(z @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
    if "log_std" in p:
        ls = p["log_std"]
        lp = np.sum(
            -0.5 * ((actions - out) / np.exp(ls)) ** 2 - ls - 0.5 * math.log(2 * math.pi), 1
        )
        ent = np.full(len(obs), np.sum(ls + 0.5 * (1 + math.log(2 * math.pi))))
    else:
        log_p = out - logsumexp(out, axis=1, keepdims=True)
        lp = log_p[np.arange(len(obs)), actions]
        ent = -np.sum(np.exp(log_p) * log_p, axis=1)
    values = (np.tanh(z @ v["w1"] + v["b1"]) @ v["w2"] + v["b2"])[:, 0]
    return lp, ent, values


def np_losses(params, batch, normalize_advantage=False):
    obs, _, adv, ret, valid = (np.asarray(x, np.float64) for x in batch)
    actions = batch[1]  # int indices for Discrete

    def mm(x):
        return np.sum(x * valid) / max(np.sum(valid), 1.0)

    if normalize_advantage:
        adv = (adv - mm(adv)) / (np.sqrt(mm((adv - mm(adv)) ** 2)) + 1e-8)
    lp, ent, values = np_forward(params, obs, actions)
    out = {"policy_loss": -mm(adv * lp), "entropy": mm(ent), "value_loss": mm((ret - values) ** 2)}
    out["policy_total_loss"] = out["policy_loss"] - ENT_COEF * out["entropy"]
    out["value_total_loss"] = VF_COEF * out["value_loss"]
    var_r = mm((ret - mm(ret)) ** 2)
    res = ret - values
    out["explained_variance"] = 1.0 - mm((res - mm(res)) ** 2) / var_r
    return out


def np_grads(params, batch, normalize_advantage=False, h=1e-6):
    """Central finite differences of each network's total loss w.r.t. its own parameters."""
    grads = {}
    for net, loss_key in (("policy", "policy_total_loss"), ("value", "value_total_loss")):
        grads[net] = {}
        for key, value in params[net].items():
            g = np.zeros_like(value)
            for idx in np.ndindex(value.shape):
                losses = []
                for sign in (1.0, -1.0):
                    shifted = {n: {k: v.copy() for k, v in d.items()} for n, d in params.items()}
                    shifted[net][key][idx] += sign * h
                    losses.append(np_losses(shifted, batch, normalize_advantage)[loss_key])
                g[idx] = (losses[0] - losses[1]) / (2 * h)
            grads[net][key] = g
    return grads


def global_norm(d):
    return math.sqrt(sum(float(np.sum(g**2)) for g in d.values()))


def first_rmsprop_step(g):
    """PyTorch RMSprop from zero velocity: v = (1 - rho) g^2, step = -lr g / (sqrt(v) + eps)."""
    return -LR * g / (np.sqrt((1 - RHO) * g**2) + OPT_EPS)


# -- tests ----------------------------------------------------------------------------------------
def test_train_step_losses_grad_norms_and_per_network_clip(tiny_config, action_space):
    agent, params = make_agent(loss_config(tiny_config), action_space)
    batch = make_batch(action_space)
    expected = np_losses(params, batch)
    grads = np_grads(params, batch)
    norms = {net: global_norm(g) for net, g in grads.items()}
    assert min(norms.values()) > 2 * MAX_GRAD_NORM  # the clip is active in both networks

    metrics = {k: v.numpy() for k, v in agent.train_step(*batch).items()}
    assert metrics["update_applied"]
    for key, value in expected.items():
        np.testing.assert_allclose(metrics[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
    np.testing.assert_allclose(metrics["policy_grad_norm"], norms["policy"], rtol=1e-4)
    np.testing.assert_allclose(metrics["value_grad_norm"], norms["value"], rtol=1e-4)

    # The applied update: one global-norm clip PER NETWORK, then the first RMSprop step.
    moved = {
        net: {k: v.numpy().astype(np.float64) - params[net][k] for k, v in d.items()}
        for net, d in variables(agent).items()
    }
    joint = math.sqrt(norms["policy"] ** 2 + norms["value"] ** 2)
    joint_differs = False
    for net, g in grads.items():
        scale = MAX_GRAD_NORM / max(norms[net], MAX_GRAD_NORM)
        for key in g:
            expected_step = first_rmsprop_step(g[key] * scale)
            np.testing.assert_allclose(
                moved[net][key], expected_step, rtol=2e-3, atol=2e-7, err_msg=f"{net}/{key}"
            )
            joint_step = first_rmsprop_step(g[key] * MAX_GRAD_NORM / joint)
            joint_differs |= not np.allclose(moved[net][key], joint_step, rtol=2e-3, atol=2e-7)
        # Invert the step to get the gradient that was applied: its global norm is the clip.
        d = np.concatenate([m.ravel() for m in moved[net].values()])
        applied = -d * OPT_EPS / (LR - np.sqrt(1 - RHO) * np.abs(d))
        np.testing.assert_allclose(np.linalg.norm(applied), MAX_GRAD_NORM, rtol=2e-3)
    assert joint_differs  # a single clip over both networks would have moved other amounts


def test_normalize_advantage(tiny_config):
    space = gym.spaces.Discrete(3)
    config = loss_config(tiny_config, normalize_advantage=True, compile="eager")
    agent, params = make_agent(config, space)
    batch = make_batch(space, seed=1)
    expected = np_losses(params, batch, normalize_advantage=True)
    unnormalized = np_losses(params, batch)
    assert not np.isclose(expected["policy_loss"], unnormalized["policy_loss"], rtol=1e-2)
    grads = np_grads(params, batch, normalize_advantage=True)
    metrics = agent.train_step(*batch)
    np.testing.assert_allclose(metrics["policy_loss"].numpy(), expected["policy_loss"], rtol=1e-5)
    np.testing.assert_allclose(
        metrics["policy_grad_norm"].numpy(), global_norm(grads["policy"]), rtol=1e-4
    )
    # The value loss does not see advantages.
    np.testing.assert_allclose(metrics["value_loss"].numpy(), expected["value_loss"], rtol=1e-5)


def test_masked_steps_change_nothing(tiny_config, action_space):
    config = loss_config(tiny_config, compile="eager", normalize_advantage=True)
    batch = make_batch(action_space)
    masked = [np.array(x, copy=True) for x in batch]
    rng = np.random.default_rng(9)
    masked[0][2] = rng.normal(size=3) * 50.0  # obs of the masked step (index 2)
    masked[1][2] = (masked[1][2] + 1) % 3 if masked[1].ndim == 1 else masked[1][2] * -3.0
    masked[2][2], masked[3][2] = 100.0, -100.0  # its advantage and return
    results = []
    for b in (batch, masked):
        agent, _ = make_agent(config, action_space)
        metrics = {k: v.numpy() for k, v in agent.train_step(*b).items()}
        weights = [v.numpy() for d in variables(agent).values() for v in d.values()]
        results.append((metrics, weights))
    (m0, w0), (m1, w1) = results
    for key in m0:
        np.testing.assert_array_equal(m0[key], m1[key], err_msg=key)
    for a, b in zip(w0, w1):
        np.testing.assert_array_equal(a, b)
    # The same change on a VALID step does change the loss (the check above can fail).
    unmasked = [np.array(x, copy=True) for x in batch]
    unmasked[2][3] = 100.0
    agent, _ = make_agent(config, action_space)
    assert agent.train_step(*unmasked)["policy_loss"].numpy() != m0["policy_loss"]


def test_logged_log_prob_ignores_masked_steps(tiny_config):
    space = gym.spaces.Discrete(3)
    agent, params = make_agent(loss_config(tiny_config, compile="eager"), space)
    batch = make_batch(space)
    lp, _, _ = np_forward(params, batch[0].astype(np.float64), batch[1])
    expected = np.sum(lp * batch[4]) / np.sum(batch[4])
    np.testing.assert_allclose(agent.train_step(*batch)["log_prob"].numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize("valid_steps", [[0, 1, 3], [4]])
def test_explained_variance_over_valid_steps(tiny_config, valid_steps):
    space = gym.spaces.Discrete(3)
    agent, params = make_agent(loss_config(tiny_config, compile="eager"), space)
    batch = list(make_batch(space, seed=2))
    batch[4] = np.zeros(6, np.float32)
    batch[4][valid_steps] = 1.0
    metrics = agent.train_step(*batch)
    if len(valid_steps) == 1:  # Var[R] = 0 over one step: defined as 0, not NaN
        assert metrics["explained_variance"].numpy() == 0.0
    else:
        expected = np_losses(params, batch)["explained_variance"]
        np.testing.assert_allclose(metrics["explained_variance"].numpy(), expected, rtol=1e-5)
