"""CartPole regressions (slow; run by `make test` and CI), judged statistically: a recipe
trains on 8 new seeds (100..107, not the baseline's 0..7) and `rlnorm regress` compares their
steps to the target (censored at the 300k budget) with the stored baseline's
(benchmarks/baselines/<recipe>.json) by the probability of improvement and its 95% bootstrap
CI (docs/regression.md). The unchanged recipe must not be judged `regressed`; the same agent
with a tenth of its learning rate must be, so the test can tell a real regression."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlnorm.regress import format_report, regress

ROOT = Path(__file__).resolve().parents[1]
SEEDS, SEED_START, BUDGET = 8, 100, 300_000


def regress_recipe(recipe: str, tmp_path, **overrides) -> dict:
    report = regress(
        ROOT / "agents" / f"{recipe}.py",
        seeds=SEEDS,
        seed_start=SEED_START,
        overrides={"total_steps": BUDGET, **overrides},
        baseline=ROOT / "benchmarks" / "baselines" / f"{recipe}.json",
        out=tmp_path / recipe,
        quiet=True,
    )
    print("\n" + format_report(report))
    return report


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["cartpole", "cartpole_layernorm"])
def test_recipe_is_not_worse_than_its_baseline(recipe, tmp_path):
    report = regress_recipe(recipe, tmp_path)
    assert report["config_differs"] == []  # the recipe the baseline was made with
    # "improved" on other seeds would be luck, not a failure: only "regressed" fails CI
    assert report["verdict"] in ("pass", "improved"), format_report(report)


@pytest.mark.slow
def test_a_tenth_of_the_learning_rate_is_judged_regressed(tmp_path):
    report = regress_recipe("cartpole", tmp_path, learning_rate=7e-5)
    assert report["config_differs"] == ["learning_rate"]
    assert report["verdict"] == "regressed", format_report(report)
    hi = report["probability_of_improvement"]["steps_to_target"]["ci"][1]
    assert hi < 0.5
