"""The run folder: runs/<env_id>/<agent>__seed<seed>__<YYYYmmdd-HHMMSS>/.

It holds everything about a run: TensorBoard events, the resolved `config.toml`,
`checkpoints/`, `summary.json` (and `eval.json` after `rlnorm eval`).
"""

from __future__ import annotations

import time
from pathlib import Path

from rlnorm import config as config_lib


class RunDirError(ValueError):
    """A folder given as a run is not one (no config.toml) or has no checkpoint."""


def new_run_dir(config: config_lib.Config) -> Path:
    if config.run_dir:
        path = Path(config.run_dir)
    else:
        env = config.env_id.replace(":", "_").replace("/", "_")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = Path(config.runs_root) / env / f"{config.agent}__seed{config.seed}__{stamp}"
        n = 1
        while path.exists():  # two runs started in the same second
            n += 1
            path = path.with_name(f"{config.agent}__seed{config.seed}__{stamp}-{n}")
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_run_config(run_dir: str | Path) -> config_lib.Config:
    path = Path(run_dir)
    if not path.is_dir():
        raise RunDirError(
            f"{str(path)!r} is not a directory. Give a run folder such as "
            "runs/CartPole-v1/cartpole__seed0__20260101-120000."
        )
    if not (path / "config.toml").is_file():
        raise RunDirError(
            f"{str(path)!r} is not an rlnorm run: it has no config.toml. Give a "
            "folder made by `rlnorm train` (see `ls runs/*/`)."
        )
    return config_lib.load_toml(path / "config.toml")


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def require_checkpoint(run_dir: str | Path) -> None:
    import tensorflow as tf

    if tf.train.latest_checkpoint(str(checkpoint_dir(run_dir))) is None:
        raise RunDirError(
            f"Run {str(run_dir)!r} has no checkpoint yet (checkpoints/ is empty): "
            "train longer than `checkpoint_every` steps or resume it with "
            "`rlnorm train --resume`."
        )
