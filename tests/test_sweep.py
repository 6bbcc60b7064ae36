"""rlnorm.sweep: the sweep file, grid expansion and the results table without Ray; then real
sweeps on a local Ray (-m slow): a grid with seeds, a worker killed mid-trial, a sweep
interrupted with SIGINT and resumed."""

import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from rlnorm import cli
from rlnorm import sweep as sweep_lib
from rlnorm.config import load_toml
from rlnorm.sweep import SweepError

ROOT = Path(__file__).resolve().parents[1]
# Short CartPole trials: no diagnostics, a checkpoint every 1000 steps, no early stop.
SHORT = {"total_steps": 2000, "diagnostics": False, "checkpoint_every": 1000}
SHORT["target_return"] = "none"


def spec(**changes) -> dict:
    return {"recipe": "cartpole", "seeds": [0], "grid": {}, "set": dict(SHORT), **changes}


# -- the sweep file and the grid (no Ray) --------------------------------------------------------
@pytest.mark.parametrize(
    "changes, message",
    [
        ({"seed": [0]}, "Unknown sweep key(s) 'seed'"),
        ({"grid": {"learning_rat": [1e-3]}}, "Did you mean 'learning_rate'"),
        ({"set": {"gama": 0.9}}, "Unknown config key 'gama'"),
        ({"grid": {"seed": [0, 1]}}, "use `seeds = [...]`"),
        ({"set": {"run_dir": "x"}}, "--out"),
        ({"grid": {"gamma": 0.9}}, "give a non-empty list"),
        ({"grid": {"gamma": [0.9]}, "set": {"gamma": 0.9}}, "in both [grid] and [set]"),
        ({"seeds": []}, "seeds = []"),
        ({"config": "c.toml"}, "names its base"),
    ],
)
def test_a_bad_sweep_file_is_an_error_naming_the_key(changes, message):
    with pytest.raises(SweepError) as e:
        sweep_lib.read_spec(spec(**changes))
    assert message in str(e.value)


def test_a_bad_grid_value_is_an_error_naming_the_trial_before_anything_runs():
    s, folder = sweep_lib.read_spec(spec(grid={"learning_rate": [1e-3, -1.0]}))
    with pytest.raises(SweepError, match=r"learning_rate=-1.0__seed0: .*'learning_rate' = -1.0"):
        sweep_lib.expand(s, sweep_lib.base_config(s, folder))


def test_every_grid_combination_is_a_trial_for_every_seed():
    s = spec(seeds=[3, 4], grid={"policy_norm": ["none", "layer"], "hidden_sizes": [[8], [4, 4]]})
    s["set"]["gamma"] = 0.9
    s, folder = sweep_lib.read_spec(s)
    trials = sweep_lib.expand(s, sweep_lib.base_config(s, folder))
    names = [t["name"] for t in trials]
    assert names == [
        f"policy_norm={norm}__hidden_sizes={h}__seed{seed}"
        for norm in ("none", "layer")
        for h in ("8", "4-4")
        for seed in (3, 4)
    ]
    first, last = trials[0]["config"], trials[-1]["config"]
    assert (first["policy_norm"], first["hidden_sizes"], first["seed"]) == ("none", [8], 3)
    assert (last["policy_norm"], last["hidden_sizes"], last["seed"]) == ("layer", [4, 4], 4)
    for t in trials:  # the recipe, then tf_threads = 1, then [set]
        assert t["config"]["agent"] == "cartpole" and t["config"]["n_envs"] == 8
        assert (t["config"]["tf_threads"], t["config"]["gamma"]) == (1, 0.9)
        assert t["config"]["total_steps"] == 2000 and t["config"]["target_return"] is None


def test_a_toml_base_is_found_beside_the_sweep_file(tmp_path):
    (tmp_path / "base.toml").write_text('env_id = "Acrobot-v1"\nn_envs = 2\n')
    (tmp_path / "s.toml").write_text('config = "base.toml"\nseeds = [1]\n[grid]\ngamma = [0.9]\n')
    s, folder = sweep_lib.read_spec(tmp_path / "s.toml")
    (trial,) = sweep_lib.expand(s, sweep_lib.base_config(s, folder))
    assert s["name"] == "s" and trial["name"] == "gamma=0.9__seed1"
    assert (trial["config"]["env_id"], trial["config"]["n_envs"]) == ("Acrobot-v1", 2)


def test_folder_names_keep_only_safe_characters():
    assert sweep_lib.trial_name({"env_id": "my_mod:Foo-v0", "obs_clip": math.inf}, 2) == (
        "env_id=my_mod_Foo-v0__obs_clip=inf__seed2"
    )
    assert sweep_lib.trial_name({}, 0) == "seed0"


