"""What experiment.json records: versions, the command that started the run, status and config."""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import os
import platform
import socket
import sys
from collections.abc import Iterator
from typing import Any

from experiment.arguments import check_choice

#: The run directory's format; 2 since the checkpoints hold a named state tree (1 is still read).
FORMAT_VERSION = 2

STATUSES = ("running", "finished", "stopped", "interrupted", "failed")


def library_version() -> str:
    from experiment import __version__

    return __version__


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


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
    """The interpreter, arguments and working directory of this process, for ``exp resume``."""
    override = _entry_point_command.get()
    if override is not None:
        return {"argv": list(override["argv"]), "cwd": override["cwd"]}
    argv = list(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    return {"argv": [sys.executable, *argv[1:]], "cwd": os.getcwd()}


def new_metadata(config: dict[str, Any] | None, settings: dict[str, Any]) -> dict[str, Any]:
    """The content of experiment.json for a run that starts now."""
    return {
        "format_version": FORMAT_VERSION,
        "library_version": library_version(),
        "torch_version": _torch_version(),
        "python_version": platform.python_version(),
        "created": now_iso(),
        "updated": now_iso(),
        "command": current_command(),
        "config": dict(config or {}),
        "settings": settings,
        "status": "running",
        "message": None,
        "pid": os.getpid(),
        "host": socket.gethostname(),
    }


def with_status(metadata: dict[str, Any], status: str, message: str | None = None) -> dict[str, Any]:
    """A copy of ``metadata`` with a new status, the writer's pid and host, and the time.

    Raises:
        ConfigurationError: ``status`` is not one of :data:`STATUSES`.
    """
    check_choice("status", status, STATUSES, owner="with_status")
    return {
        **metadata,
        "status": status,
        "message": message,
        "updated": now_iso(),
        "pid": os.getpid(),
        "host": socket.gethostname(),
    }


def _torch_version() -> str:
    import torch

    return torch.__version__


def flat_hparams(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``config`` with nested dicts flattened to "a.b" keys and values TensorBoard cannot show as text."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_hparams(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = repr(value)
    return flat
