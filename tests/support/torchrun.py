"""Launch a script under torchrun from a test, and reach its workers (their pids, signals to them).

``torchrun --standalone`` picks a free port itself (its c10d rendezvous binds port 0), so launches
never collide; one launch costs about 4 s on a 2-core machine before the script does anything. The
workers inherit torchrun's standard output and error, which go to files (never pipes, which a chatty
worker could fill while the test waits). torchrun starts each worker in a session of its own, so
they are found as the children of the torchrun process, their rank read from their environment.

Example:
    >>> launch = run_torchrun(script, "--workdir", str(tmp_path), nproc=2)
    >>> assert launch.returncode == 0, launch.describe()
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.cli import REPO_ROOT, subprocess_env

#: Environment variables of a torchrun worker: a test started from inside one must not pass them on.
_WORKER_VARIABLES = (
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "GROUP_WORLD_SIZE",
    "ROLE_RANK",
    "ROLE_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_RUN_ID",
    "TORCHELASTIC_RESTART_COUNT",
    "TORCHELASTIC_MAX_RESTARTS",
)

#: One worker in torchrun's failure summary: "rank : 1 (local_rank: 1)" then "exitcode : 143 (pid: ...)".
_FAILURE = re.compile(r"rank\s*:\s*(\d+) \(local_rank: \d+\)\s*\n\s*exitcode\s*:\s*(-?\d+)")

#: How long a launch may take unless the caller says otherwise.
LAUNCH_TIMEOUT = 120.0


#: torchrun's options for a launch that is the whole run: one node, its own rendezvous.
STANDALONE = ("--standalone",)


def torchrun_command(
    script: Path, *args: str, nproc: int = 2, launcher: Sequence[str] = STANDALONE
) -> list[str]:
    """The command line that runs ``script ARGS`` in ``nproc`` processes on this machine, with
    torchrun's ``launcher`` options (its rendezvous, number of nodes and restarts)."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        *launcher,
        f"--nproc-per-node={nproc}",
        str(script),
        *args,
    ]


def torchrun_env(**extra: str) -> dict[str, str]:
    """The environment of a launch: the repository importable, one thread per worker, ``extra`` added."""
    env = {k: v for k, v in subprocess_env(**extra).items() if k not in _WORKER_VARIABLES}
    env.setdefault("OMP_NUM_THREADS", "1")  # torchrun would set it and print a banner about it
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


