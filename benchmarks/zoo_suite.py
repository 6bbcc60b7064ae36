"""The rl-zoo A2C suite: rlnorm's recipes and SB3's A2C with the same hyperparameters, side by
side, over seeds.

    # scores: rlnorm through `rlnorm regress`, SB3 in its throwaway venv (benchmarks/sb3_a2c.py)
    python benchmarks/zoo_suite.py scores --recipes acrobot,mountain_car --seeds 5 \
        --sb3-python /tmp/sb3/bin/python --cpu 1
    # speed: both frameworks on the same core, alternating, short runs of every recipe
    python benchmarks/zoo_suite.py speed --recipes acrobot,hopper --steps 30000 \
        --sb3-python /tmp/sb3/bin/python --cpu 1
    python benchmarks/zoo_suite.py table          # docs/results.md's suite section

SB3's hyperparameters are translated from the rlnorm recipe (`sb3_settings`), so the two sides
cannot drift: one source of truth, the recipe, itself a translation of rl-zoo's a2c.yml.
Results land in benchmarks/results/zoo/ (one JSON per recipe and side; reruns skip what is there).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "zoo"
# rl-baselines3-zoo's benchmark.md, A2C rows: (score, at env steps)
ZOO_REFERENCE = {
    "Acrobot-v1": (-83, 500_000),
    "MountainCar-v0": (-111, 1_000_000),
    "MountainCarContinuous-v0": (91, 100_000),
    "Pendulum-v1": (-163, 1_000_000),
    "LunarLander-v3": (156, 200_000),
    "LunarLanderContinuous-v3": (84, 5_000_000),
    "HalfCheetah-v5": (3041, 1_000_000),
    "Hopper-v5": (733, 1_000_000),
    "Walker2d-v5": (582, 1_000_000),
    "CartPole-v1": (500, 500_000),
}


def sb3_settings(config) -> dict:
    """SB3 A2C's kwargs (plus n_envs and VecNormalize's switches) for an rlnorm Config."""
    lr = config.learning_rate
    kwargs = {
        "n_steps": config.n_steps,
        "gamma": config.gamma,
        "gae_lambda": config.gae_lambda,
        "ent_coef": config.ent_coef,
        "vf_coef": config.vf_coef,
        "max_grad_norm": config.max_grad_norm,
        "normalize_advantage": config.normalize_advantage,
        "use_rms_prop": config.optimizer == "rmsprop",
        "rms_prop_eps": config.optimizer_eps,
        "use_sde": config.use_sde,
        "sde_sample_freq": config.sde_sample_freq,
        "learning_rate": f"lin_{lr}" if config.lr_schedule == "linear" else lr,
        "policy_kwargs": {
            "log_std_init": config.log_std_init,
            "ortho_init": config.ortho_init,
            "full_std": config.full_std,
            "net_arch": {"pi": list(config.hidden_sizes), "vf": list(config.hidden_sizes)},
            "activation_fn": config.activation,
        },
    }
    return {
        "env_id": config.env_id,
        "n_envs": config.n_envs,
        "norm_obs": config.norm_obs,
        "norm_reward": config.norm_reward,
        "a2c": kwargs,
    }


def run_sb3(settings: dict, seed: int, steps: int) -> dict:
    """In SB3's venv: one training run; the last-100 mean of the raw episode returns (Monitor
    sits inside VecNormalize) and SB3's training steps/s."""
    import numpy as np
    import torch
    from stable_baselines3 import A2C
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    torch.set_num_threads(1)
    kw = dict(settings["a2c"])
    pk = dict(kw.pop("policy_kwargs"))
    pk["activation_fn"] = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}[pk["activation_fn"]]
    if not kw["use_sde"]:
        pk.pop("full_std")
    lr = kw.pop("learning_rate")
    if isinstance(lr, str):  # rl-zoo's lin_<x>: x times the remaining progress
        start = float(lr.split("_")[1])
        lr = lambda progress: progress * start  # noqa: E731
    env = make_vec_env(settings["env_id"], n_envs=settings["n_envs"], seed=seed)
    if settings["norm_obs"] or settings["norm_reward"]:
        env = VecNormalize(
            env,
            norm_obs=settings["norm_obs"],
            norm_reward=settings["norm_reward"],
            gamma=kw["gamma"],
        )
    model = A2C(
        "MlpPolicy",
        env,
        learning_rate=lr,
        policy_kwargs=pk,
        seed=seed,
        device="cpu",
        verbose=0,
        **kw,
    )
    t = time.perf_counter()
    model.learn(total_timesteps=steps)
    wall = time.perf_counter() - t
    returns = [e["r"] for e in model.ep_info_buffer]
    return {
        "seed": seed,
        "total_steps": model.num_timesteps,
        "mean_return_last_100": float(np.mean(returns)) if returns else None,
        "steps_per_second": model.num_timesteps / wall,
        "wall_seconds": wall,
    }


