"""Calibration of the scale alarms (rlnorm/alarms.py) on labelled runs: a confusion table.

healthy: the CartPole recipes in agents/ that solve (cartpole, cartpole_layernorm,
    cartpole_batch_renorm; batch_moving is left out: it solved 2 of 3 seeds, late) x 3 seeds,
    each until it solves (last-100 mean 475) or --healthy-steps, plus the Pendulum recipe.
broken: known-bad set-ups of the default recipe, each with the rule that names its cause,
    --broken-steps env steps each.

Every run trains with the default diagnostics cadence, so the alarms are the ones a user gets.
The script prints the table (rule x run: the env step it fired at), the precision and recall,
and writes docs/alarms.md. A run's diagnostic values are kept in --cache (JSON), so that
`--replay` re-judges them with the rules as they are now, without training (for developing the
rules; the published table comes from the runs' own alarms, summary.json's `alarms`).

    python benchmarks/alarms.py [--jobs 2] [--only NAME,...] [--replay] [--no-write]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import math
import multiprocessing
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HEALTHY_RECIPES = ("cartpole", "cartpole_layernorm", "cartpole_batch_renorm")
OBS_SCALES = (1e3, 1e-3, 1e4, 1.0)  # CartPole's 4 features, badly scaled
# name -> (what is wrong, the rule that names it, config overrides, env wrapper or None)
BROKEN = {
    "batch_both": (
        "plain BatchNorm in both networks",
        "bn_gap",
        {"policy_norm": "batch", "value_norm": "batch"},
        None,
    ),
    "unscaled_obs": (
        f"features x {list(OBS_SCALES)}, norm_obs = false",
        "obs_scale",
        {"norm_obs": False},
        "scaled_obs",
    ),
    "offset_obs": (
        "features + 1000, norm_obs = false",
        "obs_scale",
        {"norm_obs": False},
        "offset_obs",
    ),
    "reward_x100": ("rewards x 100, norm_reward = false", "value_scale", {}, "reward_x100"),
    "lr_x30": ("learning_rate x 30 (0.021)", "policy_collapse", {"learning_rate": 0.021}, None),
    "lr_div1000": ("learning_rate / 1000 (7e-7)", "update_ratio", {"learning_rate": 7e-7}, None),
    "relu_lr_x100": (
        "relu, learning_rate x 100 (0.07)",
        "inactive_units",
        {"activation": "relu", "learning_rate": 0.07},
        None,
    ),
    "ent_coef_20": ("ent_coef = 20 (entropy bonus dominates)", "entropy", {"ent_coef": 20.0}, None),
    "max_grad_norm_1e-6": (
        "max_grad_norm = 1e-6 (clipping dominates)",
        "grad_norm",
        {"max_grad_norm": 1e-6},
        None,
    ),
}


# -- env wrappers (module-level: picklable for the worker processes) ------------------------------
def _cartpole():
    import gymnasium as gym

    return gym.make("CartPole-v1")


def scaled_obs():
    import gymnasium as gym
    import numpy as np

    env, scale = _cartpole(), np.asarray(OBS_SCALES, np.float32)
    space = env.observation_space
    box = gym.spaces.Box(space.low * scale, space.high * scale, dtype=np.float32)
    return gym.wrappers.TransformObservation(env, lambda o: (o * scale).astype(np.float32), box)


def offset_obs():
    import gymnasium as gym
    import numpy as np

    env = _cartpole()
    space = env.observation_space
    box = gym.spaces.Box(space.low + 1000, space.high + 1000, dtype=np.float32)
    return gym.wrappers.TransformObservation(env, lambda o: (o + 1000).astype(np.float32), box)


def reward_x100():
    import gymnasium as gym

    return gym.wrappers.TransformReward(_cartpole(), lambda r: 100.0 * r)


WRAPPERS = {"scaled_obs": scaled_obs, "offset_obs": offset_obs, "reward_x100": reward_x100}


def plan(args) -> list[dict]:
    runs = []
    for recipe in HEALTHY_RECIPES:
        for seed in (0, 1, 2):
            runs.append(
                dict(
                    name=f"{recipe}_s{seed}",
                    label="healthy",
                    what=recipe,
                    recipe=recipe,
                    overrides={"seed": seed, "total_steps": args.healthy_steps},
                    expected=None,
                )
            )
    runs.append(
        dict(
            name="pendulum_s0",
            label="healthy",
            what="pendulum (learns slowly)",
            recipe="pendulum",
            overrides={"seed": 0, "total_steps": args.broken_steps},
            expected=None,
        )
    )
    for name, (what, rule, overrides, wrapper) in BROKEN.items():
        runs.append(
            dict(
                name=name,
                label="broken",
                what=what,
                recipe="cartpole",
                # no early stop: a broken run trains its budget (and x100 rewards "solve")
                overrides={
                    **overrides,
                    "seed": 0,
                    "total_steps": args.broken_steps,
                    "target_return": None,
                },
                wrapper=wrapper,
                expected=rule,
            )
        )
    return runs


def run_one(run: dict, runs_root: str) -> dict:
    """Train one labelled run; its summary, alarms and the diagnostic values it wrote."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import warnings

    from rlnorm.doctor import diagnostics_series
    from rlnorm.loop import train
    from rlnorm.recipes import load_recipe

    config = load_recipe(run["recipe"]).replace(**run["overrides"], runs_root=runs_root)
    config = config.replace(agent=f"alarms_{run['name']}")
    env = WRAPPERS[run["wrapper"]] if run.get("wrapper") else None
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            summary = train(config, quiet=True, env=env)
            error = None
        except FloatingPointError as e:  # a NaN loss stops the run; its alarms are in the events
            summary, error = None, str(e).split(".")[0]
    run_dir = summary["run_dir"] if summary else _latest_run(runs_root, config)
    return {
        **run,
        "config": config.to_dict(),
        "run_dir": run_dir,
        "error": error,
        "wall_seconds": time.perf_counter() - t0,
        "steps": summary["total_steps"] if summary else None,
        "mean_return_last_100": summary["mean_return_last_100"] if summary else None,
        "steps_to_target": summary["steps_to_target"] if summary else None,
        "alarms": summary.get("alarms") if summary else [],
        "series": diagnostics_series(run_dir),
    }


