"""Reading a run directory's epoch log as a pandas DataFrame."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from experiment.store.directory import RunDirectory

if TYPE_CHECKING:
    import pandas as pd


def load_logs(directory: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a run directory's epoch log (log.tsv) as a DataFrame, empty when no epoch is complete.

    Example:
        >>> load_logs("runs/blobs")[["epoch", "loss", "val_loss"]]
    """
    import pandas as pd

    path = RunDirectory(directory).log_path
    if not path.exists():
        return pd.DataFrame()
    return pd.read_csv(path, sep="\t")
