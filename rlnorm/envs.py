"""Gymnasium vector environments: id resolution with clear errors, seeding, episode statistics.

Episode returns and lengths are the env's own rewards, before any reward scaling (which rlnorm
does on the stored rollout, see `normalizer.RewardScaler`): evaluation reads them from
`RecordEpisodeStatistics`, which wraps the raw env; training counts them in the rollout's env
callback (`rlnorm.rollout`, same counting, cheaper). Box actions are clipped to the space at
the env boundary by `ClipBoxAction`, while the rollout stores the unclipped sample.
"""

from __future__ import annotations

import difflib
import importlib

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from rlnorm.networks import check_action_space
from rlnorm.normalizer import check_observation_space

AUTORESET = {"same_step": AutoresetMode.SAME_STEP, "next_step": AutoresetMode.NEXT_STEP}
# rlnorm's extras named after the Gymnasium env families they install (pyproject.toml).
EXTRAS = ("box2d", "mujoco")


class EnvError(ValueError):
    """The environment id or its spaces cannot be used, or the env misbehaved (raised, or
    returned what its spaces do not allow); the message names the env and the fix."""


# Steps of each env whose results are checked against its spaces (then only exceptions are
# caught): a wrong type shows at once, and the check costs nothing afterwards.
CHECKED_STEPS = 1000


class EnvChecker(gym.Wrapper):
    """Names the env, the call and the env index when a sub-env raises, and checks what its
    first CHECKED_STEPS steps return: an observation of the space's shape, a real scalar
    reward, boolean terminated/truncated, the 5-tuple of Gymnasium 1.x."""

    def __init__(self, env: gym.Env, env_id: str, index: int):
        super().__init__(env)
        self.env_id, self.index, self.checks_left = env_id, index, CHECKED_STEPS

    def _fail(self, call: str, problem: str) -> EnvError:
        return EnvError(f"Environment {self.env_id!r}, env index {self.index}: {call}() {problem}")

    def reset(self, **kwargs):
        try:
            obs, info = self.env.reset(**kwargs)
        except EnvError:
            raise
        except Exception as e:
            raise self._fail("reset", f"raised {type(e).__name__}: {e}") from e
        if self.checks_left > 0:
            self._check_obs("reset", obs)
        return obs, info

    def step(self, action):
        try:
            out = self.env.step(action)
        except EnvError:
            raise
        except Exception as e:
            raise self._fail("step", f"raised {type(e).__name__}: {e}") from e
        if self.checks_left <= 0:
            return out
        self.checks_left -= 1
        if not isinstance(out, tuple) or len(out) != 5:
            n = len(out) if isinstance(out, tuple) else type(out).__name__
            raise self._fail(
                "step",
                f"returned {n} values; Gymnasium 1.x envs return (obs, reward, terminated, "
                "truncated, info). An env of the old Gym API (obs, reward, done, info) needs "
                "porting (or `shimmy`'s compatibility wrapper).",
            )
        obs, reward, terminated, truncated, _ = out
        self._check_obs("step", obs)
        if isinstance(reward, bool | np.bool_) or not isinstance(
            reward, int | float | np.integer | np.floating
        ):
            what = (
                f"{type(reward).__name__} {np.shape(reward)}" if np.ndim(reward) else repr(reward)
            )
            raise self._fail("step", f"returned reward {what}; a reward is one real number.")
        for name, flag in (("terminated", terminated), ("truncated", truncated)):
            if not isinstance(flag, bool | np.bool_):
                raise self._fail(
                    "step",
                    f"returned {name} = {flag!r} ({type(flag).__name__}); it must be a bool.",
                )
        return out

    def _check_obs(self, call: str, obs) -> None:
        space = self.observation_space
        if isinstance(space, gym.spaces.Box) and np.shape(obs) != space.shape:
            raise self._fail(
                call,
                f"returned an observation of shape {np.shape(obs)}; its observation space "
                f"{type(space).__name__} expects shape {space.shape}.",
            )


