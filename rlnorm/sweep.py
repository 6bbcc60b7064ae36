"""Sweeps on Ray Tune: a grid of configs x seeds, every trial one rlnorm training run.

    name = "cartpole_norms"       # optional; default: the file's name
    recipe = "cartpole"           # the base: a recipe (agents/<name>.py), or config = "base.toml"
    seeds = [0, 1, 2]
    [grid]                        # every combination is a trial, for every seed
    policy_norm = ["none", "layer"]
    [set]                         # fixed overrides of the base
    total_steps = 200_000

Each trial is `rlnorm.loop.train` in a Ray worker holding 1 CPU, in the run folder
OUT/<key>=<value>__...__seed<seed>/, so `tensorboard --logdir OUT` shows every trial side by
side. A worker that dies is retried (FailureConfig) and resumes from its run's last checkpoint;
`sweep(resume=OUT)` reruns only the trials without a finished run. A trial whose config or env
is wrong fails at once with its message, and the others go on. See docs/sweeps.md.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import re
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rlnorm import config as config_lib

SWEEP_KEYS = ("name", "recipe", "config", "seeds", "grid", "set")
# The sweep sets these per trial; a sweep file naming them in [grid] or [set] is an error.
PER_TRIAL = {"seed": "use `seeds = [...]`", "run_dir": "--out", "runs_root": "--out"}
MAX_FAILURES = 2  # retries of a trial whose worker died
SPEC_FILE = "sweep.json"
ATTEMPTS_FILE = "attempts.json"
ERROR_FILE = "error.json"
METRICS = (
    "total_steps",
    "steps_to_target",
    "mean_return_last_100",
    "best_mean_return_last_100",
    "wall_seconds",
    "steps_per_second",
    "peak_rss_mb",
)
# Deterministic failures: retrying them cannot help, so the trial fails at once.
TRIAL_ERRORS = (config_lib.ConfigError, ValueError, FileNotFoundError, FloatingPointError)


class SweepError(ValueError):
    """A sweep file or folder is not usable; the message names the key or path and the fix."""


# -- the sweep file ------------------------------------------------------------------------------
def read_spec(path_or_dict: str | Path | dict) -> tuple[dict, Path]:
    """The sweep as a dict, checked for unknown keys, and the folder its relative paths start in."""
    if isinstance(path_or_dict, dict):
        spec, folder = dict(path_or_dict), Path.cwd()
        spec.setdefault("name", "sweep")
    else:
        path = Path(path_or_dict)
        if not path.is_file():
            raise SweepError(f"Sweep file {str(path)!r} does not exist.")
        try:
            spec = config_lib.tomllib.loads(path.read_text())
        except config_lib.tomllib.TOMLDecodeError as e:
            raise SweepError(f"Sweep file {str(path)!r} does not parse: {e}") from None
        spec.setdefault("name", path.stem)
        folder = path.resolve().parent
    unknown = sorted(set(spec) - set(SWEEP_KEYS))
    if unknown:
        raise SweepError(
            f"Unknown sweep key(s) {', '.join(map(repr, unknown))}; a sweep has: "
            f"{', '.join(SWEEP_KEYS)}. Config keys go under [grid] or [set]."
        )
    if ("recipe" in spec) == ("config" in spec):
        raise SweepError('A sweep names its base: recipe = "cartpole" or config = "my.toml".')
    seeds = spec.setdefault("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(type(s) is int for s in seeds):
        raise SweepError(f"seeds = {seeds!r}: give a non-empty list of integers, e.g. [0, 1, 2].")
    for table in ("grid", "set"):
        values = spec.setdefault(table, {})
        if not isinstance(values, dict):
            raise SweepError(f"[{table}] must be a table of config keys, got {values!r}.")
        for key in values:
            if key in PER_TRIAL:
                raise SweepError(
                    f"[{table}] {key}: the sweep sets it per trial ({PER_TRIAL[key]})."
                )
            if key not in config_lib.FIELDS:
                raise SweepError(f"[{table}] {config_lib._unknown_key(key)}")
    for key, values in spec["grid"].items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"[grid] {key} = {values!r}: give a non-empty list of values.")
    both = sorted(set(spec["grid"]) & set(spec["set"]))
    if both:
        raise SweepError(f"{', '.join(both)}: in both [grid] and [set]; keep one.")
    return spec, folder


def base_config(spec: dict, folder: Path) -> config_lib.Config:
    """The recipe or TOML config the sweep starts from (relative paths: from the sweep file)."""
    from rlnorm.recipes import load_recipe

    def local(name: str) -> str | Path:
        return folder / name if (folder / name).is_file() else name

    if "recipe" in spec:
        return load_recipe(local(spec["recipe"]))
    return config_lib.load_toml(local(spec["config"]))


def format_value(value: Any) -> str:
    """A grid value as it appears in a folder name: `0.0007`, `layer`, `64-64`."""
    if isinstance(value, list | tuple):
        return "-".join(format_value(v) for v in value)
    return re.sub(r"[^A-Za-z0-9.+-]", "_", str(value))


def trial_name(grid: dict, seed: int) -> str:
    return "__".join([*(f"{k}={format_value(v)}" for k, v in grid.items()), f"seed{seed}"])


def expand(spec: dict, base: config_lib.Config) -> list[dict]:
    """One trial per grid combination and seed: {"name", "grid", "seed", "config"}, the config
    a complete validated dict (base <- tf_threads = 1 <- [set] <- grid values <- seed)."""
    keys = list(spec["grid"])
    trials = []
    for values in itertools.product(*spec["grid"].values()):
        grid = dict(zip(keys, values))
        for seed in spec["seeds"]:
            overrides = {"tf_threads": 1, **spec["set"], **grid, "seed": seed}
            try:
                config = config_lib.from_dict(overrides, base)
            except config_lib.ConfigError as e:
                raise SweepError(f"Trial {trial_name(grid, seed)}: {e}") from None
            trials.append(
                dict(name=trial_name(grid, seed), grid=grid, seed=seed, config=config.to_dict())
            )
    return trials


# -- one trial -----------------------------------------------------------------------------------
def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_finished(run_dir: Path, total_steps: int) -> bool:
    """A run that reached its budget or its target return (an interrupted one has neither)."""
    summary = read_json(Path(run_dir) / "summary.json")
    return bool(summary) and (
        summary["total_steps"] >= total_steps or summary["stopped_by"] == "target_return"
    )


def run_trial(params: dict, trials: dict) -> None:
    """The Tune trainable: train the trial `params["trial"]` (a name in `trials`), or resume it
    from its last checkpoint when an earlier attempt (a dead worker, an interrupted sweep)
    left one."""
    trial = trials[params["trial"]]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from ray import tune

    from rlnorm.checkpoint import atomic_write_text
    from rlnorm.run_dir import checkpoint_dir

    run_dir = Path(trial["run_dir"])
    config = config_lib.from_dict(trial["config"])
    if not is_finished(run_dir, config.total_steps):
        import tensorflow as tf

        from rlnorm.loop import train

        latest = tf.train.latest_checkpoint(str(checkpoint_dir(run_dir)))
        attempts = read_json(run_dir / ATTEMPTS_FILE) or []
        if latest is None and run_dir.exists():
            shutil.rmtree(run_dir)  # an attempt that died before its first checkpoint
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / ERROR_FILE).unlink(missing_ok=True)
        resumed_from = int(latest.rsplit("-", 1)[1]) if latest else None
        attempts.append(
            {"pid": os.getpid(), "resumed_from_step": resumed_from, "time": time.time()}
        )
        atomic_write_text(run_dir / ATTEMPTS_FILE, json.dumps(attempts, indent=1))
        # The pid also alone, for whoever needs to find this trial's worker process.
        atomic_write_text(run_dir / "worker.pid", str(os.getpid()))
        try:
            train(None if latest else config, resume=run_dir if latest else None, quiet=True)
        except TRIAL_ERRORS as e:
            message = f"{type(e).__name__}: {e}"
            atomic_write_text(run_dir / ERROR_FILE, json.dumps({"error": message}))
            tune.report({"status": "error", "error": message})
            return
    summary = read_json(run_dir / "summary.json")
    tune.report({"status": "done", **{k: summary.get(k) for k in METRICS}})


# -- the sweep -----------------------------------------------------------------------------------
@contextmanager
def ray_session(address: str | None):
    """Join the cluster at `address` (or RAY_ADDRESS, or the Ray this process already runs);
    else start a local Ray with one CPU per core for the sweep and stop it after."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS")
    if ray.is_initialized() and not address:
        yield
        return
    if address:
        ray.init(address=address)
    else:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False)
    try:
        yield
    finally:
        ray.shutdown()


