"""The PeriodicSaveCallback family: model weights, optimizer state, LR scheduler state, any file.

Every file written here holds plain data and tensors (``torch.save`` of a ``state_dict``), so
``torch.load(path, weights_only=True)`` reads it without this library.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from experiment.arguments import reject
from experiment.callbacks.callback_list import CallbackList
from experiment.callbacks.forwarding import ForwardingCallback
from experiment.callbacks.periodic_save import PeriodicSaveCallback
from experiment.callbacks.saved_state import checked_load, missing_state_keys
from experiment.errors import ConfigurationError
from experiment.state.stateful import ChecksState
from experiment.state.torch_nodes import plain_module
from experiment.store.safe_load import load_tensors


class ModelCheckpoint(PeriodicSaveCallback):
    """Save the network's weights (its ``state_dict``) after some epochs.

    Args:
        *args: ``filename``, see :class:`PeriodicSaveCallback`.
        restore_best: at the end of training, load the weights of the best saved epoch back into
            the network. With ``save_best_only``, the best epoch's; without it, the best of the
            epochs saved every ``period`` epochs (``filename`` must then hold ``{epoch}``, so that
            every saved epoch keeps its file; see :class:`PeriodicSaveCallback`).
        **kwargs: the options of :class:`PeriodicSaveCallback`.

    Raises:
        ConfigurationError: ``restore_best`` without ``save_best_only`` and a filename without
            ``{epoch}``, or with a monitor whose direction is unknown and no ``mode``.

    Example:
        >>> best = ModelCheckpoint("runs/a/weights/best-{epoch:03d}.pt", monitor="val_acc", mode="max",
        ...                        save_best_only=True, keep_only_last_best=True, restore_best=True)
        >>> exp.train(train, valid, epochs=10, callbacks=[best])
        >>> net.load_state_dict(torch.load(best.best_filename, weights_only=True))
    """

    handles_weights = True

    def __init__(self, *args: Any, restore_best: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, restore_best=restore_best, **kwargs)

    def save_file(self, fd: IO[Any], epoch_number: int, logs: dict[str, Any]) -> None:
        torch.save(plain_module(self.trainer.network).state_dict(), fd)

    def restore(self, fd: IO[Any]) -> None:
        """Load weights this callback saved (a file open in binary mode) into the network."""
        plain_module(self.trainer.network).load_state_dict(
            torch.load(fd, map_location="cpu", weights_only=True)
        )

    def restore_file(self, path: Path) -> None:
        """Load the weights of ``path`` into the network, checked as the run's own files are."""
        plain_module(self.trainer.network).load_state_dict(load_tensors(path))


class OptimizerCheckpoint(PeriodicSaveCallback):
    """Save the optimizer's ``state_dict`` after some epochs (options of :class:`PeriodicSaveCallback`).

    Reload it with ``optimizer.load_state_dict(torch.load(path, weights_only=True))``.

    Example:
        >>> exp.train(train, valid, epochs=10,
        ...           callbacks=[OptimizerCheckpoint("runs/a/optim-{epoch:02d}.pt", period=5)])
    """

    handles_weights = True

    def save_file(self, fd: IO[Any], epoch_number: int, logs: dict[str, Any]) -> None:
        torch.save(self.trainer.optimizer.state_dict(), fd)


