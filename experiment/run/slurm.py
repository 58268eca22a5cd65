"""Training inside a SLURM job: which signal warns of the time limit, what the job is (for
experiment.json), and what happens after the commit that a signal asked for: requeue the job, or
end it.

A job is recognised by ``SLURM_JOB_ID``. The batch script asks SLURM for a warning before the limit
(``#SBATCH --signal=B:USR1@300``) and ``exec``s the training script, so that the warning reaches it.
The warning signal and SIGTERM (the limit itself, a preemption, a ``scancel``) make the run commit
at the next step all ranks agree on; then rank 0 decides with :func:`after_stop`:

- the job was cancelled by its user (``scancel``): it ends, interrupted, and is not requeued;
- SLURM has requeued it already (a preemption with ``PreemptMode=REQUEUE``): nothing more to do;
- otherwise (the warning, the time limit): ``scontrol requeue`` of the job, or of the array element
  (``<array job>_<task>``, never the whole array). The requeued job runs the batch script again, and
  the script resumes from the commit.

The job state comes from ``scontrol show job`` (see :func:`cancelled`): SLURM accepts
``scontrol requeue`` of a job its user has just cancelled, so the state, not the answer, tells a
cancellation from a time limit.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from experiment.errors import ConfigurationError

#: The environment variable naming the warning signal (``USR1`` when unset), the one the batch
#: script asks for with ``--signal=B:<name>@<seconds>``.
SIGNAL_VARIABLE = "EXPERIMENT_SLURM_SIGNAL"
#: Seconds an ``scontrol`` call may take before it counts as failed: the two calls of a stop
#: (show, requeue) stay within SLURM's default KillWait of 30 s.
SCONTROL_TIMEOUT = 10.0


@dataclass(frozen=True)
class SlurmJob:
    """The SLURM job this process runs in, read from its environment by :func:`slurm_job`.

    Example:
        >>> job = SlurmJob("41", array_job_id="40", array_task_id="3", restart_count=2, partition="gpu")
        >>> job.requeue_id
        '40_3'
    """

    job_id: str
    array_job_id: str | None = None
    array_task_id: str | None = None
    restart_count: int = 0
    partition: str | None = None

    @property
    def requeue_id(self) -> str:
        """The id that ``scontrol requeue`` needs: the array element's, or the job's."""
        if self.array_job_id and self.array_task_id:
            return f"{self.array_job_id}_{self.array_task_id}"
        return self.job_id

    def recorded(self) -> dict[str, Any]:
        """What experiment.json records under ``slurm``."""
        return {
            "job_id": self.job_id,
            "array": self.requeue_id if self.array_task_id else None,
            "restart_count": self.restart_count,
            "partition": self.partition,
        }


def slurm_job(environ: Mapping[str, str] | None = None) -> SlurmJob | None:
    """The job this process runs in, or None outside SLURM (no ``SLURM_JOB_ID``)."""
    environ = os.environ if environ is None else environ
    job_id = environ.get("SLURM_JOB_ID")
    if not job_id:
        return None
    return SlurmJob(
        job_id,
        array_job_id=environ.get("SLURM_ARRAY_JOB_ID") or None,
        array_task_id=environ.get("SLURM_ARRAY_TASK_ID") or None,
        restart_count=int(environ.get("SLURM_RESTART_COUNT") or 0),
        partition=environ.get("SLURM_JOB_PARTITION") or None,
    )


def warning_signal(environ: Mapping[str, str] | None = None) -> signal.Signals:
    """The signal that warns of the time limit: ``EXPERIMENT_SLURM_SIGNAL`` (a name such as
    ``USR2`` or ``SIGUSR2``, or a number), USR1 when unset.

    Raises:
        ConfigurationError: the value names no signal, or one that must not be caught.
    """
    environ = os.environ if environ is None else environ
    value = environ.get(SIGNAL_VARIABLE, "").strip() or "USR1"
    name = value.upper() if value.upper().startswith("SIG") else f"SIG{value.upper()}"
    try:
        chosen = signal.Signals(int(value)) if value.isdigit() else signal.Signals[name]
    except (KeyError, ValueError):
        chosen = None
    if chosen is None or chosen in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCONT):
        raise ConfigurationError(
            f"{SIGNAL_VARIABLE} names no signal the run can wait for. Received: {value!r}; expected a "
            "signal name such as USR1, USR2 or SIGUSR2, or its number, other than KILL, STOP and CONT. "
            f"Set it to the signal of the batch script's --signal=B:<name>@<seconds>."
        )
    return chosen


@dataclass(frozen=True)
class StopOutcome:
    """What :func:`after_stop` did: whether the job will run again, and a line saying why."""

    requeued: bool
    message: str


def after_stop(job: SlurmJob, signum: int, warning: int | None) -> StopOutcome:
    """After the commit that ``signum`` asked for (rank 0 only): requeue the job unless its user
    cancelled it or SLURM requeued it already. Only SIGTERM and the ``warning`` signal requeue.
    Never raises: a failure is in the outcome's message."""
    name = signal.Signals(signum).name
    if signum not in (signal.SIGTERM, warning):
        return StopOutcome(False, f"{name} does not requeue the job (only SIGTERM and the warning signal)")
    try:
        fields = show_job(job.requeue_id)
    except OSError as error:
        return StopOutcome(False, f"not requeued: {error}")
    state = fields.get("JobState", "")
    if int(fields.get("Restarts") or 0) > job.restart_count:
        return StopOutcome(True, f"job {job.requeue_id} was requeued by SLURM (state {state}, preempted?)")
    if cancelled(fields):
        return StopOutcome(False, f"job {job.requeue_id} was cancelled (state {state}): not requeued")
    try:
        run_scontrol("requeue", job.requeue_id)
    except OSError as error:
        return StopOutcome(False, f"not requeued: {error}")
    return StopOutcome(True, f"job {job.requeue_id} requeued (restart {job.restart_count + 1} next)")


