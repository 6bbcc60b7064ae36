"""rlnorm: an A2C framework whose internal scales are correct by construction and visible.

    import rlnorm
    run = rlnorm.train("CartPole-v1", total_steps=200_000)   # -> rlnorm.Run
    action = run.predict(obs)

Exports are imported lazily, on first use: `import rlnorm` does not import TensorFlow, so the
CLI's help and `rlnorm config` start fast and work without it.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name -> the module that defines it (one home per concept).
_EXPORTS = {
    "train": "rlnorm.api",
    "load": "rlnorm.api",
    "Run": "rlnorm.api",
    "Config": "rlnorm.config",
    "ConfigError": "rlnorm.config",
    "EnvError": "rlnorm.envs",
    "RunDirError": "rlnorm.run_dir",
    "NonFiniteError": "rlnorm.rollout",
    "NonFiniteLossError": "rlnorm.loop",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'rlnorm' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
