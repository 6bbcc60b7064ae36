"""Overhead of the scale diagnostics: training steps/s with diagnostics off vs on.

The default CartPole recipe (agents/cartpole.py, no early stop) runs `--steps` env steps with
`diagnostics = false` and with the default cadence (`diagnostics_every`, `histograms_every`),
in ONE process, alternating ABBA (off, on, on, off, ...) so a drifting machine load hits both
alike. Steps/s is total env steps over the wall time of the whole `train()` call, so the
diagnostics' one-time costs (tracing their pass, the layout, the HParams session) count.

    python benchmarks/diagnostics_overhead.py                  # 60k steps, 3 pairs
    python benchmarks/diagnostics_overhead.py --steps 100000 --pairs 5 --norm batch

Prints JSON with three measures of the overhead in percent (the budget: at most 10):
  overhead_percent         100 * (1 - median steps/s on / median steps/s off)
  cpu_overhead_percent     the same per CPU-second of this process
  direct_overhead_percent  t_d / (T - t_d) per run with diagnostics on, t_d the time spent
                           inside ScaleDiagnostics' methods (timed), T the run's time
On a shared machine the first two swing by +-10% between identical runs; the direct one
does not (it only misses costs outside those methods, e.g. cache effects).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


INSIDE = {"wall": 0.0, "cpu": 0.0}  # time spent inside ScaleDiagnostics' methods


def time_diagnostics() -> None:
    """Wrap every ScaleDiagnostics method the training loop calls with a timer: the direct
    cost of the diagnostics, which a busy machine disturbs far less than a steps/s ratio."""
    from rlnorm.diagnostics import ScaleDiagnostics

    def timed(method):
        def wrapper(*args, **kwargs):
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return method(*args, **kwargs)
            finally:
                INSIDE["wall"] += time.perf_counter() - wall
                INSIDE["cpu"] += time.process_time() - cpu

        return wrapper

    # record_update runs before_update and after_update (the compiled pass and the writing).
    for name in ("__init__", "due", "capture", "record_update"):
        setattr(ScaleDiagnostics, name, timed(getattr(ScaleDiagnostics, name)))


def run(config, diagnostics: bool, root: Path, index: int) -> dict:
    """Env steps per wall second and per CPU second of this process; the share of the run's
    wall and CPU time spent inside the diagnostics."""
    from rlnorm.loop import train

    run_dir = root / f"{'on' if diagnostics else 'off'}_{index}"
    config = config.replace(diagnostics=diagnostics, run_dir=str(run_dir))
    INSIDE.update(wall=0.0, cpu=0.0)
    wall, cpu = time.perf_counter(), time.process_time()
    summary = train(config, quiet=True)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    steps = summary["total_steps"]
    return {
        "sps": steps / wall,
        "cpu_sps": steps / cpu,
        "inside_wall": INSIDE["wall"] / wall,
        "inside_cpu": INSIDE["cpu"] / cpu,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=60_000, help="env steps per training run")
    p.add_argument("--pairs", type=int, default=3, help="off/on pairs (ABBA order)")
    p.add_argument("--norm", default="none", help="policy_norm and value_norm of every run")
    p.add_argument("--json", default=None, help="also write the result here")
    args = p.parse_args()

    import warnings

    from agents.cartpole import CONFIG
    from rlnorm.alarms import ScaleAlarmWarning

    warnings.simplefilter("ignore", ScaleAlarmWarning)
    config = CONFIG.replace(
        total_steps=args.steps,
        target_return=None,
        policy_norm=args.norm,
        value_norm=args.norm,
        checkpoint_every=10**9,  # only the final checkpoint, in both settings
    )
    time_diagnostics()
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run(config.replace(total_steps=2_000), False, root, -1)  # warm-up: imports, first traces
        for i in range(args.pairs):
            order = (False, True) if i % 2 == 0 else (True, False)
            for diagnostics in order:
                key = "on" if diagnostics else "off"
                r = run(config, diagnostics, root, i)
                runs[key].append(r)
                print(
                    f"pair {i}: diagnostics {key:<3} {r['sps']:6.0f} steps/s "
                    f"{r['cpu_sps']:6.0f} steps/CPU-s, inside diagnostics "
                    f"{100 * r['inside_wall']:.1f}% of wall, {100 * r['inside_cpu']:.1f}% of CPU",
                    file=sys.stderr,
                )

    def series(key, field):
        return [r[field] for r in runs[key]]

    def overhead(field):
        return 100.0 * (
            1.0 - statistics.median(series("on", field)) / statistics.median(series("off", field))
        )

    # Direct: time inside the diagnostics t_d of a run of wall time T costs t_d / (T - t_d).
    direct = [100.0 * x / (1.0 - x) for x in series("on", "inside_wall")]
    direct_cpu = [100.0 * x / (1.0 - x) for x in series("on", "inside_cpu")]
    result = {
        "env_id": config.env_id,
        "norm": args.norm,
        "total_steps": args.steps,
        "diagnostics_every": config.diagnostics_every,
        "histograms_every": config.histograms_every,
        "steps_per_second_off": series("off", "sps"),
        "steps_per_second_on": series("on", "sps"),
        "overhead_percent": overhead("sps"),
        "steps_per_cpu_second_off": series("off", "cpu_sps"),
        "steps_per_cpu_second_on": series("on", "cpu_sps"),
        "cpu_overhead_percent": overhead("cpu_sps"),
        "direct_overhead_percent": direct,
        "direct_cpu_overhead_percent": direct_cpu,
        "median_direct_overhead_percent": statistics.median(direct),
        "median_direct_cpu_overhead_percent": statistics.median(direct_cpu),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
