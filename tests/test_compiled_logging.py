"""One compiled call across many log points (`CompiledUpdater.segments`): a run logs the same
scalars at the same steps, saves the same checkpoints and stops at the same update for a
target return as with one log point per call; plus the compiled backend's cadences and the
XLA cache folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_compiled_train import COMPILED_WALL_CLOCK
from test_train import checkpoint_value, read_events

from rlnorm import lifecycle
from rlnorm.compiled import graph
from rlnorm.compiled import loop as adapter
from rlnorm.compiled.cadences import COMPILED_CADENCES, with_compiled_cadences
from rlnorm.config import Config
from rlnorm.loop import train

pytestmark = pytest.mark.filterwarnings("ignore:rlnorm scale alarm")  # tiny runs: expected

SHORT = dict(
    backend="compiled",
    compile="graph",
    n_envs=16,
    n_steps=8,  # 128 env steps per update; ~100 episodes by update 15
    total_steps=8192,
    hidden_sizes=(16,),
    log_every=200,  # crossed by 1 or 2 updates; some crossings are not due (< 200 since)
    checkpoint_every=3000,
    diagnostics_every=2048,
    histograms_every=10**6,
    seed=3,
    value_target_norm="none",  # a return curve that peaks before the end (the target test)
)
# (CALL_SECONDS, LOG_ROWS): one log point per call (as the loop was), all it may, 3 at most.
MODES = {"one": (0.0, 256), "many": (1e9, 256), "rows": (1e9, 3)}
SEGMENTS = adapter.CompiledUpdater.segments


def run(tmp_path, monkeypatch, mode: str, **changes):
    seconds, rows = MODES[mode]
    monkeypatch.setattr(adapter, "CALL_SECONDS", seconds)
    monkeypatch.setattr(graph, "LOG_ROWS", rows)  # read when the graph is traced
    calls = []

    def counted(self, *args, **kwargs):
        calls.append(args[1])  # n, the updates asked of the call
        return SEGMENTS(self, *args, **kwargs)

    monkeypatch.setattr(adapter.CompiledUpdater, "segments", counted)
    config = Config(runs_root=str(tmp_path / mode), **{**SHORT, **changes})
    summary = train(config, quiet=True)
    run_dir = Path(summary["run_dir"])
    events = {}
    for sibling in ("", "policy", "value"):
        for tag, points in read_events(run_dir / sibling).items():
            if tag not in ("charts/steps_per_second", "config"):  # wall clock, runs_root
                events[f"{sibling}/{tag}"] = [(s, repr(v)) for s, v in points]
    saved = json.loads((run_dir / "summary.json").read_text())
    kept = {k: v for k, v in saved.items() if k not in COMPILED_WALL_CLOCK | {"trace_counts"}}
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").glob("ckpt-*.index"))
    # What the last one holds: the updates the agent really ran, not only the logged steps.
    for name in ("normalizer/count", "normalizer/mean", "policy_optimizer/_iterations"):
        checkpoints.append((name, checkpoint_value(run_dir, name).tolist()))
    return kept, events, checkpoints, calls


def test_many_log_points_per_call_log_the_same_numbers(tmp_path, monkeypatch):
    """With diagnostics: calls also end before each split update (and fused ones between)."""
    one, many, rows = (run(tmp_path, monkeypatch, mode) for mode in MODES)
    for other in (many, rows):
        assert other[0] == one[0]  # summary: curve, episodes, best mean, normalizer, ...
        assert other[1] == one[1]  # every scalar at every step, bit for bit
        assert other[2] == one[2]  # the same checkpoints, holding the same state
    assert len(one[1]["/losses/policy_loss"]) > 20  # ~one point per log_every
    # The calls did span log points: fewer and longer than one per log point.
    assert len(many[3]) < len(rows[3]) < len(one[3])
    assert max(many[3]) > 5  # updates asked of one call


def test_a_target_return_stops_at_the_same_update(tmp_path, monkeypatch):
    """The target is the best last-100 mean the run logs late: reached exactly (mean ==
    target), after the calls began to span log points; both ways stop at the same update."""
    free, *_ = run(tmp_path / "free", monkeypatch, "one", diagnostics=False)
    target = max(mean for step, mean in free["return_curve"] if step > 4096)  # float64
    one = run(tmp_path, monkeypatch, "one", diagnostics=False, target_return=target)
    many = run(tmp_path, monkeypatch, "many", diagnostics=False, target_return=target)
    assert one[0]["stopped_by"] == "target_return"
    assert 4096 < one[0]["steps_to_target"] < SHORT["total_steps"]
    assert many[0] == one[0] and many[1] == one[1] and many[2] == one[2]
    assert len(many[3]) < len(one[3])


# -- the compiled backend's cadences -------------------------------------------------------------
def test_cadences_left_at_their_defaults_get_the_compiled_ones():
    config, line = with_compiled_cadences(Config(backend="compiled"))
    assert {k: getattr(config, k) for k in COMPILED_CADENCES} == COMPILED_CADENCES
    assert all(key in line for key in COMPILED_CADENCES)
    # A value the user chose is kept, and only the others are named.
    config, line = with_compiled_cadences(Config(backend="compiled", checkpoint_every=7))
    assert config.checkpoint_every == 7 and "checkpoint_every" not in line
    assert config.log_every == COMPILED_CADENCES["log_every"]
    # The Python backend, and a config that sets them all, are untouched.
    assert with_compiled_cadences(Config()) == (Config(), None)
    explicit = Config(backend="compiled", **{k: 3 for k in COMPILED_CADENCES})
    assert with_compiled_cadences(explicit) == (explicit, None)


def test_a_compiled_run_records_the_cadences_it_used(tmp_path, capsys):
    config = Config(**{**SHORT, "total_steps": 256, "log_every": Config().log_every})
    config = config.replace(diagnostics=False)
    summary = train(config.replace(runs_root=str(tmp_path)), quiet=False)
    saved = (Path(summary["run_dir"]) / "config.toml").read_text()
    assert f"log_every = {COMPILED_CADENCES['log_every']}" in saved
    assert "checkpoint_every = 3000" in saved  # set by the user
    assert "log_every = 50_000" in capsys.readouterr().err


# -- the XLA cache folder ------------------------------------------------------------------------
def test_xla_runs_get_a_persistent_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("RLNORM_XLA_CACHE", str(tmp_path / "xla"))
    monkeypatch.setenv("TF_XLA_FLAGS", "--tf_xla_auto_jit=0")
    lifecycle.use_xla_cache(Config(compile="graph"))
    lifecycle.use_xla_cache(Config(compile="xla", xla_cache=False))
    assert os.environ["TF_XLA_FLAGS"] == "--tf_xla_auto_jit=0"
    lifecycle.use_xla_cache(Config(compile="xla"))
    flag = f"--tf_xla_persistent_cache_directory={tmp_path / 'xla'}"
    assert os.environ["TF_XLA_FLAGS"] == f"--tf_xla_auto_jit=0 {flag}"
    assert (tmp_path / "xla").is_dir()
    # A folder the user already gave TF wins.
    monkeypatch.setenv("TF_XLA_FLAGS", "--tf_xla_persistent_cache_directory=/mine")
    lifecycle.use_xla_cache(Config(compile="xla"))
    assert os.environ["TF_XLA_FLAGS"] == "--tf_xla_persistent_cache_directory=/mine"
    monkeypatch.delenv("RLNORM_XLA_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert lifecycle.xla_cache_dir().parent == tmp_path / "cache" / "rlnorm" / "xla"
