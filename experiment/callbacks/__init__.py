"""The callbacks: one per module, re-exported here (``from experiment.callbacks import EarlyStopping``).

Callbacks see the loop through the :class:`Trainer` protocol only; this package never imports the
training layer.
"""

from __future__ import annotations

from experiment.callbacks.base import HOOKS, Callback, state_key_of
from experiment.callbacks.best_model_restore import BestModelRestore
from experiment.callbacks.callback_list import CallbackList
from experiment.callbacks.checkpoint_savers import (
    LRSchedulerCheckpoint,
    ModelCheckpoint,
    OptimizerCheckpoint,
    PeriodicSaveLambda,
)
from experiment.callbacks.clipping import ClipNorm, ClipValue
from experiment.callbacks.csv_logger import AtomicCSVLogger, CSVLogger
from experiment.callbacks.delay import DelayCallback
from experiment.callbacks.early_stopping import EarlyStopping, PatienceChecker
from experiment.callbacks.forwarding import ForwardingCallback
from experiment.callbacks.gradient_tracker import GradientTracker
from experiment.callbacks.lr_schedulers import (
    CosineAnnealingLR,
    CosineAnnealingWarmRestarts,
    CyclicLR,
    ExponentialLR,
    LambdaLR,
    LRSchedulerCallback,
    MultiplicativeLR,
    MultiStepLR,
    OneCycleLR,
    ReduceLROnPlateau,
    StepLR,
)
from experiment.callbacks.mlflow_logger import MLFlowLogger
from experiment.callbacks.notification import NotificationCallback, Notificator
from experiment.callbacks.optimizer_policy import OptimizerPolicy
from experiment.callbacks.periodic_save import PeriodicSaveCallback
from experiment.callbacks.policy_runner import PolicyRunner
from experiment.callbacks.progression import ProgressionCallback
from experiment.callbacks.tensorboard_logger import TensorBoardGradientTracker, TensorBoardLogger
from experiment.callbacks.terminate_on_nan import TerminateOnNaN
from experiment.callbacks.trainer import Trainer

__all__ = [
    "HOOKS",
    "AtomicCSVLogger",
    "BestModelRestore",
    "CSVLogger",
    "Callback",
    "CallbackList",
    "ClipNorm",
    "ClipValue",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "CyclicLR",
    "DelayCallback",
    "EarlyStopping",
    "ExponentialLR",
    "ForwardingCallback",
    "GradientTracker",
    "LRSchedulerCallback",
    "LRSchedulerCheckpoint",
    "LambdaLR",
    "MLFlowLogger",
    "ModelCheckpoint",
    "MultiStepLR",
    "MultiplicativeLR",
    "NotificationCallback",
    "Notificator",
    "OneCycleLR",
    "OptimizerCheckpoint",
    "OptimizerPolicy",
    "PatienceChecker",
    "PeriodicSaveCallback",
    "PeriodicSaveLambda",
    "PolicyRunner",
    "ProgressionCallback",
    "ReduceLROnPlateau",
    "StepLR",
    "TensorBoardGradientTracker",
    "TensorBoardLogger",
    "TerminateOnNaN",
    "Trainer",
    "state_key_of",
]
