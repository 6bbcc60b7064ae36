"""BatchNorm regression (slow; run by `make test` and CI): the best BatchNorm variant, Batch
Renormalization in both networks as its recipe ships it (agents/cartpole_batch_renorm.py:
bn_momentum 0.999, warm-started moving statistics), on 8 new seeds (100..107) must not be
judged `regressed` against its baseline (benchmarks/baselines/cartpole_batch_renorm.json,
seeds 0..7; docs/regression.md), and the policy's train/infer KL on the update batches, as
rlnorm's diagnostics log it, must stay below 0.01 nats on average over every seed's run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from rlnorm.recipes import load_recipe
from rlnorm.regress import format_report, regress

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "agents" / "cartpole_batch_renorm.py"
KL_TAG = "batchnorm/policy_kl_train_infer"


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
def test_batch_renorm_is_not_worse_than_its_baseline_with_small_train_infer_kl(tmp_path):
    config = load_recipe(RECIPE)
    assert (config.policy_norm, config.value_norm) == ("batch_renorm", "batch_renorm")
    assert config.bn_momentum == 0.999  # the variant's own setting (recipe docstring)
    assert config.diagnostics  # the KL below is one of the diagnostics
    report = regress(
        RECIPE,
        seeds=8,
        seed_start=100,
        overrides={"total_steps": 300_000},
        baseline=ROOT / "benchmarks" / "baselines" / "cartpole_batch_renorm.json",
        out=tmp_path,
        quiet=True,
    )
    kl = [logged_scalar(tmp_path / f"seed{s}", KL_TAG) for s in report["seeds"]]
    means = ", ".join(f"{np.mean(k):.1e}" for k in kl)
    print(f"\n{format_report(report)}\ntrain/infer KL mean per seed: {means}")
    assert report["config_differs"] == []
    assert report["verdict"] in ("pass", "improved"), format_report(report)
    assert all(len(k) >= 2 for k in kl)  # the diagnostics ran on every seed (every 10k steps)
    flat = np.concatenate(kl)
    assert np.all(np.isfinite(flat))
    assert np.mean(flat) < 0.01, [np.mean(k) for k in kl]
