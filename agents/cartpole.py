"""CartPole-v1, the default recipe: rl-zoo's A2C hyperparameters (8 envs, n_steps 5, RMSprop
lr 7e-4, gamma 0.99, gae_lambda 1.0, ent_coef 0, vf_coef 0.5, max_grad_norm 0.5), shared
observation normalizer, no norm inside the networks. Stops once the last-100 mean return
reaches 475 (CartPole's "solved"); SB3's A2C gets there in about 140k steps.

The envs are Gymnasium's NumPy-vectorized CartPole (`vector_entry_point`, what
`gymnasium.make_vec("CartPole-v1")` itself picks), not 8 Python envs in a SyncVectorEnv: a
vector step costs ~90 us instead of ~140 us, ~15% more training steps/s. Its autoreset is
NEXT_STEP, so each episode end costs one masked reset step; over seeds 0-4 it solved in 129k
steps on average against SyncVectorEnv's 135k (benchmarks/throughput.py).
`--set vectorization_mode=sync` trains on the SyncVectorEnv.

    python agents/cartpole.py [rlnorm train flags, e.g. --seed 1 --policy-norm layer]
    rlnorm train [the same flags]   # the same agent: a bare `rlnorm train` trains this recipe
"""

import sys

from rlnorm.cli import main
from rlnorm.config import Config
from rlnorm.recipes import SB3_A2C

CONFIG = Config(**SB3_A2C).replace(
    agent="cartpole",
    env_id="CartPole-v1",
    n_envs=8,
    total_steps=500_000,
    grad_clip="per_network",  # one clip per network (the baselines were measured so)
    target_return=475.0,
    vectorization_mode="vector_entry_point",
)

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]], base_config=CONFIG))
