"""One process at a time: a second one fails fast naming the holder; a killed holder leaves no lock."""

from __future__ import annotations

import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiment import DirectoryLockedError
from experiment.store.directory import RunDirectory
from experiment.store.lock import read_holder
from tests.support.training import make_data, make_experiment, train_run

HOLD_LOCK = """
import sys
from experiment.store.directory import RunDirectory

directory = RunDirectory(sys.argv[1])
directory.prepare()
lock = directory.lock()  # kept referenced: a collected lock object releases its lock
lock.acquire()
print("locked", flush=True)
sys.stdin.read()  # hold the lock until stdin closes or the process is killed
"""


def start_holder(run_dir: Path) -> subprocess.Popen[str]:
    """A separate process that takes the directory's lock; returns once it holds it."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    ready, _, _ = select.select([process.stdout], [], [], 60)
    line = process.stdout.readline() if ready else ""
    if line.strip() != "locked":
        process.kill()
        pytest.fail(f"the lock holder did not start (exit code {process.wait()})")
    return process


@pytest.mark.slow
def test_lock_second_process_fails_fast_and_kill_frees_the_lock(tmp_path):
    run_dir = tmp_path / "run"
    train_run(run_dir, epochs=1)
    holder = start_holder(run_dir)
    try:
        assert RunDirectory(run_dir).is_locked()
        exp = make_experiment(run_dir)
        pattern = (
            rf"{run_dir} is in use by another process \(pid {holder.pid} on host {socket.gethostname()}\)"
        )
        started = time.perf_counter()
        with pytest.raises(DirectoryLockedError, match=pattern):
            exp.train(make_data(), make_data(48, seed=2), epochs=2)
        waited = time.perf_counter() - started
        with pytest.raises(DirectoryLockedError, match=pattern):
            exp.test(make_data(48, seed=2))
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdin.close()
        holder.stdout.close()
    assert waited < 2.0, f"the second process waited {waited:.2f} s for the lock"  # it waits 0.5 s
    # The kernel dropped the killed process's lock: no stale lock, no waiting.
    assert not RunDirectory(run_dir).is_locked()
    resumed = train_run(run_dir, epochs=2)
    assert list(resumed.logs["epoch"]) == [1, 2]
    assert read_holder(run_dir / ".lock.holder")["pid"] != holder.pid


def test_lock_is_released_after_train_and_after_an_error(tmp_path):
    train_run(tmp_path, epochs=1)
    assert not RunDirectory(tmp_path).is_locked()
    train_run(tmp_path, epochs=2, interrupt_at=8)  # raises inside the loop; train_run swallows it
    assert not RunDirectory(tmp_path).is_locked()
