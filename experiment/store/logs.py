"""Reading a run directory's epoch log as a pandas DataFrame."""

from __future__ import annotations

import io
import os
from typing import TYPE_CHECKING

from experiment.errors import RunDirectoryError
from experiment.store.directory import RunDirectory
from experiment.store.tsv import decode

if TYPE_CHECKING:
    import pandas as pd


def load_logs(directory: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a run directory's epoch log (log.tsv) as a DataFrame, empty when no epoch is complete.

    Example:
        >>> load_logs("runs/blobs")[["epoch", "loss", "val_loss"]]

    Raises:
        RunDirectoryError: log.tsv holds bytes that are not UTF-8 or is not a table.
    """
    import pandas as pd

    path = RunDirectory(directory).log_path
    if not path.exists():
        return pd.DataFrame()
    text = decode(path, path.read_bytes())  # a clear error for damaged bytes, not pandas' own
    try:
        return pd.read_csv(io.StringIO(text), sep="\t")
    except (ValueError, pd.errors.ParserError) as error:
        raise RunDirectoryError(
            f"{path} is damaged: pandas cannot read it as a table ({_first_line(str(error))}). Fix or "
            "delete the damaged line; log.tsv is rewritten from the committed checkpoint the next "
            "time the run trains."
        ) from error


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text
