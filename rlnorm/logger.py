"""What a run writes: TensorBoard scalars on the env-step axis, the progress bar, summary.json.

Tags follow CleanRL: `charts/episodic_return`, `charts/episodic_length`,
`charts/steps_per_second`, `losses/...`. The scale diagnostics have their own module
(`rlnorm.diagnostics`); this one only writes what every run writes.
"""

from __future__ import annotations

import collections
import json
import math
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from rlnorm import _fast
from rlnorm.checkpoint import atomic_write_text
from rlnorm.config import Config, field_docs

LOSS_TAGS = ("policy_loss", "value_loss", "entropy", "explained_variance")


def config_markdown(config: Config) -> str:
    docs = field_docs()
    rows = ["| key | value | meaning |", "|---|---|---|"]
    for key, value in config.to_dict().items():
        rows.append(f"| {key} | `{value}` | {docs.get(key, '').replace('|', '/')} |")
    return "\n".join(rows)


class RunLogger:
    """Episode statistics (last 100), scalars, progress bar and the run summary."""

    def __init__(
        self,
        run_dir: Path,
        config: Config,
        start_step: int = 0,
        quiet: bool = False,
        state: dict | None = None,
        writer=None,
    ):
        self.run_dir = Path(run_dir)
        self.config = config
        self.writer = writer or tf.summary.create_file_writer(str(self.run_dir))
        state = state or {}
        self.recent_returns = collections.deque(state.get("recent_returns", []), maxlen=100)
        self.recent_lengths = collections.deque(state.get("recent_lengths", []), maxlen=100)
        self.episodes = int(state.get("episodes", 0))
        self.best_mean = state.get("best_mean_return_last_100")
        self.best_full = bool(state.get("best_mean_full", self.episodes >= 100))
        self.return_curve = [list(p) for p in state.get("return_curve", [])]
        self.steps_to_target = state.get("steps_to_target")
        self._new_returns: list[float] = []
        self._new_lengths: list[float] = []
        self.start_step = start_step
        self.last_log_step = start_step
        self.t_start = self.t_last = time.perf_counter()
        self.step_last = start_step
        # The first update traces the compiled graphs: steady throughput is counted after it.
        self.first_update: tuple[float, int] | None = None  # (seconds since start, step)
        self.wall_before = float(state.get("wall_seconds", 0.0))
        self.pbar = (
            None
            if quiet
            else tqdm(
                total=config.total_steps,
                initial=start_step,
                unit="step",
                unit_scale=True,
                dynamic_ncols=True,
                desc=config.env_id,
            )
        )
        if start_step == 0:
            with self.writer.as_default():
                tf.summary.text("config", config_markdown(config), step=0)

    # -- episodes ---------------------------------------------------------------------------
    def record_episodes(self, returns: np.ndarray, lengths: np.ndarray, unseen: int = 0) -> None:
        """Finished episodes in the order they finished; `unseen` more finished before them
        whose returns are not given (a compiled call hands over only its last 100)."""
        for r, n in zip(returns, lengths, strict=True):
            self.recent_returns.append(float(r))
            self.recent_lengths.append(int(n))
            self._new_returns.append(float(r))
            self._new_lengths.append(float(n))
        self.episodes += len(returns) + unseen

    @property
    def mean_return(self) -> float | None:
        # math.fsum: exactly rounded, and cheaper than np.mean on a deque (every update).
        if not self.recent_returns:
            return None
        return math.fsum(self.recent_returns) / len(self.recent_returns)

    def target_reached(self, step: int) -> bool:
        target = self.config.target_return
        if target is None or len(self.recent_returns) < 100:
            return False
        mean = self.mean_return
        if mean >= target and self.steps_to_target is None:
            self.steps_to_target = step
        return mean >= target

    # -- per update ---------------------------------------------------------------------------
    def log_update(self, step: int, metrics: dict, force: bool = False) -> None:
        """Every `log_every` env steps (or when forced): scalars, curve point, progress bar."""
        if self.first_update is None:
            self.first_update = (time.perf_counter() - self.t_start, step)
        if self.pbar is not None:
            self.pbar.update(step - self.pbar.n)
        due = step - self.last_log_step >= self.config.log_every
        # A forced log at a step already logged would repeat every scalar and write a
        # steps_per_second of 0 (no steps since the last point).
        if not due and not (force and step > self.last_log_step):
            return
        now = time.perf_counter()
        sps = (step - self.step_last) / max(now - self.t_last, 1e-9)
        self.t_last, self.step_last, self.last_log_step = now, step, step
        mean = self.mean_return
        if mean is not None:
            self.return_curve.append([step, mean])
            if len(self.recent_returns) >= 100:  # the best over full 100-episode windows
                self.best_mean = max(self.best_mean, mean) if self.best_full else mean
                self.best_full = True
            elif not self.best_full:  # provisional until 100 episodes: the mean so far
                self.best_mean = mean
        scalars = {"charts/steps_per_second": sps}
        if self._new_returns:
            scalars["charts/episodic_return"] = np.mean(self._new_returns)
            scalars["charts/episodic_length"] = np.mean(self._new_lengths)
        if mean is not None:
            scalars["charts/mean_return_last_100"] = mean
        scalars.update({f"losses/{k}": float(metrics[k]) for k in LOSS_TAGS if k in metrics})
        _fast.write_summaries(self.writer, step, scalars, enabled=_fast.enabled(self.config))
        self._new_returns.clear()
        self._new_lengths.clear()
        if self.pbar is not None:
            self.pbar.set_postfix(
                ret100=f"{mean:.1f}" if mean is not None else "-", sps=f"{sps:,.0f}", refresh=False
            )

    # -- state and summary -----------------------------------------------------------------------
    def wall_seconds(self) -> float:
        return self.wall_before + time.perf_counter() - self.t_start

    def state(self) -> dict:
        """What a checkpoint carries besides tensors, so a resumed run continues its curve."""
        return {
            "recent_returns": list(self.recent_returns),
            "recent_lengths": list(self.recent_lengths),
            "episodes": self.episodes,
            "best_mean_return_last_100": self.best_mean,
            "best_mean_full": self.best_full,
            "return_curve": self.return_curve,
            "steps_to_target": self.steps_to_target,
            "wall_seconds": self.wall_seconds(),
        }

    def summary(self, step: int, agent: str, extra: dict | None = None) -> dict:
        wall = self.wall_seconds()
        trained = step - self.start_step
        elapsed = time.perf_counter() - self.t_start
        first_seconds, first_step = self.first_update or (elapsed, step)
        summary = {
            "env_id": self.config.env_id,
            "agent": agent,
            "seed": self.config.seed,
            "total_steps": step,
            "wall_seconds": wall,
            "steps_per_second": trained / max(elapsed, 1e-9),
            # Excluding the first update (tracing, compiling) and everything before it.
            "steady_steps_per_second": (step - first_step) / max(elapsed - first_seconds, 1e-9),
            "first_update_seconds": first_seconds,
            "episodes": self.episodes,
            "mean_return_last_100": self.mean_return,
            "best_mean_return_last_100": self.best_mean,
            "steps_to_target": self.steps_to_target,
            "return_curve": self.return_curve,
        }
        summary.update(extra or {})
        return summary

    def write_summary(self, summary: dict) -> None:
        atomic_write_text(self.run_dir / "summary.json", json.dumps(summary, indent=1))

    def close(self) -> None:
        if self.pbar is not None:
            self.pbar.close()
        self.writer.flush()
