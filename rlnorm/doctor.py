"""`rlnorm doctor RUN_DIR`: a short scale-health report read back from a run's event files.

It prints the last logged value of the key scales (`rlnorm.diagnostics` tags), policy and
value side by side with their ratio, the normalizer and BatchNorm checks, and the alarms that
fired (`alarms/<rule>` texts). It reads only the event files, so it works on a run that is
still training, and on a copy of a run without checkpoints.
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


def _events(tf, path: Path):
    """The Event protos of one event file, through public TensorFlow API; a record still being
    written (a run that is training) ends the file early instead of failing."""
    try:
        for record in tf.data.TFRecordDataset(str(path)):
            yield tf.compat.v1.Event.FromString(record.numpy())
    except tf.errors.DataLossError:
        return


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if not math.isfinite(x):
        return str(x)
    if x == 0 or 1e-3 <= abs(x) < 1e5:
        return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"
    return f"{x:.2e}"


def _config(run_dir: Path) -> dict:
    try:
        return tomllib.loads((run_dir / "config.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return {}


def doctor(run_dir: str | Path) -> str:
    """The scale-health report of `run_dir`, as text."""
    run_dir = Path(run_dir)
    scalars, texts = read_events(run_dir)
    last = {tag: series[-1][1] for tag, series in scalars.items()}
    diag_steps = [s[-1][0] for t, s in scalars.items() if t.startswith("scale/")]
    config = _config(run_dir)
    lines = [f"Scale health of {run_dir}"]
    if config:
        lines.append(
            "  "
            + ", ".join(f"{k} = {config.get(k)}" for k in ("env_id", "policy_norm", "value_norm"))
        )
    if "charts/mean_return_last_100" in scalars:
        step, ret = scalars["charts/mean_return_last_100"][-1]
        lines.append(f"  mean return (last 100 episodes): {_fmt(ret)} at env step {step:,}")
    if not diag_steps:
        lines.append("  No scale diagnostics in this run (config `diagnostics = false`?).")
        return "\n".join(lines)
    lines.append(f"  last diagnostics at env step {max(diag_steps):,}")

    def get(tag):
        return last.get(tag)

    # Networks, side by side.
    rows = []
    layers = sorted({int(m.group(1)) for t in last if (m := re.match(r"scale/\w+/layer(\d+)/", t))})
    inactive = next(
        (k for k in ("saturated_fraction", "dead_fraction") if any(k in t for t in last)), None
    )
    for i in layers:
        for stage in ("pre_norm", "post_norm", "out"):
            rows.append((f"layer{i} {stage} std", f"layer{i}/{stage}/std"))
        rows.append((f"layer{i} out max|x|", f"layer{i}/out/max_abs"))
        if inactive:
            rows.append((f"layer{i} {inactive}", f"layer{i}/{inactive}"))
    rows += [
        ("output std", "output/std"),
        ("grad norm (before clip)", "grad_norm"),
        ("weight norm", "weight_norm"),
        ("update / weight ratio", "update_ratio"),
    ]
    lines += ["", f"  {'Networks':<28}{'policy':>10}{'value':>10}{'policy/value':>14}"]
    for label, suffix in rows:
        p, v = get(f"scale/policy/{suffix}"), get(f"scale/value/{suffix}")
        ratio = p / v if p is not None and v not in (None, 0.0) else None
        lines.append(f"  {label:<28}{_fmt(p):>10}{_fmt(v):>10}{_fmt(ratio):>14}")

    def pair(a, b):
        return f"{_fmt(get(a))} / {_fmt(get(b))}"

    def row(label, text):
        return f"    {label:<30}{text}"

    lines += [
        "",
        "  Outputs",
        row(
            "value std / return std",
            f"{_fmt(get('outputs/value_return_std_ratio'))}   "
            f"({pair('scale/value/output/std', 'outputs/return_std')}; alarm outside 0.1-10)",
        ),
        row("advantage mean / std", pair("outputs/advantage_mean", "outputs/advantage_std")),
        row("explained variance", _fmt(get("outputs/explained_variance"))),
        "",
        "  Normalizer",
        row(
            "normalized obs mean / std",
            pair("normalizer/normalized_obs_mean", "normalizer/normalized_obs_std")
            + "   (expected ~0 / ~1)",
        ),
        row("raw obs mean / std", pair("normalizer/raw_obs_mean", "normalizer/raw_obs_std")),
        row("clipped fraction", _fmt(get("normalizer/clip_fraction"))),
        row("count", _fmt(get("normalizer/count"))),
        row(
            "smallest running variance",
            f"{_fmt(get('normalizer/min_running_var'))} "
            f"(feature {_fmt(get('normalizer/min_running_var_feature'))})",
        ),
    ]
    if any(t.startswith("batchnorm/") for t in last):
        lines += ["", f"  {'BatchNorm':<28}{'policy':>10}{'value':>10}"]
        for i in layers:
            for stat in ("mean_gap", "var_ratio"):
                p = get(f"batchnorm/policy/layer{i}/{stat}")
                v = get(f"batchnorm/value/layer{i}/{stat}")
                lines.append(f"  {f'layer{i} {stat}':<28}{_fmt(p):>10}{_fmt(v):>10}")
        lines.append(row("KL(policy train || infer)", _fmt(get("batchnorm/policy_kl_train_infer"))))
        lines.append(row("|V train - V infer| / ret std", _fmt(get("batchnorm/value_gap"))))

    alarms = sorted(((s[0][0], t, s[0][1]) for t, s in texts.items() if t.startswith("alarms/")))
    lines += ["", f"  Alarms fired: {len(alarms) or 'none'}"]
    for step, tag, text in alarms:
        message = text.split(": ", 1)[-1] if text.startswith("rlnorm scale alarm") else text
        lines.append(f"    [{tag.split('/', 1)[1]} at env step {step:,}] {message}")
    return "\n".join(lines)


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
