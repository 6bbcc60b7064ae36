"""Scale alarms: a few rules checked at every diagnostics step; each fires once per run.

A rule reads the flat dict of diagnostic values (tag -> float, the tags of
`rlnorm.diagnostics`) and returns a readable message, or None. `ScaleAlarms.check` returns the
rules that fire for the first time; `ScaleDiagnostics` turns them into a console warning
(`ScaleAlarmWarning`) and a TensorBoard text under `alarms/<rule>`.

The thresholds are deliberately wide: an alarm means "a scale is off by an order of magnitude",
not "this could be tuned".
"""

from __future__ import annotations

import math
import re

OBS_STD_RANGE = (0.2, 5.0)
VALUE_RETURN_STD_RATIO_RANGE = (0.1, 10.0)  # also bounds the root-mean-square ratio
VALUE_WARMUP_UPDATES = 100  # updates before the value network's scale is judged
GRAD_NORM_FACTOR = 100.0  # x max_grad_norm, before clipping
INACTIVE_FRACTION = 0.5  # dead (relu) or saturated (tanh) units of one layer
BN_KL = 0.1  # KL(policy in training mode || policy in inference mode), nats
# Updates before a rule is judged (rules not named: from the first update). Before its first
# ~100 updates the value network predicts its initialization, not a scale it has learned (the
# default run's first update: std ratio 0.03), and an alarm spent on that would stay quiet
# about a real mismatch later in the run.
WARMUP_UPDATES = {"value_scale": VALUE_WARMUP_UPDATES}


class ScaleAlarmWarning(UserWarning):
    """A scale diagnostic is far outside its healthy range (see `rlnorm.alarms`)."""


def _nonfinite(values: dict, config) -> str | None:
    bad = sorted(k for k, v in values.items() if not math.isfinite(v))
    if not bad:
        return None
    shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
    return (
        f"NaN/Inf in {len(bad)} diagnostic value(s): {shown}. The update is skipped when the "
        "loss or a gradient is non-finite; check observations/rewards for extreme values or "
        "lower learning_rate."
    )


def _obs_scale(values: dict, config) -> str | None:
    std = values.get("normalizer/normalized_obs_std")
    if std is None or (config.norm_obs and values.get("normalizer/count", 1.0) == 0):
        return None  # an unfitted normalizer (first update) passes raw observations through
    low, high = OBS_STD_RANGE
    if low <= std <= high:
        return None
    what = "normalized" if config.norm_obs else "raw (norm_obs = false)"
    return (
        f"The networks' input ({what} observations) has std {std:.3g}, outside "
        f"[{low:g}, {high:g}]. "
        + (
            "Set norm_obs = true."
            if not config.norm_obs
            else "Check normalizer/min_running_var (a near-constant feature) and obs_clip."
        )
    )


def _value_scale(values: dict, config) -> str | None:
    ratio = values.get("outputs/value_return_std_ratio")
    if ratio is None or values.get("outputs/return_std", 0.0) < 1e-6:
        return None  # constant returns: the ratio says nothing
    low, high = VALUE_RETURN_STD_RATIO_RANGE
    if low <= ratio <= high:
        return None
    # The std ratio alone misjudges a batch that holds an episode's last steps: their returns
    # are ~1 while the others are ~50-100, so the batch's return std is large, and a value
    # network that predicts the returns' level well has a far smaller std (CartPole's default
    # run: std ratio 0.07 with value mean 51.7 against return mean 47.1). The scales disagree
    # only if the magnitudes (root mean square, which counts the mean) disagree too.
    value_rms = math.hypot(
        values.get("scale/value/output/mean", 0.0), values.get("scale/value/output/std", 0.0)
    )
    return_rms = math.hypot(values.get("outputs/return_mean", 0.0), values["outputs/return_std"])
    if low <= value_rms / return_rms <= high:
        return None
    return (
        f"Value predictions have std {values.get('scale/value/output/std', float('nan')):.3g} "
        f"and root mean square {value_rms:.3g}, but returns {values['outputs/return_std']:.3g} "
        f"and {return_rms:.3g} (ratios {ratio:.3g} and {value_rms / return_rms:.3g}, outside "
        f"[{low:g}, {high:g}]): the value network is on a different scale from its targets. "
        "Consider norm_reward = true."
    )


def _grad_norm(values: dict, config) -> str | None:
    limit = GRAD_NORM_FACTOR * config.max_grad_norm
    for net in ("policy", "value"):
        norm = values.get(f"scale/{net}/grad_norm")
        if norm is not None and norm > limit:
            return (
                f"The {net} gradient norm before clipping is {norm:.3g}, above "
                f"{GRAD_NORM_FACTOR:g} x max_grad_norm = {limit:g}: clipping is doing all the "
                "work. Check the loss scale (returns, advantages) and the learning rate."
            )
    return None


_INACTIVE = re.compile(r"scale/(policy|value)/layer(\d+)/(dead|saturated)_fraction$")


def _inactive_units(values: dict, config) -> str | None:
    for tag, frac in sorted(values.items()):
        m = _INACTIVE.match(tag)
        if m and frac > INACTIVE_FRACTION:
            net, layer, kind = m.groups()
            what = (
                "dead (relu output 0 on the whole batch)"
                if kind == "dead"
                else ("saturated (|tanh| > 0.99 on the whole batch)")
            )
            return (
                f"{frac:.0%} of the {net} network's layer{layer} units are {what}. Consider a "
                "norm inside the network (policy_norm / value_norm) or a lower learning_rate."
            )
    return None


def _bn_kl(values: dict, config) -> str | None:
    kl = values.get("batchnorm/policy_kl_train_infer")
    if kl is None or kl <= BN_KL:
        return None
    return (
        f"KL(policy in training mode || policy in inference mode) = {kl:.3g} nats on the update "
        f"batch (> {BN_KL:g}): BatchNorm's batch statistics and moving statistics disagree, so "
        "the policy being updated is not the one that acted. Consider policy_norm = "
        '"batch_moving" or "batch_renorm".'
    )


RULES = {
    "nonfinite": _nonfinite,
    "obs_scale": _obs_scale,
    "value_scale": _value_scale,
    "grad_norm": _grad_norm,
    "inactive_units": _inactive_units,
    "bn_kl": _bn_kl,
}


class ScaleAlarms:
    """The rules of this module, each firing at most once per run (per `ScaleAlarms`)."""

    def __init__(self, config):
        self.config = config
        self.fired: dict[str, tuple[int, str]] = {}  # rule -> (env step, message)

    def check(self, step: int, values: dict[str, float]) -> list[tuple[str, str]]:
        """Rules that fire at `step` for the first time, as (rule, message)."""
        new = []
        finite = {k: v for k, v in values.items() if math.isfinite(v)}
        updates_done = step // (self.config.n_steps * self.config.n_envs)
        for name, rule in RULES.items():
            if name in self.fired or updates_done < WARMUP_UPDATES.get(name, 0):
                continue
            # Only the nonfinite rule sees NaN/Inf; the others judge the finite values.
            message = rule(values if name == "nonfinite" else finite, self.config)
            if message is not None:
                self.fired[name] = (step, message)
                new.append((name, message))
        return new
