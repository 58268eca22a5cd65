"""Experiment: the front door. It owns a run directory and trains, resumes and tests in it."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from torch import nn

from experiment.arguments import check_int
from experiment.errors import ConfigurationError
from experiment.run.elastic import check_elastic, elastic_layout, refuse_running_statistics
from experiment.run.inference import Inference
from experiment.run.objects import compiled
from experiment.run.ownership import leaving_together, owned
from experiment.run.plan_making import check_callbacks, check_train_arguments, make_plan, with_progress
from experiment.run.run_record import check_resumable
from experiment.run.session import TrainingSession
from experiment.run.settings import RunSettings
from experiment.run.slurm import slurm_job
from experiment.state.best import checked_mode
from experiment.store.directory import RunDirectory
from experiment.store.logs import load_logs
from experiment.store.metadata import plain_config
from experiment.store.relaunch import epochs_from_environment
from experiment.training.components import resolve_device, resolve_loss, resolve_optimizer
from experiment.training.custom_step import UserStep, check_step
from experiment.training.distributed import current_world, training_device
from experiment.training.loop import TrainingLoop
from experiment.training.metric_resolution import resolve_batch_metrics, resolve_epoch_metrics
from experiment.training.precision import Precision
from experiment.training.strategy import choose_strategy

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)


class Experiment(Inference):
    """A network trained in a run directory that resumes exactly where training stopped.

    Args:
        directory: the run directory (created if needed).
        network: the module to train (under torchrun it is wrapped in DistributedDataParallel
            while it trains; one given already wrapped is trained through that wrapper and saved
            as the module inside it).
        optimizer: a name ("sgd", "adam", "adamw", ...), an optimizer instance, or a callable
            taking the parameters.
        loss_function: a name ("cross_entropy", "mse", "bce_with_logits", ...) or a callable.
        batch_metrics: names ("accuracy"/"acc") or callables ``(y_pred, y_true) -> tensor``.
        epoch_metrics: names ("f1") or objects with update/compute/reset.
        monitor_metric: the logged key that decides the best epoch; by default ``val_loss``, or
            ``loss`` when training has no validation data.
        monitor_mode: "min" or "max"; by default inferred from the monitored key's name:
            accuracy, top-k accuracy, F1, precision, recall, AUROC and R² → "max"; losses, MAE
            and MSE → "min" (with or without the ``val_`` prefix). A key of unknown direction
            (a custom metric's name) needs it.
        device: where to train; by default where the network's parameters are.
        config: hyperparameters to record in experiment.json (JSON-serialisable).
        tensorboard: whether to write TensorBoard scalars.
        precision: "32-true" (alias "32"), "bf16-mixed" or "16-mixed" (autocast for the forward
            pass and the loss; "16-mixed" adds a GradScaler saved with every commit).
        accumulate_grad_batches: batches per optimizer step; ``global_step``,
            ``checkpoint_every`` and per-step schedulers count optimizer steps.
        train_step: ``train_step(trainer, batch)`` returns the loss of a batch of any structure (a
            tensor, or a dict with ``loss`` and, for metrics, ``y_pred`` and ``y_true``), in place
            of ``loss_function(network(x), y)``; the library still does autocast, backward,
            accumulation, ``on_backward_end`` and the optimizer step. The batch comes with its
            tensors on ``device``. See :mod:`experiment.training.custom_step`.
        eval_step: the same for validation, :meth:`test` and :meth:`evaluate` (run without
            gradients, in eval mode); by default ``train_step``.
        compile: True (or a dict of ``torch.compile`` options) compiles the network for training
            and evaluation. Weights are saved without the ``_orig_mod.`` prefix of a compiled
            module (as is a network given already compiled), so compiled and uncompiled runs
            resume each other's files.
        strategy: how the run is spread over processes: "auto" (default: one process, or
            DistributedDataParallel under torchrun), "single" (refused under torchrun), "ddp"
            (refused outside it) or "fsdp" (FSDP2 under torchrun: parameters, gradients and
            optimizer state sharded, commits written as folders of shards; refused outside it).
            See :mod:`experiment.training.strategy`.
        elastic: True lets the run resume on another number of processes: its global batch
            (``batch_size`` times the number of processes when the run is created) is fixed, its
            training data is drawn in an order that does not depend on the number of processes, and
            a resume on another number goes on with the same global batches and steps, the same run
            up to floating-point summation order (see :mod:`experiment.run.elastic`). "exact" also
            sums the gradients in an order no number of processes changes
            (:mod:`experiment.training.exact_step`): a resume on any number ends bit-identical to
            the uninterrupted run. False (default): another number of processes is refused. Fixed
            when the run is created.
        elastic_groups: with ``elastic="exact"``, the groups each global batch is cut into, which
            bounds the number of processes the run can later use; by default one per 256 samples
            of a process's batch, one to four per process at creation (smaller groups cost more
            than the rest of the step). Fixed when the run is created.

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
        monitor_metric: str | None = None,
        monitor_mode: str | None = None,
        device: Any = None,
        config: dict[str, Any] | None = None,
        tensorboard: bool = True,
        precision: str = "32-true",
        accumulate_grad_batches: int = 1,
        train_step: UserStep | None = None,
        eval_step: UserStep | None = None,
        compile: bool | dict[str, Any] = False,
        strategy: str = "auto",
        elastic: bool | str = False,
        elastic_groups: int | None = None,
    ) -> None:
        if not isinstance(network, nn.Module):
            raise ConfigurationError(
                f"network: received {type(network).__name__}; expected a torch.nn.Module."
            )
        self.directory = RunDirectory(directory)
        self.elastic = check_elastic(
            elastic, strategy, groups=elastic_groups, precision=precision, custom_step=train_step is not None
        )
        self.elastic_groups = elastic_groups
        if self.elastic == "exact":
            refuse_running_statistics(network)
        world = current_world()  # under torchrun: the process group, started here if need be
        # A network given inside the user's DistributedDataParallel is trained through it, saved bare.
        self.strategy, network = choose_strategy(
            strategy, world, network, precision=precision, sums_exactly=self.elastic == "exact"
        )
        self.device = resolve_device(device if device is not None else training_device(world), network)
        network.to(self.device)
        network = self.strategy.prepare(network, optimizer)  # FSDP2 shards it here
        self.network = network
        self.optimizer = resolve_optimizer(optimizer, network)
        self.loss_function = resolve_loss(loss_function)
        self.monitor_metric = monitor_metric
        # Checked now, so that a monitor of unknown direction is refused before anything is written;
        # without a monitor_metric, the mode of the default monitor is known only when train() runs.
        self.monitor_mode = checked_mode(monitor_mode, monitor_metric, role="monitor_mode")
        self.config = plain_config(config or {})
        self.tensorboard = tensorboard
        self._trained = False  # whether the network and optimizer were trained in this process
        self.loop = TrainingLoop(
            compiled(network, compile),
            self.optimizer,
            self.loss_function,  # type: ignore[arg-type]
            batch_metrics=resolve_batch_metrics(batch_metrics),
            epoch_metrics=resolve_epoch_metrics(epoch_metrics),
            device=self.device,
            precision=Precision.resolve(precision, self.device),
            accumulate_grad_batches=check_int(
                "accumulate_grad_batches", accumulate_grad_batches, minimum=1, expected="a positive integer"
            ),
            strategy=self.strategy,
        )
        self.loop.use_custom_steps(check_step("train_step", train_step), check_step("eval_step", eval_step))

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
        async_checkpoint: bool = False,
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
            async_checkpoint: copy each commit's state into reused CPU buffers and write it from a
                background thread, so that training waits only for the copy. A commit is durable
                once its write ends; a kill loses at most the commit in flight, and the previous
                one stays on disk until the next is durable.
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
        loss = self.loss_function or self.loop.custom_train_step  # a custom step computes its own loss
        check_train_arguments(epochs, batch_size, checkpoint_every, steps_per_epoch, loss, seed)
        # Checked before anything is loaded: elastic as the run was created, a world size that serves it.
        layout = elastic_layout(
            self.directory, self.elastic, train_data, batch_size, self.loop.world, groups=self.elastic_groups
        )
        plan = make_plan(
            self.loop,
            train_data,
            valid_data,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            batch_size=batch_size,
            callbacks=with_progress(check_callbacks(callbacks), progress),
            lr_schedulers=lr_schedulers,
            monitor=self.monitor_metric,
            seed=seed,
            elastic=layout,
        )
        settings = RunSettings.of_plan(
            plan,
            seed=seed,
            monitor_mode=self.monitor_mode,
            checkpoint_every=checkpoint_every,
            async_checkpoint=async_checkpoint,
        )
        with leaving_together(self.loop.world):
            resumable = functools.partial(check_resumable, self.directory)
            with owned(self.directory, self.loop.world, prepare=True, then=resumable), plan.train.installed():
                session = TrainingSession(
                    self.directory,
                    self.loop,
                    plan,
                    settings,
                    config=self.config,
                    tensorboard=self.tensorboard,
                    fresh_objects=not self._trained,
                    slurm=slurm_job(),
                )
                self._trained = True
                return session.run()

    # ---------------------------------------------------------------------------------- logs
    @property
    def logs(self) -> pd.DataFrame:
        """The epoch log (log.tsv) as a DataFrame, one row per completed epoch."""
        return load_logs(self.directory.path)