class PeriodicSaveLambda(PeriodicSaveCallback):
    """Call ``func(fd, epoch_number, logs)`` with an open file after some epochs.

    Args:
        func: writes the file's content to ``fd``.
        *args: ``filename``, see :class:`PeriodicSaveCallback`.
        restore: reads a saved file back, ``restore(fd)`` with ``fd`` open in ``read_mode``; with
            ``restore_best=True``, it is called with the best saved file at the end of training.
        **kwargs: the options of :class:`PeriodicSaveCallback` (``open_mode="w"`` for text).

    Raises:
        ConfigurationError: ``func`` or ``restore`` is not callable, or ``restore_best=True``
            without ``restore``.

    Example:
        >>> note = PeriodicSaveLambda(lambda fd, epoch, logs: fd.write(f"{epoch}\\t{logs['loss']}\\n"),
        ...                           "runs/a/last.txt", open_mode="w")
        >>> best = PeriodicSaveLambda(lambda fd, epoch, logs: torch.save(net.state_dict(), fd),
        ...                           "runs/a/best.pt", save_best_only=True, restore_best=True,
        ...                           restore=lambda fd: net.load_state_dict(torch.load(fd)))
    """

    handles_weights = True  # its functions may: they are the user's

    def __init__(
        self,
        func: Callable[[IO[Any], int, dict[str, Any]], Any],
        *args: Any,
        restore: Callable[[IO[Any]], Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not callable(func):
            raise reject("func", func, "a callable (fd, epoch_number, logs)", received=type(func).__name__)
        if restore is not None and not callable(restore):
            raise reject("restore", restore, "None or a callable (fd)", received=type(restore).__name__)
        self.func = func
        self.restore_function = restore  # before the base checks that restore_best can restore
        super().__init__(*args, **kwargs)

    def save_file(self, fd: IO[Any], epoch_number: int, logs: dict[str, Any]) -> None:
        self.func(fd, epoch_number, logs)

    def _can_restore(self) -> bool:
        return self.restore_function is not None

    def restore(self, fd: IO[Any]) -> None:
        """Call the ``restore`` function with ``fd``.

        Raises:
            ConfigurationError: no ``restore`` function was given.
        """
        if self.restore_function is None:
            raise ConfigurationError(
                "PeriodicSaveLambda.restore: this callback received restore=None, so it cannot read "
                "a file back. Pass restore=lambda fd: ... to PeriodicSaveLambda."
            )
        self.restore_function(fd)


class LRSchedulerCheckpoint(PeriodicSaveCallback, ForwardingCallback):
    """Drive an LR scheduler callback and save its ``state_dict`` after some epochs.

    The scheduler callback is driven by this one: pass only the LRSchedulerCheckpoint to ``train``,
    not the scheduler too. Every hook is forwarded to it (at an epoch end, before the save, so the
    file holds the state after the scheduler stepped), and its state is saved with the run's
    checkpoints as part of this callback's state.

    Args:
        lr_scheduler: an LR scheduler callback, or any object with ``state_dict()`` (and optionally
            ``load_state_dict()`` and the callback hooks).
        *args: ``filename``, see :class:`PeriodicSaveCallback`.
        **kwargs: the options of :class:`PeriodicSaveCallback`.

    Raises:
        ConfigurationError: ``lr_scheduler`` has no ``state_dict()``.

    Example:
        >>> scheduler = StepLR(step_size=3)
        >>> exp.train(train, valid, epochs=10,
        ...           callbacks=[LRSchedulerCheckpoint(scheduler, "runs/a/scheduler.pt")])
    """

    def __init__(self, lr_scheduler: Any, *args: Any, **kwargs: Any) -> None:
        if not callable(getattr(lr_scheduler, "state_dict", None)):
            raise reject(
                "lr_scheduler",
                lr_scheduler,
                "an LR scheduler callback",
                received=f"{type(lr_scheduler).__name__}, which has no state_dict()",
            )
        super().__init__(*args, **kwargs)
        self.lr_scheduler = lr_scheduler
        # PeriodicSaveCallback takes the arguments; the forwarding base drives the scheduler.
        self.callbacks = CallbackList([lr_scheduler])

    def save_file(self, fd: IO[Any], epoch_number: int, logs: dict[str, Any]) -> None:
        torch.save(self.lr_scheduler.state_dict(), fd)

    # The hooks PeriodicSaveCallback uses: the scheduler first, then the save. The other hooks are
    # ForwardingCallback's plain forwards.
    def on_train_begin(self, logs: dict[str, Any]) -> None:
        self.callbacks.call("on_train_begin", logs)
        super().on_train_begin(logs)

    def on_epoch_begin(self, epoch_number: int, logs: dict[str, Any]) -> None:
        self.callbacks.call("on_epoch_begin", epoch_number, logs)
        super().on_epoch_begin(epoch_number, logs)

    def on_epoch_end(self, epoch_number: int, logs: dict[str, Any]) -> None:
        self.callbacks.call("on_epoch_end", epoch_number, logs)
        super().on_epoch_end(epoch_number, logs)

    def on_train_end(self, logs: dict[str, Any]) -> None:
        self.callbacks.call("on_train_end", logs)
        super().on_train_end(logs)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "lr_scheduler": self.lr_scheduler.state_dict()}

    def state_problems(self, state_dict: dict[str, Any]) -> list[str]:
        """The problems of the saved file bookkeeping, then those of the scheduler's saved state."""
        problems = super().state_problems(state_dict) or missing_state_keys(
            "LRSchedulerCheckpoint", state_dict, ("lr_scheduler",)
        )
        if not problems and isinstance(self.lr_scheduler, ChecksState):
            problems = self.lr_scheduler.state_problems(state_dict["lr_scheduler"])
        return problems

    @checked_load
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the bookkeeping and the scheduler's state.

        Raises:
            StateMismatchError: :meth:`state_problems` finds the state unfit; nothing is changed.
        """
        super().load_state_dict(state_dict)
        loader = getattr(self.lr_scheduler, "load_state_dict", None)
        if loader is not None:
            loader(state_dict["lr_scheduler"])
