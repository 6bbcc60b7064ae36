"""K seeds of one config trained in ONE compiled graph (TF-native envs only).

Each seed is exactly the agent `rlnorm.loop.train` would train alone with that seed: the same
initial weights (the networks' seeded initializers), the same env seeds and reset draws, the
same action-sampling Generator, and `rlnorm.compiled.loop`'s order of operations:

    rollout -> (reward scaler merge) -> GAE targets -> gradient step -> normalizer merge

Everything gets a leading seed axis K: weights as one flat vector per network and seed
[K, P] (`rlnorm.optimizers`' layout, so the optimizers' own elementwise step runs on it),
optimizer slots [K, P], env physics [K, N, k], episode statistics [K, ...]; the networks run as
batched matmuls. What has no batched form runs as a Python loop over K inside the graph: the
stateful Generators, the Philox reset draws and the last-100 episode buffers (K small ops per
step or update). A seed stops (its state is frozen by selects) where its own run would stop;
`keep` moves the running seeds into a smaller graph, so stopped ones cost nothing.

Same maths, not the same bits: a batched matmul and a reduction over one axis of [K, M] sum in
another order than the single run's 2-D matmul and full reduction (float32 rounding, ~1e-7
relative per update); CartPole amplifies such differences over many updates, so long runs
drift apart as two XLA/graph runs of one seed do (docs/regression.md).
"""

from __future__ import annotations

from typing import NamedTuple

import gymnasium as gym
import tensorflow as tf

from rlnorm import config as config_lib
from rlnorm.a2c import compute_gae, next_state_values
from rlnorm.agent import compile_function
from rlnorm.compiled.loop import RECENT, make_compiled_env, push_recent
from rlnorm.compiled.seed_state import (
    Optimizer,
    SeedStatistics,
    clip_scale,
    initial_weights,
    layer_shapes,
    masked_mean,
    mlp,
)
from rlnorm.distributions import LOG_2PI

# (key, allowed values): anything else trains seed by seed (regress's --no-seed-batch path).
SUPPORTED = {
    "backend": ("compiled",),
    "policy_norm": ("none",),
    "value_norm": ("none",),
    "value_target_norm": ("none",),
    "use_sde": (False,),
    "diagnostics": (False,),
}


def check_seed_batch(config) -> None:
    """Raise ConfigError naming the first key the seed-batched trainer does not support."""
    for key, allowed in SUPPORTED.items():
        if getattr(config, key) not in allowed:
            raise config_lib.ConfigError(
                f"{key} = {getattr(config, key)!r}: the seed-batched trainer "
                f"(rlnorm.compiled.seeds) supports only {key} in {allowed}; train the seeds "
                "one by one instead (`rlnorm regress ... --no-seed-batch`, which regress also "
                "falls back to by itself)."
            )


class Carry(NamedTuple):
    """`rlnorm.compiled.loop.Carry` with a leading seed axis. K seeds, N envs each."""

    physics: tf.Tensor  # float64 [K, N, k]
    elapsed: tf.Tensor  # int32 [K, N]
    key: tf.Tensor  # int64 [K, 2]
    obs: tf.Tensor  # float32 [K, N, obs_dim]
    ep_return: tf.Tensor  # float64 [K, N]
    ep_length: tf.Tensor  # int32 [K, N]
    disc_return: tf.Tensor  # float64 [K, N]
    recent: tf.Tensor  # float64 [K, 100, 2]
    episodes: tf.Tensor  # int64 [K]


