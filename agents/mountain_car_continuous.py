"""MountainCarContinuous-v0: rl-zoo's tuned A2C entry, translated key for key: 4 envs,
n_steps 100, observations and rewards normalized, ent_coef 0, gSDE (use_sde) with a new
exploration matrix every 16 steps (sde_sample_freq 16), log_std_init 0, ortho_init false,
100k steps, and SB3's A2C defaults for the rest (RMSprop lr 7e-4 constant, gamma 0.99,
gae_lambda 1.0, vf_coef 0.5, max_grad_norm 0.5 over both networks: grad_clip "global").

What differs: rlnorm's normalizer and reward scaler stand in for VecNormalize. gSDE is the
point of this entry: noise that stays the same for 16 steps pushes the car the same way long
enough to climb, where white Gaussian noise averages out. MountainCarContinuous has a
TF-native twin: `--backend compiled`.

    python agents/mountain_car_continuous.py [rlnorm train flags, e.g. --seed 1]
"""

import sys

from rlnorm.cli import main
from rlnorm.config import Config
from rlnorm.recipes import SB3_A2C

CONFIG = Config(**SB3_A2C).replace(
    agent="mountain_car_continuous",
    env_id="MountainCarContinuous-v0",
    n_envs=4,
    n_steps=100,
    total_steps=100_000,
    use_sde=True,
    sde_sample_freq=16,
    log_std_init=0.0,
    ortho_init=False,
    norm_obs=True,
    norm_reward=True,
)

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]], base_config=CONFIG))
