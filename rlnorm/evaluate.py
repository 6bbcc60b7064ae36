"""Evaluation and loading a trained agent from a run folder.

Evaluation never writes to the run's checkpoints and never changes statistics: the
normalizer is frozen and every network call is in inference mode (BatchNorm: moving stats).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from rlnorm.agent import A2CAgent
from rlnorm.checkpoint import Checkpointer, NonFiniteStateError, atomic_write_text
from rlnorm.envs import make_eval_envs
from rlnorm.run_dir import checkpoint_dir, load_run_config, require_checkpoint

# Evaluation stops an episode the env never ends here (and says so).
MAX_EPISODE_STEPS = 10_000


def load_agent(run_dir: str | Path, envs=None, env=None):
    """(config, agent, checkpoint path) restored from the run's newest intact checkpoint,
    frozen. Refuses a checkpoint whose state is not finite (NonFiniteStateError). The spaces
    come from `envs`, else from the run's env id, or `env` (the user's factory)."""
    config = load_run_config(run_dir)
    require_checkpoint(run_dir)
    if envs is None:
        probe = make_eval_envs(config, 1, config.seed, env)
        spaces = probe.single_observation_space, probe.single_action_space
        probe.close()
    else:
        spaces = envs.single_observation_space, envs.single_action_space
    agent = A2CAgent(config, *spaces)
    # Read-only: never saves nor rewrites the index; optimizer slots are not needed. A trainer
    # pruning the checkpoint being read makes `restore` look up the new latest.
    checkpointer = Checkpointer(checkpoint_dir(run_dir), agent, max_to_keep=10**6, read_only=True)
    checkpointer.restore()
    path = checkpointer.restored
    bad = checkpointer.nonfinite_variables()
    if bad:
        raise NonFiniteStateError(
            f"Checkpoint {path} holds NaN or Inf in {len(bad)} variable(s) "
            f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}): it cannot be "
            "evaluated or exported."
        )
    agent.normalizer.frozen = True
    return config, agent, path


def evaluate(
    run_dir: str | Path,
    episodes: int = 10,
    deterministic: bool = False,
    seed: int | None = None,
    n_envs: int = 4,
    write: bool = True,
    max_episode_steps: int = MAX_EPISODE_STEPS,
) -> dict:
    """Run `episodes` full episodes on fresh envs; returns (and writes) eval.json's content.
    If eval.json cannot be written, the result is still returned, with `written` False."""
    check_eval_arguments(episodes, seed, max_episode_steps)
    config = load_run_config(run_dir)
    seed = config.seed + 10_000 if seed is None else seed  # not the training env seeds
    config, agent, ckpt = load_agent(run_dir)
    result = {
        "run_dir": str(run_dir),
        "checkpoint": ckpt,
        **evaluate_agent(
            agent, config, episodes, deterministic, seed, n_envs, None, max_episode_steps
        ),
    }
    if write:
        try:
            atomic_write_text(Path(run_dir) / "eval.json", json.dumps(result, indent=1))
            result["written"] = True
        except OSError as e:  # a read-only run folder, a full disk: the result still counts
            warnings.warn(f"eval.json not written ({e.strerror}: {e.filename}).", stacklevel=2)
            result["written"] = False
    return result


def check_eval_arguments(episodes, seed, max_episode_steps) -> None:
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}.")
    if seed is not None and not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}.")
    if max_episode_steps < 1:
        raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}.")


def evaluate_agent(
    agent,
    config,
    episodes: int,
    deterministic: bool,
    seed: int,
    n_envs: int = 4,
    env=None,
    max_episode_steps: int = MAX_EPISODE_STEPS,
) -> dict:
    """`episodes` full episodes of `agent` on fresh envs of `config` (or `env`, the user's
    factory), in inference mode; returns env_id, episodes, mean/std return, mean length, and
    how many episodes were cut at `max_episode_steps`."""
    check_eval_arguments(episodes, seed, max_episode_steps)
    envs = make_eval_envs(config, min(n_envs, episodes), seed, env, max_episode_steps)
    returns, lengths = [], []
    obs, _ = envs.reset(seed=seed)
    act = agent.act_deterministic if deterministic else (lambda o: agent.act(o)[0])
    # A fixed number of episodes per env (SB3's evaluate_policy): taking the first `episodes`
    # to finish, whichever env they come from, would over-sample short episodes.
    n = envs.num_envs
    targets = np.array([(episodes + i) // n for i in range(n)])
    counts = np.zeros(n, int)
    while (counts < targets).any():
        action = act(obs).numpy()
        obs, _, _, _, info = envs.step(action)
        if "_episode" in info:
            for i in np.flatnonzero(info["_episode"] & (counts < targets)):
                returns.append(float(info["episode"]["r"][i]))
                lengths.append(int(info["episode"]["l"][i]))
                counts[i] += 1
    envs.close()
    own = own_time_limit(config.env_id) if env is None else None
    cut = 0 if own is not None and own <= max_episode_steps else lengths.count(max_episode_steps)
    if cut:
        warnings.warn(
            f"{cut} of {episodes} evaluation episodes were cut at max_episode_steps = "
            f"{max_episode_steps} (the env did not end them); raise --max-episode-steps to "
            "see them end.",
            stacklevel=2,
        )
    return {
        "env_id": config.env_id,
        "episodes": episodes,
        "deterministic": deterministic,
        "seed": seed,
        "mean_return": float(np.mean(returns)),
        "std_return": float(np.std(returns)),
        "mean_length": float(np.mean(lengths)),
        "returns": returns,
        "episodes_cut": cut,
    }


def own_time_limit(env_id: str) -> int | None:
    """The time limit Gymnasium registers for `env_id` (None: none, or not registered)."""
    import gymnasium as gym

    try:
        return gym.spec(env_id.split(":")[-1]).max_episode_steps
    except gym.error.Error:
        return None


def variables_snapshot(agent) -> dict[str, np.ndarray]:
    """Copies of every network and normalizer variable (for before/after comparisons)."""
    variables = [
        *agent.policy.trainable_weights,
        *agent.policy.non_trainable_weights,
        *agent.value.trainable_weights,
        *agent.value.non_trainable_weights,
        agent.normalizer.count,
        agent.normalizer.mean,
        agent.normalizer.var,
    ]
    return {
        f"{i}:{getattr(v, 'path', v.name)}": np.array(v.numpy()) for i, v in enumerate(variables)
    }
