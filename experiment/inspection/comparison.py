"""Two runs side by side: their configuration, their settings and their final and best metrics."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from experiment.inspection.summary import RunSummary, log_value, summarize
from experiment.store.metadata import flat_hparams

_NOT_METRICS = ("epoch", "time")

#: Sections whose equal rows ``exp diff`` hides unless asked for all (metrics are always shown).
SETTING_SECTIONS = ("config", "settings", "created_with")


@dataclasses.dataclass(frozen=True)
class ComparisonRow:
    """One line of a comparison: a section ("run", "config", "settings", "created_with", "final",
    "best"), a key, two values.

    A value is None where the run does not have the key.
    """

    section: str
    key: str
    a: Any
    b: Any

    @property
    def differs(self) -> bool:
        return self.a != self.b


def compare_runs(
    directory_a: str | os.PathLike[str], directory_b: str | os.PathLike[str]
) -> list[ComparisonRow]:
    """Compare two runs without loading any checkpoint.

    Sections: "run" (status, epochs, monitored metric), "config" (the ``config`` given to
    Experiment, nested keys flattened to "a.b"), "settings" (recorded training options),
    "created_with" (what the run was created with: the optimizer's class and hyperparameters as
    ``optimizer.lr``, or ``optimizer.1.lr`` for the second of several parameter groups, precision,
    accumulation, world size, custom steps and the shape of the data as ``data.train_data.batch_size``),
    "final" (the last logged epoch) and "best" (the logged epoch with the best monitored value).

    Example:
        >>> rows = compare_runs("runs/lr-0.1", "runs/lr-0.01")
        >>> [row.key for row in rows if row.section == "config" and row.differs]
        ['lr']

    Raises:
        RunDirectoryError: either directory holds no run.
    """
    a, b = summarize(directory_a), summarize(directory_b)
    rows = _section("run", _run_facts(a), _run_facts(b))
    rows += _section("config", flat_hparams(a.config), flat_hparams(b.config))
    rows += _section("settings", a.settings, b.settings)
    rows += _section("created_with", _creation(a.created_with), _creation(b.created_with))
    rows += _section("final", _metrics(a.last_row), _metrics(b.last_row))
    rows += _section("best", _metrics(a.best_row), _metrics(b.best_row))
    return rows


def _section(name: str, a: dict[str, Any], b: dict[str, Any]) -> list[ComparisonRow]:
    keys = list(dict.fromkeys([*a, *b]))
    return [ComparisonRow(name, key, a.get(key), b.get(key)) for key in keys]


def _creation(created_with: dict[str, Any]) -> dict[str, Any]:
    """``created_with`` flattened: one parameter group's settings under "optimizer.", several
    under "optimizer.0.", "optimizer.1.", ..."""
    record = dict(created_with)
    groups = record.get("optimizer")
    if isinstance(groups, list):
        record["optimizer"] = groups[0] if len(groups) == 1 else {str(i): g for i, g in enumerate(groups)}
    return flat_hparams(record)


def _run_facts(summary: RunSummary) -> dict[str, Any]:
    return {"status": summary.status, "epochs": summary.epochs_done, "monitor": summary.monitor}


def _metrics(row: dict[str, str] | None) -> dict[str, Any]:
    if row is None:
        return {}
    metrics: dict[str, Any] = {"epoch": int(row["epoch"])} if row.get("epoch", "").isdigit() else {}
    for key, text in row.items():
        if key not in _NOT_METRICS:
            metrics[key] = log_value(text)
    return metrics
