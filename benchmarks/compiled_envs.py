"""Throughput of the TF-native classic-control envs (rlnorm.compiled).

For each env: N copies stepped with uniform random actions inside ONE
`tf.function(jit_compile=True)` `tf.while_loop` of S steps (auto-resets included). The first
call compiles and is timed separately; the best of the following timed calls gives env-steps/s
(N * S / seconds). Prints one JSON object.

    python benchmarks/compiled_envs.py [--n-envs 1024] [--steps 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402

from rlnorm.compiled import SUPPORTED_ENV_IDS, make_tf_env  # noqa: E402


def make_rollout(env, steps: int):
    """Compiled S-step rollout with random actions; returns values that depend on every step
    so nothing is optimised away."""

    @tf.function(jit_compile=True)
    def rollout(state, seed):
        def body(t, state, reward_sum, n_done):
            key = tf.stack([tf.cast(seed, tf.int64), tf.cast(t, tf.int64)])
            state, out = env.step(state, env.random_action(key))
            done = tf.logical_or(out.terminated, out.truncated)
            return (
                t + 1,
                state,
                reward_sum + tf.reduce_sum(out.reward),
                n_done + tf.reduce_sum(tf.cast(done, tf.int32)),
            )

        init = (tf.constant(0), state, tf.constant(0.0), tf.constant(0))
        _, state, reward_sum, n_done = tf.while_loop(lambda t, *_: t < steps, body, init)
        return state, reward_sum, n_done

    return rollout


def bench(env_id: str, n_envs: int, steps: int, repeats: int) -> dict:
    env = make_tf_env(env_id, n_envs=n_envs)
    rollout = make_rollout(env, steps)
    state = env.reset(seed=0)

    t0 = time.perf_counter()
    state, reward_sum, n_done = rollout(state, tf.constant(0, tf.int64))
    n_done.numpy()  # block until done
    first_call_s = time.perf_counter() - t0

    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        state, reward_sum, n_done = rollout(state, tf.constant(i + 1, tf.int64))
        n_done.numpy()
        times.append(time.perf_counter() - t0)
    best = min(times)
    return {
        "env_steps_per_s": round(n_envs * steps / best),
        "best_call_s": round(best, 4),
        "all_calls_s": [round(t, 4) for t in times],
        # The first call = tracing + XLA compilation + one run; subtract one run to estimate
        # the compile cost alone.
        "compile_s": round(first_call_s - best, 3),
        "episodes_ended_in_last_call": int(n_done.numpy()),
        "mean_reward_last_call": float(reward_sum.numpy()) / (n_envs * steps),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-envs", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--envs", nargs="*", default=list(SUPPORTED_ENV_IDS))
    args = parser.parse_args()

    results = {
        "n_envs": args.n_envs,
        "steps_per_call": args.steps,
        "repeats": args.repeats,
        "tensorflow": tf.__version__,
        "devices": [d.name for d in tf.config.list_logical_devices()],
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "envs": {},
    }
    for env_id in args.envs:
        results["envs"][env_id] = bench(env_id, args.n_envs, args.steps, args.repeats)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
