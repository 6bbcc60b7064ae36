"""K CartPole seeds to solved in one compiled graph (`rlnorm regress` on the seed-batched path)
against one single-seed run. Prints one JSON object.

    python benchmarks/seed_batch.py [--seeds 32] [--single-seed 0] [--cpu 0]
    python benchmarks/seed_batch.py --throughput 1,8,32     # env-steps/s of the graph only

batched: a fresh process runs `rlnorm regress agents/cartpole_compiled.py --seeds K` (judged
against benchmarks/baselines/cartpole_compiled.json when it exists): `wall_seconds` is the
whole process (Python start, TensorFlow import, tracing, training, the verdict's bootstrap),
`cpu_seconds` its user + system time (on a shared core the wall time is an upper bound and the
CPU time the better figure), `train_seconds` the batched trainer's own wall time.
`seed_env_steps_per_second`: the env steps of all K runs (each seed's steps to the target, or
the budget) per wall second of the trainer.
single: a fresh process trains `agents/cartpole_compiled.py --seed S` alone, timed the same way.
--throughput: in this process (tf_threads 1), for each K, the K-seed graph's first call (trace
and one update) and env-steps/s over `--updates` more updates of all K seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "agents" / "cartpole_compiled.py"


def timed(command: list[str], cpu: str | None) -> tuple[float, float]:
    """(wall seconds, child CPU seconds) of a command run to completion."""
    if cpu is not None:
        command = ["taskset", "-c", cpu, *command]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(command, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu_s


def throughput(ks: list[int], updates: int) -> dict:
    sys.path.insert(0, str(ROOT))
    import tensorflow as tf

    from rlnorm.compiled.seeds import SeedBatchLoop
    from rlnorm.recipes import load_recipe

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    config = load_recipe(str(RECIPE))
    out = {}
    for k in ks:
        loop = SeedBatchLoop(config, list(range(k)))
        carry = loop.initial_carry()
        t0 = time.perf_counter()
        carry = loop.run(carry, tf.constant(1))
        carry.episodes.numpy()
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        carry = loop.run(carry, tf.constant(updates))
        carry.episodes.numpy()
        seconds = time.perf_counter() - t0
        steps = updates * config.n_steps * config.n_envs * k
        out[k] = {
            "first_call_seconds": round(first, 2),
            "env_steps_per_second": round(steps / seconds),
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=32)
    p.add_argument("--single-seed", type=int, default=0, help="-1: skip the single run")
    p.add_argument("--cpu", default=None, help="pin the processes to these cores (taskset)")
    p.add_argument("--throughput", default=None, help="comma-separated K: graph throughput only")
    p.add_argument("--updates", type=int, default=16)
    args = p.parse_args()
    result = {"load_average_before": os.getloadavg()}
    if args.throughput:
        ks = [int(k) for k in args.throughput.split(",")]
        result["throughput"] = throughput(ks, args.updates)
        result["load_average_after"] = os.getloadavg()
        print(json.dumps(result, indent=1))
        return
    with tempfile.TemporaryDirectory() as tmp:
        report_path = Path(tmp) / "report.json"
        command = [sys.executable, "-m", "rlnorm.cli", "regress", str(RECIPE)]
        command += ["--seeds", str(args.seeds), "--quiet", "--out", f"{tmp}/regress"]
        command += ["--json", str(report_path)]
        wall, cpu_s = timed(command, args.cpu)
        report = json.loads(report_path.read_text())
        seed0 = json.loads((Path(tmp) / "regress" / "seed0" / "summary.json").read_text())
        steps = report["metrics"]["steps_to_target"]
        train = seed0["wall_seconds_all_seeds"]
        result["batched"] = {
            "seeds": args.seeds,
            "wall_seconds": round(wall, 1),
            "cpu_seconds": round(cpu_s, 1),
            "train_seconds": round(train, 1),
            "seed_env_steps_per_second": round(sum(steps) / train),
            "solved": f"{sum(report['solved'])}/{args.seeds}",
            "verdict": report["verdict"],
            "steps_to_target": {s: int(v) for s, v in zip(report["seeds"], steps)},
        }
        if args.single_seed >= 0:
            run_dir = f"{tmp}/single"
            command = [sys.executable, str(RECIPE), "--seed", str(args.single_seed)]
            wall1, cpu1 = timed([*command, "--run-dir", run_dir, "--quiet"], args.cpu)
            summary = json.loads((Path(run_dir) / "summary.json").read_text())
            result["single"] = {
                "seed": args.single_seed,
                "wall_seconds": round(wall1, 1),
                "cpu_seconds": round(cpu1, 1),
                "steps_to_target": summary["steps_to_target"],
            }
            result["ratio_wall"] = round(wall / wall1, 2)
            result["ratio_cpu"] = round(cpu_s / cpu1, 2)
    result["load_average_after"] = os.getloadavg()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
