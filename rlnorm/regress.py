"""`rlnorm regress`: train a recipe on many seeds and judge it against a stored baseline with
interval estimates, not one seed against a threshold (Agarwal et al., NeurIPS 2021).

    regress("agents/cartpole.py", seeds=16)                 # compare with its baseline
    regress("agents/cartpole.py", seeds=16, update_baseline=True)

Per seed: steps to the target return (censored: a run that never reaches it counts as the
whole budget), whether it was solved, the final last-100 mean return, and the area under the
return curve over the budget. Over seeds: IQM and median with 95% stratified-bootstrap CIs
(`rlnorm.stats`). Against the baseline: the probability of improvement P(new better than
baseline) with its CI, and a verdict on the primary metric (docs/regression.md):

    regressed  if the CI's upper bound < 0.5  (the new runs are significantly worse)
    improved   if the CI's lower bound > 0.5  (significantly better)
    pass       otherwise
"""

from __future__ import annotations

import datetime
import importlib.metadata
import importlib.util
import json
import multiprocessing
import os
import platform
import shlex
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from rlnorm import config as config_lib
from rlnorm import stats

# Metric -> True when higher is better. steps_to_target is primary when the config has a target.
METRICS = {"steps_to_target": False, "final_return": True, "auc": True}
CURVE_POINTS = 61  # return curves are stored and plotted on this many evenly spaced steps
BASELINE_DIR = Path("benchmarks") / "baselines"
# Keys that differ between runs of one experiment, not between experiments.
RUN_KEYS = ("seed", "run_dir", "runs_root", "tf_threads")
VERSIONS = ("tensorflow-cpu", "tensorflow", "keras", "gymnasium", "numpy", "scipy")


def regress(
    what: str | Path,
    seeds: int = 16,
    seed_start: int = 0,
    overrides: dict | None = None,
    baseline: str | Path | None = None,
    update_baseline: bool = False,
    workers: int | None = None,
    out: str | Path | None = None,
    json_out: str | Path | None = None,
    plot: str | Path | None = None,
    quiet: bool = False,
    seed_batch: bool = True,
) -> dict:
    """Train `what` (a recipe name or .py file, or a TOML config) with `overrides` on seeds
    `seed_start .. seed_start + seeds - 1` in `workers` processes, each run in `out/seed<k>/`;
    returns the report (also written to `json_out`). With `update_baseline` the per-seed
    metrics are written to `baseline` (default benchmarks/baselines/<agent>.json) instead of
    compared with it. The report's "verdict" is pass / regressed / improved, or "no baseline"
    / "baseline written". `seed_batch`: a compiled-backend config the seed-batched trainer
    supports trains all seeds in one graph in this process (`rlnorm.compiled.seeds`), else
    (or with seed_batch=False) seed by seed in the pool."""
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1; got {seeds}")
    if plot and importlib.util.find_spec("matplotlib") is None:  # before hours of training
        raise ModuleNotFoundError("--plot needs matplotlib: pip install 'rlnorm[plots]'")
    config = load_config(what, overrides or {})
    seed_list = list(range(seed_start, seed_start + seeds))
    named, baseline = baseline, Path(baseline or BASELINE_DIR / f"{config.agent}.json")
    stored = None if update_baseline or not baseline.is_file() else load_baseline(baseline)
    if named and not update_baseline and stored is None:
        raise FileNotFoundError(f"No baseline {str(baseline)!r}; make one with --update-baseline.")
    if stored is not None:  # before the training, not after it
        check_comparable(stored, config.total_steps, config.target_return)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(out) if out else Path("runs") / "regress" / f"{config.agent}__{stamp}"
    command = command_line(what, seeds, seed_start, overrides, update_baseline, seed_batch)
    summaries = None
    if seed_batch and config.backend == "compiled":
        summaries = train_seeds_batched(config, seed_list, out, quiet)
    if summaries is None:
        summaries = train_seeds(config, seed_list, out, workers, quiet)
    report = build_report(config, summaries, command, str(out))
    if update_baseline:
        write_baseline(baseline, report, config)
        report["verdict"] = "baseline written"
        report["baseline"] = str(baseline)
    elif stored is not None:
        report.update(compare(report, config, stored))
        report["baseline"] = str(baseline)
    else:
        report["verdict"] = "no baseline"
    if json_out:
        Path(json_out).write_text(json.dumps(report, indent=1))
    if plot:
        plot_curves(report, stored, plot)
    return report


