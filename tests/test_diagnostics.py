"""Tests for rlnorm.diagnostics and rlnorm.alarms: the values read back from the event files are
checked against NumPy computed on the same fixed weights and batch (forward passes, BatchNorm in
both modes, and the backward pass for the gradient norms), the pass must leave every variable as
it found it, every alarm rule is provoked, and a real TensorBoard serves the layout and tags."""

import json
import re
import socket
import threading
import urllib.request
import warnings

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf

from rlnorm.agent import A2CAgent
from rlnorm.alarms import ScaleAlarms, ScaleAlarmWarning
from rlnorm.config import Config
from rlnorm.diagnostics import NOT_WRITTEN, ScaleDiagnostics, _crossed

OBS_SPACE = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
DISCRETE = gym.spaces.Discrete(3)
BOX = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
N = 12


def make_config(**changes) -> Config:
    # Raw value targets: the NumPy references below are SB3's losses (PopArt: its own test).
    base = dict(
        hidden_sizes=(5, 4),
        seed=1,
        diagnostics_every=1000,
        histograms_every=1000,
        value_target_norm="none",
    )
    return Config(**{**base, **changes})


def make_agent(config, action_space) -> A2CAgent:
    """The agent runs eagerly (no tracing cost in the tests); the diagnostics pass, made from
    `config`, is compiled as in a real run."""
    return A2CAgent(config.replace(compile="eager"), OBS_SPACE, action_space)


def make_batch(action_space, seed=0):
    """A fixed update batch: obs float32 [N, 3] (one entry far outside the clip range),
    actions, advantages, returns, valid (row 3 invalid)."""
    rng = np.random.default_rng(seed)
    obs = rng.normal([1.0, -2.0, 0.5], [2.0, 0.5, 3.0], size=(N, 3)).astype(np.float32)
    obs[0, 2] = 60.0
    if isinstance(action_space, gym.spaces.Discrete):
        actions = rng.integers(0, action_space.n, N).astype(np.int32)
    else:
        actions = rng.normal(size=(N, action_space.shape[0])).astype(np.float32)
    advantages = rng.normal(0.5, 2.0, N).astype(np.float32)
    returns = rng.normal(3.0, 1.5, N).astype(np.float32)
    valid = np.ones(N, np.float32)
    valid[3] = 0.0
    return obs, actions, advantages, returns, valid


def set_normalizer(agent):
    agent.normalizer.set_state(50, [0.5, -1.5, 0.0], [4.0, 0.25, 1.0])


def read_events(logdir) -> tuple[dict, dict]:
    """(tag -> {step: float} for scalars, tag -> {step: bytes or ndarray} for the rest)."""
    scalars, other = {}, {}
    files = [(p, None) for p in sorted(logdir.glob("events.out.tfevents.*"))]
    for net in ("policy", "value"):  # sibling runs: scale/layer0/... -> scale/<net>/layer0/...
        files += [(p, net) for p in sorted(logdir.glob(f"{net}/events.out.tfevents.*"))]
    for path, net in files:
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for v in event.summary.value:
                if not v.HasField("tensor"):
                    continue
                if net is not None:
                    head, _, rest = v.tag.partition("/")
                    v.tag = f"{head}/{net}/{rest}"
                array = tf.make_ndarray(v.tensor)
                if array.ndim == 0 and array.dtype.kind == "f":
                    scalars.setdefault(v.tag, {})[event.step] = float(array)
                else:
                    item = array.reshape(-1)[0] if array.dtype.kind == "O" else array
                    other.setdefault(v.tag, {})[event.step] = item
    return scalars, other


def run_diagnostics(agent, config, logdir, batch, step=40, train=True):
    """One diagnostics step around one update, as the training loop does; returns
    (the scalars read back from the event file at `step`, the train_step metrics)."""
    writer = tf.summary.create_file_writer(str(logdir))
    diagnostics = ScaleDiagnostics(agent, writer, config)
    assert diagnostics.due(step)
    diagnostics.before_update(step, *batch)
    metrics = agent.train_step(*batch) if train else {}
    diagnostics.after_update(step, metrics)
    writer.flush()
    scalars, other = read_events(logdir)
    got = {tag: points[step] for tag, points in scalars.items() if step in points}
    # Computed and judged, but written elsewhere (losses/...) or as text: from `last`.
    got.update({k: diagnostics.last[k] for k in NOT_WRITTEN})
    assert (
        other["normalizer/min_running_var_feature"][step]
        .decode()
        .startswith(f"feature {int(got['normalizer/min_running_var_feature'])}:")
    )
    return got, metrics