@dataclass
class Launch:
    """What a finished launch left: torchrun's exit code, and the output of torchrun and its workers."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False

    def failed_workers(self) -> dict[int, int]:
        """The exit code of each worker that failed, by rank, from torchrun's failure summary
        (negative: killed by that signal). Empty when every worker exited with 0."""
        return {int(rank): int(code) for rank, code in _FAILURE.findall(self.stderr)}

    def describe(self, tail: int = 6000) -> str:
        """The exit code and the end of both outputs, for an assertion message."""
        end = "was killed: it timed out" if self.timed_out else f"exited with {self.returncode}"
        return (
            f"torchrun {end} after {self.seconds:.1f} s\n"
            f"--- stdout (end) ---\n{self.stdout[-tail:]}\n--- stderr (end) ---\n{self.stderr[-tail:]}"
        )


class Torchrun:
    """A running torchrun launch; a context manager that kills whatever is left of it on exit.

    Args:
        script: the script every worker runs.
        args: its arguments.
        nproc: the number of workers (ranks) on this machine.
        env: extra environment variables of the launch.
        cwd: where it runs (the repository root by default).
        launcher: torchrun's options before ``--nproc-per-node`` (by default ``--standalone``); a
            launch given ``--nnodes`` and a rendezvous endpoint is one node of a run of several.

    torchrun runs in a session of its own, as a node's agent does, so that :meth:`kill_node` can
    take its whole process group.
    """

    def __init__(
        self,
        script: Path,
        *args: str,
        nproc: int = 2,
        env: dict[str, str] | None = None,
        cwd: Path = REPO_ROOT,
        launcher: Sequence[str] = STANDALONE,
    ) -> None:
        self.nproc = nproc
        self._stdout = tempfile.TemporaryFile()  # noqa: SIM115 - closed in __exit__
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in __exit__
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            torchrun_command(script, *args, nproc=nproc, launcher=launcher),
            cwd=cwd,
            env=torchrun_env(**(env or {})),
            stdin=subprocess.DEVNULL,
            stdout=self._stdout,
            stderr=self._stderr,
            start_new_session=True,
        )
        self._workers: dict[int, int] = {}
        self.timed_out = False

    def __enter__(self) -> Torchrun:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.kill_all()
        self._stdout.close()
        self._stderr.close()

    # ------------------------------------------------------------------------------ workers
    def worker_pids(self) -> dict[int, int]:
        """The pid of each worker by rank, once all ``nproc`` have started (empty before)."""
        if len(self._workers) < self.nproc:
            found = {}
            for pid in _children(self.process.pid):
                rank = _rank_of(pid)
                if rank is not None:
                    found[rank] = pid
            if len(found) == self.nproc:
                self._workers = found
        return dict(self._workers)

    def wait_for_workers(self, timeout: float = 60.0) -> dict[int, int]:
        """The pid of each worker by rank, waiting until they have all started."""
        self.wait_until(lambda: len(self.worker_pids()) == self.nproc, timeout, "the workers to start")
        return self.worker_pids()

    def signal_worker(self, rank: int, signum: int) -> None:
        """Send ``signum`` to the worker of ``rank`` (alone: not torchrun, not the other workers)."""
        os.kill(self.wait_for_workers()[rank], signum)

    def kill_node(self) -> None:
        """SIGKILL this launch as a machine that goes away would end: torchrun's process group
        first (so that it cannot restart its workers), then each worker's (torchrun starts them
        in sessions of their own). torchrun is reaped; the workers, its children, are left to init."""
        workers = set(self.worker_pids().values()) | _children(self.process.pid)
        os.killpg(self.process.pid, signal.SIGKILL)
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        self.process.wait()

    def wait_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``condition`` every few milliseconds until it holds.

        Raises:
            AssertionError: torchrun exited first, or ``timeout`` seconds passed (with its output).
        """
        deadline = time.monotonic() + timeout
        while not condition():
            if self.process.poll() is not None:
                raise AssertionError(f"torchrun ended while waiting for {what}\n{self.result().describe()}")
            if time.monotonic() > deadline:
                self.dump_stacks()
                raise AssertionError(f"waited {timeout} s for {what}\n{self._describe_running()}")
            time.sleep(0.002)

    # ------------------------------------------------------------------------------ the end
    def wait(self, timeout: float = LAUNCH_TIMEOUT) -> Launch:
        """Wait for torchrun to end and return what it left. After ``timeout`` seconds (counted
        from the start), the workers are asked for their stacks, everything is killed, and the
        launch is reported with ``timed_out`` set."""
        try:
            self.process.wait(timeout=max(timeout - (time.monotonic() - self.started), 0.1))
        except subprocess.TimeoutExpired:
            self.dump_stacks()
            self.kill_all()
            self.timed_out = True
        return self.result()

    def result(self) -> Launch:
        """The exit code (None while running is reported as -1) and the outputs so far."""
        code = self.process.poll()
        return Launch(
            returncode=-1 if code is None else code,
            stdout=_read(self._stdout),
            stderr=_read(self._stderr),
            seconds=time.monotonic() - self.started,
            timed_out=self.timed_out,
        )

    def dump_stacks(self, seconds: float = 0.5) -> None:
        """Ask the workers for their Python stacks, one after the other so that they do not mix:
        SIGUSR1, which a script that called ``faulthandler.register(signal.SIGUSR1,
        all_threads=True)`` answers by printing them to its stderr; ``seconds`` each to print.
        What a test shows when a launch hangs."""
        workers = self.worker_pids() or dict(enumerate(sorted(_children(self.process.pid))))
        for rank, pid in sorted(workers.items()):
            self._stderr.write(f"\n--- Python stacks of rank {rank} (pid {pid}) ---\n".encode())
            self._stderr.flush()  # the workers write through the same open file, at its offset
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGUSR1)
            time.sleep(seconds)

    def kill_all(self) -> None:
        """SIGKILL the workers still alive, then torchrun, and reap torchrun."""
        for pid in {*self._workers.values(), *_children(self.process.pid)}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def _describe_running(self) -> str:
        output = self.result()
        return f"{output.describe()}\nworkers: {self.worker_pids() or 'not all started'}"


def run_torchrun(
    script: Path,
    *args: str,
    nproc: int = 2,
    timeout: float = LAUNCH_TIMEOUT,
    env: dict[str, str] | None = None,
    cwd: Path = REPO_ROOT,
) -> Launch:
    """Run ``script ARGS`` under torchrun in ``nproc`` processes and wait for the end (or kill
    everything after ``timeout`` seconds: see :meth:`Torchrun.wait`)."""
    with Torchrun(script, *args, nproc=nproc, env=env, cwd=cwd) as launch:
        return launch.wait(timeout)


def _children(pid: int) -> set[int]:
    """The child processes of ``pid`` (Linux: /proc/PID/task/*/children)."""
    children: set[int] = set()
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                children.update(int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split())
    return children


def _rank_of(pid: int) -> int | None:
    """The RANK in the environment of process ``pid``; None if it has none or is gone."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    for entry in environ.split(b"\0"):
        if entry.startswith(b"RANK="):
            return int(entry[5:])
    return None


def _read(file: Any) -> str:
    file.flush()
    file.seek(0)
    return file.read().decode(errors="replace")