def env_checkers(env_id: str):
    """A wrapper factory for `gym.make_vec(wrappers=...)`: the n-th env made gets index n."""
    count = iter(range(10**9))
    return lambda env: EnvChecker(env, env_id, next(count))


def resolve_env_id(env_id: str) -> str:
    """Import `module` for `module:EnvName-vN` ids, then check the id is registered.

    Returns the id Gymnasium knows (without the module prefix)."""
    name = env_id
    if ":" in env_id:
        module, name = env_id.split(":", 1)
        try:
            importlib.import_module(module)
        except Exception as e:  # ImportError, or the module itself failing (SyntaxError, ...)
            raise EnvError(
                f"Environment id {env_id!r}: module {module!r} could not be imported "
                f"({type(e).__name__}: {e}). Install it or fix the module path in "
                "`module:EnvName-vN`."
            ) from e
    if name not in gym.registry:
        close = difflib.get_close_matches(name, list(gym.registry), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise EnvError(
            f"Unknown environment id {name!r}.{hint} Registered ids are listed by "
            "`gymnasium.pprint_registry()`; your own envs can be given as `module:EnvName-vN`."
        )
    return name


def open_vec_env(config, env=None) -> gym.vector.VectorEnv:
    """The training envs: `config.env_id` made as `config` says, or `env` given by the user, a
    Gymnasium VectorEnv (used as it is) or a callable returning a new single env (called
    `config.n_envs` times, stepped by a SyncVectorEnv). Spaces are checked either way."""
    if env is None:
        return make_vec_env(
            config.env_id,
            config.n_envs,
            config.seed,
            config.vectorization_mode,
            config.autoreset_mode,
            episode_statistics=False,  # the rollout counts episodes itself (rlnorm.rollout)
        )
    if isinstance(env, gym.vector.VectorEnv):
        envs = env
    elif callable(env) and not isinstance(env, gym.Env):
        mode = AUTORESET[config.autoreset_mode]
        fns = [lambda i=i: EnvChecker(env(), config.env_id, i) for i in range(config.n_envs)]
        envs = gym.vector.SyncVectorEnv(fns, autoreset_mode=mode)
    else:
        raise EnvError(
            f"env = {env!r} is neither a Gymnasium VectorEnv nor a factory of envs. Pass "
            "`lambda: MyEnv()` (rlnorm makes n_envs copies) or a gymnasium.vector env."
        )
    if envs.num_envs != config.n_envs:
        raise EnvError(
            f"The vector env given has {envs.num_envs} envs but config n_envs = "
            f"{config.n_envs}: set n_envs={envs.num_envs}, or pass a factory of single envs."
        )
    check_spaces(envs.single_observation_space, envs.single_action_space, config.env_id)
    if isinstance(envs.single_action_space, gym.spaces.Box):
        envs = ClipBoxAction(envs)
    envs.action_space.seed(config.seed)
    return envs


def make_eval_envs(
    config, n_envs: int, seed: int, env=None, max_episode_steps: int | None = None
) -> gym.vector.VectorEnv:
    """Fresh envs for evaluation (SAME_STEP autoreset, episode statistics): of `config.env_id`,
    or of `env`, the user's factory of single envs. Episodes longer than `max_episode_steps`
    are truncated there (where the env's own time limit is longer, or it has none)."""
    if env is None or isinstance(env, gym.vector.VectorEnv):
        return make_vec_env(
            config.env_id,
            n_envs,
            seed,
            autoreset_mode="same_step",
            max_episode_steps=max_episode_steps,
        )

    def make():
        single = env()
        own = single.spec.max_episode_steps if single.spec is not None else None
        if max_episode_steps is not None and (own is None or own > max_episode_steps):
            single = gym.wrappers.TimeLimit(single, max_episode_steps)
        return single

    envs = gym.vector.SyncVectorEnv([make] * n_envs, autoreset_mode=AutoresetMode.SAME_STEP)
    check_spaces(envs.single_observation_space, envs.single_action_space, config.env_id)
    envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)
    if isinstance(envs.single_action_space, gym.spaces.Box):
        envs = ClipBoxAction(envs)
    envs.action_space.seed(seed)
    return envs


