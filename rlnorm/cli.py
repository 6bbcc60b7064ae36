"""The `rlnorm` command: train, eval, export (and the subcommands later issues add).

rlnorm train [CONFIG.toml] [--env ID] [--seed N] ... [--set key=value]
rlnorm train --resume RUN_DIR
rlnorm eval RUN_DIR [--episodes N] [--deterministic]
rlnorm export RUN_DIR OUT_DIR
rlnorm doctor RUN_DIR
"""

from __future__ import annotations

import argparse
import json
import os
import sys

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


def build_config(args, base: config_lib.Config | None = None) -> config_lib.Config:
    """defaults (or `base`) <- TOML file <- named flags <- --set overrides, validated."""
    config = base or config_lib.Config()
    if getattr(args, "config", None):
        config = config_lib.load_toml(args.config, config)
    overrides = {}
    for flag, key in TRAIN_FLAGS.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"), None)
        if value is not None:
            overrides[key] = value
    for item in args.set or []:
        key, value = config_lib.parse_override(item)
        overrides[key] = value
    return config_lib.from_dict(overrides, config)


def resume_request(args) -> config_lib.Config | None:
    """`train --resume RUN_DIR [overrides]`: the run's saved config with the overrides applied
    (None without overrides). Built on the SAVED config, so a change back to a default value
    counts as a change; `train.resume_config` refuses changes to network shapes or spaces."""
    from rlnorm.run_dir import load_run_config

    flags = (getattr(args, f.lstrip("-").replace("-", "_")) for f in TRAIN_FLAGS)
    if not (args.config or args.set or any(v is not None for v in flags)):
        return None
    return build_config(args, load_run_config(args.resume))


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="TOML config file (keys as in `rlnorm config`)")
    for flag, key in TRAIN_FLAGS.items():
        doc = config_lib.field_docs().get(key, "")
        choices = config_lib.NORMS if key.endswith("_norm") else None
        p.add_argument(
            flag, dest=flag.lstrip("-").replace("-", "_"), default=None, choices=choices, help=doc
        )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override any config key, e.g. --set gamma=0.98 (repeatable)",
    )
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def main(argv: list[str] | None = None, base_config: config_lib.Config | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(
        prog="rlnorm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    add_train_arguments(sub.add_parser("train", help="train an A2C agent"))
    p = sub.add_parser("eval", help="evaluate a run's latest checkpoint on fresh envs")
    p.add_argument("run_dir")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--deterministic", action="store_true", help="take the mode action")
    p.add_argument("--seed", type=int, default=None)
    p = sub.add_parser("export", help="export a SavedModel: raw observation -> action")
    p.add_argument("run_dir")
    p.add_argument("out_dir")
    sub.add_parser("config", help="print every config key with its default and meaning")
    p = sub.add_parser("doctor", help="print a run's scale-health report from its event files")
    p.add_argument("run_dir")
    args = parser.parse_args(argv)
    try:
        return run_command(args, base_config)
    except (config_lib.ConfigError, ValueError, FileNotFoundError, FloatingPointError) as e:
        print(f"rlnorm {args.command}: error: {e}", file=sys.stderr)
        return 2


def run_command(args, base_config) -> int:
    if args.command == "config":
        docs = config_lib.field_docs()
        for key, value in config_lib.Config().to_dict().items():
            print(f"{key} = {value!r}\n    {docs.get(key, '')}")
        return 0
    if args.command == "train":
        from rlnorm.loop import train

        config = build_config(args, base_config) if not args.resume else resume_request(args)
        summary = train(config, resume=args.resume, quiet=args.quiet)
        keys = (
            "run_dir",
            "total_steps",
            "mean_return_last_100",
            "best_mean_return_last_100",
            "steps_to_target",
            "steps_per_second",
            "wall_seconds",
            "stopped_by",
        )
        print(json.dumps({k: summary[k] for k in keys}, indent=1))
        return 0
    if args.command == "eval":
        from rlnorm.evaluate import evaluate

        r = evaluate(args.run_dir, args.episodes, args.deterministic, args.seed)
        print(
            f"{r['env_id']}: mean return {r['mean_return']:.2f} +- {r['std_return']:.2f} over "
            f"{r['episodes']} episodes ({'deterministic' if r['deterministic'] else 'sampled'})"
            f" -> {args.run_dir}/eval.json"
        )
        return 0
    if args.command == "doctor":
        from rlnorm.doctor import doctor

        print(doctor(args.run_dir))
        return 0
    if args.command == "export":
        from rlnorm.export import export

        print(f"SavedModel written to {export(args.run_dir, args.out_dir)}")
        return 0
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