def cancelled(fields: Mapping[str, str]) -> bool:
    """Whether ``scontrol show job``'s ``fields`` say that the job's user (or an admin) cancelled
    it: CANCELLED, or COMPLETING other than at its time limit (a job ending at its limit is
    TIMEOUT, or COMPLETING with Reason=TimeLimit and RunTime at least TimeLimit, as measured with
    SLURM 22.05). A job without a time limit (UNLIMITED) or whose times do not read cannot be at
    its limit: COMPLETING then means cancelled, so that a user's scancel never requeues it."""
    state = fields.get("JobState", "")
    if state == "CANCELLED":
        return True
    if state != "COMPLETING" or fields.get("Reason") == "TimeLimit":
        return False
    run_time, limit = duration(fields.get("RunTime", "")), duration(fields.get("TimeLimit", ""))
    return run_time is None or limit is None or run_time < limit


def duration(text: str) -> int | None:
    """Seconds in a SLURM duration (``[days-]hours:minutes:seconds``, ``minutes:seconds``); None
    for ``UNLIMITED`` or anything else."""
    match = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)", text)
    if match is None:
        return None
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def show_job(job_id: str) -> dict[str, str]:
    """The ``Key=Value`` fields of ``scontrol show job <job_id>``.

    Raises:
        OSError: scontrol is missing, failed, or did not answer in :data:`SCONTROL_TIMEOUT` seconds.
    """
    return dict(re.findall(r"(\w+)=(\S*)", run_scontrol("show", "job", job_id)))


def run_scontrol(*arguments: str) -> str:
    """scontrol's output for ``arguments``.

    Raises:
        OSError: scontrol is not installed here (inside some containers), exited with an error, or
            did not answer in :data:`SCONTROL_TIMEOUT` seconds; the message says which, and scontrol's.
    """
    command = ["scontrol", *arguments]
    try:
        answer = subprocess.run(command, capture_output=True, text=True, timeout=SCONTROL_TIMEOUT)
    except FileNotFoundError:
        raise OSError(
            f"`{' '.join(command)}` failed: scontrol is not installed here (inside a container?); "
            "resubmit the batch script to resume the run"
        ) from None
    except subprocess.TimeoutExpired:
        raise OSError(f"`{' '.join(command)}` did not answer in {SCONTROL_TIMEOUT:g} s") from None
    if answer.returncode != 0:
        said = (answer.stderr or answer.stdout).strip()
        raise OSError(f"`{' '.join(command)}` failed with exit code {answer.returncode}: {said}")
    return answer.stdout
