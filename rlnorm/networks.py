"""Policy and value networks: separate MLPs that read ONE shared observation normalizer.

Each network is  normalizer -> [Dense -> Norm -> activation] x L -> head  (Acme's LayerNormMLP
order). They never share weights; they share only the normalizer object, so both always see
the same normalized observation and its state is saved once in a checkpoint.

Initialization follows SB3 and CleanRL: orthogonal, gain sqrt(2) for hidden layers, 0.01 for
the policy head (near-uniform initial policy), 1.0 for the value head; biases zero.
"""

from __future__ import annotations

import math

import gymnasium as gym
import keras
import numpy as np
import tensorflow as tf

from rlnorm.batchnorm import BATCHNORM_VARIANTS
from rlnorm.config import NORMS
from rlnorm.distributions import Categorical, DiagGaussian
from rlnorm.normalizer import ObservationNormalizer

BATCHNORM_KINDS = ("batch", *BATCHNORM_VARIANTS)  # the norms that keep batch statistics


# One entry per name in config.NORMS, the only list of norm names (asserted below).
NORM_LAYERS = {
    "none": lambda momentum, name: None,
    "layer": lambda momentum, name: keras.layers.LayerNormalization(name=name),
    "batch": lambda momentum, name: keras.layers.BatchNormalization(momentum=momentum, name=name),
    **{
        kind: lambda momentum, name, cls=cls: cls(momentum=momentum, name=name)
        for kind, cls in BATCHNORM_VARIANTS.items()
    },
}
assert tuple(NORM_LAYERS) == NORMS, (tuple(NORM_LAYERS), NORMS)


# bn_momentum = None picks the variant's own: batch_renorm solved 3/3 CartPole seeds at 0.999
# and 1/3 at Keras's 0.99 (benchmarks/results/batchnorm.md); batch and batch_moving keep 0.99.
DEFAULT_BN_MOMENTUM = {"batch": 0.99, "batch_renorm": 0.999, "batch_moving": 0.99}


def make_norm_layer(norm: str, name: str, momentum: float | None = None):
    """Keras layer for `norm` (a name in config.NORMS), or None for "none". `momentum` None:
    the BatchNorm kind's default (DEFAULT_BN_MOMENTUM)."""
    if norm not in NORM_LAYERS:
        raise ValueError(f"Unknown norm {norm!r}; allowed: {', '.join(NORMS)}.")
    if momentum is None:
        momentum = DEFAULT_BN_MOMENTUM.get(norm, 0.99)
    return NORM_LAYERS[norm](momentum, name)


def check_action_space(space: gym.Space) -> None:
    if isinstance(space, gym.spaces.Discrete):
        return
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
            return  # unbounded Box: fine, nothing to clip
        return
    hint = {
        gym.spaces.MultiDiscrete: "flatten it to one Discrete (e.g. a custom ActionWrapper over "
        "the product of choices)",
        gym.spaces.MultiBinary: "map it to a Discrete over the 2^n combinations with an ActionWrapper",
    }.get(type(space), "use a Discrete or a 1-D Box action space (an ActionWrapper can map to it)")
    raise ValueError(
        f"Action space {space} ({type(space).__name__}) is not supported: rlnorm's policy heads "
        f"are Categorical (Discrete) and diagonal Gaussian (1-D Box). Fix: {hint}."
    )


