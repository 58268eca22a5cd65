"""EpochAccumulator and the built-in metrics: targets checked on the first batch, values of any scalar shape."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from experiment.errors import ConfigurationError, DataError
from experiment.training.metric_resolution import resolve_batch_metrics, resolve_epoch_metrics
from experiment.training.metrics import F1, EpochAccumulator, accuracy
from tests.support.training import make_data, make_experiment

LOGITS = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0], [2.0, 0.0, 0.0]])
LABELS = torch.tensor([0, 1, 1, 0])


def accumulator(batch=("acc",), epoch=("f1",)) -> EpochAccumulator:
    return EpochAccumulator(resolve_batch_metrics(batch), resolve_epoch_metrics(epoch))


WRONG_TARGETS = {
    "one-hot": (LOGITS, torch.eye(3, dtype=torch.long)[LABELS], r"one-hot or probability targets: convert them with y.argmax\(dim=1\)"),
    "probabilities": (LOGITS, torch.softmax(LOGITS, dim=1), r"y.argmax\(dim=1\)"),
    "float indices": (LOGITS, LABELS.float(), r"an integer tensor of shape \(4,\).*y.long\(\)"),
    "labels out of range": (LOGITS, torch.tensor([0, 1, 3, 0]), r"in \[0, 3\).*labels from 0 to 3"),
    "binary probabilities": (LOGITS[:, :1], torch.tensor([0.2, 0.9, 1.0, 0.0]), r"0 or 1 for one output per sample"),
}  # fmt: skip


@pytest.mark.parametrize("metrics", [{"batch": ("acc",), "epoch": ()}, {"batch": (), "epoch": ("f1",)}])
@pytest.mark.parametrize("y_pred, y_true, message", WRONG_TARGETS.values(), ids=list(WRONG_TARGETS))
def test_metrics_classification_refuses_targets_that_are_not_class_indices(metrics, y_pred, y_true, message):
    name = (metrics["batch"] or metrics["epoch"])[0]
    with pytest.raises(DataError, match=rf"metric '{name}' expects y_true as class indices.*{message}"):
        accumulator(**metrics).update(torch.tensor(1.0), y_pred, y_true, 4)


@pytest.mark.parametrize(
    "y_pred, y_true",
    [
        (LOGITS, LABELS),
        (LOGITS[:, 0], torch.tensor([1.0, 0.0, 0.0, 1.0])),  # one logit per sample, float labels 0/1
        (LOGITS[:, :1], torch.tensor([1, 0, 0, 1])),
    ],
)
def test_metrics_classification_accepts_class_indices_and_binary_labels(y_pred, y_true):
    metrics = accumulator()
    metrics.update(torch.tensor(1.0), y_pred, y_true, 4)
    assert metrics.averages()["acc"] == float(accuracy(y_pred, y_true))


def test_metrics_experiment_with_one_hot_targets_logs_no_accuracy(tmp_path):
    """Float one-hot targets train with cross_entropy (as probabilities), but acc would be wrong."""
    x, y = make_data()
    one_hot = torch.nn.functional.one_hot(y, 3).float()
    exp = make_experiment(tmp_path / "run")
    with pytest.raises(DataError, match=r"metric 'acc' expects y_true as class indices"):
        exp.train((x, one_hot), epochs=1, progress=False)
    assert exp.loop.global_step == 0 and exp.loop.history == []


def test_metrics_classification_checks_the_first_batch_only():
    metrics = accumulator()
    metrics.update(torch.tensor(1.0), LOGITS, LABELS, 4)
    calls = []
    metrics._check_targets = lambda *args: calls.append(args)  # type: ignore[method-assign]
    metrics.reset()
    metrics.update(torch.tensor(1.0), LOGITS, LABELS, 4)
    assert calls == []


def one_element(y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
    return accuracy(y_pred, y_true).reshape(1)


def numpy_scalar(y_pred: torch.Tensor, y_true: torch.Tensor) -> np.float64:
    return np.float64(float(accuracy(y_pred, y_true)))


@pytest.mark.parametrize("metric", [one_element, numpy_scalar])
def test_metrics_batch_metric_may_return_a_one_element_tensor_or_a_number(metric):
    plain, other = accumulator(batch=("acc",), epoch=()), accumulator(batch=(metric,), epoch=())
    for y_true in (LABELS, torch.tensor([0, 1, 2, 0]), LABELS):
        for metrics in (plain, other):
            values = metrics.update(torch.tensor(0.5), LOGITS, y_true, 4)
            assert values.shape == (2,)
    assert list(other.averages().values()) == pytest.approx(list(plain.averages().values()), rel=1e-6)


def test_metrics_batch_metric_of_several_values_is_refused():
    metrics = accumulator(batch=(("per_class", lambda y_pred, y_true: y_pred.mean(dim=0)),), epoch=())
    with pytest.raises(
        ConfigurationError,
        match=r"batch metric 'per_class' returned a torch.float32 tensor of shape \(3,\); expected one number",
    ):
        metrics.update(torch.tensor(0.5), LOGITS, LABELS, 4)


def test_metrics_f1_of_a_perfect_epoch_is_one():
    metric = F1()
    metric.update(LOGITS, torch.tensor([0, 1, 2, 0]))
    assert float(metric.compute()) == 1.0