def load_config(what: str | Path, overrides: dict) -> config_lib.Config:
    """A .toml file through `load_toml`, anything else as a recipe (name or .py file)."""
    from rlnorm.recipes import load_recipe

    toml = Path(what).suffix == ".toml"
    config = config_lib.load_toml(what) if toml else load_recipe(str(what))
    return config_lib.from_dict(overrides, config)


def command_line(what, seeds, seed_start, overrides, update_baseline, seed_batch=True) -> str:
    """The `rlnorm regress` command that reproduces a call (recorded in reports and baselines)."""
    words = ["rlnorm", "regress", str(what), "--seeds", str(seeds)]
    words += ["--seed-start", str(seed_start)] if seed_start else []
    for key, value in (overrides or {}).items():
        text = "none" if value is None else str(value).lower() if isinstance(value, bool) else value
        words += ["--set", f"{key}={text}"]
    words += ["--update-baseline"] if update_baseline else []
    words += [] if seed_batch else ["--no-seed-batch"]
    return shlex.join(words)


# -- training ---------------------------------------------------------------------------------
def train_one(config: config_lib.Config, seed: int, run_dir: str) -> dict:
    """One seed, in a worker process: single-threaded TF (the pool provides the parallelism)."""
    from rlnorm.loop import train

    summary = train(config.replace(seed=seed, run_dir=run_dir, tf_threads=1), quiet=True)
    keep = ("seed", "run_dir", "total_steps", "steps_to_target", "mean_return_last_100")
    return {**{k: summary.get(k) for k in keep}, "return_curve": summary["return_curve"]}


def train_seeds_batched(config, seeds: list[int], out: Path, quiet: bool) -> list | None:
    """All seeds in one compiled graph, or None (with a note) for a config it does not
    support, which then trains seed by seed."""
    from rlnorm.compiled.seed_runs import train_seeds_batched as train_batched
    from rlnorm.compiled.seeds import check_seed_batch

    try:
        check_seed_batch(config)
    except config_lib.ConfigError as e:
        print(f"rlnorm regress: training the seeds one by one: {e}", file=sys.stderr)
        return None
    summaries = train_batched(config, seeds, out, quiet=True)
    if not quiet:
        for s in summaries:
            print_seed(s)
    return summaries


def train_seeds(config, seeds: list[int], out: Path, workers: int | None, quiet: bool) -> list:
    """The seeds' summaries, in seed order, trained by a pool of 'spawn' processes (TensorFlow
    is not fork-safe)."""
    out.mkdir(parents=True, exist_ok=True)
    workers = max(1, min(workers or os.cpu_count() or 1, len(seeds)))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # inherited by the workers
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = [pool.submit(train_one, config, s, str(out / f"seed{s}")) for s in seeds]
        summaries = []
        for future in futures:
            summaries.append(future.result())
            if not quiet:
                print_seed(summaries[-1])
    return summaries


def print_seed(s: dict) -> None:
    print(
        f"  seed {s['seed']}: steps_to_target {s['steps_to_target']}, "
        f"last-100 mean {s['mean_return_last_100']:.1f}",
        file=sys.stderr,
    )


