"""Tests for rlnorm.alarms on hand-made sequences of diagnostic values: each rule fires when its
condition persists after the warm-up, stays quiet on healthy-looking and one-off values, and
gives advice that fits the config."""

from __future__ import annotations

import math

import pytest

from rlnorm.alarms import BANDS, RULES, ScaleAlarms, mark
from rlnorm.config import Config

EVERY = 10_000  # the default diagnostics cadence


def healthy() -> dict[str, float]:
    """A default CartPole run's diagnostics, mid-run (rounded from a real run)."""
    return {
        "normalizer/normalized_obs_std_min": 0.4,
        "normalizer/normalized_obs_std_max": 1.3,
        "normalizer/normalized_obs_mean": 0.05,
        "normalizer/count": 20_000.0,
        "scale/value/output/mean": 50.0,
        "scale/value/output/std": 8.0,
        "outputs/return_mean": 52.0,
        "outputs/return_std": 15.0,
        "outputs/value_return_std_ratio": 8.0 / 15.0,
        "scale/policy/grad_norm": 0.8,
        "scale/value/grad_norm": 193.0,  # 386 x max_grad_norm: large, but healthy
        "scale/policy/update_ratio": 2e-3,
        "scale/value/update_ratio": 3e-3,
        "scale/value/layer1/saturated_fraction": 0.94,  # tanh: what the value net learns
        "outputs/policy_entropy_fraction": 0.8,
    }


def run(sequence, config=None) -> dict[str, tuple[int, str]]:
    """Feed `sequence` (one values dict per diagnostics step, at 0, 10k, 20k, ...)."""
    alarms = ScaleAlarms(config or Config())
    for i, values in enumerate(sequence):
        alarms.check(i * EVERY, values)
    return alarms.fired


def just_outside(quantity: str, side: str = "high") -> float:
    low, high = BANDS[quantity]
    return high * 1.01 if side == "high" else low / 1.01


# One bad condition per rule: (rule, values changed, config).
BAD = {
    "obs_scale": ({"normalizer/normalized_obs_std_max": just_outside("obs_std")}, {}),
    "value_scale": (
        {
            "scale/value/output/mean": 0.5,
            "scale/value/output/std": 0.05,
            "outputs/value_return_std_ratio": 0.05 / 15.0,
        },
        {},
    ),
    "grad_norm": ({"scale/policy/grad_norm": just_outside("grad_clip_ratio") * 0.5}, {}),
    "update_ratio": ({"scale/value/update_ratio": just_outside("update_ratio")}, {}),
    "inactive_units": (
        {"scale/policy/layer0/dead_fraction": just_outside("inactive_fraction")},
        {"activation": "relu"},
    ),
    "entropy": ({"outputs/policy_entropy_fraction": just_outside("entropy_fraction")}, {}),
    "policy_collapse": (
        {"outputs/policy_entropy_fraction": just_outside("entropy_fraction", "low")},
        {},
    ),
    "bn_gap": (
        {"batchnorm/policy_kl_train_infer": just_outside("bn_kl")},
        {"policy_norm": "batch"},
    ),
}


def test_every_rule_has_a_case():
    assert set(BAD) | {"nonfinite"} == set(RULES)


def test_healthy_run_fires_nothing():
    assert run([healthy()] * 30) == {}
    assert run([healthy()] * 30, Config(activation="relu")) == {}


@pytest.mark.parametrize("rule", list(BAD))
def test_rule_fires_when_the_condition_persists(rule):
    change, config = BAD[rule]
    config = Config(**config)
    bad = {**healthy(), **change}
    # Warm-up (step 0) does not count; held at 10k, 20k, 30k: 20k env steps -> fires at 30k.
    alarms = ScaleAlarms(config)
    fired_at = [step for step in range(0, 60_001, EVERY) if alarms.check(step, bad)]
    assert fired_at == [30_000]  # once per run
    assert list(alarms.fired) == [rule]


@pytest.mark.parametrize("rule", list(BAD))
def test_rule_ignores_a_single_batch_and_a_broken_streak(rule):
    change, config = BAD[rule]
    bad = {**healthy(), **change}
    ok = healthy()
    assert run([ok, bad, ok, bad, bad, ok, bad, ok, ok], Config(**config)) == {}
    # The streak counts from where the condition starts to hold again: fires at the third.
    fired = run([ok, bad, ok, bad, bad, bad], Config(**config))
    assert fired[rule][0] == 50_000


def test_warmup_and_persistence_are_config_keys():
    change, _ = BAD["update_ratio"]
    bad = {**healthy(), **change}
    config = Config(alarm_warmup_steps=0, alarm_persist_steps=0)
    assert ScaleAlarms(config).check(0, bad)[0][0] == "update_ratio"
    late = Config(alarm_warmup_steps=40_000)
    assert run([bad] * 7, late)["update_ratio"][0] == 60_000


def test_nonfinite_fires_at_once():
    fired = run([{**healthy(), "scale/value/layer0/out/std": math.nan}])
    assert fired["nonfinite"][0] == 0
    assert "scale/value/layer0/out/std" in fired["nonfinite"][1]


def test_a_cause_silences_its_consequences():
    # Rewards x1000 without norm_reward: value scale AND huge gradients; the cause is named.
    bad = {
        **healthy(),
        "outputs/return_mean": 5e4,
        "outputs/return_std": 2e4,
        "outputs/value_return_std_ratio": 8.0 / 2e4,
        "scale/policy/grad_norm": 1e6,
        "scale/value/grad_norm": 1e7,
    }
    fired = run([bad] * 6)
    assert list(fired) == ["value_scale"]
    assert "Set norm_reward = true" in fired["value_scale"][1]


