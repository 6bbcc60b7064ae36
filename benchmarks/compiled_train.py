"""Throughput and time-to-solve of the compiled A2C backend (rlnorm.compiled.loop) on
CartPole-v1 with the recipe agents/cartpole_compiled.py. Prints one JSON object.

    python benchmarks/compiled_train.py [--n-envs 256,1024,4096] [--seeds 0,1,2]
                                        [--modes graph,xla] [--xla-cache DIR] [--no-solve]
                                        [--n-steps 8]

Each figure is taken for each compile mode of --modes: "xla" (jit_compile=True: slow to
compile, fastest per step) and "graph" (plain tf.function: quick to build).
throughput: for each N, the recipe with n_envs = N (and n_steps = --n-steps, if given):
`CompiledLoop.run`'s first call (trace + XLA compile + one update) is `compile_seconds`; then
the best of --repeats calls of as many whole updates (rollout, GAE, train step, normalizer
merge) as make about --steps env steps gives env-steps/s, per wall second and per CPU second
of this process (all threads; TensorFlow's default thread pools, i.e. one thread per core).
Training calls `CompiledLoop.run_logged` instead (the same updates, plus one row per log
point); compare with a run's `steady_steps_per_cpu_second` in summary.json.
solve: for each seed, a fresh Python process trains the recipe until the last-100 mean return
reaches 475: `train_seconds` is the wall time of `rlnorm.loop.train` (env, agent, tracing, XLA
compile, training, logging, checkpoints), `process_seconds` adds Python start-up and the
TensorFlow import. With --xla-cache DIR the processes share TensorFlow's persistent XLA
cache (TF_XLA_FLAGS=--tf_xla_persistent_cache_directory): the first seed fills it, the
next ones skip the XLA compile. The machine's load average is printed: figures taken on a
shared machine are lower bounds.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RECIPE = ROOT / "agents" / "cartpole_compiled.py"

SOLVE = """
import json, sys, time
t0 = time.perf_counter()
sys.path.insert(0, {root!r})
import importlib.util
spec = importlib.util.spec_from_file_location("recipe", {recipe!r})
recipe = importlib.util.module_from_spec(spec); spec.loader.exec_module(recipe)
from rlnorm.loop import train
t1 = time.perf_counter()
s = train(recipe.CONFIG.replace(seed={seed}, compile={mode!r}, runs_root={runs!r}),
    quiet=True)
print(json.dumps({{"seed": {seed}, "compile": {mode!r}, "train_seconds": time.perf_counter() - t1,
    "import_seconds": t1 - t0, "compile_seconds": s["compile_seconds"],
    "steps_to_target": s["steps_to_target"], "total_steps": s["total_steps"],
    "mean_return_last_100": s["mean_return_last_100"], "stopped_by": s["stopped_by"]}}))
"""


def recipe_config():
    spec = importlib.util.spec_from_file_location("recipe", RECIPE)
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    return recipe.CONFIG


def throughput(n_envs: int, mode: str, steps: float, repeats: int, n_steps=None) -> dict:
    import tensorflow as tf

    from rlnorm.agent import A2CAgent
    from rlnorm.compiled import make_tf_env
    from rlnorm.compiled.loop import CompiledLoop
    from rlnorm.normalizer import RewardScaler

    config = recipe_config().replace(n_envs=n_envs, compile=mode)
    if n_steps is not None:
        config = config.replace(n_steps=n_steps)
    env = make_tf_env(config.env_id, n_envs)
    agent = A2CAgent(config, env.observation_space, env.action_space)
    scaler = RewardScaler(n_envs, config.gamma, config.reward_clip)
    loop = CompiledLoop(config, agent, env, scaler if config.norm_reward else None)
    carry = loop.initial_carry(config.seed)
    per_update = config.n_steps * n_envs
    updates = max(1, round(steps / per_update))

    def call(n):
        nonlocal carry
        wall, cpu = time.perf_counter(), time.process_time()
        carry, total, _ = loop.run(carry, tf.constant(n, tf.int32))
        float(total["policy_loss"])  # wait for the result
        return time.perf_counter() - wall, time.process_time() - cpu

    compile_wall, _ = call(1)
    calls = [call(updates) for _ in range(repeats)]
    wall, cpu = min(calls)
    return {
        "n_envs": n_envs,
        "n_steps": config.n_steps,
        "compile": mode,
        "compile_seconds": round(compile_wall, 2),
        "env_steps_per_call": updates * per_update,
        "steps_per_second": round(updates * per_update / wall),
        "steps_per_cpu_second": round(updates * per_update / cpu),
        "all_calls_wall_seconds": [round(w, 3) for w, _ in calls],
    }


def solve(seed: int, mode: str, runs: str, env: dict) -> dict:
    code = SOLVE.format(root=str(ROOT), recipe=str(RECIPE), seed=seed, mode=mode, runs=runs)
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - t0
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-envs", default="256,1024,4096", help="comma-separated env counts")
    p.add_argument("--steps", type=float, default=2e6, help="env steps per timed call")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seeds", default="0", help="comma-separated seeds to solve with")
    p.add_argument("--modes", default="graph,xla", help="compile modes to measure")
    p.add_argument("--xla-cache", default=None, help="persistent XLA cache folder for solves")
    p.add_argument("--n-steps", type=int, default=None, help="throughput only: override")
    p.add_argument("--no-solve", action="store_true")
    p.add_argument("--no-throughput", action="store_true")
    args = p.parse_args()

    config = recipe_config()
    result = {
        "recipe": str(RECIPE.relative_to(ROOT)),
        "n_steps": config.n_steps,
        "hidden_sizes": list(config.hidden_sizes),
        "cpu_count": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }
    if not args.no_throughput:
        result["throughput"] = [
            throughput(int(n), mode, args.steps, args.repeats, args.n_steps)
            for mode in args.modes.split(",")
            for n in args.n_envs.split(",")
        ]
    if not args.no_solve:
        env = dict(os.environ)
        if args.xla_cache:
            env["TF_XLA_FLAGS"] = (
                f"{env.get('TF_XLA_FLAGS', '')} "
                f"--tf_xla_persistent_cache_directory={args.xla_cache}"
            ).strip()
            result["xla_cache"] = args.xla_cache
        with tempfile.TemporaryDirectory() as runs:
            result["solve"] = [
                solve(int(s), mode, runs, env)
                for mode in args.modes.split(",")
                for s in args.seeds.split(",")
            ]
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
