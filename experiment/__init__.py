"""Train PyTorch models in run directories that resume exactly where training stopped.

The public names below are imported on first use, so that reading run directories (the ``exp``
command) does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, tuple[str, ...]] = {
    "experiment.run.experiment": ("Experiment",),
    "experiment.store.logs": ("load_logs",),
    "experiment.training.loop": ("TrainingLoop",),
    "experiment.callbacks.base": ("Callback",),
    "experiment.errors": (
        "CheckpointError",
        "ConfigurationError",
        "DataError",
        "DirectoryLockedError",
        "ExperimentError",
        "MissingExtraError",
        "MonitorError",
        "NonFiniteLossError",
        "NonFiniteStateError",
        "RunDirectoryError",
        "StateMismatchError",
        "StorageError",
        "UnsafeCheckpointError",
    ),
    # callbacks
    "experiment.callbacks.terminate_on_nan": ("TerminateOnNaN",),
    "experiment.callbacks.best_model_restore": ("BestModelRestore",),
    "experiment.callbacks.early_stopping": ("EarlyStopping", "PatienceChecker"),
    "experiment.callbacks.delay": ("DelayCallback",),
    "experiment.callbacks.forwarding": ("ForwardingCallback",),
    "experiment.callbacks.trainer": ("Trainer",),
    "experiment.callbacks.clipping": ("ClipNorm", "ClipValue"),
    "experiment.callbacks.csv_logger": ("CSVLogger", "AtomicCSVLogger"),
    "experiment.callbacks.gradient_tracker": ("GradientTracker",),
    "experiment.callbacks.tensorboard_logger": ("TensorBoardLogger", "TensorBoardGradientTracker"),
    "experiment.callbacks.progression": ("ProgressionCallback",),
    "experiment.callbacks.mlflow_logger": ("MLFlowLogger",),
    "experiment.callbacks.notification": ("Notificator", "NotificationCallback"),
    "experiment.callbacks.periodic_save": ("PeriodicSaveCallback",),
    "experiment.callbacks.checkpoint_savers": (
        "ModelCheckpoint",
        "OptimizerCheckpoint",
        "LRSchedulerCheckpoint",
        "PeriodicSaveLambda",
    ),
    "experiment.callbacks.lr_schedulers": (
        "LRSchedulerCallback",
        "LambdaLR",
        "MultiplicativeLR",
        "StepLR",
        "MultiStepLR",
        "ExponentialLR",
        "CosineAnnealingLR",
        "CyclicLR",
        "OneCycleLR",
        "CosineAnnealingWarmRestarts",
        "ReduceLROnPlateau",
    ),
    "experiment.callbacks.optimizer_policy": ("OptimizerPolicy",),
    "experiment.callbacks.policy_runner": ("PolicyRunner",),
    # policies
    "experiment.schedules.phases": ("linspace", "cosinespace", "Phase", "sgdr_phases", "one_cycle_phases"),
    "experiment.schedules.value_policies": (
        "Policy",
        "ValuePolicy",
        "StopTraining",
        "Constant",
        "Exponential",
        "Schedule",
        "Switch",
        "LambdaEpoch",
    ),
    "experiment.run.train_model": ("train_model", "default_train_step"),
    # run directories, as the exp command sees them
    "experiment.inspection.summary": ("RunSummary", "summarize", "summarize_all"),
    "experiment.inspection.resume": ("ResumePlan", "plan_resume"),
    "experiment.inspection.entry_points": ("run_entry_point",),
    "experiment.inspection.cleaning": ("CleanReport", "clean_run"),
    "experiment.inspection.comparison": ("compare_runs",),
    "experiment.inspection.plotting": ("plot_learning_curves",),
}

_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted([*_MODULE_OF, "__version__"])


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'experiment' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
