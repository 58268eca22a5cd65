"""Learning curves of one or several runs, one panel per metric (needs the ``[plot]`` extra).

Each panel shows a metric's training curve (solid) and validation curve (dashed, from its ``val_``
column) against the epoch; each run has its own colour and the legend names the runs. The x axis
is labelled ``epoch`` and the y axis with the metric's name; the learning rate is drawn on a log
axis when its values span more than a decade. The figure is drawn with matplotlib's Agg canvas,
without pyplot, so nothing global is touched.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from experiment.errors import ConfigurationError, DataError, MissingExtraError
from experiment.store.files import atomic_write_bytes
from experiment.store.logs import load_logs

PANEL_SIZE = (5.0, 3.6)  # inches; at DPI, a panel is 500 x 360 pixels
DPI = 100
MAX_COLUMNS = 3
_NOT_METRICS = ("epoch", "time")
LOG_SCALE_METRICS = ("lr",)  # drawn on a log axis when they span more than a decade


def figure_pixels(panels: int) -> tuple[int, int]:
    """The (width, height) in pixels of a figure with ``panels`` panels."""
    columns = min(panels, MAX_COLUMNS)
    rows = math.ceil(panels / MAX_COLUMNS)
    return round(columns * PANEL_SIZE[0] * DPI), round(rows * PANEL_SIZE[1] * DPI)


def metric_names(logs: pd.DataFrame) -> list[str]:
    """The metrics of an epoch log: its columns without ``val_`` prefixes, epoch and time; lr last."""
    names = [column.removeprefix("val_") for column in logs.columns if column not in _NOT_METRICS]
    names = list(dict.fromkeys(names))
    return [name for name in names if name != "lr"] + [name for name in names if name == "lr"]


def plot_learning_curves(
    directories: Sequence[str | os.PathLike[str]],
    output_path: str | os.PathLike[str],
    *,
    metrics: Sequence[str] = (),
) -> Path:
    """Draw the learning curves of ``directories`` into an image file (PNG, or by its suffix).

    Args:
        directories: run directories, overlaid in each panel.
        output_path: the image to write (atomically).
        metrics: the metrics to show ("loss", "acc", "lr"; a ``val_`` prefix is ignored). By default
            every metric that a run logs.

    Returns:
        The path written.

    Raises:
        MissingExtraError: matplotlib is not installed.
        DataError: a directory has no completed epoch.
        ConfigurationError: a requested metric is logged by none of the runs.
    """
    figure = learning_curves_figure(directories, metrics=metrics)
    buffer = io.BytesIO()
    suffix = Path(output_path).suffix.lstrip(".").lower() or "png"
    figure.savefig(buffer, format=suffix, dpi=DPI)
    atomic_write_bytes(Path(output_path), buffer.getvalue())
    return Path(output_path)


def learning_curves_figure(
    directories: Sequence[str | os.PathLike[str]], *, metrics: Sequence[str] = ()
) -> Any:
    """The matplotlib ``Figure`` that :func:`plot_learning_curves` writes: one axes per metric, in order.

    Raises:
        MissingExtraError, DataError, ConfigurationError: as :func:`plot_learning_curves`.
    """
    canvas_class, figure_class = _matplotlib()
    logs = {Path(d): load_logs(d) for d in directories}
    for directory, frame in logs.items():
        if frame.empty:
            raise DataError(f"{directory} has no completed epoch yet; its log.tsv holds no row to plot.")
    available = metric_names(pd.concat([frame.head(0) for frame in logs.values()]))
    chosen = _choose(metrics, available)
    columns = min(len(chosen), MAX_COLUMNS)
    rows = math.ceil(len(chosen) / MAX_COLUMNS)
    figure = figure_class(figsize=(columns * PANEL_SIZE[0], rows * PANEL_SIZE[1]), dpi=DPI)
    canvas_class(figure)
    labels = _labels(list(logs))
    for index, metric in enumerate(chosen):
        axes = figure.add_subplot(rows, columns, index + 1)
        _draw_panel(axes, metric, logs, labels)
    figure.tight_layout()
    return figure


def spans_decades(values: Sequence[float] | pd.Series) -> bool:
    """Whether positive ``values`` span more than a factor of 10 (NaN ignored; False with a value <= 0)."""
    known = [float(v) for v in values if not math.isnan(float(v))]
    if not known or min(known) <= 0:
        return False
    return max(known) / min(known) > 10


def _draw_panel(axes: Any, metric: str, logs: dict[Path, pd.DataFrame], labels: dict[Path, str]) -> None:
    for color_index, (directory, frame) in enumerate(logs.items()):
        color = f"C{color_index % 10}"
        for column, style, kind in ((metric, "-", "train"), (f"val_{metric}", "--", "val")):
            if column in frame.columns:
                axes.plot(
                    frame["epoch"],
                    frame[column],
                    style,
                    color=color,
                    marker=".",
                    label=f"{labels[directory]} {kind}",
                )
    axes.set_title(metric)
    axes.set_xlabel("epoch")
    axes.set_ylabel(metric)
    if metric in LOG_SCALE_METRICS and spans_decades(_values(metric, logs)):
        axes.set_yscale("log")
    axes.xaxis.set_major_locator(_integer_locator())
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small")


def _values(metric: str, logs: dict[Path, pd.DataFrame]) -> list[float]:
    """Every logged value of ``metric`` and its ``val_`` twin, over all runs."""
    columns = (metric, f"val_{metric}")
    return [v for frame in logs.values() for c in columns if c in frame.columns for v in frame[c].tolist()]


def _choose(metrics: Sequence[str], available: list[str]) -> list[str]:
    if not metrics:
        return available
    chosen = list(dict.fromkeys(name.removeprefix("val_") for name in metrics))
    unknown = [name for name in chosen if name not in available]
    if unknown:
        raise ConfigurationError(
            f"metric: received {', '.join(map(repr, unknown))}, not logged by these runs; expected "
            f"one of {', '.join(available)}."
        )
    return chosen


def _labels(directories: list[Path]) -> dict[Path, str]:
    """Short, distinct names: the folder names, or the whole paths where two folder names collide."""
    names = [d.name or str(d) for d in directories]
    if len(set(names)) == len(names):
        return dict(zip(directories, names, strict=True))
    return {d: str(d) for d in directories}


def _integer_locator() -> Any:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _matplotlib() -> tuple[Any, Any]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise MissingExtraError(
            "Plotting needs matplotlib, which is not installed. Install the plot extra: "
            "pip install 'experiment[plot]'."
        ) from error
    return FigureCanvasAgg, Figure