def nets(agent):
    return (("policy", agent.policy), ("value", agent.value))


# -- NumPy reference: forward and backward of  normalizer -> [Dense -> Norm -> act] -> head -----
def np_params(net):
    layers = []
    for dense, norm in zip(net.dense_layers, net.norm_layers, strict=True):
        p = {
            "W": dense.kernel.numpy().astype(np.float64),
            "b": dense.bias.numpy().astype(np.float64),
        }
        if norm is not None:
            for k in ("gamma", "beta", "moving_mean", "moving_variance"):
                p[k] = getattr(norm, k).numpy().astype(np.float64)
            p["eps"] = norm.epsilon
        layers.append(p)
    head = (net.head.kernel.numpy().astype(np.float64), net.head.bias.numpy().astype(np.float64))
    return layers, head


def np_normalize(agent, obs):
    n = agent.normalizer
    z = (obs.astype(np.float64) - n.mean.numpy()) / np.sqrt(n.var.numpy() + n.epsilon)
    return np.clip(z, -n.clip, n.clip).astype(np.float32).astype(np.float64), z


def np_forward(net, z, activation, mode="train", rows=None):
    """Returns per-layer (pre_norm, post_norm, out), batch moments per layer, head output.
    `rows` (bool [N]): the rows plain BatchNorm takes its batch statistics from."""
    layers, (wh, bh) = np_params(net)
    act = np.tanh if activation == "tanh" else (lambda x: np.maximum(x, 0.0))
    x, record, moments = z, [], []
    for p in layers:
        pre = x @ p["W"] + p["b"]
        post = pre
        if "gamma" in p:
            sample = pre if rows is None else pre[rows]
            mu, var = sample.mean(0), sample.var(0)
            moments.append((mu, var))
            if mode != "train":
                mu, var = p["moving_mean"], p["moving_variance"]
            post = p["gamma"] * (pre - mu) / np.sqrt(var + p["eps"]) + p["beta"]
        x = act(post)
        record.append((pre, post, x))
    return record, moments, x @ wh + bh


def np_backward(net, z, record, g_out, activation):
    """Gradients (list per layer of [dW, db], and [dW, db] of the head) of a loss whose
    gradient w.r.t. the head output is g_out [N, out]; norm = none only."""
    layers, (wh, _) = np_params(net)
    hidden = [z] + [out for _, _, out in record]
    head = [hidden[-1].T @ g_out, g_out.sum(0)]
    g, grads = g_out @ wh.T, []
    for i in reversed(range(len(layers))):
        pre, _, out = record[i]
        d = g * ((1.0 - out**2) if activation == "tanh" else (pre > 0))
        grads.insert(0, [hidden[i].T @ d, d.sum(0)])
        g = d @ layers[i]["W"].T
    return grads, head


def norm_of(arrays):
    return float(np.sqrt(sum(np.sum(np.square(a)) for a in arrays)))


def masked(x, valid):
    w = np.broadcast_to(valid.reshape(-1, *[1] * (x.ndim - 1)), x.shape)
    mean = np.sum(w * x) / np.sum(w)
    return mean, np.sqrt(np.sum(w * (x - mean) ** 2) / np.sum(w))


def approx(x, rel=2e-4, abs=1e-6):
    return pytest.approx(x, rel=rel, abs=abs)


