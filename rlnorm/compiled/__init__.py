"""TF-native, vectorized classic-control environments for fully compiled training loops.

Every env is a `TFVecEnv` whose `reset`/`observe`/`step` are pure TF functions of an
`EnvState` tuple, so a rollout (policy + env + auto-reset) can run inside one
`tf.function(jit_compile=True)` `tf.while_loop`. Dynamics, spaces, rewards, termination
thresholds and time limits mirror Gymnasium's classic-control source; physics runs in float64
and, run eagerly on CPU, matches Gymnasium's own step bit-for-bit (two documented ulp-level
exceptions); XLA-compiled steps agree to ~1e-16 relative per step (see core.py and
tests/test_compiled_envs.py). Reset draws follow Gymnasium's distributions but come from TF's
stateless Philox RNG, not NumPy's stream.

    env = make_tf_env("CartPole-v1", n_envs=1024)
    state = env.reset(seed=0)
    obs = env.observe(state)                   # float32 [N, obs_dim]
    state, out = env.step(state, action)       # out.obs, out.final_obs, out.reward, ...
"""

from __future__ import annotations

from collections.abc import Callable

from rlnorm.compiled.acrobot import AcrobotDynamics
from rlnorm.compiled.cartpole import CartPoleDynamics
from rlnorm.compiled.core import Dynamics, EnvState, StepOutput, TFVecEnv
from rlnorm.compiled.mountain_car import MountainCarContinuousDynamics, MountainCarDynamics
from rlnorm.compiled.pendulum import PendulumDynamics

_REGISTRY: dict[str, Callable[[], Dynamics]] = {
    "CartPole-v1": CartPoleDynamics,
    "Acrobot-v1": AcrobotDynamics,
    "MountainCar-v0": MountainCarDynamics,
    "MountainCarContinuous-v0": MountainCarContinuousDynamics,
    "Pendulum-v1": PendulumDynamics,
}
SUPPORTED_ENV_IDS: tuple[str, ...] = tuple(_REGISTRY)


def make_tf_env(env_id: str, n_envs: int) -> TFVecEnv:
    """A batch of `n_envs` TF-native copies of Gymnasium's `env_id`.

    Raises ValueError naming the supported ids when `env_id` has no TF implementation."""
    if env_id not in _REGISTRY:
        raise ValueError(
            f"No TF-native implementation of environment {env_id!r}; "
            f"supported ids: {', '.join(SUPPORTED_ENV_IDS)}."
        )
    return TFVecEnv(_REGISTRY[env_id](), n_envs)


__all__ = [
    "SUPPORTED_ENV_IDS",
    "Dynamics",
    "EnvState",
    "StepOutput",
    "TFVecEnv",
    "make_tf_env",
]
