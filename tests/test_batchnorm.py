"""Tests for rlnorm.batchnorm: every number is checked against an independent NumPy computation."""

import numpy as np
import pytest
import tensorflow as tf

from rlnorm.batchnorm import (
    BATCHNORM_VARIANTS,
    BatchRenormalization,
    MovingStatsBatchNormalization,
)

EPS = 1e-3
UNITS = 4


def _x(seed, batch=40, loc=2.0, scale=3.0):
    return np.random.default_rng(seed).normal(loc, scale, size=(batch, UNITS)).astype(np.float32)


def _layer(cls, gamma=None, beta=None, mean=None, var=None, step=0, **kwargs):
    layer = cls(**kwargs)
    layer.build((None, UNITS))
    rng = np.random.default_rng(123)
    layer.gamma.assign(rng.uniform(0.5, 2.0, UNITS) if gamma is None else gamma)
    layer.beta.assign(rng.normal(0.0, 1.0, UNITS) if beta is None else beta)
    if mean is not None:
        layer.moving_mean.assign(mean)
    if var is not None:
        layer.moving_variance.assign(var)
    layer.step.assign(step)
    return layer


def _np(layer):
    return {
        v: np.array(getattr(layer, v).numpy(), dtype=np.float64)
        for v in ("gamma", "beta", "moving_mean", "moving_variance")
    }


def _np_renorm(x, p, r_max, d_max):
    """Ioffe 2017 Algorithm 1 in float64; returns output and (r, d, batch mean, batch var)."""
    x = x.astype(np.float64)
    mu_b, var_b = x.mean(0), x.var(0)
    sigma_b, sigma = np.sqrt(var_b + EPS), np.sqrt(p["moving_variance"] + EPS)
    r = np.clip(sigma_b / sigma, 1.0 / r_max, r_max)
    d = np.clip((mu_b - p["moving_mean"]) / sigma, -d_max, d_max)
    y = p["gamma"] * ((x - mu_b) / sigma_b * r + d) + p["beta"]
    return y, r, d, mu_b, var_b


def _np_infer(x, p):
    z = (x.astype(np.float64) - p["moving_mean"]) / np.sqrt(p["moving_variance"] + EPS)
    return p["gamma"] * z + p["beta"]


def _np_schedule(step, warmup, ramp, r_max=3.0, d_max=5.0):
    frac = float(step >= warmup) if ramp == 0 else min(max((step - warmup) / ramp, 0.0), 1.0)
    return 1.0 + (r_max - 1.0) * frac, d_max * frac


FULL = 2000  # default warmup_steps + ramp_steps: r_max = 3, d_max = 5


# ---------------------------------------------------------------- BatchRenormalization


