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
    "normalizer/normalized_obs_std_min": [(10_040, 0.5)],
    "normalizer/normalized_obs_std_max": [(10_040, 1.2)],
    "normalizer/min_running_var": [(10_040, 0.003)],
    "charts/mean_return_last_100": [(10_000, 120.0), (12_000, 150.5)],
}


def test_report_has_last_values_side_by_side_and_alarms(tmp_path, capsys):
    alarms = [(10_040, "grad_norm", "The value gradient norm is 75."), (40, "obs_scale", "Std.")]
    write_run(tmp_path / "run", VALUES, alarms)
    report = doctor(tmp_path / "run")
    lines = report.splitlines()
    assert "policy_norm = batch, value_norm = none" in report
    assert "mean return (last 100 episodes): 150 at env step 12,000" in report
    assert "last diagnostics at env step 10,040" in report
    # The last value of each tag, policy | value: no ratio column (logits vs values).
    (row,) = [line for line in lines if "layer0 Dense output std" in line]
    assert row.split()[-2:] == ["0.5", "4"]
    # max_grad_norm 0.5 (the default): 75 / 0.5 = 150 x, far from the 10,000 x band.
    (row,) = [line for line in lines if "grad norm / max_grad_norm" in line]
    assert row.split()[4:8] == ["0.5", "OK", "150", "OK"]
    (row,) = [line for line in lines if "saturated fraction" in line]
    assert row.split()[-2:] == ["-", "0.75"]  # tanh saturation: shown, not judged
    assert re.search(r"std per feature: smallest +0.5 OK", report)
    assert "Normalizer" in report and "BatchNorm" not in report  # no batchnorm/ tags
    # Alarms in the order they fired, with the message only once; an alarm fails the run.
    assert "Alarms fired: 2" in report
    i = lines.index("  Alarms fired: 2")
    assert lines[i + 1] == "    [obs_scale at env step 40] Std."
    assert lines[i + 2] == "    [grad_norm at env step 10,040] The value gradient norm is 75."
    assert main(["doctor", str(tmp_path / "run")]) == 1
    assert "Verdict: BAD (2 alarm(s))" in capsys.readouterr().out


def test_healthy_run_exits_0_and_omits_what_does_not_apply(tmp_path, capsys):
    write_run(tmp_path / "run", VALUES, config="policy_norm = 'none'\nnorm_obs = false\n")
    assert main(["doctor", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "Verdict: OK" in out
    assert "Normalizer" not in out and "after the norm" not in out
    assert "Network input (raw observations: norm_obs = false)" in out


def test_bad_only_when_it_persists(tmp_path, capsys):
    """An update ratio outside its band at the last step only: WARN; at every step of the last
    alarm_persist_steps (20k) after the warm-up: BAD, and exit status 1."""
    once = {"scale/policy/update_ratio": [(10_000, 3e-3), (20_000, 3e-3), (30_000, 0.5)]}
    write_run(tmp_path / "once", once)
    assert main(["doctor", str(tmp_path / "once")]) == 0
    assert re.search(r"update / weight norm +0.5 WARN", capsys.readouterr().out)
    held = {"scale/policy/update_ratio": [(10_000, 0.5), (20_000, 0.5), (30_000, 0.5)]}
    write_run(tmp_path / "held", held)
    assert main(["doctor", str(tmp_path / "held")]) == 1
    out = capsys.readouterr().out
    assert re.search(r"update / weight norm +0.5 BAD", out) and "1 BAD row(s)" in out


def test_reads_the_sibling_runs(tmp_path):
    """policy/ and value/ hold the networks' tags without the network's name."""
    write_run(tmp_path / "run", {"outputs/return_std": [(10_040, 2.0)]})
    for net, std in (("policy", 0.5), ("value", 4.0)):
        writer = tf.summary.create_file_writer(str(tmp_path / "run" / net))
        with writer.as_default():
            tf.summary.scalar("scale/layer0/pre_norm/std", std, step=10_040)
        writer.close()
    (row,) = [x for x in doctor(tmp_path / "run").splitlines() if "layer0 Dense output std" in x]
    assert row.split()[-2:] == ["0.5", "4"]


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
