"""Pendulum-v1 (Box actions): rl-zoo's tuned A2C entry, translated key for key: 8 envs,
n_steps 8, gamma 0.9, gae_lambda 0.9, vf_coef 0.4, ent_coef 0, max_grad_norm 0.5, RMSprop
(alpha 0.99, eps 1e-5), `lin_7e-4` (lr_schedule linear), gSDE (use_sde, a new exploration
matrix once per rollout: sde_sample_freq -1, full_std), log_std_init -2, ortho_init false,
observations and rewards normalized (VecNormalize, gamma 0.9), 1M steps.

What differs from SB3 and why: SB3 clips one gradient norm over both networks with one
optimizer (grad_clip "global" here, the same arithmetic: RMSprop is per element); the
networks are rlnorm's separate 64-64 tanh MLPs, which is SB3's default net_arch for A2C; the
reward scaler and the observation normalizer are rlnorm's (checkpointed, exact float64
statistics) instead of VecNormalize's. Without gSDE and the linear schedule (this recipe's
earlier form) seed 0 was still near -1066 after 200k steps; measured figures with their
commands are in benchmarks/results/zoo.md.

    python agents/pendulum.py [rlnorm train flags, e.g. --seed 1 --total-steps 200000]
"""

import sys

from rlnorm.cli import main
from rlnorm.config import Config
from rlnorm.recipes import SB3_A2C

CONFIG = Config(**SB3_A2C).replace(
    agent="pendulum",
    env_id="Pendulum-v1",
    n_envs=8,
    n_steps=8,
    total_steps=1_000_000,
    lr_schedule="linear",
    gamma=0.9,
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
