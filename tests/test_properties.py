"""Property-based tests (hypothesis): the normalizer merge against NumPy for any split of any
finite data, normalized output always finite, and config parsing (any unknown key is rejected,
every range check is exactly the documented range)."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from rlnorm.config import FIELDS, Config, ConfigError, from_dict, load_toml, parse_override, to_toml
from rlnorm.normalizer import ObservationNormalizer

# Modest budgets: the whole file runs in seconds. No example database in the repo.
SETTINGS = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def normalizer(obs_dim: int, clip: float = 10.0) -> ObservationNormalizer:
    space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float64)
    return ObservationNormalizer(space, epsilon=1e-8, clip=clip)


@st.composite
def data_and_split(draw, max_abs: float):
    """(data float64 [N, D], the batches it is cut into, in order; some may be empty)."""
    n = draw(st.integers(1, 40))
    d = draw(st.integers(1, 3))
    elements = st.floats(-max_abs, max_abs, allow_nan=False, allow_infinity=False)
    data = draw(arrays(np.float64, (n, d), elements=elements))
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=5)))
    return data, np.split(data, cuts)


# -- normalizer ---------------------------------------------------------------------------------
@SETTINGS
@given(case=data_and_split(max_abs=1e100))
def test_merge_of_any_split_equals_numpy_over_all_data(case):
    """Any data whose squares stay finite (|x| <= 1e100), cut anywhere (empty batches too), gives
    NumPy's count, mean and population variance of the concatenation."""
    data, batches = case
    norm = normalizer(data.shape[1])
    for batch in batches:
        norm.update(batch)
    # Tolerances from the float64 error of a stable merge: the mean within a few ulps of the
    # largest |x|; the variance within ulps of |x| times the std (plus ulps squared), NOT of
    # |x|^2: E[x^2] - E[x]^2 misses by ~1e-16 |x|^2 and fails on data like 1e8 + [0, 1, 2].
    # TensorFlow's CPU kernels flush subnormals (< 2.2e-308) to zero, NumPy does not: `tiny`.
    scale = np.abs(data).max(axis=0)
    std = data.std(axis=0)
    tiny = 4 * np.finfo(np.float64).tiny
    assert norm.count.numpy() == len(data)
    mean_err = np.abs(norm.mean.numpy() - data.mean(axis=0))
    assert (mean_err <= 1e-12 * scale + tiny).all(), mean_err
    var_err = np.abs(norm.var.numpy() - data.var(axis=0))
    assert (
        var_err <= 1e-9 * data.var(axis=0) + 1e-10 * scale * std + 1e-28 * scale**2 + tiny
    ).all()


@SETTINGS
@given(
    case=data_and_split(max_abs=1e9),
    probe=arrays(np.float64, (5, 3), elements=st.floats(-1e9, 1e9, allow_nan=False)),
    clip=st.sampled_from([0.5, 10.0, math.inf]),
)
def test_normalized_output_is_always_finite(case, probe, clip):
    """Whatever the statistics (fresh; constant features, variance 0; magnitudes up to 1e9),
    normalizing observations of magnitude up to 1e9 gives finite values within the clip, and a
    constant feature is not blown up to the clip by its zero variance."""
    data, batches = case
    norm = normalizer(data.shape[1], clip)
    probe = probe[:, : data.shape[1]]

    def check():
        for x in (data, probe):
            z = norm.normalize(x).numpy()
            assert np.isfinite(z).all() and np.abs(z).max() <= clip

    check()  # fresh statistics: count 0, mean 0, var 1
    for batch in batches:
        norm.update(batch)
        check()
    constant = np.ptp(data, axis=0) == 0
    # (x - mean) is exactly 0 up to the rounding of the batch mean (a few ulps of x), which
    # sqrt(var + epsilon) = 1e-4 magnifies 1e4-fold: far below 1, never the clip.
    assert (np.abs(norm.normalize(data).numpy()[:, constant]) < 1).all()