def make_vec_env(
    env_id: str,
    n_envs: int,
    seed: int | None = None,
    vectorization_mode: str = "sync",
    autoreset_mode: str = "same_step",
    episode_statistics: bool = True,
    max_episode_steps: int | None = None,
) -> gym.vector.VectorEnv:
    """A seeded vector env with episode statistics (`info["episode"]`, unless
    `episode_statistics` is False) and Box action clipping.

    The env reports its actual autoreset mode in `envs.metadata["autoreset_mode"]`; the
    rollout reads it from there, because NumPy-vectorized envs (`vector_entry_point`) support
    only NEXT_STEP whatever is asked."""
    name = resolve_env_id(env_id)
    spec = gym.registry[name]
    if vectorization_mode == "vector_entry_point" and spec.vector_entry_point is None:
        vectorization_mode = "sync"  # this env has no NumPy-vectorized version
    kwargs = {}
    if vectorization_mode != "vector_entry_point":
        kwargs["vector_kwargs"] = {"autoreset_mode": AUTORESET[autoreset_mode]}
        kwargs["wrappers"] = [env_checkers(env_id)]
    if max_episode_steps is not None and (
        spec.max_episode_steps is None or spec.max_episode_steps > max_episode_steps
    ):
        kwargs["max_episode_steps"] = max_episode_steps  # a cap for evaluation
    try:
        envs = gym.make_vec(name, num_envs=n_envs, vectorization_mode=vectorization_mode, **kwargs)
    except gym.error.DependencyNotInstalled as e:  # e.g. MuJoCo envs without the extra
        extra = next((x for x in EXTRAS if f"envs.{x}" in str(spec.entry_point)), None)
        fix = f"pip install 'rlnorm[{extra}]'" if extra else str(e).splitlines()[0]
        raise EnvError(f"Environment {env_id!r} needs an optional dependency: {fix}") from None
    check_spaces(envs.single_observation_space, envs.single_action_space, env_id)
    if episode_statistics:
        envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)
    if isinstance(envs.single_action_space, gym.spaces.Box):
        envs = ClipBoxAction(envs)
    if seed is not None:
        envs.action_space.seed(seed)
    return envs


class ClipBoxAction(gym.vector.VectorActionWrapper):
    """Clips Box actions to the space at the env boundary. Unlike Gymnasium's `ClipAction`,
    which declares an unbounded Box, it keeps reporting the env's own bounds, so the agent
    built from `single_action_space` (and the SavedModel exported from it) knows them."""

    def actions(self, actions):
        space = self.env.action_space
        return np.clip(actions, space.low, space.high)


def check_spaces(observation_space: gym.Space, action_space: gym.Space, env_id: str = "") -> None:
    where = f"Environment {env_id!r}: " if env_id else ""
    if isinstance(observation_space, gym.spaces.Graph | gym.spaces.Sequence):
        raise EnvError(
            f"{where}Observation space {observation_space} ({type(observation_space).__name__}) "
            "is not supported: its size varies from step to step, so neither rlnorm's networks "
            "nor `gymnasium.wrappers.FlattenObservation` can read it. Fix: an ObservationWrapper "
            "that encodes it as a fixed-size Box (e.g. padded to a maximum length)."
        )
    try:
        check_observation_space(observation_space)
        check_action_space(action_space)
    except ValueError as e:
        raise EnvError(where + str(e)) from None
    if isinstance(observation_space, gym.spaces.Box) and observation_space.shape is not None:
        if int(np.prod(observation_space.shape)) == 0:
            raise EnvError(
                f"{where}Observation space {observation_space} has no features (shape "
                f"{observation_space.shape}): give the env at least one observation feature."
            )


def autoreset_mode_of(envs: gym.vector.VectorEnv) -> str:
    mode = envs.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
    if mode == AutoresetMode.DISABLED:
        raise EnvError("Vector envs with autoreset DISABLED are not supported; use same_step.")
    return "same_step" if mode == AutoresetMode.SAME_STEP else "next_step"
