"""Hopper-v5 (MuJoCo, 11-d observations, 3-d Box actions): rl-zoo's A2C MuJoCo entry (written for
Hopper-v4), translated key for key: observations and rewards normalized, 1M steps, and SB3's
A2C defaults for everything else: ONE env, n_steps 5, RMSprop lr 7e-4 constant, gamma 0.99,
gae_lambda 1.0, ent_coef 0, vf_coef 0.5, max_grad_norm 0.5 over both networks at once
(grad_clip "global"), a state-independent Gaussian with log_std_init 0, orthogonal init.

What differs: v5 instead of v4 (the current MuJoCo envs); rlnorm's normalizer and reward
scaler stand in for VecNormalize. One env steps slowly from Python (a compiled call per 5
steps): `--n-envs 8` trains ~8x the steps per call, with 8x the batch, which is not the zoo's
setting. Needs the MuJoCo extra:

    pip install 'rlnorm[mujoco]'
    python agents/hopper.py [rlnorm train flags, e.g. --seed 1]
"""

import sys

from rlnorm.cli import main
from rlnorm.config import Config
from rlnorm.recipes import SB3_A2C

CONFIG = Config(**SB3_A2C).replace(
    agent="hopper",
    env_id="Hopper-v5",
    n_envs=1,
    total_steps=1_000_000,
    norm_obs=True,
    norm_reward=True,
)

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]], base_config=CONFIG))
