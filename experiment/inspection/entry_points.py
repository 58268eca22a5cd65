"""Recorded entry points: start a run by calling a function, so that ``exp resume`` can call it again.

A run started from a notebook or from Python code has no command line worth rerunning. Starting
it through an entry point, ``MODULE:FUNCTION``, records instead a command that imports the module
and calls the function again on the same directory.

Calling convention: ``FUNCTION(directory, *args)``, with ``directory`` a :class:`pathlib.Path` and
``args`` the extra words of the command line, as strings. The function builds its
:class:`~experiment.Experiment` on ``directory`` and trains; what it returns is ignored.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from experiment.arguments import reject
from experiment.errors import ConfigurationError
from experiment.store.relaunch import recording_command


def parse_entry_point(spec: str) -> tuple[str, str]:
    """Split ``"package.module:function"`` into its module and function names.

    Raises:
        ConfigurationError: ``spec`` is not of the form MODULE:FUNCTION.
    """
    module, _, function = spec.partition(":")
    names = [*module.split("."), *function.split(".")]
    if not module or not function or not all(name.isidentifier() for name in names):
        raise reject("entry point", spec, "MODULE:FUNCTION, such as 'mypackage.train:main'")
    return module, function


def load_entry_point(spec: str) -> Callable[..., Any]:
    """Import the module of ``spec`` and return its function.

    Raises:
        ConfigurationError: the module cannot be imported or has no such callable.
    """
    module_name, function_name = parse_entry_point(spec)
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigurationError(
            f"entry point {spec!r}: cannot import {module_name!r} ({error}). Run from the folder that "
            "holds it, or add that folder to PYTHONPATH."
        ) from error
    target: Any = module
    for name in function_name.split("."):
        target = getattr(target, name, None)
    if not callable(target):
        raise ConfigurationError(
            f"entry point {spec!r}: {module_name} has no callable {function_name!r}. Expected a function "
            "called as FUNCTION(directory, *args)."
        )
    return target


def entry_point_command(
    spec: str, directory: str | os.PathLike[str], args: Sequence[str] = ()
) -> dict[str, Any]:
    """The command recorded for a run started through ``spec``: ``python -m cli run SPEC DIR -- ARGS``."""
    argv = [sys.executable, "-m", "cli", "run", spec, str(directory)]
    if args:
        argv += ["--", *args]
    return {"argv": argv, "cwd": os.getcwd()}


def run_entry_point(spec: str, directory: str | os.PathLike[str], args: Sequence[str] = ()) -> Any:
    """Call ``FUNCTION(Path(directory), *args)``; a run it creates records this entry point.

    Example:
        >>> run_entry_point("mypackage.train:main", "runs/blobs", ["--lr", "0.1"])

    Raises:
        ConfigurationError: the entry point cannot be loaded.
    """
    function = load_entry_point(spec)
    with recording_command(entry_point_command(spec, directory, args)):
        return function(Path(directory), *args)
