"""Throughput harness: training steps/s against the random-action env ceiling.

Everything is measured in ONE process, back to back, so the ratios survive a noisy machine:

    python benchmarks/throughput.py                      # default recipe, norms none/layer/batch
    python benchmarks/throughput.py --cpu 0 --threads 1  # pinned to core 0, single-threaded TF
    python benchmarks/throughput.py --steps 100000 --norms none --json out.json
    python benchmarks/throughput.py --cpu 1 --sb3-python /tmp/sb3/bin/python --repeats 3

Prints JSON: the ceiling (SyncVectorEnv(8) CartPole-v1 with random actions, steps/s), rlnorm
A2C training steps/s for each norm with diagnostics off and at the default cadence, each as a
ratio of the ceiling measured right before that run (medians over `--repeats`), the median
latency of one update (one compiled call), trace counts, and, from fresh subprocesses, the time
from `rlnorm train` start to the first env step, the default run's peak RSS and the peak RSS of
a process that only imports what a run imports (the floor under it: most of it is TensorFlow's;
figures in benchmarks/results/throughput.md). Training steps/s come twice:
`steps_per_second` over the whole `train()` call (env and agent construction, tracing
included) and `steady_steps_per_second` after the first update (which traces).
The ceiling is always the SyncVectorEnv(8), whatever env the recipe trains on; training uses
the recipe's own env implementation (the default recipe: Gymnasium's NumPy-vectorized
CartPole; `--vectorization-mode sync` trains on the SyncVectorEnv instead).

With `--sb3-python` (the Python of a throwaway env with Stable-Baselines3, see
benchmarks/sb3_a2c.py) it also runs SB3's A2C with the same hyperparameters, alternating
with rlnorm's goal configuration (norm none, diagnostics at the default cadence) `--repeats`
times on the same core, and reports the medians and rlnorm / SB3; `--solve-seeds 0,1,2` adds
each one's steps and wall seconds to solve CartPole (last-100 mean >= 475) per seed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def parse_args():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--steps", type=int, default=100_000, help="env steps per training run")
    p.add_argument("--norms", default="none,layer,batch", help="comma-separated norms")
    p.add_argument("--cpu", type=int, default=None, help="pin this process to one core")
    p.add_argument(
        "--threads", type=int, default=1, help="TF intra/inter-op threads (0: TF default)"
    )
    p.add_argument(
        "--vectorization-mode",
        default=None,
        help="override the recipe's vectorization_mode for training",
    )
    p.add_argument("--repeats", type=int, default=1, help="repeat each measurement, report median")
    p.add_argument("--no-startup", action="store_true", help="skip the startup subprocess")
    p.add_argument("--json", default=None, help="also write the result here")
    p.add_argument(
        "--solve-seeds",
        default="",
        help="with --sb3-python: also time both to solve CartPole for these seeds, e.g. 0,1,2",
    )
    p.add_argument(
        "--sb3-python",
        default=None,
        help="Python with stable-baselines3: run SB3's A2C side by side (benchmarks/sb3_a2c.py)",
    )
    return p.parse_args()


def ceiling_steps_per_second(n_envs: int = 8, steps: int = 40_000, seed: int = 0) -> float:
    """Gymnasium SyncVectorEnv(8) CartPole-v1 stepping random actions (the ceiling)."""
    import gymnasium as gym
    import numpy as np

    envs = gym.make_vec("CartPole-v1", num_envs=n_envs, vectorization_mode="sync")
    envs.reset(seed=seed)
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, 2, size=(steps // n_envs + 1, n_envs))
    t = time.perf_counter()
    for a in actions:
        envs.step(a)
    elapsed = time.perf_counter() - t
    envs.close()
    return len(actions) * n_envs / elapsed


def latencies(config, calls: int = 300) -> dict:
    """Median latency of the training loop's one call per update (`update_us`: rollout with
    the env steps, targets, train step, normalizer merge), and, for reference, of the agent's
    standalone compiled `act` (8 obs) and `train_step` (n_steps x n_envs) calls."""
    import numpy as np

    from rlnorm.agent import A2CAgent
    from rlnorm.envs import make_vec_env
    from rlnorm.update import VectorEnvUpdater

    envs = make_vec_env(
        config.env_id, config.n_envs, 0, config.vectorization_mode, episode_statistics=False
    )
    agent = A2CAgent(config, envs.single_observation_space, envs.single_action_space)
    updater = VectorEnvUpdater(agent, envs, seed=0)
    obs, _ = envs.reset(seed=0)
    n = config.n_envs * config.n_steps
    batch = (
        np.repeat(obs, config.n_steps, 0),
        np.zeros(n, np.int32),
        np.ones(n, np.float32),
        np.ones(n, np.float32),
        np.ones(n, np.float32),
    )

    def median_us(fn):
        for _ in range(20):
            fn()
        times = []
        for _ in range(calls):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times) * 1e6

    return {
        "update_us": median_us(
            lambda: updater.update(0, 1, lambda *_: None).metrics["update_applied"]
        ),
        "act_us": median_us(lambda: agent.act(obs)[0].numpy()),
        "train_step_us": median_us(lambda: agent.train_step(*batch)["policy_loss"].numpy()),
    }


def train_steps_per_second(config) -> dict:
    """One training run, right after a ceiling measurement: the machine's speed can drift
    within minutes, so each run's ratio uses the ceiling measured next to it."""
    from rlnorm.loop import train

    ceiling = ceiling_steps_per_second()
    with tempfile.TemporaryDirectory() as d:
        summary = train(config.replace(run_dir=d), quiet=True)
    return {
        "ceiling": ceiling,
        "ratio_to_ceiling": summary["steps_per_second"] / ceiling,
        "steady_ratio_to_ceiling": summary["steady_steps_per_second"] / ceiling,
        "steps_per_second": summary["steps_per_second"],
        "steady_steps_per_second": summary["steady_steps_per_second"],
        "trace_counts": summary["trace_counts"],
        "mean_return_last_100": summary["mean_return_last_100"],
    }


