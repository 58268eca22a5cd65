"""How ``exp resume`` reruns a run: the command it reruns, and the environment through which it
gives the rerun process a new target of epochs.

A run records at its creation the command that started it (:func:`current_command`; inside
:func:`recording_command`, the command of a recorded entry point instead). ``exp resume`` sets
``EXPERIMENT_RESUME_DIR`` (the resolved run directory) and ``EXPERIMENT_EPOCHS`` (the target) for
the command it reruns; :meth:`Experiment.train <experiment.Experiment.train>` honours the target
for that run directory only.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from experiment.arguments import reject

logger = logging.getLogger(__name__)

RESUME_DIR_VARIABLE = "EXPERIMENT_RESUME_DIR"
EPOCHS_VARIABLE = "EXPERIMENT_EPOCHS"


def epochs_from_environment(directory: str | os.PathLike[str], epochs: int) -> int:
    """The target number of epochs, ``EXPERIMENT_EPOCHS`` when ``exp resume`` set it for ``directory``.

    Raises:
        ConfigurationError: ``EXPERIMENT_EPOCHS`` is not a positive integer.
    """
    named, target = os.environ.get(RESUME_DIR_VARIABLE), os.environ.get(EPOCHS_VARIABLE)
    if named is None or target is None or Path(named).resolve() != Path(directory).resolve():
        return epochs
    if not target.isdigit() or int(target) < 1:  # text from the environment, not an int
        raise reject(
            EPOCHS_VARIABLE,
            target,
            "a positive integer (the total number of epochs, set by `exp resume --epochs N`)",
        )
    if int(target) != epochs:
        logger.info("%s=%s overrides epochs=%s for %s.", EPOCHS_VARIABLE, target, epochs, directory)
    return int(target)


#: The command to record instead of this process's own, while a recorded entry point runs
#: (set by :func:`recording_command`; a ContextVar so that it is scoped, never global state).
_entry_point_command: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "entry_point_command", default=None
)


@contextlib.contextmanager
def recording_command(command: dict[str, Any]) -> Iterator[None]:
    """Make runs created inside the block record ``command`` (``{"argv", "cwd"}``) for ``exp resume``."""
    token = _entry_point_command.set({"argv": list(command["argv"]), "cwd": str(command["cwd"])})
    try:
        yield
    finally:
        _entry_point_command.reset(token)


def current_command() -> dict[str, Any]:
    """The interpreter, arguments and working directory of this process, for ``exp resume``.

    A worker started by torchrun records torchrun's command line instead (its parent's, read
    from /proc on Linux), so that ``exp resume`` relaunches every process; a run of several nodes
    also records ``nodes``, since it is resumed by resubmitting the job, not from one machine.
    """
    override = _entry_point_command.get()
    if override is not None:
        return {"argv": list(override["argv"]), "cwd": override["cwd"]}
    launcher = _launcher_command()
    if launcher is not None:
        nodes = int(os.environ.get("GROUP_WORLD_SIZE", "1") or 1)
        return {"argv": launcher, "cwd": os.getcwd(), **({"nodes": nodes} if nodes > 1 else {})}
    argv = list(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    return {"argv": [sys.executable, *argv[1:]], "cwd": os.getcwd()}


def _launcher_command() -> list[str] | None:
    """torchrun's command line when this process is one of its workers, else None."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return None
    try:
        raw = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
    except OSError:
        return None
    argv = [word.decode(errors="surrogateescape") for word in raw.split(b"\0") if word]
    if not any("torchrun" in word or "torch.distributed.run" in word for word in argv[:3]):
        return None
    return argv
