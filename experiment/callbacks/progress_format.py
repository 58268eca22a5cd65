"""What the progress display draws with: colours, the tqdm bar, number formats, a safe stdout.

Helpers of :mod:`experiment.callbacks.progress`, kept apart so that the callback module holds the
callback alone.
"""

from __future__ import annotations

import numbers
import os
import sys
from typing import Any, TypeGuard

from tqdm import tqdm

from experiment.arguments import check_int, reject
from experiment.errors import ConfigurationError

_CODES = {
    "black": 30,
    "red": 31,
    "green": 32,
    "yellow": 33,
    "blue": 34,
    "magenta": 35,
    "cyan": 36,
    "white": 37,
}
ANSI_COLORS = {
    **{name: f"\x1b[{code}m" for name, code in _CODES.items()},
    **{f"bright_{name}": f"\x1b[{code + 60}m" for name, code in _CODES.items()},
}
RESET = "\x1b[0m"
DEFAULT_COLORS = {
    "text_color": "cyan",
    "ratio_color": "yellow",
    "metric_value_color": "green",
    "time_color": "magenta",
    "progress_bar_color": "green",
}


class Bar(tqdm):
    """tqdm without its monitor thread, with the running metrics as the ``{metrics}`` field."""

    monitor_interval = 0
    metrics = ""

    @property
    def format_dict(self) -> dict[str, Any]:
        return {**super().format_dict, "metrics": self.metrics}


def is_number(value: Any) -> TypeGuard[numbers.Real]:
    """A real number, NumPy's included (what scikit-learn's metrics return); not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def format_number(value: Any) -> str:
    """A logged value as the display shows it: 4 decimals, or 3 and an exponent when far from 1."""
    if not is_number(value):
        return str(value)
    value = float(value)
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.4f}"
    return f"{value:.3e}"


def silence_stdout(stream: Any) -> None:
    """Point the file descriptor of the process's stdout at the null device, when ``stream`` is it.

    What the stream still buffers would otherwise be flushed into the broken pipe at exit, and the
    interpreter would print an "Exception ignored" message on stderr.
    """
    if stream not in (sys.stdout, sys.__stdout__):
        return
    try:
        descriptor = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, descriptor)
    finally:
        os.close(null)


def every_n(value: Any, name: str) -> int | None:
    """The redraw period of a ``show_every_n_*_steps`` option: 1 for "all", None for "none"."""
    if value == "all":
        return 1
    if value == "none":
        return None
    return check_int(name, value, minimum=1, expected="'all', 'none' or a positive integer")


def palette(coloring: Any) -> dict[str, str]:
    """The escape sequence of each colour field from the ``coloring`` option ("" when off)."""
    if isinstance(coloring, bool):
        chosen = DEFAULT_COLORS if coloring else dict.fromkeys(DEFAULT_COLORS, "")
        return {field: ANSI_COLORS.get(color, color) for field, color in chosen.items()}
    if not isinstance(coloring, dict):
        raise reject("coloring", coloring, "a bool or a dict of colours")
    unknown = sorted(set(coloring) - set(DEFAULT_COLORS))
    if unknown:
        raise ConfigurationError(
            f"coloring: received unknown field(s) {unknown}; expected some of {sorted(DEFAULT_COLORS)}."
        )
    sequences = {}
    for field in DEFAULT_COLORS:
        color = coloring.get(field, DEFAULT_COLORS[field])
        if isinstance(color, str) and color.startswith("\x1b["):
            sequences[field] = color
        elif isinstance(color, str) and color.lower() in ANSI_COLORS:
            sequences[field] = ANSI_COLORS[color.lower()]
        else:
            raise ConfigurationError(
                f"coloring[{field!r}]: received {color!r}; expected an ANSI escape "
                f"sequence or one of {sorted(ANSI_COLORS)}."
            )
    return sequences
