"""Policy and value networks: separate MLPs that read ONE shared observation normalizer.

Each network is  normalizer -> [Dense -> Norm -> activation] x L -> head  (Acme's LayerNormMLP
order). They never share weights; they share only the normalizer object, so both always see
the same normalized observation and its state is saved once in a checkpoint.

Initialization follows SB3 and CleanRL: orthogonal, gain sqrt(2) for hidden layers, 0.01 for
the policy head (near-uniform initial policy), 1.0 for the value head; biases zero. With
`ortho_init = false`, PyTorch's nn.Linear default instead (see `pytorch_default_init`).

Box policies explore with a state-independent Gaussian, or with gSDE (`use_sde`, Raffin et al.
2021): the noise is the policy's last hidden features times an exploration matrix sampled
every `sde_sample_freq` steps (`PolicyNetwork.resample_exploration`).
"""

from __future__ import annotations

import math

import gymnasium as gym
import keras
import numpy as np
import tensorflow as tf

from rlnorm.batchnorm import BATCHNORM_VARIANTS
from rlnorm.config import NORMS
from rlnorm.distributions import Categorical, DiagGaussian, StateDependentGaussian
from rlnorm.normalizer import ObservationNormalizer
from rlnorm.popart import PopArt

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


def pytorch_default_init(fan_in: int, seed: int):
    """(kernel, bias) initializers of PyTorch's nn.Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    for both. SB3's `ortho_init=False` leaves PyTorch's default, not Keras' glorot_uniform
    (U(+-sqrt(6 / (fan_in + fan_out)))), so this is what reproduces rl-zoo's gSDE recipes.
    VarianceScaling(1/3, fan_in, uniform) is U(+-sqrt(3 * (1/3) / fan_in)): the same bound."""
    bound = 1.0 / math.sqrt(fan_in)
    kernel = keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform", seed=seed)
    return kernel, keras.initializers.RandomUniform(-bound, bound, seed=seed + 50)


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
        ortho_init: bool = True,
    ):
        super().__init__(name=name)
        self.normalizer = normalizer
        self.norm = norm
        self.activation_name = activation
        self.activation = {"tanh": tf.tanh, "relu": tf.nn.relu}[activation]
        dense_layers, norm_layers = [], []
        fan_in = normalizer.obs_dim
        for i, width in enumerate(hidden_sizes):
            if ortho_init:
                init = keras.initializers.Orthogonal(gain=math.sqrt(2.0), seed=seed + i)
                inits = {"kernel_initializer": init}
            else:
                kernel, bias = pytorch_default_init(fan_in, seed + i)
                inits = {"kernel_initializer": kernel, "bias_initializer": bias}
            dense_layers.append(keras.layers.Dense(width, name=f"{name}_dense{i}", **inits))
            norm_layers.append(make_norm_layer(norm, f"{name}_{norm}norm{i}", bn_momentum))
            fan_in = width
        self.dense_layers = dense_layers
        self.norm_layers = norm_layers
        if ortho_init:
            init = keras.initializers.Orthogonal(gain=out_gain, seed=seed + 99)
            inits = {"kernel_initializer": init}
        else:
            kernel, bias = pytorch_default_init(fan_in, seed + 99)
            inits = {"kernel_initializer": kernel, "bias_initializer": bias}
        self.head = keras.layers.Dense(out_dim, name=f"{name}_head", **inits)
        self.latent_dim = fan_in  # width of the last hidden layer (the head's input)
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
        """The head's output float32 [B, out]; arguments as `features`."""
        return self.head(self.features(raw_obs, training, record, mask, normalized_obs))

    def features(
        self,
        raw_obs,
        training: bool = False,
        record: dict | None = None,
        mask=None,
        normalized_obs=None,
    ) -> tf.Tensor:
        """The last hidden layer's output float32 [B, latent_dim] (the head's input).

        `training` selects BatchNorm's batch statistics (the update) or moving statistics
        (acting, bootstrapping, evaluation). If `record` is a dict, it is filled with
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
        return x


class PolicyNetwork(Network):
    """Network whose head parametrizes the action distribution.

    Box actions: `log_std` is the Gaussian's state-independent log-std [act_dim], or with
    `use_sde` gSDE's log-std of the exploration weights, [latent_dim, act_dim] (`full_std`)
    or [latent_dim, 1]. gSDE state (tf.Variables, checkpointed with the policy, outside
    `trainable_weights`/`non_trainable_weights`, which the rollout reads once):
    `exploration_matrices` [n_envs, latent_dim, act_dim] (one per env, for acting batches of
    n_envs rows), `exploration_mat` [latent_dim, act_dim] (other batch sizes, as SB3) and
    `sde_step` (act steps so far: the position in the rollout)."""

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
        ortho_init=True,
        use_sde=False,
        full_std=True,
        n_envs=1,
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
            ortho_init=ortho_init,
        )
        self.use_sde = bool(use_sde) and not self.discrete  # gSDE is for Box actions only
        self.full_std = bool(full_std)
        if self.use_sde:
            shape = [self.latent_dim, out_dim if self.full_std else 1]
            self.log_std = keras.Variable(
                np.full(shape, log_std_init, np.float32), trainable=True, name="log_std"
            )
            mats = tf.zeros([n_envs, self.latent_dim, out_dim])
            self.exploration_matrices = tf.Variable(mats, trainable=False, name="exploration")
            self.exploration_mat = tf.Variable(mats[0], trainable=False, name="exploration_mat")
            self.sde_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="sde_step")
        elif not self.discrete:
            self.log_std = keras.Variable(
                np.full([out_dim], log_std_init, np.float32), trainable=True, name="log_std"
            )

    def distribution(self, raw_obs, *args, **kwargs):
        """The action distribution at `raw_obs`; other arguments as `Network.__call__`."""
        if self.use_sde:
            latent = self.features(raw_obs, *args, **kwargs)
            return StateDependentGaussian(
                self.head(latent),
                latent,
                tf.convert_to_tensor(self.log_std),
                self.full_std,
                self.exploration_matrices,
                self.exploration_mat,
            )
        out = self(raw_obs, *args, **kwargs)
        if self.discrete:
            return Categorical(out)
        return DiagGaussian(out, tf.convert_to_tensor(self.log_std))

    def resample_exploration(self, rng: tf.random.Generator, n_steps: int, sample_freq: int):
        """gSDE, before each act step: new exploration matrices at the rollout's first step
        and, with sample_freq > 0, at every step t of it with t % sample_freq == 0 (SB3's
        `collect_rollouts`); weights ~ N(0, std^2) with std = exp(log_std). Counting act steps
        here keeps both env adapters unchanged: a rollout is n_steps act steps."""
        t = self.sde_step % n_steps
        due = tf.equal(t, 0)
        if sample_freq > 0:
            due = tf.logical_or(due, tf.equal(t % sample_freq, 0))

        def sample():
            std = StateDependentGaussian.weights_std(self.log_std, self.full_std, self.head.units)
            shape = self.exploration_matrices.shape
            self.exploration_matrices.assign(rng.normal(shape) * std)
            self.exploration_mat.assign(rng.normal(shape[1:]) * std)
            return tf.constant(True)

        tf.cond(due, sample, lambda: tf.constant(False))
        self.sde_step.assign_add(1)


class ValueNetwork(Network):
    """Network whose single output is V(s); `value` returns float32 [B].

    With PopArt (`popart`, rlnorm.popart) the head predicts NORMALIZED values: `head_values`
    is the head's output, `value` the unnormalized V(s) = std * head + mean."""

    def __init__(
        self,
        normalizer,
        hidden_sizes=(64, 64),
        activation="tanh",
        norm="none",
        seed=0,
        bn_momentum=None,
        ortho_init=True,
        popart: bool = False,
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
            ortho_init=ortho_init,
        )
        self.popart = PopArt() if popart else None

    @property
    def non_trainable_weights(self) -> list:
        # PopArt's statistics change with each update, as BatchNorm's do: whoever saves and
        # restores the network's state around a pass (the diagnostics) restores them too.
        extra = self.popart.variables_list if self.popart is not None else []
        return super().non_trainable_weights + extra

    def head_values(self, raw_obs, *args, **kwargs) -> tf.Tensor:
        """The head's output float32 [B] (normalized under PopArt); arguments as `__call__`."""
        return tf.squeeze(self(raw_obs, *args, **kwargs), axis=-1)

    def value(self, raw_obs, *args, **kwargs) -> tf.Tensor:
        """V(raw_obs) float32 [B]; other arguments as `Network.__call__`."""
        out = self.head_values(raw_obs, *args, **kwargs)
        return out if self.popart is None else self.popart.denormalize(out)


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
        ortho_init=config.ortho_init,
        use_sde=config.use_sde,
        full_std=config.full_std,
        n_envs=config.n_envs,
    )
    value = ValueNetwork(
        normalizer,
        config.hidden_sizes,
        config.activation,
        config.value_norm,
        seed=config.seed * 1000 + 500,
        bn_momentum=config.bn_momentum,
        ortho_init=config.ortho_init,
        popart=config.value_target_norm == "popart",
    )
    return normalizer, policy, value
