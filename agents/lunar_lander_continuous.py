"""LunarLanderContinuous-v3: rl-zoo's tuned A2C entry, translated key for key: 4 envs,
n_steps 8, gamma 0.99, gae_lambda 0.9, vf_coef 0.4, ent_coef 0, max_grad_norm 0.5,
`lin_7e-4` (lr_schedule linear), gSDE (use_sde, once per rollout), log_std_init -2,
ortho_init false, observations and rewards normalized, 5M steps.

What differs: SB3 clips one gradient norm over both networks with one optimizer
(grad_clip "global" here: the same arithmetic, RMSprop is per element); rlnorm's normalizer
and reward scaler stand in for VecNormalize. Needs the box2d extra:

    pip install 'rlnorm[box2d]'
    python agents/lunar_lander_continuous.py [rlnorm train flags, e.g. --seed 1]
"""

import sys

from rlnorm.cli import main
from rlnorm.config import Config
from rlnorm.recipes import SB3_A2C

CONFIG = Config(**SB3_A2C).replace(
    agent="lunar_lander_continuous",
    env_id="LunarLanderContinuous-v3",
    n_envs=4,
    n_steps=8,
    total_steps=5_000_000,
    lr_schedule="linear",
    gae_lambda=0.9,
    vf_coef=0.4,
    use_sde=True,
    sde_sample_freq=-1,
    log_std_init=-2.0,
    ortho_init=False,
    norm_obs=True,
    norm_reward=True,
)

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]], base_config=CONFIG))
