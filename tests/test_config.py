"""Config: ranges and choices from the fields' metadata, every error form, None, float32
limits, TOML round trips (`rlnorm config`, the run's config.toml), recipes, and the CLI on a
machine without TensorFlow."""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlnorm import recipes
from rlnorm.cli import build_config, main, make_parser
from rlnorm.config import (
    FIELDS,
    NORMS,
    Config,
    ConfigError,
    field_docs,
    from_dict,
    load_toml,
    parse_override,
    to_toml,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
TINY32 = 1.1754943508222875e-38  # smallest normal float32, 2**-126


def error(**values) -> str:
    with pytest.raises(ConfigError) as e:
        from_dict(values)
    return str(e.value)


# -- the metadata is the one source ---------------------------------------------------------------
def test_every_field_has_a_doc_and_field_docs_reads_it():
    docs = field_docs()
    assert list(docs) == list(FIELDS)
    for key, doc in docs.items():
        assert doc == FIELDS[key].metadata["doc"] and len(doc) > 10, key


def test_norm_choices_are_the_one_registry():
    assert FIELDS["policy_norm"].metadata["choices"] is NORMS
    assert FIELDS["value_norm"].metadata["choices"] is NORMS
    networks = pytest.importorskip("rlnorm.networks")
    assert tuple(networks.NORM_LAYERS) == NORMS
    assert set(networks.BATCHNORM_KINDS) < set(NORMS)


@pytest.mark.parametrize("key", [k for k, f in FIELDS.items() if f.metadata["choices"]])
def test_choices_come_from_the_metadata(key):
    allowed = FIELDS[key].metadata["choices"]
    for value in allowed:
        assert getattr(from_dict({key: value}), key) == value
    message = error(**{key: allowed[0] + "x"})
    assert message == (
        f"Config key {key!r} = {allowed[0] + 'x'!r} is not allowed. Did you mean "
        f"{allowed[0]!r}? Allowed: {', '.join(allowed)}."
    )


# (key, accepted at/near the bounds, refused, the range text); bounds written out by hand.
BOUNDS = [
    ("gamma", [1e-6, 1.0], [0.0, -0.5, 1.0 + 1e-9], "in (0, 1]"),
    ("gae_lambda", [0.0, 1.0], [-1e-9, 1.5], "in [0, 1]"),
    ("rms_decay", [1e-3, 0.999], [0.0, 1.0], "in (0, 1)"),
    ("bn_momentum", [1e-3, 0.999], [0.0, 1.0], "in (0, 1)"),
    ("learning_rate", [1e-30, 10.0], [0.0, -1e-3], "> 0"),
    ("ent_coef", [0.0, 2.0], [-1e-9], ">= 0"),
    ("vf_coef", [0.0, 2.0], [-1.0], ">= 0"),
    ("n_envs", [1, 4096], [0, -2], "an integer >= 1"),
    ("keep_checkpoints", [1], [0], "an integer >= 1"),
    ("tf_threads", [0, 256], [-1, 257, 10_000], "an integer in [0, 256]"),
]


@pytest.mark.parametrize(("key", "accepted", "refused", "text"), BOUNDS)
def test_ranges_come_from_the_metadata(key, accepted, refused, text):
    for value in accepted:
        assert getattr(from_dict({key: value}), key) == value
    for value in refused:
        shown = repr(float(value) if isinstance(FIELDS[key].default, float) else value)
        assert error(**{key: value}) == (
            f"Config key {key!r} = {shown} is out of range: must be {text}."
        )


# -- every error form -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"gamma": 1.5}, "Config key 'gamma' = 1.5 is out of range: must be in (0, 1]."),
        ({"n_steps": "abc"}, "Config key 'n_steps' expects int, got 'abc' (str)."),
        ({"n_steps": True}, "Config key 'n_steps' expects int, got True (bool)."),
        ({"gamma": "fast"}, "Config key 'gamma' expects float, got 'fast' (str)."),
        ({"gamma": None}, "Config key 'gamma' expects float, got None (NoneType)."),
        ({"gamma": "none"}, "Config key 'gamma' expects float, got 'none' (str)."),
        (
            {"target_return": "high"},
            "Config key 'target_return' expects float | None, got 'high' (str).",
        ),
        (
            {"hidden_sizes": [64, "x"]},
            "Config key 'hidden_sizes' expects tuple[int, ...], got [64, 'x'] (list).",
        ),
        ({"diagnostics": "yes"}, "Config key 'diagnostics' expects bool, got 'yes' (str)."),
        ({"env_id": 3}, "Config key 'env_id' expects str, got 3 (int)."),
        (
            {"optimizer": "adma"},
            "Config key 'optimizer' = 'adma' is not allowed. Did you mean 'adam'? "
            "Allowed: rmsprop, adam.",
        ),
        (
            {"max_grad_norm": math.inf},
            "Config key 'max_grad_norm' = inf is out of range: must be a finite number.",
        ),
        (
            {"log_std_init": math.nan},
            "Config key 'log_std_init' = nan is out of range: must be a finite number.",
        ),
        (
            {"target_return": -math.inf},
            "Config key 'target_return' = -inf is out of range: must be a finite number (or inf).",
        ),
        (
            {"hidden_sizes": [64, 0]},
            "Config key 'hidden_sizes' = [64, 0]: needs one or more widths >= 1.",
        ),
        ({"hidden_sizes": []}, "Config key 'hidden_sizes' = []: needs one or more widths >= 1."),
        (
            {"env_id": ""},
            "Config key 'env_id' is empty: give a Gymnasium id such as 'CartPole-v1'.",
        ),
    ],
)
def test_error_forms(values, expected):
    assert error(**values) == expected


