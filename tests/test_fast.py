"""The fast paths (`rlnorm._fast`): each one is really taken when on, gives the same bits as its
public fallback, and falls back (and works) when its internal is missing; a short default
CartPole run is bit-identical with all of them off."""

from __future__ import annotations

import collections
import ctypes
import inspect
import threading
import types
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.eager import context
from tensorflow.python.eager.polymorphic_function.concrete_function import ConcreteFunction

from rlnorm import _fast
from rlnorm.config import Config
from rlnorm.loop import train

NAMES = {"call_concrete", "keep_thread_state", "write_summaries", "read_once"}
FAST_PATHS = {name: getattr(_fast, name) for name in NAMES}  # unwrapped by any spy


# -- the switch --------------------------------------------------------------------------------
def test_the_switch_turns_every_fast_path_off(monkeypatch):
    monkeypatch.delenv(_fast.ENV_VAR, raising=False)
    assert _fast.enabled() and _fast.enabled(Config())
    assert _fast.active() == dict.fromkeys(NAMES, True)
    assert not _fast.enabled(types.SimpleNamespace(fast_paths=False))
    assert _fast.active(types.SimpleNamespace(fast_paths=False)) == dict.fromkeys(NAMES, False)
    monkeypatch.setenv(_fast.ENV_VAR, "0")
    assert not _fast.enabled(Config())
    assert _fast.active() == dict.fromkeys(NAMES, False)


# -- call_concrete -----------------------------------------------------------------------------
def two_outputs():
    """A ConcreteFunction with flat inputs and outputs, reading a captured variable."""
    w = tf.Variable([[1.0, 2.0], [3.0, 4.0]])
    fn = tf.function(
        lambda x: (tf.matmul(x, w), tf.reduce_sum(x, axis=1)),
        input_signature=[tf.TensorSpec([None, 2], tf.float32)],
        autograph=False,
    )
    return w, fn.get_concrete_function()


def spy(monkeypatch, owner, name, calls: list):
    """Wrap `owner.name` so each call is recorded in `calls`, then runs the original."""
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)


def test_call_concrete_goes_to_the_executor_and_gives_the_wrappers_bits(monkeypatch):
    """On: TF's `call_function` is called with the traced function's name, and the
    ConcreteFunction's own `__call__` is not; outputs equal the wrapper's bit for bit, NumPy
    input is converted, and captured variables are read at call time."""
    executor, wrapper = [], []
    spy(monkeypatch, context.Context, "call_function", executor)
    spy(monkeypatch, ConcreteFunction, "__call__", wrapper)
    w, concrete = two_outputs()
    call = _fast.call_concrete(concrete, True)
    assert call is not concrete
    x = np.array([[1.0, -1.0], [0.5, 2.0]], np.float32)
    for new_w in ([[1.0, 2.0], [3.0, 4.0]], [[-2.0, 0.0], [1.0, 5.0]]):
        w.assign(new_w)
        executor.clear()
        fast = call(x)
        assert len(executor) == 1 and executor[0][1] == concrete._inference_function.name
        assert not wrapper
        public = concrete(tf.constant(x))
        assert wrapper  # the fallback does go through the wrapper
        wrapper.clear()
        for f, p in zip(fast, public, strict=True):
            np.testing.assert_array_equal(f.numpy(), p.numpy())
        np.testing.assert_array_equal(fast[0].numpy(), x @ np.array(new_w, np.float32))


def test_call_concrete_falls_back_to_the_concrete_function(monkeypatch):
    _, concrete = two_outputs()
    assert _fast.call_concrete(concrete, False) is concrete
    nested = tf.function(
        lambda x: {"y": x}, input_signature=[tf.TensorSpec([2])], autograph=False
    ).get_concrete_function()
    assert _fast.call_concrete(nested, True) is nested
    with monkeypatch.context() as m:  # an eager context without `call_function`
        m.delattr(context.Context, "call_function")
        assert _fast.call_concrete(concrete, True) is concrete
        assert _fast.active()["call_concrete"] is False
    with monkeypatch.context() as m:  # the context is there, the call is not
        m.setattr(context, "context", lambda: types.SimpleNamespace())
        fallback = _fast.call_concrete(concrete, True)
    assert fallback is concrete
    np.testing.assert_array_equal(fallback(tf.ones([1, 2]))[1].numpy(), [2.0])


# -- keep_thread_state ---------------------------------------------------------------------------
def run_callback_graph(enabled: bool, calls: int = 40) -> list[tuple[int, int]]:
    """(thread, thread-local call count) of each run of a `tf.numpy_function` callback."""
    local = threading.local()
    seen = []

    def callback(x):
        _fast.keep_thread_state(enabled)
        local.n = getattr(local, "n", 0) + 1
        seen.append((threading.get_ident(), local.n))
        return x

    graph = tf.function(
        lambda x: tf.numpy_function(callback, [x], tf.float32, stateful=True),
        input_signature=[tf.TensorSpec([], tf.float32)],
        autograph=False,
    )
    for _ in range(calls):  # more calls than TF has inter-op threads: some thread runs several
        graph(tf.constant(0.0))
    return seen


