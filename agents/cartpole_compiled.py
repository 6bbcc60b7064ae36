"""CartPole-v1 on the compiled backend: 1024 TF-native envs, the whole A2C update (rollout ->
GAE -> train step -> normalizer merge) inside one compiled loop (rlnorm.compiled.graph).

Same agent as agents/cartpole.py (shared observation normalizer, no norm in the networks),
retuned for 4096 transitions per update (measured: last-100 mean >= 475; the lr and gamma
figures were taken with n_steps 8):
- norm_reward: without it every setting tried peaked at 200-300 and fell back to ~90 (the
  Python-stepped path does the same with 256 envs): a few hundred big updates are too few for
  the critic's output to climb to unscaled returns of ~100.
- Adam, lr 3e-3, normalized advantages, GAE(0.95): 3 of 3 seeds solved, vs 1 of 2 at lr 1e-3
  and 4 of 5 at lr 5e-3.
- gamma 0.995: 5 of 5 seeds solved in 0.7-2.6M env steps under XLA (median 1.7M), 8 of 8 in
  0.7-3.9M as a plain graph (median 2.1M; the two round differently, and CartPole amplifies
  it); gamma 0.99 solved 3 of 3 in 0.7-3.8M.
- n_steps 4: seeds 0-5 solved in 0.59-2.2M env steps (graph, median 0.75M), vs 2.0-3.7M with
  n_steps 8 (seeds 0-2) and 0.59-1.4M with n_steps 2 (seeds 0-2); twice the updates per env
  step for ~5-10% fewer env steps per second. 16 was slower still. tanh (relu solved 2 of 5),
  32x32 networks (a quarter of the arithmetic of 64x64).
- compile = "graph": built in ~3 s; "xla" runs ~1.3x more steps per CPU second at 1024 envs
  but costs 10-20 s of compilation, more than the whole training here (--set compile=xla
  for long runs; a later run of the same graph loads it from the XLA cache, docs/compiled.md).
Diagnostics are off: the first one traces three more graphs (a few seconds); turn them on
with --set diagnostics=true.

    python agents/cartpole_compiled.py [rlnorm train flags, e.g. --seed 1 --n-envs 4096]
"""

import sys

from rlnorm.cli import main
from rlnorm.config import Config

CONFIG = Config(
    agent="cartpole_compiled",
    env_id="CartPole-v1",
    backend="compiled",
    compile="graph",
    n_envs=1024,
    n_steps=4,
    total_steps=10_000_000,
    optimizer="adam",
    learning_rate=3e-3,
    gamma=0.995,
    gae_lambda=0.95,
    ent_coef=0.0,
    vf_coef=0.5,
    max_grad_norm=0.5,
    normalize_advantage=True,
    norm_reward=True,
    hidden_sizes=(32, 32),
    target_return=475.0,
    log_every=65_536,
    checkpoint_every=1_000_000,
    diagnostics=False,
    obs_epsilon=1e-8,  # as agents/cartpole.py
    value_target_norm="none",  # as agents/cartpole.py
)

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]], base_config=CONFIG))
