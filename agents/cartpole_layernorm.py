"""CartPole-v1 with LayerNorm in both networks (Dense -> LayerNorm -> tanh, Acme's
LayerNormMLP order); everything else is the default recipe (agents/cartpole.py). LayerNorm
normalizes each sample over its own features, so acting (one observation per env) and
learning (a batch of n_steps * n_envs) see the same function: the norm that is safe to put
in an on-policy actor-critic without further thought.

    python agents/cartpole_layernorm.py [rlnorm train flags, e.g. --seed 1]
"""

import sys

from rlnorm.cli import main
from rlnorm.config import Config

CONFIG = Config(
    agent="cartpole_layernorm",
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
    policy_norm="layer",
    value_norm="layer",
    target_return=475.0,
)

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]], base_config=CONFIG))