# -- config -------------------------------------------------------------------------------------
KEY_CHARS = st.characters(codec="ascii", categories=["Ll", "Lu", "Nd"], include_characters="_-")
UNKNOWN_KEYS = st.text(KEY_CHARS, min_size=1, max_size=24).filter(lambda k: k not in FIELDS)
VALUES = st.one_of(
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.text(st.characters(codec="ascii", categories=["Ll"]), max_size=8),
)


@SETTINGS
@given(key=UNKNOWN_KEYS, value=VALUES)
def test_any_unknown_key_is_rejected_by_name(key, value, tmp_path):
    with pytest.raises(ConfigError, match=f"Unknown config key {key!r}"):
        from_dict({"gamma": 0.9, key: value})  # beside a valid key, too
    with pytest.raises(ConfigError, match=f"Unknown config key {key!r}"):
        parse_override(f"{key}=1")
    path = tmp_path / "unknown.toml"
    path.write_text(f"gamma = 0.9\n[group]\n{key} = 1\n")  # grouped in a table, too
    with pytest.raises(ConfigError, match=f"Unknown config key {key!r}"):
        load_toml(path)


FLOATS = st.floats(allow_nan=True, allow_infinity=True)


@SETTINGS
@given(value=FLOATS)
def test_gamma_is_accepted_exactly_in_0_1(value):
    ok = 0.0 < value <= 1.0 and float32_is_normal(value)
    if ok:
        assert from_dict({"gamma": value}).gamma == value
    else:
        with pytest.raises(ConfigError, match=r"'gamma' = .* (must be in \(0, 1\]|subnormal)"):
            from_dict({"gamma": value})


def float32_is_normal(value: float) -> bool:
    """The graph computes in float32: a value that rounds to 0, a subnormal or inf is refused."""
    with np.errstate(over="ignore"):
        x = np.float32(value)
    return bool(np.isfinite(x) and abs(x) >= np.finfo(np.float32).tiny)


@SETTINGS
@given(
    key=st.sampled_from(
        [
            "learning_rate",
            "optimizer_eps",
            "obs_epsilon",
            "obs_clip",
            "reward_clip",
            "max_grad_norm",
        ]
    ),
    value=FLOATS,
)
def test_positive_keys_are_accepted_exactly_above_0(key, value):
    inf_ok = key in ("obs_clip", "reward_clip")  # inf: no clipping
    ok = value > 0 and (float32_is_normal(value) or (value == math.inf and inf_ok))
    if ok:
        assert getattr(from_dict({key: value}), key) == value
    else:
        with pytest.raises(ConfigError, match=f"'{key}' = "):
            from_dict({key: value})


@SETTINGS
@given(
    key=st.sampled_from(["n_steps", "n_envs", "total_steps", "checkpoint_every"]),
    value=st.one_of(st.integers(-(10**9), 10**9), st.floats(-1e9, 1e9)),
)
def test_count_keys_are_accepted_exactly_as_integers_from_1(key, value):
    ok = value >= 1 and float(value).is_integer()
    if ok:
        assert getattr(from_dict({key: value}), key) == int(value)
    else:
        with pytest.raises(ConfigError, match=f"'{key}'"):
            from_dict({key: value})


@SETTINGS
@given(
    gamma=st.floats(0.01, 1.0),
    n_steps=st.integers(1, 2048),
    hidden_sizes=st.lists(st.integers(1, 512), min_size=1, max_size=4),
    learning_rate=st.floats(1e-8, 1.0),
    target_return=st.one_of(st.none(), st.floats(-1e6, 1e6)),
)
def test_valid_configs_round_trip_through_toml(
    gamma, n_steps, hidden_sizes, learning_rate, target_return, tmp_path
):
    config = Config(
        gamma=gamma,
        n_steps=n_steps,
        hidden_sizes=tuple(hidden_sizes),
        learning_rate=learning_rate,
        target_return=target_return,
    ).replace()
    path = tmp_path / "config.toml"
    path.write_text(to_toml(config))
    assert load_toml(path) == config