# -- the logged values against NumPy -------------------------------------------------------------
@pytest.mark.parametrize(
    "action_space,activation",
    [(DISCRETE, "tanh"), (BOX, "relu")],
    ids=["discrete-tanh", "box-relu"],
)
def test_logged_values_match_numpy(tmp_path, action_space, activation):
    config = make_config(activation=activation)
    agent = make_agent(config, action_space)
    set_normalizer(agent)
    # One layer-1 unit of each network made inactive on every row: dead (relu) / saturated.
    for _, net in nets(agent):
        bias = net.dense_layers[1].bias
        bias.assign(np.array([0, 0, 0, -100.0 if activation == "relu" else 100.0], np.float32))
    batch = make_batch(action_space)
    obs, actions, adv, ret, valid = batch
    # NumPy reference on the weights as they are before the update.
    z, unclipped = np_normalize(agent, obs)
    ref = {name: np_forward(net, z, activation) for name, net in nets(agent)}
    values = ref["value"][2][:, 0]
    nv = valid.sum()
    w = (adv * valid / nv).astype(np.float64)
    if isinstance(action_space, gym.spaces.Discrete):
        logits = ref["policy"][2]
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        g_policy, extra = -w[:, None] * (np.eye(action_space.n)[actions] - probs), []
    else:
        mean, log_std = ref["policy"][2], agent.policy.log_std.numpy().astype(np.float64)
        u = (actions - mean) / np.exp(log_std)
        g_policy = -w[:, None] * u / np.exp(log_std)
        extra = [np.sum(-w[:, None] * (u**2 - 1.0), 0)]  # d loss / d log_std
    g_value = (config.vf_coef * 2.0 * (values - ret) * valid / nv)[:, None]
    grads = {
        name: np_backward(net, z, ref[name][0], g, activation)
        for (name, net), g in zip(nets(agent), (g_policy, g_value), strict=True)
    }
    before = {n: [w.numpy().copy() for w in net.trainable_weights] for n, net in nets(agent)}

    got, metrics = run_diagnostics(agent, config, tmp_path, batch)

    # Normalizer.
    x = obs.astype(np.float64)
    assert got["normalizer/raw_obs_mean"] == approx(x.mean())
    assert got["normalizer/raw_obs_std"] == approx(x.std())
    assert got["normalizer/normalized_obs_mean"] == approx(z.mean())
    assert got["normalizer/normalized_obs_std"] == approx(z.std())
    assert got["normalizer/normalized_obs_std_min"] == approx(z.std(0).min())
    assert got["normalizer/normalized_obs_std_max"] == approx(z.std(0).max())
    assert got["normalizer/clip_fraction"] == approx(np.mean(np.abs(unclipped) > 10.0))
    assert got["normalizer/clip_fraction"] > 0
    assert got["normalizer/count"] == 50
    assert got["normalizer/min_running_var"] == approx(0.25)
    assert got["normalizer/min_running_var_feature"] == 1
    for k, (mean, var) in enumerate([(0.5, 4.0), (-1.5, 0.25), (0.0, 1.0)]):  # set_normalizer
        assert got[f"normalizer/feature{k}/running_mean"] == approx(mean)
        assert got[f"normalizer/feature{k}/running_std"] == approx(np.sqrt(var))

    # Hidden layers, weights and gradients of each network.
    inactive = "dead_fraction" if activation == "relu" else "saturated_fraction"
    for name, net in nets(agent):
        for i, (pre, post, out) in enumerate(ref[name][0]):
            stages = [("pre_norm", pre), ("out", out)]
            if net.norm == "none":  # = pre_norm: not written twice
                assert f"scale/{name}/layer{i}/post_norm/std" not in got
            else:
                stages.append(("post_norm", post))
            for stage, a in stages:
                assert got[f"scale/{name}/layer{i}/{stage}/mean"] == approx(a.mean())
                assert got[f"scale/{name}/layer{i}/{stage}/std"] == approx(a.std())
                assert got[f"scale/{name}/layer{i}/{stage}/max_abs"] == approx(np.abs(a).max())
            dead = np.all(out <= 0, 0) if activation == "relu" else np.all(np.abs(out) > 0.99, 0)
            assert got[f"scale/{name}/layer{i}/{inactive}"] == approx(dead.mean())
        assert got[f"scale/{name}/layer1/{inactive}"] >= 0.25
        after = [w.numpy() for w in net.trainable_weights]
        update = norm_of([a - b for a, b in zip(after, before[name], strict=True)])
        assert update > 0
        assert got[f"scale/{name}/update_ratio"] == approx(update / norm_of(before[name]))
        assert got[f"scale/{name}/weight_norm"] == approx(norm_of(before[name]))
        assert got[f"scale/{name}/learning_rate"] == approx(config.learning_rate)
        layer_grads, head = grads[name]
        head = head + (extra if name == "policy" else [])
        total = norm_of([g for lg in layer_grads for g in lg] + head)
        assert got[f"scale/{name}/grad_norm"] == approx(total, rel=1e-3)
        assert got[f"scale/{name}/grad_norm"] == approx(float(metrics[f"{name}_grad_norm"]), 1e-5)
        for i, lg in enumerate(layer_grads):
            assert got[f"scale/{name}/layer{i}/grad_norm"] == approx(norm_of(lg), rel=1e-3)
        assert got[f"scale/{name}/head/grad_norm"] == approx(norm_of(head), rel=1e-3)

    # Outputs.
    out = ref["policy"][2]
    assert got["scale/policy/output/mean"] == approx(masked(out, valid)[0])
    assert got["scale/policy/output/std"] == approx(masked(out, valid)[1])
    if isinstance(action_space, gym.spaces.Discrete):
        assert got["outputs/policy_logit_std"] == approx(np.sum(out.std(1) * valid) / nv)
    else:
        assert got["outputs/policy_log_std_mean"] == approx(log_std.mean())
    v_mean, v_std = masked(values, valid)
    r_std = masked(ret.astype(np.float64), valid)[1]
    assert got["scale/value/output/mean"] == approx(v_mean)
    assert got["scale/value/output/std"] == approx(v_std)
    assert got["outputs/return_std"] == approx(r_std)
    assert got["outputs/value_return_std_ratio"] == approx(v_std / r_std)
    assert got["outputs/advantage_mean"] == approx(masked(adv.astype(np.float64), valid)[0])
    assert got["outputs/advantage_std"] == approx(masked(adv.astype(np.float64), valid)[1])
    resid = masked(ret - values, valid)[1] ** 2
    assert got["outputs/explained_variance"] == approx(1.0 - resid / r_std**2, rel=1e-3)


