"""The environment through which ``exp resume`` gives the rerun process a new target of epochs.

``exp resume`` sets ``EXPERIMENT_RESUME_DIR`` (the resolved run directory) and ``EXPERIMENT_EPOCHS``
(the target) for the command it reruns; :meth:`Experiment.train <experiment.Experiment.train>`
honours the target for that run directory only.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from experiment.arguments import reject

logger = logging.getLogger(__name__)

RESUME_DIR_VARIABLE = "EXPERIMENT_RESUME_DIR"
EPOCHS_VARIABLE = "EXPERIMENT_EPOCHS"


def epochs_from_environment(directory: str | os.PathLike[str], epochs: int) -> int:
    """The target number of epochs, ``EXPERIMENT_EPOCHS`` when ``exp resume`` set it for ``directory``.

    Raises:
        ConfigurationError: ``EXPERIMENT_EPOCHS`` is not a positive integer.
    """
    named, target = os.environ.get(RESUME_DIR_VARIABLE), os.environ.get(EPOCHS_VARIABLE)
    if named is None or target is None or Path(named).resolve() != Path(directory).resolve():
        return epochs
    if not target.isdigit() or int(target) < 1:  # text from the environment, not an int
        raise reject(
            EPOCHS_VARIABLE,
            target,
            "a positive integer (the total number of epochs, set by `exp resume --epochs N`)",
        )
    if int(target) != epochs:
        logger.info("%s=%s overrides epochs=%s for %s.", EPOCHS_VARIABLE, target, epochs, directory)
    return int(target)