def fit(trials: list[dict], out: Path, attempt: str) -> dict[str, str]:
    """Run `trials` on Tune; returns {trial name: error} for trials Tune gave up on."""
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    # Tune's own TensorBoard files would sit among the runs in `tensorboard --logdir OUT`.
    previous = os.environ.get("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS")
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    try:
        tuner = tune.Tuner(
            # The specs travel in Ray's object store; the trial's Tune config is its name.
            tune.with_resources(
                tune.with_parameters(run_trial, trials={t["name"]: t for t in trials}), {"cpu": 1}
            ),
            param_space={"trial": tune.grid_search([t["name"] for t in trials])},
            tune_config=tune.TuneConfig(
                trial_name_creator=lambda t: t.config["trial"],
                trial_dirname_creator=lambda t: t.config["trial"],
            ),
            run_config=tune.RunConfig(
                name=attempt,
                storage_path=str(out / "_tune"),
                failure_config=tune.FailureConfig(max_failures=MAX_FAILURES),
                callbacks=[CSVLoggerCallback(), JsonLoggerCallback()],
                verbose=1,
            ),
        )
        grid = tuner.fit()
    finally:
        if previous is None:
            os.environ.pop("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS")
        else:
            os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = previous
    return {
        r.config["trial"]: (str(r.error).strip().splitlines() or [type(r.error).__name__])[-1]
        for r in grid
        if r.error is not None
    }