def set_batchnorm(agent, seed=5):
    """Non-trivial gamma, beta and moving statistics in every BatchNorm layer."""
    rng = np.random.default_rng(seed)
    for _, net in nets(agent):
        for norm in net.norm_layers:
            units = norm.gamma.shape[0]
            norm.gamma.assign(rng.uniform(0.5, 2.0, units).astype(np.float32))
            norm.beta.assign(rng.normal(0.0, 0.5, units).astype(np.float32))
            norm.moving_mean.assign(rng.normal(0.0, 1.0, units).astype(np.float32))
            norm.moving_variance.assign(rng.uniform(0.3, 3.0, units).astype(np.float32))


def agent_state(agent) -> list[np.ndarray]:
    """Every variable a diagnostics pass could touch: weights, BatchNorm statistics and step
    counters, the normalizer, both optimizers' slots and iteration counts, the action RNG."""
    variables = [w for _, net in nets(agent) for w in net.trainable_weights]
    variables += [w for _, net in nets(agent) for w in net.non_trainable_weights]
    variables += [agent.normalizer.count, agent.normalizer.mean, agent.normalizer.var]
    variables += list(agent.policy_optimizer.variables) + list(agent.value_optimizer.variables)
    return [np.array(v.numpy()) for v in variables] + [agent.rng.state.numpy().copy()]


@pytest.mark.filterwarnings("ignore::rlnorm.alarms.ScaleAlarmWarning")  # bn_kl, as intended
def test_batchnorm_values_match_numpy(tmp_path):
    """Moving vs batch statistics, KL(train || infer) and the value gap, from NumPy forward
    passes in both modes; the eager pass gives the same numbers as the compiled one."""
    config = make_config(policy_norm="batch", value_norm="batch")
    agent = make_agent(config, DISCRETE)
    set_normalizer(agent)
    set_batchnorm(agent)
    head = agent.policy.head.kernel
    head.assign(head.numpy() * 100.0)  # logits of order 1, so the two modes' KL is visible
    batch = make_batch(DISCRETE)
    obs, _, _, ret, valid = batch
    z, _ = np_normalize(agent, obs)
    # Plain BatchNorm takes its batch statistics from the valid rows only (as train_step does).
    train = {name: np_forward(net, z, "tanh", "train", valid > 0) for name, net in nets(agent)}
    infer = {name: np_forward(net, z, "tanh", "infer") for name, net in nets(agent)}
    state = agent_state(agent)

    got, _ = run_diagnostics(agent, config, tmp_path / "graph", batch, train=False)
    for a, b in zip(state, agent_state(agent), strict=True):
        np.testing.assert_array_equal(a, b)  # the training-mode pass assigned nothing
    for name, net in nets(agent):
        for i, ((pre, post, _), (mu_b, var_b)) in enumerate(zip(*train[name][:2], strict=True)):
            norm = net.norm_layers[i]
            mm, mv = norm.moving_mean.numpy(), norm.moving_variance.numpy()
            gap = np.abs(mm - mu_b) / np.sqrt(mv + norm.epsilon)
            assert got[f"batchnorm/{name}/layer{i}/mean_gap"] == approx(gap.mean())
            assert got[f"batchnorm/{name}/layer{i}/mean_gap_max"] == approx(gap.max())
            ratio = (var_b + norm.epsilon) / (mv + norm.epsilon)
            assert got[f"batchnorm/{name}/layer{i}/var_ratio"] == approx(ratio.mean())
            assert got[f"scale/{name}/layer{i}/pre_norm/std"] == approx(pre.std())
            assert got[f"scale/{name}/layer{i}/post_norm/std"] == approx(post.std(), 1e-3)

    def log_softmax(x):
        x = x - x.max(1, keepdims=True)
        return x - np.log(np.exp(x).sum(1, keepdims=True))

    lp_t, lp_i = log_softmax(train["policy"][2]), log_softmax(infer["policy"][2])
    kl = np.sum(np.exp(lp_t) * (lp_t - lp_i), 1)
    assert got["batchnorm/policy_kl_train_infer"] == approx(np.sum(kl * valid) / valid.sum(), 1e-3)
    assert got["batchnorm/policy_kl_train_infer"] > 1e-3
    v_gap = np.abs(train["value"][2][:, 0] - infer["value"][2][:, 0])
    r_std = masked(ret.astype(np.float64), valid)[1]
    expected = np.sum(v_gap * valid) / valid.sum() / r_std
    assert got["batchnorm/value_gap"] == approx(expected, 1e-3)

    eager, _ = run_diagnostics(
        agent, config.replace(compile="eager"), tmp_path / "eager", batch, train=False
    )
    for a, b in zip(state, agent_state(agent), strict=True):
        np.testing.assert_array_equal(a, b)
    assert eager.keys() == got.keys()
    for tag, value in got.items():
        assert eager[tag] == approx(value, 1e-4, 1e-6), tag