def test_unknown_key_names_the_closest_and_every_valid_key():
    message = error(gama=0.9)
    assert message.startswith("Unknown config key 'gama'. Did you mean 'gamma'? Valid keys: ")
    assert message.endswith(f"{', '.join(sorted(FIELDS))}.")


def test_config_replace_and_api_values_are_validated_and_typed():
    with pytest.raises(ConfigError, match="'gamma' = 2.0 is out of range"):
        Config().replace(gamma=2.0)
    c = Config().replace(learning_rate=1, hidden_sizes=[32, 16], n_envs=4.0)
    assert (c.learning_rate, c.hidden_sizes, c.n_envs) == (1.0, (32, 16), 4)
    assert type(c.learning_rate) is float and type(c.n_envs) is int


# -- float32: what the graph computes in ------------------------------------------------------------
FLOAT32_KEYS = [k for k, f in FIELDS.items() if f.metadata["float32"]]


def test_float32_keys_are_every_float_key_but_target_return():
    floats = [k for k, f in FIELDS.items() if isinstance(f.default, float)]
    assert FLOAT32_KEYS == floats and "target_return" not in FLOAT32_KEYS
    for key in ("optimizer_eps", "learning_rate", "obs_epsilon", "max_grad_norm"):
        assert key in FLOAT32_KEYS


def test_subnormal_in_float32_is_refused():
    assert error(optimizer_eps=1e-50) == (
        "Config key 'optimizer_eps' = 1e-50 is 0 or subnormal in float32 (the graph's "
        "precision): use a value >= 1.2e-38."
    )


@pytest.mark.parametrize("key", FLOAT32_KEYS)
def test_float32_limits_hold_for_every_float32_key(key):
    for value in (1e-45, 1e-39, TINY32 / 2):  # nonzero, but 0 or subnormal in float32
        assert "is 0 or subnormal in float32" in error(**{key: value}), value
    assert getattr(from_dict({key: TINY32}), key) == TINY32  # the smallest normal float32
    m = FIELDS[key].metadata
    if m["le"] is None and m["lt"] is None:  # unbounded above: float32's own limit
        assert "overflows float32" in error(**{key: 1e39})
        assert getattr(from_dict({key: 3.4e38}), key) == 3.4e38
    if m["gt"] is None:  # 0 itself is exact in float32
        assert getattr(from_dict({key: 0.0}), key) == 0.0


def test_target_return_is_not_float32_limited():
    assert from_dict({"target_return": 1e-50}).target_return == 1e-50
    assert from_dict({"target_return": 1e300}).target_return == 1e300


# -- None -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("word", ["none", "None", "null"])
def test_none_is_settable_where_the_key_allows_it(word):
    base = Config(target_return=475.0, run_dir="runs/x")
    for key in ("target_return", "run_dir"):
        assert getattr(from_dict(dict([parse_override(f"{key}={word}")]), base), key) is None
    assert from_dict({"target_return": None}, base).target_return is None
    with pytest.raises(ConfigError, match=f"'gamma' expects float, got '{word}'"):
        from_dict(dict([parse_override(f"gamma={word}")]))


