"""BatchNorm regression (slow; run by `make test` and CI), issue #7: the best BatchNorm variant,
Batch Renormalization in both networks as its recipe ships it (agents/cartpole_batch_renorm.py:
bn_momentum 0.999, warm-started moving statistics), seed 0, must solve CartPole-v1 (last-100
mean return >= 475) within 300k env steps, with the default recipe otherwise unchanged, while
the policy's train/infer KL on the update batches, as rlnorm's diagnostics log it, stays below
0.01 nats on average.

In benchmarks/results/batchnorm.md this configuration solved seeds 0, 1 and 2 (the issue's
3-of-3 goal: 142k, 89k, 148k steps) on the SyncVectorEnv; the recipe now inherits the default
recipe's NumPy-vectorized CartPole, where seed 0 takes 186k steps. Only seed 0 is pinned here
to keep CI at ~1-2 minutes. On a machine whose floating-point results differ, seed 0 may take
another trajectory (before the update became one compiled call it took 262k steps here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from rlnorm.loop import train

RECIPE = Path(__file__).resolve().parents[1] / "agents" / "cartpole_batch_renorm.py"
BUDGET = 300_000
KL_TAG = "batchnorm/policy_kl_train_infer"


def recipe_config():
    spec = importlib.util.spec_from_file_location("recipe_cartpole_batch_renorm", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CONFIG


def logged_scalar(run_dir: str, tag: str) -> list[float]:
    """Values of a scalar tag in the run's TensorBoard event files, in step order."""
    from tensorboard.backend.event_processing import event_file_loader

    points = []
    for path in sorted(Path(run_dir).glob("events.out.tfevents.*")):
        for event in event_file_loader.EventFileLoader(str(path)).Load():
            points += [
                (event.step, float(tf.make_ndarray(v.tensor)))
                for v in event.summary.value
                if v.tag == tag
            ]
    return [v for _, v in sorted(points)]


@pytest.mark.slow
def test_batch_renorm_solves_cartpole_with_small_train_infer_kl(tmp_path):
    config = recipe_config()
    assert (config.policy_norm, config.value_norm) == ("batch_renorm", "batch_renorm")
    assert config.bn_momentum == 0.999  # the variant's own setting (recipe docstring)
    config = config.replace(
        seed=0,
        total_steps=BUDGET,
        target_return=475.0,
        runs_root=str(tmp_path),
        diagnostics=True,
        diagnostics_every=2_000,
    )
    summary = train(config, quiet=True)
    kl = logged_scalar(summary["run_dir"], KL_TAG)
    print(
        f"\nbatch_renorm@0.999 seed 0: steps_to_target {summary['steps_to_target']}, "
        f"wall {summary['wall_seconds']:.1f} s, {summary['steps_per_second']:.0f} steps/s, "
        f"last-100 mean {summary['mean_return_last_100']:.1f}, train/infer KL mean "
        f"{np.mean(kl):.2e} max {np.max(kl):.2e} over {len(kl)} points"
    )
    assert summary["steps_to_target"] is not None, summary["mean_return_last_100"]
    assert summary["steps_to_target"] <= BUDGET
    assert summary["stopped_by"] == "target_return"
    assert len(kl) >= 10  # the diagnostics ran (first update, then every 2k steps)
    assert np.all(np.isfinite(kl))
    assert np.mean(kl) < 0.01, kl
