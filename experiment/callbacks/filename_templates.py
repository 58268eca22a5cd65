"""The file name templates of the saving callbacks: format strings filled with the epoch number and
the epoch's logs (``"weights.{epoch:02d}-{val_loss:.2f}.ckpt"``), so that one run can keep a file
per epoch or overwrite one.
"""

from __future__ import annotations

import re
import string
from typing import Any

from experiment.errors import ConfigurationError
from experiment.state.best import missing_monitor_message


def fill_template(template: str, epoch_number: int, logs: dict[str, Any]) -> str:
    """``template`` filled with ``epoch`` and the logs' keys.

    Raises:
        ConfigurationError: the template names a key that is not logged, or is not a valid format
            string.
    """
    fields = {**logs, "epoch": epoch_number}
    try:
        return template.format_map(fields)
    except KeyError as error:
        message = missing_monitor_message(str(error.args[0]), fields, "filename")
        raise ConfigurationError(f"{message} Received filename={template!r}.") from error
    except (ValueError, IndexError) as error:
        raise ConfigurationError(
            f"filename: received {template!r}, which is not a valid format string ({error}); "
            "expected named fields such as {epoch:02d} or {val_loss:.2f} (double braces for "
            "literal ones)."
        ) from error


def names_epoch(template: str) -> bool:
    """Whether the format string ``template`` has an ``{epoch}`` field (so each epoch gets its name)."""
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(template) if field]
    except ValueError:
        return False  # not a format string: the first save says why
    return any(re.split(r"[.\[]", field, maxsplit=1)[0] == "epoch" for field in fields)
