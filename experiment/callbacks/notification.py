"""Notificator and NotificationCallback: send news of a training to a chat, a mailbox, a phone."""

from __future__ import annotations

import abc
import logging
import numbers
from typing import Any

from experiment.arguments import check_int, reject
from experiment.callbacks.base import Callback

logger = logging.getLogger(__name__)


class Notificator(abc.ABC):
    """Where notifications go: implement :meth:`send_notification` for a channel.

    The interface is the one of the ``notif`` package, whose notificators (Slack, email,
    Telegram...) can be passed to :class:`NotificationCallback` as they are.

    Example:
        >>> class ListNotificator(Notificator):
        ...     def __init__(self):
        ...         self.sent = []
        ...     def send_notification(self, message, *, subject=None):
        ...         self.sent.append((subject, message))
    """

    @abc.abstractmethod
    def send_notification(self, message: str, *, subject: str | None = None) -> None:
        """Send ``message``; ``subject`` is a title for it (None lets the channel choose)."""


def format_logs(logs: dict[str, Any]) -> str:
    """One ``key: value`` line per entry, floats with 4 decimals."""
    lines = []
    for key, value in logs.items():
        if isinstance(value, numbers.Real) and not isinstance(value, (bool, numbers.Integral)):
            lines.append(f"{key}: {float(value):.4f}")
        else:
            lines.append(f"{key}: {value}")
    return "\n".join(lines)


class NotificationCallback(Callback):
    """Sends a notification when training and testing begin and end, and every few epochs.

    A notificator that fails (the network is down, the service refuses) does not stop the
    training: the failure is logged as a warning and the run goes on.

    Args:
        notificator: any object with a ``send_notification(message, *, subject=None)`` method.
        alert_frequency: send the logs of every ``alert_frequency``-th epoch.
        experiment_name: named in every message.

    Example:
        >>> notify = NotificationCallback(SlackNotificator(webhook_url=url), alert_frequency=5,
        ...                               experiment_name="blobs")
        >>> exp.train(train_loader, valid_loader, epochs=100, callbacks=[notify])
    """

    main_process_only = True  # under torchrun, rank 0 alone writes and shows progress

    needs_batch_values = False

    def __init__(
        self, notificator: Any, alert_frequency: int = 1, experiment_name: str | None = None
    ) -> None:
        super().__init__()
        if not callable(getattr(notificator, "send_notification", None)):
            raise reject(
                "notificator",
                notificator,
                "an object with a send_notification(message, *, subject=None) method, such as a "
                "Notificator subclass",
                received=type(notificator).__name__,
            )
        self.notificator = notificator
        self.alert_frequency = check_int("alert_frequency", alert_frequency, minimum=1)
        self.experiment_name = experiment_name

    def _name(self) -> str:
        return f" of {self.experiment_name}" if self.experiment_name else ""

    def _send(self, message: str, subject: str) -> None:
        try:
            self.notificator.send_notification(message, subject=subject)
        except Exception as error:  # a notification must never kill a training
            logger.warning("Could not send the notification %r: %s: %s", subject, type(error).__name__, error)

    def on_train_begin(self, logs: dict[str, Any]) -> None:
        epochs = self.params.get("epochs")
        trainer = self.trainer if self.has_trainer else None
        if trainer is not None and (trainer.epochs_completed or trainer.steps_in_epoch):
            where = f"epoch {trainer.epochs_completed + 1}, step {trainer.steps_in_epoch}"
            self._send(
                f"Training{self._name()} resumed at {where} (of {epochs} epochs).",
                f"Training{self._name()} resumed",
            )
        else:
            self._send(
                f"Training{self._name()} started ({epochs} epochs).", f"Training{self._name()} started"
            )

    def on_epoch_end(self, epoch_number: int, logs: dict[str, Any]) -> None:
        if epoch_number % self.alert_frequency == 0:
            self._send(
                f"Epoch {epoch_number}{self._name()} ended:\n{format_logs(logs)}",
                f"Epoch {epoch_number}{self._name()}",
            )

    def on_train_end(self, logs: dict[str, Any]) -> None:
        trainer = self.trainer if self.has_trainer else None
        how = "stopped early" if trainer is not None and trainer.stop_training else "finished"
        done = f" after {trainer.epochs_completed} epochs" if trainer is not None else ""
        self._send(f"Training{self._name()} {how}{done}.", f"Training{self._name()} {how}")

    def on_test_begin(self, logs: dict[str, Any]) -> None:
        self._send(f"Testing{self._name()} started.", f"Testing{self._name()} started")

    def on_test_end(self, logs: dict[str, Any]) -> None:
        self._send(f"Testing{self._name()} finished:\n{format_logs(logs)}", f"Testing{self._name()} finished")
