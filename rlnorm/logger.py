"""What a run writes: TensorBoard scalars on the env-step axis, the progress bar, summary.json.

Tags follow CleanRL: `charts/episodic_return`, `charts/episodic_length`,
`charts/steps_per_second`, `losses/...`. The scale diagnostics have their own module
(`rlnorm.diagnostics`); this one only writes what every run writes.
"""

from __future__ import annotations

import collections
import json
import math
import os
import sys
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
        self.first_update_cpu = 0.0  # process CPU seconds (all threads) at the first update
        self.wall_before = float(state.get("wall_seconds", 0.0))
        # tqdm shows the speed (steps/s) itself; the postfix adds only the return.
        target = config.target_return
        desc = config.env_id + (f" (stops at last-100 mean >= {target:g})" if target else "")
        self.pbar = (
            None
            if quiet
            else tqdm(
                total=config.total_steps,
                initial=start_step,
                unit="step",
                unit_scale=True,
                dynamic_ncols=True,
                desc=desc,
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
    def log_update(
        self, step: int, metrics: dict, force: bool = False, now: float | None = None
    ) -> None:
        """Every `log_every` env steps (or when forced): scalars, curve point, progress bar.
        `now`: the perf_counter time `step` was reached (a compiled call logs its log points
        after it ran), for charts/steps_per_second."""
        if self.first_update is None:
            self.first_update = (time.perf_counter() - self.t_start, step)
            self.first_update_cpu = time.process_time()
        if self.pbar is not None:
            self.pbar.update(step - self.pbar.n)
        due = step - self.last_log_step >= self.config.log_every
        # A forced log at a step already logged would repeat every scalar and write a
        # steps_per_second of 0 (no steps since the last point).
        if not due and not (force and step > self.last_log_step):
            return
        now = time.perf_counter() if now is None else now
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
            self.pbar.set_postfix_str(
                f"last-100 mean {mean:.1f}" if mean is not None else "no episode yet", refresh=False
            )

    def alarm(self, text: str) -> None:
        """A fired scale alarm: its own line above the progress bar (or a ScaleAlarmWarning
        when there is no bar, so API users can filter or raise it)."""
        if self.pbar is None:
            import warnings

            from rlnorm.alarms import ScaleAlarmWarning

            warnings.warn(text, ScaleAlarmWarning, stacklevel=4)
        else:
            tqdm.write(text, file=sys.stderr)

    def note_autoreset(self, mode: str | None) -> None:
        """Say in config.toml how the env really resets when it is not what the key says (a
        NumPy-vectorized env has its own autoreset, whatever `autoreset_mode` asks)."""
        path = self.run_dir / "config.toml"
        if mode is None or mode == self.config.autoreset_mode or not path.is_file():
            return
        note = (
            f"\n# The env resets as autoreset_mode = {mode!r}: vectorization_mode = "
            f"{self.config.vectorization_mode!r} brings its own autoreset (key above ignored).\n"
        )
        text = path.read_text()
        if note.strip() not in text:
            atomic_write_text(path, text + note)

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
            # The same per CPU second of this process: comparable on a shared machine.
            "steady_steps_per_cpu_second": (step - first_step)
            / max(time.process_time() - self.first_update_cpu, 1e-9),
            "first_update_seconds": first_seconds,
            "episodes": self.episodes,
            "mean_return_last_100": self.mean_return,
            "best_mean_return_last_100": self.best_mean,
            "target_return": self.config.target_return,
            "steps_to_target": self.steps_to_target,
            "return_curve": self.return_curve,
        }
        extra = dict(extra or {})
        if "first_env_step_time" in extra:  # a wall-clock timestamp -> a duration
            first = extra.pop("first_env_step_time")
            extra["first_env_step_seconds"] = first - process_start_time() if first else None
        summary.update(extra)
        return summary

    def write_summary(self, summary: dict) -> None:
        atomic_write_text(self.run_dir / "summary.json", json.dumps(summary, indent=1))

    def close(self) -> None:
        if self.pbar is not None:
            self.pbar.close()
        self.writer.flush()


def process_start_time() -> float:
    """When this process started (time.time() scale): Linux's /proc, else when rlnorm.logger
    was imported."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime")
        )
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED


_IMPORTED = time.time()


def human_summary(summary: dict) -> str:
    """The few lines a run ends with: solved or not, steps, time, speed, alarms, where to look."""
    steps, target = summary["total_steps"], summary.get("target_return")
    mean = summary.get("mean_return_last_100")
    mean_text = f"{mean:.1f}" if mean is not None else "- (no episode finished)"
    if summary.get("steps_to_target") is not None:
        head = f"Solved: last-100 mean return {mean_text} >= {target:g} at env step {steps:,}."
    elif target is not None:
        head = (
            f"Not solved: last-100 mean return {mean_text} < {target:g} after {steps:,} env "
            f"steps (stopped by {summary['stopped_by']})."
        )
    else:
        head = f"Trained {steps:,} env steps: last-100 mean return {mean_text}."
    lines = [
        head,
        f"  {summary['wall_seconds']:.1f} s, {summary['steps_per_second']:,.0f} steps/s, "
        f"{summary['episodes']:,} episodes.",
    ]
    alarms = summary.get("alarms") or []
    if alarms:
        lines.append(f"  Scale alarms fired: {len(alarms)}")
        lines += [f"    {a['rule']} (env step {a['step']:,}): {a['message']}" for a in alarms]
    else:
        lines.append("  Scale alarms fired: none.")
    run_dir = summary["run_dir"]
    lines.append(f"  Run folder: {run_dir}")
    lines.append(f"  Look at it: tensorboard --logdir {run_dir}")
    lines.append(f"  Check it:   rlnorm doctor {run_dir}")
    return "\n".join(lines)
