"""CartPole-v1 with plain Keras BatchNormalization in both networks: the FAILING baseline.

Plain BatchNorm normalizes with batch statistics while learning (a batch of 40 correlated
transitions) but with moving averages while acting, so the policy that collected the data is
not the one whose log-probabilities the update differentiates, and the value targets come from
yet another function. Expect it to learn far slower than the default recipe, or not at all.
The fixes: `batch_renorm` (Batch Renormalization, Ioffe 2017; agents/cartpole_batch_renorm.py)
and `batch_moving` (moving statistics in both modes; agents/cartpole_batch_moving.py). Or here:

    python agents/cartpole_batchnorm.py --policy-norm batch_renorm --value-norm batch_renorm
"""

import sys

from rlnorm.cli import main
from rlnorm.config import Config

CONFIG = Config(
    agent="cartpole_batchnorm",
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
    policy_norm="batch",
    value_norm="batch",
    target_return=475.0,
)

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]], base_config=CONFIG))
