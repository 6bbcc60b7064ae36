"""BatchNorm results table: every norm inside both networks, on the default recipe.

For each norm in none, layer, batch, batch_renorm, batch_moving and each seed, train the
default CartPole recipe (agents/cartpole.py) with that norm in BOTH networks, everything else
unchanged, until the last-100 mean return reaches 475 or `--steps` env steps have passed. A
variant `norm@m` also sets bn_momentum to m. When m is the bn_momentum that the variant's own
recipe (agents/cartpole_<norm>.py) sets, the row is that variant as it ships (a layer default
of the variant, which a variant may choose), labelled "its recipe"; otherwise it is an ablation.
The default list adds `batch_renorm@0.999` (agents/cartpole_batch_renorm.py). Then write, into `--out` (default benchmarks/results/):

    batchnorm.json        raw results: per run steps to solve, final last-100 mean, steps/s,
                          the train/infer KL series, the return curve; plus the command
    batchnorm.md          the table (one row per norm and one per run) and the interpretation
    batchnorm_curves.png  last-100 mean return vs env steps per norm (seeds as thin lines),
                          and the train/infer KL over training per BatchNorm variant

The train/infer KL is the one rlnorm's diagnostics compute on each update batch, before the
step: KL(policy in training mode || policy in inference mode), averaged over the valid rows
(tag `batchnorm/policy_kl_train_infer`). Each run trains with diagnostics on every
`--diagnostics-every` env steps (default 2000, i.e. every 50 updates, and at the first update);
the script reads the tag back from the run's TensorBoard event files and averages it over the
run. For none and layer the two modes are the same function, so the KL is 0 by construction
and is not logged. Steps/s is the run's own figure (summary.json), with that diagnostics
cadence included, on whatever else the machine is doing: compare rows of one sweep only.

Each run is a fresh process (`--jobs` at a time). Usage:

    python benchmarks/batchnorm_table.py [--seeds 0,1,2] [--norms none,layer,batch_renorm@0.999,...]
        [--steps 300000] [--jobs 2] [--merge] [--render-only] [--runs-root DIR]

`--merge` keeps the runs of an existing batchnorm.json that this call does not redo (e.g. to
add seeds of one norm); `--render-only` rewrites batchnorm.md and the PNG from the JSON.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import importlib.util
import json
import multiprocessing
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "agents" / "cartpole.py"
NORMS = ("none", "layer", "batch", "batch_renorm", "batch_moving")
BN_NORMS = ("batch", "batch_renorm", "batch_moving")
# What the table trains by default: every norm with the recipe as it is, plus `norm@m` = that
# norm with bn_momentum m (the variant's own recipe if it sets m, otherwise an ablation).
DEFAULT_VARIANTS = (*NORMS, "batch_renorm@0.999")
TARGET = 475.0
KL_TAG = "batchnorm/policy_kl_train_infer"
VALUE_GAP_TAG = "batchnorm/value_gap"
KL_GOAL = 0.01
# Diagnostics scalars summarized per run (first/last/min/max), to explain the failures.
EXTRA_TAGS = {
    "policy_weight_norm": "scale/policy/weight_norm",
    "value_weight_norm": "scale/value/weight_norm",
    "policy_entropy": "losses/entropy",  # the update batch's mean entropy, at log_every
    "policy_logit_std": "outputs/policy_logit_std",
}

# What each variant is, for the README (also written into batchnorm.md).
VARIANT_NOTES = {
    "batch": (
        "Keras `BatchNormalization`: batch statistics in the update (`training=True`), moving "
        "statistics when acting, bootstrapping and evaluating (`training=False`). In A2C the "
        "update batch (5 steps x 8 envs, strongly correlated) has statistics far from the moving "
        "ones, so the policy whose log-probabilities are differentiated is not the policy that "
        "acted. Use it only as the baseline that shows the failure. Cost: one mean/variance "
        "per layer per update."
    ),
    "batch_renorm": (
        "Batch Renormalization (Ioffe 2017, Algorithm 1; as CrossQ uses it): the update "
        "normalizes with batch statistics corrected by r = sigma_B / sigma and "
        "d = (mu_B - mu) / sigma, both clipped and treated as constants, so while they are not "
        "clipped the forward pass equals the moving-statistics (acting) forward pass, yet "
        "the gradient still flows through the batch statistics as in BatchNorm. Plain BN for "
        "the first `warmup_steps` updates (500) while the moving statistics settle, then "
        "r_max 1 -> 3 and d_max 0 -> 5 linearly over `ramp_steps` (1500) updates. The moving "
        "statistics are a bias-corrected EMA (`warm_start`, default on: Adam's correction, "
        "so the 0/1 init carries no weight), and its recipe (`agents/cartpole_batch_renorm.py`) "
        "sets bn_momentum 0.999: statistics that follow the state distribution slowly kept the "
        "policy from turning nearly deterministic early, which bn_momentum 0.99 did not (see "
        "the table; an earlier sweep without the warm start: 2/3 seeds at 0.999, 1/3 at "
        "0.99). The BatchNorm to use in an on-policy actor-critic (train/infer KL "
        "~1e-3 on average); `layer` is still simpler when you do not need batch statistics. "
        "Cost: like `batch` plus a few elementwise ops."
    ),
    "batch_moving": (
        "Normalizes with the moving statistics in both modes, read before the update and "
        "treated as constants; each update then moves them one (bias-corrected) EMA step "
        "towards the update batch. Acting and learning are exactly the same function (KL = 0), "
        "but no gradient flows through the statistics, which is the arrangement Ioffe & "
        "Szegedy (2015, Sec. 2) warn about: the optimizer can move a unit's mean and scale, "
        "the statistics then take them back, and the weights keep growing against them. "
        "Use it for experiments on the consistency question, not as a default. Cost: as `batch`."
    ),
    "none": "No norm inside the networks (the default recipe).",
    "layer": (
        "LayerNorm: per-sample statistics over features, so acting and learning agree by "
        "construction."
    ),
}


# ------------------------------------------------------------------------------- one run
def load_recipe(path: Path = RECIPE):
    spec = importlib.util.spec_from_file_location(f"recipe_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CONFIG


def read_scalars(run_dir: str, tags: tuple[str, ...]) -> dict[str, list[list[float]]]:
    """tag -> [[env_step, value], ...] from the run's TensorBoard event files."""
    import tensorflow as tf
    from tensorboard.backend.event_processing import event_file_loader

    series: dict[str, list[list[float]]] = {t: [] for t in tags}
    # The run's own events, and its policy/ and value/ sibling runs (scale/x -> scale/<net>/x).
    for path in sorted(Path(run_dir).rglob("events.out.tfevents.*")):
        net = None if path.parent == Path(run_dir) else path.parent.name
        for event in event_file_loader.EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                head, _, rest = value.tag.partition("/")
                tag = value.tag if net is None else f"{head}/{net}/{rest}"
                if tag in series:
                    series[tag].append([int(event.step), float(tf.make_ndarray(value.tensor))])
    return series