def sweep(
    path_or_dict: str | Path | dict | None = None,
    out: str | Path | None = None,
    address: str | None = None,
    resume: str | Path | None = None,
) -> list[dict]:
    """Run the sweep `path_or_dict` (a sweep TOML file or the same as a dict) into the folder
    `out` (default runs/sweeps/<name>__<time>/), or finish the sweep in the folder `resume`.
    Returns one row per trial (also in OUT/results.csv and results.json) and prints the table
    grouped by the grid keys."""
    if resume is not None:
        out = Path(resume).resolve()
        saved = read_json(out / SPEC_FILE)
        if saved is None:
            raise SweepError(f"{str(out)!r} is not a sweep folder: it has no {SPEC_FILE}.")
    else:
        spec, folder = read_spec(path_or_dict)
        base = base_config(spec, folder)
        trials = expand(spec, base)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = Path(out or Path(base.runs_root) / "sweeps" / f"{spec['name']}__{stamp}").resolve()
        if (out / SPEC_FILE).exists():
            raise SweepError(f"{str(out)!r} holds a sweep already: `--resume {out}` finishes it.")
        out.mkdir(parents=True, exist_ok=True)
        source = str(path_or_dict) if not isinstance(path_or_dict, dict) else None
        saved = {"name": spec["name"], "source": source, "grid_keys": list(spec["grid"])}
        saved["trials"] = trials
        (out / SPEC_FILE).write_text(json.dumps(saved, indent=1))
    trials = [{**t, "run_dir": str(out / t["name"])} for t in saved["trials"]]
    for t in trials:
        t["config"] = {**t["config"], "run_dir": t["run_dir"], "runs_root": str(out)}
    todo = [t for t in trials if not is_finished(Path(t["run_dir"]), t["config"]["total_steps"])]
    failed: dict[str, str] = {}
    interrupted = False
    if todo:
        try:
            import ray.tune  # noqa: F401
        except ImportError:
            raise SweepError("Ray Tune is not installed: pip install 'rlnorm[ray]'.") from None
        attempt = f"attempt{len(list((out / '_tune').glob('attempt*'))) + 1}"
        print(f"sweep {saved['name']}: {len(todo)} of {len(trials)} trials to run -> {out}")
        with ray_session(address):
            try:
                failed = fit(todo, out, attempt)
            except KeyboardInterrupt:  # a second Ctrl-C: Tune stops without waiting for trials
                interrupted = True
    rows = [result_row(t, failed.get(t["name"])) for t in trials]
    write_results(out, rows, saved["grid_keys"])
    print(results_table(rows, saved["grid_keys"], saved["name"], out), flush=True)
    if interrupted:
        raise KeyboardInterrupt
    return rows


