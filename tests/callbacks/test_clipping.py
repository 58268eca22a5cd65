"""ClipNorm and ClipValue: gradients set by hand, then a real run checked at every step."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from experiment.callbacks.base import Callback
from experiment.callbacks.clipping import ClipNorm, ClipValue
from experiment.errors import ConfigurationError
from tests.support.training import make_data, make_experiment


def _network_with_gradients(scale: float) -> nn.Module:
    torch.manual_seed(0)
    network = nn.Linear(4, 3)
    for parameter in network.parameters():
        parameter.grad = torch.randn_like(parameter) * scale
    return network


def _total_norm(parameters, norm_type: float = 2.0) -> float:
    grads = [p.grad.flatten() for p in parameters]
    return float(torch.linalg.vector_norm(torch.cat(grads), ord=norm_type))


def test_clip_norm_rescales_large_gradients_to_max_norm():
    network = _network_with_gradients(10.0)
    direction = network.weight.grad / network.weight.grad.norm()
    callback = ClipNorm(network.parameters(), max_norm=1.0)
    for batch in (1, 2):  # a generator of parameters must serve every batch
        callback.on_backward_end(batch)
        assert _total_norm(network.parameters()) == pytest.approx(1.0, rel=1e-5)
    assert torch.allclose(network.weight.grad / network.weight.grad.norm(), direction, atol=1e-6)


def test_clip_norm_leaves_small_gradients_alone():
    network = _network_with_gradients(1e-3)
    before = [p.grad.clone() for p in network.parameters()]
    ClipNorm(list(network.parameters()), max_norm=1.0).on_backward_end(1)
    assert all(torch.equal(a, p.grad) for a, p in zip(before, network.parameters(), strict=True))


def test_clip_norm_infinity_norm_bounds_the_largest_element():
    network = _network_with_gradients(10.0)
    ClipNorm(network.parameters(), max_norm=0.5, norm_type=math.inf).on_backward_end(1)
    assert _total_norm(network.parameters(), math.inf) == pytest.approx(0.5, rel=1e-5)


def test_clip_value_clamps_each_element():
    network = _network_with_gradients(10.0)
    expected = network.weight.grad.clamp(-0.3, 0.3)
    ClipValue(network.weight, clip_value=0.3).on_backward_end(1)
    assert torch.equal(network.weight.grad, expected)
    assert network.bias.grad.abs().max() > 0.3  # only the tensor given is clipped


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda p: ClipNorm(p, max_norm=0), r"max_norm: received 0; expected a number > 0"),
        (lambda p: ClipNorm(p, max_norm=1.0, norm_type=math.nan), r"norm_type: received nan"),
        (lambda p: ClipValue(p, clip_value=-1.0), r"clip_value: received -1.0"),
        (lambda p: ClipValue(p, clip_value="1"), r"clip_value: received '1'"),
    ],
)
def test_clipping_rejects_invalid_bounds(build, match):
    with pytest.raises(ConfigurationError, match=match):
        build(nn.Linear(2, 2).parameters())


@pytest.mark.parametrize(
    ("parameters", "match"),
    [
        (3, "received int; expected a tensor"),
        ([], "received an iterable of nothing"),
        ([1.0], "received an iterable of float"),
    ],
)
def test_clipping_rejects_parameters_that_are_not_tensors(parameters, match):
    with pytest.raises(ConfigurationError, match=match):
        ClipNorm(parameters, max_norm=1.0)


class NormProbe(Callback):
    """Records the total gradient norm that the optimizer is about to use."""

    def __init__(self) -> None:
        super().__init__()
        self.norms: list[float] = []

    def on_backward_end(self, batch_number: int) -> None:
        self.norms.append(_total_norm(self.trainer.network.parameters()))


def test_clip_norm_acts_between_backward_and_step_in_a_real_run(tmp_path):
    exp = make_experiment(tmp_path)
    probe = NormProbe()
    exp.train(
        make_data(), epochs=1, batch_size=16, callbacks=[ClipNorm(exp.network.parameters(), 0.05), probe]
    )
    assert len(probe.norms) == 6
    assert max(probe.norms) <= 0.05 * (1 + 1e-5)
    unclipped = NormProbe()
    make_experiment(tmp_path / "unclipped").train(make_data(), epochs=1, batch_size=16, callbacks=[unclipped])
    assert min(unclipped.norms) > 0.05
