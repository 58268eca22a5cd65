"""Tab-separated logs: one header line, one row per record, floats written at full precision.

Rows are appended in O(1) with an fsync, after an atomic repair of a torn last line, so that a
reader sees whole rows only; a resume rewrites the file atomically from the committed history when
what is on disk differs from it (a row past the committed point, a torn line, damaged bytes).
Nothing here follows a symbolic link.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from experiment.errors import RunDirectoryError
from experiment.store.files import append_text, atomic_write_bytes, atomic_write_text, refuse_symlink

#: How much of a log's end is read to check its last line (rows are far shorter).
_TAIL_BYTES = 65536


def format_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return repr(value)
    return str(value).replace("\t", " ").replace("\n", " ")


def columns_of(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Union of the keys of ``rows``, in order of first appearance."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return list(columns)


def render(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """The whole file's text for ``rows``."""
    columns = list(columns) if columns is not None else columns_of(rows)
    lines = ["\t".join(columns)]
    lines += ["\t".join(format_value(row.get(c)) for c in columns) for row in rows]
    return "\n".join(lines) + "\n"


def read_header(path: Path) -> list[str] | None:
    """The column names, or None when the file is missing or its first line is incomplete.

    Raises:
        RunDirectoryError: the first line holds bytes that are not UTF-8.
    """
    try:
        with open(path, "rb") as file:
            first = file.readline()
    except FileNotFoundError:
        return None
    if not first.endswith(b"\n"):
        return None
    return decode(path, first).rstrip("\n").split("\t")


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a file written here, values as text (empty when the file does not exist).

    A line whose number of fields differs from the header's (a torn last line) is skipped.

    Raises:
        RunDirectoryError: the file holds bytes that are not UTF-8.
    """
    header = read_header(path)
    if header is None:
        return []
    rows = []
    for line in decode(path, path.read_bytes()).splitlines()[1:]:
        values = line.split("\t")
        if len(values) == len(header):
            rows.append(dict(zip(header, values)))
    return rows


def append_row(path: Path, row: dict[str, Any], *, durable: bool = True) -> None:
    """Append ``row`` in O(1); rewrite the file atomically only when a column is new.

    A torn last line (cut short by a full disk or a crash) is dropped first, atomically, so that
    the file always reads as whole rows. ``durable=False`` skips the fsync of the append, for a log
    that a resume rebuilds.

    Raises:
        RunDirectoryError: ``path`` is a symbolic link, or it holds bytes that are not UTF-8.
        StorageError: the write failed.
    """
    refuse_symlink(path)
    header = read_header(path)
    if header is not None:
        _drop_torn_last_line(path, len(header))
    if header is not None and set(row) <= set(header):
        append_text(path, "\t".join(format_value(row.get(c)) for c in header) + "\n", durable=durable)
        return
    rows = [*read_rows(path), row]
    atomic_write_text(path, render(rows))


def repair(path: Path, rows: Sequence[dict[str, Any]]) -> bool:
    """Make the file hold exactly ``rows``; return whether it had to be rewritten.

    Whatever the file holds (rows past ``rows``, a torn last line, bytes that are not UTF-8) is
    replaced atomically by the rendering of ``rows``.

    Raises:
        RunDirectoryError: ``path`` is a symbolic link.
    """
    refuse_symlink(path)
    try:
        current: bytes | None = path.read_bytes()
    except FileNotFoundError:
        current = None
    if not rows:
        if current is not None:
            path.unlink()
            return True
        return False
    header = _header_of(current)
    expected = render(rows, header if header and set(columns_of(rows)) <= set(header) else None)
    if current == expected.encode("utf-8"):
        return False
    atomic_write_text(path, expected)
    return True


def _header_of(data: bytes | None) -> list[str] | None:
    """The header of a file's bytes, None when it is missing, incomplete or not UTF-8."""
    first, newline, _ = (data or b"").partition(b"\n")
    try:
        return first.decode("utf-8").split("\t") if newline else None
    except UnicodeDecodeError:
        return None


def _drop_torn_last_line(path: Path, fields: int) -> None:
    """Rewrite ``path`` without its last line when it has no newline or not ``fields`` fields."""
    with open(path, "rb") as file:
        size = file.seek(0, os.SEEK_END)
        file.seek(max(0, size - _TAIL_BYTES))
        tail = file.read()
    if b"\n" not in tail[:-1] and len(tail) < size:  # a last line longer than the tail read
        tail = path.read_bytes()
    complete = tail.endswith(b"\n")
    last = tail[: -1 if complete else None].rpartition(b"\n")[2]
    if complete and len(last.split(b"\t")) == fields:
        return
    data = path.read_bytes()
    atomic_write_bytes(path, data[: len(data) - len(last) - (1 if complete else 0)])


def decode(path: Path, data: bytes) -> str:
    """``data``, read from ``path``, as text.

    Raises:
        RunDirectoryError: ``data`` is not UTF-8: the file is damaged.
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RunDirectoryError(
            f"{path} is damaged: it holds bytes that are not UTF-8 (byte "
            f"{data[error.start]:#04x} at offset {error.start}); expected the text rows this library "
            "writes. Delete the damaged line (or the file) with a text editor; log.tsv is also "
            "rewritten from the committed checkpoint the next time the run trains."
        ) from None
