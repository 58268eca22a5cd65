"""What the progress display writes with: colours, number and time formats, the start-up line, the
epoch heads and summary lines, a safe stdout.

Helpers of :mod:`experiment.callbacks.progression`, kept apart so that the callback module holds the
callback alone.
"""

from __future__ import annotations

import numbers
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any, TypeGuard

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


def format_values(values: Mapping[str, Any], text_color: str = "", value_color: str = "") -> list[str]:
    """``["loss: 0.1235", ...]``: each value as :func:`format_number` shows it, after its name."""
    return [f"{text_color}{key}: {value_color}{format_number(value)}" for key, value in values.items()]


def format_interval(seconds: float) -> str:
    """A duration as ``MM:SS``, or ``H:MM:SS`` from an hour on (as tqdm shows it)."""
    minutes, secs = divmod(int(max(seconds, 0)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def format_rate(steps_per_second: float) -> str:
    """``12.3 steps/s``, or ``2.50 s/step`` when slower than a step per second."""
    if steps_per_second < 1:
        return f"{1 / steps_per_second:.2f} s/step"
    digits = 2 if steps_per_second < 10 else 1 if steps_per_second < 100 else 0
    return f"{steps_per_second:.{digits}f} steps/s"


def format_age(seconds: float) -> str:
    """How long ago, in the largest whole unit: ``just now``, ``40 s ago``, ``3 min ago``, ``5 h ago``."""
    if seconds < 1:
        return "just now"
    if seconds < 60:
        return f"{int(seconds)} s ago"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 2 * 86400:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} days ago"


def start_line(params: Mapping[str, Any], trainer: Any, wall_time: Callable[[], float]) -> str:
    """The line that says which run starts, or where it resumes.

    Reads ``params``: ``epochs``, ``steps_per_epoch`` and, when the loop gives them, ``directory``,
    ``checkpoint`` (None on a fresh start) and ``checkpoint_time`` (the checkpoint's modification
    time, compared with ``wall_time()``). Without ``checkpoint``, a run counts as resumed when the
    trainer has completed steps.

    Example:
        ``Resuming runs/x at epoch 7 of 20, step 120 of 300 (global step 1920), from checkpoint
        state-000042.pt (committed 3 min ago)``; ``Starting runs/x: 20 epochs of 300 steps``.
    """
    name = str(params.get("directory") or "training")
    epochs, steps = params.get("epochs"), params.get("steps_per_epoch")
    if "checkpoint" in params:
        resumed = params["checkpoint"] is not None
    else:
        resumed = trainer.epochs_completed > 0 or trainer.steps_in_epoch > 0
    if not resumed:
        plan = _count(epochs, "epoch") + (f" of {_count(steps, 'step')}" if steps else "")
        return f"Starting {name}: {plan}"
    epoch = f"epoch {trainer.epochs_completed + 1}" + (f" of {epochs}" if epochs else "")
    if trainer.steps_in_epoch:
        where = f"at {epoch}, step {trainer.steps_in_epoch}" + (f" of {steps}" if steps else "")
    else:
        where = f"at the start of {epoch}"
    where += f" (global step {trainer.global_step})"
    checkpoint, committed = params.get("checkpoint"), params.get("checkpoint_time")
    if checkpoint is not None:
        where += f", from checkpoint {checkpoint}"
        if is_number(committed):
            where += f" (committed {format_age(wall_time() - float(committed))})"
    return f"Resuming {name} {where}"


def epoch_head(epoch: int, epochs: Any, color: Callable[[str], str]) -> str:
    """The start of an epoch's lines, ``"Epoch:  2/20 "``: the epoch aligned to the width of
    ``epochs``, coloured by ``color(field)`` ("" for none)."""
    return f"{color('text')}Epoch: {color('ratio')}{epoch:>{len(str(epochs))}}/{epochs} "


def summary_line(head: str, logs: Mapping[str, Any], color: Callable[[str], str]) -> str:
    """The line that ends an epoch or a test: ``head``, the duration (``logs["time"]``), then the
    other logged values, coloured by ``color(field)`` (and reset at the end when coloured)."""
    seconds = logs.get("time")
    duration = f"{color('time')}{float(seconds):.2f}s " if is_number(seconds) else ""
    shown = {k: v for k, v in logs.items() if k not in ("epoch", "time")}
    reset = RESET if color("text") else ""
    return f"{head}{duration}{' '.join(format_values(shown, color('text'), color('metric_value')))}{reset}\n"


def _count(number: Any, unit: str) -> str:
    return f"{number} {unit}{'' if number == 1 else 's'}"


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
