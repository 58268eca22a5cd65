"""TerminateOnNaN: through its hook with fake logs, then in a real training that diverges."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from experiment.callbacks.base import Callback
from experiment.callbacks.terminate_on_nan import TerminateOnNaN
from experiment.errors import NonFiniteLossError
from tests.support.training import train_run


def _callback() -> TerminateOnNaN:
    callback = TerminateOnNaN()
    callback.set_trainer(SimpleNamespace(stop_training=False, global_step=7))  # type: ignore[arg-type]
    return callback


def test_terminate_on_nan_keeps_training_on_a_finite_loss():
    callback = _callback()
    callback.on_train_batch_end(3, {"batch": 3, "size": 16, "loss": 0.25})
    assert callback.trainer.stop_training is False


@pytest.mark.parametrize("loss", [math.nan, math.inf, -math.inf])
def test_terminate_on_nan_stops_on_a_non_finite_loss(loss):
    callback = _callback()
    callback.on_train_batch_end(3, {"batch": 3, "size": 16, "loss": loss})
    assert callback.trainer.stop_training is True


NON_FINITE = [
    np.float32("nan"),
    np.array(np.inf),
    np.array([np.nan]),
    torch.tensor(math.nan),
    torch.tensor([-math.inf]),
]
FINITE = [np.float32(0.25), np.array(0.25), np.array([0.25]), torch.tensor(0.25), torch.tensor([0.25]), 1]


@pytest.mark.parametrize("loss", NON_FINITE, ids=repr)
def test_terminate_on_nan_stops_on_a_non_finite_numpy_or_tensor_loss(loss):
    callback = _callback()
    callback.on_train_batch_end(3, {"batch": 3, "size": 16, "loss": loss})
    assert callback.trainer.stop_training is True


@pytest.mark.parametrize("loss", FINITE, ids=repr)
def test_terminate_on_nan_keeps_training_on_a_finite_numpy_or_tensor_loss(loss):
    callback = _callback()
    callback.on_train_batch_end(3, {"batch": 3, "size": 16, "loss": loss})
    assert callback.trainer.stop_training is False


def test_terminate_on_nan_reads_batch_values():
    assert TerminateOnNaN.needs_batch_values is True


class PoisonWeightsAt(Callback):
    """Fills the first layer with NaN before the batch that follows ``global_step`` steps."""

    needs_batch_values = False

    def __init__(self, global_step: int) -> None:
        super().__init__()
        self.global_step = global_step

    def on_train_batch_begin(self, batch_number: int, logs: dict[str, Any]) -> None:
        if self.trainer.global_step == self.global_step:
            with torch.no_grad():
                self.trainer.network[0].weight.fill_(math.nan)


def test_terminate_on_nan_stops_a_diverging_run_and_the_stop_is_remembered(tmp_path):
    exp = train_run(tmp_path, epochs=4, callbacks=lambda: [PoisonWeightsAt(8), TerminateOnNaN()])
    assert exp.loop.stop_training
    assert exp.loop.global_step == 9  # the poisoned batch is the last one trained
    assert len(exp.loop.history) == 2 and math.isnan(exp.loop.history[-1]["loss"])
    assert exp.directory.read_metadata()["status"] == "stopped"
    again = train_run(tmp_path, epochs=4, callbacks=lambda: [TerminateOnNaN()])
    assert again.loop.global_step == 9 and len(again.loop.history) == 2


def test_terminate_on_nan_absent_a_diverging_run_raises(tmp_path):
    with pytest.raises(NonFiniteLossError, match="TerminateOnNaN"):
        train_run(tmp_path, epochs=4, callbacks=lambda: [PoisonWeightsAt(8)])
