"""What experiment.json records: versions, the command that started the run, status and config."""

from __future__ import annotations

import datetime
import os
import platform
import socket
import sys
from typing import Any

import torch

FORMAT_VERSION = 1

STATUSES = ("running", "finished", "stopped", "interrupted", "failed")


def library_version() -> str:
    from experiment import __version__

    return __version__


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def current_command() -> dict[str, Any]:
    """The interpreter, arguments and working directory of this process, for ``exp resume``."""
    argv = list(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    return {"argv": [sys.executable, *argv[1:]], "cwd": os.getcwd()}


def new_metadata(config: dict[str, Any] | None, settings: dict[str, Any]) -> dict[str, Any]:
    """The content of experiment.json for a run that starts now."""
    return {
        "format_version": FORMAT_VERSION,
        "library_version": library_version(),
        "torch_version": torch.__version__,
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
    """A copy of ``metadata`` with a new status, the writer's pid and host, and the time."""
    assert status in STATUSES, status
    return {**metadata, "status": status, "message": message, "updated": now_iso(),
            "pid": os.getpid(), "host": socket.gethostname()}
