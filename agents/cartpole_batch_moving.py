"""CartPole-v1 with `batch_moving` (BatchNorm that normalizes with its moving statistics in
both modes) in both networks; everything else is the default recipe (agents/cartpole.py).

Acting and learning compute exactly the same function (train/infer KL = 0), and each update
moves the statistics one bias-corrected EMA step towards the update batch. No gradient flows
through the statistics, though: the weights grow against the normalization and on CartPole
it solved 2 of 3 seeds within 300k steps, both late (266k, 295k; benchmarks/results/batchnorm.md).

    python agents/cartpole_batch_moving.py [rlnorm train flags, e.g. --seed 1]
"""

import sys
from pathlib import Path

from rlnorm.cli import main
from rlnorm.recipes import load_recipe

CARTPOLE = load_recipe(Path(__file__).with_name("cartpole.py"))  # built on the default recipe

CONFIG = CARTPOLE.replace(
    agent="cartpole_batch_moving", policy_norm="batch_moving", value_norm="batch_moving"
)

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]], base_config=CONFIG))