def test_none_from_the_command_line(tmp_path):
    args = make_parser().parse_args(["train", "cartpole", "--set", "target_return=none"])
    assert build_config(args).target_return is None
    path = tmp_path / "c.toml"
    path.write_text('target_return = "none"\n')  # TOML has no null: the word as a string
    assert load_toml(path, Config(target_return=1.0)).target_return is None


# -- TOML round trips -------------------------------------------------------------------------------
def test_rlnorm_config_prints_toml_that_loads_back_to_the_defaults(tmp_path, capsys):
    assert main(["config"]) == 0
    text = capsys.readouterr().out
    data = tomllib.loads(text)
    assert from_dict(data) == Config()
    assert set(data) == {k for k, f in FIELDS.items() if f.default is not None}
    path = tmp_path / "c.toml"
    path.write_text(text)
    assert build_config(make_parser().parse_args(["train", str(path)])) == Config()


def test_rlnorm_config_documents_every_key_above_it(capsys):
    main(["config"])
    lines = capsys.readouterr().out.splitlines()
    docs = field_docs()
    for key, field in FIELDS.items():
        prefix = f"# {key} = " if field.default is None else f"{key} = "
        (i,) = [i for i, line in enumerate(lines) if line.startswith(prefix)]
        block = []
        for line in reversed(lines[:i]):
            if not line.startswith("# "):
                break
            block.insert(0, line[2:])
        assert " ".join(docs[key].split()) in " ".join(block), key
        choices = field.metadata["choices"]
        if choices:
            assert f"one of: {', '.join(choices)}" in block, key
    assert sum(line.startswith("# --- ") for line in lines) == 5  # section headers


@pytest.mark.parametrize("name", ["cartpole", "pendulum", "cartpole_compiled"])
def test_rlnorm_config_recipe_round_trips(name, capsys):
    assert main(["config", "--recipe", name]) == 0
    assert from_dict(tomllib.loads(capsys.readouterr().out)) == recipes.load_recipe(name)


@pytest.mark.parametrize(
    "config",
    [
        Config(),
        Config(target_return=475.0, obs_clip=math.inf, reward_clip=math.inf),
        Config(hidden_sizes=(7,), learning_rate=TINY32, gamma=1.0, env_id='a"b\\c:X-v0'),
        Config(policy_norm="batch_renorm", fast_paths=False, tf_threads=256, seed=-3),
    ],
)
def test_to_toml_round_trips_without_run_dir(config, tmp_path):
    with_run_dir = dataclasses.replace(config, run_dir=str(tmp_path / "old_run"))
    text = to_toml(with_run_dir)
    assert "run_dir" not in text  # a template must not train into the old run
    path = tmp_path / "config.toml"
    path.write_text(text)
    assert load_toml(path) == config


# -- recipes --------------------------------------------------------------------------------------
def test_recipe_names_are_the_agents_files():
    names = recipes.recipe_names()
    assert names == sorted(p.stem for p in (ROOT / "agents").glob("*.py"))
    assert recipes.DEFAULT_RECIPE in names


def test_recipe_by_name_and_by_path_are_the_same():
    by_name = recipes.load_recipe("cartpole_layernorm")
    assert by_name == recipes.load_recipe(ROOT / "agents" / "cartpole_layernorm.py")
    assert by_name == recipes.load_recipe("cartpole").replace(
        agent="cartpole_layernorm", policy_norm="layer", value_norm="layer"
    )


def test_a_recipe_in_the_current_directory_comes_first(tmp_path, monkeypatch):
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "cartpole.py").write_text(
        "from rlnorm.config import Config\nCONFIG = Config(agent='mine', seed=11)\n"
    )
    monkeypatch.chdir(tmp_path)
    assert recipes.load_recipe("cartpole") == Config(agent="mine", seed=11)
    assert recipes.load_recipe("pendulum").env_id == "Pendulum-v1"  # else: the checkout's


def test_a_recipe_runs_under_a_private_name_not_main(tmp_path):
    marker = tmp_path / "trained"
    path = tmp_path / "mine.py"
    path.write_text(
        "from pathlib import Path\nfrom rlnorm.config import Config\n"
        "CONFIG = Config(n_envs=2)\nNAME = __name__\n"
        f"if __name__ == '__main__':\n    Path({str(marker)!r}).write_text('x')\n"
    )
    assert recipes.load_recipe(path) == Config(n_envs=2)
    assert not marker.exists()


