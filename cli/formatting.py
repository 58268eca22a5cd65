"""Text formatting shared by the commands: sizes, times, ages, aligned tables, one-line errors."""

from __future__ import annotations

import datetime
import time
from collections.abc import Sequence
from typing import Any

from experiment.inspection.display import printable


def one_line(message: str) -> str:
    """A message on one line (the errors of the library may list problems on several lines), with
    control characters escaped: it may quote a path or command read from a run directory."""
    return printable(" ".join(message.split()))


def format_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def format_age(timestamp: float | None, now: float | None = None) -> str:
    """How long ago ``timestamp`` (seconds since the epoch) was: "42 s ago", "3 min ago", ..."""
    if timestamp is None:
        return "-"
    seconds = max(0.0, (time.time() if now is None else now) - timestamp)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


def format_time(timestamp: float | None) -> str:
    """A local date and time, to the second."""
    if timestamp is None:
        return "-"
    return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def format_value(value: Any) -> str:
    """Numbers with 6 significant digits, None as "-", anything else as text with its control
    characters escaped (values come from run directories, which anyone may have written)."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return printable(str(value))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns separated by two spaces."""
    cells = [[str(h) for h in headers]] + [[format_value(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def key_values(pairs: Sequence[tuple[str, Any]], indent: str = "") -> str:
    """``key  value`` lines with the values aligned."""
    width = max((len(key) for key, _ in pairs), default=0)
    return "\n".join(f"{indent}{key.ljust(width)}  {format_value(value)}".rstrip() for key, value in pairs)
