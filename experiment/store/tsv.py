"""Tab-separated logs: one header line, one row per record, floats written at full precision.

Rows are appended in O(1) with an fsync; a resume rewrites the file atomically from the committed
history when what is on disk differs from it (a row past the committed point, a torn last line).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from experiment.store.files import append_text, atomic_write_text


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
    try:
        with open(path, encoding="utf-8") as file:
            first = file.readline()
    except FileNotFoundError:
        return None
    return first.rstrip("\n").split("\t") if first.endswith("\n") else None


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a file written here, values as text (empty when the file does not exist)."""
    header = read_header(path)
    if header is None:
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        values = line.split("\t")
        if len(values) == len(header):
            rows.append(dict(zip(header, values)))
    return rows


def append_row(path: Path, row: dict[str, Any], *, durable: bool = True) -> None:
    """Append ``row`` in O(1); rewrite the file atomically only when a column is new.

    ``durable=False`` skips the fsync of the append, for a log that a resume rebuilds.
    """
    header = read_header(path)
    if header is not None and set(row) <= set(header):
        append_text(path, "\t".join(format_value(row.get(c)) for c in header) + "\n", durable=durable)
        return
    rows = [*read_rows(path), row]
    atomic_write_text(path, render(rows))


def repair(path: Path, rows: Sequence[dict[str, Any]]) -> bool:
    """Make the file hold exactly ``rows``; return whether it had to be rewritten."""
    header = read_header(path)
    expected = render(rows, header if header and set(columns_of(rows)) <= set(header) else None)
    try:
        current = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        current = None
    if not rows:
        if current is not None:
            path.unlink()
            return True
        return False
    if current == expected:
        return False
    atomic_write_text(path, expected)
    return True