@pytest.mark.parametrize(
    "policy_norm,value_norm,action_space",
    [("batch_renorm", "batch", DISCRETE), ("batch_moving", "layer", BOX)],
    ids=["renorm-batch-discrete", "moving-layer-box"],
)
def test_diagnostics_pass_changes_nothing(tmp_path, policy_norm, value_norm, action_space):
    """The pass runs both networks in training mode (which assigns BatchNorm statistics and
    the variants' step counters) and takes gradients: afterwards every variable is as before,
    so the update that follows is the one a run without diagnostics makes."""
    config = make_config(policy_norm=policy_norm, value_norm=value_norm)
    agent = make_agent(config, action_space)
    set_normalizer(agent)
    batch = make_batch(action_space)
    agent.train_step(*batch)  # optimizer slots, BatchNorm statistics and counters non-trivial
    state = agent_state(agent)
    writer = tf.summary.create_file_writer(str(tmp_path))
    diagnostics = ScaleDiagnostics(agent, writer, config)
    for step in (40, 1040):
        diagnostics.before_update(step, *batch)
        for a, b in zip(state, agent_state(agent), strict=True):
            np.testing.assert_array_equal(a, b)
        diagnostics.after_update(step, {})
    assert diagnostics.diagnose.experimental_get_tracing_count() == 1


def test_cadence():
    assert _crossed(None, 40, 1000)
    assert not _crossed(40, 960, 1000)
    assert _crossed(960, 1000, 1000)
    assert _crossed(990, 1030, 1000)
    assert not _crossed(1000, 1999, 1000)


# -- alarms (the rules themselves: tests/test_alarms.py) -----------------------------------------
NOW = dict(alarm_warmup_steps=0, alarm_persist_steps=0)  # judge and fire at the first step


@pytest.fixture(autouse=True)
def no_update_ratio_rule(request, monkeypatch):
    """These tests judge an untrained policy (uniform: entropy) at once, and run the diagnostic
    pass without an update between (update ratio 0): rules the warm-up exists for."""
    if "alarm" in request.node.name or "healthy_batch" in request.node.name:
        from rlnorm import alarms

        monkeypatch.delitem(alarms.RULES, "update_ratio")
        monkeypatch.delitem(alarms.RULES, "entropy")


@pytest.fixture(scope="module")
def alarm_agent():
    config = make_config(**NOW)
    agent = make_agent(config, DISCRETE)
    set_normalizer(agent)
    diagnostics = ScaleDiagnostics(agent, tf.summary.create_noop_writer(), config)
    return agent, diagnostics


def provoke(diagnostics, logdir, batch, step=40, **config):
    """One diagnostics step with fresh alarms; returns (rules fired, alarm texts read back)."""
    diagnostics.alarms = ScaleAlarms(diagnostics.config.replace(**config))
    diagnostics.writer = tf.summary.create_file_writer(str(logdir))
    diagnostics.before_update(step, *batch)
    diagnostics.after_update(step, {})
    diagnostics.writer.flush()
    _, other = read_events(logdir)
    texts = {
        tag: {step: text.decode() for step, text in points.items()}
        for tag, points in other.items()
        if tag.startswith("alarms/")
    }
    return set(diagnostics.alarms.fired), texts


def test_healthy_batch_fires_nothing(tmp_path, alarm_agent):
    _, diagnostics = alarm_agent
    fired, texts = provoke(diagnostics, tmp_path, make_batch(DISCRETE))
    assert fired == set() and texts == {}


