"""The `rlnorm` command line: train flags and --set, config errors, `rlnorm config`, the
console script, and the recipes in agents/."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rlnorm import recipes
from rlnorm.cli import main
from rlnorm.config import FIELDS, Config, load_toml

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "agents"


def load_recipe(name: str):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_flags_and_set_reach_the_config(tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv = ["train", "--env", "CartPole-v1", "--seed", "3", "--total-steps", "240"]
    argv += ["--n-envs", "4", "--policy-norm", "layer", "--value-norm", "batch_moving"]
    argv += ["--run-dir", str(run_dir), "--quiet", "--json", "--set", "gamma=0.95"]
    argv += ["--set", "n_steps=6", "--set", "hidden_sizes=[16, 8]", "--set", "diagnostics=false"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["run_dir"] == str(run_dir) and printed["total_steps"] == 240
    saved = load_toml(run_dir / "config.toml")
    expected = Config(
        env_id="CartPole-v1",
        seed=3,
        total_steps=240,
        n_envs=4,
        policy_norm="layer",
        value_norm="batch_moving",
        gamma=0.95,
        n_steps=6,
        hidden_sizes=(16, 8),
        diagnostics=False,
    )
    assert saved == expected  # run_dir is not saved: the file is a template for new runs
    assert (run_dir / "summary.json").is_file()


def test_unknown_set_key_exits_2_naming_it_and_a_close_match(tmp_path, capsys):
    assert main(["train", "--run-dir", str(tmp_path / "r"), "--set", "gama=0.9"]) == 2
    err = capsys.readouterr().err
    assert "'gama'" in err and "Did you mean 'gamma'" in err
    assert not (tmp_path / "r").exists()  # refused before any run folder was made


def test_bad_value_exits_2_naming_the_key(tmp_path, capsys):
    assert main(["train", "--run-dir", str(tmp_path / "r"), "--set", "gamma=1.5"]) == 2
    assert "'gamma'" in capsys.readouterr().err


def test_bad_choice_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--policy-norm", "group"])
    assert e.value.code == 2 and "--policy-norm" in capsys.readouterr().err


def test_config_lists_every_key(capsys):
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    for key, field in FIELDS.items():
        line = f"\n# {key} = " if field.default is None else f"\n{key} = "  # None: commented
        assert line in f"\n{out}", key


def test_console_script_help():
    exe = shutil.which("rlnorm") or str(Path(sys.executable).parent / "rlnorm")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    for command in ("train", "eval", "export", "config"):
        assert command in out.stdout


# -- recipes ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "env_id", "policy_norm", "value_norm"),
    [
        ("cartpole", "CartPole-v1", "none", "none"),
        ("cartpole_layernorm", "CartPole-v1", "layer", "layer"),
        ("cartpole_batchnorm", "CartPole-v1", "batch", "batch"),
        ("pendulum", "Pendulum-v1", "none", "none"),
        ("halfcheetah", "HalfCheetah-v5", "none", "none"),
    ],
)
def test_recipes(name, env_id, policy_norm, value_norm):
    recipe = load_recipe(name)
    c = recipe.CONFIG
    assert isinstance(c, Config) and c == c.replace()  # replace() validates
    assert recipes.load_recipe(name) == c  # what `rlnorm train NAME` trains
    assert "issue #" not in recipe.__doc__  # no internal tracker numbers in user text
    assert (c.env_id, c.policy_norm, c.value_norm) == (env_id, policy_norm, value_norm)
    assert c.agent == name and recipe.__doc__
    if env_id != "CartPole-v1":
        assert c.norm_reward and c.norm_obs


def test_halfcheetah_without_mujoco_says_how_to_install():
    if importlib.util.find_spec("mujoco") is not None:
        pytest.skip("mujoco is installed")
    out = subprocess.run(
        [sys.executable, str(RECIPES / "halfcheetah.py"), "--total-steps", "10"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert out.returncode != 0
    assert "mujoco" in out.stderr and "pip install" in out.stderr


def test_missing_optional_dependency_is_a_clean_error(tmp_path, capsys):
    if importlib.util.find_spec("mujoco") is not None:
        pytest.skip("mujoco is installed")
    argv = ["train", "--env", "HalfCheetah-v5", "--run-dir", str(tmp_path / "r"), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "HalfCheetah-v5" in err and "mujoco" in err.lower()
