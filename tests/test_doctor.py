"""Tests for rlnorm.doctor: the report of a run whose event files hold known values."""

import re

import tensorflow as tf

from rlnorm.cli import main
from rlnorm.doctor import doctor, read_events


def write_run(run_dir, values: dict, alarms=(), config="policy_norm = 'batch'\n"):
    """Event files holding `values` (tag -> list of (step, value)) and alarm texts."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.toml").write_text(f"env_id = 'CartPole-v1'\n{config}value_norm = 'none'\n")
    writer = tf.summary.create_file_writer(str(run_dir))
    with writer.as_default():
        for tag, points in values.items():
            for step, value in points:
                tf.summary.scalar(tag, value, step=step)
        for step, rule, message in alarms:
            tf.summary.text(
                f"alarms/{rule}",
                f"rlnorm scale alarm '{rule}' at env step {step}: {message}",
                step=step,
            )
    writer.close()


VALUES = {
    "scale/policy/layer0/pre_norm/std": [(40, 9.0), (10_040, 0.5)],
    "scale/value/layer0/pre_norm/std": [(40, 1.0), (10_040, 4.0)],
    "scale/policy/grad_norm": [(10_040, 0.25)],
    "scale/value/grad_norm": [(10_040, 75.0)],
    "scale/value/layer0/saturated_fraction": [(10_040, 0.75)],
    "outputs/value_return_std_ratio": [(10_040, 0.04)],
    "normalizer/normalized_obs_std": [(10_040, 0.9)],
    "normalizer/min_running_var": [(10_040, 0.003)],
    "normalizer/min_running_var_feature": [(10_040, 2.0)],
    "charts/mean_return_last_100": [(10_000, 120.0), (12_000, 150.5)],
}


def test_report_has_last_values_side_by_side_and_alarms(tmp_path):
    alarms = [(10_040, "grad_norm", "The value gradient norm is 75."), (40, "obs_scale", "Std.")]
    write_run(tmp_path / "run", VALUES, alarms)
    report = doctor(tmp_path / "run")
    lines = report.splitlines()
    assert "policy_norm = batch, value_norm = none" in report
    assert "mean return (last 100 episodes): 150 at env step 12,000" in report
    assert "last diagnostics at env step 10,040" in report
    # The last value of each tag, policy | value | policy/value.
    (row,) = [line for line in lines if "layer0 pre_norm std" in line]
    assert row.split()[-3:] == ["0.5", "4", "0.125"]
    (row,) = [line for line in lines if "grad norm (before clip)" in line]
    assert row.split()[-3:] == ["0.25", "75", "0.00333"]
    (row,) = [line for line in lines if "saturated_fraction" in line]
    assert row.split()[-3:] == ["-", "0.75", "-"]
    assert re.search(r"value std / return std +0.04 ", report)
    assert re.search(r"smallest running variance +0.003 \(feature 2\)", report)
    assert "BatchNorm" not in report  # no batchnorm/ tags in this run
    # Alarms in the order they fired, with the message only once.
    assert "Alarms fired: 2" in report
    i = lines.index("  Alarms fired: 2")
    assert lines[i + 1] == "    [obs_scale at env step 40] Std."
    assert lines[i + 2] == "    [grad_norm at env step 10,040] The value gradient norm is 75."


def test_read_events_orders_by_step(tmp_path):
    write_run(tmp_path / "run", {"scale/policy/grad_norm": [(20, 2.0), (10, 1.0)]})
    scalars, texts = read_events(tmp_path / "run")
    assert scalars["scale/policy/grad_norm"] == [(10, 1.0), (20, 2.0)]
    assert texts == {}


def test_run_without_diagnostics(tmp_path, capsys):
    write_run(tmp_path / "run", {"charts/mean_return_last_100": [(100, 20.0)]})
    assert main(["doctor", str(tmp_path / "run")]) == 0
    assert "No scale diagnostics in this run" in capsys.readouterr().out


def test_not_a_run(tmp_path, capsys):
    assert main(["doctor", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "rlnorm doctor: error:" in err and "has no TensorBoard event files" in err
