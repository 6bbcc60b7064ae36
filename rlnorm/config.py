"""Run configuration: one frozen dataclass, loaded from TOML and overridden from the CLI.

Field names follow Stable-Baselines3 / CleanRL (`gamma`, `gae_lambda`, `ent_coef`, ...), so a
user of either feels at home. Every field is declared with `param(default, doc, ...)`: its doc,
its range or choices live in the field's metadata, `--help`, `rlnorm config` and the run's
config table are built from them, and ONE loop (`validate`) checks every field against them.
Unknown keys and bad values are rejected before any environment is made, with the key, the
value and what is allowed. Importing this module needs no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import operator
import struct
import sys
import textwrap
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# The one list of norm names: config choices, and the keys of networks.make_norm_layer's table.
NORMS = ("none", "layer", "batch", "batch_renorm", "batch_moving")
# Keys that allow None also take these spellings on the command line and as TOML strings.
NONE_WORDS = ("none", "None", "null")
# float32 (the graph's dtype) flushes anything below its smallest normal number to 0.
FLOAT32_TINY = 2.0**-126
FLOAT32_MAX = 3.4028234663852886e38


class ConfigError(ValueError):
    """A configuration key or value is not allowed; the message names the key and the fix."""


def param(
    default: Any,
    doc: str,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    choices: tuple[str, ...] | None = None,
    allow_inf: bool = False,
    float32: bool | None = None,
    example: Any = None,
    section: str | None = None,
    check: Any = None,
) -> Any:
    """A Config field with its doc and what is allowed, kept in the field's metadata.

    gt/ge/lt/le: bounds; choices: the allowed strings; allow_inf: +inf means "no limit";
    float32: the value becomes float32 in the graph, so a value float32 rounds to 0 (or to a
    subnormal) or overflows is refused; None (the default): every float field but those marked;
    example: the value `rlnorm config` shows for a key whose default is None; section: the
    header this field opens in `rlnorm config`; check: value -> error message or None."""
    meta = dict(doc=doc, gt=gt, ge=ge, lt=lt, le=le, choices=choices, allow_inf=allow_inf)
    meta.update(float32=float32 if float32 is not None else isinstance(default, float))
    meta.update(example=example, section=section, check=check)
    return dataclasses.field(default=default, metadata=meta)


def _widths(value: tuple[int, ...]) -> str | None:
    if not value or min(value) < 1:
        return f"Config key 'hidden_sizes' = {list(value)!r}: needs one or more widths >= 1."
    return None


def _env_id(value: str) -> str | None:
    if not value:
        return "Config key 'env_id' is empty: give a Gymnasium id such as 'CartPole-v1'."
    return None


def _sde_sample_freq(value: int) -> str | None:
    if value == 0:
        return "Config key 'sde_sample_freq' = 0: use -1 (once per rollout) or a step count >= 1."
    return None


@dataclass(frozen=True)
class Config:
    """Every setting of a run. Each field is a `param`: doc, bounds and choices in its metadata,
    checked by `validate`; a `section` opens a group in `rlnorm config`."""

    env_id: str = param(
        "CartPole-v1",
        "Gymnasium id; `module:EnvName-vN` imports `module` first (your own registered envs).",
        section="environment",
        check=_env_id,
    )
    n_envs: int = param(8, "Number of parallel environments in the vector env.", ge=1)
    vectorization_mode: str = param(
        "sync",
        "`sync`, `async` (one process per env) or `vector_entry_point` (the env's own "
        "NumPy-vectorized form, e.g. CartPole).",
        choices=("sync", "async", "vector_entry_point"),
    )
    autoreset_mode: str = param(
        "same_step",
        "Gymnasium 1.x autoreset: `same_step` (final obs in info) or `next_step` (reset step "
        "masked).",
        choices=("same_step", "next_step"),
    )
    seed: int = param(
        0,
        "Seeds TensorFlow, NumPy and the environments; same seed + config + machine -> same "
        "numbers.",
    )
    backend: str = param(
        "python",
        "`python`: Gymnasium envs stepped from Python; `compiled`: TF-native env, loop in one "
        "graph.",
        choices=("python", "compiled"),
    )

    total_steps: int = param(
        500_000,
        "Environment steps to train for (summed over envs).",
        ge=1,
        section="algorithm (A2C)",
    )
    n_steps: int = param(
        5, "Rollout length per env per update; one update sees n_steps * n_envs transitions.", ge=1
    )
    gamma: float = param(0.99, "Discount factor.", gt=0.0, le=1.0)
    gae_lambda: float = param(
        1.0, "GAE(lambda); 1.0 gives n-step returns (SB3's A2C default).", ge=0.0, le=1.0
    )
    learning_rate: float = param(7e-4, "Learning rate of both optimizers.", gt=0.0)
    lr_schedule: str = param(
        "constant",
        "`constant`, or `linear`: learning_rate * (1 - env steps done / total_steps), the steps "
        "done counting the update's own rollout (SB3 / rl-zoo `lin_<lr>`).",
        choices=("constant", "linear"),
    )
    optimizer: str = param(
        "rmsprop",
        "`rmsprop` (PyTorch/SB3 form: eps outside the sqrt) or `adam`.",
        choices=("rmsprop", "adam"),
    )
    rms_decay: float = param(
        0.99, "RMSprop smoothing constant (PyTorch `alpha`, Keras `rho`).", gt=0.0, lt=1.0
    )
    optimizer_eps: float = param(
        1e-5, "Optimizer epsilon (added to sqrt(v), as in PyTorch).", gt=0.0
    )
    ent_coef: float = param(0.0, "Entropy bonus coefficient.", ge=0.0)
    vf_coef: float = param(0.5, "Value loss coefficient.", ge=0.0)
    max_grad_norm: float = param(
        0.5, "Global-norm gradient clip (per network or over both: see grad_clip).", gt=0.0
    )
    grad_clip: str = param(
        "per_network",
        "`per_network`: max_grad_norm clips each network's gradient; `global`: ONE clip over "
        "the policy and value gradients together (SB3's single optimizer).",
        choices=("per_network", "global"),
    )
    normalize_advantage: bool = param(False, "Standardize advantages per update batch.")
    target_return: float | None = param(
        None,
        "Stop early once the mean of the last 100 episode returns reaches this (None: never).",
        allow_inf=True,
        float32=False,  # compared with episode returns in Python, never in the graph
        example=475.0,
    )

    hidden_sizes: tuple[int, ...] = param(
        (64, 64),
        "Hidden layer widths, the same for the policy and the value network.",
        section="networks",
        check=_widths,
    )
    activation: str = param("tanh", "Hidden activation.", choices=("tanh", "relu"))
    policy_norm: str = param(
        "none", "Norm inside the policy network, Dense -> Norm -> activation.", choices=NORMS
    )
    value_norm: str = param("none", "Norm inside the value network.", choices=NORMS)
    bn_momentum: float | None = param(
        None,
        "Moving-average momentum of the BatchNorm norms (None: 0.999 for batch_renorm, "
        "Keras's 0.99 for batch and batch_moving).",
        gt=0.0,
        lt=1.0,
        example=0.99,
    )
    log_std_init: float = param(
        0.0, "Initial log standard deviation of the Gaussian policy (Box actions)."
    )
    ortho_init: bool = param(
        True,
        "Orthogonal init (SB3/CleanRL gains); false: PyTorch's nn.Linear default, as SB3's "
        "ortho_init=False.",
    )
    use_sde: bool = param(
        False,
        "Box actions: generalized state-dependent exploration (gSDE, Raffin et al. 2021), noise "
        "= policy features @ a sampled exploration matrix.",
    )
    sde_sample_freq: int = param(
        -1,
        "gSDE: sample a new exploration matrix every this many env steps (-1: once per rollout).",
        ge=-1,
        check=_sde_sample_freq,
    )
    full_std: bool = param(
        True, "gSDE: one log-std per (feature, action) pair; false: one per feature."
    )

    norm_obs: bool = param(
        True,
        "Normalize observations with the shared running normalizer.",
        section="normalization of observations and rewards",
    )
    obs_clip: float = param(
        10.0,
        "Normalized observations are clipped to [-obs_clip, obs_clip] (inf: no clip).",
        gt=0.0,
        allow_inf=True,
    )
    obs_epsilon: float = param(
        1e-20,
        "Added to the running variance before the square root. Far below any real feature's "
        "variance, so the normalizer ignores the observations' units (VecNormalize's 1e-8 "
        "shrinks features whose std is under 1e-4).",
        gt=0.0,
    )
    norm_reward: bool = param(
        False,
        "Divide rewards by the running std of the discounted return (SB3 VecNormalize style).",
    )
    reward_clip: float = param(
        10.0,
        "Scaled rewards are clipped to [-reward_clip, reward_clip] (inf: no clip).",
        gt=0.0,
        allow_inf=True,
    )
    value_target_norm: str = param(
        "popart",
        "`popart`: the value head learns normalized targets, its outputs preserved exactly as "
        "the targets' statistics move (van Hasselt et al. 2016), so the critic's problem is the "
        "same at any reward scale; `none`: raw targets (SB3's A2C).",
        choices=("none", "popart"),
    )
    nonfinite: str = param(
        "error",
        "NaN/Inf in an observation or reward: `error` (stop, naming env/step/feature) or "
        "`drop` (warn, mask the step).",
        choices=("error", "drop"),
    )

    compile: str = param(
        "graph",
        "Hot paths as `graph` (tf.function), `xla` (jit_compile) or `eager` (debugging).",
        choices=("graph", "xla", "eager"),
        section="execution, logging and checkpoints",
    )
    xla_cache: bool = param(
        True,
        "compile = `xla`: keep compiled XLA programs in a per-user cache folder "
        "($RLNORM_XLA_CACHE, else ~/.cache/rlnorm/xla), so a later run of the same graph "
        "skips the compile.",
    )
    fast_paths: bool = param(
        True,
        "Use rlnorm's private TensorFlow/Keras fast paths (rlnorm/_fast.py); false runs "
        "everything through public APIs, same numbers.",
    )
    tf_threads: int = param(
        1,
        "TensorFlow intra/inter-op threads (0: TF's default). A 64-64 MLP on 8-40 rows runs "
        "fastest single-threaded: thread hand-offs cost more than the arithmetic.",
        ge=0,
        le=256,
    )
    stop_grace_seconds: float = param(
        30.0,
        "After Ctrl-C or SIGTERM, how long the current update may take before rlnorm exits "
        "without it (an env step that blocks), naming the last checkpoint.",
        gt=0.0,
    )
    log_every: int = param(2_000, "Write scalars every this many env steps.", ge=1)
    diagnostics: bool = param(
        True, "Write the scale diagnostics (activations, gradients, normalizer, BatchNorm gap)."
    )
    diagnostics_every: int = param(
        10_000, "Compute and write scale diagnostics every this many env steps.", ge=1
    )
    histograms_every: int = param(
        50_000, "Write weight/activation/normalizer histograms every this many env steps.", ge=1
    )
    alarm_warmup_steps: int = param(
        10_000,
        "Scale alarms judge the diagnostics from this env step on (rlnorm/alarms.py).",
        ge=0,
    )
    alarm_persist_steps: int = param(
        20_000,
        "A scale alarm fires once its condition has held at every diagnostics step over this "
        "many env steps.",
        ge=0,
    )
    normalizer_features_logged: int = param(
        8,
        "The observation normalizer's running mean/std of the first this many features are "
        "written as scalars.",
        ge=0,
    )
    checkpoint_every: int = param(
        50_000, "Save a checkpoint every this many env steps (and always at the end).", ge=1
    )
    keep_checkpoints: int = param(3, "How many checkpoints to keep.", ge=1)
    runs_root: str = param(
        "runs",
        "Root folder of runs; a run lives in runs_root/<env_id>/<agent>__seed<seed>__<time>/.",
    )
    run_dir: str | None = param(
        None,
        "Explicit run folder (overrides runs_root naming); never saved in a run's config.",
        example="runs/my-run",
    )
    agent: str = param("a2c", "Recipe name, used in the run folder name and summary.json.")

    def replace(self, **changes: Any) -> Config:
        return validate(dataclasses.replace(self, **changes))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["hidden_sizes"] = list(self.hidden_sizes)
        return d


FIELDS = {f.name: f for f in dataclasses.fields(Config)}
# Not written into a run's config.toml: a config reused as a template must not train into
# the old run's folder.
NOT_SAVED = ("run_dir",)


@functools.cache
def field_types() -> dict[str, Any]:
    """The real type of each field (`int`, `float | None`, `tuple[int, ...]`), not its string."""
    return typing.get_type_hints(Config)


def field_docs() -> dict[str, str]:
    """The doc of each field, from its metadata."""
    return {key: f.metadata["doc"] for key, f in FIELDS.items()}


def _type_name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) else repr(tp).replace("NoneType", "None")


def _allows_none(tp: Any) -> bool:
    return isinstance(tp, types.UnionType) and type(None) in tp.__args__


def _base_type(tp: Any) -> Any:
    """`float` for `float | None`; `tuple` for `tuple[int, ...]`; else the type itself."""
    if _allows_none(tp):
        (tp,) = (a for a in tp.__args__ if a is not type(None))
    return typing.get_origin(tp) or tp


def range_text(key: str) -> str | None:
    """What the bounds of `key` allow, as its error message says it: `in (0, 1]`, `> 0`, ..."""
    m = FIELDS[key].metadata
    low = ("(", m["gt"]) if m["gt"] is not None else ("[", m["ge"]) if m["ge"] is not None else None
    high = (
        (")", m["lt"]) if m["lt"] is not None else ("]", m["le"]) if m["le"] is not None else None
    )
    if low is None and high is None:
        return None
    if low and high:
        text = f"in {low[0]}{low[1]:g}, {high[1]:g}{high[0]}"
    elif low:
        text = f"{'>' if low[0] == '(' else '>='} {low[1]:g}"
    else:
        text = f"{'<' if high[0] == ')' else '<='} {high[1]:g}"
    return f"an integer {text}" if _base_type(field_types()[key]) is int else text


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


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    raise TypeError


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError
    return float(value)


def _to_str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError
    return value


def _to_ints(value: Any) -> tuple[int, ...]:
    if isinstance(value, str):  # "64,64", "(64, 64)", "[64, 64]" from the command line
        value = [v for v in value.strip("()[] ").split(",") if v.strip()]
    if not isinstance(value, list | tuple):
        raise TypeError
    return tuple(_to_int(v) for v in value)


CONVERTERS = {int: _to_int, bool: _to_bool, float: _to_float, str: _to_str, tuple: _to_ints}


def coerce(key: str, value: Any) -> Any:
    """Convert a TOML, CLI or Python value to the field's type, or raise naming key, value
    and type. A key that allows None takes None and the words in NONE_WORDS."""
    tp = field_types()[key]
    if _allows_none(tp) and (value is None or value in NONE_WORDS):
        return None
    try:
        if value is None:
            raise TypeError
        return CONVERTERS[_base_type(tp)](value)
    except (TypeError, ValueError):
        pass
    raise ConfigError(
        f"Config key {key!r} expects {_type_name(tp)}, got {value!r} ({type(value).__name__})."
    )


def _check(key: str, value: Any) -> None:
    """Raise ConfigError if `value` (already of the field's type) breaks the field's metadata."""
    m = FIELDS[key].metadata
    if m["choices"] is not None and value not in m["choices"]:
        close = difflib.get_close_matches(value, m["choices"], n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"Config key {key!r} = {value!r} is not allowed.{hint} "
            f"Allowed: {', '.join(m['choices'])}."
        )
    if m["check"] is not None and (message := m["check"](value)):
        raise ConfigError(message)
    if not isinstance(value, int | float):
        return
    # `not value > low` (not `value <= low`), so NaN fails every bound.
    if (
        (m["gt"] is not None and not value > m["gt"])
        or (m["ge"] is not None and not value >= m["ge"])
        or (m["lt"] is not None and not value < m["lt"])
        or (m["le"] is not None and not value <= m["le"])
    ):
        raise ConfigError(
            f"Config key {key!r} = {value!r} is out of range: must be {range_text(key)}."
        )
    # After the bounds, so a bound names itself first. inf passes `> 0` but is never a
    # learning rate or a gradient clip (max_grad_norm = inf turns the clip's scale into NaN).
    if isinstance(value, float) and not math.isfinite(value):
        if not (value == math.inf and m["allow_inf"]):
            also = " (or inf)" if m["allow_inf"] else ""
            raise ConfigError(
                f"Config key {key!r} = {value!r} is out of range: must be a finite number{also}."
            )
    if m["float32"] and math.isfinite(value) and value != 0:
        try:
            # "<f" (standard size) raises on overflow; native "f" casts without checking.
            rounded = struct.unpack("<f", struct.pack("<f", value))[0]
        except OverflowError:
            also = " (or inf)" if m["allow_inf"] else ""
            raise ConfigError(
                f"Config key {key!r} = {value!r} overflows float32 (the graph's precision): "
                f"use a value <= {FLOAT32_MAX:.2g}{also}."
            ) from None
        if abs(rounded) < FLOAT32_TINY:
            raise ConfigError(
                f"Config key {key!r} = {value!r} is 0 or subnormal in float32 (the graph's "
                f"precision): use a value >= {FLOAT32_TINY:.2g}."
            )


def validate(config: Config) -> Config:
    """Check every field against its type and metadata, in declaration order; returns the
    config with each value in its field's type (`1` -> `1.0` for a float key) or raises."""
    changes = {}
    for key in FIELDS:
        value = getattr(config, key)
        typed = coerce(key, value)
        if typed is not None:
            _check(key, typed)
        if type(typed) is not type(value) or typed != value:
            changes[key] = typed
    return dataclasses.replace(config, **changes) if changes else config


def from_dict(values: dict[str, Any], base: Config | None = None) -> Config:
    """Build a validated Config from a flat mapping; unknown keys are errors."""
    changes = {}
    for key, value in values.items():
        if key not in FIELDS:
            raise _unknown_key(key)
        changes[key] = coerce(key, value)
    return validate(dataclasses.replace(base or Config(), **changes))


def load_toml(path: str | Path, base: Config | None = None) -> Config:
    """Load a TOML file (flat keys, or grouped in tables whose names are ignored)."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise ConfigError(
            f"Config file {str(path)!r} is not a regular file (a folder or a device)."
        )
    if not path.is_file():
        raise ConfigError(f"Config file {str(path)!r} does not exist.")
    try:
        text = path.read_bytes().decode("utf-8-sig")  # a byte-order mark is not TOML's business
        data = tomllib.loads(text)
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"Config file {str(path)!r} is not UTF-8 text (byte {e.object[e.start]:#04x} at "
            f"offset {e.start}); TOML files are UTF-8."
        ) from None
    except OSError as e:
        raise ConfigError(f"Config file {str(path)!r} cannot be read: {e.strerror}.") from None
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
    """`key=value` from `--set`; the value is read as TOML when it parses, else as a string
    (so `--set target_return=none` reaches `coerce` as the word "none")."""
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


def _toml_value(value: Any) -> str:
    import tomli_w

    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return tomli_w.dumps({"v": value})[len("v = ") :].strip()


def render_toml(config: Config, header: str, skip: tuple[str, ...] = ()) -> str:
    """`config` as TOML that `load_toml` reads back to `config`: every key (but `skip`) with
    its doc and what it allows as `# ` comments, under section headers. A None value is a
    commented-out example when None is the default, else the string "none"."""
    lines = [f"# {line}" for line in header.splitlines()]
    for key, f in FIELDS.items():
        if key in skip:
            continue
        m, value = f.metadata, getattr(config, key)
        if m["section"]:
            lines += ["", "", f"# --- {m['section']} ".ljust(72, "-")]
        lines.append("")
        lines += [f"# {line}" for line in textwrap.wrap(" ".join(m["doc"].split()), 96)]
        if range_text(key):
            lines.append(f"# must be {range_text(key)}")
        if m["choices"]:
            lines.append(f"# one of: {', '.join(m['choices'])}")
        if value is not None:
            lines.append(f"{key} = {_toml_value(value)}")
        elif f.default is None:
            lines.append(f"# {key} = {_toml_value(m['example'])}  # default: None (unset)")
        else:
            lines.append(f'{key} = "none"')
    return "\n".join(lines) + "\n"


def to_toml(config: Config) -> str:
    """The run folder's config.toml: every key but run_dir, documented; a template for
    `rlnorm train config.toml` that trains a new run like this one."""
    return render_toml(config, "The resolved config of an rlnorm run.", skip=NOT_SAVED)
