"""What a run's TensorBoard shows besides its scalars: the custom-scalars layout (a "Health" view
first, detail categories after it, closed), the health scalars with their alarm bands, and the
HParams session. Written by rlnorm.diagnostics.

Policy and value diagnostics go to sibling runs RUN/policy and RUN/value with the same tags (as
Keras writes train/ and validation/), so TensorBoard colours the two networks apart and one
chart overlays them; run-wide scalars stay in RUN itself.
"""

from __future__ import annotations

import math

import tensorflow as tf

from rlnorm.alarms import BANDS, value_return_ratios

NETS = ("policy", "value")
STAGES = ("pre_norm", "post_norm", "out")
HPARAM_METRICS = (
    "charts/mean_return_last_100",
    "charts/episodic_return",
    "losses/explained_variance",
    "alarms/count",
)
ONE_SIDED_DECADES = 6.0  # a band with no lower edge is shaded this many decades below its top
# HParams always lists these, different from the defaults or not: what tells runs apart.
HPARAM_ALWAYS = ("env_id", "agent", "policy_norm", "value_norm", "seed")


def _log10(x: float) -> float:
    return math.log10(max(x, 1e-30))


def _put(h: dict, tag: str, x: float | None, quantity: str, log: bool) -> None:
    """tag, tag/lower, tag/upper: a health value and the alarm band it is judged against."""
    if x is None or not math.isfinite(x):
        return
    low, high = BANDS[quantity]
    if log:
        h[tag] = _log10(x)
        h[f"{tag}/upper"] = _log10(high)
        h[f"{tag}/lower"] = _log10(low) if low > 0 else _log10(high) - ONE_SIDED_DECADES
    else:
        h[tag], h[f"{tag}/lower"], h[f"{tag}/upper"] = x, low, high


def health_values(values: dict[str, float], config) -> dict[str, float]:
    """The Health view's scalars (`health/...`, per network `health/{net}/...`) with bands."""
    h: dict[str, float] = {}
    ratios = value_return_ratios(values)
    _put(h, "health/log10_value_return_rms", ratios and ratios[1], "value_return_ratio", True)
    for end in ("min", "max"):
        std = values.get(f"normalizer/normalized_obs_std_{end}")
        _put(h, f"health/log10_obs_std_{end}", std, "obs_std", True)
    _put(h, "health/entropy_fraction", values.get("outputs/policy_entropy_fraction"),
         "entropy_fraction", False)  # fmt: skip
    for net in NETS:
        grad = values.get(f"scale/{net}/grad_norm")
        clip = grad / config.max_grad_norm if grad is not None else None
        _put(h, f"health/{net}/log10_grad_clip", clip, "grad_clip_ratio", True)
        ratio = values.get(f"scale/{net}/update_ratio")
        _put(h, f"health/{net}/log10_update_ratio", ratio, "update_ratio", True)
    _put(h, "health/bn_kl", values.get("batchnorm/policy_kl_train_infer"), "bn_kl", False)
    _put(h, "health/bn_value_gap", values.get("batchnorm/value_gap"), "bn_value_gap", False)
    return h


def split_by_net(tagged: dict) -> tuple[dict, dict]:
    """(run-wide entries, {net: entries}) of `tagged`: `x/policy/rest` goes to the policy
    sibling as `x/rest`, everything else stays in the run."""
    run, nets = {}, {n: {} for n in NETS}
    for tag, value in tagged.items():
        head, _, rest = tag.partition("/")
        net, _, tail = rest.partition("/")
        if net in nets and tail:
            nets[net][f"{head}/{tail}"] = value
        else:
            run[tag] = value
    return run, nets


