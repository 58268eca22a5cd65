"""Read the end of a log.tsv without reading the whole file.

A listing of many runs needs each run's last row and best row. Lines are read backwards in blocks
from the end of the file; the scan stops at the last row when the best epoch is known and already
passed, so a run whose best epoch is recent costs one block whatever the length of its log.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator
from pathlib import Path

from experiment.state.best import is_improvement
from experiment.store.tsv import decode, read_header

BLOCK_SIZE = 8192


@dataclasses.dataclass
class LogTail:
    """The header, last row and best row of a log (values as text), and how many rows were read."""

    header: list[str] | None
    last_row: dict[str, str] | None
    best_row: dict[str, str] | None
    rows_read: int


def lines_backwards(path: Path, *, block_size: int = BLOCK_SIZE) -> Iterator[str]:
    """The lines of ``path`` from the last to the first (a trailing newline gives no empty line).

    Raises:
        RunDirectoryError: a line holds bytes that are not UTF-8 (raised when it is reached).
    """
    for line in _raw_lines_backwards(path, block_size=block_size):
        yield decode(path, line)


def _raw_lines_backwards(path: Path, *, block_size: int = BLOCK_SIZE) -> Iterator[bytes]:
    with open(path, "rb") as file:
        position = file.seek(0, os.SEEK_END)
        rest = b""
        first_block = True
        while position > 0:
            size = min(block_size, position)
            position -= size
            file.seek(position)
            pieces = (file.read(size) + rest).split(b"\n")
            rest = pieces[0]
            complete = pieces[1:]
            if first_block and complete and complete[-1] == b"":
                complete.pop()
            first_block = False
            yield from reversed(complete)
        yield rest


def read_log_tail(
    path: Path, *, monitor: str | None = None, mode: str | None = None, best_epoch: int | None = None
) -> LogTail:
    """The last row and the best row of a log written by :mod:`experiment.store.tsv`.

    Args:
        path: the log.tsv (a missing file gives an empty tail).
        monitor: the column that decides the best row.
        mode: "min" or "max" for ``monitor``.
        best_epoch: when known, the epoch of the best row: the scan stops there. Otherwise every
            row is read and the best is computed from ``monitor`` and ``mode``.

    Raises:
        RunDirectoryError: a line read holds bytes that are not UTF-8 (a torn last line is
            skipped, whatever its bytes).
    """
    header = read_header(path)
    if header is None:
        return LogTail(None, None, None, 0)
    last: dict[str, str] | None = None
    best: dict[str, str] | None = None
    best_value: float | None = None
    rows = 0
    lines = _raw_lines_backwards(path)
    if not _ends_with_newline(path):
        next(lines)  # a torn last line left by a crash: every complete row ends with a newline
    for raw in lines:
        values = decode(path, raw).split("\t")
        if values == header:
            break
        if len(values) != len(header):
            continue
        row = dict(zip(header, values, strict=True))
        rows += 1
        last = last or row
        if best_epoch is not None:
            if row.get("epoch") == str(best_epoch):
                best = row
                break
            continue
        value = _number(row.get(monitor)) if monitor else None
        # Reading backwards, an equal value found earlier in the log wins: ">=" via not-worse.
        if mode and value is not None and (best_value is None or not is_improvement(best_value, value, mode)):
            best, best_value = row, value
    return LogTail(header, last, best, rows)


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return None if value is None or math.isnan(value) else value


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as file:
        if file.seek(0, os.SEEK_END) == 0:
            return True
        file.seek(-1, os.SEEK_END)
        return file.read(1) == b"\n"