def pythonapi_spy(monkeypatch) -> list[int]:
    """Threads on which `PyGILState_Ensure` was called (the real one still runs)."""
    ensured = []
    real = ctypes.pythonapi.PyGILState_Ensure

    def ensure():
        ensured.append(threading.get_ident())
        return real()

    monkeypatch.setattr(ctypes, "pythonapi", types.SimpleNamespace(PyGILState_Ensure=ensure))
    monkeypatch.setattr(_fast, "_threads_kept", {threading.main_thread().ident})
    return ensured


def test_keep_thread_state_ensures_once_per_thread_and_the_state_survives(monkeypatch):
    ensured = pythonapi_spy(monkeypatch)
    seen = run_callback_graph(True)
    threads = collections.Counter(t for t, _ in seen)
    assert threading.get_ident() not in threads  # the callback ran on TF's threads
    assert max(threads.values()) > 1
    assert sorted(ensured) == sorted(threads)  # exactly once per thread
    by_thread = collections.defaultdict(list)
    for thread, n in seen:
        by_thread[thread].append(n)
    for ns in by_thread.values():  # 1, 2, 3, ...: the thread-local dict was never lost
        assert ns == list(range(1, len(ns) + 1))


def test_keep_thread_state_off_or_missing_calls_nothing(monkeypatch):
    ensured = pythonapi_spy(monkeypatch)
    assert len(run_callback_graph(False, calls=8)) == 8
    assert ensured == []
    monkeypatch.setattr(ctypes, "pythonapi", types.SimpleNamespace())  # no C API here
    assert _fast.active()["keep_thread_state"] is False
    assert len(run_callback_graph(True, calls=8)) == 8


# -- write_summaries ---------------------------------------------------------------------------
def summaries():
    rng = np.random.default_rng(0)
    scalars = {"charts/a": 1.5, "charts/b": np.float64(np.pi), "charts/c": 3, "losses/d": -2e-9}
    histograms = {
        "weights/kernel": rng.normal(0, 1, (4, 8)).astype(np.float32),
        "normalizer/running_var": rng.uniform(0, 3, 5),
        "activations/constant": np.full(7, 0.25),
    }
    texts = {"alarms/rule": "rlnorm scale alarm 'rule' at env step 40: message"}
    return scalars, histograms, texts


