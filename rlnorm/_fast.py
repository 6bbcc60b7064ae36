"""Every use of a TensorFlow, Keras or TensorBoard internal (or of a public API as a trick),
in one place, each behind a switch with a public fallback that gives the same numbers.

- `call_concrete`: calls a traced function through TF's eager context `call_function` with
  the ConcreteFunction's `_inference_function.name`. Fallback: the ConcreteFunction itself.
- `keep_thread_state`: the C API `PyGILState_Ensure` through `ctypes.pythonapi`. Fallback:
  nothing (TF's own thread state per callback).
- `write_summaries`: TensorBoard's `scalar_pb`, `histogram_pb`, `text_pb` and
  `summary_pb2.Summary`, written by `tf.summary.experimental.write_raw_pb`. Fallback:
  `tf.summary.scalar` / `histogram` / `text`, one per tag.
- `read_once`: `keras.StatelessScope(state_mapping=...)`, public API used as a trick (each
  variable mapped to one read). Fallback: Keras' reads at every use.

Switch: `fast_paths = false` in the config, or `RLNORM_FAST_PATHS=0` in the environment, turns
all of them off; `active(config)` says which are on. Each one is also off where its internal
is missing. Tested with TensorFlow 2.21, Keras 3.15, TensorBoard 2.21 on Python 3.11 (the
upper pins of pyproject.toml); tests/test_fast.py checks that each is active when on and that
a run gives the same bits with all of them off.
"""

from __future__ import annotations

import ctypes
import os
import threading
from contextlib import contextmanager

import keras
import tensorflow as tf

ENV_VAR = "RLNORM_FAST_PATHS"


def enabled(config=None) -> bool:
    """The switch: config `fast_paths` (default on) and `RLNORM_FAST_PATHS` not "0"."""
    return bool(getattr(config, "fast_paths", True)) and os.environ.get(ENV_VAR, "1") != "0"


def active(config=None) -> dict[str, bool]:
    """Which fast paths run: switched on and their internal present."""
    on = enabled(config)
    return {name: on and available() for name, available in _AVAILABLE.items()}


# -- the update graph's call --------------------------------------------------------------------
def _eager_context():
    try:
        from tensorflow.python.eager import context
    except ImportError:
        return None
    return context if hasattr(context.Context, "call_function") else None


def call_concrete(concrete, enabled: bool = True):
    """`concrete` (a ConcreteFunction of flat tensor inputs returning a flat tuple of tensors)
    as a callable that goes straight to TF's eager executor.

    Why: `ConcreteFunction.__call__` binds, checks and packs arguments in Python, costing
    several times the executor's own call (benchmarks/throughput.py); the update graph needs
    none of it. Fallback (off, internals missing, or structured inputs/outputs): `concrete`."""
    context = _eager_context() if enabled else None
    if context is None:
        return concrete
    try:
        call_function = context.context().call_function
        name = concrete._inference_function.name
        captures = list(concrete.captured_inputs)
        outputs = concrete.structured_outputs
        inputs, kwargs = concrete.structured_input_signature
    except AttributeError:
        return concrete
    flat_in = not kwargs and all(isinstance(x, tf.TensorSpec) for x in inputs)
    flat_out = isinstance(outputs, tuple) and all(isinstance(x, tf.Tensor) for x in outputs)
    if not (flat_in and flat_out):
        return concrete
    dtypes, n_outputs = [x.dtype for x in inputs], len(outputs)

    def call(*args):
        inputs = [
            x if isinstance(x, tf.Tensor) else tf.convert_to_tensor(x, dtype)  # e.g. NumPy
            for x, dtype in zip(args, dtypes, strict=True)
        ]
        return call_function(name, inputs + captures, n_outputs)

    return call


# -- the env callback's thread ------------------------------------------------------------------
def _gil_ensure():
    return getattr(getattr(ctypes, "pythonapi", None), "PyGILState_Ensure", None)


