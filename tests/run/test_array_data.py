"""Runs on tuples of arrays: (x, y, sample_weight) for a custom step, float64 NumPy data, and the
errors for data the network or the step cannot take."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from experiment import DataError, Experiment, StateMismatchError
from tests.support.training import (
    Interrupt,
    InterruptAt,
    assert_same_training_state,
    make_data,
    make_experiment,
)

SEED = 42  # train()'s default seed


def weighted_step(trainer: Any, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
    x, y, weight = batch
    y_pred = trainer.network(x)
    losses = nn.functional.cross_entropy(y_pred, y, reduction="none")
    return {"loss": (weight * losses).mean(), "y_pred": y_pred, "y_true": y}


def triple(samples: int = 96, seed: int = 1, *, numpy: bool = False) -> tuple[Any, Any, Any]:
    """(x, y, weight); as NumPy arrays, x and the weights are float64 (NumPy's default)."""
    x, y = make_data(samples, seed=seed)
    weight = torch.linspace(0.5, 1.5, samples)
    if numpy:
        return x.double().numpy(), y.numpy(), weight.double().numpy()
    return x, y, weight


def triple_run(
    directory: Path, *, numpy: bool = False, interrupt_at: int | None = None, epochs: int = 3
) -> Experiment:
    """A weighted run on (x, y, w) tuples, built afresh as a restarted script would; an Interrupt is swallowed."""
    exp = make_experiment(directory, loss_function=None, train_step=weighted_step)
    callbacks = [InterruptAt(interrupt_at)] if interrupt_at is not None else []
    with contextlib.suppress(Interrupt):
        exp.train(
            triple(numpy=numpy),
            triple(48, seed=2, numpy=numpy),
            epochs=epochs,
            batch_size=16,
            callbacks=callbacks,
            checkpoint_every=2,
            progress=False,
        )
    return exp


def test_array_data_a_triple_feeds_the_custom_step_batch_sized_slices_like_a_tensor_dataset(tmp_path: Path):
    seen: list[tuple[tuple[int, ...], ...]] = []
    weights: list[torch.Tensor] = []

    def recording_step(trainer: Any, batch: Any) -> dict[str, torch.Tensor]:
        if trainer.network.training:
            seen.append(tuple(tuple(part.shape) for part in batch))
            weights.append(batch[2])
        return weighted_step(trainer, batch)

    exp = make_experiment(tmp_path / "tuple", loss_function=None, train_step=recording_step)
    exp.train(triple(), triple(48, seed=2), epochs=2, batch_size=16, progress=False)

    assert seen == [((16, 6), (16,), (16,))] * 12
    for epoch in range(2):  # every sample once per epoch
        epoch_weights = torch.cat(weights[epoch * 6 : (epoch + 1) * 6])
        assert torch.equal(epoch_weights.sort().values, triple()[2])
    reference = make_experiment(tmp_path / "loader", loss_function=None, train_step=recording_step)
    generator = torch.Generator().manual_seed(SEED)
    reference.train(
        DataLoader(TensorDataset(*triple()), batch_size=16, shuffle=True, generator=generator),
        TensorDataset(*triple(48, seed=2)),
        epochs=2,
        batch_size=16,
        progress=False,
    )
    assert_same_training_state(reference, exp)
    tested = exp.test(triple(40, seed=3), checkpoint="last", progress=False)  # eval_step: train_step
    assert exp.evaluate(triple(40, seed=3)) == tested


@pytest.mark.parametrize("numpy", [False, True], ids=["tensors", "float64-numpy"])
def test_array_data_a_triple_run_resumes_bit_identically_after_mid_epoch_interrupts(run_dirs, numpy):
    uninterrupted, resumed = run_dirs
    reference = triple_run(uninterrupted, numpy=numpy)
    for step in (3, 7, 14):  # 6 steps per epoch: each interrupt is inside an epoch
        triple_run(resumed, numpy=numpy, interrupt_at=step)
    final = triple_run(resumed, numpy=numpy)
    assert_same_training_state(reference, final)
    assert {"loss", "acc", "f1", "val_loss", "val_acc", "val_f1"} <= set(final.logs.columns)
    created = json.loads((resumed / "experiment.json").read_text())["created_with"]["data"]
    assert created["train_data"]["kind"] == created["valid_data"]["kind"] == "tuple of 3 arrays"


def test_array_data_a_triple_run_resumed_with_a_data_loader_is_refused(tmp_path: Path):
    triple_run(tmp_path, interrupt_at=3)
    exp = make_experiment(tmp_path, loss_function=None, train_step=weighted_step)
    with pytest.raises(
        StateMismatchError, match=r"train_data was a tuple of 3 arrays when the run was created"
    ):
        exp.train(DataLoader(TensorDataset(*triple()), batch_size=16), epochs=3, progress=False)


def test_array_data_a_triple_without_train_step_is_refused_naming_it(tmp_path: Path):
    exp = make_experiment(tmp_path / "run")
    with pytest.raises(
        DataError, match=r"train_data: received a tuple of 3 arrays; .*Experiment\(train_step="
    ):
        exp.train(triple(), epochs=1, progress=False)
    with pytest.raises(DataError, match=r"valid_data: received a tuple of 3 arrays; .*train_step="):
        exp.train(make_data(), triple(48), epochs=1, progress=False)
    assert not (tmp_path / "run").exists()


def test_array_data_keras_style_train_x_y_is_refused_with_the_tuple_advice(tmp_path: Path):
    x, y = make_data()
    exp = make_experiment(tmp_path / "run")
    with pytest.raises(
        DataError, match=r"train_data: received a Tensor of shape \(96, 6\) alone; .*train\(\(x, y\)\)"
    ):
        exp.train(x, y, epochs=1, progress=False)
    with pytest.raises(DataError, match=r"valid_data: received a ndarray of shape \(96,\) alone"):
        exp.train((x, y), y.numpy(), epochs=1, progress=False)
    assert not (tmp_path / "run").exists()


def regression_data(samples: int, seed: int, dtype: torch.dtype) -> tuple[np.ndarray, np.ndarray]:
    x, _ = make_data(samples, seed=seed)
    return x.to(dtype).numpy(), x[:, :1].sum(dim=1, keepdim=True).to(dtype).numpy()


def regression_run(directory: Path, dtype: torch.dtype) -> Experiment:
    torch.manual_seed(0)
    network = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 1))
    exp = Experiment(directory, network, optimizer="sgd", loss_function="mse")
    exp.train(
        regression_data(96, 1, dtype), regression_data(48, 2, dtype), epochs=2, batch_size=16, progress=False
    )
    return exp


