"""Resume a run by running again the command that started it (``exp resume``).

experiment.json records the interpreter, arguments and working directory of the process that
created the run. :func:`plan_resume` checks that the run can be resumed and returns the command;
:meth:`ResumePlan.run` runs it and returns its exit code.

The number of epochs is passed to the rerun process through two environment variables, honoured by
:meth:`Experiment.train <experiment.Experiment.train>` for that run directory only:
``EXPERIMENT_RESUME_DIR`` (the resolved run directory) and ``EXPERIMENT_EPOCHS`` (the target).
Without ``--epochs`` the target is the one recorded in experiment.json, so that a target raised by
an earlier ``exp resume --epochs`` holds across later resumes.

A run directory moved or copied since its creation is resumed in place: the word of the command
that names the original directory is replaced by the directory's own path, with a note (see
:mod:`experiment.inspection.relocation`).

Security: the command is whatever experiment.json says; it is shown with control characters
escaped, so that the line printed is the line run. Resuming a directory you did not create
runs its command; read it first (``exp resume --dry-run``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

from experiment.arguments import check_int
from experiment.errors import ConfigurationError, DirectoryLockedError, RunDirectoryError
from experiment.inspection.display import printable, shell_line, shell_word
from experiment.inspection.relocation import relocate_command
from experiment.inspection.summary import summarize
from experiment.store.directory import RunDirectory
from experiment.store.lock import describe_holder
from experiment.store.relaunch import EPOCHS_VARIABLE, RESUME_DIR_VARIABLE

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ResumePlan:
    """The recorded command of a run, checked and ready to run again.

    Example:
        >>> plan = plan_resume("runs/blobs", epochs=30)
        >>> print(plan.describe())
        >>> exit_code = plan.run()
    """

    directory: Path
    argv: list[str]
    cwd: Path
    environment: dict[str, str]
    #: What was changed in the recorded command (a moved or copied run directory), or None.
    note: str | None = None

    def describe(self) -> str:
        """The command as a shell line (working directory, added variables, arguments), after a
        ``# note`` line when the recorded command was changed. Control characters are escaped."""
        variables = " ".join(f"{key}={shell_word(value)}" for key, value in self.environment.items())
        line = f"cd {shell_word(str(self.cwd))} && {variables} {shell_line(self.argv)}"
        return line if self.note is None else f"# {printable(self.note)}\n{line}"

    def run(self) -> int:
        """Run the command in its working directory and return its exit code (128+N for signal N).

        SIGTERM received meanwhile is passed on to the run (it commits a checkpoint and exits);
        Ctrl-C reaches the run directly from the terminal, so it is not passed on a second time.
        """
        with _SignalForwarder() as forwarder:
            process = subprocess.Popen(self.argv, cwd=self.cwd, env={**os.environ, **self.environment})
            forwarder.attach(process)
            code = process.wait()
        return 128 - code if code < 0 else code


def plan_resume(
    directory: str | os.PathLike[str], *, epochs: int | None = None, here: bool = False
) -> ResumePlan:
    """Check that a run can be resumed and return the command that resumes it.

    Args:
        directory: the run directory.
        epochs: a new target number of epochs (required for a finished run).
        here: rerun the command on this machine even for a run that a SLURM job trained (which
            is otherwise refused, with how to requeue or resubmit the job).

    Raises:
        RunDirectoryError: not a run, no recorded command, or its interpreter or folder is gone;
            or the run was trained in a SLURM job (without ``here``).
        DirectoryLockedError: a live process holds the run.
        ConfigurationError: the run is finished and ``epochs`` is not given, or ``epochs`` is not
            more than the epochs completed, or the run was stopped early by a callback, or the
            directory was moved or copied and its command cannot be pointed at it (a command
            whose one word names the original directory is rewritten, with a note).
    """
    epochs = check_int("epochs", epochs, minimum=1, allow_none=True, owner="plan_resume")
    run = RunDirectory(directory)
    metadata = run.read_metadata()
    if metadata.get("slurm") and not here:
        _refuse_slurm_job(run, metadata)
    argv, cwd = _recorded_command(run, metadata)
    argv, note = relocate_command(run, metadata, argv, cwd)
    if run.is_locked():
        raise DirectoryLockedError(
            f"{run.path} is in use by a live process ({describe_holder(run.holder_path)}); it resumes "
            "only once that process has exited. Wait for it, or stop it (SIGTERM commits a checkpoint)."
        )
    summary = summarize(run.path)
    target = _target_epochs(summary.status, summary.epochs_done, summary.epochs_planned, epochs, run.path)
    environment = {RESUME_DIR_VARIABLE: str(run.path.resolve())}
    if target is not None:
        environment[EPOCHS_VARIABLE] = str(target)
    return ResumePlan(run.path, argv, cwd, environment, note)


