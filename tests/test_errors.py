"""Issue #5's bad-input table, row by row, through the path a user takes: `rlnorm.cli.main([...])`
returns 2 and prints `rlnorm <command>: error: <message>` on stderr (or the API raises).

Each test asserts the parts of the message the issue asks for (the id, key, value, range,
space, file/line/column, env index/step/feature, path) and, where it matters, that nothing was
made or changed before the error: no env for a config error, no checkpoint touched by a
refused resume.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import gymnasium as gym
import keras
import nonfinite_envs
import numpy as np
import pytest
import tensorflow as tf

from rlnorm.agent import A2CAgent
from rlnorm.checkpoint import Checkpointer, atomic_write_text
from rlnorm.cli import main
from rlnorm.config import Config, load_toml, to_toml
from rlnorm.evaluate import load_agent
from rlnorm.loop import train
from rlnorm.run_dir import checkpoint_dir

# 4 envs x 5 steps = 20 env steps per update; env index 2 misbehaves at its 7th step() call,
# the 2nd vector step of the 2nd rollout.
TINY = ["--n-envs", "4", "--set", "n_steps=5", "--set", "diagnostics=false"]
N_ENVS = 4


def run_cli(capsys, *argv: str) -> str:
    """Run `rlnorm argv...`, assert exit code 2, return the one-line message on stderr."""
    code = main(list(argv))
    captured = capsys.readouterr()
    assert code == 2, (code, captured.out, captured.err)
    prefix = f"rlnorm {argv[0]}: error: "
    assert prefix in captured.err, captured.err
    return captured.err.split(prefix, 1)[1].strip()


def env_arg(env_id: str) -> str:
    """The `module:EnvName-vN` form, as a user with their own env module would write it."""
    return f"{nonfinite_envs.__name__}:{env_id}"


@pytest.fixture
def no_env_may_be_made(monkeypatch):
    """Makes any environment creation fail the test: config errors come before envs."""

    def forbidden(*args, **kwargs):
        raise AssertionError("an environment was made before the config was checked")

    monkeypatch.setattr(gym, "make_vec", forbidden)
    monkeypatch.setattr(gym, "make", forbidden)


# -- unknown env id; a module that does not import ----------------------------------------------
@pytest.mark.parametrize(
    ("env_id", "expected"),
    [
        ("CartPole-v2", ["Unknown environment id 'CartPole-v2'", "Did you mean 'CartPole-v1'"]),
        ("cartpol-v1", ["Unknown environment id 'cartpol-v1'", "Did you mean 'CartPole-v1'"]),
        (
            env_arg("rlnorm_test/NaNObservaton-v0"),  # module fine, id misspelt
            ["'rlnorm_test/NaNObservaton-v0'", "Did you mean 'rlnorm_test/NaNObservation-v0'"],
        ),
        (
            "no_such_module_xyz:Foo-v0",
            ["module 'no_such_module_xyz' could not be imported", "ModuleNotFoundError"],
        ),
        ("broken_env_module:Foo-v0", ["module 'broken_env_module'", "SyntaxError"]),
        ("raising_env_module:Foo-v0", ["module 'raising_env_module'", "RuntimeError: no GPU"]),
    ],
)
def test_unknown_env_id_names_it_and_the_closest_ids(
    env_id, expected, tmp_path, monkeypatch, capsys
):
    (tmp_path / "broken_env_module.py").write_text("def broken(:\n")
    (tmp_path / "raising_env_module.py").write_text("raise RuntimeError('no GPU')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    message = run_cli(capsys, "train", "--env", env_id, "--run-dir", str(tmp_path / "run"))
    for part in expected:
        assert part in message, message
    assert not (tmp_path / "run").exists()  # no empty run folder left behind


# -- observation and action spaces rlnorm cannot read ---------------------------------------------
class SpaceEnv(gym.Env):
    def __init__(self, observation_space, action_space):
        self.observation_space, self.action_space = observation_space, action_space

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


BOX = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
DISCRETE = gym.spaces.Discrete(2)
BAD_SPACES = {  # name: (observation space, action space, words the message must hold)
    "dict_obs": (gym.spaces.Dict({"a": BOX}), DISCRETE, ["Dict", "FlattenObservation"]),
    "tuple_obs": (gym.spaces.Tuple((BOX, DISCRETE)), DISCRETE, ["Tuple", "FlattenObservation"]),
    "text_obs": (gym.spaces.Text(5), DISCRETE, ["Text", "FlattenObservation"]),
    "multidiscrete_obs": (gym.spaces.MultiDiscrete([2, 3]), DISCRETE, ["MultiDiscrete", "Flatten"]),
    "sequence_obs": (gym.spaces.Sequence(BOX), DISCRETE, ["Sequence", "ObservationWrapper"]),
    "graph_obs": (gym.spaces.Graph(BOX, None), DISCRETE, ["Graph", "ObservationWrapper"]),
    "multidiscrete_action": (BOX, gym.spaces.MultiDiscrete([2, 3]), ["MultiDiscrete", "Wrapper"]),
    "multibinary_action": (BOX, gym.spaces.MultiBinary(3), ["MultiBinary", "ActionWrapper"]),
    "box2d_action": (BOX, gym.spaces.Box(-1.0, 1.0, (2, 2)), ["(2, 2)", "1-D Box"]),
}
for _name, (_obs, _act, _) in BAD_SPACES.items():
    if f"rlnorm_test/{_name}-v0" not in gym.registry:
        gym.register(
            f"rlnorm_test/{_name}-v0",
            entry_point=SpaceEnv,
            kwargs={"observation_space": _obs, "action_space": _act},
        )


@pytest.mark.parametrize("name", sorted(BAD_SPACES))
def test_unsupported_space_names_it_and_the_fix(name, tmp_path, capsys):
    env_id = f"rlnorm_test/{name}-v0"
    message = run_cli(capsys, "train", "--env", env_id, "--run-dir", str(tmp_path / "run"))
    assert f"Environment {env_id!r}" in message
    for word in BAD_SPACES[name][2]:
        assert word in message, message
    assert not (tmp_path / "run").exists()


# -- config: unknown key, wrong type, out of range; before any env is made -----------------------
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("gama=0.9", "Unknown config key 'gama'. Did you mean 'gamma'?"),
        ("n_stepz=5", "Unknown config key 'n_stepz'. Did you mean 'n_steps'?"),
        ("gamma=0", "Config key 'gamma' = 0.0 is out of range: must be in (0, 1]."),
        ("gamma=1.5", "Config key 'gamma' = 1.5 is out of range: must be in (0, 1]."),
        ("gamma=nan", "Config key 'gamma' = nan is out of range: must be in (0, 1]."),
        ("n_steps=0", "Config key 'n_steps' = 0 is out of range: must be an integer >= 1."),
        ("n_envs=-2", "Config key 'n_envs' = -2 is out of range: must be an integer >= 1."),
        ("obs_epsilon=0", "Config key 'obs_epsilon' = 0.0 is out of range: must be > 0."),
        (
            "optimizer_eps=-1e-5",
            "Config key 'optimizer_eps' = -1e-05 is out of range: must be > 0.",
        ),
        ("obs_clip=0", "Config key 'obs_clip' = 0.0 is out of range: must be > 0."),
        ("reward_clip=-1", "Config key 'reward_clip' = -1.0 is out of range: must be > 0."),
        ("max_grad_norm=0", "Config key 'max_grad_norm' = 0.0 is out of range: must be > 0."),
        ("max_grad_norm=inf", "Config key 'max_grad_norm' = inf is out of range: must be a finite"),
        ("learning_rate=inf", "Config key 'learning_rate' = inf is out of range: must be a finite"),
        ("rms_decay=1.0", "Config key 'rms_decay' = 1.0 is out of range: must be in (0, 1)."),
        ("bn_momentum=0", "Config key 'bn_momentum' = 0.0 is out of range: must be in (0, 1)."),
        ("gae_lambda=-0.1", "Config key 'gae_lambda' = -0.1 is out of range: must be in [0, 1]."),
        ("n_steps=abc", "Config key 'n_steps' expects int, got 'abc' (str)."),
        ("n_steps=2.5", "Config key 'n_steps' expects int, got 2.5 (float)."),
        ('n_steps="2.5"', "Config key 'n_steps' expects int, got '2.5' (str)."),
        ("gamma=true", "Config key 'gamma' expects float, got True (bool)."),
        ("hidden_sizes=[64, 1.5]", "Config key 'hidden_sizes' expects tuple[int, ...], got"),
        ("optimizer=sgd", "Config key 'optimizer' = 'sgd' is not allowed. Allowed: rmsprop, adam."),
        ("nonfinite=skip", "Config key 'nonfinite' = 'skip' is not allowed."),
        (
            "optimizer_eps=1e-50",
            "Config key 'optimizer_eps' = 1e-50 is 0 or subnormal in float32 (the graph's "
            "precision): use a value >= 1.2e-38.",
        ),
        ("learning_rate=1e39", "Config key 'learning_rate' = 1e+39 overflows float32"),
        (
            "tf_threads=1000",
            "Config key 'tf_threads' = 1000 is out of range: must be an integer in [0, 256].",
        ),
        ("gamma=none", "Config key 'gamma' expects float, got 'none' (str)."),
    ],
)
def test_bad_config_value_names_key_value_and_range(
    override, expected, tmp_path, capsys, no_env_may_be_made
):
    run_dir = tmp_path / "run"
    message = run_cli(capsys, "train", "--run-dir", str(run_dir), "--set", override)
    assert message.startswith(expected), message
    assert not run_dir.exists()  # refused before the run folder (or any env) was made


def test_bad_flag_value_is_refused_like_a_set(tmp_path, capsys, no_env_may_be_made):
    message = run_cli(capsys, "train", "--run-dir", str(tmp_path / "r"), "--total-steps", "1e3.5")
    assert message == "Config key 'total_steps' expects int, got '1e3.5' (str)."


TOML_CASES = {
    "does_not_parse": (
        "gamma = 0.9\nn_steps = = 5\n",
        "does not parse: Invalid value (at line 2, column 11)",
    ),
    "unknown_key_in_a_table": (
        "[a2c]\ngama = 0.9\n",
        "Unknown config key 'gama'. Did you mean 'gamma'?",
    ),
    "wrong_type": ('n_envs = "eight"\n', "Config key 'n_envs' expects int, got 'eight' (str)."),
    "out_of_range": ("[a2c]\nn_steps = 0\n", "Config key 'n_steps' = 0 is out of range"),
}


@pytest.mark.parametrize("case", sorted(TOML_CASES))
def test_bad_toml_file_names_file_line_and_column(case, tmp_path, capsys, no_env_may_be_made):
    text, expected = TOML_CASES[case]
    path = tmp_path / "bad.toml"
    path.write_text(text)
    message = run_cli(capsys, "train", str(path), "--run-dir", str(tmp_path / "run"))
    assert expected in message, message
    if case == "does_not_parse":
        assert message.startswith(f"Config file {str(path)!r} does not parse")


def test_missing_toml_file_is_named(tmp_path, capsys, no_env_may_be_made):
    message = run_cli(capsys, "train", str(tmp_path / "nope.toml"))
    assert message == f"Config file {str(tmp_path / 'nope.toml')!r} does not exist."


def test_unknown_recipe_is_named_with_the_known_ones(tmp_path, capsys, no_env_may_be_made):
    message = run_cli(capsys, "train", "cartpol", "--run-dir", str(tmp_path / "run"))
    assert message.startswith("Unknown recipe 'cartpol'. Did you mean 'cartpole'? Known recipes")
    assert "pendulum" in message
    message = run_cli(capsys, "train", str(tmp_path / "nope.py"))
    assert message.startswith(f"Recipe file {str(tmp_path / 'nope.py')!r} does not exist.")
    assert not (tmp_path / "run").exists()


# -- NaN / Inf in observations and rewards ---------------------------------------------------------
# Env index 2's 7th step() call is vector step 7. The observation it returns is checked after
# that step (env step 7 * 4 = 28); its reward is reported at the step count when it was taken
# (6 * 4 = 24); a bad reset observation at env step 0.
NONFINITE_CASES = {
    "nan_observation": (
        nonfinite_envs.NAN_OBS_ID,
        "graph",
        r"Non-finite observation at env step 28: env index 2, feature 1 = \S*nan",
    ),
    "inf_reward": (
        nonfinite_envs.INF_REWARD_ID,
        "eager",
        r"Non-finite reward at env step 24: env index 2, feature 0 = \S*inf",
    ),
    "nan_at_reset": (
        nonfinite_envs.NAN_RESET_ID,
        "eager",
        r"Non-finite observation at env step 0: env index 2, feature 1 = \S*nan",
    ),
}


@pytest.mark.filterwarnings("ignore:.*not within the observation space")
@pytest.mark.parametrize("case", sorted(NONFINITE_CASES))
def test_nonfinite_input_names_env_step_and_feature(case, tmp_path, capsys):
    env_id, compile_mode, expected = NONFINITE_CASES[case]
    run_dir = tmp_path / "run"
    argv = ["train", "--env", env_arg(env_id), "--run-dir", str(run_dir), "--total-steps", "200"]
    message = run_cli(capsys, *argv, *TINY, "--set", f"compile={compile_mode}")
    assert re.match(expected, message), message
    assert 'set `nonfinite = "drop"`' in message  # the option that lets training go on


@pytest.mark.parametrize(
    ("env_id", "what"),
    [(nonfinite_envs.NAN_OBS_ID, "observation"), (nonfinite_envs.INF_REWARD_ID, "reward")],
)
def test_nonfinite_drop_masks_the_step_with_a_warning(env_id, what, tmp_path):
    config = Config(
        env_id=env_arg(env_id),
        n_envs=N_ENVS,
        n_steps=5,
        total_steps=100,
        nonfinite="drop",
        compile="eager",
        diagnostics=False,
        runs_root=str(tmp_path),
    )
    with pytest.warns(UserWarning, match=rf"Non-finite {what} .* env index 2, .* step dropped"):
        summary = train(config, quiet=True)
    assert summary["total_steps"] == 100 and summary["dropped_steps"] == 1
    # Exactly the one transition was masked: the normalizer absorbed every other observation.
    ckpt = tf.train.load_checkpoint(
        tf.train.latest_checkpoint(str(checkpoint_dir(summary["run_dir"])))
    )
    assert ckpt.get_tensor("normalizer/count/.ATTRIBUTES/VARIABLE_VALUE") == 100 - 1
    assert np.isfinite(ckpt.get_tensor("normalizer/mean/.ATTRIBUTES/VARIABLE_VALUE")).all()


# -- NaN / Inf in the loss -----------------------------------------------------------------------
def checkpoint_tensors(path: str) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(path)
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if "VARIABLE" in k}


def test_nonfinite_loss_saves_last_good_checkpoint_and_a_scale_dump(tmp_path, capsys):
    """A reward of 1e38 is finite (it passes the input check) but its square is not: the value
    loss of the 2nd update (env steps 21-40) is inf. The update is skipped, ckpt-40 holds the
    weights of update 1, the scales go to nonfinite_loss.json and the CLI exits 2 naming both."""
    run_dir = tmp_path / "run"
    argv = ["train", "--env", env_arg(nonfinite_envs.HUGE_REWARD_ID), "--run-dir", str(run_dir)]
    argv += ["--total-steps", "400", "--set", "checkpoint_every=20", *TINY]
    message = run_cli(capsys, *argv)
    dump_path = run_dir / "nonfinite_loss.json"
    last_good = str(checkpoint_dir(run_dir) / "ckpt-40")
    assert message.startswith("Non-finite loss at env step 40 (policy ")
    assert (
        f"Scales of the batch written to {dump_path}; last good checkpoint: {last_good}." in message
    )

    dump = json.loads(dump_path.read_text())
    assert dump["env_step"] == 40 and dump["last_good_checkpoint"] == last_good
    assert dump["rewards"]["max"] == pytest.approx(nonfinite_envs.HUGE_REWARD, rel=1e-6)
    assert dump["rewards"]["nonfinite"] == 0  # the input was finite; the loss was not
    assert not np.isfinite(dump["metrics"]["value_loss"])
    for key in ("observations", "values", "advantages", "returns"):
        assert {"min", "max", "nonfinite"} <= dump[key].keys()

    # The checkpoint it names loads into a fresh agent, is finite, and is update 1's weights.
    assert tf.train.latest_checkpoint(str(checkpoint_dir(run_dir))) == last_good
    envs = gym.make_vec(nonfinite_envs.HUGE_REWARD_ID, num_envs=1)
    config = Config(n_envs=N_ENVS, n_steps=5, diagnostics=False)
    agent = A2CAgent(config, envs.single_observation_space, envs.single_action_space)
    envs.close()
    step, _ = Checkpointer(checkpoint_dir(run_dir), agent).restore(last_good)
    assert step == 40
    for v in agent.trainable_variables:
        assert np.isfinite(v.numpy()).all(), v.name
    good, after = (
        checkpoint_tensors(str(checkpoint_dir(run_dir) / "ckpt-20")),
        checkpoint_tensors(last_good),
    )
    for key, value in good.items():
        if not key.startswith(("env_step", "save_counter", "rng")):  # rng: sampling moved it
            np.testing.assert_array_equal(after[key], value, err_msg=key)


# -- zero variance and 1e9-sized observations ---------------------------------------------------
def test_zero_variance_and_huge_observations_train_finite(tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv = ["train", "--env", env_arg(nonfinite_envs.EXTREME_SCALE_ID), "--run-dir", str(run_dir)]
    assert main([*argv, "--total-steps", "200", "--quiet", *TINY]) == 0, capsys.readouterr().err
    tensors = checkpoint_tensors(tf.train.latest_checkpoint(str(checkpoint_dir(run_dir))))
    var = tensors["normalizer/var/.ATTRIBUTES/VARIABLE_VALUE"]
    mean = tensors["normalizer/mean/.ATTRIBUTES/VARIABLE_VALUE"]
    assert var[1] == 0 and var[2] == 0 and mean[0] > 1e9  # constant features, huge mean
    for key, value in tensors.items():  # weights, optimizer slots, normalizer: all finite
        if value.dtype.kind == "f":
            assert np.isfinite(value).all(), key
    # The trained agent's normalized inputs: finite, within the clip, constant features at 0.
    _, agent, _ = load_agent(run_dir)
    env = nonfinite_envs.FaultyEnv("extreme_scale")
    obs = np.stack([env.reset(seed=0)[0], *(env.step(0)[0] for _ in range(30))])
    z = agent.normalizer.normalize(obs).numpy()
    assert np.isfinite(z).all() and np.abs(z).max() <= agent.normalizer.clip
    assert (z[:, 1:] == 0).all() and np.ptp(z[:, 0]) > 1  # feature 0 still carries its signal


# -- resume with a config that changes shapes or spaces ------------------------------------------
def make_saved_run(run_dir: Path, **changes) -> Path:
    """A run folder as `rlnorm train` leaves it (config.toml + a checkpoint at step 40), made
    without training. By default hidden_sizes (16,) and n_envs 2, both not the defaults."""
    settings = dict(hidden_sizes=(16,), n_envs=2, total_steps=40, diagnostics=False)
    config = Config(**{**settings, **changes, "run_dir": str(run_dir)})
    envs = gym.make_vec(config.env_id, num_envs=1)
    agent = A2CAgent(config, envs.single_observation_space, envs.single_action_space)
    envs.close()
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.toml", to_toml(config))
    Checkpointer(checkpoint_dir(run_dir), agent).save(40)
    return run_dir


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory) -> Path:
    return make_saved_run(tmp_path_factory.mktemp("saved_run"))


def folder_state(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize(
    ("overrides", "fields"),
    [
        (["--set", "hidden_sizes=[32]"], {"hidden_sizes": ("(16,)", "(32,)")}),
        # Back to the default value: must be refused too, not silently ignored.
        (["--set", "hidden_sizes=[64, 64]"], {"hidden_sizes": ("(16,)", "(64, 64)")}),
        (["--env", "Pendulum-v1"], {"env_id": ("'CartPole-v1'", "'Pendulum-v1'")}),
        (
            ["--policy-norm", "batch", "--n-envs", "8", "--set", "total_steps=120"],
            {"policy_norm": ("'none'", "'batch'"), "n_envs": ("2", "8")},
        ),
    ],
)
def test_resume_refuses_shape_changes_naming_the_fields(saved_run, overrides, fields, capsys):
    before = folder_state(saved_run)
    message = run_cli(capsys, "train", "--resume", str(saved_run), *overrides)
    assert message.startswith(f"Cannot resume {str(saved_run)!r} with a config that changes")
    for key, (saved, asked) in fields.items():
        assert f"{key}: run has {saved}, asked {asked}" in message, message
    assert "total_steps" not in message  # only the offending fields are named
    assert folder_state(saved_run) == before  # nothing written, no event file, no checkpoint


def test_resume_applies_other_overrides_even_back_to_a_default(tmp_path, capsys):
    """The control: what does not change shapes is applied, also when the asked value is the
    default (ent_coef 0.01 -> 0.0) and so indistinguishable from "not given" in a config built
    on the defaults. The run folder records what the run continued with."""
    run_dir = make_saved_run(tmp_path / "run", ent_coef=0.01)
    argv = ["train", "--resume", str(run_dir), "--quiet", "--json", "--set", "ent_coef=0.0"]
    assert main([*argv, "--total-steps", "80", "--set", "compile=eager"]) == 0
    assert json.loads(capsys.readouterr().out)["total_steps"] == 80
    saved = load_toml(run_dir / "config.toml")
    assert (saved.ent_coef, saved.total_steps, saved.hidden_sizes) == (0.0, 80, (16,))


def test_a_checkpoint_of_another_layout_is_refused_naming_it(tmp_path, capsys):
    """A checkpoint with per-weight optimizer slots (Keras' RMSprop: rlnorm's layout before the
    flat optimizers) stops resume, eval and export with a message naming the variable, the
    cause and the fix, and nothing in the run folder changes."""
    run_dir = make_saved_run(tmp_path / "run")
    config = load_toml(run_dir / "config.toml")
    envs = gym.make_vec(config.env_id, num_envs=1)
    agent = A2CAgent(config, envs.single_observation_space, envs.single_action_space)
    envs.close()
    for name, net in (("policy_optimizer", agent.policy), ("value_optimizer", agent.value)):
        per_weight = keras.optimizers.RMSprop(name=name)
        per_weight.build(net.trainable_weights)
        setattr(agent, name, per_weight)
    Checkpointer(checkpoint_dir(run_dir), agent).save(80)
    before = folder_state(run_dir)
    exported = tmp_path / "exported"
    for argv in (["train", "--resume", run_dir], ["eval", run_dir], ["export", run_dir, exported]):
        message = run_cli(capsys, *map(str, argv))
        assert message.startswith(
            f"Checkpoint {checkpoint_dir(run_dir) / 'ckpt-80'} does not fit the agent"
        ), message
        assert re.search(r"(policy|value)_optimizer/velocity", message), message
        assert message.endswith("start a new run."), message
    assert folder_state(run_dir) == before and not exported.exists()


# -- folders that are not runs, runs with no checkpoint -----------------------------------------
@pytest.fixture
def folders(tmp_path) -> dict[str, Path]:
    not_a_run = tmp_path / "not_a_run"
    not_a_run.mkdir()
    (not_a_run / "notes.txt").write_text("hello")
    no_checkpoint = tmp_path / "no_checkpoint"
    no_checkpoint.mkdir()
    atomic_write_text(no_checkpoint / "config.toml", to_toml(Config(hidden_sizes=(4,))))
    return {"missing": tmp_path / "missing", "not_a_run": not_a_run, "no_checkpoint": no_checkpoint}


@pytest.mark.parametrize(
    "command", [["eval"], ["export"], ["train", "--resume"]], ids=["eval", "export", "resume"]
)
@pytest.mark.parametrize("folder", ["missing", "not_a_run", "no_checkpoint"])
def test_not_a_run_or_no_checkpoint_is_a_clear_error(command, folder, folders, tmp_path, capsys):
    path = folders[folder]
    extra = [str(tmp_path / "exported")] if command == ["export"] else []
    message = run_cli(capsys, *command, str(path), *extra)
    expected = {
        "missing": f"{str(path)!r} is not a directory.",
        "not_a_run": f"{str(path)!r} is not an rlnorm run: it has no config.toml.",
        "no_checkpoint": "has no checkpoint",
    }[folder]
    assert expected in message, message
    assert not (tmp_path / "exported").exists()