def _latest_run(runs_root, config) -> str:
    runs = sorted(Path(runs_root, config.env_id).glob(f"{config.agent}__*"))
    return str(runs[-1])


def replay(record: dict) -> list[dict]:
    """The alarms the rules as they are now fire on a run's recorded diagnostic values."""
    from rlnorm.alarms import ScaleAlarms
    from rlnorm.config import from_dict

    alarms = ScaleAlarms(from_dict({k: v for k, v in record["config"].items() if k != "run_dir"}))
    fired = []
    for step, values in record["series"]:
        if "outputs/policy_logit_std" in values and "outputs/policy_entropy_fraction" not in values:
            # runs recorded before the tag existed: CartPole's 2 actions
            values["outputs/policy_entropy_fraction"] = values["outputs/policy_entropy"] / math.log(
                2
            )
        for rule, message in alarms.check(int(step), values):
            fired.append({"rule": rule, "step": int(step), "message": message})
    return fired


def table(records: list[dict], rules: list[str]) -> tuple[str, dict]:
    """Markdown confusion table (run x rule: the env step each alarm fired at) and scores."""
    head = ["run", "label", "set-up", "expected", *rules, "steps", "last-100 mean"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    tp = fn = fp_runs = extra = 0
    for r in records:
        fired = {a["rule"]: a["step"] for a in r["alarms"]}
        cells = []
        for rule in rules:
            if rule not in fired:
                cells.append("")
                continue
            mark = "**" if rule == r["expected"] else ""
            cells.append(f"{mark}{fired[rule] / 1000:.0f}k{mark}")
        if r["label"] == "healthy":
            fp_runs += bool(fired)
        else:
            hit = r["expected"] in fired
            tp, fn = tp + hit, fn + (not hit)
            extra += len(set(fired) - {r["expected"]})
        mean = r["mean_return_last_100"]
        steps = f"{r['steps']:,}" if r["steps"] else f"stopped: {r['error']}"
        lines.append(
            "| "
            + " | ".join(
                [
                    r["name"],
                    r["label"],
                    r["what"],
                    r["expected"] or "-",
                    *cells,
                    steps,
                    f"{mean:.1f}" if mean is not None else "-",
                ]
            )
            + " |"
        )
    healthy = sum(r["label"] == "healthy" for r in records)
    flagged_broken = sum(bool(r["alarms"]) for r in records if r["label"] == "broken")
    scores = {
        "healthy_runs": healthy,
        "healthy_runs_with_an_alarm": fp_runs,
        "broken_runs": tp + fn,
        "broken_runs_flagged_by_their_rule": tp,
        "recall": tp / max(tp + fn, 1),
        # run level: of the runs with any alarm, the share that are broken
        "precision": flagged_broken / max(flagged_broken + fp_runs, 1),
        "other_rules_on_broken_runs": extra,
    }
    return "\n".join(lines), scores


DOC = """# Scale alarms: calibration

The rules of `rlnorm/alarms.py` (what each judges: [diagnostics.md](diagnostics.md#scale-alarms)),
run on labelled runs. **healthy**: every CartPole recipe in `agents/` that solves x 3 seeds (each
until it solves or {healthy_steps:,} env steps; `cartpole_batch_moving` is left out: it solved 2 of 3
seeds, late), and the Pendulum recipe; **broken**: known-bad
set-ups of the default recipe, {broken_steps:,} env steps each, with the rule that names the
cause. A cell is the env step the rule fired at (bold: the expected rule). Diagnostics at the
default cadence (every {every:,} env steps), so these are the alarms a user gets.

```bash
{command}
```

{table}

- healthy runs with an alarm (false alarms): **{healthy_runs_with_an_alarm} of {healthy_runs}**
- broken runs flagged by the rule that names their cause (recall): **{broken_runs_flagged_by_their_rule} of {broken_runs}** ({recall:.0%})
- precision (runs with an alarm that are broken): **{precision:.0%}**
- other rules that also fired on broken runs: {other_rules_on_broken_runs}

For comparison, the healthy default recipe's last-100 mean return at {broken_steps:,} env steps
(seeds 0, 1, 2, from the same runs' return curves): {healthy_at}; the broken rows' last column is
where each broken set-up stands after {broken_steps:,} (`reward_x100` in its x100 reward units).
Plain BatchNorm is ahead at {broken_steps:,} and fails later: it solved 0 of 3 seeds within 300k
([benchmarks/results/batchnorm.md](../benchmarks/results/batchnorm.md)); its alarm comes first.
"""


def return_at(run_dir: str, step: int) -> float | None:
    """A run's last-100 mean return at `step` (its summary.json's return curve)."""
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        return None
    curve = [m for s, m in json.loads(path.read_text())["return_curve"] if s <= step]
    return curve[-1] if curve else None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--healthy-steps", type=int, default=200_000)
    p.add_argument("--broken-steps", type=int, default=60_000)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--only", default="", help="comma-separated run names (default: all)")
    p.add_argument("--runs-root", default="/tmp/rlnorm_alarm_runs")
    p.add_argument("--cache", default="/tmp/rlnorm_alarm_runs/records.json")
    p.add_argument("--replay", action="store_true", help="re-judge --cache, no training")
    p.add_argument("--no-write", action="store_true", help="do not write docs/alarms.md")
    p.add_argument(
        "--render-only", action="store_true", help="table and docs from --cache, as the runs fired"
    )
    args = p.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the workers inherit it
    runs = plan(args)
    only = set(filter(None, args.only.split(",")))
    cache = Path(args.cache)
    if args.render_only:
        records = json.loads(cache.read_text())
    elif args.replay:
        records = json.loads(cache.read_text())
        for r in records:
            r["alarms"] = replay(r)
    else:
        todo = [r for r in runs if not only or r["name"] in only]
        ctx = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(args.jobs, mp_context=ctx) as pool:
            futures = [pool.submit(run_one, r, args.runs_root) for r in todo]
            records = []
            for f in cf.as_completed(futures):
                rec = f.result()
                print(f"  {rec['name']}: {rec['wall_seconds']:.0f} s", file=sys.stderr)
                records.append(rec)
        if only and cache.exists():  # keep the cached runs this call did not redo
            records += [r for r in json.loads(cache.read_text()) if r["name"] not in only]
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(records))
    order = {r["name"]: i for i, r in enumerate(runs)}
    records = [r for r in records if r["name"] in order]  # the plan's runs only
    for r in records:  # the label and expected rule as the plan says now
        r.update({k: v for k, v in runs[order[r["name"]]].items() if k in ("expected", "what")})
    records.sort(key=lambda r: order.get(r["name"], 1e9))
    from rlnorm.alarms import RULES

    text, scores = table(records, list(RULES))
    print(text)
    print(json.dumps(scores, indent=1))
    if not args.no_write and not args.replay and not only:
        from rlnorm.config import Config

        command = "python benchmarks/alarms.py" + (f" --jobs {args.jobs}" if args.jobs > 1 else "")
        at = [
            return_at(r["run_dir"], args.broken_steps)
            for r in records
            if r["recipe"] == "cartpole" and r["label"] == "healthy"
        ]
        doc = DOC.format(
            healthy_at=", ".join(f"{x:.1f}" if x is not None else "-" for x in at),
            table=text,
            command=command,
            healthy_steps=args.healthy_steps,
            broken_steps=args.broken_steps,
            every=Config().diagnostics_every,
            **scores,
        )
        (ROOT / "docs" / "alarms.md").write_text(doc)
    ok = scores["healthy_runs_with_an_alarm"] == 0 and scores["recall"] == 1.0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