@pytest.mark.filterwarnings("ignore::rlnorm.alarms.ScaleAlarmWarning")  # the other rules' warnings
@pytest.mark.parametrize("rule", ["obs_scale", "value_scale", "grad_norm"])
def test_alarm_fires_once(tmp_path, alarm_agent, rule):
    agent, diagnostics = alarm_agent
    step = 40
    obs, actions, adv, ret, valid = make_batch(DISCRETE)
    config = {}
    if rule == "obs_scale":  # a normalizer whose variance is 1e6 times too large
        agent.normalizer.set_state(50, [0.0, 0.0, 0.0], [1e6, 1e6, 1e6])
    elif rule == "value_scale":  # returns 1000 times the value scale
        ret = ret * 1000.0
    else:  # a clip 1e6 times below the gradient norm
        config = {"max_grad_norm": 1e-9}
    try:
        with pytest.warns(ScaleAlarmWarning, match=f"'{rule}' at env step {step}"):
            fired, texts = provoke(
                diagnostics, tmp_path, (obs, actions, adv, ret, valid), step, **config
            )
        assert rule in fired
        assert list(texts[f"alarms/{rule}"]) == [step]
        assert f"'{rule}' at env step {step}" in texts[f"alarms/{rule}"][step]
        # Once per run: the same condition at a later diagnostics step stays quiet.
        diagnostics.before_update(step + 10_000, obs, actions, adv, ret, valid)
        diagnostics.after_update(step + 10_000, {})
        diagnostics.writer.flush()
        assert list(read_events(tmp_path)[1][f"alarms/{rule}"]) == [step]
    finally:
        set_normalizer(agent)


def test_alarm_goes_to_the_report_callable(tmp_path, alarm_agent):
    agent, diagnostics = alarm_agent
    said = []
    diagnostics.report, saved = said.append, diagnostics.report
    try:
        obs, actions, adv, ret, valid = make_batch(DISCRETE)
        provoke(diagnostics, tmp_path, (obs, actions, adv, ret * 1000.0, valid))
    finally:
        diagnostics.report = saved
    assert len(said) == 1 and said[0].startswith("rlnorm scale alarm 'value_scale'")


@pytest.mark.filterwarnings("error::rlnorm.alarms.ScaleAlarmWarning")  # only 'nonfinite' fires
def test_nonfinite_alarm(tmp_path, alarm_agent):
    _, diagnostics = alarm_agent
    obs, actions, adv, ret, valid = make_batch(DISCRETE)
    obs = obs.copy()
    obs[2, 1] = np.nan
    with pytest.warns(ScaleAlarmWarning, match="'nonfinite'.*NaN/Inf"):
        fired, texts = provoke(diagnostics, tmp_path, (obs, actions, adv, ret, valid))
    assert "nonfinite" in fired and "alarms/nonfinite" in texts


def test_batchnorm_gap_alarm(tmp_path):
    config = make_config(policy_norm="batch", **NOW)
    agent = make_agent(config, DISCRETE)
    set_normalizer(agent)
    # Moving statistics far from any batch's: inference mode acts with a different policy.
    for norm in agent.policy.norm_layers:
        norm.moving_mean.assign(np.full(norm.moving_mean.shape, 3.0, np.float32))
        norm.moving_variance.assign(np.full(norm.moving_variance.shape, 0.01, np.float32))
    agent.policy.head.kernel.assign(agent.policy.head.kernel.numpy() * 300.0)
    diagnostics = ScaleDiagnostics(agent, tf.summary.create_noop_writer(), config)
    with pytest.warns(ScaleAlarmWarning, match="'bn_gap'"):
        fired, texts = provoke(diagnostics, tmp_path, make_batch(DISCRETE))
    assert "bn_gap" in fired and "alarms/bn_gap" in texts
    assert diagnostics.last["batchnorm/policy_kl_train_infer"] > 0.1


