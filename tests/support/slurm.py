"""The real one-node SLURM cluster of scripts/slurm_test_cluster.sh, seen from the tests: whether it
runs (skip, or fail in CI), submitting a batch job, reading its state, and waiting for it; and
:class:`JobDrivers`, which steers the jobs of several tests at once.

Job states are read with ``scontrol show job`` (the test cluster has no accounting, so no sacct);
finished jobs stay visible for ``MinJobAge`` = 10 minutes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.run_comparison import read_scalars
from tests.support.state_checks import assert_same_run

#: The environment variable that turns "no cluster" from a skip into a failure (.ci/run sets it).
REQUIRE = "CI_REQUIRE_SLURM"
START = "scripts/slurm_test_cluster.sh start"


def cluster_problem() -> str | None:
    """Why no SLURM cluster can run jobs here, or None when one can."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "the SLURM commands (sinfo, sbatch) are not installed"
    try:
        answer = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer in 10 s"
    states = answer.stdout.split()
    if answer.returncode != 0:
        return f"sinfo failed: {answer.stderr.strip()}"
    if not any(state in ("idle", "mixed", "allocated", "completing") for state in states):
        return f"no node is usable (sinfo states: {states})"
    return None


def require_cluster(problem: str | None) -> None:
    """Skip the test with ``problem`` as the reason, or fail it when CI requires the cluster."""
    if problem is None:
        return
    message = f"no SLURM cluster: {problem}; start one with `{START}` (as root)"
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(f"{message}; {REQUIRE}=1 requires it", pytrace=False)
    pytest.skip(message)


