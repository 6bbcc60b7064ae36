"""Pendulum-v1 (Box actions): rl-zoo's A2C entry (8 envs, n_steps 8, gamma 0.9, gae_lambda 0.9,
vf_coef 0.4, ent_coef 0, max_grad_norm 0.5, RMSprop lr 7e-4, log_std_init -2, observations
and rewards normalized). Two differences from rl-zoo: the learning rate is constant (zoo:
linear decay to 0) and exploration is a plain state-independent Gaussian (zoo: gSDE). Actions
are sampled unclipped and clipped to [-2, 2] at the env boundary. The reward (-16.3 ... 0 per
step) is divided by the running std of the discounted return, so the critic's targets stay
O(1) whatever the env's reward scale.

Expect slow progress: without gSDE, seed 0 went from a last-100 mean of about -1200 to -1066
in 200k steps (log_std_init 0 or -1 did no better); rl-zoo's gSDE run reaches about -200 in 1M.

    python agents/pendulum.py [rlnorm train flags, e.g. --seed 1 --total-steps 200000]
"""

import sys

from rlnorm.cli import main
from rlnorm.config import Config

CONFIG = Config(
    agent="pendulum",
    env_id="Pendulum-v1",
    n_envs=8,
    n_steps=8,
    total_steps=1_000_000,
    learning_rate=7e-4,
    gamma=0.9,
    gae_lambda=0.9,
    ent_coef=0.0,
    vf_coef=0.4,
    max_grad_norm=0.5,
    log_std_init=-2.0,
    norm_obs=True,
    norm_reward=True,
)

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]], base_config=CONFIG))
