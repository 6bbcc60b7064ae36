"""HalfCheetah-v5 (MuJoCo, 17-d observations, 6-d Box actions): rl-zoo's A2C MuJoCo entry
(SB3's A2C defaults with observations and rewards normalized, 1M steps), run with 8 envs
instead of zoo's 1 so Python stepping is not the bottleneck. HalfCheetah's observation
features differ in scale by orders of magnitude (joint angles vs. velocities), which is what
the shared observation normalizer is for. Needs the optional MuJoCo extra:

    pip install -e '.[mujoco]'
    python agents/halfcheetah.py [rlnorm train flags, e.g. --seed 1]
"""

import importlib.util
import sys

from rlnorm.cli import main
from rlnorm.config import Config

CONFIG = Config(
    agent="halfcheetah",
    env_id="HalfCheetah-v5",
    n_envs=8,
    n_steps=5,
    total_steps=1_000_000,
    learning_rate=7e-4,
    gamma=0.99,
    gae_lambda=1.0,
    ent_coef=0.0,
    vf_coef=0.5,
    max_grad_norm=0.5,
    norm_obs=True,
    norm_reward=True,
)

if __name__ == "__main__":
    if importlib.util.find_spec("mujoco") is None:
        sys.exit(
            "HalfCheetah-v5 needs MuJoCo, which is not installed. Install the optional extra "
            "with `pip install -e '.[mujoco]'` (or `pip install 'gymnasium[mujoco]'`)."
        )
    sys.exit(main(["train", *sys.argv[1:]], base_config=CONFIG))
