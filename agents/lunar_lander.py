"""LunarLander-v3 (Discrete actions): rl-zoo's A2C entry (written for LunarLander-v2, the
same task before Gymnasium's v3 fixes), translated key for key: 8 envs, n_steps 5, gamma
0.995, `lin_0.00083` (lr_schedule linear), ent_coef 1e-5, 200k steps, no normalization, and
SB3's A2C defaults for the rest (RMSprop, gae_lambda 1.0, vf_coef 0.5, max_grad_norm 0.5 over
both networks at once: grad_clip "global").

What differs: v3 instead of v2 (Gymnasium 1.x has only v3). rlnorm's shared observation
normalizer is OFF, as in the zoo entry (no `normalize`). Needs the box2d extra:

    pip install 'rlnorm[box2d]'
    python agents/lunar_lander.py [rlnorm train flags, e.g. --seed 1]
"""

import sys

from rlnorm.cli import main
from rlnorm.config import Config
from rlnorm.recipes import SB3_A2C

CONFIG = Config(**SB3_A2C).replace(
    agent="lunar_lander",
    env_id="LunarLander-v3",
    n_envs=8,
    total_steps=200_000,
    learning_rate=8.3e-4,
    lr_schedule="linear",
    gamma=0.995,
    ent_coef=1e-5,
    norm_obs=False,
    norm_reward=False,
)

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]], base_config=CONFIG))
