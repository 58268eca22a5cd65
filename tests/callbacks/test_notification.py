"""Notificator and NotificationCallback: hooks with fake logs, then a real run and test."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from experiment.callbacks.notification import NotificationCallback, Notificator
from experiment.errors import ConfigurationError
from tests.support.training import make_data, train_run


class ListNotificator(Notificator):
    def __init__(self) -> None:
        self.sent: list[tuple[str | None, str]] = []

    def send_notification(self, message: str, *, subject: str | None = None) -> None:
        self.sent.append((subject, message))


class BrokenNotificator(Notificator):
    def send_notification(self, message: str, *, subject: str | None = None) -> None:
        raise ConnectionError("no route to host")


def _callback(notificator: Notificator, **kwargs) -> NotificationCallback:
    callback = NotificationCallback(notificator, **kwargs)
    callback.set_params({"epochs": 4, "steps_per_epoch": 6})
    trainer = SimpleNamespace(epochs_completed=0, steps_in_epoch=0, stop_training=False)
    callback.set_trainer(trainer)  # type: ignore[arg-type]
    return callback


def test_notificator_is_abstract():
    with pytest.raises(TypeError, match="abstract"):
        Notificator()  # type: ignore[abstract]


def test_notification_callback_announces_train_begin_and_end_with_the_name():
    notificator = ListNotificator()
    callback = _callback(notificator, experiment_name="blobs")
    callback.on_train_begin({})
    callback.trainer.epochs_completed = 4
    callback.on_train_end({})
    assert notificator.sent == [
        ("Training of blobs started", "Training of blobs started (4 epochs)."),
        ("Training of blobs finished", "Training of blobs finished after 4 epochs."),
    ]


def test_notification_callback_sends_every_alert_frequency_epochs_with_the_logs():
    notificator = ListNotificator()
    callback = _callback(notificator, alert_frequency=2)
    for epoch in range(1, 5):
        callback.on_epoch_end(epoch, {"epoch": epoch, "loss": 1 / 3, "val_acc": 50.0})
    assert [subject for subject, _ in notificator.sent] == ["Epoch 2", "Epoch 4"]
    assert notificator.sent[0][1] == "Epoch 2 ended:\nepoch: 2\nloss: 0.3333\nval_acc: 50.0000"


def test_notification_callback_says_when_a_run_resumes_or_stops_early():
    notificator = ListNotificator()
    callback = _callback(notificator)
    callback.trainer.epochs_completed, callback.trainer.steps_in_epoch = 2, 3
    callback.on_train_begin({})
    callback.trainer.stop_training = True
    callback.on_train_end({})
    assert notificator.sent[0][1] == "Training resumed at epoch 3, step 3 (of 4 epochs)."
    assert notificator.sent[1][0] == "Training stopped early"


def test_notification_callback_announces_test_begin_and_end():
    notificator = ListNotificator()
    callback = _callback(notificator, experiment_name="blobs")
    callback.on_test_begin({})
    callback.on_test_end({"time": 0.25, "test_loss": 0.5})
    assert notificator.sent[0] == ("Testing of blobs started", "Testing of blobs started.")
    assert notificator.sent[1][1] == "Testing of blobs finished:\ntime: 0.2500\ntest_loss: 0.5000"


def test_notification_callback_failure_is_logged_not_raised(caplog):
    callback = _callback(BrokenNotificator())
    with caplog.at_level(logging.WARNING, logger="experiment.callbacks.notification"):
        callback.on_epoch_end(1, {"loss": 1.0})
    assert "Could not send the notification 'Epoch 1': ConnectionError: no route to host" in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"notificator": object()},
            "notificator: received object; expected an object with a send_notification",
        ),
        ({"notificator": ListNotificator(), "alert_frequency": 0}, "alert_frequency: received 0"),
        ({"notificator": ListNotificator(), "alert_frequency": True}, "alert_frequency: received True"),
    ],
)
def test_notification_callback_rejects_invalid_options(kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        NotificationCallback(**kwargs)


def test_notification_callback_in_a_real_run_and_test(tmp_path):
    notificator = ListNotificator()
    exp = train_run(
        tmp_path, epochs=3, callbacks=lambda: [NotificationCallback(notificator, alert_frequency=2)]
    )
    exp.test(make_data(32, seed=3), callbacks=[NotificationCallback(notificator)])
    subjects = [subject for subject, _ in notificator.sent]
    assert subjects == [
        "Training started",
        "Epoch 2",
        "Training finished",
        "Testing started",
        "Testing finished",
    ]
    assert "val_loss: " in notificator.sent[1][1] and "test_loss: " in notificator.sent[4][1]
