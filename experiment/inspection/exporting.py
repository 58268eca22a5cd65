"""Export a run's weights as one plain file: the network's full state dict, which
``network.load_state_dict(torch.load(path, weights_only=True))`` takes without this library.

The weights are those ``Experiment.test(checkpoint=...)`` would load: "last" (the end of the last
completed epoch) or "best" (the best epoch's). A run trained with ``strategy="fsdp"`` keeps its
last weights as shards; this process reads them whole, without a process group (DCP reassembles
each tensor from every rank's shards), so a run of N processes exports on a laptop.

torch is imported when the weights are read, not when this module is (``exp`` starts light).

Example:
    >>> report = export_weights("runs/big", "model.pt", checkpoint="best")
    >>> report.epoch, report.tensors
    (7, 12)
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from experiment.errors import ConfigurationError
from experiment.store import shards
from experiment.store.directory import RunDirectory

EXPORT_CHOICES = ("last", "best")


@dataclasses.dataclass(frozen=True)
class ExportReport:
    """What was written: the file, the epoch whose weights it holds, its tensors and bytes."""

    path: Path
    epoch: int
    tensors: int
    bytes_written: int


def export_weights(
    directory: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    checkpoint: str | int = "last",
    force: bool = False,
) -> ExportReport:
    """Write the weights ``checkpoint`` names into ``output``, a plain full state dict written
    atomically (a crash leaves no partial file).

    Args:
        directory: the run directory.
        output: the file to write.
        checkpoint: "last", "best", or an epoch whose weights are kept (as for ``test``).
        force: replace ``output`` if it exists.

    Raises:
        ConfigurationError: ``output`` exists (without ``force``), is a folder, or sits in a folder
            that does not exist; or ``checkpoint`` is unknown.
        RunDirectoryError: not a run directory.
        DirectoryLockedError: another process holds the run's lock exclusively.
        CheckpointError: nothing saved yet, the weights named are not kept, or they are damaged.
    """
    run = RunDirectory(directory)
    path = _checked_output(Path(output), force=force)
    run.read_metadata()  # a clear error for a folder that is not a run
    from experiment.store.checkpoints import saved_weights  # torch loads with the file
    from experiment.store.files import save_tensors

    with run.reading():
        epoch, weights = saved_weights(run, checkpoint)
        if shards.is_sharded_node(weights):
            weights = shards.read_whole(weights)
    state = {key: value for key, value in weights.items()}  # a plain dict, as state_dict() gives
    save_tensors(path, state)
    return ExportReport(path, epoch, len(state), path.stat().st_size)


def _checked_output(path: Path, *, force: bool) -> Path:
    if path.is_dir():
        raise ConfigurationError(
            f"output: received {path}, which is a folder; expected the path of the file to write "
            "(model.pt). Name a file, inside that folder if you like."
        )
    if path.exists() and not force:
        raise ConfigurationError(
            f"output: {path} exists already; expected a new file. Nothing was written. Choose another "
            "name, or pass force=True (exp export --force) to replace it."
        )
    if not path.parent.is_dir():
        raise ConfigurationError(
            f"output: the folder of {path} does not exist; expected a file in an existing folder. "
            "Create the folder first."
        )
    return path
