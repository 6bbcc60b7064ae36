"""Kill a training run at random moments, resume it each time, and check what is left.

    python benchmarks/fault_injection.py [--kills 10] [--total-steps 40000] [--seed 0]

Each round starts `rlnorm train` (the first round a fresh run into one --run-dir, the others
`--resume` of it), SIGKILLs it after a random delay, and goes on until a round finishes by
itself. Then it checks that the run reached its budget (the final checkpoint's env step is
`total_steps` rounded up to whole updates, as an uninterrupted run's), that summary.json says so,
that the latest checkpoint is finite and loads, and that every TensorBoard scalar tag's steps
increase strictly across the run's event files (one curve, no replayed steps). Prints one line
per round and the verdict; exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def event_steps(run_dir: Path) -> dict[str, list[int]]:
    import tensorflow as tf

    steps: dict[str, list[int]] = {}
    for path in sorted(run_dir.rglob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for v in event.summary.value:  # the curves: scalars (metadata is written per start)
                if v.metadata.plugin_data.plugin_name == "scalars":
                    steps.setdefault(f"{path.parent.name}/{v.tag}", []).append(event.step)
    return steps


def training(run_dir: Path, since: float, first: bool) -> bool:
    """Whether the round's process has started training (written an event or a checkpoint)."""
    if first:
        return any(run_dir.glob("checkpoints/ckpt-*.index"))
    files = [*run_dir.glob("events.out.tfevents.*"), *run_dir.glob("checkpoints/*")]
    return any(f.stat().st_mtime > time.time() - (time.monotonic() - since) for f in files)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kills", type=int, default=10, help="SIGKILLs before the run may finish")
    p.add_argument("--total-steps", type=int, default=40_000)
    p.add_argument("--seed", type=int, default=0, help="seeds the kill times")
    p.add_argument("--max-delay", type=float, default=8.0, help="seconds before a kill, at most")
    args = p.parse_args()
    rng = random.Random(args.seed)
    run_dir = Path(tempfile.mkdtemp(prefix="rlnorm_faults_")) / "run"
    base = [sys.executable, "-m", "rlnorm.cli", "train", "--quiet"]
    fresh = [
        *base,
        "--env",
        "CartPole-v1",
        "--run-dir",
        str(run_dir),
        "--total-steps",
        str(args.total_steps),
        "--set",
        "checkpoint_every=2000",
        "--set",
        "log_every=400",
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    rounds = 0
    while True:
        rounds += 1
        argv = fresh if rounds == 1 else [*base, "--resume", str(run_dir)]
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if rounds <= args.kills:
            # Kill while it trains: once it has written something (the first round: once its
            # first checkpoint exists, so that there is a run to resume), then at random.
            started = time.monotonic()
            while proc.poll() is None and not training(run_dir, started, first=rounds == 1):
                time.sleep(0.05)
            delay = rng.uniform(0.0, args.max_delay)
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                ckpts = sorted(run_dir.glob("checkpoints/ckpt-*.index"))
                print(f"round {rounds}: killed {delay:.1f} s into training, {len(ckpts)} kept")
                continue
        out, err = proc.communicate(timeout=600)
        if proc.returncode != 0:
            print(f"round {rounds}: exit {proc.returncode}: {err.decode()[-500:]}")
            return 1
        print(f"round {rounds}: finished by itself")
        break

    summary = json.loads((run_dir / "summary.json").read_text())
    spu = 8 * 5  # the default config's n_envs x n_steps
    expected = -(-args.total_steps // spu) * spu
    failures = []
    if summary["total_steps"] != expected:
        failures.append(f"summary total_steps {summary['total_steps']} != {expected}")
    sys.path.insert(0, str(Path(__file__).parents[1]))
    import rlnorm

    loaded = rlnorm.load(run_dir)  # the latest checkpoint loads, and is finite (load checks)
    if loaded.summary["total_steps"] != expected:
        failures.append("the loaded run's summary disagrees")
    for tag, steps in event_steps(run_dir).items():
        if any(a >= b for a, b in zip(steps, steps[1:])):
            failures.append(f"tag {tag}: steps not strictly increasing")
    verdict = "OK" if not failures else "FAILED: " + "; ".join(failures[:5])
    print(
        f"{rounds - 1} kills, {rounds} rounds: final step {summary['total_steps']} "
        f"(expected {expected}); {verdict}  [{time.strftime('%Y-%m-%d')}, run {run_dir}]"
    )
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
