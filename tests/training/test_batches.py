"""The first batch's forward pass: torch's failures explained in terms of the data."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from experiment.errors import DataError
from experiment.training.batches import first_forward


class Raising(nn.Module):
    """A network without a layer of known input size, which raises ``error``."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.error = error

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        raise self.error


def test_batches_first_forward_names_the_channels_a_convolution_takes():
    network = nn.Sequential(nn.Conv1d(3, 4, kernel_size=1), nn.Flatten())
    with pytest.raises(
        DataError,
        match=r"valid_data: .*a torch\.float32 tensor of shape \(2, 5, 7\); its parameters are torch\.float32 "
        r"and its first layer with a known input size, '0' \(Conv1d\), takes in_channels=3\. The inputs "
        r"have 5 channels: give 3",
    ):
        first_forward(network, torch.zeros(2, 5, 7), "valid_data")


def test_batches_first_forward_without_a_known_layer_gives_the_shapes_of_every_input():
    network = Raising(RuntimeError("shapes do not fit"))
    with pytest.raises(
        DataError,
        match=r"inputs are a torch\.float32 tensor of shape \(2, 3\), a torch\.int64 tensor of shape \(2,\); "
        r"its parameters are torch\.float32\. Check that the inputs fit the network's first layer\. "
        r"torch: shapes do not fit",
    ):
        first_forward(network, (torch.zeros(2, 3), torch.zeros(2, dtype=torch.long)), "train_data")


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("out of memory"), NotImplementedError("no kernel")])
def test_batches_first_forward_lets_memory_and_missing_kernel_errors_through(error):
    with pytest.raises(type(error), match=str(error)):
        first_forward(Raising(error), torch.zeros(2, 3), "train_data")


def test_batches_first_forward_returns_the_output():
    network = nn.Linear(3, 2)
    x = torch.ones(4, 3)
    assert torch.equal(first_forward(network, x, "train_data"), network(x))