def test_unknown_recipe_lists_the_known_names():
    with pytest.raises(ConfigError) as e:
        recipes.load_recipe("cartpol")
    message = str(e.value)
    assert message.startswith("Unknown recipe 'cartpol'. Did you mean 'cartpole'?")
    for name in recipes.recipe_names():
        assert name in message
    with pytest.raises(ConfigError, match="Recipe file 'nope/x.py' does not exist."):
        recipes.load_recipe("nope/x.py")


def test_a_recipe_without_config_is_refused(tmp_path):
    path = tmp_path / "empty.py"
    path.write_text("X = 1\n")
    with pytest.raises(ConfigError, match="defines no CONFIG"):
        recipes.load_recipe(path)


# -- `rlnorm train` builds ------------------------------------------------------------------------
def train_config(*argv: str, base: Config | None = None) -> Config:
    return build_config(make_parser().parse_args(["train", *argv]), base)


def test_bare_train_is_the_cartpole_recipe():
    cartpole = recipes.load_recipe("cartpole")
    assert cartpole.agent == "cartpole" and cartpole.target_return == 475.0
    assert train_config() == cartpole
    assert train_config("--seed", "4") == cartpole.replace(seed=4)
    assert train_config("cartpole") == cartpole
    # `python agents/cartpole.py` passes the recipe as the base: the same agent.
    assert train_config(base=cartpole) == cartpole


def test_train_with_a_recipe_path_or_an_env_but_no_recipe():
    assert train_config(str(ROOT / "agents" / "pendulum.py")) == recipes.load_recipe("pendulum")
    # Another env without a recipe: the plain defaults, no CartPole settings carried over.
    assert train_config("--env", "Pendulum-v1") == Config(env_id="Pendulum-v1")
    assert train_config("--set", "env_id=Acrobot-v1") == Config(env_id="Acrobot-v1")


def test_rlnorm_train_trains_the_default_recipe(monkeypatch, capsys):
    loop = pytest.importorskip("rlnorm.loop")  # needs TensorFlow
    seen = {}

    def fake_train(config, resume=None, quiet=False):
        seen["config"] = config
        return collections.defaultdict(int)  # every summary key the CLI prints: 0

    monkeypatch.setattr(loop, "train", fake_train)
    assert main(["train", "--quiet"]) == 0
    assert seen["config"] == recipes.load_recipe("cartpole")
    capsys.readouterr()


# -- without TensorFlow -----------------------------------------------------------------------------
# Hides TensorFlow from every import finder, so `find_spec("tensorflow")` is None and
# `import tensorflow` fails, as on a machine where it was never installed.
NO_TF = """
import sys
class Hide:
    def __init__(self, finder):
        self.finder = finder
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "tensorflow":
            return None
        return self.finder.find_spec(name, path, target)
    def __getattr__(self, name):
        return getattr(self.finder, name)
sys.meta_path[:] = [Hide(f) for f in sys.meta_path if hasattr(f, "find_spec")]
import importlib.util
assert importlib.util.find_spec("tensorflow") is None
from rlnorm.cli import main
code = main(sys.argv[1:])
assert not [m for m in sys.modules if m.partition(".")[0] in ("tensorflow", "keras")]
sys.exit(code)
"""


def run_without_tf(*argv: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-c", NO_TF, *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )


def test_help_and_config_work_without_tensorflow():
    out = run_without_tf("--help")
    assert out.returncode == 0, out.stderr
    assert "train" in out.stdout and "config" in out.stdout
    out = run_without_tf("config")
    assert out.returncode == 0, out.stderr
    assert from_dict(tomllib.loads(out.stdout)) == Config()
    out = run_without_tf("config", "--recipe", "cartpole")
    assert out.returncode == 0, out.stderr
    assert from_dict(tomllib.loads(out.stdout)) == recipes.load_recipe("cartpole")


@pytest.mark.parametrize(
    "argv", [["train"], ["train", "cartpole"], ["eval", "runs/x"], ["doctor", "runs/x"]]
)
def test_commands_that_need_tensorflow_say_how_to_install_it(argv):
    out = run_without_tf(*argv)
    assert out.returncode == 2
    assert out.stderr == (
        f"rlnorm {argv[0]}: error: TensorFlow is not installed: pip install 'rlnorm[cpu]' "
        "(or 'rlnorm[gpu]').\n"
    )