def parse_variant(variant: str) -> tuple[str, float | None]:
    """`norm` or `norm@bn_momentum` -> (norm, bn_momentum or None: the recipe's)."""
    norm, _, momentum = variant.partition("@")
    if norm not in NORMS:
        raise SystemExit(f"unknown norm {norm!r} in {variant!r}; allowed: {', '.join(NORMS)}")
    return norm, float(momentum) if momentum else None


def variant_of(record: dict) -> str:
    return record.get("variant", record["norm"])


def variant_order(variant: str) -> tuple:
    norm, momentum = parse_variant(variant)
    return (NORMS.index(norm), momentum or 0.0)


def run_one(variant: str, seed: int, steps: int, diagnostics_every: int, runs_root: str) -> dict:
    """Train the default recipe with the variant's norm in both networks (and its bn_momentum,
    if it names one); return the run's record."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import warnings

    warnings.simplefilter("ignore")  # scale alarms: expected for the failing baselines
    from rlnorm.loop import train

    norm, momentum = parse_variant(variant)
    config = load_recipe()
    if momentum is not None:
        config = config.replace(bn_momentum=momentum)
    config = config.replace(
        agent=f"cartpole_{variant.replace('@', '_m')}",
        policy_norm=norm,
        value_norm=norm,
        seed=seed,
        total_steps=steps,
        target_return=TARGET,
        diagnostics=True,
        diagnostics_every=diagnostics_every,
        runs_root=runs_root,
        # The stored table (benchmarks/results) was measured on the SyncVectorEnv, the default
        # recipe's env before it moved to the NumPy-vectorized CartPole; kept so the table
        # reproduces. Drop this line to measure on the recipe's own env.
        vectorization_mode="sync",
    )
    t0 = time.perf_counter()
    summary = train(config, quiet=True)
    wall = time.perf_counter() - t0
    record = {
        "variant": variant,
        "norm": norm,
        "bn_momentum": config.bn_momentum,
        "seed": seed,
        "steps_to_target": summary["steps_to_target"],
        "final_step": summary["total_steps"],
        "mean_return_last_100": summary["mean_return_last_100"],
        "best_mean_return_last_100": summary["best_mean_return_last_100"],
        "stopped_by": summary["stopped_by"],
        "steps_per_second": summary["steps_per_second"],
        "wall_seconds": wall,
        "return_curve": summary["return_curve"],
    }
    record.update(diagnostics_record(summary["run_dir"]))
    return record


def diagnostics_record(run_dir: str) -> dict:
    """What the table reads from a run's diagnostics: the train/infer KL (mean, max, series),
    the value gap, and the scales that explain a failure (weight norms, entropy, logits)."""
    series = read_scalars(run_dir, (KL_TAG, VALUE_GAP_TAG, *EXTRA_TAGS.values()))
    kl, gap = series[KL_TAG], series[VALUE_GAP_TAG]
    record = {
        "kl_mean": sum(v for _, v in kl) / len(kl) if kl else None,
        "kl_max": max(v for _, v in kl) if kl else None,
        "kl_points": len(kl),
        "value_gap_mean": sum(v for _, v in gap) / len(gap) if gap else None,
        "kl_curve": kl,
    }
    for key, tag in EXTRA_TAGS.items():
        values = [v for _, v in series[tag]]
        record[key] = {
            "first": values[0] if values else None,
            "last": values[-1] if values else None,
            "min": min(values) if values else None,
            "max": max(values) if values else None,
        }
    return record


# ------------------------------------------------------------------------------- rendering
def fmt_steps(s: int | None) -> str:
    return "-" if s is None else f"{s / 1000:.0f}k" if s >= 10_000 else str(s)


def fmt_kl(x: float | None) -> str:
    if x is None:
        return "0 (same function)"
    return "0" if x == 0 else f"{x:.1e}" if abs(x) < 1e-3 else f"{x:.3f}"


def fmt_num(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def run_cell(r: dict) -> str:
    if r["steps_to_target"] is not None:
        return f"**{fmt_steps(r['steps_to_target'])}**"
    return f"not solved: {r['mean_return_last_100']:.0f} at {fmt_steps(r['final_step'])}"


def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def by_variant(results: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in sorted(results["runs"], key=lambda r: (variant_order(variant_of(r)), r["seed"])):
        out.setdefault(variant_of(r), []).append(r)
    return out


def label(variant: str) -> str:
    norm, momentum = parse_variant(variant)
    if momentum is None:
        return f"`{norm}`"
    own = " (its recipe)" if is_own_recipe(variant) else ""
    return f"`{norm}`, bn_momentum {momentum:g}{own}"


def own_momentum(norm: str) -> float | None:
    """bn_momentum set by the variant's own recipe agents/cartpole_<norm>.py (None: no recipe or
    it keeps the default recipe's)."""
    path = ROOT / "agents" / f"cartpole_{norm}.py"
    if not path.exists():
        return None
    m = load_recipe(path).bn_momentum
    return None if m == load_recipe().bn_momentum else m