def test_causes_are_resolved_in_rule_order():
    """max_grad_norm far too small: the clip (grad_norm) makes the steps tiny (update_ratio),
    so the value network lags its returns (value_scale): only the first cause is named."""
    clipped = {
        **healthy(),
        "scale/policy/grad_norm": 1.0,
        "scale/value/grad_norm": 50.0,
        "scale/policy/update_ratio": 6e-6,
        "scale/value/update_ratio": 6e-6,
        "scale/value/output/mean": 3.0,
        "scale/value/output/std": 0.1,
        "outputs/value_return_std_ratio": 0.1 / 15.0,
    }
    assert list(run([clipped] * 6, Config(max_grad_norm=1e-6))) == ["grad_norm"]
    # The same tiny steps without the clip: the learning rate is named, not the value scale.
    assert list(run([clipped] * 6)) == ["update_ratio"]


def test_value_scale_compares_magnitudes():
    """A batch holding episode ends (returns ~1 among ~50s): the returns' std is 16.7 while the
    values' is 1.2 (std ratio 0.072), but the value network has the returns' level (root mean
    squares hypot(51.66, 1.205) = 51.67 and hypot(47.135, 16.719) = 50.01). Not a mismatch."""
    levels_agree = {
        **healthy(),
        "outputs/value_return_std_ratio": 1.205 / 16.719,
        "scale/value/output/mean": 51.66,
        "scale/value/output/std": 1.205,
        "outputs/return_mean": 47.135,
        "outputs/return_std": 16.719,
    }
    assert run([levels_agree] * 6) == {}
    constant_returns = {
        **healthy(),
        "outputs/return_std": 0.0,
        "outputs/value_return_std_ratio": 1e8,
    }
    assert run([constant_returns] * 6) == {}


def test_batch_renorm_gap_is_judged_after_its_ramp():
    """batch_renorm is plain BatchNorm for 500 updates and ramps up over 1500 more (40 env
    steps per update: 80k env steps), so its gap is judged from there on."""
    gap = {**healthy(), "batchnorm/value_gap": just_outside("bn_value_gap")}
    config = Config(policy_norm="batch_renorm", value_norm="batch_renorm")
    assert run([gap] * 10, config) == {}  # up to 90k
    assert run([gap] * 11, config)["bn_gap"][0] == 100_000  # held 80k-100k
    assert run([gap] * 4, Config(value_norm="batch"))["bn_gap"][0] == 30_000


def test_tanh_saturation_never_fires():
    assert run([{**healthy(), "scale/value/layer1/saturated_fraction": 1.0}] * 10) == {}


def test_unfitted_normalizer_is_not_judged():
    first = {**healthy(), "normalizer/count": 0.0, "normalizer/normalized_obs_std_max": 300.0}
    assert run([first] * 6) == {}


@pytest.mark.parametrize(
    ("rule", "config", "says", "never_says"),
    [
        ("obs_scale", {"norm_obs": False}, "Set norm_obs = true", "min_running_var"),
        ("obs_scale", {}, "min_running_var_feature", "Set norm_obs"),
        ("value_scale", {}, "Set norm_reward = true", "already normalized"),
        ("value_scale", {"norm_reward": True}, "already normalized", "Set norm_reward"),
        ("inactive_units", {"activation": "relu"}, 'policy_norm = "layer"', "value_norm"),
        ("inactive_units", {"activation": "relu", "policy_norm": "layer"}, "lower", "norm"),
        ("bn_gap", {"policy_norm": "batch"}, '"batch_renorm"', "bn_momentum"),
        ("bn_gap", {"policy_norm": "batch_renorm"}, "bn_momentum", '"batch_renorm"'),
        ("entropy", {"ent_coef": 0.5}, "lower ent_coef (= 0.5)", "advantage_std"),
        ("entropy", {}, "advantage_std", "ent_coef"),
        ("policy_collapse", {}, "add an entropy bonus", "xx"),
        ("policy_collapse", {"ent_coef": 0.01}, "lower learning_rate", "entropy bonus"),
    ],
)
def test_advice_fits_the_config(rule, config, says, never_says):
    change, base = BAD[rule]
    fired = run([{**healthy(), **change}] * 12, Config(**{**base, **config}))
    message = fired[rule][1]
    assert says in message and never_says not in message.split("Consider")[-1]


def test_update_ratio_says_which_way():
    low = {**healthy(), "scale/policy/update_ratio": just_outside("update_ratio", "low")}
    assert "raise learning_rate" in run([low] * 6)["update_ratio"][1]
    assert (
        "lower learning_rate"
        in run([{**healthy(), **BAD["update_ratio"][0]}] * 6)["update_ratio"][1]
    )


def test_marks():
    low, high = BANDS["update_ratio"]
    assert mark("update_ratio", high * 2) == "BAD"
    assert mark("update_ratio", low / 2) == "BAD"
    assert mark("update_ratio", high / 2) == "WARN"  # within a factor 3 of the edge
    assert mark("entropy_fraction", 0.5) == "OK" and mark("bn_kl", 0.025) == "WARN"
    assert mark("update_ratio", math.sqrt(low * high)) == "OK"
    assert mark("obs_mean", 0.0) == "OK" and mark("obs_mean", -20.0) == "BAD"
    assert mark("update_ratio", math.nan) == "BAD" and mark("update_ratio", None) == ""


def test_summary_lists_alarms_in_step_order():
    alarms = ScaleAlarms(Config(alarm_warmup_steps=0, alarm_persist_steps=0))
    alarms.check(10, {**healthy(), **BAD["entropy"][0]})
    alarms.check(20, {**healthy(), **BAD["update_ratio"][0]})
    assert [(a["rule"], a["step"]) for a in alarms.summary()] == [
        ("entropy", 10),
        ("update_ratio", 20),
    ]
