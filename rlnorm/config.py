"""Run configuration: one frozen dataclass, loaded from TOML and overridden from the CLI.

Field names follow Stable-Baselines3 / CleanRL (`gamma`, `gae_lambda`, `ent_coef`, ...), so a
user of either feels at home. Every field has a docstring (the string literal under it); the
CLI's `--help` and the README table are built from them. Unknown keys and out-of-range values
are rejected before any environment is made, with the key, the value and what is allowed.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import math
import operator
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

NORMS = ("none", "layer", "batch", "batch_renorm", "batch_moving")
ACTIVATIONS = ("tanh", "relu")
OPTIMIZERS = ("rmsprop", "adam")
VECTORIZATION_MODES = ("sync", "async", "vector_entry_point")
AUTORESET_MODES = ("same_step", "next_step")
COMPILE_MODES = ("graph", "xla", "eager")
NONFINITE_POLICIES = ("error", "drop")
BACKENDS = ("python", "compiled")
# Float keys for which +inf means "no limit": no clipping, no early stop.
INF_ALLOWED = ("obs_clip", "reward_clip", "target_return")


class ConfigError(ValueError):
    """A configuration key or value is not allowed; the message names the key and the fix."""


@dataclass(frozen=True)
class Config:
    # --- environment -------------------------------------------------------------------
    env_id: str = "CartPole-v1"
    """Gymnasium id; `module:EnvName-vN` imports `module` first (your own registered envs)."""
    n_envs: int = 8
    """Number of parallel environments in the vector env."""
    vectorization_mode: str = "sync"
    """`sync`, `async` (one process per env) or `vector_entry_point` (NumPy-vectorized env, e.g. CartPole)."""
    autoreset_mode: str = "same_step"
    """Gymnasium 1.x autoreset: `same_step` (final obs in info) or `next_step` (reset step masked)."""
    seed: int = 0
    """Seeds TensorFlow, NumPy and the environments; same seed + config + machine -> same numbers."""
    backend: str = "python"
    """`python`: Gymnasium envs stepped from Python; `compiled`: TF-native env, loop in one graph."""

    # --- algorithm (A2C) ---------------------------------------------------------------
    total_steps: int = 500_000
    """Environment steps to train for (summed over envs)."""
    n_steps: int = 5
    """Rollout length per env per update; one update sees n_steps * n_envs transitions."""
    gamma: float = 0.99
    """Discount factor, in (0, 1]."""
    gae_lambda: float = 1.0
    """GAE(lambda); 1.0 gives n-step returns (SB3's A2C default)."""
    learning_rate: float = 7e-4
    """Learning rate of both optimizers."""
    optimizer: str = "rmsprop"
    """`rmsprop` (PyTorch/SB3 form: eps outside the sqrt) or `adam`."""
    rms_decay: float = 0.99
    """RMSprop smoothing constant (PyTorch `alpha`, Keras `rho`)."""
    optimizer_eps: float = 1e-5
    """Optimizer epsilon (added to sqrt(v), as in PyTorch)."""
    ent_coef: float = 0.0
    """Entropy bonus coefficient."""
    vf_coef: float = 0.5
    """Value loss coefficient."""
    max_grad_norm: float = 0.5
    """Global-norm gradient clip, applied separately to each network."""
    normalize_advantage: bool = False
    """Standardize advantages per update batch."""
    target_return: float | None = None
    """Stop early once the mean of the last 100 episode returns reaches this (None: never)."""

    # --- networks ----------------------------------------------------------------------
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Hidden layer widths, the same for the policy and the value network."""
    activation: str = "tanh"
    """Hidden activation: `tanh` or `relu`."""
    policy_norm: str = "none"
    """Norm inside the policy network, Dense -> Norm -> activation: none|layer|batch|batch_renorm|batch_moving."""
    value_norm: str = "none"
    """Norm inside the value network: none|layer|batch|batch_renorm|batch_moving."""
    bn_momentum: float = 0.99
    """Moving-average momentum of every BatchNorm variant (Keras default)."""
    log_std_init: float = 0.0
    """Initial log standard deviation of the Gaussian policy (Box actions)."""

    # --- normalization of observations and rewards ---------------------------------------
    norm_obs: bool = True
    """Normalize observations with the shared running normalizer."""
    obs_clip: float = 10.0
    """Normalized observations are clipped to [-obs_clip, obs_clip]."""
    obs_epsilon: float = 1e-8
    """Added to the running variance before the square root."""
    norm_reward: bool = False
    """Divide rewards by the running std of the discounted return (SB3 VecNormalize style)."""
    reward_clip: float = 10.0
    """Scaled rewards are clipped to [-reward_clip, reward_clip]."""
    nonfinite: str = "error"
    """NaN/Inf in an observation or reward: `error` (stop, naming env/step/feature) or `drop` (warn, mask the step)."""

    # --- execution, logging and checkpoints --------------------------------------------
    compile: str = "graph"
    """Hot paths as `graph` (tf.function), `xla` (jit_compile) or `eager` (debugging)."""
    tf_threads: int = 1
    """TensorFlow intra/inter-op threads (0: TF's default). A 64-64 MLP on 8-40 rows runs fastest
    single-threaded: thread hand-offs cost more than the arithmetic."""
    log_every: int = 2_000
    """Write scalars every this many env steps."""
    diagnostics: bool = True
    """Write the scale diagnostics (activations, gradients, normalizer, BatchNorm gap)."""
    diagnostics_every: int = 10_000
    """Compute and write scale diagnostics every this many env steps."""
    histograms_every: int = 50_000
    """Write weight/activation/normalizer histograms every this many env steps."""
    checkpoint_every: int = 50_000
    """Save a checkpoint every this many env steps (and always at the end)."""
    keep_checkpoints: int = 3
    """How many checkpoints to keep."""
    runs_root: str = "runs"
    """Root folder of runs; a run lives in runs_root/<env_id>/<agent>__seed<seed>__<time>/."""
    run_dir: str | None = None
    """Explicit run folder (overrides runs_root naming)."""
    agent: str = "a2c"
    """Recipe name, used in the run folder name and summary.json."""

    def replace(self, **changes: Any) -> Config:
        return validate(dataclasses.replace(self, **changes))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["hidden_sizes"] = list(self.hidden_sizes)
        return d


FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def field_docs() -> dict[str, str]:
    """Docstring of each field, read from this file's source (the string under the field)."""
    source = Path(__file__).read_text()
    tree = ast.parse(source)
    docs: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "Config":
            body = node.body
            for stmt, nxt in zip(body, body[1:], strict=False):
                if (
                    isinstance(stmt, ast.AnnAssign)
                    and isinstance(stmt.target, ast.Name)
                    and isinstance(nxt, ast.Expr)
                    and isinstance(nxt.value, ast.Constant)
                ):
                    docs[stmt.target.id] = nxt.value.value
    return docs


def _unknown_key(key: str) -> ConfigError:
    close = difflib.get_close_matches(key, FIELDS, n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return ConfigError(
        f"Unknown config key {key!r}.{hint} Valid keys: {', '.join(sorted(FIELDS))}."
    )


def _to_int(value: Any) -> int:
    """An int from an int, an integral float (`1e6`) or a string of either; else TypeError.
    Never truncates: `2.5`, `"2.5"`, `True`, `inf` are errors."""
    if isinstance(value, bool):
        raise TypeError
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            value = float(value)
    if isinstance(value, float):
        if not value.is_integer():
            raise TypeError
        return int(value)
    return operator.index(value)  # int or NumPy int; TypeError for anything else


def _coerce(key: str, value: Any) -> Any:
    """Convert a TOML or CLI value to the field's type, or raise naming key, value and type."""
    f = FIELDS[key]
    kind = str(f.type)
    try:
        if value is None:
            if "None" in kind:
                return None
            raise TypeError
        if kind.startswith("tuple"):
            if isinstance(value, str):
                value = [v for v in value.replace("(", "").replace(")", "").split(",") if v.strip()]
            if not isinstance(value, list | tuple):
                raise TypeError
            return tuple(_to_int(v) for v in value)
        if kind.startswith("bool"):
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
                return value.lower() in ("true", "1")
            raise TypeError
        if kind.startswith("int"):
            return _to_int(value)
        if kind.startswith("float"):
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if kind.startswith("str"):
            if not isinstance(value, str):
                raise TypeError
            return value
    except (TypeError, ValueError):
        pass
    else:
        return value
    raise ConfigError(f"Config key {key!r} expects {kind}, got {value!r} ({type(value).__name__}).")


def _check_choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        close = difflib.get_close_matches(value, allowed, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"Config key {key!r} = {value!r} is not allowed.{hint} Allowed: {', '.join(allowed)}."
        )


def _check_range(key: str, value: float, low: float | None, high: float | None, text: str) -> None:
    if (low is not None and not value > low) or (high is not None and not value <= high):
        raise ConfigError(f"Config key {key!r} = {value!r} is out of range: must be {text}.")


def validate(config: Config) -> Config:
    """Check every value; returns the config unchanged or raises ConfigError."""
    c = config
    for key, allowed in (
        ("policy_norm", NORMS),
        ("value_norm", NORMS),
        ("activation", ACTIVATIONS),
        ("optimizer", OPTIMIZERS),
        ("vectorization_mode", VECTORIZATION_MODES),
        ("autoreset_mode", AUTORESET_MODES),
        ("compile", COMPILE_MODES),
        ("nonfinite", NONFINITE_POLICIES),
        ("backend", BACKENDS),
    ):
        _check_choice(key, getattr(c, key), allowed)
    _check_range("gamma", c.gamma, 0.0, 1.0, "in (0, 1]")
    _check_range("gae_lambda", c.gae_lambda, None, 1.0, "in [0, 1]")
    if c.gae_lambda < 0:
        raise ConfigError(
            f"Config key 'gae_lambda' = {c.gae_lambda!r} is out of range: must be in [0, 1]."
        )
    for key in (
        "n_envs",
        "n_steps",
        "total_steps",
        "log_every",
        "diagnostics_every",
        "histograms_every",
        "checkpoint_every",
        "keep_checkpoints",
    ):
        _check_range(key, getattr(c, key), 0, None, "an integer >= 1")
    for key in (
        "learning_rate",
        "optimizer_eps",
        "obs_clip",
        "obs_epsilon",
        "reward_clip",
        "max_grad_norm",
    ):
        _check_range(key, getattr(c, key), 0.0, None, "> 0")
    if c.tf_threads < 0:
        raise ConfigError(
            f"Config key 'tf_threads' = {c.tf_threads!r} is out of range: must be >= 0."
        )
    for key in ("ent_coef", "vf_coef"):
        if not getattr(c, key) >= 0:
            raise ConfigError(
                f"Config key {key!r} = {getattr(c, key)!r} is out of range: must be >= 0."
            )
    for key in ("rms_decay", "bn_momentum"):
        value = getattr(c, key)
        if not 0.0 < value < 1.0:
            raise ConfigError(f"Config key {key!r} = {value!r} is out of range: must be in (0, 1).")
    if not c.hidden_sizes or any(h < 1 for h in c.hidden_sizes):
        raise ConfigError(
            f"Config key 'hidden_sizes' = {list(c.hidden_sizes)!r}: needs one or more widths >= 1."
        )
    if not c.env_id:
        raise ConfigError(
            "Config key 'env_id' is empty: give a Gymnasium id such as 'CartPole-v1'."
        )
    # Last, so a range check above names the range first. inf passes `> 0` but is never a
    # learning rate or a gradient clip (max_grad_norm = inf turns the clip's scale into NaN).
    for key, value in dataclasses.asdict(c).items():
        if isinstance(value, float) and not math.isfinite(value):
            if not (value == math.inf and key in INF_ALLOWED):
                allowed = " (or inf)" if key in INF_ALLOWED else ""
                raise ConfigError(
                    f"Config key {key!r} = {value!r} is out of range: must be a finite "
                    f"number{allowed}."
                )
    return c


def from_dict(values: dict[str, Any], base: Config | None = None) -> Config:
    """Build a validated Config from a flat mapping; unknown keys are errors."""
    changes = {}
    for key, value in values.items():
        if key not in FIELDS:
            raise _unknown_key(key)
        changes[key] = _coerce(key, value)
    return validate(dataclasses.replace(base or Config(), **changes))


def load_toml(path: str | Path, base: Config | None = None) -> Config:
    """Load a TOML file (flat keys, or grouped in tables whose names are ignored)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file {str(path)!r} does not exist.")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:  # message carries "(at line L, column C)"
        raise ConfigError(f"Config file {str(path)!r} does not parse: {e}") from None
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):  # [env], [a2c] ... tables are only grouping
            flat.update(value)
        else:
            flat[key] = value
    return from_dict(flat, base)


def parse_override(text: str) -> tuple[str, Any]:
    """`key=value` from `--set`; the value is read as TOML when it parses, else as a string."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got {text!r}.")
    key, raw = (s.strip() for s in text.split("=", 1))
    if key not in FIELDS:
        raise _unknown_key(key)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def to_toml(config: Config) -> str:
    import tomli_w

    data = {k: v for k, v in config.to_dict().items() if v is not None}
    return tomli_w.dumps(data)
