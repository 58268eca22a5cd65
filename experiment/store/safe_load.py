"""Loading tensor files without ever executing code from them, and telling damage from danger.

A file written by ``torch.save`` of plain data and tensors loads with ``weights_only=True``. A pickle
that would import anything else is refused as unsafe (and named); a truncated or bit-flipped file
(checked against its zip CRCs) is reported as corrupt, so that resuming can fall back to the
previous checkpoint.
"""

from __future__ import annotations

import contextlib
import pickle
import pickletools
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

from experiment.errors import CheckpointError, UnsafeCheckpointError


def load_tensors(path: Path) -> Any:
    """Load a file written by :func:`save_tensors` without ever executing code from it.

    Raises:
        UnsafeCheckpointError: the file holds a pickle that refers to arbitrary callables.
        CheckpointError: the file is missing, truncated, damaged or not a torch file.
    """
    import torch

    try:
        _verify_checksums(path)
        with warnings.catch_warnings():
            # A foreign pickle protocol is refused below anyway; torch's warning adds nothing.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        match = re.search(r"GLOBAL ([\w.]+)", str(error))
        imported = match.group(1) if match else _foreign_import(path)
        if imported:
            raise UnsafeCheckpointError(
                f"Refused to load {path}: it holds a pickle that would call {imported}. "
                "Nothing from it was executed. Only files of plain data and tensors (torch.save of "
                "state dicts, as this library writes them) are loaded; do not use files of unknown "
                "origin, and if you wrote this one yourself, save plain state dicts instead of objects."
            ) from error
        raise CheckpointError(
            f"{path} is corrupt: it holds pickle instructions that a safe load does not accept "
            "(damaged, or not written by torch.save)."
        ) from error
    except FileNotFoundError as error:
        raise CheckpointError(f"{path} does not exist.") from error
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as error:
        raise CheckpointError(f"{path} is truncated or corrupt: {_first_line(str(error))}") from error


#: The modules a pickle of plain data and tensors written by torch.save refers to.
_TENSOR_MODULES = ("torch", "collections")


def _foreign_import(path: Path) -> str | None:
    """The first callable outside torch that the pickle in ``path`` would import (read, not run).

    torch's safe loader stops at the first instruction it does not know (a newer pickle protocol's
    framing, say) before it sees what the pickle imports; this reads the instructions themselves.
    """
    try:
        with contextlib.ExitStack() as stack:
            if zipfile.is_zipfile(path):
                archive = stack.enter_context(zipfile.ZipFile(path))
                member = next(name for name in archive.namelist() if name.endswith("data.pkl"))
                file = stack.enter_context(archive.open(member))
            else:
                file = stack.enter_context(open(path, "rb"))
            strings: list[str] = []
            for opcode, arg, _ in pickletools.genops(file):
                if opcode.name in ("GLOBAL", "INST"):
                    imported = str(arg).replace(" ", ".")
                elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    imported = f"{strings[-2]}.{strings[-1]}"
                else:
                    if isinstance(arg, str):
                        strings.append(arg)
                    continue
                if imported.split(".")[0] not in _TENSOR_MODULES:
                    return imported
    except (OSError, ValueError, StopIteration, zipfile.BadZipFile):
        return None  # damaged before any foreign import: reported as corrupt
    return None


def _verify_checksums(path: Path) -> None:
    """Check the CRC-32 of every record of a torch zip file: torch.load would read damaged bytes."""
    if not zipfile.is_zipfile(path):
        return  # not a zip file (missing, truncated, legacy format): torch.load reports it
    with zipfile.ZipFile(path) as archive:
        damaged = archive.testzip()
    if damaged is not None:
        raise CheckpointError(
            f"{path} is corrupt: the checksum of its record {damaged!r} does not match its bytes "
            "(a damaged disk or an interrupted copy)."
        )


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else text
