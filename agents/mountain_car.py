"""MountainCar-v0: rl-zoo's A2C entry, translated key for key: 16 envs, observations and
rewards normalized (`normalize: true`), ent_coef 0, 1M steps, and SB3's A2C defaults for the
rest (n_steps 5, RMSprop lr 7e-4 constant, gamma 0.99, gae_lambda 1.0, vf_coef 0.5,
max_grad_norm 0.5 over both networks at once: grad_clip "global").

What differs: rlnorm's normalizer and reward scaler stand in for VecNormalize. Expect slow
progress: the reward is -1 per step until the flag, which the softmax policy's undirected
exploration rarely reaches. MountainCar has a TF-native twin: `--backend compiled`.

    python agents/mountain_car.py [rlnorm train flags, e.g. --seed 1]
"""

import sys

from rlnorm.cli import main
from rlnorm.config import Config
from rlnorm.recipes import SB3_A2C

CONFIG = Config(**SB3_A2C).replace(
    agent="mountain_car",
    env_id="MountainCar-v0",
    n_envs=16,
    total_steps=1_000_000,
    norm_obs=True,
    norm_reward=True,
)

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]], base_config=CONFIG))