def _refuse_slurm_job(run: RunDirectory, metadata: dict[str, Any]) -> None:
    """Say how to resume a run of a SLURM job in the scheduler instead of on this machine."""
    job = metadata["slurm"]
    job_id = str(job.get("array") or job.get("job_id"))
    raise RunDirectoryError(
        f"{run.path} was trained in SLURM job {job_id} (status {metadata.get('status')}); resume it "
        f"through the scheduler, not here: `scontrol requeue {shell_word(job_id)}` while SLURM still "
        "knows the job (it needs --requeue), or resubmit its batch script with sbatch; the job "
        "resumes from the last checkpoint. To rerun its command on this machine anyway, pass --here."
    )


def _recorded_command(run: RunDirectory, metadata: dict[str, Any]) -> tuple[list[str], Path]:
    command = metadata.get("command") or {}
    argv, cwd = command.get("argv"), command.get("cwd")
    if not argv or not isinstance(argv, list) or not cwd:
        raise RunDirectoryError(
            f'{run.metadata_path} records no command ("command": {{"argv": [...], "cwd": ...}}); '
            "run the training script yourself, or start runs with `exp run MODULE:FUNCTION DIR`."
        )
    nodes = command.get("nodes", 1)
    if isinstance(nodes, int) and nodes > 1:
        raise RunDirectoryError(
            f"{run.path} was trained by torchrun on {nodes} nodes; it resumes only on all of them at "
            "once, so resubmit the job that started it (the same command on every node, with the same "
            f"number of processes). Its command on the first node was: {shell_line(argv)} (in "
            f"{printable(cwd)})."
        )
    if not Path(argv[0]).exists():
        raise RunDirectoryError(
            f"The recorded interpreter {printable(argv[0])} no longer exists; recreate that environment "
            f"or run the script with another interpreter: {shell_line(argv[1:])} (in {printable(cwd)})."
        )
    if not Path(cwd).is_dir():
        raise RunDirectoryError(
            f"The recorded working directory {printable(cwd)} no longer exists; restore it, or run the "
            f"command yourself from the right folder: {shell_line(argv)}."
        )
    return [str(word) for word in argv], Path(cwd)


def _target_epochs(status: str, done: int, planned: int | None, epochs: int | None, path: Path) -> int | None:
    if status == "stopped":
        raise ConfigurationError(
            f"{path} was stopped early by a callback at epoch {done}; resuming would not train "
            "further. Start a new run directory to train more."
        )
    if status == "finished" and epochs is None:
        raise ConfigurationError(
            f"{path} is finished ({done}/{planned} epochs); nothing to resume. Pass --epochs N with "
            f"N > {done} to train it further."
        )
    if epochs is not None and epochs <= done:
        raise ConfigurationError(
            f"--epochs: received {epochs}; the run has already completed {done} epochs. Expected a "
            f"total number of epochs greater than {done}."
        )
    return epochs if epochs is not None else planned


class _SignalForwarder:
    """Passes SIGTERM on to the child process (even one received before the child started)."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[Any] | None = None
        self._pending: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _SignalForwarder:
        if threading.current_thread() is threading.main_thread():
            # A Python-level handler for SIGINT, not SIG_IGN: an ignored SIGINT would be inherited.
            self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, lambda signum, frame: None)
            self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._forward)
        return self

    def attach(self, process: subprocess.Popen[Any]) -> None:
        self._process = process
        if self._pending is not None:
            process.send_signal(self._pending)

    def _forward(self, signum: int, frame: Any) -> None:
        if self._process is None:
            self._pending = signum
        else:
            self._process.send_signal(signum)

    def __exit__(self, *exc_info: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
