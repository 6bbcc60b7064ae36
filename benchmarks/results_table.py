"""docs/results.md's CartPole section: IQM and median with 95% stratified-bootstrap CIs for the CartPole recipes,
each row one `rlnorm regress` (rlnorm/regress.py) on the same seeds and budget.

    python benchmarks/results_table.py --seeds 8 [--update-baselines] [--out docs/results.md]

--update-baselines also writes each recipe's benchmarks/baselines/<recipe>.json from the same
runs (what `rlnorm regress agents/<recipe>.py --update-baseline` writes).
"""

from __future__ import annotations

import argparse
import shlex
import sys

from doc_sections import replace_section

from rlnorm.regress import format_report, regress

RECIPES = (
    "cartpole",
    "cartpole_layernorm",
    "cartpole_batch_renorm",
    "cartpole_batchnorm",
    "cartpole_batch_moving",
)
OVERRIDES = {"total_steps": 300_000}  # the CI regressions' budget


def row(report: dict) -> str:
    a = report["aggregates"]

    def cell(metric: str, spec: str) -> str:
        lo, hi = a[metric]["iqm_ci"]
        return f"{a[metric]['iqm']:{spec}} [{lo:{spec}}, {hi:{spec}}]"

    solved = f"{sum(report['solved'])}/{len(report['seeds'])}"
    steps = a["steps_to_target"]
    median = f"{steps['median']:,.0f} [{steps['median_ci'][0]:,.0f}, {steps['median_ci'][1]:,.0f}]"
    return (
        f"| `{report['agent']}` | {solved} | {cell('steps_to_target', ',.0f')} | {median} | "
        f"{cell('final_return', '.1f')} | {cell('auc', '.1f')} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--seed-start", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--update-baselines", action="store_true")
    parser.add_argument("--out", default="docs/results.md")
    parser.add_argument("--recipes", nargs="*", default=list(RECIPES))
    args = parser.parse_args()
    rows, commands = [], []
    for recipe in args.recipes:
        report = regress(
            f"agents/{recipe}.py",
            seeds=args.seeds,
            seed_start=args.seed_start,
            overrides=OVERRIDES,
            update_baseline=args.update_baselines,
            workers=args.workers,
        )
        print(format_report(report), flush=True)
        rows.append(row(report))
        commands.append(report["command"].replace(" --update-baseline", ""))
    seeds = f"{args.seed_start}..{args.seed_start + args.seeds - 1}"
    lines = [
        f"CartPole-v1, {args.seeds} seeds ({seeds}) per recipe, budget 300,000 env steps, target",
        "last-100 mean return 475 (a run stops there). Interquartile mean (IQM) with its 95%",
        "stratified-bootstrap CI (10,000 resamples, percentile method); an unsolved run counts",
        "as the whole budget in steps to target (censored). Final return: last-100 mean return",
        "at the end; curve area: the last-100 mean return averaged over the budget (held at its",
        "last value after the run stops). Definitions: [regression.md](regression.md).",
        "",
        "| recipe | solved | steps to target, IQM [95% CI] | steps to target, median [95% CI]"
        " | final return, IQM [95% CI] | curve area, IQM [95% CI] |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        "Each row is one command (a row's per-seed values are in its baseline,",
        "`benchmarks/baselines/<recipe>.json`, with the commit, versions and machine):",
        "",
        "```",
        *commands,
        "```",
        "",
        "The table itself: `"
        + shlex.join(["python", "benchmarks/results_table.py", *sys.argv[1:]])
        + "`.",
        "",
    ]
    replace_section(args.out, "cartpole-recipes", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
