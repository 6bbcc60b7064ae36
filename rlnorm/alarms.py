"""Scale alarms: rules that judge a run's diagnostics over time; each fires once per run.

A rule reads the flat dict of diagnostic values of one diagnostics step (tag -> float, the tags
of `rlnorm.diagnostics`) and the config, and returns the message it would print while its
condition holds, or None. An alarm fires only when the condition has held at EVERY diagnostics
step over `alarm_persist_steps` env steps (default 20k: three checks at the default cadence),
all after `alarm_warmup_steps` (default 10k): one odd batch or a network still showing its
initialization never fires. `nonfinite` fires at once. A rule whose condition another rule
explains at the same step (EXPLAINED_BY) waits: huge gradients under a value network 1000x off
its returns are that rule's finding, not a second one.

The thresholds (BANDS) were calibrated on labelled healthy and broken runs
(benchmarks/alarms.py, docs/alarms.md); `rlnorm doctor` marks its rows against the same ones.
The advice never contradicts the config: no "add a norm" to a network that has one.
"""

from __future__ import annotations

import math
import re

# quantity -> (low, high): outside it the condition holds. Inside it but within a factor
# WARN_MARGIN of an edge, `rlnorm doctor` marks the row WARN.
BANDS = {
    "obs_std": (1e-2, 10.0),  # per-feature std of the networks' input, smallest and largest
    "obs_mean": (-10.0, 10.0),  # mean of the networks' input
    "value_return_ratio": (0.25, 4.0),  # root mean square of V(s) / of the returns
    "grad_clip_ratio": (0.0, 1e4),  # pre-clip gradient norm / max_grad_norm
    "update_ratio": (1e-5, 3e-2),  # ||update|| / ||weights|| of one update
    "inactive_fraction": (0.0, 0.5),  # dead relu units on every row of the batch
    "entropy_fraction": (1e-3, 0.95),  # policy entropy / its maximum (Discrete)
    "bn_kl": (0.0, 0.03),  # KL(policy in training mode || in inference mode), nats
    "bn_value_gap": (0.0, 0.3),  # |V_train - V_infer| / return std
}
# batch_renorm IS plain BatchNorm for its first 500 updates and renormalizes only partly until
# its ramp ends (rlnorm/batchnorm.py: BatchRenormalization's warmup_steps + ramp_steps), so its
# train/infer gap is judged after that, in updates.
RENORM_SETTLED_UPDATES = 500 + 1500
WARN_MARGIN = 3.0
# Upper edges judged on a linear scale (the others: within a factor WARN_MARGIN).
LINEAR = ("obs_mean", "inactive_fraction", "entropy_fraction", "bn_kl", "bn_value_gap")
# A rule waits while one of these holds at the same step and does not wait itself: they name
# the cause. Resolved in RULES order, a rule not yet resolved counting as not waiting (so in the
# cycle value_scale -> grad_norm -> update_ratio -> value_scale, grad_norm is the one named).
EXPLAINED_BY = {
    "value_scale": ("update_ratio",),  # a value network that barely moves lags its returns
    "grad_norm": ("value_scale", "obs_scale"),
    # a collapsed (deterministic) policy gets no gradient: its tiny steps are that finding
    "update_ratio": ("grad_norm", "policy_collapse"),
    "policy_collapse": ("obs_scale", "value_scale"),
    "inactive_units": ("obs_scale",),
    # a policy that never leaves uniform because nothing moves it
    "entropy": ("update_ratio", "grad_norm", "obs_scale", "value_scale"),
}


class ScaleAlarmWarning(UserWarning):
    """A scale diagnostic is far outside its healthy range (see `rlnorm.alarms`)."""


def outside(quantity: str, x: float) -> bool:
    low, high = BANDS[quantity]
    return not low <= x <= high


def mark(quantity: str, x: float | None) -> str:
    """OK / WARN / BAD of one value against its band (BAD: outside; WARN: near an edge)."""
    if x is None or not math.isfinite(x):
        return "BAD" if x is not None else ""
    low, high = BANDS[quantity]
    if not low <= x <= high:
        return "BAD"
    if quantity in LINEAR:  # WARN in the last third of the way to an edge
        near_high = x > high * 2 / 3
        near_low = low < 0 and x < low * 2 / 3 or low > 0 and x < low * WARN_MARGIN
    else:  # WARN within a factor WARN_MARGIN of an edge
        near_low, near_high = low > 0 and x < low * WARN_MARGIN, x > high / WARN_MARGIN
    return "WARN" if near_low or near_high else "OK"


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
    lo, hi = (
        values.get("normalizer/normalized_obs_std_min"),
        values.get("normalizer/normalized_obs_std_max"),
    )
    mean = values.get("normalizer/normalized_obs_mean")
    if lo is None or hi is None or mean is None:
        return None
    if config.norm_obs and values.get("normalizer/count", 1.0) == 0:
        return None  # an unfitted normalizer (first update) passes raw observations through
    if not (outside("obs_std", lo) or outside("obs_std", hi) or outside("obs_mean", mean)):
        return None
    what = "normalized" if config.norm_obs else "raw (norm_obs = false)"
    low, high = BANDS["obs_std"]
    advice = (
        "Set norm_obs = true."
        if not config.norm_obs
        else "Check normalizer/min_running_var_feature (a near-constant feature) and obs_clip."
    )
    return (
        f"The networks' input ({what} observations) has per-feature std {lo:.3g} to {hi:.3g} "
        f"and mean {mean:.3g}: outside std [{low:g}, {high:g}] or mean "
        f"[{BANDS['obs_mean'][0]:g}, {BANDS['obs_mean'][1]:g}]. {advice}"
    )


