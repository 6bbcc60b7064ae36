"""Does a default config learn an env the same whatever the scale of its observations and rewards?

Every (framework, env, level, seed) is one training run in its own process, pinned to one core;
each finished run appends one JSON line to `--out` (a rerun skips the runs already there), and
the table (IQM of the final last-100 return, in the env's ORIGINAL reward units, with its 95%
stratified-bootstrap CI from rlnorm.stats) goes to `--table`. The envs are
benchmarks/scaled_env.py's: per-feature observation factors level * 10**[-1..1] with offsets,
rewards times level.

    python benchmarks/scale_invariance.py --envs CartPole-v1 --levels 1e-3,1,1e3 --seeds 5 \
        --steps 300000 --sb3-python /tmp/sb3/bin/python --workers 2

rlnorm's side is `rlnorm.train(env_factory, seed=s, total_steps=n)` with nothing else set: the
default config (`--set key=value` tries another). SB3's is `A2C("MlpPolicy", 8 envs)` with every
hyperparameter at SB3's default and no VecNormalize (SB3 in a throwaway venv, as
benchmarks/sb3_a2c.py says).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
N_ENVS = 8  # rlnorm's default n_envs, given to SB3 too


def run_rlnorm(env_id, level, seed, steps, overrides) -> dict:
    from scaled_env import make_scaled

    import rlnorm

    with tempfile.TemporaryDirectory() as tmp:
        run = rlnorm.train(
            lambda: make_scaled(env_id, level),
            seed=seed,
            total_steps=steps,
            quiet=True,
            run_dir=f"{tmp}/run",
            **overrides,
        )
    s = run.summary
    return {"final_return": s["mean_return_last_100"], "steps_per_second": s["steps_per_second"]}


def run_sb3(env_id, level, seed, steps, overrides) -> dict:
    import numpy as np
    import torch
    from scaled_env import make_scaled
    from stable_baselines3 import A2C
    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(1)
    env = make_vec_env(lambda: make_scaled(env_id, level), n_envs=N_ENVS, seed=seed)
    model = A2C("MlpPolicy", env, seed=seed, device="cpu", verbose=0, **overrides)
    t = time.perf_counter()
    model.learn(total_timesteps=steps)
    wall = time.perf_counter() - t
    returns = [e["r"] for e in model.ep_info_buffer]
    return {
        "final_return": float(np.mean(returns)) if returns else None,
        "steps_per_second": model.num_timesteps / wall,
    }


def parse_value(text: str):
    """A --set value as JSON where it is (numbers, true/false), else the string itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def one(args) -> None:
    """Child process: one run, one JSON line on stdout."""
    os.sched_setaffinity(0, {args.cpu})
    sys.path.insert(0, str(HERE))
    level = float(args.level)
    overrides = dict(kv.split("=", 1) for kv in args.set)
    overrides = {k: parse_value(v) for k, v in overrides.items()}
    fn = run_rlnorm if args.one == "rlnorm" else run_sb3
    out = fn(args.env, level, args.seed, args.steps, overrides)
    if out["final_return"] is not None:
        out["final_return"] /= level  # back to the env's own reward units
    print(json.dumps(out))


def key(job: dict) -> tuple:
    return (job["framework"], job["env"], job["level"], job["seed"], job["steps"], job["set"])


def orchestrate(args) -> None:
    out = Path(args.out)
    done = set()
    if out.exists():
        done = {key(json.loads(line)) for line in out.read_text().splitlines() if line.strip()}
    frameworks = [f for f in args.frameworks.split(",") if f != "sb3" or args.sb3_python]
    jobs = [
        {
            "framework": f,
            "env": e,
            "level": lv,
            "seed": s,
            "steps": args.steps,
            "set": " ".join(args.set) if f == "rlnorm" else "",
        }
        for e in args.envs.split(",")
        for lv in args.levels.split(",")
        for s in range(args.seeds)
        for f in frameworks
    ]
    jobs = [j for j in jobs if key(j) not in done]
    print(f"{len(jobs)} runs to do ({len(done)} already in {out})", flush=True)
    cpus = sorted(os.sched_getaffinity(0))

    def work(i_job):
        i, job = i_job
        python = sys.executable if job["framework"] == "rlnorm" else args.sb3_python
        cmd = [
            python,
            __file__,
            "--one",
            job["framework"],
            "--env",
            job["env"],
            "--level",
            job["level"],
            "--seed",
            str(job["seed"]),
            "--steps",
            str(job["steps"]),
            "--cpu",
            str(cpus[i % args.workers % len(cpus)]),
        ]
        for kv in job["set"].split():
            cmd += ["--set", kv]
        t = time.perf_counter()
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        )
        if proc.returncode != 0:
            print(f"FAILED {job}: {proc.stderr[-2000:]}", flush=True)
            return
        result = {**job, **json.loads(proc.stdout.strip().splitlines()[-1])}
        result["wall_seconds"] = time.perf_counter() - t
        with out.open("a") as f:
            f.write(json.dumps(result) + "\n")
        print(json.dumps(result), flush=True)

    with ThreadPoolExecutor(args.workers) as pool:
        list(pool.map(work, enumerate(jobs)))
    if args.doc:
        write_table(out, Path(args.doc))


