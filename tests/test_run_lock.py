"""One writer per run folder (RunLock), and new runs never land in a folder that holds one.

The lock holder is a real process, so the tests see what a second `rlnorm train` would: its
PID in the refusal, and the lock gone once it exits, also when it is SIGKILLed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rlnorm.cli import main
from rlnorm.config import Config
from rlnorm.run_dir import RunDirError, RunLock, new_run_dir, refuse_existing_run

HOLDER = textwrap.dedent(
    """
    import sys, time
    from rlnorm.run_dir import RunLock

    with RunLock(sys.argv[1]):
        print("locked", flush=True)
        sys.stdin.readline()  # until the test says so (or kills us)
    print("released", flush=True)
    """
)


@pytest.fixture
def holder(tmp_path):
    """Start a process that holds the lock on tmp_path/run; yields (run dir, process)."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield run_dir, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)


def refusal(run_dir: Path) -> str:
    with pytest.raises(RunDirError) as error:
        with RunLock(run_dir):
            pass
    return str(error.value)


def test_a_second_writer_is_refused_naming_the_holder(holder):
    run_dir, proc = holder
    message = refusal(run_dir)
    assert message.startswith(f"Run {str(run_dir)!r} is being written by process {proc.pid} on ")
    assert "(started " in message
    assert message.endswith("wait for it or pass another --run-dir.")


def test_the_lock_is_free_once_the_holder_exits(holder):
    run_dir, proc = holder
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "released"
    assert proc.wait(timeout=60) == 0
    with RunLock(run_dir):
        assert str(os.getpid()) in (run_dir / ".lock").read_text()


def test_a_sigkilled_holder_leaves_no_stale_lock(holder):
    """The OS drops a flock with its process: the file stays, naming the dead PID, inert."""
    run_dir, proc = holder
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert f"process {proc.pid} " in (run_dir / ".lock").read_text()
    with RunLock(run_dir):
        assert refusal(run_dir).startswith(f"Run {str(run_dir)!r} is being written by process")
    with RunLock(run_dir):  # and released again on exit
        pass


def test_a_missing_folder_is_refused_not_created(tmp_path):
    """`rlnorm train --resume MISSING` must say so, not lock a folder it just made."""
    assert refusal(tmp_path / "missing") == f"{str(tmp_path / 'missing')!r} is not a directory."
    assert not (tmp_path / "missing").exists()


# -- new runs and existing folders -----------------------------------------------------------
@pytest.mark.parametrize(
    "content", ["config.toml", "checkpoints/", "events.out.tfevents.1.host"], ids=str
)
def test_a_folder_holding_a_run_is_refused_for_a_new_run(tmp_path, content):
    path = tmp_path / "run"
    path.mkdir()
    if content.endswith("/"):
        (path / content).mkdir()
    else:
        (path / content).write_text("")
    expected = (
        f"{str(path)!r} already holds a run; continue it with `rlnorm train --resume {path}`, "
        "or give a new --run-dir."
    )
    with pytest.raises(RunDirError) as error:
        refuse_existing_run(path)
    assert str(error.value) == expected
    with pytest.raises(RunDirError, match="already holds a run"):
        new_run_dir(Config(run_dir=str(path)))


def test_an_empty_or_new_folder_is_accepted(tmp_path):
    (tmp_path / "empty").mkdir()
    for name in ("empty", "new"):
        refuse_existing_run(tmp_path / name)
        assert new_run_dir(Config(run_dir=str(tmp_path / name))) == tmp_path / name
        assert (tmp_path / name).is_dir()


def test_files_where_folders_belong_are_refused(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("not a folder")
    with pytest.raises(RunDirError, match="is a file, not a run folder"):
        new_run_dir(Config(run_dir=str(a_file)))
    with pytest.raises(RunDirError, match="runs_root .* is a file, not a folder"):
        new_run_dir(Config(runs_root=str(a_file)))
    with pytest.raises(RunDirError, match="Cannot create the run folder"):
        new_run_dir(Config(run_dir=str(a_file / "run")))
    assert a_file.read_text() == "not a folder"


@pytest.mark.parametrize("agent", ["../../x", "a/b", "..\\x/../../y"])
def test_the_agent_name_cannot_lead_out_of_runs_root(tmp_path, agent):
    root = tmp_path / "root" / "runs"
    with pytest.raises(RunDirError, match="would put the run outside runs_root"):
        new_run_dir(Config(runs_root=str(root), agent=agent))
    assert not (tmp_path / "x").exists() and list(tmp_path.rglob("*")) == []


def test_train_into_a_folder_that_holds_a_run_exits_2(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.toml").write_text("seed = 1\n")
    assert main(["train", "--run-dir", str(run_dir), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"rlnorm train: error: {str(run_dir)!r} already holds a run" in err
    assert (run_dir / "config.toml").read_text() == "seed = 1\n"