def value_return_ratios(values: dict) -> tuple[float, float] | None:
    """(value std / return std, value rms / return rms) of the update batch, or None."""
    ratio = values.get("outputs/value_return_std_ratio")
    return_std = values.get("outputs/return_std", 0.0)
    if ratio is None or return_std < 1e-6:
        return None  # constant returns: the ratio says nothing
    value_rms = math.hypot(
        values.get("scale/value/output/mean", 0.0), values.get("scale/value/output/std", 0.0)
    )
    return_rms = math.hypot(values.get("outputs/return_mean", 0.0), return_std)
    return ratio, value_rms / return_rms


def _value_scale(values: dict, config) -> str | None:
    ratios = value_return_ratios(values)
    # The root-mean-square ratio, not the std ratio: a batch that holds an episode's last steps
    # has returns ~1 among ~50-100, so its return std is large while a value network that
    # predicts the returns' level well has a far smaller std (healthy CartPole runs: std ratio
    # down to 4e-4, root-mean-square ratio 0.49 to 1.09; docs/alarms.md).
    if ratios is None or not outside("value_return_ratio", ratios[1]):
        return None
    low, high = BANDS["value_return_ratio"]
    advice = (
        "Set norm_reward = true."
        if not config.norm_reward
        else "Rewards are already normalized: check reward_clip and the value learning rate."
    )
    return (
        f"Value predictions have std {values.get('scale/value/output/std', float('nan')):.3g} "
        f"but returns {values['outputs/return_std']:.3g} (std ratio {ratios[0]:.3g}, "
        f"root-mean-square ratio {ratios[1]:.3g}, outside [{low:g}, {high:g}]): the value "
        f"network is on a different scale from its targets. {advice}"
    )


def _grad_norm(values: dict, config) -> str | None:
    limit = BANDS["grad_clip_ratio"][1]
    for net in ("policy", "value"):
        norm = values.get(f"scale/{net}/grad_norm")
        if norm is not None and outside("grad_clip_ratio", norm / config.max_grad_norm):
            return (
                f"The {net} gradient norm before clipping is {norm:.3g}, "
                f"{norm / config.max_grad_norm:.3g} x max_grad_norm = {config.max_grad_norm:g} "
                f"(> {limit:g}x): clipping shrinks every update to a sliver of its gradient. "
                "Raise max_grad_norm, or check the loss scale (returns, advantages)."
            )
    return None


def _update_ratio(values: dict, config) -> str | None:
    low, high = BANDS["update_ratio"]
    for net in ("policy", "value"):
        ratio = values.get(f"scale/{net}/update_ratio")
        if ratio is None or not outside("update_ratio", ratio):
            continue
        what, advice = (
            ("large", "lower learning_rate") if ratio > high else ("small", "raise learning_rate")
        )
        return (
            f"One update moves the {net} weights by {ratio:.3g} of their norm, outside "
            f"[{low:g}, {high:g}]: the steps are too {what} (learning_rate = "
            f"{config.learning_rate:g}). Consider: {advice}."
        )
    return None


_DEAD = re.compile(r"scale/(policy|value)/layer(\d+)/dead_fraction$")


def _inactive_units(values: dict, config) -> str | None:
    # Dead relu units only: tanh units saturated on a whole batch are what a healthy CartPole
    # value network learns to use (binary features for returns of ~100; docs/alarms.md), and
    # they recover, while a dead relu unit never gets a gradient again.
    for tag, frac in sorted(values.items()):
        m = _DEAD.match(tag)
        if m and outside("inactive_fraction", frac):
            net, layer = m.groups()
            norm = config.policy_norm if net == "policy" else config.value_norm
            advice = (
                "lower learning_rate"
                if norm != "none"
                else f'lower learning_rate, or a norm before the activation ({net}_norm = "layer")'
            )
            return (
                f"{frac:.0%} of the {net} network's layer{layer} relu units are dead (output 0 "
                f"on the whole batch): they get no gradient. Consider: {advice}."
            )
    return None