class SeedBatchLoop:
    """The K-seed compiled update: `run(carry, n)` runs n updates of every active seed."""

    def __init__(self, config, seeds: list[int]):
        check_seed_batch(config)
        self.config, self.seeds, k = config, list(seeds), len(seeds)
        self.env = env = make_compiled_env(config)
        self.n_envs, self.n_steps = env.n_envs, config.n_steps
        space = env.action_space
        self.discrete = isinstance(space, gym.spaces.Discrete)
        self.act_dim = int(space.n) if self.discrete else int(space.shape[0])
        self.clip = None if self.discrete else (space.low, space.high)
        d, hidden = env.obs_dim, config.hidden_sizes
        self.activation = {"tanh": tf.tanh, "relu": tf.nn.relu}[config.activation]
        self.policy_shapes = layer_shapes(d, hidden, self.act_dim)
        self.value_shapes = layer_shapes(d, hidden, 1)

        def stacked(base, shapes, gain, extra=()):
            rows = [initial_weights(config, s * 1000 + base, shapes, gain) for s in seeds]
            if extra:  # a Gaussian policy's log_std, last in its trainable weights
                rows = [tf.concat([r, tf.constant(extra, tf.float32)], 0) for r in rows]
            return tf.stack(rows)

        log_std = () if self.discrete else (config.log_std_init,) * self.act_dim
        self.policy = tf.Variable(stacked(0, self.policy_shapes, 0.01, log_std), name="policy")
        self.value = tf.Variable(stacked(500, self.value_shapes, 1.0), name="value")
        self.policy_opt = Optimizer(config, k, self.policy.shape[1], "policy")
        self.value_opt = Optimizer(config, k, self.value.shape[1], "value")
        # Per seed, as alone: its normalizer, reward scaler and action-sampling Generator.
        self.obs_stats = SeedStatistics(k, d, config.obs_epsilon, "observation_normalizer")
        # RewardScaler's statistics of the discounted return (its epsilon: 1e-8).
        self.return_stats = SeedStatistics(k, 1, 1e-8, "reward_return_stats")
        self.rngs = [tf.random.Generator.from_seed(s) for s in seeds]
        self.active = tf.Variable(tf.ones([k], tf.bool), trainable=False, name="active")
        self.failed = tf.Variable(tf.zeros([k], tf.bool), trainable=False, name="nonfinite")
        spec = tf.nest.map_structure(
            lambda x: tf.TensorSpec(x.shape, x.dtype), self.initial_carry()
        )
        plain = tf.autograph.experimental.do_not_convert
        signature = [spec, tf.TensorSpec([], tf.int32)]
        self.run = compile_function(plain(self._run), signature, config.compile)

    def state_variables(self) -> list[tf.Variable]:
        """Every variable with a leading seed axis (the Generators aside)."""
        opts = (self.policy_opt, self.value_opt)
        stats = (self.obs_stats, self.return_stats)
        return [
            self.policy,
            self.value,
            *(v for o in opts for v in (*o.slots, o.counter)),
            *(v for st in stats for v in (st.count, st.mean, st.var)),
            self.active,
            self.failed,
        ]

    def keep(self, rows: list[int], carry: Carry) -> tuple[SeedBatchLoop, Carry]:
        """A loop of only the seeds at `rows`, in the state they are in here (a new graph,
        traced at its first call), and their carry."""
        loop = SeedBatchLoop(self.config, [self.seeds[i] for i in rows])
        index = tf.constant(rows)
        for mine, theirs in zip(loop.state_variables(), self.state_variables(), strict=True):
            mine.assign(tf.gather(theirs, index))
        for i, rng in zip(rows, loop.rngs, strict=True):
            rng.state.assign(self.rngs[i].state)
        return loop, tf.nest.map_structure(lambda x: tf.gather(x, index), carry)

    def initial_carry(self) -> Carry:
        states = [self.env.reset(s) for s in self.seeds]
        physics = tf.stack([s.physics for s in states])
        k, n = physics.shape[:2]
        return Carry(
            physics=physics,
            elapsed=tf.stack([s.elapsed for s in states]),
            key=tf.stack([s.key for s in states]),
            obs=tf.stack([self.env.observe(s) for s in states]),
            ep_return=tf.zeros([k, n], tf.float64),
            ep_length=tf.zeros([k, n], tf.int32),
            disc_return=tf.zeros([k, n], tf.float64),
            recent=tf.zeros([k, RECENT, 2], tf.float64),
            episodes=tf.zeros([k], tf.int64),
        )

    # -- the networks ---------------------------------------------------------------------------
    def normalize(self, obs, stats):
        """`ObservationNormalizer.normalize` per seed: obs float32 [K, B, d] -> float32."""
        x = tf.cast(obs, tf.float64)
        if not self.config.norm_obs:
            return tf.cast(x, tf.float32)
        mean, inv_std = stats
        z = (x - mean[:, None, :]) * inv_std[:, None, :]
        clip = self.config.obs_clip
        return tf.cast(tf.clip_by_value(z, -clip, clip), tf.float32)

    def statistics(self):
        """Each seed's (mean, 1/std), stacked: read once per update (they change after it)."""
        stats = self.obs_stats
        return stats.mean.read_value(), tf.math.rsqrt(stats.var + stats.epsilon)

    def head(self, policy, x):
        """(logits or Gaussian mean [K, B, a], log_std [K, 1, a] or None)."""
        if self.discrete:
            return mlp(policy, self.policy_shapes, x, self.activation), None
        weights, log_std = policy[:, : -self.act_dim], policy[:, -self.act_dim :]
        return mlp(weights, self.policy_shapes, x, self.activation), log_std[:, None, :]

    def values(self, value, x):
        return tf.squeeze(mlp(value, self.value_shapes, x, self.activation), -1)

    def sample(self, out, log_std):
        """Each seed's draw from its own Generator, exactly what `A2CAgent.sample` draws."""
        n = out.shape[1]
        if self.discrete:  # `Categorical.sample`: Gumbel-max
            u = tf.stack([g.uniform([n, self.act_dim], 1e-20, 1.0) for g in self.rngs])
            return tf.argmax(out - tf.math.log(-tf.math.log(u)), -1, output_type=tf.int32)
        noise = tf.stack([g.normal([n, self.act_dim]) for g in self.rngs])
        return out + tf.exp(log_std) * noise  # `DiagGaussian.sample`

    def log_prob_entropy(self, out, log_std, actions):
        if self.discrete:  # `Categorical`
            logp_all = tf.nn.log_softmax(out)
            log_prob = tf.gather(logp_all, actions, axis=2, batch_dims=2)
            return log_prob, -tf.reduce_sum(tf.exp(logp_all) * logp_all, axis=-1)
        log_std = tf.broadcast_to(log_std, tf.shape(out))  # `DiagGaussian`
        z = (actions - out) * tf.exp(-log_std)
        log_prob = tf.reduce_sum(-0.5 * tf.square(z) - log_std - 0.5 * LOG_2PI, axis=-1)
        return log_prob, tf.reduce_sum(log_std + 0.5 * (1.0 + LOG_2PI), axis=-1)

    # -- the env --------------------------------------------------------------------------------
    def env_step(self, physics, elapsed, key, action):
        """`TFVecEnv.step` for K seeds: one transition over all K*N rows (row-wise physics),
        then each seed's own reset draw from its own key."""
        env, dyn = self.env, self.env.dynamics
        k, n, s = physics.shape
        if not self.discrete:
            action = tf.clip_by_value(action, *self.clip)  # the ClipAction wrapper
        flat_action = tf.reshape(action, [k * n, *action.shape[2:]])
        new, reward, terminated = dyn.transition(
            tf.reshape(physics, [k * n, s]), flat_action, tf.reshape(elapsed, [-1])
        )
        new, reward = tf.reshape(new, [k, n, s]), tf.reshape(reward, [k, n])
        terminated = tf.reshape(terminated, [k, n])
        elapsed = elapsed + 1
        truncated = elapsed >= env.max_episode_steps
        done = terminated | truncated
        final_obs = tf.reshape(dyn.observe(tf.reshape(new, [k * n, s])), [k, n, -1])
        # TFVecEnv's own reset draw, per seed (its key and its done rows).
        draws = [env._draw_resets(key[i], done[i]) for i in range(k)]
        key = tf.stack([d[0] for d in draws])
        new = tf.where(done[..., None], tf.stack([d[1] for d in draws]), new)
        elapsed = tf.where(done, tf.zeros_like(elapsed), elapsed)
        obs = tf.reshape(dyn.observe(tf.reshape(new, [k * n, s])), [k, n, -1])
        reward = tf.cast(reward, tf.float32)
        return new, elapsed, key, obs, final_obs, reward, terminated, truncated

    # -- one update -----------------------------------------------------------------------------
    def _update(self, carry: Carry) -> Carry:
        c, T, active = self.config, self.n_steps, self.active.read_value()
        k, n = carry.ep_return.shape
        policy, value = self.policy.read_value(), self.value.read_value()
        stats = self.statistics()

        def body(t, state, store):
            physics, elapsed, key, obs, ep_return, ep_length, disc = state
            x = self.normalize(obs, stats)
            out, log_std = self.head(policy, x)
            action = self.sample(out, log_std)
            v = self.values(value, x)
            physics, elapsed, key, next_obs, final_obs, reward, term, trunc = self.env_step(
                physics, elapsed, key, action
            )
            final_v = tf.cond(
                tf.reduce_any(trunc),
                lambda: self.values(value, self.normalize(final_obs, stats)),
                lambda: tf.zeros([k, n], tf.float32),
            )
            done = term | trunc
            r64 = tf.cast(reward, tf.float64)
            ep_return, ep_length, disc = ep_return + r64, ep_length + 1, disc * c.gamma + r64
            row = (obs, action, v, reward, term, trunc, final_v)
            row += (tf.where(done, ep_return, -1.0), tf.where(done, ep_length, -1), disc)
            store = [s.write(t, x) for s, x in zip(store, row)]
            zero = tf.zeros_like
            ep_return = tf.where(done, zero(ep_return), ep_return)
            ep_length = tf.where(done, zero(ep_length), ep_length)
            disc = tf.where(done, zero(disc), disc)
            state = (physics, elapsed, key, next_obs, ep_return, ep_length, disc)
            return t + 1, state, store

        adtype = tf.int32 if self.discrete else tf.float32
        dtypes = (tf.float32, adtype, tf.float32, tf.float32, tf.bool, tf.bool, tf.float32)
        dtypes += (tf.float64, tf.int32, tf.float64)
        store = [tf.TensorArray(d, size=T) for d in dtypes]
        state = (carry.physics, carry.elapsed, carry.key, carry.obs)
        state += (carry.ep_return, carry.ep_length, carry.disc_return)
        _, state, store = tf.while_loop(
            lambda t, *_: t < T, body, (0, state, store), maximum_iterations=T
        )
        obs_t, act_t, v_t, rew_t, term_t, trunc_t, fv_t, ret_t, len_t, disc_t = (
            s.stack() for s in store
        )  # [T, K, N, ...]

        rewards = rew_t

        def swap(x):  # [T, K, N, ...] -> [T, N, K, ...]: each seed's rows down axis 0
            return tf.transpose(x, [0, 2, 1, *range(3, x.shape.rank)])

        if c.norm_reward:  # RewardScaler's arithmetic: merge, then scale by the new std
            self.return_stats.merge(tf.reshape(swap(disc_t), [T * n, k, 1]), active)
            std = tf.sqrt(self.return_stats.var[:, 0] + self.return_stats.epsilon)
            clip = c.reward_clip
            r64 = tf.clip_by_value(tf.cast(rewards, tf.float64) / std[:, None], -clip, clip)
            rewards = tf.cast(r64, tf.float32)
        last_x = self.normalize(state[3], stats)
        next_v = next_state_values(v_t, self.values(value, last_x), trunc_t, fv_t)
        adv, returns = compute_gae(
            rewards, v_t, next_v, term_t, term_t | trunc_t, c.gamma, c.gae_lambda
        )

        def per_seed(x):  # [T, K, N, ...] -> [K, T * N, ...], each seed's rows in (t, n) order
            x = tf.transpose(x, [1, 0, 2, *range(3, x.shape.rank)])
            return tf.reshape(x, [k, T * n, *x.shape[3:]])

        obs_b, act_b, adv_b, ret_b = map(per_seed, (obs_t, act_t, adv, returns))
        applied = self._gradient_step(obs_b, act_b, adv_b, ret_b, stats) & active
        self.failed.assign(self.failed | (active & ~applied))
        self.active.assign(applied)  # a non-finite update stops its seed, as it stops a run
        # The normalizer merges the rollout's raw obs AFTER the step, in (t, n) order.
        self.obs_stats.merge(tf.reshape(tf.cast(swap(obs_t), tf.float64), [T * n, k, -1]), applied)

        lengths = per_seed(len_t)
        ended = tf.stack([per_seed(ret_t), tf.cast(lengths, tf.float64)], -1)
        recent = tf.stack(
            [
                push_recent(
                    carry.recent[i], tf.minimum(carry.episodes[i], RECENT), ended[i], lengths[i] > 0
                )
                for i in range(k)
            ]
        )
        episodes = carry.episodes + tf.reduce_sum(tf.cast(lengths > 0, tf.int64), 1)
        new = Carry(*state[:4], *state[4:], recent, episodes)
        return tf.nest.map_structure(lambda a, b: _select(active, a, b), new, carry)

    def _gradient_step(self, obs, actions, advantages, returns, stats):
        """`A2CAgent.gradient_step` per seed (valid all ones). Returns applied, bool [K]."""
        c = self.config
        valid = tf.ones_like(returns)
        x = self.normalize(obs, stats)
        with tf.GradientTape() as tape:
            out, log_std = self.head(self.policy, x)
            log_prob, entropy = self.log_prob_entropy(out, log_std, actions)
            values = self.values(self.value, x)
            if c.normalize_advantage:  # `rlnorm.a2c.normalize_advantages`
                mean = masked_mean(advantages, valid)[:, None]
                std = tf.sqrt(masked_mean(tf.square(advantages - mean), valid))[:, None]
                advantages = (advantages - mean) / (std + 1e-8)
            policy_loss = -masked_mean(advantages * log_prob, valid)
            value_loss = masked_mean(tf.square(returns - values), valid)
            total = policy_loss + c.ent_coef * -masked_mean(entropy, valid)
            total = total + c.vf_coef * value_loss  # [K]
            # The seeds share no weight: the gradient of the sum is each seed's own gradient.
            summed = tf.reduce_sum(total)
        pg, vg = tape.gradient(summed, [self.policy, self.value])
        p_sq, v_sq = tf.reduce_sum(tf.square(pg), 1), tf.reduce_sum(tf.square(vg), 1)
        p_norm, v_norm = tf.sqrt(p_sq), tf.sqrt(v_sq)  # tf.linalg.global_norm per seed
        if c.grad_clip == "global":
            scale = clip_scale(tf.sqrt(p_sq + v_sq), c.max_grad_norm)
            p_scale = v_scale = scale
        else:
            p_scale = clip_scale(p_norm, c.max_grad_norm)
            v_scale = clip_scale(v_norm, c.max_grad_norm)
        finite = tf.reduce_all(tf.math.is_finite(tf.stack([total, p_norm, v_norm])), 0)
        applied = finite & self.active
        self.policy_opt.apply(self.policy, pg * p_scale[:, None], applied)
        self.value_opt.apply(self.value, vg * v_scale[:, None], applied)
        return finite

    def _run(self, carry: Carry, n_updates):
        """`n_updates` updates (int32 []) of the active seeds; returns the carry."""
        _, carry = tf.while_loop(
            lambda i, _: i < n_updates, lambda i, c: (i + 1, self._update(c)), (0, carry)
        )
        return carry


def _select(active, new, old):
    """new where the seed is active, old where it stopped (active: bool [K])."""
    mask = tf.reshape(active, [-1] + [1] * (new.shape.rank - 1))
    return tf.where(mask, new, old)
