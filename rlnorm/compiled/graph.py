"""The compiled backend's graph: many whole A2C updates inside ONE compiled call.

    python agents/cartpole_compiled.py            # or: rlnorm train --backend compiled

Same agent as the Gymnasium adapter (`rlnorm.update`): the networks, the ONE shared
normalizer, the norms, the losses and the optimizers are `A2CAgent`'s, and this file calls its
plain-TF math (`forward`, `state_values`, `gradient_step`, `normalizer.merge`) in the same
order:

    rollout (inference mode, raw obs stored) -> targets (GAE; V(final obs) on truncation)
    -> train_step (training mode) -> normalizer merge of the rollout's raw obs (AFTER the step)

The env is `rlnorm.compiled` (pure TF ops, SAME_STEP autoreset, so every step is valid) and
`tf.while_loop`s replace the Python loops, so one call (`CompiledLoop.run`, XLA when
compile = "xla") runs n updates and returns the sums of the train-step metrics;
`CompiledLoop.run_logged`, what training calls, sums them per log point instead and writes one
row per log point, so one call spans many. The adapter `rlnorm.compiled.loop.CompiledUpdater`
ends a call where the training loop (`rlnorm.loop`) must save or diagnose. A call stops early at an update whose loss
or gradient is not finite (skipped, as in the other adapter), and keeps that update's batch
for the loop's non-finite report. A diagnostics update runs split (`collect`, then
`train_step`, then the normalizer merge, each a plain graph), so the loop hands the diagnostics
the update batch as it does for the other adapter.

Episode statistics live in the graph: per-env running return/length, and the last 100
finished episodes (in the other adapter's order: by step, then env index) in a fixed-size
buffer. `charts/episodic_return` is the mean of the last <= 100 episodes finished between two
log points (the other adapter: all of them); losses/* are means over the updates since the
last log point. Moot here: vectorization_mode, autoreset_mode (always SAME_STEP), nonfinite (the
envs stay finite). A resumed run restarts its envs from fresh seeds (as the other adapter
does): the env state is not checkpointed.
"""

from __future__ import annotations

from typing import NamedTuple

import gymnasium as gym
import tensorflow as tf

from rlnorm.a2c import compute_gae, next_state_values
from rlnorm.agent import A2CAgent, compile_function
from rlnorm.compiled import EnvState, TFVecEnv
from rlnorm.update import Batch  # valid is all ones here (SAME_STEP autoreset)

RECENT = 100  # episodes in mean_return_last_100
ACTING = ("rewards", "values")  # what the non-finite report reads besides the batch
MAX_METRICS = 32  # train-step metrics summed inside the loop (A2CAgent returns 12)
LOG_ROWS = 256  # log points one call may span; the loop logs their rows after the call


class Carry(NamedTuple):
    """Everything that flows from one update to the next (the `tf.while_loop` variables).
    N = n_envs."""

    env: EnvState
    obs: tf.Tensor  # float32 [N, obs_dim], the current raw observation
    ep_return: tf.Tensor  # float64 [N], return of the running episode
    ep_length: tf.Tensor  # int32 [N]
    disc_return: tf.Tensor  # float64 [N], discounted return for norm_reward (else unused)
    recent: tf.Tensor  # float64 [100, 2]: (return, length) of the last finished episodes,
    #                    oldest first, right-aligned (see push_recent)
    episodes: tf.Tensor  # int64 [], episodes finished so far


def push_recent(recent, count, new, finished):
    """Append the finished rows of `new` to a buffer of the last k episodes; deterministic and
    XLA-friendly (fixed shapes, one top_k instead of a scatter with clashing indices).

    recent: [k, c], oldest first, its `count` (int []) real rows right-aligned; new: [M, c] in
    time order; finished: bool [M]. Returns the last k real rows of recent ++ new[finished]
    in the same layout."""
    k, m = recent.shape[0], new.shape[0]
    slots = tf.range(k)
    keys = tf.concat(
        [
            tf.where(slots >= k - tf.cast(count, tf.int32), slots, -1),
            tf.where(finished, k + tf.range(m), -1),
        ],
        0,
    )
    if k + m < 2**24:  # float32 keys are exact here
        # XLA's CPU backend runs a float32 TopK as a fast custom call but lowers an int32 one
        # to a sort of all k + m keys, far slower at m = 8192.
        keys = tf.cast(keys, tf.float32)
    _, index = tf.math.top_k(keys, k=k, sorted=True)  # newest first; padding (-1) last
    return tf.gather(tf.concat([recent, new], 0), tf.reverse(index, [0]))