def is_own_recipe(variant: str) -> bool:
    """`norm@m` where m is what the variant's own recipe sets: the variant as it ships."""
    norm, momentum = parse_variant(variant)
    return momentum is not None and momentum == own_momentum(norm)


def best_variant(groups: dict[str, list[dict]]) -> str | None:
    """The new BatchNorm variant (with the default recipe, or the bn_momentum its own recipe
    sets) that solves the most seeds, then with the fewest mean steps."""
    scored = []
    for variant, runs in groups.items():
        norm, momentum = parse_variant(variant)
        if norm not in ("batch_renorm", "batch_moving"):
            continue
        if momentum is None or is_own_recipe(variant):
            solved = [r["steps_to_target"] for r in runs if r["steps_to_target"] is not None]
            scored.append((-len(solved), mean(solved) or float("inf"), variant))
    return min(scored)[2] if scored else None


def render_markdown(results: dict) -> str:
    groups = by_variant(results)
    steps = results["steps"]
    lines = [
        "# BatchNorm in A2C: CartPole-v1 results",
        "",
        "Generated by "
        + " then ".join(f"`{c}`" for c in results.get("commands", [results["command"]]))
        + f" (last on {results['date']}; {results['machine']}).",
        "Default recipe (`agents/cartpole.py`: 8 envs x 5 steps, RMSprop 7e-4, gamma 0.99) "
        "with the norm in both networks, nothing else changed. A run stops when the last-100 "
        f'mean return reaches {TARGET:.0f} ("solved"; the step is shown) or after '
        f"{fmt_steps(steps)} env steps (the final last-100 mean is shown). Train/infer KL: "
        "KL(training-mode policy || inference-mode policy) on the update batch, measured by "
        f"rlnorm's diagnostics every {results['diagnostics_every']} env steps and averaged "
        "over the run. Steps/s include those diagnostics and depend on the machine's load "
        f"({results['jobs']} runs at a time on a shared 2-core machine): compare within this "
        "table only. A row `norm, bn_momentum m` changes the recipe's `bn_momentum` (0.99); "
        "marked `(its recipe)` it is the variant as its own recipe "
        "(`agents/cartpole_<norm>.py`) ships it, which counts for the issue's goal (a variant "
        "may choose its layer defaults), otherwise it is an ablation.",
        "",
        "| norm | " + " | ".join(f"seed {s}" for s in results["seeds"]) + " | solved | "
        "mean train/infer KL (max) | mean steps/s |",
        "|---|" + "---|" * len(results["seeds"]) + "---|---|---|",
    ]
    for variant, runs in groups.items():
        cells = {r["seed"]: run_cell(r) for r in runs}
        solved = sum(r["steps_to_target"] is not None for r in runs)
        kl = mean([r["kl_mean"] for r in runs])
        kl_max = max((r["kl_max"] for r in runs if r["kl_max"] is not None), default=None)
        kl_text = fmt_kl(kl) if kl_max is None else f"{fmt_kl(kl)} ({fmt_kl(kl_max)})"
        sps = mean([r["steps_per_second"] for r in runs])
        lines.append(
            f"| {label(variant)} | "
            + " | ".join(cells.get(s, "not run") for s in results["seeds"])
            + f" | {solved}/{len(runs)} | {kl_text} | {sps:,.0f} |"
        )
    lines += [
        "",
        "![last-100 mean return vs env steps](batchnorm_curves.png)",
        "",
        "Per run:",
        "",
        "| norm | seed | steps to solve | final last-100 mean | best last-100 mean | "
        "train/infer KL mean | KL max | value gap / return std | value weight norm "
        "start -> end | policy logit std max | policy entropy min | steps/s | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for variant, runs in groups.items():
        for r in runs:
            gap = r["value_gap_mean"]
            lines.append(
                f"| {label(variant)} | {r['seed']} | {fmt_steps(r['steps_to_target'])} | "
                f"{r['mean_return_last_100']:.1f} | {r['best_mean_return_last_100']:.1f} | "
                f"{fmt_kl(r['kl_mean'])} | {fmt_kl(r['kl_max'])} | "
                f"{'-' if gap is None else f'{gap:.3f}'} | "
                f"{fmt_num(r['value_weight_norm']['first'])} -> "
                f"{fmt_num(r['value_weight_norm']['last'])} | "
                f"{fmt_num(r['policy_logit_std']['max'])} | "
                f"{fmt_num(r['policy_entropy']['min'], 3)} | "
                f"{r['steps_per_second']:,.0f} | {r['wall_seconds']:.0f} |"
            )
    lines += ["", "## What the numbers say", "", interpretation(groups, steps), ""]
    lines += ["## The variants (for the README)", ""]
    for norm in BN_NORMS:
        lines += [f"**`{norm}`.** {VARIANT_NOTES[norm]}", ""]
    return "\n".join(lines)


def interpretation(groups: dict[str, list[dict]], steps: int) -> str:
    """Sentences computed from the results (so the numbers stay true when regenerated); the
    explanations in them are hypotheses the diagnostics support, not isolated causes."""

    def solved(norm):
        runs = groups.get(norm, [])
        return sum(r["steps_to_target"] is not None for r in runs), len(runs)

    def span(norms, key, stat, digits=1):
        xs = [r[key][stat] for n in norms for r in groups.get(n, []) if r.get(key)]
        xs = [x for x in xs if x is not None]
        if not xs:
            return "-"
        low, high = f"{min(xs):.{digits}f}", f"{max(xs):.{digits}f}"
        return low if low == high else f"{low}-{high}"

    def entropy_floor(norms):  # the lowest policy entropy of any run of `norms`
        return min(r["policy_entropy"]["min"] or 0.0 for n in norms for r in groups[n])

    def entropy_ceiling(norms):  # the highest per-run entropy minimum of `norms`
        return max(r["policy_entropy"]["min"] or 0.0 for n in norms for r in groups[n])

    parts = []
    best = best_variant(groups)
    if best is not None:
        n, total = solved(best)
        runs = groups[best]
        kl = mean([r["kl_mean"] for r in runs])
        worst = max((r["steps_to_target"] or steps + 1) for r in runs)
        meets = n == total == 3 and worst <= steps and kl is not None and kl < KL_GOAL
        parts.append(
            f"**The issue's goal (a BatchNorm variant solving 3/3 seeds within "
            f"{fmt_steps(steps)} with KL < {KL_GOAL}) is {'met' if meets else 'NOT met'}.** "
            f"The best variant, {label(best)}, solved {n}/{total} seeds"
            + (f" (slowest: {fmt_steps(worst)})" if worst <= steps else "")
            + f" with a mean train/infer KL of {fmt_kl(kl)}."
        )
    if "batch" in groups:
        n, total = solved("batch")
        kl = mean([r["kl_mean"] for r in groups["batch"]])
        parts.append(
            f"Plain `batch` solved {n}/{total} with a mean KL of {fmt_kl(kl)}: the policy the "
            "update differentiates is not the one that acted."
        )
    variants = [n for n in ("batch_renorm", "batch_moving") if n in groups]
    if variants:
        parts.append(
            "The variants remove that gap ("
            + ", ".join(
                f"`{n}` KL {fmt_kl(mean([r['kl_mean'] for r in groups[n]]))}" for n in variants
            )
            + "), yet consistency alone did not make BatchNorm learn reliably with the "
            "default bn_momentum (0.99)."
        )
    bn = [n for n in BN_NORMS if n in groups]  # as the recipe has them (no ablations)
    ref = [n for n in ("none", "layer") if n in groups]
    if bn and ref:
        parts.append(
            "Every batch-statistics norm also drove the policy towards determinism much "
            "earlier (a symptom or a cause: not isolated here): "
            f"the within-state logit std peaked at {span(bn, 'policy_logit_std', 'max')} and "
            f"the policy entropy fell to {span(bn, 'policy_entropy', 'min', 3)} nats, against "
            f"{span(ref, 'policy_logit_std', 'max')} and {span(ref, 'policy_entropy', 'min', 3)} "
            f"for {' and '.join(ref)}; after that the return curves of the unsolved runs "
            "oscillate instead of converging. A plausible cause (a hypothesis): with "
            "batch statistics the function each state maps to depends on the recent state "
            "distribution, which the policy itself changes, on top of the per-unit "
            "standardization that amplifies whatever separates the states of one batch."
        )
    if "batch_moving" in groups:
        parts.append(
            "`batch_moving` adds a second problem: no gradient flows through its statistics, "
            "so the optimizer keeps pushing unit means and scales that the next EMA steps take "
            "back (Ioffe & Szegedy 2015, Sec. 2); its value network's weight norm grew from "
            f"{span(['batch_moving'], 'value_weight_norm', 'first')} to "
            f"{span(['batch_moving'], 'value_weight_norm', 'last')}, against "
            f"{span([n for n in groups if n != 'batch_moving'], 'value_weight_norm', 'last')} "
            "at the end of every other run."
        )
    for variant in [v for v in groups if "@" in v]:
        norm, momentum = parse_variant(variant)
        n, total = solved(variant)
        same = groups.get(norm)
        own = is_own_recipe(variant)
        parts.append(
            (
                f"Variant `{norm}` with its recipe's bn_momentum {momentum:g}"
                if own
                else f"Ablation, {label(variant)}"
            )
            + " (moving statistics that follow the state distribution "
            f"{(1 - 0.99) / (1 - momentum):.0f}x more slowly"
            + ("" if own else "; a recipe change")
            + f"): solved {n}/{total}"
            + (f" (at bn_momentum 0.99: {solved(norm)[0]}/{solved(norm)[1]})" if same else "")
            + f", train/infer KL {fmt_kl(mean([r['kl_mean'] for r in groups[variant]]))}, "
            f"logit std peak {span([variant], 'policy_logit_std', 'max')}, entropy minimum "
            f"{span([variant], 'policy_entropy', 'min', 3)}"
            + (
                ": the early determinism is gone, which supports the hypothesis above, but "
                f"{total} seeds are too few to call it a fix."
                if entropy_floor([variant]) > 2 * entropy_ceiling(bn)
                else "."
            )
        )
    if ref:
        parts.append(
            "For reference: "
            + ", ".join(f"`{n}` solved {solved(n)[0]}/{solved(n)[1]}" for n in ref)
            + (
                ". Until a BatchNorm variant passes, use `layer` (or `none`) inside on-policy "
                "networks."
                if best is None or solved(best)[0] < 3
                else f". `layer` and `none` remain simpler; use {label(best)} when you need "
                "batch statistics."
            )
        )
    return " ".join(parts)


def render_plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = by_variant(results)
    variants = list(groups)[:7]  # 2 x 4 panels: up to 7 variants and the KL panel
    base = dict(zip(NORMS, ("tab:gray", "tab:blue", "tab:red", "tab:green", "tab:purple")))
    extra = iter(("tab:olive", "tab:brown", "tab:cyan", "tab:pink", "tab:orange"))
    colors = {v: base[v] if v in base else next(extra, "k") for v in variants}
    fig, axes = plt.subplots(2, 4, figsize=(19, 8), sharex=True)
    axes = axes.ravel()
    for ax, variant in zip(axes, variants):
        for r in groups[variant]:
            curve = r["return_curve"]
            if not curve:
                continue
            x, y = zip(*curve)
            text = f"seed {r['seed']}: " + (
                f"solved at {fmt_steps(r['steps_to_target'])}"
                if r["steps_to_target"] is not None
                else f"{r['mean_return_last_100']:.0f} at {fmt_steps(r['final_step'])}"
            )
            style = ("-", "--", ":", "-.")[r["seed"] % 4]
            ax.plot(x, y, lw=0.9, ls=style, color=colors[variant], label=text)
        ax.axhline(TARGET, color="k", ls="--", lw=0.7)
        ax.set_title(label(variant).replace("`", ""))
        ax.set_ylim(0, 510)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    for ax in axes[len(variants) :]:
        ax.axis("off")
    # Last panel: the train/infer KL of the BatchNorm variants over training.
    kl_ax = axes[-1]
    bn_variants = [v for v in variants if parse_variant(v)[0] in BN_NORMS]
    if bn_variants:
        kl_ax.axis("on")
        for variant in bn_variants:
            for r in groups[variant]:
                pts = [(s, max(v, 1e-9)) for s, v in r["kl_curve"]]
                if pts:
                    x, y = zip(*pts)
                    name = label(variant).replace("`", "") if r is groups[variant][0] else None
                    kl_ax.plot(x, y, lw=0.8, color=colors[variant], label=name)
        kl_ax.axhline(KL_GOAL, color="k", ls="--", lw=0.7)
        kl_ax.set_yscale("log")
        kl_ax.set_ylim(1e-9, 30)
        kl_ax.set_title("train/infer KL (nats; 1e-9 = exactly 0)")
        kl_ax.grid(alpha=0.3)
        kl_ax.legend(fontsize=8)
    for ax in axes[4:]:
        ax.set_xlabel("env steps")
        ax.tick_params(labelbottom=True)
    axes[0].set_ylabel("last-100 mean return")
    axes[4].set_ylabel("last-100 mean return")
    fig.suptitle(
        "CartPole-v1, default A2C recipe with the norm in both networks "
        f"(stops at {TARGET:.0f} or {fmt_steps(results['steps'])} steps)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "batchnorm.md").write_text(render_markdown(results))
    render_plot(results, out / "batchnorm_curves.png")


# ------------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    p.add_argument(
        "--norms",
        default=",".join(DEFAULT_VARIANTS),
        help="comma-separated norms; `norm@m` also sets bn_momentum to m",
    )
    p.add_argument("--steps", type=int, default=300_000, help="env-step budget per run")
    p.add_argument("--jobs", type=int, default=2, help="training processes at a time")
    p.add_argument("--diagnostics-every", type=int, default=2_000, help="KL cadence, env steps")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="output folder")
    p.add_argument("--runs-root", default=None, help="keep the runs here (default: temp, deleted)")
    p.add_argument("--merge", action="store_true", help="keep other runs of batchnorm.json")
    p.add_argument("--render-only", action="store_true", help="only re-render from the JSON")
    return p.parse_args(argv)