def run_rlnorm_speed(recipe: str, steps: int) -> dict:
    import tempfile

    from rlnorm.loop import train
    from rlnorm.recipes import load_recipe

    config = load_recipe(recipe)
    with tempfile.TemporaryDirectory() as tmp:
        s = train(
            config.replace(
                total_steps=steps, run_dir=f"{tmp}/run", tf_threads=1, target_return=None
            ),
            quiet=True,
        )
    return {
        "steps_per_second": s["steps_per_second"],
        "steady_steps_per_second": s.get("steady_steps_per_second"),
    }


def child(python: str, args: list[str], cpu: int | None) -> dict:
    cmd = [python, __file__, *args]
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def scores(args) -> None:
    from rlnorm.recipes import load_recipe

    RESULTS.mkdir(parents=True, exist_ok=True)
    for recipe in args.recipes.split(","):
        config = load_recipe(recipe)
        steps = args.steps or config.total_steps
        tag = f"{recipe}__{steps}"
        mine = RESULTS / f"{tag}__rlnorm.json"
        if "rlnorm" in args.sides and not mine.exists():
            cmd = [
                sys.executable,
                "-m",
                "rlnorm",
                "regress",
                recipe,
                "--seeds",
                str(args.seeds),
                "--workers",
                str(args.workers),
                "--json",
                str(mine),
                "--set",
                f"total_steps={steps}",
                "--set",
                "diagnostics=false",
            ]
            if args.cpu is not None:
                cmd = ["taskset", "-c", str(args.cpu), *cmd]
            print(" ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)
        theirs = RESULTS / f"{tag}__sb3.json"
        if "sb3" in args.sides and args.sb3_python and not theirs.exists():
            settings = sb3_settings(config)
            runs = [
                child(
                    args.sb3_python, ["sb3-one", json.dumps(settings), str(s), str(steps)], args.cpu
                )
                for s in range(args.seeds)
            ]
            theirs.write_text(json.dumps({"settings": settings, "runs": runs}, indent=1))
            print(theirs, [r["mean_return_last_100"] for r in runs], flush=True)


def evaluate(args) -> None:
    """Each seed's final agent, deterministic actions, `--episodes` episodes (what rl-zoo's
    benchmark reports for its one run), added to the recipe's rlnorm JSON."""
    import rlnorm

    for mine in sorted(RESULTS.glob("*__rlnorm.json")):
        report = json.loads(mine.read_text())
        if "eval_deterministic" in report:
            continue
        scores = []
        for seed in report["seeds"]:
            run = rlnorm.load(Path(report["out"]) / f"seed{seed}")
            scores.append(run.evaluate(episodes=args.episodes, deterministic=True)["mean_return"])
        report["eval_deterministic"] = scores
        mine.write_text(json.dumps(report, indent=1))
        print(mine.name, [round(x, 1) for x in scores], flush=True)


def speed(args) -> None:
    """Alternating rlnorm / SB3 on one core, `--repeats` times each, medians."""
    from rlnorm.recipes import load_recipe

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {}
    for recipe in args.recipes.split(","):
        settings = sb3_settings(load_recipe(recipe))
        mine, theirs = [], []
        for _ in range(args.repeats):
            mine.append(child(sys.executable, ["rlnorm-speed", recipe, str(args.steps)], args.cpu))
            theirs.append(
                child(
                    args.sb3_python,
                    ["sb3-one", json.dumps(settings), "0", str(args.steps)],
                    args.cpu,
                )
            )
        med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
        out[recipe] = {
            "env_id": settings["env_id"],
            "steps": args.steps,
            "rlnorm": med([m["steps_per_second"] for m in mine]),
            "rlnorm_steady": med([m["steady_steps_per_second"] for m in mine]),
            "sb3": med([t["steps_per_second"] for t in theirs]),
        }
        print(recipe, out[recipe], flush=True)
    path = RESULTS / "speed.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**old, **out}, indent=1))


def table(args) -> None:
    """The suite's rows (markdown) from what `scores` and `speed` left in RESULTS, into
    docs/results.md between its zoo-suite markers."""
    from doc_sections import replace_section

    from rlnorm import stats

    def cell(values) -> str:
        a = stats.aggregate(values)
        return f"{a['iqm']:,.1f} [{a['iqm_ci'][0]:,.1f}, {a['iqm_ci'][1]:,.1f}] ({len(values)})"

    speeds = (
        json.loads((RESULTS / "speed.json").read_text())
        if (RESULTS / "speed.json").exists()
        else {}
    )
    rows, commands = [], []
    for mine in sorted(RESULTS.glob("*__rlnorm.json")):
        recipe, steps, _ = mine.name.split("__")
        report = json.loads(mine.read_text())
        commands.append(report["command"])
        env_id = report["env_id"]
        ref, ref_steps = ZOO_REFERENCE.get(env_id, (None, None))
        ours = cell(report["metrics"]["final_return"])
        evaluated = cell(report["eval_deterministic"]) if "eval_deterministic" in report else "-"
        theirs_path = RESULTS / f"{recipe}__{steps}__sb3.json"
        theirs = "-"
        if theirs_path.exists():
            runs = json.loads(theirs_path.read_text())["runs"]
            theirs = cell([r["mean_return_last_100"] for r in runs])
        sp = speeds.get(recipe)
        speed_cells = "- | - | -"
        if sp:
            whole, steady, theirs_sps = sp["rlnorm"], sp["rlnorm_steady"], sp["sb3"]
            speed_cells = (
                f"{whole:,.0f} / {steady:,.0f} | {theirs_sps:,.0f} | "
                f"{whole / theirs_sps:.2f}x / {steady / theirs_sps:.2f}x"
            )
        zoo = f"{ref:,} at {ref_steps / 1e6:g}M" if ref is not None else "-"
        rows.append(
            f"| `{recipe}` | {env_id} | {int(steps):,} | {ours} | {evaluated} | {theirs} | {zoo} | "
            f"{speed_cells} |"
        )
    header = [
        "| recipe | env | budget | rlnorm train last-100, IQM [95% CI] (seeds) | rlnorm eval, "
        "deterministic | SB3 train last-100 | rl-zoo A2C (one run, deterministic eval) | "
        "rlnorm steps/s, whole run / after the first update | SB3 steps/s | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    footer = [
        "",
        "rlnorm's column, one `rlnorm regress` per row (per-seed values in",
        "`benchmarks/results/zoo/<recipe>__<budget>__rlnorm.json`):",
        "",
        "```",
        *commands,
        "```",
    ]
    replace_section(Path(args.doc), "zoo-suite", "\n".join(header + rows + footer))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "sb3-one":
        print(json.dumps(run_sb3(json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "rlnorm-speed":
        print(json.dumps(run_rlnorm_speed(sys.argv[2], int(sys.argv[3]))))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", choices=["scores", "evaluate", "speed", "table"])
    p.add_argument("--episodes", type=int, default=10, help="evaluate: episodes per seed")
    p.add_argument("--recipes", default="acrobot")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--steps", type=int, default=None, help="budget (default: the recipe's)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cpu", type=int, default=None)
    p.add_argument("--sb3-python", default=None)
    p.add_argument("--sides", default="rlnorm,sb3", help="scores: which frameworks to train")
    p.add_argument("--doc", default="docs/results.md", help="table: the page to update")
    args = p.parse_args()
    {"scores": scores, "evaluate": evaluate, "speed": speed, "table": table}[args.what](args)


if __name__ == "__main__":
    main()
