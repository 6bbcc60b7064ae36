"""CartPole-v1 with `batch_moving` (BatchNorm that normalizes with its moving statistics in
both modes) in both networks; everything else is the default recipe (agents/cartpole.py).

Acting and learning compute exactly the same function (train/infer KL = 0), and each update
moves the statistics one bias-corrected EMA step towards the update batch. No gradient flows
through the statistics, though: the weights grow against the normalization and on CartPole
it solved only 1 of 3 seeds within 300k steps (benchmarks/results/batchnorm.md).

    python agents/cartpole_batch_moving.py [rlnorm train flags, e.g. --seed 1]
"""

import sys

from rlnorm.cli import main
from rlnorm.config import Config

CONFIG = Config(
    agent="cartpole_batch_moving",
    env_id="CartPole-v1",
    n_envs=8,
    n_steps=5,
    total_steps=500_000,
    learning_rate=7e-4,
    gamma=0.99,
    gae_lambda=1.0,
    ent_coef=0.0,
    vf_coef=0.5,
    max_grad_norm=0.5,
    policy_norm="batch_moving",
    value_norm="batch_moving",
    target_return=475.0,
)

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]], base_config=CONFIG))