def write_and_read(tmp_path: Path, name: str, enabled: bool) -> tuple[list, list]:
    """Write `summaries()` at steps 40 and 80; (values, events) read back with public API."""
    writer = tf.summary.create_file_writer(str(tmp_path / name))
    for step in (40, 80):
        _fast.write_summaries(writer, step, *summaries(), enabled=enabled)
    writer.flush()
    values, events = [], []
    for path in sorted((tmp_path / name).glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            events.append(event)
            for v in event.summary.value:
                array = tf.make_ndarray(v.tensor)
                values.append(
                    (v.tag, event.step, v.metadata.plugin_data.plugin_name, array.dtype, array)
                )
    return sorted(values, key=lambda x: (x[1], x[0])), events


def assert_same_values(got: list, expected: list) -> None:
    assert [x[:4] for x in got] == [x[:4] for x in expected]
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(g[4], e[4], err_msg=g[0])


def test_summaries_are_one_raw_event_with_the_values_of_tf_summary(tmp_path, monkeypatch):
    public, _ = write_and_read(tmp_path, "public", enabled=False)
    for name in ("scalar", "histogram", "text"):  # on: none of them runs
        monkeypatch.setattr(tf.summary, name, lambda *a, **k: pytest.fail("tf.summary used"))
    fast, events = write_and_read(tmp_path, "fast", enabled=True)
    per_step = sum(len(d) for d in summaries())
    assert [len(e.summary.value) for e in events if e.summary.value] == [per_step, per_step]
    plugins = {tag: plugin for tag, _, plugin, _, _ in public}
    assert plugins["charts/b"] == "scalars" and plugins["weights/kernel"] == "histograms"
    assert plugins["alarms/rule"] == "text"
    assert len(public) == 2 * per_step
    assert_same_values(fast, public)


def test_summaries_fall_back_when_tensorboards_protos_are_missing(tmp_path, monkeypatch):
    from tensorboard.plugins.scalar import summary_v2

    public, _ = write_and_read(tmp_path, "public", enabled=False)
    monkeypatch.delattr(summary_v2, "scalar_pb")
    assert _fast.active()["write_summaries"] is False
    fallback, events = write_and_read(tmp_path, "fallback", enabled=True)
    assert max(len(e.summary.value) for e in events) == 1  # one event per tag: tf.summary
    assert_same_values(fallback, public)


# -- read_once ---------------------------------------------------------------------------------
def reads_and_outputs(enabled: bool, n_calls: int = 3) -> tuple[int, list[np.ndarray]]:
    """ReadVariableOps of a traced block of `n_calls` Dense calls, and its outputs."""
    keras.utils.set_random_seed(0)
    dense = keras.layers.Dense(3)
    dense.build((None, 4))

    def block(x):
        with _fast.read_once(dense.weights, enabled):
            return [dense(x + float(i)) for i in range(n_calls)]

    concrete = tf.function(block, autograph=False).get_concrete_function(tf.TensorSpec([2, 4]))
    reads = sum(op.type == "ReadVariableOp" for op in concrete.graph.get_operations())
    x = np.arange(8, dtype=np.float32).reshape(2, 4) / 7.0
    return reads, [y.numpy() for y in concrete(tf.constant(x))]


def test_read_once_reads_each_variable_once_with_the_same_bits(monkeypatch):
    fast_reads, fast = reads_and_outputs(True)
    public_reads, public = reads_and_outputs(False)
    assert fast_reads == 2 and public_reads == 2 * 3  # kernel and bias
    for f, p in zip(fast, public, strict=True):
        np.testing.assert_array_equal(f, p)
    monkeypatch.delattr(keras, "StatelessScope")
    assert _fast.active()["read_once"] is False
    missing_reads, missing = reads_and_outputs(True)
    assert missing_reads == public_reads
    for m, p in zip(missing, public, strict=True):
        np.testing.assert_array_equal(m, p)


# -- a whole run --------------------------------------------------------------------------------
def run_and_read(root: Path, monkeypatch, fast: bool) -> tuple[dict, dict]:
    """Final checkpoint tensors and {tag: [(step, value)]} of a short default CartPole run."""
    if fast:
        monkeypatch.delenv(_fast.ENV_VAR, raising=False)
    else:
        monkeypatch.setenv(_fast.ENV_VAR, "0")
    config = Config(
        seed=0,
        runs_root=str(root),  # the same for both: the config text written at step 0 matches
        total_steps=3000,
        log_every=500,
        checkpoint_every=100_000,
        diagnostics_every=1000,
        histograms_every=2000,
        vectorization_mode="vector_entry_point",  # the default recipe's env (agents/cartpole.py)
    )
    assert all(_fast.active(config).values()) is fast
    switches = collections.defaultdict(set)  # fast path -> the `enabled` its call sites passed
    for name in NAMES:
        original = FAST_PATHS[name]
        signature = inspect.signature(original)

        def record(*args, _name=name, _original=original, _signature=signature, **kwargs):
            bound = _signature.bind(*args, **kwargs)
            bound.apply_defaults()  # a call site that passes no switch records the default
            switches[_name].add(bound.arguments["enabled"])
            return _original(*args, **kwargs)

        monkeypatch.setattr(_fast, name, record)
    run_dir = Path(train(config, quiet=True)["run_dir"])
    assert switches == dict.fromkeys(NAMES, {fast})  # every call site, and the switch reached it
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(run_dir / "checkpoints")))
    tensors = {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()}
    events = collections.defaultdict(list)
    for path in sorted(run_dir.rglob("events.out.tfevents.*")):  # and the policy/, value/ runs
        run = "" if path.parent == run_dir else f" ({path.parent.name})"
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for v in event.summary.value:
                events[v.tag + run].append((event.step, tf.make_ndarray(v.tensor)))
    events.pop("charts/steps_per_second")  # wall clock
    return tensors, dict(events)


def test_a_default_cartpole_run_is_bit_identical_with_fast_paths_off(tmp_path, monkeypatch):
    fast_tensors, fast_events = run_and_read(tmp_path, monkeypatch, fast=True)
    public_tensors, public_events = run_and_read(tmp_path, monkeypatch, fast=False)
    assert fast_tensors.keys() == public_tensors.keys()
    assert any("policy" in k for k in fast_tensors) and any(
        "_iterations" in k for k in fast_tensors
    )
    for key in fast_tensors:
        np.testing.assert_array_equal(fast_tensors[key], public_tensors[key], err_msg=key)
    assert fast_events.keys() == public_events.keys()
    assert any(t.startswith("weights/") for t in fast_events)  # histograms were written
    assert any(t.startswith("scale/") for t in fast_events)  # and scale diagnostics
    for tag, series in fast_events.items():
        assert [s for s, _ in series] == [s for s, _ in public_events[tag]], tag
        for (_, f), (_, p) in zip(series, public_events[tag], strict=True):
            np.testing.assert_array_equal(f, p, err_msg=tag)