class Network(tf.Module):
    """An MLP on normalized observations. Shapes: raw_obs [B, *obs_shape] -> out float32 [B, out].

    `layers_` lists (dense, norm_or_None) per hidden layer; `head` is the output Dense. For a
    Gaussian policy `log_std` holds the state-independent log standard deviation [act_dim].
    """

    def __init__(
        self,
        normalizer: ObservationNormalizer,
        hidden_sizes,
        activation: str,
        norm: str,
        out_dim: int,
        out_gain: float,
        seed: int,
        name: str,
        bn_momentum: float | None = None,
    ):
        super().__init__(name=name)
        self.normalizer = normalizer
        self.norm = norm
        self.activation_name = activation
        self.activation = {"tanh": tf.tanh, "relu": tf.nn.relu}[activation]
        dense_layers, norm_layers = [], []
        for i, width in enumerate(hidden_sizes):
            init = keras.initializers.Orthogonal(gain=math.sqrt(2.0), seed=seed + i)
            dense_layers.append(
                keras.layers.Dense(width, kernel_initializer=init, name=f"{name}_dense{i}")
            )
            norm_layers.append(make_norm_layer(norm, f"{name}_{norm}norm{i}", bn_momentum))
        self.dense_layers = dense_layers
        self.norm_layers = norm_layers
        self.head = keras.layers.Dense(
            out_dim,
            kernel_initializer=keras.initializers.Orthogonal(gain=out_gain, seed=seed + 99),
            name=f"{name}_head",
        )
        self.log_std = None
        # Build every layer now so variables exist before tracing and checkpoint restore.
        width = normalizer.obs_dim
        for dense, norm_layer in zip(self.dense_layers, self.norm_layers, strict=True):
            dense.build((None, width))
            width = dense.units
            if norm_layer is not None:
                norm_layer.build((None, width))
        self.head.build((None, width))

    @property
    def keras_layers(self) -> list:
        layers = [
            layer
            for pair in zip(self.dense_layers, self.norm_layers, strict=True)
            for layer in pair
            if layer is not None
        ]
        return [*layers, self.head]

    @property
    def trainable_weights(self) -> list:
        weights = [w for layer in self.keras_layers for w in layer.trainable_weights]
        return weights + ([self.log_std] if self.log_std is not None else [])

    @property
    def non_trainable_weights(self) -> list:
        return [w for layer in self.keras_layers for w in layer.non_trainable_weights]

    def __call__(
        self,
        raw_obs,
        training: bool = False,
        record: dict | None = None,
        mask=None,
        normalized_obs=None,
    ) -> tf.Tensor:
        """Forward pass. `training` selects BatchNorm's batch statistics (the update) or moving
        statistics (acting, bootstrapping, evaluation). If `record` is a dict, it is filled with
        the hidden activations (`layer{i}/pre_norm`, `layer{i}/post_norm`, `layer{i}/out`) and the
        normalized input, for the diagnostics (no cost when None). `mask` (bool [B]) keeps
        masked rows out of the BatchNorm norms' batch statistics in training mode.
        `normalized_obs`, if given, is `self.normalizer(raw_obs)` already computed: the agent
        normalizes once for both networks (a dozen graph ops fewer per env step)."""
        x = self.normalizer.normalize(raw_obs) if normalized_obs is None else normalized_obs
        if record is not None:
            record["input"] = x
        for i, (dense, norm_layer) in enumerate(
            zip(self.dense_layers, self.norm_layers, strict=True)
        ):
            x = dense(x)
            if record is not None:
                record[f"layer{i}/pre_norm"] = x
            if self.norm in BATCHNORM_KINDS and mask is not None:
                # Masked steps (NEXT_STEP reset steps, dropped steps) stay out of the batch
                # statistics and the moving averages.
                x = norm_layer(x, training=training, mask=mask)
            elif norm_layer is not None:
                x = norm_layer(x, training=training)
            if norm_layer is not None and record is not None:
                record[f"layer{i}/post_norm"] = x
            x = self.activation(x)
            if record is not None:
                record[f"layer{i}/out"] = x
        return self.head(x)


class PolicyNetwork(Network):
    """Network whose head parametrizes the action distribution."""

    def __init__(
        self,
        normalizer,
        action_space: gym.Space,
        hidden_sizes=(64, 64),
        activation="tanh",
        norm="none",
        seed=0,
        log_std_init=0.0,
        bn_momentum=None,
    ):
        check_action_space(action_space)
        self.action_space = action_space
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        out_dim = int(action_space.n) if self.discrete else int(action_space.shape[0])
        super().__init__(
            normalizer,
            hidden_sizes,
            activation,
            norm,
            out_dim,
            out_gain=0.01,
            seed=seed,
            name="policy",
            bn_momentum=bn_momentum,
        )
        if not self.discrete:
            self.log_std = keras.Variable(
                np.full([out_dim], log_std_init, np.float32), trainable=True, name="log_std"
            )

    def distribution(self, raw_obs, *args, **kwargs):
        """The action distribution at `raw_obs`; other arguments as `Network.__call__`."""
        out = self(raw_obs, *args, **kwargs)
        if self.discrete:
            return Categorical(out)
        return DiagGaussian(out, tf.convert_to_tensor(self.log_std))


class ValueNetwork(Network):
    """Network whose single output is V(s); `value` returns float32 [B]."""

    def __init__(
        self,
        normalizer,
        hidden_sizes=(64, 64),
        activation="tanh",
        norm="none",
        seed=0,
        bn_momentum=None,
    ):
        super().__init__(
            normalizer,
            hidden_sizes,
            activation,
            norm,
            1,
            out_gain=1.0,
            seed=seed,
            name="value",
            bn_momentum=bn_momentum,
        )

    def value(self, raw_obs, *args, **kwargs) -> tf.Tensor:
        """V(raw_obs) float32 [B]; other arguments as `Network.__call__`."""
        return tf.squeeze(self(raw_obs, *args, **kwargs), axis=-1)


def build_networks(config, observation_space: gym.Space, action_space: gym.Space):
    """ONE normalizer and the two networks that share it, from a `Config`."""
    normalizer = ObservationNormalizer(
        observation_space, epsilon=config.obs_epsilon, clip=config.obs_clip, enabled=config.norm_obs
    )
    policy = PolicyNetwork(
        normalizer,
        action_space,
        config.hidden_sizes,
        config.activation,
        config.policy_norm,
        seed=config.seed * 1000,
        log_std_init=config.log_std_init,
        bn_momentum=config.bn_momentum,
    )
    value = ValueNetwork(
        normalizer,
        config.hidden_sizes,
        config.activation,
        config.value_norm,
        seed=config.seed * 1000 + 500,
        bn_momentum=config.bn_momentum,
    )
    return normalizer, policy, value
