"""The Python API: train an agent, act with it, evaluate and export it, load it back.

    import rlnorm
    run = rlnorm.train("CartPole-v1", policy_norm="layer", total_steps=200_000)
    action = run.predict(obs)                 # one raw observation -> one action
    report = run.evaluate(episodes=10)        # never changes the agent's statistics
    path = run.export("exported/")            # SavedModel: raw observations -> actions
    run = rlnorm.load(run.run_dir)            # the same object from a run folder

What to train is one positional argument, as in SB3's `A2C("MlpPolicy", env)`: a Gymnasium id,
an env instance or factory, a `rlnorm.Config`, a TOML file, or a recipe in agents/ by name or
path; keyword arguments override config keys.
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from rlnorm import config as config_lib


def _require_tensorflow() -> None:
    # find_spec does not import TensorFlow (that takes seconds).
    if importlib.util.find_spec("tensorflow") is None:
        raise ModuleNotFoundError(
            "rlnorm needs TensorFlow, which is not installed: `pip install 'rlnorm[cpu]'` "
            "(CPU-only) or `pip install 'rlnorm[gpu]'` (CUDA), or install TensorFlow yourself."
        )


class Run:
    """A trained agent with its run folder. Attributes: `config` (the resolved Config),
    `agent` (the A2CAgent: networks, the shared normalizer, optimizers), `run_dir` (Path) and
    `summary` (summary.json's content)."""

    def __init__(self, config, agent, run_dir, summary: dict, env=None):
        self.config, self.agent, self.summary = config, agent, summary
        self.run_dir = Path(run_dir)
        self._env = env  # the user's env or factory, if the run was not made from an id
        # Acting, evaluating and exporting never move the normalizer.
        agent.normalizer.frozen = True

    def __repr__(self) -> str:
        return (
            f"Run({self.config.env_id!r}, steps={self.summary.get('total_steps')}, "
            f"mean_return_last_100={self.summary.get('mean_return_last_100')}, "
            f"run_dir={str(self.run_dir)!r})"
        )

    def predict(self, observation, deterministic: bool = False):
        """Action(s) for raw observation(s), in inference mode, the normalizer frozen.

        `observation`: one observation (the space's shape, any NumPy dtype) -> one action, or a
        batch [N, *shape] -> actions [N, ...]. Box actions are clipped to the space, as the env
        clips them in training. `deterministic`: the mode instead of a sample."""
        agent = self.agent
        x, single = _as_batch(observation, agent.observation_space)
        x = x.astype(agent.obs_spec.dtype.as_numpy_dtype, copy=False)
        if deterministic:
            action = agent.act_deterministic(x).numpy()
        else:
            action = agent.act(x)[0].numpy()
        space = agent.action_space
        if hasattr(space, "low"):
            action = np.clip(action, space.low, space.high)
        return action[0] if single else action

    def evaluate(
        self,
        episodes: int = 10,
        deterministic: bool = False,
        seed: int | None = None,
        n_envs: int = 4,
    ) -> dict:
        """Mean/std return and length over `episodes` full episodes on fresh envs (SB3's
        evaluate_policy). Writes nothing and changes no statistic of the agent."""
        from rlnorm.evaluate import evaluate_agent

        seed = self.config.seed + 10_000 if seed is None else seed
        return evaluate_agent(
            self.agent, self.config, episodes, deterministic, seed, n_envs, env=self._env
        )

    def export(self, path: str | Path) -> Path:
        """A SavedModel at `path`: raw observations in, actions out, the normalizer inside."""
        from rlnorm.export import export_agent

        return export_agent(self.agent, path)


def _as_batch(observation, space) -> tuple[np.ndarray, bool]:
    """(batch [N, *shape], whether one observation was given); a clear error otherwise."""
    import gymnasium as gym

    x = np.asarray(observation)
    shape = () if isinstance(space, gym.spaces.Discrete) else tuple(space.shape)
    if x.shape == shape:
        return x[None], True
    if x.ndim == len(shape) + 1 and x.shape[1:] == shape:
        return x, False
    raise ValueError(
        f"predict: an observation of shape {x.shape} does not fit the observation space "
        f"({type(space).__name__} of shape {shape}): give one observation of shape {shape} "
        f"or a batch of shape (N, {', '.join(map(str, shape))})."
    )


def resolve_config(what=None, overrides: dict[str, Any] | None = None):
    """(Config, env or None) from what `train` was given; overrides applied and validated."""
    env = None
    if what is None:
        from rlnorm.recipes import load_recipe

        base = load_recipe("cartpole")  # the default recipe, as `rlnorm train` / `make train`
    elif isinstance(what, config_lib.Config):
        base = what
    elif isinstance(what, str | Path) and not _looks_like_env_id(str(what)):
        path = Path(what)
        if path.suffix == ".toml":
            base = config_lib.load_toml(path)
        else:
            from rlnorm.recipes import load_recipe

            base = load_recipe(str(what))
    elif isinstance(what, str):
        base = config_lib.Config(env_id=what)
    else:
        env, base = what, config_lib.Config(env_id=_env_name(what))
        if _is_single_env(what):  # one instance can only be one env of the vector env
            if (overrides or {}).get("n_envs", base.n_envs) != 1:
                warnings.warn(
                    "An env instance is trained as ONE env (n_envs = 1); pass a factory "
                    "(`lambda: MyEnv()`) to train n_envs copies.",
                    stacklevel=3,
                )
            instance = what
            env, overrides = (lambda: instance), {**(overrides or {}), "n_envs": 1}
    return config_lib.from_dict(overrides or {}, base), env


def _looks_like_env_id(text: str) -> bool:
    """Gymnasium ids are Name-vN (or module:Name-vN); recipes and files are not."""
    import re

    return bool(re.fullmatch(r"([\w.]+:)?[\w/.-]+-v\d+", text)) and not text.endswith(".py")


def _is_single_env(env) -> bool:
    import gymnasium as gym

    return isinstance(env, gym.Env)


def _env_name(env) -> str:
    """The id a run folder is named after, for an env given as an object."""
    import gymnasium as gym

    probe = env
    if callable(env) and not isinstance(env, gym.Env | gym.vector.VectorEnv):
        probe = env()
        try:
            name = probe.spec.id if probe.spec is not None else type(probe.unwrapped).__name__
        finally:
            probe.close()
        return name
    spec = getattr(probe, "spec", None)
    return spec.id if spec is not None else type(getattr(probe, "unwrapped", probe)).__name__


def train(what=None, /, *, resume: str | Path | None = None, quiet: bool = False, **overrides):
    """Train an A2C agent; returns a `Run`.

    `what`: a Gymnasium id ("CartPole-v1"), a recipe name ("cartpole") or path
    ("agents/pendulum.py"), a TOML file, a `rlnorm.Config`, a Gymnasium env instance (trained
    as one env), a factory of envs (`lambda: MyEnv()`, called n_envs times) or a vector env;
    None trains the default recipe. `**overrides`: config keys (`rlnorm config` lists them).
    `resume`: a run folder to continue (overrides may change what does not shape the
    networks, e.g. total_steps)."""
    _require_tensorflow()
    from rlnorm.loop import train as train_loop

    trained = {}

    def keep(agent, run_dir):
        trained["agent"] = agent

    if resume is not None:
        if what is not None:
            raise config_lib.ConfigError(
                "train(what, resume=...): a resumed run trains its own saved config; give "
                "only overrides (e.g. total_steps=...) with resume."
            )
        from rlnorm.run_dir import load_run_config

        config = config_lib.from_dict(overrides, load_run_config(resume)) if overrides else None
        summary = train_loop(config, resume=resume, quiet=quiet, agent_callback=keep)
        env = None
    else:
        config, env = resolve_config(what, overrides)
        summary = train_loop(config, quiet=quiet, env=env, agent_callback=keep)
    run_dir = Path(summary["run_dir"])
    config = config_lib.load_toml(run_dir / "config.toml") if config is None else config
    return Run(config, trained["agent"], run_dir, summary, env)


def load(run_dir: str | Path, env=None) -> Run:
    """The `Run` of a run folder, from its latest checkpoint (read-only: nothing is written).
    `env`: the env or factory the run was trained on, if it was not made from an id."""
    _require_tensorflow()
    from rlnorm.evaluate import load_agent

    config, agent, _ = load_agent(run_dir, env=env)
    path = Path(run_dir) / "summary.json"
    summary = json.loads(path.read_text()) if path.is_file() else {}
    return Run(config, agent, run_dir, summary, env)