# -- metrics ----------------------------------------------------------------------------------
def seed_metrics(summary: dict, budget: int) -> dict:
    """One run's metrics. Unsolved -> steps_to_target = budget (censored). AUC: the mean of the
    last-100 return curve over [0, budget], held flat before its first point and after its last
    (a run stopped at the target keeps its final return)."""
    steps = summary["steps_to_target"]
    curve = np.asarray(summary["return_curve"] or [[0, np.nan]], dtype=np.float64)
    x = np.concatenate([[0.0], np.minimum(curve[:, 0], budget), [budget]])
    y = np.concatenate([[curve[0, 1]], curve[:, 1], [curve[-1, 1]]])
    final = summary["mean_return_last_100"]
    return {
        "steps_to_target": float(budget if steps is None else min(steps, budget)),
        "solved": steps is not None,
        "final_return": float("nan") if final is None else float(final),
        "auc": float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2) / budget),
    }


def curve_on_grid(summary: dict, grid: np.ndarray) -> list[float]:
    curve = np.asarray(summary["return_curve"] or [[0, np.nan]], dtype=np.float64)
    return [round(float(v), 2) for v in np.interp(grid, curve[:, 0], curve[:, 1])]


def primary_metric(config) -> str:
    return "steps_to_target" if config.target_return is not None else "auc"


def oriented(metric: str, values) -> np.ndarray:
    """Values with higher = better (steps to target negated), as rlnorm.stats expects."""
    v = np.asarray(values, dtype=np.float64)
    return v if METRICS[metric] else -v


def build_report(config, summaries: list[dict], command: str, out: str) -> dict:
    budget = config.total_steps
    per_seed = [seed_metrics(s, budget) for s in summaries]
    metrics = {m: [p[m] for p in per_seed] for m in METRICS}
    # IQM, median and their percentile CIs commute with negation: no orientation needed here.
    aggregates = {m: stats.aggregate(metrics[m]) for m in METRICS}
    grid = np.linspace(0, budget, CURVE_POINTS)
    return {
        "agent": config.agent,
        "env_id": config.env_id,
        "command": command,
        "out": out,
        "seeds": [s["seed"] for s in summaries],
        "total_steps": budget,
        "target_return": config.target_return,
        "primary_metric": primary_metric(config),
        "metrics": metrics,
        "solved": [p["solved"] for p in per_seed],
        "solved_fraction": float(np.mean([p["solved"] for p in per_seed])),
        "aggregates": aggregates,
        "curves": {"steps": grid.tolist(), "per_seed": [curve_on_grid(s, grid) for s in summaries]},
    }


# -- baselines and the verdict -------------------------------------------------------------------
def compare(report: dict, config, baseline: dict) -> dict:
    """P(new better than baseline) with its CI for every metric, and the verdict on the primary."""
    check_comparable(baseline, report["total_steps"], report["target_return"])
    poi = {}
    for m in METRICS:
        new, old = oriented(m, report["metrics"][m]), oriented(m, baseline["metrics"][m])
        ok = ~np.isnan(new), ~np.isnan(old)
        p = stats.probability_of_improvement(new[ok[0]], old[ok[1]])
        poi[m] = {"p": p, "ci": list(stats.probability_of_improvement_ci(new[ok[0]], old[ok[1]]))}
    lo, hi = poi[report["primary_metric"]]["ci"]
    verdict = "regressed" if hi < 0.5 else "improved" if lo > 0.5 else "pass"
    theirs = baseline.get("config", {})
    differs = sorted(
        k
        for k, v in config.to_dict().items()
        if k not in RUN_KEYS and k in theirs and theirs[k] != v
    )
    return {"probability_of_improvement": poi, "verdict": verdict, "config_differs": differs}


def check_comparable(baseline: dict, total_steps: int, target_return) -> None:
    if (baseline["total_steps"], baseline["target_return"]) != (total_steps, target_return):
        raise ValueError(
            f"The baseline was made with total_steps {baseline['total_steps']} and "
            f"target_return {baseline['target_return']}; this run has {total_steps} and "
            f"{target_return}. Censored steps are comparable only at one budget and target: "
            f"add --set total_steps={baseline['total_steps']}."
        )