def _entropy(values: dict, config) -> str | None:
    fraction = values.get("outputs/policy_entropy_fraction")  # Discrete policies only
    if fraction is None or fraction <= BANDS["entropy_fraction"][1]:
        return None
    advice = (
        f"lower ent_coef (= {config.ent_coef:g})"
        if config.ent_coef > 0
        else "check learning_rate and the advantages (outputs/advantage_std)"
    )
    return (
        f"The policy's entropy stays at {fraction:.1%} of its maximum (uniform actions): it is "
        f"not learning to prefer any action. Consider: {advice}."
    )


def _policy_collapse(values: dict, config) -> str | None:
    fraction = values.get("outputs/policy_entropy_fraction")  # Discrete policies only
    if fraction is None or fraction >= BANDS["entropy_fraction"][0]:
        return None
    advice = "lower learning_rate" + (
        ", or add an entropy bonus (ent_coef)" if not config.ent_coef else ""
    )
    return (
        f"The policy's entropy is {fraction:.2g} of its maximum: it has turned deterministic "
        "(its gradient vanishes with it), usually after too large steps early in training. "
        f"Consider: {advice}."
    )


def _bn_gap(values: dict, config) -> str | None:
    kl = values.get("batchnorm/policy_kl_train_infer")
    gap = values.get("batchnorm/value_gap")
    bad_kl = kl is not None and outside("bn_kl", kl)
    bad_gap = gap is not None and outside("bn_value_gap", gap)
    if not (bad_kl or bad_gap):
        return None
    found = []
    if bad_kl:
        found.append(f"KL(policy training mode || inference mode) = {kl:.3g} nats")
    if bad_gap:
        found.append(f"|V_train - V_infer| = {gap:.3g} return std")
    kinds = {config.policy_norm, config.value_norm}
    advice = (
        'use "batch_renorm" (or "batch_moving", or "layer") instead of "batch"'
        if "batch" in kinds
        else "raise bn_momentum (slower moving statistics), or use layer"
    )
    return (
        f"BatchNorm's batch and moving statistics disagree: {' and '.join(found)} on the update "
        f"batch, so the networks being updated are not the ones that acted. Consider: {advice}."
    )


RULES = {
    "nonfinite": _nonfinite,
    "obs_scale": _obs_scale,
    "value_scale": _value_scale,
    "grad_norm": _grad_norm,
    "update_ratio": _update_ratio,
    "inactive_units": _inactive_units,
    "entropy": _entropy,
    "policy_collapse": _policy_collapse,
    "bn_gap": _bn_gap,
}
IMMEDIATE = ("nonfinite",)  # never healthy: no warm-up, no persistence


class ScaleAlarms:
    """The rules of this module over one run: `check` at every diagnostics step. `fired`:
    rule -> (env step, message); `holding`: rule -> env step since which its condition holds."""

    def __init__(self, config):
        self.config = config
        self.fired: dict[str, tuple[int, str]] = {}
        self.holding: dict[str, int] = {}
        self.warmup = {name: config.alarm_warmup_steps for name in RULES}
        if "batch_renorm" in (config.policy_norm, config.value_norm):
            settled = RENORM_SETTLED_UPDATES * config.n_steps * config.n_envs
            self.warmup["bn_gap"] = max(settled, config.alarm_warmup_steps)

    def conditions(self, values: dict[str, float]) -> dict[str, str]:
        """rule -> message of every rule whose condition holds on `values` (one step)."""
        finite = {k: v for k, v in values.items() if math.isfinite(v)}
        held = {}
        for name, rule in RULES.items():
            # Only the nonfinite rule sees NaN/Inf; the others judge the finite values.
            message = rule(values if name == "nonfinite" else finite, self.config)
            if message is not None:
                held[name] = message
        waiting: set[str] = set()
        for name in RULES:  # see EXPLAINED_BY
            causes = EXPLAINED_BY.get(name, ())
            if name in held and any(c in held and c not in waiting for c in causes):
                waiting.add(name)
        return {name: m for name, m in held.items() if name not in waiting}

    def check(self, step: int, values: dict[str, float]) -> list[tuple[str, str]]:
        """Rules that fire at `step` for the first time, as (rule, message)."""
        held = self.conditions(values)
        new = []
        for name in RULES:
            warm = step >= self.warmup[name]
            if name not in held or not (warm or name in IMMEDIATE):
                self.holding.pop(name, None)  # the streak is broken
                continue
            since = self.holding.setdefault(name, step)
            persisted = step - since >= self.config.alarm_persist_steps
            if name not in self.fired and (persisted or name in IMMEDIATE):
                self.fired[name] = (step, held[name])
                new.append((name, held[name]))
        return new

    def summary(self) -> list[dict]:
        """The alarms fired, as summary.json lists them: [{rule, step, message}]."""
        return [
            {"rule": rule, "step": step, "message": message}
            for rule, (step, message) in sorted(self.fired.items(), key=lambda kv: kv[1][0])
        ]
