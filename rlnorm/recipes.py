"""Recipes: a file `agents/<name>.py` whose `CONFIG` is a tuned Config for one agent.

A name is looked up as an existing file first, then as `agents/<name>.py` under the current
directory, then under the source checkout's `agents/`. A recipe is run under a private module
name (never `__main__`), so loading one reads its CONFIG without training. Needs no TensorFlow.
"""

from __future__ import annotations

import difflib
import importlib.util
import itertools
from pathlib import Path

import rlnorm
from rlnorm.config import Config, ConfigError

DEFAULT_RECIPE = "cartpole"

# Stable-Baselines3's A2C defaults in rlnorm's keys: the base of the rl-zoo recipes, which
# list only what their a2c.yml entry changes (`Config(**SB3_A2C).replace(...)`). One RMSprop
# over both networks there means ONE gradient clip (grad_clip "global"); VecNormalize's
# epsilon; raw value targets (SB3 has no PopArt).
SB3_A2C = dict(
    n_steps=5,
    learning_rate=7e-4,
    gamma=0.99,
    gae_lambda=1.0,
    ent_coef=0.0,
    vf_coef=0.5,
    max_grad_norm=0.5,
    grad_clip="global",
    normalize_advantage=False,
    obs_epsilon=1e-8,
    value_target_norm="none",
)


def recipe_dirs() -> list[Path]:
    """Where names are looked up, in order: ./agents, then the source checkout's agents/."""
    dirs: list[Path] = []
    for d in (Path.cwd() / "agents", Path(rlnorm.__file__).resolve().parents[1] / "agents"):
        if d.is_dir() and d.resolve() not in dirs:
            dirs.append(d.resolve())
    return dirs


def recipe_names() -> list[str]:
    """The names `load_recipe` finds, sorted."""
    files = itertools.chain.from_iterable(d.glob("*.py") for d in recipe_dirs())
    return sorted({p.stem for p in files if not p.stem.startswith("_")})


def recipe_path(name_or_path: str | Path) -> Path:
    """The file a recipe name or path names, or ConfigError listing the known names."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if isinstance(name_or_path, str) and path.name == name_or_path and path.suffix != ".py":
        for folder in recipe_dirs():
            if (folder / f"{name_or_path}.py").is_file():
                return folder / f"{name_or_path}.py"
        close = difflib.get_close_matches(name_or_path, recipe_names(), n=1)
        what = f"Unknown recipe {name_or_path!r}." + (
            f" Did you mean {close[0]!r}?" if close else ""
        )
    elif path.exists():
        what = f"{str(path)!r} is not a regular file (a folder or a device)."
    else:
        what = f"Recipe file {str(path)!r} does not exist."
    raise ConfigError(
        f"{what} Known recipes (agents/<name>.py): {', '.join(recipe_names()) or 'none'}; "
        "or give a recipe .py file or a .toml config."
    )


def load_recipe(name_or_path: str | Path) -> Config:
    """The validated CONFIG of the recipe `name_or_path` (a name such as "cartpole", or the
    path of a .py file defining CONFIG)."""
    path = recipe_path(name_or_path)
    module_name = f"_rlnorm_recipe_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"Recipe {str(path)!r} is not a Python file.")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # errors in the recipe surface as themselves
    config = getattr(module, "CONFIG", None)
    if not isinstance(config, Config):
        raise ConfigError(
            f"Recipe {str(path)!r} defines no CONFIG (an rlnorm.config.Config); got "
            f"{type(config).__name__}."
        )
    return config.replace()  # validated
