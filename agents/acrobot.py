"""Acrobot-v1: rl-zoo's A2C entry, translated key for key: 16 envs, observations and rewards
normalized (`normalize: true`), ent_coef 0, 500k steps, and SB3's A2C defaults for the rest
(n_steps 5, RMSprop lr 7e-4 constant, gamma 0.99, gae_lambda 1.0, vf_coef 0.5, max_grad_norm
0.5 clipped over both networks at once: grad_clip "global", as SB3's single optimizer).

What differs: rlnorm's own observation normalizer and reward scaler (exact float64 statistics,
checkpointed) stand in for VecNormalize; the networks are separate 64-64 tanh MLPs, SB3's
default for A2C. Acrobot has a TF-native twin: `--backend compiled` trains it in one graph.

    python agents/acrobot.py [rlnorm train flags, e.g. --seed 1]
"""

import sys

from rlnorm.cli import main
from rlnorm.config import Config
from rlnorm.recipes import SB3_A2C

CONFIG = Config(**SB3_A2C).replace(
    agent="acrobot",
    env_id="Acrobot-v1",
    n_envs=16,
    total_steps=500_000,
    norm_obs=True,
    norm_reward=True,
)

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]], base_config=CONFIG))
