"""A run directory moved or copied since it was created: which word of its command to rewrite.

The recorded command names the directory where the run was created. Rerun as is from a moved or
copied directory, it would train that other directory (or create a new run there). experiment.json
records the directory at creation (``"directory"``); for runs created before it did, the original
is a run directory named by the command that holds the same run (same creation time and command).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from experiment.errors import ConfigurationError
from experiment.inspection.display import printable, shell_line
from experiment.store.directory import RunDirectory


def relocate_command(
    run: RunDirectory, metadata: dict[str, Any], argv: list[str], cwd: Path
) -> tuple[list[str], str | None]:
    """``argv`` with the word naming the run's original directory replaced by this directory's path.

    Returns:
        The arguments to run, and a note saying what was replaced (None when nothing was).

    Raises:
        ConfigurationError: the run was moved or copied and not exactly one word of the command
            names its original directory.
    """
    here = run.path.resolve()
    resolved = [_resolve(word, cwd) for word in argv]
    original = _original_directory(metadata, resolved[1:], here)
    if original is None:
        return argv, None
    indices = [index for index, path in enumerate(resolved) if index > 0 and path == original]
    if len(indices) != 1:
        named = "no word of it names" if not indices else f"{len(indices)} of its words name"
        raise ConfigurationError(
            f"{run.path} was moved or copied: it was created as {printable(str(original))}, and {named} "
            f"that directory, so rerunning its command would train {printable(str(original))} instead. "
            f"Resume it by running the script yourself with the new path {printable(str(here))}: "
            f"cd {shell_line([str(cwd)])} && {shell_line(argv)}"
        )
    rewritten = list(argv)
    rewritten[indices[0]] = str(here)
    note = (
        f"{run.path} was created as {printable(str(original))}: the recorded command's argument "
        f"{printable(argv[indices[0]])!r} is replaced by {printable(str(here))}."
    )
    return rewritten, note


def _original_directory(metadata: dict[str, Any], resolved: list[Path | None], here: Path) -> Path | None:
    """The directory the run was created as, when it is not ``here``; None otherwise or unknown."""
    recorded = metadata.get("directory")
    if recorded is not None:
        original = Path(recorded)
        return None if original == here or _resolve(recorded, here) == here else original
    if here in resolved:
        return None
    originals = {path for path in resolved if path is not None and _same_run(path, metadata)}
    return originals.pop() if len(originals) == 1 else None


def _same_run(path: Path, metadata: dict[str, Any]) -> bool:
    """Whether ``path`` is a run directory holding the same run as ``metadata`` (its original)."""
    try:
        other = json.loads((path / "experiment.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    keys = ("run_id", "created", "command")
    return isinstance(other, dict) and all(other.get(key) == metadata.get(key) for key in keys)


def _resolve(word: str, cwd: Path) -> Path | None:
    """The absolute path ``word`` names from ``cwd``, or None when it cannot name one."""
    if not word or "\0" in word:
        return None
    try:
        return Path(os.path.realpath(cwd / word))
    except (OSError, ValueError):
        return None
