"""What a run's TensorBoard shows besides its scalars: the custom-scalars layout that puts the
policy and value lines of each scale in one chart, and the HParams session that lets runs with
different norms compare in one table. Written once, at the start of a run (rlnorm.diagnostics).
"""

from __future__ import annotations

import tensorflow as tf

NETS = ("policy", "value")
STAGES = ("pre_norm", "post_norm", "out")
HPARAM_METRICS = (
    "charts/mean_return_last_100",
    "charts/episodic_return",
    "outputs/explained_variance",
)


def scales_layout(n_layers: int, activation: str, bn_nets, discrete: bool):
    """Custom-scalars layout: one chart per metric, policy and value lines together."""
    from tensorboard.plugins.custom_scalar import layout_pb2

    def chart(title, *regexes):
        content = layout_pb2.MultilineChartContent(tag=list(regexes))
        return layout_pb2.Chart(title=title, multiline=content)

    both = "(policy|value)"
    scales = []
    inactive = "dead_fraction" if activation == "relu" else "saturated_fraction"
    for i in range(n_layers):
        for stage in STAGES:
            for stat in ("std", "mean", "max_abs"):
                tag = rf"scale/{both}/layer{i}/{stage}/{stat}$"
                scales.append(chart(f"layer{i} {stage} {stat}", tag))
        scales.append(chart(f"layer{i} {inactive}", rf"scale/{both}/layer{i}/{inactive}$"))
        scales.append(chart(f"layer{i} grad norm", rf"scale/{both}/layer{i}/grad_norm$"))
    for name in ("grad_norm", "head/grad_norm", "weight_norm", "update_ratio", "learning_rate"):
        scales.append(chart(name.replace("_", " ").replace("/", " "), rf"scale/{both}/{name}$"))
    for stat in ("std", "mean"):
        scales.append(chart(f"output {stat}", rf"scale/{both}/output/{stat}$"))
    policy_scale = (
        chart("policy logit std (within a state)", r"outputs/policy_logit_std$")
        if discrete
        else chart("policy log-std", r"outputs/policy_log_std_(mean|min|max)$")
    )
    outputs = [
        chart("value std vs return std", r"scale/value/output/std$", r"outputs/return_std$"),
        chart("value mean vs return mean", r"scale/value/output/mean$", r"outputs/return_mean$"),
        chart("value std / return std", r"outputs/value_return_std_ratio$"),
        chart("advantage mean and std", r"outputs/advantage_(mean|std)$"),
        chart("explained variance", r"outputs/explained_variance$"),
        policy_scale,
        chart("policy entropy", r"outputs/policy_entropy$"),
    ]
    normalizer = [
        chart("observation std: raw vs normalized", r"normalizer/(raw|normalized)_obs_std$"),
        chart("observation mean: raw vs normalized", r"normalizer/(raw|normalized)_obs_mean$"),
        chart("normalized std per feature: min, max", r"normalizer/normalized_obs_std_(min|max)$"),
        chart("clipped fraction", r"normalizer/clip_fraction$"),
        chart("count", r"normalizer/count$"),
        chart("smallest running variance", r"normalizer/min_running_var$"),
        chart("feature of the smallest variance", r"normalizer/min_running_var_feature$"),
    ]
    categories = [
        layout_pb2.Category(title="Scales", chart=scales),
        layout_pb2.Category(title="Outputs", chart=outputs),
        layout_pb2.Category(title="Normalizer", chart=normalizer),
    ]
    if bn_nets:
        bn = []
        for i in range(n_layers):
            for stat in ("mean_gap", "mean_gap_max", "var_ratio"):
                bn.append(chart(f"layer{i} {stat}", rf"batchnorm/{both}/layer{i}/{stat}$"))
        bn.append(chart("KL(policy train || infer)", r"batchnorm/policy_kl_train_infer$"))
        bn.append(chart("|V train - V infer| / return std", r"batchnorm/value_gap$"))
        categories.append(layout_pb2.Category(title="BatchNorm", chart=bn))
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


def write_hparams(config) -> None:
    """The config as this run's HParams session (metrics: HPARAM_METRICS), so runs with
    different norms compare in one table."""
    from tensorboard.plugins.hparams import api as hp

    values = {k: hparam_value(v) for k, v in config.to_dict().items() if k != "run_dir"}
    hp.hparams_config(
        hparams=[hp.HParam(k) for k in values], metrics=[hp.Metric(t) for t in HPARAM_METRICS]
    )
    hp.hparams(values)