def load_baseline(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def write_baseline(path: Path, report: dict, config) -> None:
    """The per-seed metrics and curves, with what produced them: command, commit, versions and
    machine."""
    keep = ("agent", "env_id", "command", "seeds", "total_steps", "target_return", "metrics")
    baseline = {k: report[k] for k in keep}
    baseline.update(
        solved=report["solved"],
        aggregates=report["aggregates"],
        curves=report["curves"],
        config={k: v for k, v in config.to_dict().items() if k not in RUN_KEYS},
        rlnorm_commit=git_commit(),
        versions=versions(),
        machine={
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
        },
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(baseline, indent=1) + "\n")


def git_commit() -> str | None:
    """HEAD of the checkout rlnorm is imported from, "+dirty" with uncommitted changes."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return None
    return (head + ("+dirty" if dirty else "")) or None


def versions() -> dict:
    found = {"python": platform.python_version()}
    for name in VERSIONS:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


# -- output -------------------------------------------------------------------------------------
def format_report(report: dict) -> str:
    """The report as text: aggregates per metric, solved fraction, comparison and verdict."""
    seeds = report["seeds"]
    lines = [
        f"{report['agent']} on {report['env_id']}: {len(seeds)} seeds ({_span(seeds)}), "
        f"budget {report['total_steps']:,} steps, target {report['target_return']}, "
        f"solved {sum(report['solved'])}/{len(seeds)}; runs in {report['out']}",
        f"  {'metric':<16} {'IQM [95% CI]':<30} {'median [95% CI]':<30}",
    ]
    for m, a in report["aggregates"].items():
        spec = ",.1f" if METRICS[m] else ",.0f"  # steps as whole numbers
        lines.append(
            f"  {m:<16} {_with_ci(a['iqm'], a['iqm_ci'], spec):<30} "
            f"{_with_ci(a['median'], a['median_ci'], spec):<30}"
        )
    if "probability_of_improvement" in report:
        lines.append(f"  vs {report['baseline']}: P(new better than baseline) [95% CI]")
        for m, p in report["probability_of_improvement"].items():
            mark = "  <- primary" if m == report["primary_metric"] else ""
            lines.append(f"  {m:<16} {_with_ci(p['p'], p['ci'], '.2f'):<30}{mark}")
        if report["config_differs"]:
            lines.append(f"  config differs from the baseline's in: {report['config_differs']}")
    lines.append(f"verdict: {report['verdict']}")
    return "\n".join(lines)


def _span(seeds: list[int]) -> str:
    return f"{seeds[0]}..{seeds[-1]}"


def _with_ci(value: float, ci, spec: str = ",.1f") -> str:
    return f"{value:{spec}} [{ci[0]:{spec}}, {ci[1]:{spec}}]"


def plot_curves(report: dict, baseline: dict | None, path: str | Path) -> None:
    """Each seed's last-100 return curve, their IQM with its 95% CI band, the baseline's IQM
    and band dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    runs = [(report, "C0", "-", f"{report['agent']}, seeds {_span(report['seeds'])}")]
    if baseline is not None:
        runs.append((baseline, "C3", "--", f"baseline, seeds {_span(baseline['seeds'])}"))
    for source, color, style, label in runs:
        steps = np.asarray(source["curves"]["steps"])
        curves = np.asarray(source["curves"]["per_seed"])
        if source is report:
            for c in curves:
                ax.plot(steps, c, color=color, alpha=0.25, linewidth=0.8)
        band = [stats.stratified_bootstrap_ci(c, n_resamples=2_000) for c in curves.T]
        ax.plot(steps, stats.iqm(curves, axis=0), color=color, linestyle=style, label=label)
        ax.fill_between(steps, *np.asarray(band).T, color=color, alpha=0.2)
    if report["target_return"] is not None:
        ax.axhline(report["target_return"], color="gray", linewidth=0.8, linestyle=":")
    ax.set(xlabel="env steps", ylabel="last-100 mean return (IQM, 95% CI)")
    ax.set_title(f"{report['agent']}: {report['verdict']}")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
