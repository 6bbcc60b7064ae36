"""The optimizers: RMSprop in PyTorch's form (SB3's A2C default) and Adam, each stepping a whole
network's weights as ONE flat vector, with a step that can be skipped without a branch.

Why not Keras' own RMSprop/Adam: they update variable by variable (`update_step`), a dozen graph
ops per weight (reads of the slot and of the learning rate, the arithmetic, two assigns), and
the skip of a NaN/Inf step needed a `tf.cond` around both optimizers: about a quarter of the
CartPole update graph's nodes, and of its first call's tracing (benchmarks/throughput.py).
Here the gradients of a network are concatenated and the arithmetic runs once on the flat
vector: the same float32 operations on each element in the same order, so the same bits as
per variable; the skip is a select. Neither Keras nor TensorFlow offers a multi-tensor
("foreach") optimizer.

They stay Keras optimizers, so the learning rate, `iterations` and checkpoint tracking are
Keras': `build(variables)` once, then `apply(grads, variables, applied)`. A schedule
(`rlnorm.schedules`) multiplies the rate by a factor of `iterations`, in the graph, so the
checkpoint holds the same variables whatever the schedule. The slots are flat float32 vectors over the weights in `build`'s order. Only public
Keras API: `apply` keeps Keras' signature (plus `applied`) but replaces its per-variable loop,
so Keras' clipnorm, EMA and gradient accumulation, which it would run, are not offered.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from rlnorm.schedules import lr_factor


class FlatOptimizer(keras.optimizers.Optimizer):
    """Shared machinery: flatten, one `_flat_step`, select, split, assign."""

    slot_names: tuple[str, ...] = ()
    lr_factor = None  # iterations -> float32 multiplier of the learning rate (rlnorm.schedules)

    def scheduled_learning_rate(self) -> tf.Tensor:
        """The rate the next step uses: learning_rate, times the schedule's factor if any."""
        lr = tf.cast(self.learning_rate, tf.float32)
        if self.lr_factor is None:
            return lr
        return lr * self.lr_factor(self.iterations)

    def build(self, variables):
        super().build(variables)
        self._sizes = [int(np.prod(v.shape)) for v in variables]
        size = sum(self._sizes)
        self.slots = [self.add_variable((size,), name=name) for name in self.slot_names]

    def apply(self, grads, trainable_variables=None, applied=None):
        """One step on `trainable_variables`, the variables of `build` in the same order
        (required: given explicitly, as `apply_gradients` does).

        grads: one per variable (None: that weight got no gradient, treated as zeros).
        applied: optional bool scalar tensor; False leaves the weights, the slots and
        `iterations` exactly as they were, even where the gradients are NaN or Inf."""
        if trainable_variables is None:
            raise ValueError(f"{self.name}.apply needs the variables, in `build`'s order.")
        variables = trainable_variables
        if not self.built:
            self.build(variables)
        flat_grad = tf.concat(
            [
                tf.zeros([n]) if g is None else tf.reshape(tf.cast(g, tf.float32), [-1])
                for g, n in zip(grads, self._sizes, strict=True)
            ],
            axis=0,
        )
        lr = self.scheduled_learning_rate()
        old = [tf.convert_to_tensor(s) for s in self.slots]
        new, delta = self._flat_step(flat_grad, old, lr)
        if applied is not None:
            # A select, not a tf.cond: NaN in the unused branch never reaches a variable.
            new = [tf.where(applied, n, o) for n, o in zip(new, old, strict=True)]
            delta = tf.where(applied, delta, 0.0)
        # The optimizer's assign methods write the backend variable in one op (a Keras
        # Variable's own `assign_sub` reads it, subtracts, and assigns: three).
        for slot, value in zip(self.slots, new, strict=True):
            self.assign(slot, value)
        for variable, d in zip(variables, tf.split(delta, self._sizes), strict=True):
            self.assign_sub(variable, tf.reshape(d, variable.shape))
        step = 1 if applied is None else tf.cast(applied, self.iterations.dtype)
        self.assign_add(self.iterations, step)

    def _flat_step(self, grad, slots, lr):
        """(new slot values, the step to subtract) from the flat gradient [P]."""
        raise NotImplementedError


class RMSprop(FlatOptimizer):
    """RMSprop in PyTorch's form, which SB3's A2C uses: v = rho*v + (1-rho)*g^2 and
    w -= lr * g / (sqrt(v) + eps). Keras' RMSprop divides by sqrt(v + eps) instead, which with
    eps = 1e-5 damps small gradients far more (sqrt(1e-5) ~ 3e-3 vs 1e-5). `rho` is
    PyTorch's `alpha` (SB3: 0.99); `epsilon` keeps its PyTorch meaning (SB3: 1e-5)."""

    slot_names = ("velocity",)

    def __init__(self, learning_rate, rho=0.9, epsilon=1e-7, name="rmsprop"):
        super().__init__(learning_rate=learning_rate, name=name)
        self.rho, self.epsilon = rho, epsilon

    def _flat_step(self, grad, slots, lr):
        (velocity,) = slots
        velocity = self.rho * velocity + (1.0 - self.rho) * tf.square(grad)
        return [velocity], lr * grad / (tf.sqrt(velocity) + self.epsilon)

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "epsilon": self.epsilon}


class Adam(FlatOptimizer):
    """Adam as Keras writes it (Kingma & Ba, section 2's efficient form): m and v moving
    averages, and w -= lr * sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + eps)."""

    slot_names = ("momentum", "velocity")

    def __init__(self, learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-7, name="adam"):
        super().__init__(learning_rate=learning_rate, name=name)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon

    def _flat_step(self, grad, slots, lr):
        m, v = slots
        t = tf.cast(self.iterations + 1, tf.float32)
        alpha = lr * tf.sqrt(1 - self.beta_2**t) / (1 - self.beta_1**t)
        m = m + (grad - m) * (1 - self.beta_1)
        v = v + (tf.square(grad) - v) * (1 - self.beta_2)
        return [m, v], m * alpha / (tf.sqrt(v) + self.epsilon)

    def get_config(self):
        config = {"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}
        return {**super().get_config(), **config}


def make_optimizer(config, name: str) -> FlatOptimizer:
    if config.optimizer == "rmsprop":
        optimizer = RMSprop(
            learning_rate=config.learning_rate,
            rho=config.rms_decay,
            epsilon=config.optimizer_eps,
            name=name,
        )
    else:
        optimizer = Adam(
            learning_rate=config.learning_rate, epsilon=config.optimizer_eps, name=name
        )
    optimizer.lr_factor = lr_factor(config)
    return optimizer