@pytest.mark.parametrize(
    "summary, finished",
    [
        ({"total_steps": 2000, "stopped_by": "total_steps"}, True),
        ({"total_steps": 1200, "stopped_by": "target_return"}, True),
        ({"total_steps": 1200, "stopped_by": "SIGINT"}, False),
        (None, False),
    ],
)
def test_a_trial_is_finished_by_its_budget_or_its_target(tmp_path, summary, finished):
    if summary is not None:
        (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert sweep_lib.is_finished(tmp_path, 2000) is finished


def test_aggregate_is_the_interquartile_mean_with_a_bootstrap_interval():
    values = [7.0, 1.0, 100.0, 3.0, 5.0, 2.0, 6.0, 4.0]
    iqm, lo, hi = sweep_lib.aggregate(values)
    assert iqm == pytest.approx(np.mean([3.0, 4.0, 5.0, 6.0]))  # the middle half of 1..7, 100
    assert 1.0 <= lo <= iqm <= hi <= 100.0
    assert sweep_lib.aggregate([2.5])[0] == 2.5 and math.isnan(sweep_lib.aggregate([2.5])[1])


def test_the_table_groups_trials_by_their_grid_values():
    def row(norm, seed, ret, status="done", target=None):
        return {"trial": f"{norm}{seed}", "policy_norm": norm, "seed": seed, "status": status,
                "mean_return_last_100": ret, "best_mean_return_last_100": ret + 1,
                "steps_to_target": target, "error": None if status == "done" else "boom"}  # fmt: skip

    rows = [row("none", 0, 10.0, target=500), row("none", 1, 30.0), row("layer", 0, 0, "error")]
    table = sweep_lib.results_table(rows, ["policy_norm"], "s", Path("out"))
    none_line = next(line for line in table.splitlines() if line.startswith("none"))
    lo, hi = sweep_lib.aggregate([10.0, 30.0])[1:]
    assert "2/2" in none_line and f"20 [{lo:.4g}, {hi:.4g}]" in none_line
    assert "500 (1/2 reached)" in none_line
    assert re.search(r"^layer\s+0/1\s+-", table, re.M)
    assert "layer0: boom" in table and "rlnorm sweep --resume out" in table


def test_the_command_needs_a_sweep_file_or_a_sweep_folder(capsys):
    assert cli.main(["sweep"]) == 2
    assert "give a sweep file, or --resume SWEEP_DIR" in capsys.readouterr().err
    assert cli.main(["sweep", "--resume", "nowhere"]) == 2
    assert "it has no sweep.json" in capsys.readouterr().err


# -- real sweeps on a local Ray ------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def attempts(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "attempts.json").read_text())


def checkpoint_steps(run_dir: Path) -> list[int]:
    """The steps in the checkpoint index (TensorFlow's text file), oldest first."""
    index = run_dir / "checkpoints" / "checkpoint"
    text = index.read_text() if index.exists() else ""
    return [int(s) for s in re.findall(r'all_model_checkpoint_paths: "ckpt-(\d+)"', text)]


def wait_for(predicate, what: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.slow
def test_a_grid_of_seeds_runs_every_trial_into_one_sweep_folder(local_ray, tmp_path, capsys):
    s = spec(seeds=[0, 1], grid={"learning_rate": [7e-4, 1e-3]}, name="lr")
    rows = sweep_lib.sweep(s, out=tmp_path / "lr")
    names = [f"learning_rate={lr}__seed{seed}" for lr in ("0.0007", "0.001") for seed in (0, 1)]
    assert [r["trial"] for r in rows] == names
    for row in rows:
        run_dir = tmp_path / "lr" / row["trial"]
        saved = load_toml(run_dir / "config.toml")
        assert (saved.learning_rate, saved.seed, saved.tf_threads) == (
            row["learning_rate"], row["seed"], 1)  # fmt: skip
        assert row["status"] == "done" and row["total_steps"] == summary(run_dir)["total_steps"]
        assert row["mean_return_last_100"] == summary(run_dir)["mean_return_last_100"]
        assert list(run_dir.glob("events.out.tfevents.*"))  # TensorBoard, HParams included
    csv_rows = (tmp_path / "lr" / "results.csv").read_text().splitlines()
    assert csv_rows[0].startswith("trial,learning_rate,seed,status,total_steps,steps_to_target")
    assert len(csv_rows) == 5
    assert json.loads((tmp_path / "lr" / "results.json").read_text()) == rows
    # No Tune TensorBoard files among the runs.
    assert not list((tmp_path / "lr" / "_tune").rglob("events.out.tfevents.*"))
    out = capsys.readouterr().out
    for lr in (7e-4, 1e-3):
        returns = [r["mean_return_last_100"] for r in rows if r["learning_rate"] == lr]
        assert re.search(rf"^{lr}\s+2/2\s+{np.mean(returns):.4g} \[", out, re.M), out[-2000:]


@pytest.fixture(scope="module")
def killed_sweep(local_ray, tmp_path_factory):
    """A sweep of a long CartPole trial, whose worker the test SIGKILLs once it has saved a
    checkpoint, and a trial whose env id does not exist."""
    out = tmp_path_factory.mktemp("killed") / "sweep"
    s = spec(grid={"env_id": ["CartPole-v1", "NoSuchEnv-v0"]})
    s["set"].update(total_steps=16_000, checkpoint_every=2000)
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(rows=sweep_lib.sweep(s, out=out)))
    thread.start()
    run_dir = out / "env_id=CartPole-v1__seed0"
    wait_for(lambda: checkpoint_steps(run_dir) and (run_dir / "worker.pid").exists(), "a save")
    saved_before_kill = checkpoint_steps(run_dir)[-1]
    os.kill(int((run_dir / "worker.pid").read_text()), signal.SIGKILL)
    thread.join(timeout=600)
    return result["rows"], run_dir, saved_before_kill


@pytest.mark.slow
def test_a_killed_worker_is_retried_and_resumes_from_its_last_checkpoint(killed_sweep):
    rows, run_dir, saved_before_kill = killed_sweep
    assert rows[0]["status"] == "done" and summary(run_dir)["total_steps"] == 16_000
    first, second = attempts(run_dir)
    assert first["resumed_from_step"] is None and second["pid"] != first["pid"]
    # Resumed from a checkpoint saved before the kill or in the moment after, never from 0.
    assert saved_before_kill <= second["resumed_from_step"] < 16_000
    assert checkpoint_steps(run_dir)[-1] == 16_000


@pytest.mark.slow
def test_a_config_error_fails_at_once_and_the_other_trials_go_on(killed_sweep):
    rows, _, _ = killed_sweep
    bad = rows[1]
    assert (bad["status"], bad["attempts"]) == ("error", 1)  # not retried
    assert "EnvError: Unknown environment id 'NoSuchEnv-v0'" in bad["error"]


@pytest.mark.slow
def test_an_interrupted_sweep_resumes_only_its_unfinished_trials(local_ray, tmp_path, capsys):
    (tmp_path / "s.toml").write_text(
        'recipe = "cartpole"\nseeds = [0]\n[grid]\ntotal_steps = [2000, 24000]\n'
        '[set]\ndiagnostics = false\ncheckpoint_every = 2000\ntarget_return = "none"\n'
        "n_envs = 1\n"  # 5 steps an update: the long trial is still running at the SIGINTs
    )
    out, log = tmp_path / "out", tmp_path / "driver.log"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    command = [sys.executable, "-m", "rlnorm.cli", "sweep", str(tmp_path / "s.toml")]
    with open(log, "w") as f:
        driver = subprocess.Popen(
            [*command, "--out", str(out), "--address", local_ray], env=env, stdout=f, stderr=f
        )
    short, long = out / "total_steps=2000__seed0", out / "total_steps=24000__seed0"
    wait_for(lambda: (short / "summary.json").exists() and checkpoint_steps(long), "a trial")
    driver.send_signal(signal.SIGINT)  # Ctrl-C: Tune stops, waiting for the running trials
    wait_for(lambda: "Stop signal received" in log.read_text(), "Tune's stop")
    driver.send_signal(signal.SIGINT)  # Ctrl-C again: stop now
    assert driver.wait(timeout=120) == 130, log.read_text()[-3000:]
    output = log.read_text()
    assert re.search(r"1 done, 0 config errors, 0 failed, 1 unfinished", output), output[-3000:]
    assert "rerun what is not done: rlnorm sweep --resume" in output
    assert not (long / "summary.json").exists()
    finished = (short / "summary.json").stat().st_mtime_ns

    rows = sweep_lib.sweep(resume=out)
    assert "1 of 2 trials to run" in capsys.readouterr().out
    assert [r["status"] for r in rows] == ["done", "done"]
    assert (short / "summary.json").stat().st_mtime_ns == finished and len(attempts(short)) == 1
    assert summary(long)["total_steps"] == 24_000
    assert attempts(long)[-1]["resumed_from_step"] > 0
