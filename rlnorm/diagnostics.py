"""Scale diagnostics: the scales inside the agent, policy and value side by side.

Every `diagnostics_every` env steps (and at the first update) the training loop calls
    capture()                     the variables' values before the update, then the update, then
    record_update(step, batch, metrics, captured), which runs
    before_update(step, *batch)   ONE compiled pass on the update batch, with the variables as
                                  they were before the update (restored from `captured`)
    after_update(step, metrics)   this module reduces, writes and checks the alarms
Histograms of weights and activations follow at `histograms_every`. At construction the run
gets its custom-scalars layout (policy and value on one chart) and its HParams session.

Tags, mirrored so that `scale/(policy|value)/...` puts both networks on one chart:
  scale/{net}/layer{i}/{pre_norm,post_norm,out}/{mean,std,max_abs}: the Dense output, the
      activation's input (= pre_norm when the norm is none), the activation's output.
  scale/{net}/layer{i}/dead_fraction (relu) | saturated_fraction (tanh): units that are 0 /
      have |tanh| > 0.99 on EVERY row of the batch (no gradient flows through them).
  scale/{net}/{layer{i},head,}/grad_norm (before clipping), weight_norm, update_ratio
      (||w_after - w_before|| / ||w_before||), learning_rate; output/{mean,std}: the logits
      (Discrete) or action means (Box), and V(s).
  outputs/: return, advantage mean/std, value_return_std_ratio, explained_variance,
      policy_logit_std (mean over rows of the std across actions: logits are shift-invariant),
      policy_log_std_{mean,min,max} (Box), policy_entropy.
  normalizer/: {raw,normalized}_obs_{mean,std}, normalized_obs_std_{min,max} (over features),
      clip_fraction, count, min_running_var(_feature); running_{mean,var} (histograms).
  popart/target_{mean,std}: PopArt's value-target statistics (value_target_norm = "popart").
  batchnorm/{net}/layer{i}/mean_gap(_max): |moving mean - batch mean| / sqrt(moving var + eps),
      mean (max) over units; var_ratio: mean of (batch var + eps) / (moving var + eps);
      policy_kl_train_infer: KL(policy training mode || inference mode); value_gap:
      mean |V_train - V_infer| / return std. Only for batch, batch_renorm, batch_moving.
  weights/..., activations/...: histograms.
Activation statistics are over all rows of the batch; outputs, returns and advantages over the
valid rows (what the losses average), and so are the BatchNorm norms' batch statistics (the
update's, see Network.__call__'s mask). All are of the training-mode pass.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import tensorflow as tf

from rlnorm import _fast
from rlnorm.alarms import ScaleAlarms, ScaleAlarmWarning
from rlnorm.dashboard import NETS, health_values, layout, split_by_net, write_hparams, write_layout
from rlnorm.networks import BATCHNORM_KINDS

# Kept in `last` (and judged) but not written: the same numbers are written elsewhere
# (losses/explained_variance, losses/entropy) or as text (the feature index).
NOT_WRITTEN = (
    "outputs/explained_variance",
    "outputs/policy_entropy",
    "normalizer/min_running_var_feature",
)
SATURATION = 0.99  # |tanh| above this passes < 2% of the gradient (1 - 0.99^2)
# Metrics of the HParams table; charts/* are written by rlnorm.logger.


def _crossed(last: int | None, step: int, every: int) -> bool:
    """True at the first call and whenever `step` enters a new multiple of `every`."""
    return last is None or step // every > last // every


def masked_moments(x: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
    """Mean and (population) std of x [N] or [N, k] over its valid rows (valid float [N])."""
    w = np.broadcast_to(valid.reshape(-1, *[1] * (x.ndim - 1)), x.shape).astype(np.float64)
    n = max(w.sum(), 1.0)
    mean = float(np.sum(w * x) / n)
    return mean, float(np.sqrt(np.sum(w * np.square(x - mean)) / n))


def masked_mean(x: np.ndarray, valid: np.ndarray) -> float:
    return float(np.sum(x * valid) / max(valid.sum(), 1.0))


def norm_of(arrays) -> float:
    """Global L2 norm of a list of arrays, summed in float64."""
    return float(np.sqrt(sum(np.sum(np.square(a, dtype=np.float64)) for a in arrays)))


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def layer_groups(net) -> list[tuple[str, list[int]]]:
    """(name, indices into net.trainable_weights) per hidden layer (Dense + norm) and head;
    the first index of each group is its Dense kernel."""
    index = {id(w): k for k, w in enumerate(net.trainable_weights)}
    groups = []
    for i, (dense, norm) in enumerate(zip(net.dense_layers, net.norm_layers, strict=True)):
        ws = dense.trainable_weights + (norm.trainable_weights if norm is not None else [])
        groups.append((f"layer{i}", [index[id(w)] for w in ws]))
    head = net.head.trainable_weights + ([net.log_std] if net.log_std is not None else [])
    groups.append(("head", [index[id(w)] for w in head]))
    return groups


class ScaleDiagnostics:
    """Computes the scale diagnostics of `agent` on update batches and writes them to `writer`.

    `last` holds the values written at the latest diagnostics step (tag -> float);
    `alarms.fired` the alarms fired so far (rule -> (env step, message))."""

    def __init__(self, agent, writer, config, report=None, logdir=None):
        self.agent, self.writer, self.config = agent, writer, config
        # Policy and value go to sibling runs logdir/policy and logdir/value, same tags (the
        # network's name dropped), so TensorBoard colours and overlays them. Without `logdir`
        # (tests, a no-op writer) everything goes to `writer` under the in-memory tags.
        self.siblings = (
            {n: tf.summary.create_file_writer(str(Path(logdir) / n)) for n in NETS}
            if logdir is not None
            else None
        )
        # Where a fired alarm's text goes: the progress bar's own line (RunLogger.alarm), else a
        # ScaleAlarmWarning; either way it is in `alarms.fired` and summary.json.
        self.report = report or (lambda text: warnings.warn(text, ScaleAlarmWarning, stacklevel=3))
        self.nets = {"policy": agent.policy, "value": agent.value}
        self.bn_nets = [n for n in NETS if self.nets[n].norm in BATCHNORM_KINDS]
        # The state a training-mode forward pass assigns: BatchNorm moving statistics (and the
        # rlnorm variants' step counters). The diagnostic pass saves and restores it.
        self.state = [w for n in NETS for w in self.nets[n].non_trainable_weights]
        # Everything the diagnostic pass reads that an update changes.
        norm = agent.normalizer
        nets = [self.nets[n] for n in NETS]
        self.variables = [w for net in nets for w in net.trainable_weights]
        self.variables += [w for net in nets for w in net.non_trainable_weights]
        self.variables += [norm.count, norm.mean, norm.var]
        self.groups = {n: layer_groups(self.nets[n]) for n in NETS}
        self.alarms = ScaleAlarms(config)
        self.last: dict[str, float] = {}
        self._last_diag = self._last_hist = None
        self._pending = None
        if config.compile == "eager":
            self.diagnose = self._diagnose
        else:  # graph for "xla" too: a rare pass, not worth an XLA compile
            vec = tf.TensorSpec([None], tf.float32)
            self.diagnose = tf.function(
                self._diagnose,
                input_signature=[agent.obs_spec, agent.action_spec, vec, vec, vec],
                autograph=False,  # plain Python control flow only; autograph adds tracing
            )
        with writer.as_default():
            norms = {n: self.nets[n].norm for n in NETS}
            write_layout(
                layout(
                    len(config.hidden_sizes),
                    config.activation,
                    norms,
                    bool(self.bn_nets),
                    agent.policy.discrete,
                    config.norm_obs,
                )
            )
            write_hparams(config, trial_id=Path(logdir).name if logdir is not None else None)

    # -- cadence -----------------------------------------------------------------------------
    def due(self, step: int) -> bool:
        return _crossed(self._last_diag, step, self.config.diagnostics_every) or _crossed(
            self._last_hist, step, self.config.histograms_every
        )

    # -- the compiled pass ---------------------------------------------------------------------
    def _diagnose(self, obs, actions, advantages, returns, valid) -> dict[str, tf.Tensor]:
        """The raw diagnostic tensors of one update batch; leaves every variable as it was.

        obs [N, *obs_shape] raw; actions [N] / [N, d]; advantages, returns, valid float32 [N].
        Returns {net}/input, {net}/layer{i}/{pre_norm,post_norm,out} [N, units] and {net}/output
        [N, out] of the training-mode pass, {net}/grad{k} (pre-clip gradient of the k-th
        trainable weight), {net}/output_infer (BatchNorm networks only), obs_encoded float64.
        The reductions to scalars are NumPy (`statistics`): in the graph they doubled the
        one-time cost of tracing and optimizing this pass."""
        agent = self.agent
        t = {"obs_encoded": agent.normalizer.encode(obs)}
        # 1. Inference mode (the acting networks), needed only where it differs: BatchNorm.
        stats = None
        if agent.popart is not None:  # the statistics this update's targets are scaled by
            stats = agent.popart.for_batch(returns, valid > 0)
            t["popart/target_mean"], t["popart/target_std"] = stats
        for n in self.bn_nets:
            out = self.nets[n](obs, training=False)
            if n == "value" and stats is not None:  # in the training pass's units
                out = agent.popart.denormalize(out[:, 0], stats)[:, None]
            t[f"{n}/output_infer"] = out
        # 2. Training mode: the update's own loss and gradients (A2CAgent.loss_and_gradients). A training-mode
        #    BatchNorm call assigns its moving statistics: save them first, restore them after
        #    (exact, and ~1k floats); automatic control dependencies keep this order in a graph.
        saved = [tf.identity(w.value) for w in self.state]
        rec = {n: {} for n in NETS}
        losses, dist, values, _, grads = agent.loss_and_gradients(
            obs, actions, advantages, returns, valid, records=rec
        )
        weights = self.nets["policy"].trainable_weights + self.nets["value"].trainable_weights
        for w, value in zip(self.state, saved, strict=True):
            w.assign(value)
        t["policy/output"] = dist.logits if agent.policy.discrete else dist.mean
        if not agent.policy.discrete:  # per row: gSDE's std depends on the state
            t["policy/log_std_rows"] = dist.log_std
        t["value/output"] = values[:, None]
        n_policy = len(self.nets["policy"].trainable_weights)
        for k, (w, g) in enumerate(zip(weights, grads, strict=True)):
            net, j = ("policy", k) if k < n_policy else ("value", k - n_policy)
            t[f"{net}/grad{j}"] = tf.zeros_like(w) if g is None else g
        for n in NETS:
            t.update({f"{n}/{key}": x for key, x in rec[n].items()})
        return t

    # -- the training loop's calls ---------------------------------------------------------------
    def capture(self) -> list[np.ndarray]:
        """The values of the variables the diagnostic pass reads, before an update."""
        return [v.numpy() for v in self.variables]

    def record_update(self, step, batch, metrics, captured: list[np.ndarray]) -> None:
        """The diagnostics of an update that has run (ONE compiled call, `rlnorm.update`): the
        diagnostic pass runs on its batch with the weights, BatchNorm statistics and normalizer
        put back as `capture()` saw them, so it sees the update's own forward pass and
        gradients; then the updated values return (exactly: whole arrays are assigned)."""
        updated = self.capture()
        for v, x in zip(self.variables, captured, strict=True):
            v.assign(x)
        try:
            self.before_update(step, *batch)
        finally:
            for v, x in zip(self.variables, updated, strict=True):
                v.assign(x)
        self.after_update(step, metrics)

    def before_update(self, step, obs, actions, advantages, returns, valid) -> None:
        """Run the diagnostic pass on the update batch; keep copies of the weights, the
        normalizer and BatchNorm statistics as they are before the update."""
        histograms = _crossed(self._last_hist, step, self.config.histograms_every)
        tensors = self.diagnose(obs, actions, advantages, returns, valid)
        raw = {k: v.numpy() for k, v in tensors.items()}
        raw["weights"] = {
            n: [w.numpy().copy() for w in self.nets[n].trainable_weights] for n in NETS
        }
        norm = self.agent.normalizer
        raw["normalizer"] = {
            "count": norm.count.numpy(),
            "mean": norm.mean.numpy(),
            "var": norm.var.numpy(),
        }
        raw["moving"] = {
            n: [
                (b.moving_mean.numpy(), b.moving_variance.numpy(), b.epsilon)
                for b in self.nets[n].norm_layers
            ]
            for n in self.bn_nets
        }
        if self.agent.policy.log_std is not None:
            raw["log_std"] = self.agent.policy.log_std.numpy()
        batch = {"advantages": advantages, "returns": returns, "valid": valid}
        self._pending = (raw, {k: np.asarray(v, np.float64) for k, v in batch.items()}, histograms)
        self._last_diag = step
        if histograms:
            self._last_hist = step

    def after_update(self, step, metrics) -> None:
        """Statistics and update-to-weight ratios; then write scalars, histograms and alarms."""
        raw, batch, histograms = self._pending
        self._pending = None
        values = self.statistics(raw, batch)
        optimizers = {"policy": self.agent.policy_optimizer, "value": self.agent.value_optimizer}
        for n in NETS:
            after = [w.numpy() for w in self.nets[n].trainable_weights]
            update = norm_of([a - b for a, b in zip(after, raw["weights"][n], strict=True)])
            values[f"scale/{n}/update_ratio"] = update / max(
                values[f"scale/{n}/weight_norm"], 1e-12
            )
            values[f"scale/{n}/learning_rate"] = float(np.asarray(optimizers[n].learning_rate))
        self.last = values
        checked = {**values, **{f"train_step/{k}": float(v) for k, v in metrics.items()}}
        texts = {}
        for rule, message in self.alarms.check(step, checked):
            text = f"rlnorm scale alarm '{rule}' at env step {step}: {message}"
            self.report(text)
            texts[f"alarms/{rule}"] = text
        self.write(step, values, self.histograms(raw, histograms), texts)

    def write(self, step, values: dict, hists: dict, texts: dict) -> None:
        """Scalars, histograms and texts of one diagnostics step, split over the run and its
        policy/ and value/ siblings; the Health view's scalars and the alarm count added."""
        scalars = {k: v for k, v in values.items() if k not in NOT_WRITTEN}
        scalars.update(health_values(values, self.config))
        scalars["alarms/count"] = float(len(self.alarms.fired))
        scalars["alarms/count/lower"] = scalars["alarms/count/upper"] = 0.0  # the healthy band
        feature = int(values["normalizer/min_running_var_feature"])
        texts = {
            **texts,
            "normalizer/min_running_var_feature": f"feature {feature}: the smallest running "
            f"variance, {values['normalizer/min_running_var']:.3g}",
        }
        on = _fast.enabled(self.config)
        if self.siblings is None:
            _fast.write_summaries(self.writer, step, scalars, hists, texts, enabled=on)
            return
        run_scalars, net_scalars = split_by_net(scalars)
        run_hists, net_hists = split_by_net(hists)
        _fast.write_summaries(self.writer, step, run_scalars, run_hists, texts, enabled=on)
        for n in NETS:  # flushed here: rare steps, and the loop closes only the run's writer
            _fast.write_summaries(self.siblings[n], step, net_scalars[n], net_hists[n], enabled=on)
            self.siblings[n].flush()

    # -- from raw tensors to what is written -------------------------------------------------------
    def statistics(self, raw: dict, batch: dict) -> dict[str, float]:
        """tag -> float of every scalar diagnostic (the tags of the module docstring)."""
        s: dict[str, float] = {}
        valid = batch["valid"]
        for n in NETS:
            net = self.nets[n]
            for i in range(len(net.dense_layers)):
                pre, out = raw[f"{n}/layer{i}/pre_norm"], raw[f"{n}/layer{i}/out"]
                stages = {
                    "pre_norm": pre,
                    "post_norm": raw.get(f"{n}/layer{i}/post_norm"),
                    "out": out,
                }
                if net.norm == "none":  # post_norm = pre_norm: not written twice
                    del stages["post_norm"]
                for stage, x in stages.items():
                    x = x.astype(np.float64)
                    s[f"scale/{n}/layer{i}/{stage}/mean"] = float(x.mean())
                    s[f"scale/{n}/layer{i}/{stage}/std"] = float(x.std())
                    s[f"scale/{n}/layer{i}/{stage}/max_abs"] = float(np.abs(x).max())
                if net.activation_name == "relu":
                    inactive, name = out <= 0.0, "dead_fraction"
                else:
                    inactive, name = np.abs(out) > SATURATION, "saturated_fraction"
                s[f"scale/{n}/layer{i}/{name}"] = float(np.all(inactive, axis=0).mean())
            grads = [raw[f"{n}/grad{k}"] for k in range(len(raw["weights"][n]))]
            for name, idx in self.groups[n]:
                s[f"scale/{n}/{name}/grad_norm"] = norm_of([grads[k] for k in idx])
            s[f"scale/{n}/grad_norm"] = norm_of(grads)
            s[f"scale/{n}/weight_norm"] = norm_of(raw["weights"][n])

        # Outputs: policy head, value vs return, advantages.
        out = raw["policy/output"].astype(np.float64)
        s["scale/policy/output/mean"], s["scale/policy/output/std"] = masked_moments(out, valid)
        if self.agent.policy.discrete:
            s["outputs/policy_logit_std"] = masked_mean(out.std(-1), valid)
            logp = log_softmax(out)
            s["outputs/policy_entropy"] = masked_mean(-np.sum(np.exp(logp) * logp, -1), valid)
            # Of its maximum, log(n actions): 1 = uniform actions.
            s["outputs/policy_entropy_fraction"] = s["outputs/policy_entropy"] / np.log(
                out.shape[-1]
            )
        else:  # the std of every row's Gaussian (one vector unless gSDE makes it per state)
            log_std = raw["policy/log_std_rows"].astype(np.float64)
            s["outputs/policy_log_std_mean"] = masked_mean(log_std.mean(-1), valid)
            s["outputs/policy_log_std_min"] = float(log_std.min())
            s["outputs/policy_log_std_max"] = float(log_std.max())
            entropy = np.sum(log_std + 0.5 * (1.0 + np.log(2 * np.pi)), -1)
            s["outputs/policy_entropy"] = masked_mean(entropy, valid)
        v = raw["value/output"][:, 0].astype(np.float64)
        r = batch["returns"]
        s["scale/value/output/mean"], value_std = masked_moments(v, valid)
        s["scale/value/output/std"] = value_std
        s["outputs/return_mean"], return_std = masked_moments(r, valid)
        s["outputs/return_std"] = return_std
        s["outputs/value_return_std_ratio"] = value_std / max(return_std, 1e-8)
        adv = batch["advantages"]
        s["outputs/advantage_mean"], s["outputs/advantage_std"] = masked_moments(adv, valid)
        # SB3's definition, 1 - Var[R - V] / Var[R] (0 when the returns are constant).
        residual_std = masked_moments(r - v, valid)[1]
        s["outputs/explained_variance"] = (
            1.0 - residual_std**2 / return_std**2 if return_std > 0 else 0.0
        )

        # The shared normalizer: the batch before and after it, and its running state.
        norm, state = self.agent.normalizer, raw["normalizer"]
        x, z = raw["obs_encoded"], raw["policy/input"].astype(np.float64)
        s["normalizer/raw_obs_mean"], s["normalizer/raw_obs_std"] = float(x.mean()), float(x.std())
        s["normalizer/normalized_obs_mean"] = float(z.mean())
        s["normalizer/normalized_obs_std"] = float(z.std())
        s["normalizer/normalized_obs_std_min"] = float(z.std(0).min())
        s["normalizer/normalized_obs_std_max"] = float(z.std(0).max())
        unclipped = (x - state["mean"]) / np.sqrt(state["var"] + norm.epsilon)
        s["normalizer/clip_fraction"] = (
            float(np.mean(np.abs(unclipped) > norm.clip)) if norm.enabled else 0.0
        )
        s["normalizer/count"] = float(state["count"])
        if "popart/target_mean" in raw:  # PopArt: what the value head's outputs are scaled by
            s["popart/target_mean"] = float(raw["popart/target_mean"])
            s["popart/target_std"] = float(raw["popart/target_std"])
        s["normalizer/min_running_var"] = float(state["var"].min())
        s["normalizer/min_running_var_feature"] = float(np.argmin(state["var"]))
        for k in range(min(self.config.normalizer_features_logged, state["mean"].size)):
            s[f"normalizer/feature{k}/running_mean"] = float(state["mean"].reshape(-1)[k])
            s[f"normalizer/feature{k}/running_std"] = float(np.sqrt(state["var"].reshape(-1)[k]))

        # BatchNorm: moving vs batch statistics, and what the gap does to the outputs.
        for n in self.bn_nets:
            # The rows the batch statistics come from: the BatchNorm norms leave masked rows out.
            rows = valid > 0 if valid.any() else slice(None)
            for i, (moving_mean, moving_var, eps) in enumerate(raw["moving"][n]):
                pre = raw[f"{n}/layer{i}/pre_norm"][rows].astype(np.float64)
                gap = np.abs(moving_mean - pre.mean(0)) / np.sqrt(moving_var + eps)
                s[f"batchnorm/{n}/layer{i}/mean_gap"] = float(gap.mean())
                s[f"batchnorm/{n}/layer{i}/mean_gap_max"] = float(gap.max())
                ratio = (pre.var(0) + eps) / (moving_var + eps)
                s[f"batchnorm/{n}/layer{i}/var_ratio"] = float(ratio.mean())
        if "policy" in self.bn_nets:
            infer = raw["policy/output_infer"].astype(np.float64)
            if self.agent.policy.discrete:  # KL(train || infer) of the two categoricals
                lp_t, lp_i = log_softmax(out), log_softmax(infer)
                kl = np.sum(np.exp(lp_t) * (lp_t - lp_i), -1)
            else:  # two Gaussians with the same std (the training pass's, per row)
                kl = np.sum(np.square(out - infer) / (2.0 * np.exp(2.0 * log_std)), -1)
            s["batchnorm/policy_kl_train_infer"] = masked_mean(kl, valid)
        if "value" in self.bn_nets:
            v_infer = raw["value/output_infer"][:, 0].astype(np.float64)
            s["batchnorm/value_gap"] = masked_mean(np.abs(v - v_infer), valid) / max(
                return_std, 1e-8
            )
        return s

    def histograms(self, raw: dict, weights_and_activations: bool) -> dict[str, np.ndarray]:
        """The normalizer's running mean/var always; weights and activations at their cadence."""
        h = {
            "normalizer/running_mean": raw["normalizer"]["mean"],
            "normalizer/running_var": raw["normalizer"]["var"],
        }
        if not weights_and_activations:
            return h
        for n in NETS:
            for name, idx in self.groups[n]:
                h[f"weights/{n}/{name}/kernel"] = raw["weights"][n][idx[0]]
            for i in range(len(self.nets[n].dense_layers)):
                for stage in ("pre_norm", "out"):
                    h[f"activations/{n}/layer{i}/{stage}"] = raw[f"{n}/layer{i}/{stage}"]
        return h


# -- what a run writes once: the custom-scalars layout and the HParams session -------------------