def sb3_subprocess(
    python: str, steps: int, cpu: int | None, threads: int, seed: int = 0, target=None
) -> dict:
    script = Path(__file__).resolve().parent / "sb3_a2c.py"
    argv = [python, str(script), "--steps", str(steps), "--threads", str(threads or 1)]
    argv += ["--seed", str(seed)]
    if cpu is not None:
        argv += ["--cpu", str(cpu)]
    if target is not None:
        argv += ["--target-return", str(target)]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    return json.loads(out[out.index("{") :])


def default_run_subprocess(agents_dir: Path) -> dict:
    """Launch `python agents/cartpole.py` (a short run) in a fresh process: wall time from
    launch to its first env step, and that process's peak RSS."""
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(
            [
                sys.executable,
                str(agents_dir / "cartpole.py"),
                "--quiet",
                "--total-steps",
                "40",
                "--run-dir",
                d,
            ],
            check=True,
            capture_output=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        summary = json.loads((Path(d) / "summary.json").read_text())
    return {
        # Seconds from the process's start (imports, tracing) to its first env step.
        "startup_to_first_env_step_s": summary["first_env_step_seconds"],
        "default_run_peak_rss_mb": summary["peak_rss_mb"],
    }


def import_floor_subprocess() -> dict:
    """The peak RSS of a fresh process that only imports what every rlnorm run imports
    (TensorFlow, Keras, Gymnasium, the training loop) and trains nothing: the floor under the
    default run's peak RSS, measured in the same harness run (the library's pages that count
    depend on the page cache). Split into anonymous memory and mapped files at the end."""
    code = (
        "import rlnorm.loop\n"
        "f = dict(l.split(':', 1) for l in open('/proc/self/status'))\n"
        "print(*(int(f[k].split()[0]) / 1024 for k in ('VmHWM', 'RssAnon', 'RssFile')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    ).stdout.split()
    peak, anon, files = (float(x) for x in out[-3:])
    return {
        "import_only_peak_rss_mb": peak,
        "import_only_rss_anon_mb": anon,
        "import_only_rss_file_mb": files,
    }


def main() -> None:
    args = parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root / "agents"))
    from cartpole import CONFIG  # the default recipe

    base = CONFIG.replace(total_steps=args.steps, target_return=None)
    if args.vectorization_mode:
        base = base.replace(vectorization_mode=args.vectorization_mode)
    med = statistics.median
    result: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "pinned_cpu": args.cpu,
            "tf_threads": args.threads,
            "tf": tf.__version__,
        },
        "steps_per_run": args.steps,
        "vectorization_mode": base.vectorization_mode,
    }
    ceilings = [ceiling_steps_per_second() for _ in range(args.repeats)]
    result["ceiling_sync8_random_steps_per_second"] = med(ceilings)
    result["latency"] = latencies(base)
    runs = {}
    for norm in args.norms.split(","):
        for diag in (False, True):
            cfg = base.replace(policy_norm=norm, value_norm=norm, diagnostics=diag)
            reps = [train_steps_per_second(cfg) for _ in range(args.repeats)]
            sps = med(r["steps_per_second"] for r in reps)
            steady = med(r["steady_steps_per_second"] for r in reps)
            runs[f"{norm}/diagnostics_{'on' if diag else 'off'}"] = {
                "steps_per_second": sps,
                "ratio_to_ceiling": med(r["ratio_to_ceiling"] for r in reps),
                "steady_steps_per_second": steady,
                "steady_ratio_to_ceiling": med(r["steady_ratio_to_ceiling"] for r in reps),
                "trace_counts": reps[-1]["trace_counts"],
                "mean_return_last_100": reps[-1]["mean_return_last_100"],
            }
    result["train"] = runs
    if "none/diagnostics_off" in runs and "none/diagnostics_on" in runs:
        off, on = runs["none/diagnostics_off"], runs["none/diagnostics_on"]
        result["diagnostics_overhead_pct"] = 100 * (
            1 - on["steady_steps_per_second"] / off["steady_steps_per_second"]
        )
    if args.sb3_python:
        # Alternate SB3 and rlnorm's goal configuration, so both see the same machine.
        goal = base.replace(policy_norm="none", value_norm="none", diagnostics=True)
        sb3, ours = [], []
        for _ in range(args.repeats):
            sb3.append(sb3_subprocess(args.sb3_python, args.steps, args.cpu, args.threads))
            ours.append(train_steps_per_second(goal))
        sb3_sps = med(r["steps_per_second"] for r in sb3)
        ours_sps = med(r["steps_per_second"] for r in ours)
        ours_steady = med(r["steady_steps_per_second"] for r in ours)
        result["side_by_side"] = {
            "sb3": {k: v for k, v in sb3[-1].items() if k != "steps_per_second"},
            "sb3_steps_per_second": [r["steps_per_second"] for r in sb3],
            "rlnorm_steps_per_second": [r["steps_per_second"] for r in ours],
            "rlnorm_steady_steps_per_second": [r["steady_steps_per_second"] for r in ours],
            "rlnorm_over_sb3": ours_sps / sb3_sps,
            "rlnorm_steady_over_sb3": ours_steady / sb3_sps,
            # Each one's ratio to the ceiling measured next to it (SB3: in its own process).
            "sb3_ratio_to_ceiling": med(r["ratio_to_ceiling"] for r in sb3),
            "rlnorm_ratio_to_ceiling": med(r["ratio_to_ceiling"] for r in ours),
            "rlnorm_steady_ratio_to_ceiling": med(r["steady_ratio_to_ceiling"] for r in ours),
        }
        # Time to solve (last-100 mean >= 475), from the start of training, per seed.
        from rlnorm.loop import train

        solve = []
        for seed in [int(x) for x in args.solve_seeds.split(",") if x]:
            theirs = sb3_subprocess(
                args.sb3_python, 300_000, args.cpu, args.threads, seed, target=475.0
            )
            with tempfile.TemporaryDirectory() as d:
                cfg = goal.replace(seed=seed, total_steps=300_000, target_return=475.0)
                mine = train(cfg.replace(run_dir=d), quiet=True)
            solve.append(
                {
                    "seed": seed,
                    "sb3_steps_to_target": theirs["steps_to_target"],
                    "sb3_wall_seconds": theirs["wall_seconds"],
                    "rlnorm_steps_to_target": mine["steps_to_target"],
                    "rlnorm_wall_seconds": mine["wall_seconds"],
                }
            )
        if solve:
            result["side_by_side"]["solve"] = solve
            result["side_by_side"]["sb3_over_rlnorm_wall_to_solve"] = med(
                r["sb3_wall_seconds"] / r["rlnorm_wall_seconds"] for r in solve
            )
    # This process holds several agents; the default run's own RSS comes from the subprocess.
    result["harness_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if not args.no_startup:
        result.update(default_run_subprocess(root / "agents"))
        result.update(import_floor_subprocess())
        result["default_run_rss_over_import_mb"] = (
            result["default_run_peak_rss_mb"] - result["import_only_peak_rss_mb"]
        )
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text)


if __name__ == "__main__":
    main()