def submit(script: Path, *options: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    """``sbatch --parsable`` of ``script`` with ``options``; the job id (``12``, or ``12_3``)."""
    answer = subprocess.run(
        ["sbatch", "--parsable", *options, str(script)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        cwd=cwd,
        check=True,
    )
    return answer.stdout.strip().split(";")[0]


def job_fields(job_id: str) -> dict[str, str]:
    """The ``Key=Value`` fields of ``scontrol show job`` (JobState, Restarts, ExitCode...)."""
    answer = subprocess.run(
        ["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=30, check=True
    )
    return dict(re.findall(r"(\w+)=(\S*)", answer.stdout))


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` every 0.1 s until true; fail after ``timeout`` seconds saying ``what``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def wait_for_state(job_id: str, states: tuple[str, ...], timeout: float = 60) -> dict[str, str]:
    """The job's fields once its state is one of ``states``."""
    fields: dict[str, str] = {}

    def reached() -> bool:
        nonlocal fields
        fields = job_fields(job_id)
        return fields.get("JobState") in states

    wait_until(reached, timeout, f"job {job_id} to be {'/'.join(states)} (last seen: {fields})")
    return fields


def cancel(job_id: str) -> None:
    """Cancel the job and its steps, whatever its state (cleanup)."""
    subprocess.run(["scancel", "--full", job_id], capture_output=True, timeout=30)


ROOT = Path(__file__).resolve().parents[2]
#: The training script of the SLURM tests.
TRAIN_JOB = ROOT / "tests" / "slurm" / "train_job.py"


def job_environment() -> dict[str, str]:
    """The environment a test job inherits (sbatch exports the submitter's): this checkout on
    PYTHONPATH, one thread, and none of SLURM's variables (the tests may run inside a job)."""
    environ = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}
    environ.pop("CI_REQUIRE_SLURM", None)
    return {**environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class TrainJob:
    """One batch job of the tests: ``body`` after the shebang, run in ``folder``, whose run
    directory is ``folder/run``, pause files in ``folder/pause`` and output in ``folder/job.out``
    (appended to by every restart).

    ``{train}`` in ``body`` stands for ``python tests/slurm/train_job.py --pause-dir pause run``,
    ``{torchrun}`` for the same under ``torchrun --standalone --nproc-per-node=2``.
    """

    def __init__(self, folder: Path, body: str, *options: str) -> None:
        self.folder = folder
        self.run_dir, self.pause_dir, self.output = folder / "run", folder / "pause", folder / "job.out"
        self.pause_dir.mkdir(parents=True, exist_ok=True)
        arguments = f"{TRAIN_JOB} --pause-dir {self.pause_dir} {self.run_dir}"
        torchrun = f"{sys.executable} -m torch.distributed.run --standalone --nproc-per-node=2 {arguments}"
        body = body.replace("{train}", f"{sys.executable} {arguments}").replace("{torchrun}", torchrun)
        script = folder / "job.sh"
        script.write_text("#!/bin/bash\n" + body + "\n")
        self.job_id = submit(
            script,
            "--open-mode=append",
            f"--output={self.output}",
            *options,
            env=job_environment(),
            cwd=folder,
        )

    def wait_paused(self, step: int, timeout: float = 180) -> str:
        """Wait until training pauses after ``step``; the restart count of the run that paused."""
        ready = self.pause_dir / f"ready-{step}"
        wait_until(ready.exists, timeout, f"step {step} of job {self.job_id}\n{self.log()}")
        return ready.read_text()

    def signal(self, name: str, *, job_id: str | None = None) -> None:
        """``scancel --signal=<name> --batch``: to the batch shell (the exec'd training) only."""
        subprocess.run(
            ["scancel", f"--signal={name}", "--batch", job_id or self.job_id], check=True, timeout=30
        )

    def exit_report(self, restart: int, rank: int = 0, timeout: float = 60) -> dict[str, Any]:
        """What rank ``rank`` of run ``restart`` wrote as it left: exit code and last step."""
        path = self.pause_dir / f"exit-{restart}-{rank}"
        wait_until(path.exists, timeout, f"{path.name} of job {self.job_id}\n{self.log()}")
        return json.loads(path.read_text())

    def end(self, timeout: float = 180, job_id: str | None = None) -> dict[str, str]:
        """The job's fields once it has ended."""
        return wait_for_state(job_id or self.job_id, ENDED, timeout)

    def metadata(self) -> dict[str, Any]:
        return json.loads((self.run_dir / "experiment.json").read_text())

    def log(self) -> str:
        return self.output.read_text() if self.output.exists() else "(no output yet)"


#: The states of a job that has ended (and will not run again by itself).
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED")


def assert_same_job_run(reference_dir: Path, run_dir: Path) -> None:
    """A run that jobs stopped and requeued ends as ``reference_dir`` did: the final state bit for
    bit, log.tsv rows exactly once, the same best weights, and each TensorBoard scalar once per
    epoch with the same value (the events after each commit purged)."""
    assert_same_run(reference_dir, run_dir)
    expected, actual = read_scalars(reference_dir / "tensorboard"), read_scalars(run_dir / "tensorboard")
    assert sorted(actual) == sorted(expected), (sorted(actual), sorted(expected))
    for tag, events in actual.items():
        assert [step for step, _ in events] == [step for step, _ in expected[tag]], (tag, events)
        assert tag == "time" or events == expected[tag], (tag, events, expected[tag])


#: What a test's job driver is: it submits and steers its jobs in ``folder`` (each a
#: :class:`TrainJob`), asserting what must be seen while they run, and returns what the test checks
#: once they have ended.
Driver = Callable[[Path], Any]


@dataclass(frozen=True)
class Start:
    """When a driver starts: ``first`` (before the others, which start once its job has paused: a
    job racing a time limit starts on an idle machine), with the others, or ``alone`` (once every
    other driver has ended, one at a time: preemption needs the node to itself)."""

    first: bool = False
    alone: bool = False


class JobDrivers:
    """The drivers of the selected tests' jobs, each in a thread of its own, started together (in
    the order :class:`Start` says): the jobs spend most of their time waiting (for SLURM's requeue,
    a time limit), so that they wait at the same time instead of one after the other.
    :meth:`result` waits for one driver and raises what failed in it; the jobs of a driver that
    failed are cancelled, so that they disturb no other test.
    """

    def __init__(self, root: Path, drivers: Iterable[tuple[Driver, Start]]) -> None:
        chosen = dict(drivers)  # a driver shared by several tests (parameters) runs once
        self._root = root
        self._pool = ThreadPoolExecutor(max_workers=max(len(chosen), 1), thread_name_prefix="slurm-job")
        self._alone = threading.Lock()
        self._futures: dict[Driver, Future[Any]] = {}
        for driver in (driver for driver, start in chosen.items() if start.first):
            self._futures[driver] = self._pool.submit(self._run, driver)
            self._wait_paused(driver)
        for driver in (driver for driver, start in chosen.items() if not (start.first or start.alone)):
            self._futures[driver] = self._pool.submit(self._run, driver)
        others = list(self._futures.values())
        for driver in (driver for driver, start in chosen.items() if start.alone):
            self._futures[driver] = self._pool.submit(self._run_alone, others, driver)

    def result(self, driver: Driver) -> Any:
        """What ``driver`` returned, once it has; what it raised (a failed assertion) is raised."""
        return self._futures[driver].result()

    def close(self) -> None:
        """Wait for every driver (each ends by its own timeouts)."""
        self._pool.shutdown(wait=True)

    def _folder(self, driver: Driver) -> Path:
        return self._root / driver.__name__

    def _wait_paused(self, driver: Driver, timeout: float = 120) -> None:
        """Until a job of ``driver`` has paused at a step (TrainJob's ready file) or it has ended."""
        deadline = time.monotonic() + timeout
        folder, future = self._folder(driver), self._futures[driver]
        while not (future.done() or any(folder.glob("**/ready-*"))) and time.monotonic() < deadline:
            time.sleep(0.1)

    def _run(self, driver: Driver) -> Any:
        folder = self._folder(driver)
        try:
            return driver(folder)
        except BaseException:
            cancel_jobs_under(folder)
            raise

    def _run_alone(self, others: list[Future[Any]], driver: Driver) -> Any:
        wait(others)
        with self._alone:
            return self._run(driver)


def cancel_jobs_under(folder: Path) -> None:
    """Cancel every job whose working directory is ``folder`` or inside it (none without SLURM)."""
    if shutil.which("squeue") is None:
        return
    answer = subprocess.run(["squeue", "-h", "-o", "%A %Z"], capture_output=True, text=True, timeout=30)
    for line in answer.stdout.splitlines():
        job_id, _, workdir = line.partition(" ")
        if Path(workdir) == folder or folder in Path(workdir).parents:
            cancel(job_id)
