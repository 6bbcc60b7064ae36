"""The flat optimizers (`rlnorm.optimizers`) against NumPy written from the papers' formulas,
against Keras' own per-variable Adam bit for bit, and the skipped step."""

import inspect
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from rlnorm import optimizers
from rlnorm.config import Config
from rlnorm.optimizers import Adam, RMSprop, make_optimizer

SHAPES = [(2, 3), (3,)]  # a kernel and a bias: the flat vector spans both


def gradients(seed: int, steps: int = 3) -> list[list[np.ndarray]]:
    """Per step, one gradient per variable; tiny entries where eps placement matters."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        grads = [rng.normal(0, 1, s).astype(np.float32) for s in SHAPES]
        grads[1][0] = 1e-6 * rng.normal()
        out.append(grads)
    return out


def start_weights() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.normal(0, 1, s).astype(np.float32) for s in SHAPES]


def run(optimizer, steps, applied=None) -> list[keras.Variable]:
    variables = [keras.Variable(w) for w in start_weights()]
    optimizer.build(variables)
    for grads, ok in zip(steps, applied or [None] * len(steps), strict=True):
        optimizer.apply(grads, variables, applied=None if ok is None else tf.constant(ok))
    return variables


def test_make_optimizer_maps_the_config():
    rms = make_optimizer(Config(learning_rate=3e-3, rms_decay=0.95, optimizer_eps=1e-6), "p")
    assert isinstance(rms, RMSprop) and (rms.rho, rms.epsilon) == (0.95, 1e-6)
    assert float(np.asarray(rms.learning_rate)) == pytest.approx(3e-3)
    adam = make_optimizer(Config(optimizer="adam", optimizer_eps=1e-8), "v")
    assert isinstance(adam, Adam) and adam.epsilon == 1e-8 and adam.name == "v"


def test_rmsprop_matches_pytorch_formula_over_three_steps():
    lr, rho, eps = 0.01, 0.9, 1e-5
    steps = gradients(0)
    got = run(RMSprop(learning_rate=lr, rho=rho, epsilon=eps), steps)
    # torch.optim.RMSprop (alpha = rho, centered=False, momentum=0), per variable, float64:
    for i, w in enumerate(start_weights()):
        w, v = w.astype(np.float64), np.zeros(SHAPES[i])
        for grads in steps:
            g = grads[i].astype(np.float64)
            v = rho * v + (1 - rho) * g**2
            w = w - lr * g / (np.sqrt(v) + eps)
        np.testing.assert_allclose(got[i].numpy(), w, rtol=1e-5, atol=1e-7)
    # Keras' own RMSprop (eps inside the sqrt) ends elsewhere on the tiny gradient.
    keras_vars = [keras.Variable(w) for w in start_weights()]
    keras_opt = keras.optimizers.RMSprop(learning_rate=lr, rho=rho, epsilon=eps)
    for grads in steps:
        keras_opt.apply(grads, keras_vars)
    assert not np.allclose(keras_vars[1].numpy(), got[1].numpy(), rtol=1e-5, atol=1e-7)


def test_adam_matches_kingma_ba_and_keras_adam_bit_for_bit():
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-7
    steps = gradients(1)
    got = run(Adam(learning_rate=lr, beta_1=b1, beta_2=b2, epsilon=eps), steps)
    # Kingma & Ba (2015), Algorithm 1 with section 2's efficient form, float64:
    for i, w in enumerate(start_weights()):
        w, m, v = w.astype(np.float64), np.zeros(SHAPES[i]), np.zeros(SHAPES[i])
        for t, grads in enumerate(steps, start=1):
            g = grads[i].astype(np.float64)
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g**2
            w = w - lr * np.sqrt(1 - b2**t) / (1 - b1**t) * m / (np.sqrt(v) + eps)
        np.testing.assert_allclose(got[i].numpy(), w, rtol=1e-5, atol=1e-7)
    # Keras' Adam updates variable by variable; the flat one does the same float32 arithmetic.
    keras_vars = [keras.Variable(w) for w in start_weights()]
    keras_opt = keras.optimizers.Adam(learning_rate=lr, beta_1=b1, beta_2=b2, epsilon=eps)
    for grads in steps:
        keras_opt.apply(grads, keras_vars)
    for mine, theirs in zip(got, keras_vars, strict=True):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())


@pytest.mark.parametrize("kind", [RMSprop, Adam])
def test_a_skipped_step_changes_nothing_even_with_nan_gradients(kind):
    """applied=False: weights, slots and `iterations` stay as they were; the next applied step
    is the one a run without the bad step would have taken."""
    steps = gradients(2)
    nan_step = [np.full(s, np.nan, np.float32) for s in SHAPES]
    skipping = kind(learning_rate=0.01)
    got = run(skipping, [steps[0], nan_step, steps[1]], applied=[True, False, True])
    clean = kind(learning_rate=0.01)
    expected = run(clean, [steps[0], steps[1]])
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(g.numpy(), e.numpy())
    for g, e in zip(skipping.slots, clean.slots, strict=True):
        np.testing.assert_array_equal(g.numpy(), e.numpy())
    assert int(skipping.iterations.numpy()) == int(clean.iterations.numpy()) == 2


def test_compiled_step_equals_eager_and_a_missing_gradient_leaves_its_weight():
    steps = gradients(3)
    eager = run(RMSprop(learning_rate=0.01), steps)
    optimizer = RMSprop(learning_rate=0.01)
    variables = [keras.Variable(w) for w in start_weights()]
    optimizer.build(variables)
    step = tf.function(
        lambda g0, g1: optimizer.apply([g0, g1], variables, applied=tf.constant(True))
    )
    for grads in steps:
        step(*grads)
    for c, e in zip(variables, eager, strict=True):
        np.testing.assert_array_equal(c.numpy(), e.numpy())
    bias = variables[1].numpy()
    optimizer.apply([steps[0][0], None], variables)
    np.testing.assert_array_equal(variables[1].numpy(), bias)
    assert not np.array_equal(variables[0].numpy(), eager[0].numpy())


def test_slots_and_iterations_round_trip_through_a_checkpoint(tmp_path):
    optimizer = Adam(learning_rate=0.01, name="policy_optimizer")
    variables = run(optimizer, gradients(4))
    path = tf.train.Checkpoint(optimizer=optimizer).write(str(tmp_path / "ckpt"))
    saved = [s.numpy().copy() for s in optimizer.slots]
    assert all(np.abs(s).sum() > 0 for s in saved)
    fresh = Adam(learning_rate=0.01, name="policy_optimizer")
    fresh.build([keras.Variable(w) for w in start_weights()])
    tf.train.Checkpoint(optimizer=fresh).read(path).assert_existing_objects_matched()
    for got, want in zip(fresh.slots, saved, strict=True):
        np.testing.assert_array_equal(got.numpy(), want)
    assert int(fresh.iterations.numpy()) == 3
    # The restored optimizer takes the same next step as the one that never stopped.
    next_grads = gradients(5, steps=1)[0]
    fresh_vars = [keras.Variable(v.numpy()) for v in variables]
    optimizer.apply(next_grads, variables)
    fresh.apply(next_grads, fresh_vars)
    for a, b in zip(variables, fresh_vars, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_only_public_keras_api_steps_iterations_and_the_variables_are_explicit(monkeypatch):
    """The step counter is read and advanced through `optimizer.iterations` (no Keras private
    attribute), and the variables are always passed in: there is no hidden default list."""
    source = inspect.getsource(optimizers)
    assert not re.search(r"\._(iterations|trainable_variables|variables)\b", source)
    reads = []
    public = keras.optimizers.Optimizer.iterations

    def counted(self):
        reads.append(self.name)
        return public.fget(self)

    monkeypatch.setattr(keras.optimizers.Optimizer, "iterations", property(counted))
    optimizer = Adam(learning_rate=0.01, name="counted")
    run(optimizer, gradients(6, steps=2))
    assert reads and set(reads) == {"counted"}
    assert int(public.fget(optimizer).numpy()) == 2
    with pytest.raises(ValueError, match="needs the variables"):
        optimizer.apply(gradients(6, steps=1)[0])
