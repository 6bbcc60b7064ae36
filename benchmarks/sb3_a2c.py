"""Stable-Baselines3's A2C on CartPole-v1, the baseline of the throughput harness.

NOT an rlnorm dependency: run it with the Python of a throwaway environment that has SB3 (CPU
torch pinned, so pip takes the CPU build this machine carries):

    python -m venv /tmp/sb3 && /tmp/sb3/bin/pip install torch==2.13.0 "stable-baselines3==2.9.*"
    /tmp/sb3/bin/python benchmarks/sb3_a2c.py --cpu 1 --steps 100000
    python benchmarks/throughput.py --cpu 1 --sb3-python /tmp/sb3/bin/python   # side by side

Hyperparameters: rl-zoo's a2c.yml for CartPole-v1 (8 envs, ent_coef 0.0, everything else
A2C's defaults: n_steps 5, RMSprop lr 7e-4 eps 1e-5, gamma 0.99, gae_lambda 1.0, vf_coef 0.5,
max_grad_norm 0.5, separate 64-64 tanh policy and value networks), the same as
agents/cartpole.py. Prints JSON: SB3's training steps/s (its `learn()` wall time, as SB3's
own `time/fps`), the SyncVectorEnv(8) random-action ceiling measured in the same process
(so its ratio is comparable with rlnorm's), the last-100 mean return, and peak RSS. With
`--target-return 475` it stops where rlnorm's `target_return` would, and reports the steps
and wall seconds it took to get there.
"""

from __future__ import annotations

import argparse
import json
import os
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--cpu", type=int, default=None, help="pin this process to one core")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--target-return",
        type=float,
        default=None,
        help="stop once the last-100 mean episode return reaches this (rlnorm's target_return)",
    )
    args = p.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})

    import gymnasium as gym
    import numpy as np
    import stable_baselines3
    import torch
    from stable_baselines3 import A2C
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    class StopAtTarget(BaseCallback):
        """Stops like rlnorm's `target_return`: once the last-100 mean return reaches the target
        after a rollout (rlnorm checks after each update of the same n_steps x n_envs), that
        rollout's update runs, and the first step of the next rollout ends `learn()`."""

        steps_to_target = None

        def _on_rollout_end(self) -> None:
            returns = [e["r"] for e in self.model.ep_info_buffer]
            target = args.target_return
            if target is not None and len(returns) == 100 and np.mean(returns) >= target:
                self.steps_to_target = self.steps_to_target or self.num_timesteps

        def _on_step(self) -> bool:
            return self.steps_to_target is None

    torch.set_num_threads(args.threads)

    # The ceiling, exactly as benchmarks/throughput.py measures it.
    envs = gym.make_vec("CartPole-v1", num_envs=8, vectorization_mode="sync")
    envs.reset(seed=args.seed)
    actions = np.random.default_rng(args.seed).integers(0, 2, size=(5_001, 8))
    t = time.perf_counter()
    for a in actions:
        envs.step(a)
    ceiling = len(actions) * 8 / (time.perf_counter() - t)
    envs.close()

    vec_env = make_vec_env("CartPole-v1", n_envs=8, seed=args.seed)
    model = A2C("MlpPolicy", vec_env, ent_coef=0.0, seed=args.seed, device="cpu", verbose=0)
    t = time.perf_counter()
    stop = StopAtTarget()
    model.learn(total_timesteps=args.steps, callback=stop)
    elapsed = time.perf_counter() - t
    steps = stop.steps_to_target or model.num_timesteps
    returns = [ep["r"] for ep in model.ep_info_buffer]
    with open("/proc/self/status") as f:
        rss = next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))
    result = {
        "sb3": stable_baselines3.__version__,
        "torch": torch.__version__,
        "gymnasium": gym.__version__,
        "pinned_cpu": args.cpu,
        "torch_threads": args.threads,
        "steps": steps,
        "steps_to_target": stop.steps_to_target,
        "wall_seconds": elapsed,
        "ceiling_sync8_random_steps_per_second": ceiling,
        "steps_per_second": steps / elapsed,
        "ratio_to_ceiling": steps / elapsed / ceiling,
        "mean_return_last_100": float(np.mean(returns)) if returns else None,
        "peak_rss_mb": rss,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
