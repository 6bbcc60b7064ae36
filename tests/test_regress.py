"""rlnorm.regress: per-seed metrics (censoring, curve area) by hand, the verdict rule on made-up
baselines, baseline files, and one tiny end-to-end `rlnorm regress` through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rlnorm import regress as rg
from rlnorm.cli import main
from rlnorm.config import Config

BUDGET = 1_000


def summary(steps_to_target, curve, final=None, seed=0):
    return {
        "seed": seed,
        "steps_to_target": steps_to_target,
        "return_curve": curve,
        "mean_return_last_100": final if final is not None else curve[-1][1],
    }


def test_unsolved_run_is_censored_at_the_budget():
    m = rg.seed_metrics(summary(None, [[200, 10.0], [1000, 30.0]]), BUDGET)
    assert (m["steps_to_target"], m["solved"], m["final_return"]) == (1000.0, False, 30.0)
    m = rg.seed_metrics(summary(400, [[200, 10.0], [400, 30.0]]), BUDGET)
    assert (m["steps_to_target"], m["solved"]) == (400.0, True)


def test_curve_area_by_hand():
    # flat 10 on [0, 200], 10 -> 30 on [200, 400] (mean 20), held at 30 on [400, 1000]
    m = rg.seed_metrics(summary(400, [[200, 10.0], [400, 30.0]]), BUDGET)
    assert m["auc"] == pytest.approx((200 * 10 + 200 * 20 + 600 * 30) / BUDGET)


def report_with(steps: list[float], config: Config) -> dict:
    summaries = [
        summary(None if s >= BUDGET else int(s), [[100, 5.0], [int(s), 20.0]], seed=k)
        for k, s in enumerate(steps)
    ]
    return rg.build_report(config, summaries, "rlnorm regress test", "out")


@pytest.fixture
def config():
    return Config(total_steps=BUDGET, target_return=20.0)


@pytest.mark.parametrize(
    ("new", "verdict"),
    [
        ([300, 320, 340, 360, 380, 400, 420, 440], "pass"),  # the baseline's own spread
        ([900, 950, 1000, 1000, 1000, 1000, 1000, 1000], "regressed"),  # slower, most unsolved
        ([100, 110, 120, 130, 140, 150, 160, 170], "improved"),
        ([330, 350, 1000, 370, 390, 410, 430, 450], "pass"),  # one unsolved seed is no evidence
    ],
)
def test_verdict(config, new, verdict):
    base = report_with([310, 330, 350, 370, 390, 410, 430, 450], config)
    result = rg.compare(report_with(new, config), config, base)
    assert result["verdict"] == verdict
    p = result["probability_of_improvement"]["steps_to_target"]
    assert p["ci"][0] <= p["p"] <= p["ci"][1]
    if verdict == "regressed":
        assert p["ci"][1] < 0.5
    if verdict == "improved":
        assert p["ci"][0] > 0.5


def test_all_censored_on_both_sides_is_a_pass(config):
    everything_fails = report_with([BUDGET] * 8, config)
    result = rg.compare(everything_fails, config, everything_fails)
    assert result["verdict"] == "pass"
    assert result["probability_of_improvement"]["steps_to_target"]["ci"] == [0.5, 0.5]


def test_a_baseline_at_another_budget_is_refused(config):
    base = report_with([300] * 4, config)
    other = config.replace(total_steps=2_000)
    with pytest.raises(ValueError, match="total_steps=1000"):
        rg.compare(report_with([300] * 4, other), other, base)


def test_baseline_file_round_trip_names_what_made_it(tmp_path, config):
    report = report_with([300, 400, 1000], config)
    path = tmp_path / "b" / "cartpole.json"
    rg.write_baseline(path, report, config.replace(learning_rate=1e-3))
    baseline = rg.load_baseline(path)
    assert baseline["metrics"] == report["metrics"]
    assert baseline["solved"] == [True, True, False]
    assert baseline["command"] == "rlnorm regress test"
    assert {"python", "numpy", "scipy"} <= set(baseline["versions"])
    assert "platform" in baseline["machine"] and "seed" not in baseline["config"]
    assert rg.compare(report, config, baseline)["config_differs"] == ["learning_rate"]


def test_command_line_reproduces_the_call():
    cmd = rg.command_line("agents/cartpole.py", 8, 100, {"learning_rate": 7e-5, "x": True}, False)
    assert cmd == (
        "rlnorm regress agents/cartpole.py --seeds 8 --seed-start 100 "
        "--set learning_rate=7e-05 --set x=true"
    )


def test_regress_end_to_end(tmp_path, capsys):
    """Two seeds of a tiny CartPole run in two spawn workers: baseline, then a comparison with
    a JSON report and a plot."""
    pytest.importorskip("matplotlib")
    common = [
        "regress",
        "cartpole",
        "--seeds",
        "2",
        "--workers",
        "2",
        "--baseline",
        str(tmp_path / "base.json"),
        "--quiet",
        *("--set", "total_steps=2000", "--set", "target_return=15", "--set", "diagnostics=false"),
        *("--set", "hidden_sizes=[8]"),
    ]
    assert main([*common, "--update-baseline", "--out", str(tmp_path / "a")]) == 0
    assert "baseline written" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["seed0", "seed1"]
    assert (tmp_path / "a" / "seed0" / "summary.json").is_file()
    out = ["--out", str(tmp_path / "b"), "--json", str(tmp_path / "r.json")]
    plot = ["--plot", str(tmp_path / "p.png"), "--workers", "1"]  # a later --workers wins
    code = main([*common, *out, *plot, "--seed-start", "5"])
    report = json.loads((tmp_path / "r.json").read_text())
    assert code == (1 if report["verdict"] == "regressed" else 0)
    assert report["seeds"] == [5, 6] and report["total_steps"] == 2000
    assert report["verdict"] in ("pass", "regressed", "improved")
    assert np.asarray(report["curves"]["per_seed"]).shape == (2, rg.CURVE_POINTS)
    assert (tmp_path / "p.png").stat().st_size > 0
    assert f"verdict: {report['verdict']}" in capsys.readouterr().out


def test_a_missing_or_incomparable_baseline_stops_before_training(tmp_path, capsys, config):
    missing = ["regress", "cartpole", "--baseline", str(tmp_path / "none.json")]
    assert main(missing) == 2
    assert "--update-baseline" in capsys.readouterr().err
    rg.write_baseline(tmp_path / "b.json", report_with([300] * 2, config), config)
    assert main(["regress", "cartpole", "--baseline", str(tmp_path / "b.json")]) == 2
    assert "add --set total_steps=1000" in capsys.readouterr().err


def test_plot_without_matplotlib_is_a_clear_error(monkeypatch, capsys):
    find_spec = rg.importlib.util.find_spec
    monkeypatch.setattr(
        rg.importlib.util,
        "find_spec",
        lambda name: None if name == "matplotlib" else find_spec(name),
    )
    assert main(["regress", "cartpole", "--seeds", "2", "--plot", "p.png"]) == 2
    assert "pip install 'rlnorm[plots]'" in capsys.readouterr().err


def test_load_config_reads_recipes_and_toml_files(tmp_path):
    from rlnorm import config as config_lib

    assert rg.load_config("cartpole", {"seed": 4}).agent == "cartpole"
    path = tmp_path / "c.toml"
    path.write_text(config_lib.to_toml(Config(agent="mine", total_steps=5_000)))
    config = rg.load_config(path, {"learning_rate": 1e-3})
    assert (config.agent, config.total_steps, config.learning_rate) == ("mine", 5_000, 1e-3)