def layout(n_layers: int, activation: str, norms: dict, bn: bool, discrete: bool, norm_obs: bool):
    """Custom-scalars layout: "Health" first (return, margin charts with the alarm bands, the
    alarm count), then closed detail categories. Tags without a network name are matched in
    both sibling runs (policy/ and value/)."""
    from tensorboard.plugins.custom_scalar import layout_pb2

    def chart(title, *regexes):
        return layout_pb2.Chart(
            title=title, multiline=layout_pb2.MultilineChartContent(tag=regexes)
        )

    def margin(title, *tags):
        series = [
            layout_pb2.MarginChartContent.Series(value=t, lower=f"{t}/lower", upper=f"{t}/upper")
            for t in tags
        ]
        return layout_pb2.Chart(title=title, margin=layout_pb2.MarginChartContent(series=series))

    health = [
        chart("return: last-100 mean, episodes", r"charts/(mean_return_last_100|episodic_return)$"),
        margin("value / return scale (root mean square), log10", "health/log10_value_return_rms"),
        margin("network input std: smallest feature, log10", "health/log10_obs_std_min"),
        margin("network input std: largest feature, log10", "health/log10_obs_std_max"),
        margin("policy entropy / its maximum", "health/entropy_fraction")
        if discrete
        else chart("policy log-std: mean, min, max", r"outputs/policy_log_std_(mean|min|max)$"),
        margin("gradient norm / max_grad_norm, log10 (policy, value)", "health/log10_grad_clip"),
        margin("update / weight norm per update, log10", "health/log10_update_ratio"),
    ]
    if bn:
        health.append(margin("BatchNorm: KL(policy train || infer)", "health/bn_kl"))
        health.append(margin("BatchNorm: |V train - V infer| / return std", "health/bn_value_gap"))
    # A margin chart, not a line: TensorBoard does not smooth those (a smoothed count reads 0.45).
    health.append(margin("scale alarms fired (healthy: 0)", "alarms/count"))

    inactive = "dead_fraction" if activation == "relu" else "saturated_fraction"
    any_norm = any(n != "none" for n in norms.values())
    layers = []
    for i in range(n_layers):
        for stage in STAGES if any_norm else ("pre_norm", "out"):
            name = {"pre_norm": "Dense output", "post_norm": "after the norm", "out": "activation"}
            layers.append(
                chart(
                    f"layer{i} {name[stage]}: mean, std, max|x|",
                    rf"scale/layer{i}/{stage}/(mean|std|max_abs)$",
                )  # fmt: skip
            )
        layers.append(
            chart(f"layer{i} {inactive.replace('_', ' ')}", rf"scale/layer{i}/{inactive}$")
        )
        layers.append(chart(f"layer{i} gradient norm", rf"scale/layer{i}/grad_norm$"))
    networks = [
        chart("gradient norm (before clipping)", r"scale/grad_norm$"),
        chart("head gradient norm", r"scale/head/grad_norm$"),
        chart("weight norm", r"scale/weight_norm$"),
        chart("update / weight norm", r"scale/update_ratio$"),
        chart("learning rate", r"scale/learning_rate$"),
        chart("output: mean, std (logits or action means; V)", r"scale/output/(mean|std)$"),
    ]
    outputs = [
        chart("returns: mean, std", r"outputs/return_(mean|std)$"),
        chart("value std / return std", r"outputs/value_return_std_ratio$"),
        chart("advantages: mean, std", r"outputs/advantage_(mean|std)$"),
        chart("explained variance", r"losses/explained_variance$"),
        chart("policy entropy", r"losses/entropy$"),
    ]
    if discrete:
        outputs.append(chart("policy logit std (within a state)", r"outputs/policy_logit_std$"))
    normalizer = [
        chart("observation std: raw, normalized", r"normalizer/(raw|normalized)_obs_std$"),
        chart("observation mean: raw, normalized", r"normalizer/(raw|normalized)_obs_mean$"),
        chart("normalized std per feature: min, max", r"normalizer/normalized_obs_std_(min|max)$"),
    ]
    if norm_obs:
        normalizer += [
            chart("running mean per feature", r"normalizer/feature\d+/running_mean$"),
            chart("running std per feature", r"normalizer/feature\d+/running_std$"),
            chart("clipped fraction", r"normalizer/clip_fraction$"),
            chart("count", r"normalizer/count$"),
            chart("smallest running variance", r"normalizer/min_running_var$"),
        ]
    categories = [
        layout_pb2.Category(title="Health", chart=health),
        layout_pb2.Category(title="Layers", chart=layers, closed=True),
        layout_pb2.Category(title="Networks", chart=networks, closed=True),
        layout_pb2.Category(title="Outputs", chart=outputs, closed=True),
        layout_pb2.Category(
            title="Normalizer" if norm_obs else "Input (norm_obs = false)",
            chart=normalizer,
            closed=True,
        ),
    ]
    if bn:
        charts = []
        for i in range(n_layers):
            for stat in ("mean_gap", "mean_gap_max", "var_ratio"):
                charts.append(chart(f"layer{i} {stat}", rf"batchnorm/layer{i}/{stat}$"))
        charts.append(chart("KL(policy train || infer)", r"batchnorm/policy_kl_train_infer$"))
        charts.append(chart("|V train - V infer| / return std", r"batchnorm/value_gap$"))
        categories.append(layout_pb2.Category(title="BatchNorm", chart=charts, closed=True))
    return layout_pb2.Layout(category=categories)


def write_layout(layout) -> None:
    from tensorboard.plugins.custom_scalar import summary as cs_summary

    tf.summary.experimental.write_raw_pb(cs_summary.pb(layout).SerializeToString(), step=0)


def hparam_value(value):
    """A config value as an HParams value (bool, int, float or str)."""
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def write_hparams(config, trial_id: str | None = None) -> None:
    """This run's HParams session: the config keys that differ from the defaults (and
    HPARAM_ALWAYS), metrics HPARAM_METRICS; the trial id is the run's name."""
    from tensorboard.plugins.hparams import api as hp

    from rlnorm.config import Config

    defaults = Config().to_dict()
    values = {
        k: hparam_value(v)
        for k, v in config.to_dict().items()
        if k != "run_dir" and (k in HPARAM_ALWAYS or v != defaults.get(k))
    }
    hp.hparams_config(
        hparams=[hp.HParam(k) for k in values], metrics=[hp.Metric(t) for t in HPARAM_METRICS]
    )
    hp.hparams(values, trial_id=trial_id)