def test_array_data_float64_numpy_arrays_train_as_their_float32_values(tmp_path: Path, caplog):
    with caplog.at_level(logging.INFO, logger="experiment.training.arrays"):
        float64 = regression_run(tmp_path / "float64", torch.float64)
    assert {p.dtype for p in float64.network.parameters()} == {torch.float32}
    assert [m for m in caplog.messages if "cast" in m] == [
        "train_data: cast the floating-point arrays [0, 1] (torch.float64, torch.float64) to torch.float32, "
        "the dtype of the network's parameters.",
        "valid_data: cast the floating-point arrays [0, 1] (torch.float64, torch.float64) to torch.float32, "
        "the dtype of the network's parameters.",
    ]
    float32 = regression_run(tmp_path / "float32", torch.float32)
    assert_same_training_state(float32, float64)
    assert float64.test(regression_data(48, 3, torch.float64), progress=False) == pytest.approx(
        float32.test(regression_data(48, 3, torch.float32), progress=False)
    )


def test_array_data_float64_class_inputs_train_and_integer_targets_stay_integers(tmp_path: Path):
    x, y = make_data()
    exp = make_experiment(tmp_path)
    exp.train((x.double().numpy(), y.numpy()), epochs=1, progress=False)
    assert exp.logs["loss"].notna().all()
    assert {p.dtype for p in exp.network.parameters()} == {torch.float32}


def test_array_data_a_loader_of_float64_batches_is_refused_with_the_fix(tmp_path: Path):
    x, y = make_data()
    exp = make_experiment(tmp_path)
    with pytest.raises(
        DataError,
        match=r"train_data: the network failed on the first batch, whose inputs are a torch\.float64 tensor "
        r"of shape \(16, 6\); its parameters are torch\.float32 .*Convert the inputs to torch\.float32",
    ) as raised:
        exp.train(DataLoader(TensorDataset(x.double(), y), batch_size=16), epochs=1, progress=False)
    assert "must have the same dtype" in str(raised.value.__cause__)


def test_array_data_a_wrong_feature_count_names_the_shapes_and_the_first_layer(tmp_path: Path):
    x, y = make_data(features=5)
    exp = make_experiment(tmp_path)
    with pytest.raises(
        DataError,
        match=r"train_data: the network failed on the first batch, whose inputs are a torch\.float32 tensor "
        r"of shape \(16, 5\); its parameters are torch\.float32 and its first layer with a known input "
        r"size, '0' \(Linear\), takes in_features=6\. The inputs have 5 features: give 6",
    ) as raised:
        exp.train(DataLoader(TensorDataset(x, y), batch_size=16), epochs=1, progress=False)
    assert isinstance(raised.value.__cause__, RuntimeError)
    assert "mat1 and mat2 shapes cannot be multiplied (16x5 and 6x16)" in str(raised.value)


def test_array_data_a_wrong_feature_count_in_evaluation_names_its_data(tmp_path: Path):
    exp = make_experiment(tmp_path)
    with pytest.raises(DataError, match=r"data: the network failed on the first batch, .*shape \(32, 5\);"):
        exp.evaluate(make_data(features=5))
