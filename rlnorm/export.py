"""Export a trained policy as a SavedModel: RAW observation in, action out.

The normalizer lives inside the exported module (frozen), so a consumer needs nothing but
TensorFlow: `tf.saved_model.load(path).signatures["serving_default"](observation=obs)`.
Signatures: `serving_default` -> {"action": deterministic action (mode; Box actions clipped
to the space)}, and `sample` -> {"action": a sampled action} for stochastic rollouts.
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import tensorflow as tf

from rlnorm.evaluate import load_agent


class ExportedPolicy(tf.Module):
    def __init__(self, agent):
        super().__init__(name="exported_policy")
        self.normalizer = agent.normalizer
        self.policy = agent.policy
        space = agent.action_space
        self.box = isinstance(space, gym.spaces.Box)
        if self.box:
            self.low = tf.constant(np.asarray(space.low, np.float32))
            self.high = tf.constant(np.asarray(space.high, np.float32))
        spec = agent.obs_spec
        # Its own generator, saved with the module: the global one is not tracked by the
        # SavedModel, and cannot even be created once op determinism is on (train() turns it on).
        self.rng = tf.random.Generator.from_seed(0)

        @tf.function(input_signature=[spec])
        def serve(observation):
            observation = self._check(observation)
            return {
                "action": self._clip(self.policy.distribution(observation, training=False).mode())
            }

        @tf.function(input_signature=[spec])
        def sample(observation):
            observation = self._check(observation)
            dist = self.policy.distribution(observation, training=False)
            return {"action": self._clip(dist.sample(self.rng))}

        self.serve, self.sample = serve, sample

    def _check(self, observation):
        """A NaN/Inf observation is an error, not a NaN action (integer ones are always finite)."""
        if not observation.dtype.is_floating:
            return observation
        return tf.debugging.assert_all_finite(
            observation, "rlnorm exported policy: the observation holds NaN or Inf"
        )

    def _clip(self, action):
        return tf.clip_by_value(action, self.low, self.high) if self.box else action


def export(run_dir: str | Path, out_dir: str | Path) -> Path:
    """Export the run's latest checkpoint (read-only: the run is not written)."""
    _, agent, _ = load_agent(run_dir)
    return export_agent(agent, out_dir)


def export_agent(agent, out_dir: str | Path) -> Path:
    """`agent`'s policy, with its normalizer frozen inside, as a SavedModel at `out_dir`."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"Cannot export to {str(out_dir)!r}: it is a file, not a folder.")
    module = ExportedPolicy(agent)
    tf.saved_model.save(
        module, str(out_dir), signatures={"serving_default": module.serve, "sample": module.sample}
    )
    return out_dir
