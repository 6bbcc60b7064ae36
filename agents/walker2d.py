"""Walker2d-v5 (MuJoCo, 17-d observations, 6-d Box actions): rl-zoo's A2C MuJoCo entry (written
for Walker2d-v4), the same entry as Hopper's, so this recipe is agents/hopper.py with another
env: observations and rewards normalized, 1M steps, SB3's A2C defaults otherwise (one env,
n_steps 5, RMSprop 7e-4, one gradient clip over both networks). What differs from the zoo and
why: see agents/hopper.py. Needs the MuJoCo extra:

    pip install 'rlnorm[mujoco]'
    python agents/walker2d.py [rlnorm train flags, e.g. --seed 1]
"""

import sys
from pathlib import Path

from rlnorm.cli import main
from rlnorm.recipes import load_recipe

HOPPER = load_recipe(Path(__file__).with_name("hopper.py"))  # rl-zoo's one MuJoCo A2C entry

CONFIG = HOPPER.replace(agent="walker2d", env_id="Walker2d-v5")

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]], base_config=CONFIG))
