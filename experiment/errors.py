"""The one exception hierarchy of the library.

Every message says what was wrong, the value received, what was expected and how to fix it.
The command line turns these into one-line messages with exit code 1.
"""

from __future__ import annotations


class ExperimentError(Exception):
    """Base class of every error raised on purpose by the library."""


class ConfigurationError(ExperimentError, ValueError):
    """An argument given by the user is invalid (unknown name, wrong type, out of range)."""


class DataError(ExperimentError, ValueError):
    """The data given to train or test cannot be used (empty loader, unsupported type)."""


class MonitorError(ConfigurationError, KeyError):
    """The monitored metric is not among the keys that are logged.

    It is also a ``KeyError``, the error Poutyne and Keras raise for a missing monitor, so code
    written for them (``except KeyError``) catches it too.
    """

    def __str__(self) -> str:
        # KeyError's str() shows its argument as a repr (quoted); the message reads as written.
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class NonFiniteLossError(ExperimentError, FloatingPointError):
    """The training loss became NaN or infinite."""


class NonFiniteStateError(NonFiniteLossError):
    """The network's parameters or the optimizer's state became NaN or infinite (the loss may be
    finite); such a state is never committed."""


class RunDirectoryError(ExperimentError):
    """The run directory cannot be used: it is a file, it is read-only, it is not a run."""


class DirectoryLockedError(RunDirectoryError):
    """Another live process holds the lock of the run directory."""


class StorageError(ExperimentError, OSError):
    """Writing a file of the run directory failed; the previous committed state is intact."""


class CheckpointError(ExperimentError):
    """No checkpoint of the run directory can be loaded."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint holds a pickle that would execute code or build arbitrary objects."""


class StateMismatchError(CheckpointError):
    """The saved state does not fit the network, optimizer or schedulers given now."""


class MissingExtraError(ExperimentError, ImportError):
    """A feature needs an optional extra that is not installed (``pip install "experiment[...]"``)."""