def test_renorm_training_unclipped_matches_numpy_and_inference():
    x = _x(0)
    # Moving stats near the batch stats: r in (1/3, 3), |d| < 5 -> no clipping.
    layer = _layer(BatchRenormalization, mean=x.mean(0) + 0.5, var=x.var(0) * 1.5, step=FULL)
    p = _np(layer)
    y_ref, r, d, _, _ = _np_renorm(x, p, 3.0, 5.0)
    assert np.all((r > 1 / 3) & (r < 3) & (np.abs(d) < 5)) and not np.allclose(r, 1.0)
    y = layer(x, training=True).numpy()
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    # Unclipped renorm == normalization with the (pre-update) moving stats.
    np.testing.assert_allclose(y, _np_infer(x, p), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("step", [FULL, 500 + 375])  # full bounds, and r_max=1.5/d_max=1.25
def test_renorm_training_clipped_matches_numpy(step):
    x = _x(1)
    mean = x.mean(0) + np.array([40.0, -40.0, 0.1, 0.0])  # |d| > 5 on two features
    var = x.var(0) * np.array([100.0, 0.01, 1.0, 1.2])  # r < 1/3 and r > 3
    layer = _layer(BatchRenormalization, mean=mean, var=var, step=step)
    r_max, d_max = _np_schedule(step, 500, 1500)
    y_ref, r, d, _, _ = _np_renorm(x, _np(layer), r_max, d_max)
    assert np.isclose(r.min(), 1 / r_max) and np.isclose(r.max(), r_max)
    assert np.isclose(np.abs(d).max(), d_max)
    np.testing.assert_allclose(layer(x, training=True).numpy(), y_ref, rtol=1e-5, atol=1e-4)


def test_renorm_inference_matches_numpy():
    x = _x(2)
    layer = _layer(BatchRenormalization, mean=[1.0, -2.0, 0.0, 3.0], var=[4.0, 0.5, 1.0, 9.0])
    np.testing.assert_allclose(
        layer(x, training=False).numpy(), _np_infer(x, _np(layer)), rtol=1e-5, atol=1e-5
    )


def test_renorm_moving_stats_follow_numpy_ema():
    layer = _layer(BatchRenormalization, momentum=0.9, warm_start=False)
    mean, var = np.zeros(UNITS), np.ones(UNITS)
    for k in range(5):
        x = _x(10 + k, loc=k)
        layer(x, training=True)
        mean = 0.9 * mean + 0.1 * x.astype(np.float64).mean(0)
        var = 0.9 * var + 0.1 * x.astype(np.float64).var(0)
    np.testing.assert_allclose(layer.moving_mean.numpy(), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.moving_variance.numpy(), var, rtol=1e-5)
    assert int(layer.step.numpy()) == 5


def test_renorm_warmup_schedule():
    layer = _layer(BatchRenormalization)  # defaults: warmup 500, ramp 1500
    for step in [0, 1, 499, 500, 501, 875, 1250, 1999, 2000, 2001, 10**6]:
        got = [float(v) for v in layer.clip_bounds(step)]
        np.testing.assert_allclose(got, _np_schedule(step, 500, 1500), rtol=1e-6)
    jump = _layer(BatchRenormalization, warmup_steps=100, ramp_steps=0)  # CrossQ-style
    for step in [0, 99, 100, 5000]:
        got = [float(v) for v in jump.clip_bounds(step)]
        np.testing.assert_allclose(got, _np_schedule(step, 100, 0), rtol=1e-6)
    # The counter drives it: at step 0 the layer is plain BN even with far-off moving stats.
    x = _x(3)
    plain = _layer(BatchRenormalization, mean=np.full(UNITS, 50.0), var=np.full(UNITS, 100.0))
    p = _np(plain)
    y_bn = p["gamma"] * (x - x.mean(0)) / np.sqrt(x.var(0) + EPS) + p["beta"]
    np.testing.assert_allclose(plain(x, training=True).numpy(), y_bn, rtol=1e-5, atol=1e-5)
    assert int(plain.step.numpy()) == 1


def test_renorm_gradients_treat_r_and_d_as_constants():
    x = _x(4)
    # Unclipped r != 1: if gradients flowed through r and d, dy/dx would be gamma/sigma.
    layer = _layer(BatchRenormalization, mean=x.mean(0) - 1.0, var=x.var(0) * 2.0, step=FULL)
    p = _np(layer)
    y_ref, r, d, mu_b, var_b = _np_renorm(x, p, 3.0, 5.0)
    w = np.random.default_rng(5).normal(size=x.shape)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss = tf.reduce_sum(tf.constant(w, tf.float32) * layer(xt, training=True))
    gx, gg, gb = tape.gradient(loss, [xt, layer.gamma, layer.beta])
    # Analytic batchnorm backward with r, d constant: z = (x - mu_B)/sigma_B, g = w*gamma*r,
    # dL/dx = (g - mean(g) - z * mean(g * z)) / sigma_B.
    sigma_b = np.sqrt(var_b + EPS)
    z = (x - mu_b) / sigma_b
    g = w * p["gamma"] * r
    gx_ref = (g - g.mean(0) - z * (g * z).mean(0)) / sigma_b
    np.testing.assert_allclose(gx.numpy(), gx_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gg.numpy(), (w * (z * r + d)).sum(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gb.numpy(), w.sum(0), rtol=1e-5, atol=1e-5)
    assert not np.allclose(gx_ref, w * p["gamma"] / np.sqrt(p["moving_variance"] + EPS))


# ---------------------------------------------------------------- MovingStatsBatchNormalization


def test_moving_training_output_equals_inference_output_exactly():
    x = _x(6)
    layer = _layer(
        MovingStatsBatchNormalization, mean=[1.0, -1.0, 0.5, 2.0], var=[2.0, 0.3, 1.0, 5.0]
    )
    p = _np(layer)
    y_infer = layer(x, training=False).numpy()
    y_train = layer(x, training=True).numpy()
    assert np.array_equal(y_train, y_infer)  # bit-for-bit: train/infer KL exactly 0
    np.testing.assert_allclose(y_train, _np_infer(x, p), rtol=1e-5, atol=1e-5)
    assert not np.allclose(layer.moving_mean.numpy(), p["moving_mean"])  # stats did move
    # No gradient through the statistics: dL/dx = w * gamma / sigma_moving (pre-update).
    layer2 = _layer(MovingStatsBatchNormalization, mean=p["moving_mean"], var=p["moving_variance"])
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss = tf.reduce_sum(layer2(xt, training=True))
    gx = tape.gradient(loss, xt).numpy()
    expected = np.broadcast_to(p["gamma"] / np.sqrt(p["moving_variance"] + EPS), x.shape)
    np.testing.assert_allclose(gx, expected, rtol=1e-5)


def _np_ema(batches, momentum, warm_start):
    mean, var = np.zeros(UNITS), np.ones(UNITS)
    if not warm_start:
        for x in batches:
            mean = momentum * mean + (1 - momentum) * x.mean(0)
            var = momentum * var + (1 - momentum) * x.var(0)
        return mean, var
    # Debiased EMA (Adam-style): weights momentum**(t-k) normalized to sum to one.
    t = len(batches)
    wts = np.array([momentum ** (t - k) for k in range(1, t + 1)])
    wts /= wts.sum()
    mean = sum(wi * x.mean(0) for wi, x in zip(wts, batches, strict=True))
    var = sum(wi * x.var(0) for wi, x in zip(wts, batches, strict=True))
    return mean, var


@pytest.mark.parametrize("warm_start", [False, True])
@pytest.mark.parametrize("momentum", [0.9, 0.99])
def test_moving_stats_follow_numpy_ema(warm_start, momentum):
    layer = _layer(MovingStatsBatchNormalization, momentum=momentum, warm_start=warm_start)
    batches = [_x(20 + k, loc=k, scale=1 + k).astype(np.float64) for k in range(6)]
    for t, x in enumerate(batches, start=1):
        layer(x.astype(np.float32), training=True)
        mean, var = _np_ema(batches[:t], momentum, warm_start)
        np.testing.assert_allclose(layer.moving_mean.numpy(), mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(layer.moving_variance.numpy(), var, rtol=1e-4)
    assert int(layer.step.numpy()) == len(batches)
    if warm_start:  # first update copied the first batch's moments: init carries no weight
        fresh = _layer(MovingStatsBatchNormalization, momentum=momentum)
        fresh(batches[0].astype(np.float32), training=True)
        np.testing.assert_allclose(fresh.moving_variance.numpy(), batches[0].var(0), rtol=1e-5)


@pytest.mark.parametrize("warm_start", [False, True])
@pytest.mark.parametrize("momentum", [0.9, 0.999])
def test_renorm_warm_start_follows_numpy_ema_and_renormalizes_with_it(warm_start, momentum):
    # Plain BN for 2 updates, then full renorm (r_max 3, d_max 5): from the 3rd call on, r and d
    # are computed against the (debiased, with warm_start) EMA of the earlier batches.
    layer = _layer(
        BatchRenormalization,
        momentum=momentum,
        warm_start=warm_start,
        warmup_steps=2,
        ramp_steps=0,
    )
    batches = [_x(40 + k, loc=k, scale=1 + k).astype(np.float64) for k in range(6)]
    for t, x in enumerate(batches, start=1):
        p = _np(layer)
        # The stats the call reads are the EMA of the batches before it (t = 1: the 0/1 init).
        mean, var = _np_ema(batches[: t - 1], momentum, warm_start and t > 1)
        np.testing.assert_allclose(p["moving_mean"], mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(p["moving_variance"], var, rtol=1e-4)
        r_max, d_max = _np_schedule(t - 1, 2, 0)
        y_np = _np_renorm(x, p, r_max, d_max)[0]
        y = layer(x.astype(np.float32), training=True).numpy()
        np.testing.assert_allclose(y, y_np, rtol=1e-4, atol=1e-4)
    mean, var = _np_ema(batches, momentum, warm_start)
    np.testing.assert_allclose(layer.moving_mean.numpy(), mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.numpy(), var, rtol=1e-4)
    assert int(layer.step.numpy()) == len(batches)
    if warm_start:  # the first update copies the first batch's moments: init carries no weight
        fresh = _layer(BatchRenormalization, momentum=momentum, warm_start=True)
        fresh(batches[0].astype(np.float32), training=True)
        np.testing.assert_allclose(fresh.moving_mean.numpy(), batches[0].mean(0), rtol=1e-5)
        np.testing.assert_allclose(fresh.moving_variance.numpy(), batches[0].var(0), rtol=1e-5)


@pytest.mark.parametrize("cls", [BatchRenormalization, MovingStatsBatchNormalization])
def test_masked_rows_stay_out_of_the_batch_statistics(cls):
    """With a mask, the warm-started first update copies the moments of the True rows only
    (NumPy over those rows); an all-True mask is exactly the unmasked call, and an all-False one
    falls back to every row instead of dividing by zero."""
    x = _x(60)
    x[:5] += 1e3  # extreme rows, masked out
    mask = np.arange(len(x)) >= 5
    layer = _layer(cls, momentum=0.9, warm_start=True)
    layer(x, training=True, mask=tf.constant(mask))
    rows = x[mask].astype(np.float64)
    np.testing.assert_allclose(layer.moving_mean.numpy(), rows.mean(0), rtol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.numpy(), rows.var(0), rtol=1e-4)

    plain, all_true, none_true = (_layer(cls, momentum=0.9) for _ in range(3))
    y_plain = plain(x, training=True).numpy()
    y_all = all_true(x, training=True, mask=tf.ones(len(x), tf.bool)).numpy()
    none_true(x, training=True, mask=tf.zeros(len(x), tf.bool))
    np.testing.assert_array_equal(y_all, y_plain)
    for layer in (all_true, none_true):
        np.testing.assert_array_equal(layer.moving_mean.numpy(), plain.moving_mean.numpy())
        np.testing.assert_array_equal(layer.moving_variance.numpy(), plain.moving_variance.numpy())


@pytest.mark.parametrize("cls", [BatchRenormalization, MovingStatsBatchNormalization])
def test_inference_calls_leave_stats_unchanged(cls):
    layer = _layer(cls, mean=[0.5, 1.0, -1.0, 2.0], var=[1.5, 2.0, 0.5, 3.0], step=7)
    before = [v.numpy().copy() for v in layer.non_trainable_weights]

    @tf.function
    def act(x):
        return layer(x, training=False)

    for i in range(200):
        act(tf.constant(_x(i % 3, batch=8)))
    for b, v in zip(before, layer.non_trainable_weights, strict=True):
        assert np.array_equal(b, v.numpy())


# ---------------------------------------------------------------- both layers


@pytest.mark.parametrize("cls", [BatchRenormalization, MovingStatsBatchNormalization])
@pytest.mark.parametrize("step", [0, FULL])
def test_batch_of_one_and_constant_feature_are_finite(cls, step):
    x1 = _x(7, batch=1)
    xc = _x(8, batch=8)
    xc[:, 1] = 3.0  # constant feature: batch variance exactly 0
    layer = _layer(cls, step=step)
    for x in (x1, xc, x1):  # successive training calls on one layer (state carries over)
        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = layer(xt, training=True)
            loss = tf.reduce_sum(y**2)
        grads = tape.gradient(loss, [xt, layer.gamma, layer.beta])
        for t in [y, *grads, *layer.non_trainable_weights, layer(xt, training=False)]:
            assert np.all(np.isfinite(t.numpy()))


@pytest.mark.parametrize("name", sorted(BATCHNORM_VARIANTS))
def test_jit_compile_matches_eager_without_retracing(name):
    cls = BATCHNORM_VARIANTS[name]
    jit_layer, eager_layer = _layer(cls, step=FULL), _layer(cls, step=FULL)

    @tf.function(jit_compile=True)
    def train(x):
        with tf.GradientTape() as tape:
            y = jit_layer(x, training=True)
            loss = tf.reduce_sum(y * y)
        return y, tape.gradient(loss, jit_layer.trainable_weights)

    @tf.function(jit_compile=True)
    def act(x):
        return jit_layer(x, training=False)

    for k in range(3):
        x = tf.constant(_x(30 + k, loc=k))
        y_act = act(x)
        y, grads = train(x)
        with tf.GradientTape() as tape:
            y_eager = eager_layer(x, training=True)
            loss = tf.reduce_sum(y_eager * y_eager)
        grads_eager = tape.gradient(loss, eager_layer.trainable_weights)
        np.testing.assert_allclose(y.numpy(), y_eager.numpy(), rtol=1e-5, atol=1e-5)
        for g, ge in zip(grads, grads_eager, strict=True):
            np.testing.assert_allclose(g.numpy(), ge.numpy(), rtol=1e-4, atol=1e-4)
        if cls is MovingStatsBatchNormalization:
            assert np.array_equal(y.numpy(), y_act.numpy())
    for a, b in zip(
        jit_layer.non_trainable_weights, eager_layer.non_trainable_weights, strict=True
    ):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    assert train.experimental_get_tracing_count() == 1
    assert act.experimental_get_tracing_count() == 1


def _model(cls, **kwargs):
    import keras

    return keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(UNITS), cls(**kwargs), keras.layers.Dense(2)]
    )


@pytest.mark.parametrize("cls", [BatchRenormalization, MovingStatsBatchNormalization])
def test_checkpoint_round_trip_and_config(cls, tmp_path):
    kwargs = {"momentum": 0.9, "epsilon": 1e-4}
    model = _model(cls, **kwargs)
    rng = np.random.default_rng(9)
    for _ in range(3):
        model(rng.normal(size=(16, 3)).astype(np.float32), training=True)
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    restored = _model(cls, **kwargs)
    tf.train.Checkpoint(model=restored).restore(path).assert_consumed()
    assert len(model.weights) == len(restored.weights)
    for a, b in zip(model.weights, restored.weights, strict=True):
        assert np.array_equal(a.numpy(), b.numpy()), a.path
    assert int(restored.layers[1].step.numpy()) == 3
    x = rng.normal(size=(5, 3)).astype(np.float32)
    assert np.array_equal(model(x, training=False).numpy(), restored(x, training=False).numpy())
    layer = model.layers[1]
    clone = cls.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
