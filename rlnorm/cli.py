"""The `rlnorm` command: train, eval, export, config, doctor, sweep.

rlnorm train [RECIPE | RECIPE.py | CONFIG.toml] [--env ID] [--seed N] ... [--set key=value]
rlnorm train --resume RUN_DIR [overrides]
rlnorm eval RUN_DIR [--episodes N] [--deterministic]
rlnorm export RUN_DIR OUT_DIR
rlnorm config [--recipe NAME]
rlnorm doctor RUN_DIR
rlnorm sweep SWEEP.toml [--out DIR] [--address ADDR] | rlnorm sweep --resume SWEEP_DIR
rlnorm regress RECIPE --seeds N [--set key=value] [--baseline FILE | --update-baseline] ...

A bare `rlnorm train` trains the default recipe (agents/cartpole.py, like `make train`);
`rlnorm train --env ID` without a recipe or config file starts from the defaults
(`rlnorm config`), as does a .toml file. `rlnorm config > c.toml` writes every key with its
default and meaning, a file `rlnorm train c.toml` reads back.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import traceback
from pathlib import Path

from rlnorm import config as config_lib

# Flags that map 1:1 onto config keys (the rest go through --set key=value).
TRAIN_FLAGS = {
    "--env": "env_id",
    "--seed": "seed",
    "--total-steps": "total_steps",
    "--n-envs": "n_envs",
    "--policy-norm": "policy_norm",
    "--value-norm": "value_norm",
    "--run-dir": "run_dir",
    "--backend": "backend",
}
NEEDS_TENSORFLOW = ("train", "eval", "export", "doctor", "regress")
NO_TENSORFLOW = "TensorFlow is not installed: pip install 'rlnorm[cpu]' (or 'rlnorm[gpu]')."


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _overrides(args) -> dict:
    """The named flags and --set items of the command line, as config keys."""
    overrides = {}
    for flag, key in TRAIN_FLAGS.items():
        value = getattr(args, _dest(flag), None)
        if value is not None:
            overrides[key] = value
    for item in args.set or []:
        key, value = config_lib.parse_override(item)
        overrides[key] = value
    return overrides


def is_recipe(arg: str) -> bool:
    """A recipe name (`cartpole`) or a recipe file (`agents/pendulum.py`); else a TOML file."""
    path = Path(arg)
    return path.suffix == ".py" or (not path.suffix and not path.is_file())


def default_base() -> config_lib.Config:
    """The default recipe, or the plain defaults where no agents/ folder is found (an installed
    wheel outside the source checkout), saying so."""
    from rlnorm import recipes

    try:
        path = recipes.recipe_path(recipes.DEFAULT_RECIPE)
    except config_lib.ConfigError:
        print(
            f"rlnorm train: no agents/{recipes.DEFAULT_RECIPE}.py found; training the defaults "
            "(`rlnorm config`).",
            file=sys.stderr,
        )
        return config_lib.Config()
    return recipes.load_recipe(path)


def build_config(args, base: config_lib.Config | None = None) -> config_lib.Config:
    """base <- recipe or TOML file <- named flags <- --set overrides, validated. The base is
    `base` (a recipe's own script), else the default recipe unless the command line names a
    config file or an env, else the defaults."""
    overrides = _overrides(args)
    source = getattr(args, "config", None)
    if source and is_recipe(source):
        from rlnorm.recipes import load_recipe

        config = load_recipe(source)
    elif source:
        config = config_lib.load_toml(source, base or config_lib.Config())
    elif base is not None:
        config = base
    else:
        config = config_lib.Config() if "env_id" in overrides else default_base()
    return config_lib.from_dict(overrides, config)


def resume_request(args) -> config_lib.Config | None:
    """`train --resume RUN_DIR [overrides]`: the run's saved config with the overrides applied
    (None without overrides). Built on the SAVED config, so a change back to a default value
    counts as a change; `train.resume_config` refuses changes to network shapes or spaces."""
    from rlnorm.run_dir import load_run_config

    flags = (getattr(args, _dest(f)) for f in TRAIN_FLAGS)
    if not (args.config or args.set or any(v is not None for v in flags)):
        return None
    return build_config(args, load_run_config(args.resume))


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "config",
        nargs="?",
        help="a recipe name (agents/<name>.py, e.g. cartpole), a recipe .py file or a TOML "
        "config (keys as in `rlnorm config`); default: the cartpole recipe",
    )
    docs = config_lib.field_docs()
    for flag, key in TRAIN_FLAGS.items():
        choices = config_lib.FIELDS[key].metadata["choices"]
        p.add_argument(flag, dest=_dest(flag), default=None, choices=choices, help=docs[key])
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override any config key, e.g. --set gamma=0.98 (repeatable; "
        "--set target_return=none unsets a key that allows None)",
    )
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--json", action="store_true", help="end with the run summary as JSON (for scripts)"
    )


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlnorm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    train_help = (
        "Train an A2C agent. CONFIG is a recipe or a TOML file; without one, the cartpole "
        "recipe (agents/cartpole.py), or the defaults (`rlnorm config`) when --env names the env."
    )
    add_train_arguments(sub.add_parser("train", help="train an A2C agent", description=train_help))
    p = sub.add_parser("eval", help="evaluate a run's latest checkpoint on fresh envs")
    p.add_argument("run_dir")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--deterministic", action="store_true", help="take the mode action")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--max-episode-steps",
        type=int,
        default=10_000,
        help="cut an episode the env does not end after this many steps (and say so)",
    )
    p = sub.add_parser("export", help="export a SavedModel: raw observation -> action")
    p.add_argument("run_dir")
    p.add_argument("out_dir")
    p = sub.add_parser("config", help="print every config key with its default as TOML")
    p.add_argument("--recipe", metavar="NAME", help="print this recipe's config instead")
    p = sub.add_parser("doctor", help="print a run's scale-health report from its event files")
    p.add_argument("run_dir")
    p = sub.add_parser(
        "sweep",
        help="run a grid of configs x seeds on Ray Tune (docs/sweeps.md)",
        description="Run every trial of a sweep file as an rlnorm run on Ray Tune, one CPU "
        "each; print the results grouped by the grid keys (IQM and 95% CI over seeds).",
    )
    p.add_argument("sweep", nargs="?", help="the sweep TOML (recipe/config, seeds, [grid], [set])")
    p.add_argument("--out", help="the sweep folder (default: runs/sweeps/<name>__<time>/)")
    p.add_argument(
        "--address",
        help="join this Ray cluster (`auto`, host:port; default: RAY_ADDRESS, "
        "else a local Ray for the sweep)",
    )
    p.add_argument("--resume", metavar="SWEEP_DIR", help="rerun the unfinished trials of a sweep")
    add_regress_arguments(sub)
    return parser


def add_regress_arguments(sub) -> None:
    p = sub.add_parser(
        "regress",
        help="train on many seeds; IQM with CIs, judged against a stored baseline",
        description="Train CONFIG on seeds K..K+N-1 in parallel and report IQM and median with "
        "95%% stratified-bootstrap CIs of steps to the target (censored at the budget), final "
        "return and return-curve area; against the baseline, P(new better) with its CI and a "
        "verdict: pass / improved (exit 0) or regressed (exit 1). See docs/regression.md.",
    )
    p.add_argument("config", help="a recipe name, a recipe .py file or a TOML config")
    p.add_argument("--seeds", type=int, default=16, help="how many seeds (default 16)")
    p.add_argument("--seed-start", type=int, default=0, help="the first seed (default 0)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--baseline", metavar="FILE", help="default: benchmarks/baselines/<agent>.json")
    p.add_argument(
        "--update-baseline", action="store_true", help="write the baseline instead of comparing"
    )
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--out", metavar="DIR", help="default: runs/regress/<agent>__<time>/")
    p.add_argument("--json", metavar="OUT", help="write the report as JSON")
    p.add_argument("--plot", metavar="OUT.png", help="plot the return curves (rlnorm[plots])")
    p.add_argument("--quiet", action="store_true", help="no line per finished seed")
    p.add_argument(
        "--no-seed-batch",
        dest="seed_batch",
        action="store_false",
        help="compiled backend: train the seeds one by one, not all in one graph",
    )


def main(argv: list[str] | None = None, base_config: config_lib.Config | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = make_parser().parse_args(argv)
    # Before any import that needs it: one line, not a traceback from deep inside Keras.
    if args.command in NEEDS_TENSORFLOW and importlib.util.find_spec("tensorflow") is None:
        print(f"rlnorm {args.command}: error: {NO_TENSORFLOW}", file=sys.stderr)
        return 2
    try:
        return run_command(args, base_config)
    except Exception as e:
        message = one_line_error(e)
        if message is None:
            raise
        if os.environ.get("RLNORM_DEBUG", "0") != "0":
            traceback.print_exc()
        print(f"rlnorm {args.command}: error: {message}", file=sys.stderr)
        return 2


def one_line_error(e: Exception) -> str | None:
    """The one line a user sees for an error rlnorm expects (bad input, a misbehaving env, a
    full disk, a read-only folder); None for a bug, which keeps its traceback."""
    if isinstance(e, config_lib.ConfigError | ValueError | FileNotFoundError | FloatingPointError):
        return str(e)
    if isinstance(e, OSError):  # disk full, read-only folder, permissions
        where = f": {e.filename}" if e.filename else ""
        return f"{e.strerror or e}{where}. Checkpoints already on disk are intact."
    tf = sys.modules.get("tensorflow")
    if tf is not None and isinstance(e, tf.errors.OpError):  # e.g. a write failed inside TF
        return f"{type(e).__name__}: {e.message.splitlines()[0]}"
    return None


def print_config(recipe: str | None) -> None:
    if recipe:
        from rlnorm.recipes import load_recipe, recipe_path

        config, header = load_recipe(recipe), f"The config of the recipe {recipe_path(recipe)}."
    else:
        config, header = config_lib.Config(), "Every rlnorm config key with its default."
    header += (
        "\nSave as c.toml, edit, train with `rlnorm train c.toml`; a key left out keeps its "
        'default,\na key that allows None takes "none".'
    )
    print(config_lib.render_toml(config, header), end="")


def run_command(args, base_config) -> int:
    if args.command == "config":
        print_config(args.recipe)
        return 0
    if args.command == "train":
        from rlnorm.loop import train

        config = build_config(args, base_config) if not args.resume else resume_request(args)
        summary = train(config, resume=args.resume, quiet=args.quiet)
        if not args.json:
            from rlnorm.logger import human_summary

            print(human_summary(summary))
            return 0
        keys = (
            "run_dir",
            "total_steps",
            "mean_return_last_100",
            "best_mean_return_last_100",
            "steps_to_target",
            "steps_per_second",
            "wall_seconds",
            "stopped_by",
            "alarms",
        )
        print(json.dumps({k: summary[k] for k in keys}, indent=1))
        return 0
    if args.command == "eval":
        from rlnorm.evaluate import evaluate

        r = evaluate(
            args.run_dir,
            args.episodes,
            args.deterministic,
            args.seed,
            max_episode_steps=args.max_episode_steps,
        )
        where = f"{args.run_dir}/eval.json" if r["written"] else "eval.json NOT written"
        print(
            f"{r['env_id']}: mean return {r['mean_return']:.2f} +- {r['std_return']:.2f} over "
            f"{r['episodes']} episodes ({'deterministic' if r['deterministic'] else 'sampled'})"
            f" -> {where}"
        )
        return 0
    if args.command == "doctor":
        from rlnorm.doctor import report

        text, healthy = report(args.run_dir)
        print(text)
        return 0 if healthy else 1  # 1: a BAD row or an alarm (usable in CI)
    if args.command == "export":
        from rlnorm.export import export

        print(f"SavedModel written to {export(args.run_dir, args.out_dir)}")
        return 0
    if args.command == "sweep":
        from rlnorm.sweep import SweepError, sweep

        if (args.sweep is None) == (args.resume is None):
            raise SweepError("give a sweep file, or --resume SWEEP_DIR (not both).")
        try:
            rows = sweep(args.sweep, args.out, args.address, args.resume)
        except KeyboardInterrupt:  # results and the resume command are printed already
            return 130
        return 0 if all(r["status"] == "done" for r in rows) else 1
    if args.command == "regress":
        from rlnorm.regress import format_report, regress

        overrides = dict(config_lib.parse_override(item) for item in args.set or [])
        try:
            report = regress(
                args.config,
                seeds=args.seeds,
                seed_start=args.seed_start,
                overrides=overrides,
                baseline=args.baseline,
                update_baseline=args.update_baseline,
                workers=args.workers,
                out=args.out,
                json_out=args.json,
                plot=args.plot,
                quiet=args.quiet,
                seed_batch=args.seed_batch,
            )
        except ModuleNotFoundError as e:
            print(f"rlnorm regress: error: {e}", file=sys.stderr)
            return 2
        print(format_report(report))
        return 1 if report["verdict"] == "regressed" else 0
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