class CompiledLoop:
    """The compiled pieces: `run(carry, n)` runs n whole updates (the hot path, XLA when
    compile = "xla"); `collect` (rollout + targets) and `train_step` are a diagnostics step's
    split update. `initial_carry(seed)` starts the envs."""

    def __init__(self, config, agent: A2CAgent, env: TFVecEnv, reward_scaler=None):
        self.config, self.agent, self.env, self.reward_scaler = config, agent, env, reward_scaler
        self.n_envs, self.n_steps = env.n_envs, config.n_steps
        space = env.action_space
        self.clip = None
        if isinstance(space, gym.spaces.Box):  # the Python path's ClipAction wrapper
            self.clip = (tf.constant(space.low, tf.float32), tf.constant(space.high, tf.float32))
        # Where a call leaves the batch of an update it skipped (NaN/Inf), for the loop's report.
        rows = self.n_steps * self.n_envs
        shapes = {
            "obs": ([rows, *agent.obs_spec.shape[1:]], agent.obs_spec.dtype),
            "actions": ([rows, *agent.action_spec.shape[1:]], agent.action_spec.dtype),
            **{k: ([rows], tf.float32) for k in (*Batch._fields[2:], *ACTING)},
        }
        self.stash = {
            k: tf.Variable(tf.zeros(shape, dtype), trainable=False, name=f"skipped_{k}")
            for k, (shape, dtype) in shapes.items()
        }
        mode = config.compile
        # Only explicit tf.while_loop / tf.cond inside: autograph would only cost tracing time.
        plain = tf.autograph.experimental.do_not_convert
        spec = tf.nest.map_structure(
            lambda x: tf.TensorSpec(x.shape, x.dtype), self.initial_carry(config.seed)
        )
        n_spec = tf.TensorSpec([], tf.int32)
        self.run = compile_function(plain(self._run), [spec, n_spec], mode)
        scalars = [tf.TensorSpec([], d) for d in (tf.int64, tf.int64, tf.bool, tf.float64)]
        self.run_logged = compile_function(plain(self._run_logged), [spec, n_spec, *scalars], mode)
        # The split update of a diagnostics step: rare, so plain graphs (no XLA compile).
        vec = tf.TensorSpec([None], tf.float32)
        signature = [agent.obs_spec, agent.action_spec, vec, vec, vec]
        self.collect = compile_function(plain(self._collect), [spec], mode, jit=False)
        self.train_step = compile_function(plain(agent.gradient_step), signature, mode, jit=False)

    def initial_carry(self, seed: int) -> Carry:
        n = self.n_envs
        env_state = self.env.reset(seed)
        return Carry(
            env=env_state,
            obs=self.env.observe(env_state),
            ep_return=tf.zeros([n], tf.float64),
            ep_length=tf.zeros([n], tf.int32),
            disc_return=tf.zeros([n], tf.float64),
            recent=tf.zeros([RECENT, 2], tf.float64),
            episodes=tf.constant(0, tf.int64),
        )

    # -- one rollout and its targets ---------------------------------------------------------
    def _collect(self, carry: Carry) -> tuple[Carry, Batch, dict]:
        """n_steps of every env (inference mode), then GAE targets. Returns the next carry, the
        flattened batch and {"rewards": raw rewards, "values": V(s_t) at acting time} [N];
        also updates the episode statistics."""
        agent, c, T, n = self.agent, self.config, self.n_steps, self.n_envs

        names = ("obs", "action", "value", "reward", "term", "trunc", "final_v", "ret", "len")
        names += ("disc",)
        dtypes = (tf.float32, agent.action_spec.dtype, tf.float32, tf.float32, tf.bool, tf.bool)
        dtypes += (tf.float32, tf.float64, tf.int32, tf.float64)

        def body(t, env_state, obs, ep_return, ep_length, disc, store):
            action, _, value = agent.forward(obs)  # inference mode (BatchNorm: moving statistics)
            env_action = action if self.clip is None else tf.clip_by_value(action, *self.clip)
            env_state, out = self.env.step(env_state, env_action)
            # V(final obs) only matters where an episode was truncated (rare): skip it otherwise.
            final_value = tf.cond(
                tf.reduce_any(out.truncated),
                lambda: agent.state_values(out.final_obs),
                lambda: tf.zeros([n], tf.float32),
            )
            done = tf.logical_or(out.terminated, out.truncated)
            reward = tf.cast(out.reward, tf.float64)
            ep_return, ep_length = ep_return + reward, ep_length + 1
            disc = disc * c.gamma + reward
            row = (obs, action, value, out.reward, out.terminated, out.truncated, final_value)
            # Finished episodes' return and length (-1 where none finished).
            row += (tf.where(done, ep_return, -1.0), tf.where(done, ep_length, -1), disc)
            store = [s.write(t, x) for s, x in zip(store, row)]
            ep_return = tf.where(done, tf.zeros_like(ep_return), ep_return)
            ep_length = tf.where(done, tf.zeros_like(ep_length), ep_length)
            disc = tf.where(done, tf.zeros_like(disc), disc)
            return t + 1, env_state, out.obs, ep_return, ep_length, disc, store

        store = [tf.TensorArray(d, size=T) for d in dtypes]
        init = (0, carry.env, carry.obs, carry.ep_return, carry.ep_length, carry.disc_return)
        _, env_state, obs, ep_return, ep_length, disc, store = tf.while_loop(
            lambda t, *_: t < T, body, (*init, store), maximum_iterations=T
        )
        r = dict(zip(names, (s.stack() for s in store)))  # [T, N, ...]

        # Targets. Rewards scaled by the running std of the discounted return, if asked
        # (RewardScaler's arithmetic; its statistics merge before the scaling, as there).
        rewards = r["reward"]
        if self.reward_scaler is not None:
            rs = self.reward_scaler
            rs.return_stats.merge(tf.reshape(r["disc"], [-1, 1]))
            std = tf.sqrt(rs.return_stats.var[0] + rs.epsilon)
            rewards = tf.cast(
                tf.clip_by_value(tf.cast(rewards, tf.float64) / std, -rs.clip, rs.clip),
                tf.float32,
            )
        last_values = agent.state_values(obs)
        next_values = next_state_values(r["value"], last_values, r["trunc"], r["final_v"])
        dones = tf.logical_or(r["term"], r["trunc"])
        advantages, returns = compute_gae(
            rewards, r["value"], next_values, r["term"], dones, c.gamma, c.gae_lambda
        )

        # Episode statistics: the last 100 finished episodes, in (step, env) order.
        lengths = tf.reshape(r["len"], [-1])
        ended = tf.stack([tf.reshape(r["ret"], [-1]), tf.cast(lengths, tf.float64)], 1)
        finished = lengths > 0
        recent = push_recent(carry.recent, tf.minimum(carry.episodes, RECENT), ended, finished)
        n_finished = tf.reduce_sum(tf.cast(finished, tf.int64))

        def flat(x):
            return tf.reshape(x, [T * n, *x.shape[2:]])

        batch = Batch(
            flat(r["obs"]),
            flat(r["action"]),
            flat(advantages),
            flat(returns),
            tf.ones([T * n], tf.float32),
        )
        carry = Carry(
            env_state,
            obs,
            ep_return,
            ep_length,
            disc,
            recent,
            carry.episodes + n_finished,
        )
        return carry, batch, {"rewards": flat(r["reward"]), "values": flat(r["value"])}

    # -- whole updates -------------------------------------------------------------------------
    def _update(self, carry: Carry) -> tuple[Carry, dict]:
        carry, batch, acting = self._collect(carry)
        # Gradient step (training=True) with the normalizer statistics that acted ...
        metrics = self.agent.gradient_step(*batch)
        applied = metrics["update_applied"]

        # ... then the normalizer absorbs the rollout's raw obs, once, after an applied step;
        # a skipped one leaves its batch for the report instead.
        def merge():
            if not self.agent.normalizer.frozen:
                self.agent.normalizer.merge(batch.obs)
            return tf.constant(True)

        def keep_skipped_batch():
            for name, x in zip(self.stash, (*batch, acting["rewards"], acting["values"])):
                self.stash[name].assign(x)
            return tf.constant(False)

        tf.cond(applied, merge, keep_skipped_batch)
        return carry, {k: tf.cast(v, tf.float32) for k, v in metrics.items()}

    def _run(self, carry: Carry, n_updates):
        """`n_updates` >= 1 updates (int32 []), ending early after a skipped one; returns the
        carry, the metrics summed over the updates run (`update_applied` sums to the number
        applied) and how many ran (int32 [])."""
        # The metrics' names are only known once the update is traced, after the loop variables
        # are fixed: sum them in a fixed-size vector and name its entries after the loop. (A
        # separate trace of the train step just for the names would cost start-up time.)
        names = []

        def body(i, ok, carry, total):
            carry, metrics = self._update(carry)
            names[:] = sorted(metrics)
            if len(names) > MAX_METRICS:
                raise ValueError(f"{len(names)} train-step metrics; raise MAX_METRICS")
            values = tf.stack([metrics[k] for k in names])
            ok = metrics["update_applied"] > 0
            return i + 1, ok, carry, total + tf.pad(values, [[0, MAX_METRICS - len(names)]])

        init = (0, tf.constant(True), carry, tf.zeros([MAX_METRICS], tf.float32))
        n, _, carry, total = tf.while_loop(
            lambda i, ok, *_: tf.logical_and(i < n_updates, ok), body, init
        )
        return carry, {k: total[j] for j, k in enumerate(names)}, n

    def _run_logged(self, carry: Carry, n_updates, step, log_every, check_target, target):
        """`_run` cut into log segments: from env step `step` (int64 []), a segment ends at each
        update that crosses a multiple of `log_every` (int64 []), at the call's last update and
        at a skipped one, and writes a row: its updates' metric sums, how many it ran and the
        episode buffer and count at its end. The call also ends after LOG_ROWS rows, and at a
        row whose last-100 mean return may have reached `target` (float64 [], if
        `check_target`): the check is a hair lenient (the loop decides exactly, with
        math.fsum), so the call never runs past the update the loop stops at. Returns the
        carry, the rows ({metric: float32 [LOG_ROWS]}, ran: int64 [LOG_ROWS], episodes: int64
        [LOG_ROWS], recent: float64 [LOG_ROWS, 100, 2]) and how many rows were written."""
        names = []
        per_update = tf.constant(self.n_steps * self.n_envs, tf.int64)

        def write(rows, row, x):  # x: the row's entry of each buffer
            return [tf.tensor_scatter_nd_update(b, [[row]], v[None]) for b, v in zip(rows, x)]

        def body(i, row, go, carry, step, total, ran, rows):
            carry, metrics = self._update(carry)
            names[:] = sorted(metrics)
            values = tf.stack([metrics[k] for k in names])
            total = total + tf.pad(values, [[0, MAX_METRICS - len(names)]])
            ran, step = ran + 1, step + per_update
            applied = metrics["update_applied"] > 0
            crossed = step // log_every > (step - per_update) // log_every
            end = crossed | (i + 1 >= n_updates) | tf.logical_not(applied)
            returns = carry.recent[:, 0]
            slack = 1e-9 * (tf.reduce_mean(tf.abs(returns)) + tf.abs(target))
            solved = check_target & (carry.episodes >= RECENT)
            solved = end & solved & (tf.reduce_sum(returns) / RECENT >= target - slack)
            rows, row, total, ran = tf.cond(
                end,
                lambda: (
                    write(rows, row, (total, ran, carry.episodes, carry.recent)),
                    row + 1,
                    tf.zeros_like(total),
                    tf.zeros_like(ran),
                ),
                lambda: (rows, row, total, ran),
            )
            go = applied & tf.logical_not(solved) & (row < LOG_ROWS)
            return i + 1, row, go, carry, step, total, ran, rows

        rows = [
            tf.zeros([LOG_ROWS, MAX_METRICS], tf.float32),
            tf.zeros([LOG_ROWS], tf.int64),
            tf.zeros([LOG_ROWS], tf.int64),
            tf.zeros([LOG_ROWS, RECENT, 2], tf.float64),
        ]
        zero = tf.constant(0, tf.int64)
        init = (0, 0, tf.constant(True), carry, step, tf.zeros([MAX_METRICS]), zero, rows)
        _, n_rows, _, carry, _, _, _, rows = tf.while_loop(
            lambda i, row, go, *_: go & (i < n_updates), body, init
        )
        sums, ran, episodes, recent = rows
        metrics = {k: sums[:, j] for j, k in enumerate(names)}
        return (
            carry,
            {"metrics": metrics, "ran": ran, "episodes": episodes, "recent": recent},
            n_rows,
        )
