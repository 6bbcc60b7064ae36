"""rlnorm: an A2C framework whose internal scales are correct by construction and visible."""

import importlib.util

# TensorFlow is an extra (pyproject.toml): say how to get it before an ImportError from deep
# inside a module does. find_spec does not import TensorFlow (that takes seconds).
if importlib.util.find_spec("tensorflow") is None:
    raise ModuleNotFoundError(
        "rlnorm needs TensorFlow, which is not installed. Install rlnorm with an extra: "
        "`pip install 'rlnorm[cpu]'` (CPU-only TensorFlow) or `pip install 'rlnorm[gpu]'` "
        "(TensorFlow with CUDA), or install TensorFlow >= 2.16 yourself."
    )
