"""CartPole-v1 with LayerNorm in both networks (Dense -> LayerNorm -> tanh, Acme's
LayerNormMLP order); everything else is the default recipe (agents/cartpole.py). LayerNorm
normalizes each sample over its own features, so acting (one observation per env) and
learning (a batch of n_steps * n_envs) see the same function: the norm that is safe to put
in an on-policy actor-critic without further thought.

    python agents/cartpole_layernorm.py [rlnorm train flags, e.g. --seed 1]
"""

import sys
from pathlib import Path

from rlnorm.cli import main
from rlnorm.recipes import load_recipe

CARTPOLE = load_recipe(Path(__file__).with_name("cartpole.py"))  # built on the default recipe

CONFIG = CARTPOLE.replace(agent="cartpole_layernorm", policy_norm="layer", value_norm="layer")

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]], base_config=CONFIG))