# -- results -------------------------------------------------------------------------------------
def result_row(trial: dict, tune_error: str | None) -> dict:
    """The trial's grid values, seed, status (done | error | failed | unfinished) and summary."""
    run_dir = Path(trial["run_dir"])
    summary = read_json(run_dir / "summary.json") or {}
    error = (read_json(run_dir / ERROR_FILE) or {}).get("error") or tune_error
    if is_finished(run_dir, trial["config"]["total_steps"]):
        status, error = "done", None
    else:
        status = "error" if (run_dir / ERROR_FILE).exists() else "failed" if error else "unfinished"
    row = {"trial": trial["name"], **trial["grid"], "seed": trial["seed"], "status": status}
    row.update({k: summary.get(k) for k in METRICS} if status == "done" else dict.fromkeys(METRICS))
    attempts = read_json(run_dir / ATTEMPTS_FILE) or []
    row.update(attempts=len(attempts), run_dir=str(run_dir), error=error)
    return row


def write_results(out: Path, rows: list[dict], grid_keys: list[str]) -> None:
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: format_value(v) if k in grid_keys else v for k, v in row.items()})


def aggregate(values) -> tuple[float, float, float]:
    """(IQM, 95% CI low, high) over seeds, the regression harness's statistics (`rlnorm.stats`:
    25%-trimmed mean, percentile bootstrap; Agarwal et al. 2021). One value: no interval (NaN)."""
    import numpy as np

    from rlnorm import stats

    x = np.asarray(values, np.float64)
    iqm = float(stats.iqm(x))
    if x.size < 2:
        return iqm, math.nan, math.nan
    lo, hi = stats.stratified_bootstrap_ci(x, stats.iqm)
    return iqm, float(lo), float(hi)


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    iqm, lo, hi = aggregate(values)
    return f"{iqm:.4g}" if math.isnan(lo) else f"{iqm:.4g} [{lo:.4g}, {hi:.4g}]"


def results_table(rows: list[dict], grid_keys: list[str], name: str, out: Path) -> str:
    """The trials grouped by their grid values: done seeds, and IQM [95% CI] over the seeds of
    the last-100 mean return, its best, and the steps to the target (of the seeds that got there)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(format_value(row[k]) for k in grid_keys), []).append(row)
    header = [*grid_keys, "done", "return IQM [95% CI]", "best IQM [95% CI]", "steps to target"]
    lines = [header]
    for key, group in groups.items():
        done = [r for r in group if r["status"] == "done"]
        reached = [r["steps_to_target"] for r in done if r["steps_to_target"] is not None]
        lines.append(
            [
                *key,
                f"{len(done)}/{len(group)}",
                _cell([r["mean_return_last_100"] for r in done]),
                _cell([r["best_mean_return_last_100"] for r in done]),
                f"{_cell(reached)} ({len(reached)}/{len(group)} reached)" if reached else "-",
            ]
        )
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    text = [f"sweep {name}: {out}"]
    text += ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "error", "failed")}
    unfinished = len(rows) - sum(counts.values())
    text.append(
        f"{len(rows)} trials: {counts['done']} done, {counts['error']} config errors, "
        f"{counts['failed']} failed, {unfinished} unfinished; results.csv, results.json; "
        f"tensorboard --logdir {out}"
    )
    text += [f"  {r['trial']}: {r['error']}" for r in rows if r["error"]]
    if unfinished or counts["failed"] or counts["error"]:
        text.append(f"rerun what is not done: rlnorm sweep --resume {out}")
    return "\n".join(text)
