"""`rlnorm doctor RUN_DIR`: a short scale-health report read back from a run's event files.

It prints the last logged value of the key scales (`rlnorm.diagnostics` tags), policy and
value side by side, the network input, normalizer and BatchNorm checks where they apply, and
the alarms that fired (`alarms/<rule>` texts). Every judged row is marked OK / WARN / BAD
against the alarm bands of `rlnorm.alarms`; `rlnorm doctor` exits 1 when a row is BAD or an
alarm fired (usable in CI). It reads only the event files (the run's and its policy/ and
value/ siblings'), so it works on a run that is still training, and on a copy of a run
without checkpoints.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def read_events(run_dir: str | Path) -> tuple[dict, dict]:
    """(scalars, texts) of every event file in `run_dir` (not its subfolders).

    scalars: tag -> list of (step, float); texts: tag -> list of (step, str); both in step
    order (a resumed run's later files win ties)."""
    import tensorflow as tf

    run_dir = Path(run_dir)
    files = sorted(run_dir.glob("events.out.tfevents.*"))
    if not run_dir.is_dir() or not files:
        raise FileNotFoundError(
            f"{str(run_dir)!r} has no TensorBoard event files; give a run folder made by "
            "`rlnorm train` (runs/<env>/<run>/)."
        )
    scalars: dict[str, list] = {}
    texts: dict[str, list] = {}
    for path in files:
        for event in _events(tf, path):
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
                    continue
                if not value.HasField("tensor"):
                    continue
                array = tf.make_ndarray(value.tensor)
                if array.dtype.kind in "fiub" and array.ndim == 0:
                    scalars.setdefault(value.tag, []).append((event.step, float(array)))
                elif array.dtype.kind in "OSU" and array.size == 1:
                    text = array.reshape(()).item()
                    text = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
                    texts.setdefault(value.tag, []).append((event.step, text))
    for series in (*scalars.values(), *texts.values()):
        series.sort(key=lambda point: point[0])  # stable: file order breaks ties
    return scalars, texts


# Event files found damaged by `_events` (path -> what TensorFlow said), for the report.
DAMAGED: dict[str, str] = {}


def _events(tf, path: Path):
    """The Event protos of one event file, through public TensorFlow API; a record still being
    written (a run that is training) ends the file early instead of failing, and so does a
    corrupt record, which is noted in DAMAGED for the report to name."""
    try:
        for record in tf.data.TFRecordDataset(str(path)):
            yield tf.compat.v1.Event.FromString(record.numpy())
    except tf.errors.DataLossError as e:
        if "truncated record" not in e.message:  # a CRC mismatch or garbage, not a write
            found = re.search(r"(corrupted record at \d+|[a-z ]*record[^\[]*)", e.message)
            DAMAGED[str(path)] = found.group(1).strip() if found else "unreadable record"


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if not math.isfinite(x):
        return str(x)
    if x == 0 or 1e-3 <= abs(x) < 1e5:
        return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"
    return f"{x:.2e}"


def _config(run_dir: Path):
    """The run's Config (thresholds that depend on it: max_grad_norm, the warm-ups); the
    defaults where config.toml is missing or unreadable."""
    from rlnorm import config as config_lib

    try:
        return config_lib.load_toml(run_dir / "config.toml")
    except (OSError, ValueError, tomllib.TOMLDecodeError):
        return config_lib.Config()


# The rule whose warm-up a quantity waits for (rlnorm.alarms.ScaleAlarms.warmup).
RULE_OF = {
    "obs_std": "obs_scale",
    "obs_mean": "obs_scale",
    "value_return_ratio": "value_scale",
    "grad_clip_ratio": "grad_norm",
    "update_ratio": "update_ratio",
    "inactive_fraction": "inactive_units",
    "entropy_fraction": "entropy",
    "bn_kl": "bn_gap",
    "bn_value_gap": "bn_gap",
}


class Judge:
    """Marks a quantity's last value OK / WARN / BAD against the alarm band (rlnorm.alarms):
    BAD only when it has been outside the band at every diagnostics step of the last
    `alarm_persist_steps` env steps, after the rule's warm-up, as an alarm requires; outside
    once, or near an edge: WARN."""

    def __init__(self, series, config):
        from rlnorm.alarms import ScaleAlarms

        self.series, self.config = series, config
        self.warmup = ScaleAlarms(config).warmup
        self.bad: list[str] = []

    def __call__(self, label: str, quantity: str, fn) -> tuple[float | None, str]:
        from rlnorm.alarms import mark, outside

        points = [(step, fn(values)) for step, values in self.series]
        points = [(step, x) for step, x in points if x is not None]
        if not points:
            return None, ""
        last_step, last = points[-1]
        verdict = mark(quantity, last)
        if verdict == "BAD":
            since = last_step - self.config.alarm_persist_steps
            window = [x for step, x in points if step >= since]
            span = last_step - min(step for step, _ in points if step >= since)
            persisted = span >= self.config.alarm_persist_steps and all(
                not math.isfinite(x) or outside(quantity, x) for x in window
            )
            if not persisted or last_step < self.warmup[RULE_OF[quantity]]:
                verdict = "WARN"
        if verdict == "BAD":
            self.bad.append(label)
        return last, verdict


def _band(quantity: str, log: bool = False) -> str:
    from rlnorm.alarms import BANDS

    low, high = BANDS[quantity]
    return f"(BAD above {_fmt(high)})" if low == 0 else f"(BAD outside {_fmt(low)} to {_fmt(high)})"


def report(run_dir: str | Path) -> tuple[str, bool]:
    """(the scale-health report of `run_dir`, whether it is healthy: no BAD row, no alarm)."""
    from rlnorm.alarms import value_return_ratios

    run_dir = Path(run_dir)
    DAMAGED.clear()
    scalars, texts = read_events(run_dir)
    series = diagnostics_series(run_dir)
    config = _config(run_dir)
    lines = [f"Scale health of {run_dir}"]
    for path, what in sorted(DAMAGED.items()):
        lines.append(f"  WARN  event file {path} is corrupt ({what}): read up to that point only")
    lines.append(
        "  "
        + ", ".join(
            f"{k} = {getattr(config, k)}"
            for k in ("env_id", "policy_norm", "value_norm", "norm_obs")
        )
    )
    if "charts/mean_return_last_100" in scalars:
        step, ret = scalars["charts/mean_return_last_100"][-1]
        lines.append(f"  mean return (last 100 episodes): {_fmt(ret)} at env step {step:,}")
    alarms = sorted(((s[0][0], t, s[0][1]) for t, s in texts.items() if t.startswith("alarms/")))
    if not series:
        lines.append("  No scale diagnostics in this run (config `diagnostics = false`?).")
        return "\n".join(lines + _alarm_lines(alarms)), not alarms
    last = series[-1][1]
    lines.append(f"  last diagnostics at env step {series[-1][0]:,}")
    judge = Judge(series, config)

    def cell(x, verdict=""):
        return f"{_fmt(x)} {verdict}".rstrip()

    # Networks, side by side (the policy's outputs are logits or action means, the value's
    # V(s): their ratio would mean nothing, so there is none).
    norms = {"policy": config.policy_norm, "value": config.value_norm}
    layers = sorted({int(m.group(1)) for t in last if (m := re.match(r"scale/\w+/layer(\d+)/", t))})
    relu = config.activation == "relu"
    rows = []  # (label, suffix or None, quantity or None, fn(values, net))
    for i in layers:
        rows.append((f"layer{i} Dense output std", f"layer{i}/pre_norm/std"))
        if any(n != "none" for n in norms.values()):
            rows.append((f"layer{i} after the norm std", f"layer{i}/post_norm/std"))
        rows.append((f"layer{i} activation std", f"layer{i}/out/std"))
        rows.append((f"layer{i} activation max|x|", f"layer{i}/out/max_abs"))
        if relu:
            rows.append((f"layer{i} dead fraction", f"layer{i}/dead_fraction", "inactive_fraction"))
        else:
            rows.append((f"layer{i} saturated fraction", f"layer{i}/saturated_fraction"))
    rows += [
        ("output std", "output/std"),
        ("grad norm (before clip)", "grad_norm"),
        ("grad norm / max_grad_norm", "grad_norm", "grad_clip_ratio", 1 / config.max_grad_norm),
        ("weight norm", "weight_norm"),
        ("update / weight norm", "update_ratio", "update_ratio"),
    ]
    lines += ["", f"  {'Networks':<34}{'policy':>14}{'value':>14}"]
    for label, suffix, *judged in rows:
        cells = []
        for net in ("policy", "value"):
            tag, scale = f"scale/{net}/{suffix}", judged[1] if len(judged) > 1 else 1.0
            if judged:
                x, verdict = judge(f"{net} {label}", judged[0],
                                   lambda v, t=tag, c=scale: v[t] * c if t in v else None)  # fmt: skip
                cells.append(cell(x, verdict))
            else:
                cells.append(cell(last.get(tag)))
        band = f"  {_band(judged[0])}" if judged else ""
        lines.append(f"  {label:<34}{cells[0]:>14}{cells[1]:>14}{band}")

    def row(label, quantity=None, fn=None, value=None):
        if quantity:
            x, verdict = judge(label, quantity, fn)
            return f"    {label:<32}{cell(x, verdict):<16}{_band(quantity)}"
        return f"    {label:<32}{value}"

    def pair(a, b):
        return f"{_fmt(last.get(a))} / {_fmt(last.get(b))}"

    ratios = value_return_ratios(last)
    lines += [
        "",
        "  Outputs",
        row(
            "value / return root mean square",
            "value_return_ratio",
            lambda v: (value_return_ratios(v) or (None, None))[1],
        ),
        row(
            "value std / return std",
            value=f"{_fmt(ratios[0] if ratios else None)}   "
            f"({pair('scale/value/output/std', 'outputs/return_std')}; not judged: episode ends "
            "make the return std large)",
        ),
        row("advantage mean / std", value=pair("outputs/advantage_mean", "outputs/advantage_std")),
    ]
    if "losses/explained_variance" in scalars:
        lines.append(
            row("explained variance", value=_fmt(scalars["losses/explained_variance"][-1][1]))
        )
    if "outputs/policy_entropy_fraction" in last:
        lines.append(
            row(
                "policy entropy / its maximum",
                "entropy_fraction",
                lambda v: v.get("outputs/policy_entropy_fraction"),
            )  # fmt: skip
        )
    elif "outputs/policy_log_std_mean" in last:
        lines.append(row("policy log-std mean", value=_fmt(last["outputs/policy_log_std_mean"])))

    what = "normalized observations" if config.norm_obs else "raw observations: norm_obs = false"
    lines += [
        "",
        f"  Network input ({what})",
        row(
            "std per feature: smallest",
            "obs_std",
            lambda v: v.get("normalizer/normalized_obs_std_min"),
        ),  # fmt: skip
        row(
            "std per feature: largest",
            "obs_std",
            lambda v: v.get("normalizer/normalized_obs_std_max"),
        ),  # fmt: skip
        row("mean", "obs_mean", lambda v: v.get("normalizer/normalized_obs_mean")),
    ]
    if config.norm_obs:
        feature = texts.get("normalizer/min_running_var_feature", [(0, "-")])[-1][1]
        feature = feature.split(":")[0]
        lines += [
            "",
            "  Normalizer",
            row(
                "raw obs mean / std",
                value=pair("normalizer/raw_obs_mean", "normalizer/raw_obs_std"),
            ),
            row("clipped fraction", value=_fmt(last.get("normalizer/clip_fraction"))),
            row("count", value=_fmt(last.get("normalizer/count"))),
            row(
                "smallest running variance",
                value=f"{_fmt(last.get('normalizer/min_running_var'))} ({feature})",
            ),  # fmt: skip
        ]
    if any(t.startswith("batchnorm/") for t in last):
        lines += ["", f"  {'BatchNorm':<34}{'policy':>14}{'value':>14}"]
        for i in layers:
            for stat in ("mean_gap", "var_ratio"):
                p = last.get(f"batchnorm/policy/layer{i}/{stat}")
                v = last.get(f"batchnorm/value/layer{i}/{stat}")
                lines.append(f"  {f'layer{i} {stat}':<34}{_fmt(p):>14}{_fmt(v):>14}")
        if "batchnorm/policy_kl_train_infer" in last:
            lines.append(row("KL(policy train || infer)", "bn_kl",
                             lambda v: v.get("batchnorm/policy_kl_train_infer")))  # fmt: skip
        if "batchnorm/value_gap" in last:
            lines.append(row("|V train - V infer| / ret std", "bn_value_gap",
                             lambda v: v.get("batchnorm/value_gap")))  # fmt: skip

    lines += _alarm_lines(alarms)
    healthy = not judge.bad and not alarms
    if healthy:
        lines += ["", "  Verdict: OK (no BAD row, no alarm)."]
    else:
        found = [f"{len(judge.bad)} BAD row(s)"] if judge.bad else []
        found += [f"{len(alarms)} alarm(s)"] if alarms else []
        lines += ["", f"  Verdict: BAD ({', '.join(found)}): exit status 1."]
    return "\n".join(lines), healthy


def _alarm_lines(alarms) -> list[str]:
    lines = ["", f"  Alarms fired: {len(alarms) or 'none'}"]
    for step, tag, text in alarms:
        message = text.split(": ", 1)[-1] if text.startswith("rlnorm scale alarm") else text
        lines.append(f"    [{tag.split('/', 1)[1]} at env step {step:,}] {message}")
    return lines


def doctor(run_dir: str | Path) -> str:
    """The scale-health report of `run_dir`, as text (`report` also says if it is healthy)."""
    return report(run_dir)[0]


DIAGNOSTIC_PREFIXES = ("scale/", "outputs/", "normalizer/", "batchnorm/")


def diagnostics_series(run_dir: str | Path) -> list[tuple[int, dict[str, float]]]:
    """The scale diagnostics a run wrote, per diagnostics step, under the in-memory tags of
    `rlnorm.diagnostics` (`scale/policy/...`): [(env step, {tag: value})] in step order. Reads
    the run's own event files and its `policy/` and `value/` sibling runs."""
    run_dir = Path(run_dir)
    by_step: dict[int, dict[str, float]] = {}
    sources = [(run_dir, None)] + [
        (run_dir / net, net) for net in ("policy", "value") if (run_dir / net).is_dir()
    ]
    for folder, net in sources:
        scalars, _ = read_events(folder)
        for tag, series in scalars.items():
            if not tag.startswith(DIAGNOSTIC_PREFIXES):
                continue
            if net is not None:  # a sibling run: scale/layer0/... -> scale/<net>/layer0/...
                head, _, rest = tag.partition("/")
                tag = f"{head}/{net}/{rest}"
            for step, value in series:
                by_step.setdefault(int(step), {})[tag] = float(value)
    return sorted(by_step.items())
