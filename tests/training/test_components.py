"""Names resolved to devices, optimizers and losses, and the checks that keep a run from training wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from experiment import Experiment
from experiment.errors import ConfigurationError, DataError
from experiment.training.components import NamedLoss, resolve_device, resolve_loss, resolve_optimizer
from tests.support.training import make_data, make_experiment, make_network


def test_components_resolve_device_cuda_without_cuda_says_so(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(
        ConfigurationError,
        match=r"device: received 'cuda', but CUDA is not available in this process.*"
        r"expected one of the available devices \['cpu'",
    ):
        resolve_device("cuda", make_network())


def test_components_resolve_device_cuda_index_beyond_the_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigurationError, match=r"received 'cuda:3', but this process sees 1 CUDA device"):
        resolve_device("cuda:3", make_network())


def test_components_resolve_device_keeps_the_cpu_and_the_network_device():
    assert resolve_device("cpu", make_network()) == torch.device("cpu")
    assert resolve_device(None, make_network()) == torch.device("cpu")


def test_components_optimizer_of_another_network_is_refused():
    network, other = make_network(), make_network()
    optimizer = torch.optim.SGD(other.parameters(), lr=0.1)
    with pytest.raises(ConfigurationError, match=r"holds none of the network's 4 parameter tensors"):
        resolve_optimizer(optimizer, network)
    with pytest.raises(ConfigurationError, match=r"network.parameters\(\) of the network"):
        resolve_optimizer(lambda params: torch.optim.Adam(other.parameters()), network)


def test_components_optimizer_leaving_out_trainable_parameters_warns_at_the_caller():
    network = make_network()
    optimizer = torch.optim.SGD(network[0].parameters(), lr=0.1)
    with pytest.warns(
        UserWarning, match=r"leaves out 2 of the network's 4 trainable parameter tensors \(3.weight, 3.bias\)"
    ) as caught:
        resolve_optimizer(optimizer, network)
    assert Path(caught[0].filename) == Path(__file__)


def test_components_experiment_optimizer_warning_points_at_the_user_code(tmp_path):
    network = make_network()
    optimizer = torch.optim.SGD(network[3].parameters(), lr=0.1)
    with pytest.warns(UserWarning, match=r"leaves out 2 .* \(0.weight, 0.bias\)") as caught:
        Experiment(tmp_path / "run", network, optimizer=optimizer, loss_function="cross_entropy")
    assert Path(caught[0].filename) == Path(__file__)


def test_components_optimizer_without_frozen_parameters_is_accepted():
    network = make_network()
    network[0].requires_grad_(False)
    optimizer = torch.optim.SGD(network[3].parameters(), lr=0.1)
    assert resolve_optimizer(optimizer, network) is optimizer  # no warning: warnings are errors here


def y_pred(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


WRONG_TARGETS = {
    "cross_entropy, one-hot integers": ("cross_entropy", y_pred(4, 3), torch.eye(3, dtype=torch.long)[[0, 1, 2, 0]], r"one-hot targets: convert them with y.argmax\(dim=1\)"),
    "cross_entropy, float indices": ("cross_entropy", y_pred(4, 3), torch.tensor([0.0, 1.0, 2.0, 0.0]), r"y.long\(\)"),
    "nll, float indices": ("nll", y_pred(4, 3), torch.tensor([0.0, 1.0, 2.0, 0.0]), r"expects y_true as class indices .*here \(4,\)"),
    "mse, integer targets": ("mse", y_pred(4, 1), torch.ones(4, 1, dtype=torch.long), r"y.float\(\)"),
    "mse, broadcast shape": ("mse", y_pred(4, 1), torch.ones(4), r"y.view_as\(y_pred\).*would broadcast"),
    "bce_with_logits, long targets": ("bce_with_logits", y_pred(4), torch.ones(4, dtype=torch.long), r"floating-point tensor of y_pred's shape \(4,\)"),
}  # fmt: skip


@pytest.mark.parametrize("name, prediction, target, message", WRONG_TARGETS.values(), ids=list(WRONG_TARGETS))
def test_components_named_loss_refuses_targets_of_the_wrong_dtype_or_shape(name, prediction, target, message):
    loss = resolve_loss(name)
    with pytest.raises(
        DataError, match=rf"loss_function '{name}' expects y_true as .*received y_true a torch\.\w+ tensor"
    ):
        loss(prediction, target)
    with pytest.raises(DataError, match=message):
        loss(prediction, target)


@pytest.mark.parametrize(
    "name, prediction, target",
    [
        ("cross_entropy", y_pred(4, 3), torch.tensor([0, 1, 2, 0])),
        ("cross_entropy", y_pred(4, 3), torch.softmax(y_pred(4, 3), dim=1)),  # probabilities
        ("cross_entropy", y_pred(4, 3, 5), torch.zeros(4, 5, dtype=torch.long)),  # a class per position
        ("nll", torch.log_softmax(y_pred(4, 3), dim=1), torch.tensor([2, 1, 0, 0])),
        ("mse", y_pred(4, 2), y_pred(4, 2) + 1),
        ("bce_with_logits", y_pred(4), torch.tensor([0.0, 1.0, 1.0, 0.0])),
    ],
)
def test_components_named_loss_gives_the_module_value_bit_for_bit(name, prediction, target):
    loss = resolve_loss(name)
    assert isinstance(loss, NamedLoss)
    for _ in range(2):  # the checked first call and the plain calls after it
        assert torch.equal(loss(prediction, target), loss.module(prediction, target))


def test_components_named_loss_explains_a_later_batch_torch_refuses():
    loss = resolve_loss("cross_entropy")
    loss(y_pred(4, 3), torch.tensor([0, 1, 2, 0]))
    with pytest.raises(
        DataError, match=r"'cross_entropy' failed on .*out of bounds.* It expects y_true as class"
    ):
        loss(y_pred(4, 3), torch.tensor([0, 1, 5, 0]))


def test_components_experiment_with_float_labels_for_nll_fails_at_the_first_batch(tmp_path):
    x, y = make_data()
    exp = make_experiment(tmp_path / "run", loss_function="nll", batch_metrics=[], epoch_metrics=[])
    with pytest.raises(DataError, match=r"loss_function 'nll' expects y_true as class indices"):
        exp.train((x, y.float()), epochs=1, progress=False)
    assert exp.loop.global_step == 0


def test_components_named_loss_keeps_the_error_for_unknown_names():
    with pytest.raises(ConfigurationError, match="Unknown loss_function: received 'mae'"):
        resolve_loss("mae")
    custom = nn.MSELoss()
    assert resolve_loss(custom) is custom