def write_table(results: Path, doc: Path) -> None:
    """One row per (env, budget, side): the IQM [95% CI] of the final last-100 return at each
    level, and whether every level's IQM lies inside level 1's CI or level 1's inside its own
    ("same"), into `doc` between its scale-invariance markers."""
    from doc_sections import replace_section

    from rlnorm import stats

    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    groups: dict = {}
    for r in rows:
        group = groups.setdefault((r["env"], r["steps"], r["framework"], r["set"]), {})
        group.setdefault(r["level"], []).append(r)
    levels = sorted({r["level"] for r in rows}, key=float)
    lines = [
        "| env | budget | config | "
        + " | ".join(f"x{lv}" for lv in levels)
        + " | same at every scale? | steps/s (median) |",
        "|---|---|---|" + "---|" * len(levels) + "---|---|",
    ]
    for (env, steps, framework, setting), by_level in sorted(groups.items()):
        name = "SB3 A2C defaults" if framework == "sb3" else "rlnorm defaults"
        name += f" + `{setting}`" if setting else ""
        aggs = {}
        for level, runs in by_level.items():
            aggs[level] = stats.aggregate([r["final_return"] for r in runs])
            aggs[level]["n"] = len(runs)
        cells = []
        for level in levels:
            a = aggs.get(level)
            cells.append(
                "-"
                if a is None
                else f"{a['iqm']:,.1f} [{a['iqm_ci'][0]:,.1f}, {a['iqm_ci'][1]:,.1f}] ({a['n']})"
            )
        ref = aggs.get("1")
        same = "-"
        if ref is not None:

            def inside(x, ci):
                tol = 1e-9 * max(1.0, abs(x))  # 500 / 1e-3 * 1e-3 is 500.0000000000003
                return ci[0] - tol <= x <= ci[1] + tol

            same = (
                "yes"
                if all(
                    inside(a["iqm"], ref["iqm_ci"]) or inside(ref["iqm"], a["iqm_ci"])
                    for a in aggs.values()
                )
                else "no"
            )
        sps = sorted(r["steps_per_second"] for runs in by_level.values() for r in runs)
        lines.append(
            f"| {env} | {steps:,} | {name} | "
            + " | ".join(cells)
            + f" | {same} | {sps[len(sps) // 2]:,.0f} |"
        )
    replace_section(doc, "scale-invariance", "\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--envs", default="CartPole-v1")
    p.add_argument("--levels", default="1e-3,1,1e3")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--steps", type=int, default=300_000)
    p.add_argument("--set", action="append", default=[], help="rlnorm config override key=value")
    p.add_argument("--sb3-python", default=None)
    p.add_argument("--frameworks", default="rlnorm,sb3", help="which sides to run")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results/scale_invariance.jsonl")
    p.add_argument("--doc", default=None, help="put the table in this page (docs/results.md)")
    p.add_argument("--table-only", action="store_true", help="just rewrite the table from --out")
    # child mode
    p.add_argument("--one", choices=["rlnorm", "sb3"], default=None)
    p.add_argument("--env")
    p.add_argument("--level")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cpu", type=int, default=0)
    args = p.parse_args()
    if args.one:
        one(args)
    elif args.table_only:
        write_table(Path(args.out), Path(args.doc or "docs/results.md"))
    else:
        orchestrate(args)


if __name__ == "__main__":
    main()
