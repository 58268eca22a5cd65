"""Train PyTorch models in run directories that resume exactly where training stopped."""

from __future__ import annotations

__version__ = "0.1.0"

from experiment.callbacks.base import Callback
from experiment.errors import (
    CheckpointError,
    ConfigurationError,
    DataError,
    DirectoryLockedError,
    ExperimentError,
    MonitorError,
    NonFiniteLossError,
    RunDirectoryError,
    StateMismatchError,
    StorageError,
    UnsafeCheckpointError,
)
from experiment.experiment import Experiment, load_logs
from experiment.loop import TrainingLoop

__all__ = [
    "Callback",
    "CheckpointError",
    "ConfigurationError",
    "DataError",
    "DirectoryLockedError",
    "Experiment",
    "ExperimentError",
    "MonitorError",
    "NonFiniteLossError",
    "RunDirectoryError",
    "StateMismatchError",
    "StorageError",
    "TrainingLoop",
    "UnsafeCheckpointError",
    "__version__",
    "load_logs",
]