def command_line(argv: list[str]) -> str:
    """This call's command, without the options that do not change the results."""
    kept, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--runs-root", "--out"):
            skip = True
        elif not a.startswith(("--runs-root=", "--out=")):
            kept.append(shlex.quote(a))
    return " ".join(["python benchmarks/batchnorm_table.py", *kept])


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    json_path = out / "batchnorm.json"
    if args.render_only:
        render(json.loads(json_path.read_text()), out)
        print(f"rendered {out / 'batchnorm.md'} and {out / 'batchnorm_curves.png'}")
        return 0
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = [v.strip() for v in args.norms.split(",")]
    for v in variants:
        parse_variant(v)  # exits on an unknown norm
    # Slow (often unsolved) norms first, so the pool's tail is short.
    order = sorted(
        ((v, s) for v in variants for s in seeds),
        key=lambda vs: (parse_variant(vs[0])[0] not in BN_NORMS, variant_order(vs[0]), vs[1]),
    )
    runs_root = args.runs_root or tempfile.mkdtemp(prefix="rlnorm_bn_")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    previous = json.loads(json_path.read_text()) if args.merge and json_path.exists() else None
    runs = []
    t0 = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    try:
        with cf.ProcessPoolExecutor(args.jobs, mp_context=ctx, max_tasks_per_child=1) as pool:
            futures = {
                pool.submit(run_one, n, s, args.steps, args.diagnostics_every, runs_root): (n, s)
                for n, s in order
            }
            for f in cf.as_completed(futures):
                r = f.result()
                runs.append(r)
                print(
                    f"[{time.perf_counter() - t0:6.0f} s] {r['variant']:>18} seed {r['seed']}: "
                    f"steps_to_target {r['steps_to_target']}, last-100 mean "
                    f"{r['mean_return_last_100']:.1f} at {r['final_step']}, KL "
                    f"{fmt_kl(r['kl_mean'])}, {r['steps_per_second']:.0f} steps/s",
                    flush=True,
                )
    finally:
        if args.runs_root is None:
            shutil.rmtree(runs_root, ignore_errors=True)
    if previous is not None:
        redone = {(r["variant"], r["seed"]) for r in runs}
        runs += [r for r in previous["runs"] if (variant_of(r), r["seed"]) not in redone]
        seeds = sorted({r["seed"] for r in runs})
    command = command_line(argv if argv is not None else sys.argv[1:])
    results = {
        "command": command,
        "commands": (
            previous.get("commands", [previous["command"]]) + [command]
            if previous is not None
            else [command]
        ),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}",
        "steps": args.steps,
        "seeds": seeds,
        "jobs": args.jobs,
        "diagnostics_every": args.diagnostics_every,
        "target_return": TARGET,
        "sweep_wall_seconds": time.perf_counter() - t0,
        "recipe": load_recipe().to_dict(),
        "runs": sorted(runs, key=lambda r: (variant_order(variant_of(r)), r["seed"])),
    }
    out.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=1))
    render(results, out)
    print(f"wrote {json_path}, {out / 'batchnorm.md'}, {out / 'batchnorm_curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