def keep_thread_state(enabled: bool = True) -> None:
    """Call on the TF thread that runs a `tf.numpy_function` callback: keeps its Python thread
    state alive for the thread's lifetime.

    Why: TF wraps each callback in `PyGILState_Ensure`/`Release`, and the Release destroys the
    state the Ensure had to create, so every env step built a fresh one. One extra Ensure per
    thread, never released, keeps it. No Python or TF API offers this. Fallback: nothing."""
    if not enabled:
        return
    thread = threading.get_ident()
    if thread not in _threads_kept:
        ensure = _gil_ensure()
        if ensure is not None:
            ensure()
        _threads_kept.add(thread)


# Threads whose thread state lives as long as they do: the main thread's always does (there
# the callback runs with compile = "eager"), TF's once keep_thread_state pinned it.
_threads_kept: set[int] = {threading.main_thread().ident}


# -- TensorBoard summaries ----------------------------------------------------------------------
def _summary_protos():
    try:
        from tensorboard.compat.proto import summary_pb2
        from tensorboard.plugins.histogram.summary_v2 import histogram_pb
        from tensorboard.plugins.scalar.summary_v2 import scalar_pb
        from tensorboard.plugins.text.summary_v2 import text_pb
    except ImportError:
        return None
    if not hasattr(tf.summary.experimental, "write_raw_pb"):
        return None
    return summary_pb2, scalar_pb, histogram_pb, text_pb


def write_summaries(
    writer,
    step: int,
    scalars: dict | None = None,
    histograms: dict | None = None,
    texts: dict | None = None,
    enabled: bool = True,
) -> None:
    """Write scalars (tag -> float), histograms (tag -> array) and texts (tag -> str) at `step`.

    Why: each eager `tf.summary.*` call runs TF ops and writes one event; built as protos in
    NumPy they go out as ONE event. Fallback: `tf.summary.scalar`/`histogram`/`text` per tag
    (the same tags, plugins and values, in one event per tag)."""
    scalars, histograms, texts = scalars or {}, histograms or {}, texts or {}
    protos = _summary_protos() if enabled else None
    with writer.as_default():
        if protos is None:
            for tag, value in scalars.items():
                tf.summary.scalar(tag, value, step=step)
            for tag, array in histograms.items():
                tf.summary.histogram(tag, array, step=step)
            for tag, text in texts.items():
                tf.summary.text(tag, text, step=step)
            return
        summary_pb2, scalar_pb, histogram_pb, text_pb = protos
        summary = summary_pb2.Summary()
        for tag, value in scalars.items():
            summary.value.extend(scalar_pb(tag, value).value)
        for tag, array in histograms.items():
            summary.value.extend(histogram_pb(tag, array).value)
        for tag, text in texts.items():
            summary.value.extend(text_pb(tag, text).value)
        tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=step)


# -- variable reads in a traced block -----------------------------------------------------------
@contextmanager
def read_once(variables, enabled: bool = True):
    """Inside the block (traced), each Keras variable in `variables` is read once, at its start.

    Why: Keras reads a layer's variables at every call, and a graph op costs as much as the
    arithmetic of these small networks; Keras' StatelessScope maps each variable to one read.
    Only for blocks in which none of them changes. Fallback: Keras' reads at every use."""
    if not (enabled and hasattr(keras, "StatelessScope")):
        yield
        return
    # `w.value` is the backend tf.Variable (mapping to it would read it at every use);
    # `convert_to_tensor` is the read itself.
    reads = [(w, tf.convert_to_tensor(w)) for w in variables]
    with keras.StatelessScope(state_mapping=reads):
        yield


_AVAILABLE = {
    "call_concrete": lambda: _eager_context() is not None,
    "keep_thread_state": lambda: _gil_ensure() is not None,
    "write_summaries": lambda: _summary_protos() is not None,
    "read_once": lambda: hasattr(keras, "StatelessScope"),
}