# -- end to end: a real run, read back by TensorBoard ----------------------------------------------
@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A 200-step CartPole run with BatchNorm in both networks: diagnostics every 50 env
    steps, histograms every 100 (10 env steps per update)."""
    from rlnorm.loop import train

    run_dir = tmp_path_factory.mktemp("runs") / "CartPole-v1" / "batch"
    config = Config(
        n_envs=2,
        total_steps=200,
        hidden_sizes=(8, 8),
        policy_norm="batch",
        value_norm="batch",
        diagnostics_every=50,
        histograms_every=100,
        log_every=50,
        checkpoint_every=1000,
        run_dir=str(run_dir),
    )
    train(config, quiet=True)
    return run_dir


def test_run_writes_diagnostics_at_their_cadence(small_run):
    scalars, other = read_events(small_run)
    assert sorted(scalars["scale/policy/layer0/pre_norm/std"]) == [10, 50, 100, 150, 200]
    assert sorted(other["weights/value/layer1/kernel"]) == [10, 100, 200]
    assert sorted(other["normalizer/running_var"]) == [10, 50, 100, 150, 200]
    for net in ("policy", "value"):  # mirrored tags
        for tag in ("layer1/post_norm/std", "grad_norm", "update_ratio", "output/std"):
            assert f"scale/{net}/{tag}" in scalars
        assert f"batchnorm/{net}/layer1/var_ratio" in scalars
    assert "batchnorm/policy_kl_train_infer" in scalars
    # Sibling runs: the SAME tags under policy/ and value/, run-wide tags in the run itself.
    raw = raw_tags(small_run)
    assert "scale/layer0/pre_norm/std" in raw["policy"] and raw["policy"] == raw["value"]
    assert "outputs/return_std" in raw["run"] and not any("policy/" in t for t in raw["policy"])
    # No duplicates: explained variance and entropy once (losses/), no post_norm without a norm.
    assert (
        "outputs/explained_variance" not in raw["run"]
        and "outputs/policy_entropy" not in raw["run"]
    )
    # The layout: Health first and open, the detail categories closed.
    from tensorboard.plugins.custom_scalar import layout_pb2

    layout = layout_pb2.Layout()
    layout.ParseFromString(other["custom_scalars__config__"][0])
    assert [c.title for c in layout.category] == [
        "Health", "Layers", "Networks", "Outputs", "Normalizer", "BatchNorm",
    ]  # fmt: skip
    assert [c.closed for c in layout.category] == [False] + [True] * 5
    health = layout.category[0].chart
    assert health[0].multiline.tag == [r"charts/(mean_return_last_100|episodic_return)$"]
    margins = [c for c in health if c.HasField("margin")]
    assert len(margins) >= 6  # the key ratios, each with its alarm band
    every_tag = set().union(*raw.values())
    for chart in margins:
        for series in chart.margin.series:
            assert {series.value, series.lower, series.upper} <= every_tag, chart.title
    for cat in layout.category:  # no multiline chart is left empty
        for chart in cat.chart:
            if chart.HasField("multiline"):
                regexes = chart.multiline.tag
                assert any(re.match(r, t) for r in regexes for t in every_tag), chart.title
    # HParams: the config as the session's hyperparameters.
    from tensorboard.plugins.hparams import metadata as hp_metadata

    for path in small_run.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for v in event.summary.value:
                if v.tag == hp_metadata.SESSION_START_INFO_TAG:
                    content = v.metadata.plugin_data.content
                    info = hp_metadata.parse_session_start_info_plugin_data(content)
    assert info.hparams["policy_norm"].string_value == "batch"
    assert info.hparams["hidden_sizes"].string_value == "8,8"
    assert "gamma" not in info.hparams  # only the keys that differ from the defaults
    assert info.group_name == "batch"  # the trial id is the run's name


def raw_tags(run_dir) -> dict[str, set]:
    """The scalar tags as TensorBoard sees them, per run: the run itself, policy/, value/."""
    tags = {}
    for run, folder in (
        ("run", run_dir),
        ("policy", run_dir / "policy"),
        ("value", run_dir / "value"),
    ):
        found = set()
        for path in folder.glob("events.out.tfevents.*"):
            for event in tf.compat.v1.train.summary_iterator(str(path)):
                for v in event.summary.value:
                    if v.HasField("tensor") and tf.make_ndarray(v.tensor).ndim == 0:
                        found.add(v.tag)
        tags[run] = found
    return tags


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # inside tensorboard's bleach
def test_tensorboard_serves_layout_and_mirrored_tags(small_run):
    from tensorboard import program

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    logdir = small_run.parent.parent
    board = program.TensorBoard()
    board.configure(
        argv=[None, "--logdir", str(logdir), "--port", str(port), "--host", "127.0.0.1"]
        + ["--load_fast", "false", "--reload_task", "blocking", "--reload_interval", "0"]
    )
    server = board._make_server()  # what launch() does, but keeping the server to shut it down
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:

        def get(path):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
                return json.loads(r.read())

        layout = get("/data/plugin/custom_scalars/layout")
        titles = [c["title"] for c in layout["category"]]
        assert titles[0] == "Health" and "Normalizer" in titles and "BatchNorm" in titles
        first = layout["category"][0]["chart"][0]
        assert first["multiline"]["tag"] == [r"charts/(mean_return_last_100|episodic_return)$"]
        # The run and its two siblings, the networks' tags the same in both.
        runs = get("/data/runs")
        run = next(r for r in runs if not r.endswith(("/policy", "/value")))
        assert sorted(runs) == sorted([run, f"{run}/policy", f"{run}/value"])
        tags = get("/data/plugin/scalars/tags")
        for net in ("policy", "value"):
            assert "scale/layer0/pre_norm/std" in tags[f"{run}/{net}"]
            assert "batchnorm/layer0/mean_gap" in tags[f"{run}/{net}"]
            assert "health/log10_update_ratio/upper" in tags[f"{run}/{net}"]
        assert "charts/steps_per_second" in tags[run] and "alarms/count" in tags[run]
        plugins = get("/data/plugins_listing")
        assert plugins["custom_scalars"]["enabled"] and plugins["hparams"]["enabled"]
        assert plugins["histograms"]["enabled"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_doctor_reports_the_run(small_run, capsys):
    from rlnorm.cli import main

    assert main(["doctor", str(small_run)]) == 0
    report = capsys.readouterr().out
    assert "policy_norm = batch, value_norm = batch" in report
    assert "last diagnostics at env step 200" in report
    assert re.search(r"layer0 Dense output std\s+[\d.e+-]+\s+[\d.e+-]+", report)
    assert re.search(r"update / weight norm\s+[\d.e+-]+ (OK|WARN|BAD)", report)
    assert "Verdict: OK" in report  # 200 steps: nothing is judged before the warm-up
    assert "KL(policy train || infer)" in report
    assert "Alarms fired:" in report


@pytest.mark.slow
def test_training_is_identical_with_diagnostics_on_or_off(tmp_path):
    """The diagnostics only look: the same seed trains to the same weights either way
    (BatchNorm and Batch Renorm, whose statistics the pass must restore, a pass every update)."""
    from rlnorm.loop import train

    weights = {}
    for on in (False, True):
        config = Config(
            n_envs=2,
            total_steps=600,
            hidden_sizes=(8,),
            policy_norm="batch",
            value_norm="batch_renorm",
            diagnostics=on,
            diagnostics_every=10,
            histograms_every=50,
            run_dir=str(tmp_path / str(on)),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ScaleAlarmWarning)
            train(config, quiet=True)
        checkpoint = tf.train.latest_checkpoint(str(tmp_path / str(on) / "checkpoints"))
        weights[on] = {
            name: tf.train.load_variable(checkpoint, name)
            for name, _ in tf.train.list_variables(checkpoint)
        }
    assert weights[True].keys() == weights[False].keys()
    for name, value in weights[False].items():
        np.testing.assert_array_equal(weights[True][name], value, err_msg=name)


@pytest.mark.parametrize("value_norm", ["none", "batch"])
def test_popart_runs_show_values_in_return_units_and_the_target_statistics(tmp_path, value_norm):
    """Under PopArt the head is normalized; the diagnostics denormalize it by hand-set
    statistics (mean -120, std 30), so V(s), the value/return scale ratio and the BatchNorm
    value gap are in the returns' units, and the statistics themselves are written."""
    config = make_config(value_target_norm="popart", value_norm=value_norm)
    agent = make_agent(config, DISCRETE)
    set_normalizer(agent)
    agent.popart.count.assign(50.0)
    agent.popart.mean.assign(-120.0)
    agent.popart.var.assign(900.0)
    batch = make_batch(DISCRETE)
    obs, _, _, ret, valid = batch
    z, _ = np_normalize(agent, obs)
    head_train = np_forward(agent.value, z, "tanh", "train", valid > 0)[2][:, 0]
    v = head_train * 30.0 - 120.0

    got, _ = run_diagnostics(agent, config, tmp_path / "run", batch, train=False)
    assert got["popart/target_mean"] == approx(-120.0)
    assert got["popart/target_std"] == approx(30.0)
    v_mean, v_std = masked(v, valid)
    assert got["scale/value/output/mean"] == approx(v_mean, 1e-3)
    r_std = masked(ret.astype(np.float64), valid)[1]
    assert got["outputs/value_return_std_ratio"] == approx(v_std / r_std, 1e-3)
    if value_norm == "batch":
        head_infer = np_forward(agent.value, z, "tanh", "infer")[2][:, 0]
        gap = np.abs(head_train - head_infer) * 30.0  # the same gap, in return units
        assert got["batchnorm/value_gap"] == approx(np.sum(gap * valid) / valid.sum() / r_std, 1e-3)
