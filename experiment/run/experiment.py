"""Experiment: the front door. It owns a run directory and trains, resumes and tests in it."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from torch import nn

from experiment.callbacks.base import CallbackList
from experiment.callbacks.progress import with_progress
from experiment.errors import (
    CheckpointError,
    ConfigurationError,
    MonitorError,
    RunDirectoryError,
    StorageError,
)
from experiment.run.committer import Checkpointer
from experiment.run.recording import EpochRecorder
from experiment.state.compatibility import model_mismatches
from experiment.state.monitor import BestTracker, check_mode, missing_monitor_message
from experiment.state.rng import find_generators, seed_everything
from experiment.store import metadata as meta
from experiment.store import tsv
from experiment.store.checkpoints import saved_weights
from experiment.store.directory import RunDirectory
from experiment.store.logs import load_logs
from experiment.store.relaunch import epochs_from_environment
from experiment.training.components import resolve_device, resolve_loss, resolve_optimizer
from experiment.training.data import BatchSource, make_loader
from experiment.training.interrupts import InterruptFlag, TrainingInterrupted, interrupt_on_signals
from experiment.training.loop import TrainingLoop
from experiment.training.metrics import resolve_batch_metrics, resolve_epoch_metrics

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)


class Experiment:
    """A network trained in a run directory that resumes exactly where training stopped.

    Args:
        directory: the run directory (created if needed).
        network: the module to train.
        optimizer: a name ("sgd", "adam", "adamw", ...), an optimizer instance, or a callable
            taking the parameters.
        loss_function: a name ("cross_entropy", "mse", "bce_with_logits", ...) or a callable.
        batch_metrics: names ("accuracy"/"acc") or callables ``(y_pred, y_true) -> tensor``.
        epoch_metrics: names ("f1") or objects with update/compute/reset.
        monitor_metric: the logged key that decides the best epoch.
        monitor_mode: "min" or "max".
        device: where to train; by default where the network's parameters are.
        config: hyperparameters to record in experiment.json (JSON-serialisable).
        tensorboard: whether to write TensorBoard scalars.

    Example:
        >>> exp = Experiment("runs/blobs", net, optimizer="adam", loss_function="cross_entropy",
        ...                  batch_metrics=["accuracy"], monitor_metric="val_acc", monitor_mode="max")
        >>> history = exp.train(train_loader, valid_loader, epochs=20, checkpoint_every=100)
        >>> exp.test(test_loader)
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        network: nn.Module,
        *,
        optimizer: Any = "sgd",
        loss_function: Any = None,
        batch_metrics: Sequence[Any] = (),
        epoch_metrics: Sequence[Any] = (),
        monitor_metric: str = "val_loss",
        monitor_mode: str = "min",
        device: Any = None,
        config: dict[str, Any] | None = None,
        tensorboard: bool = True,
    ) -> None:
        if not isinstance(network, nn.Module):
            raise ConfigurationError(
                f"network: received {type(network).__name__}; expected a torch.nn.Module."
            )
        self.directory = RunDirectory(directory)
        self.device = resolve_device(device, network)
        network.to(self.device)
        self.network = network
        self.optimizer = resolve_optimizer(optimizer, network)
        self.loss_function = resolve_loss(loss_function)
        self.monitor_metric = monitor_metric
        self.monitor_mode = check_mode(monitor_mode, role="monitor_mode")
        self.config = dict(config or {})
        self.tensorboard = tensorboard
        self.loop = TrainingLoop(
            network,
            self.optimizer,
            self.loss_function,  # type: ignore[arg-type]
            batch_metrics=resolve_batch_metrics(batch_metrics),
            epoch_metrics=resolve_epoch_metrics(epoch_metrics),
            device=self.device,
        )

    # ------------------------------------------------------------------------------- training
    def train(
        self,
        train_data: Any,
        valid_data: Any = None,
        *,
        epochs: int,
        steps_per_epoch: int | None = None,
        batch_size: int = 32,
        callbacks: Sequence[Any] = (),
        lr_schedulers: Sequence[Any] = (),
        seed: int = 42,
        checkpoint_every: int | None = None,
        progress: bool | dict[str, Any] = True,
    ) -> list[dict[str, Any]]:
        """Train until ``epochs`` epochs are completed, resuming from what the directory holds.

        Args:
            train_data: a DataLoader, a Dataset (batched with ``batch_size``, shuffled) or ``(x, y)``.
            valid_data: the same kinds, evaluated at each epoch end; optional.
            epochs: the total number of epochs of the run (not the number to add). When
                ``exp resume`` reruns the script, the target it sets (``EXPERIMENT_EPOCHS``, for
                this directory only) replaces this value.
            steps_per_epoch: batches per epoch; by default one pass over ``train_data``.
            batch_size: for Datasets and tuples.
            callbacks: Callback instances; stateful ones are saved with each checkpoint.
            lr_schedulers: torch LR schedulers, stepped once per epoch (ReduceLROnPlateau on the
                monitored metric).
            seed: seeds Python, NumPy and torch when the run starts (not on resume).
            checkpoint_every: also commit a checkpoint every this many training steps.
            progress: show progress with a ProgressionCallback (a dict: its options) unless one is
                among ``callbacks``; False shows nothing.

        Returns:
            The history: one dict per completed epoch, resumed epochs included.

        Raises:
            ConfigurationError: an argument is invalid (nothing is written).
            MonitorError: ``monitor_metric`` is not logged.
            StateMismatchError: the directory's checkpoint does not fit the objects given.
            DirectoryLockedError: another process trains or tests in the directory.
            SystemExit: after SIGTERM (code 143) or SIGINT (code 130), once a checkpoint is committed.
        """
        # `exp resume --epochs N` sets the target of this directory's run through the environment.
        epochs = epochs_from_environment(self.directory.path, epochs)
        self._check_train_arguments(epochs, batch_size, checkpoint_every, steps_per_epoch)
        train_loader = make_loader(
            train_data, batch_size=batch_size, shuffle=True, seed=seed, role="train_data"
        )
        valid_loader = (
            None
            if valid_data is None
            else make_loader(valid_data, batch_size=batch_size, shuffle=False, seed=seed, role="valid_data")
        )
        train_source = BatchSource(train_loader, steps_per_epoch, "train_data")
        valid_source = None if valid_loader is None else BatchSource(valid_loader, None, "valid_data")
        callback_list = CallbackList(with_progress(callbacks, progress))
        monitor = self._check_monitor(valid_source is not None, callback_list.callbacks)
        self.directory.prepare()
        with self.directory.lock(), train_source.installed():
            self._check_resumable()
            for leftover in self.directory.temporary_files():  # of writes a crash cut short
                leftover.unlink(missing_ok=True)
            self.loop.generators = find_generators([train_loader, valid_loader])
            recorder = EpochRecorder(self.directory, tensorboard=self.tensorboard, hparams=self.config)
            checkpointer = Checkpointer(
                self.directory,
                self.loop,
                schedulers=lr_schedulers,
                callbacks=callback_list.callbacks,
                tracker=BestTracker(monitor, self.monitor_mode),
                recorder=recorder,
            )
            resumed = checkpointer.restore()
            if not resumed:
                self.loop.reset()
                seed_everything(seed)
            settings = {
                "epochs": epochs,
                "seed": seed,
                "monitor_metric": monitor,
                "monitor_mode": self.monitor_mode,
                "checkpoint_every": checkpoint_every,
                "steps_per_epoch": train_source.steps_per_epoch,
            }
            if self.loop.stop_training or self.loop.epochs_completed >= epochs:
                self._write_status("stopped" if self.loop.stop_training else "finished", settings, resumed)
                return self.loop.history
            return self._fit(
                train_source,
                valid_source,
                epochs,
                callback_list,
                lr_schedulers,
                monitor,
                checkpointer,
                recorder,
                checkpoint_every,
                settings,
                resumed,
            )

    def _fit(
        self,
        train_source: BatchSource,
        valid_source: BatchSource | None,
        epochs: int,
        callbacks: CallbackList,
        schedulers: Sequence[Any],
        monitor: str,
        checkpointer: Checkpointer,
        recorder: EpochRecorder,
        checkpoint_every: int | None,
        settings: dict[str, Any],
        resumed: bool,
    ) -> list[dict[str, Any]]:
        self._write_status("running", settings, resumed)
        flag = InterruptFlag()
        try:
            recorder.open(self.loop.history)
            with interrupt_on_signals(flag):
                history = self.loop.fit(
                    train_source,
                    valid_source,
                    epochs=epochs,
                    callbacks=callbacks,
                    schedulers=schedulers,
                    monitor=monitor,
                    commit=checkpointer.commit,
                    checkpoint_every=checkpoint_every,
                    interrupt=flag,
                )
        except TrainingInterrupted as interrupted:
            name = signal.Signals(interrupted.signum).name
            where = f"epoch {self.loop.epochs_completed + 1}, step {self.loop.steps_in_epoch}"
            self._write_status("interrupted", settings, True, f"{name} at {where}")
            logger.warning(
                "%s: checkpoint committed at %s in %s; run again to resume.", name, where, self.directory.path
            )
            raise SystemExit(128 + interrupted.signum) from None
        except KeyboardInterrupt:
            self._write_status("interrupted", settings, True, "second SIGINT: stopped at once")
            raise
        except BaseException as error:
            with contextlib.suppress(StorageError):  # a full disk must not hide the original error
                self._write_status("failed", settings, True, f"{type(error).__name__}: {error}")
            raise
        finally:
            recorder.close()
        status = "stopped" if self.loop.stop_training else "finished"
        self._write_status(status, settings, True)
        return history

    def _check_train_arguments(
        self, epochs: Any, batch_size: Any, checkpoint_every: Any, steps_per_epoch: Any
    ) -> None:
        for name, value, allow_none in (
            ("epochs", epochs, False),
            ("batch_size", batch_size, False),
            ("checkpoint_every", checkpoint_every, True),
            ("steps_per_epoch", steps_per_epoch, True),
        ):
            if value is None and allow_none:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(
                    f"{name}: received {value!r}; expected a positive integer"
                    f"{' or None' if allow_none else ''}."
                )
        if self.loss_function is None:
            raise ConfigurationError(
                "Training needs a loss function: pass loss_function= to Experiment (a name such as "
                "'cross_entropy' or a callable (y_pred, y_true) -> tensor)."
            )

    def _check_resumable(self) -> None:
        if self.directory.is_run() and self.directory.read_metadata().get("resumable") is False:
            raise RunDirectoryError(
                f"{self.directory.path} was cleaned to its best weights (exp clean --keep best): its "
                "training state is gone, so it can be tested but not resumed or extended. Train in a "
                "new directory."
            )

    def _check_monitor(self, has_validation: bool, callbacks: Sequence[Any]) -> str:
        names = self.loop.train_metrics.batch_names() + [n for n, _ in self.loop.train_metrics.epoch_metrics]
        known = {"loss", "lr", *names}
        if has_validation:
            known |= {f"val_{name}" for name in names}
        monitor = self.monitor_metric
        if monitor == "val_loss" and not has_validation:
            return "loss"  # the default monitor falls back to the training loss without validation
        if any(getattr(cb, "adds_epoch_logs", False) for cb in callbacks):
            return monitor  # known only at the first epoch end, where BestTracker checks it
        if monitor not in known:
            raise MonitorError(missing_monitor_message(monitor, known, "monitor_metric"))
        return monitor

    def _write_status(
        self, status: str, settings: dict[str, Any], resumed: bool, message: str | None = None
    ) -> None:
        if self.directory.is_run():
            current = self.directory.read_metadata()
            current["settings"] = {**current.get("settings", {}), **settings}
            if self.config:
                current["config"] = self.config
        else:
            current = meta.new_metadata(self.config, settings)
        self.directory.write_metadata(meta.with_status(current, status, message))

    # -------------------------------------------------------------------------------- testing
    def test(
        self,
        test_data: Any,
        *,
        checkpoint: str | int = "best",
        batch_size: int = 32,
        callbacks: Sequence[Any] = (),
        progress: bool | dict[str, Any] = True,
    ) -> dict[str, Any]:
        """Evaluate saved weights on ``test_data`` and append a row to test_log.tsv.

        Args:
            test_data: a DataLoader, a Dataset or ``(x, y)``.
            checkpoint: "best", "last", or an epoch number (the best or the last epoch).
            batch_size: for Datasets and tuples.
            callbacks: receive the ``on_test_*`` hooks.
            progress: as in :meth:`train`.

        Returns:
            ``test_loss`` and the ``test_`` metrics. The network keeps the loaded weights.
        """
        if self.loss_function is None:
            raise ConfigurationError("Testing needs a loss function: pass loss_function= to Experiment.")
        loader = make_loader(test_data, batch_size=batch_size, shuffle=False, seed=0, role="test_data")
        source = BatchSource(loader, None, "test_data")
        with self.directory.lock():
            epoch, weights = saved_weights(self.directory, checkpoint)
            problems = model_mismatches(weights, self.network)
            if problems:
                raise CheckpointError("The saved weights do not fit the network: " + "; ".join(problems))
            self.network.load_state_dict(weights)
            callback_list = CallbackList(with_progress(callbacks, progress))
            callback_list.setup({"steps": source.steps_per_epoch}, self.loop)
            logs = self.loop.evaluate(source, "test", callback_list)
            row = {"time": meta.now_iso(), "checkpoint": str(checkpoint), "epoch": epoch, **logs}
            tsv.append_row(self.directory.test_log_path, row)
        return logs

    # ---------------------------------------------------------------------------------- logs
    @property
    def logs(self) -> pd.DataFrame:
        """The epoch log (log.tsv) as a DataFrame, one row per completed epoch."""
        return load_logs(self.directory.path)
