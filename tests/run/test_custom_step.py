"""Experiment(train_step=..., eval_step=...): batches of any structure, the library's backward and step."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from experiment import ClipNorm, ConfigurationError, DataError, Experiment, StateMismatchError
from tests.support.training import (
    Interrupt,
    InterruptAt,
    assert_same_training_state,
    make_data,
    make_experiment,
    train_run,
)


class DictData(Dataset):
    """Samples as dicts {"x", "y", "weight"}."""

    def __init__(self, samples: int = 96, seed: int = 1) -> None:
        self.x, self.y = make_data(samples, seed=seed)
        self.weight = torch.linspace(0.5, 1.5, samples)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[index], "y": self.y[index], "weight": self.weight[index]}


def dict_step(trainer: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    y_pred = trainer.network(batch["x"])
    losses = nn.functional.cross_entropy(y_pred, batch["y"], reduction="none")
    return {"loss": (batch["weight"] * losses).mean(), "y_pred": y_pred, "y_true": batch["y"]}


def triple_step(trainer: Any, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
    x, y, weight = batch
    y_pred = trainer.network(x)
    losses = nn.functional.cross_entropy(y_pred, y, reduction="none")
    return {"loss": (weight * losses).mean(), "y_pred": y_pred, "y_true": y}


def triples(samples: int = 96, seed: int = 1, weight: torch.Tensor | None = None) -> TensorDataset:
    x, y = make_data(samples, seed=seed)
    return TensorDataset(x, y, torch.linspace(0.5, 1.5, samples) if weight is None else weight)


DATA = {
    "dict": (dict_step, lambda: DictData(), lambda: DictData(48, seed=2)),
    "triple": (triple_step, lambda: triples(), lambda: triples(48, seed=2)),
}


def custom_run(
    directory: Path, kind: str, *, epochs: int = 3, interrupt_at: int | None = None, **options: Any
) -> Experiment:
    """A custom-step run built afresh (as a restarted script would); an Interrupt is swallowed."""
    step, train_data, valid_data = DATA[kind]
    exp = make_experiment(directory, loss_function=None, train_step=step, **options)
    loader = DataLoader(train_data(), batch_size=16, shuffle=True)
    callbacks = [InterruptAt(interrupt_at)] if interrupt_at is not None else []
    with contextlib.suppress(Interrupt):
        exp.train(
            loader, valid_data(), epochs=epochs, callbacks=callbacks, checkpoint_every=2, progress=False
        )
    return exp


@pytest.mark.parametrize("kind", ["dict", "triple"])
@pytest.mark.parametrize("accumulate", [1, 2])
def test_custom_step_resumes_bit_identically_after_interrupts(run_dirs, kind, accumulate):
    uninterrupted, resumed = run_dirs
    reference = custom_run(uninterrupted, kind, accumulate_grad_batches=accumulate)
    for step in (3, 7):
        custom_run(resumed, kind, interrupt_at=step, accumulate_grad_batches=accumulate)
    final = custom_run(resumed, kind, accumulate_grad_batches=accumulate)
    assert_same_training_state(reference, final)
    assert {"loss", "acc", "f1", "val_loss", "val_acc", "val_f1"} <= set(final.logs.columns)


def test_custom_step_with_unit_weights_trains_as_the_built_in_step(tmp_path: Path):
    """The library's backward and optimizer step around the custom loss: same numbers as (x, y)."""

    def plain_step(trainer: Any, batch: Any) -> dict[str, torch.Tensor]:
        x, y, _ = batch
        y_pred = trainer.network(x)
        return {"loss": trainer.loss_function(y_pred, y), "y_pred": y_pred, "y_true": y}

    built_in = train_run(tmp_path / "built-in", epochs=2, progress=False)
    custom = make_experiment(tmp_path / "custom", train_step=plain_step)
    x, y = make_data()
    ones = TensorDataset(x, y, torch.ones(len(x)))
    xv, yv = make_data(48, seed=2)
    custom.train(
        DataLoader(ones, batch_size=16, shuffle=True),
        TensorDataset(xv, yv, torch.ones(len(xv))),
        epochs=2,
        progress=False,
    )
    assert_same_training_state(built_in, custom)


def test_custom_step_runs_under_autocast_and_calls_on_backward_end(tmp_path: Path):
    dtypes = []

    def step(trainer: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        y_pred = trainer.network(batch["x"])
        dtypes.append(y_pred.dtype)
        return nn.functional.cross_entropy(y_pred, batch["y"])

    exp = make_experiment(
        tmp_path,
        loss_function=None,
        batch_metrics=[],
        epoch_metrics=[],
        train_step=step,
        precision="bf16-mixed",
    )
    clip = ClipNorm(exp.network.parameters(), max_norm=1e-3)
    norms = []
    original = clip.on_backward_end

    def recording(batch_number: int) -> None:
        original(batch_number)
        norms.append(float(torch.cat([p.grad.reshape(-1) for p in exp.network.parameters()]).norm()))

    clip.on_backward_end = recording  # type: ignore[method-assign]
    exp.train(DataLoader(DictData(), batch_size=32), epochs=1, callbacks=[clip], progress=False)
    assert set(dtypes) == {torch.bfloat16}
    assert len(norms) == 3 and max(norms) <= 1e-3 * 1.001


def test_eval_step_defaults_to_train_step_for_validation_test_and_evaluate(tmp_path: Path):
    exp = custom_run(tmp_path, "dict", epochs=1)
    assert "val_acc" in exp.logs.columns
    tested = exp.test(DictData(40, seed=3), checkpoint="last", progress=False)
    assert exp.evaluate(DictData(40, seed=3)) == tested
    logs, predictions = exp.evaluate(DictData(40, seed=3), return_pred=True)
    assert predictions.shape == (40, 3)


def test_eval_step_replaces_train_step_outside_training(tmp_path: Path):
    calls = []

    def eval_step(trainer: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        calls.append(trainer.network.training)
        return dict_step(trainer, batch)

    exp = make_experiment(tmp_path, loss_function=None, train_step=dict_step, eval_step=eval_step)
    exp.train(DataLoader(DictData(), batch_size=32), DictData(16), epochs=1, progress=False)
    assert calls == [False]
    exp.evaluate(DictData(20), batch_size=8)
    assert calls == [False] * 4


def test_custom_step_batch_size_is_the_first_tensor_found(tmp_path: Path):
    sizes = []

    class Sizes(InterruptAt):
        def on_train_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
            sizes.append(logs["size"])

    def step(trainer: Any, batch: dict[str, Any]) -> torch.Tensor:
        return nn.functional.cross_entropy(trainer.network(batch["inputs"]["x"]), batch["inputs"]["y"])

    data = [
        {"name": "a", "inputs": {"x": x, "y": y}} for x, y in DataLoader(TensorDataset(*make_data(40)), 16)
    ]
    exp = make_experiment(tmp_path, loss_function=None, batch_metrics=[], epoch_metrics=[], train_step=step)
    exp.train(data, epochs=1, callbacks=[Sizes(-1)], progress=False)
    assert sizes == [16, 16, 8]


def test_batches_other_than_pairs_without_train_step_are_refused_naming_it(tmp_path: Path):
    exp = make_experiment(tmp_path)
    with pytest.raises(DataError, match=r"received dict\. .*Experiment\(train_step=\.\.\.\)"):
        exp.train(DataLoader(DictData(), batch_size=16), epochs=1, progress=False)
    with pytest.raises(DataError, match=r"received list of length 3\. .*train_step"):
        exp.evaluate(triples())


@pytest.mark.parametrize(
    ("result", "match"),
    [
        (lambda loss, y_pred, y: 1.5, r"train_step returned a float; expected the loss \(a scalar tensor\)"),
        (lambda loss, y_pred, y: {"y_pred": y_pred}, r"returned a dict with the keys \['y_pred'\]"),
        (lambda loss, y_pred, y: {"loss": loss, "pred": y_pred}, r"keys \['pred'\]; expected only"),
        (
            lambda loss, y_pred, y: loss,
            r"returned no 'y_pred' and 'y_true', which the metrics \['acc', 'f1'\]",
        ),
    ],
)
def test_custom_step_results_are_checked(tmp_path: Path, result, match):
    def step(trainer: Any, batch: Any) -> Any:
        x, y, _ = batch
        y_pred = trainer.network(x)
        return result(nn.functional.cross_entropy(y_pred, y), y_pred, y)

    exp = make_experiment(tmp_path, train_step=step)
    with pytest.raises(ConfigurationError, match=match):
        exp.train(triples(), epochs=1, progress=False)


def test_custom_step_that_is_not_callable_is_refused(tmp_path: Path):
    with pytest.raises(ConfigurationError, match=r"eval_step: received 3; expected a function"):
        make_experiment(tmp_path, eval_step=3)


def test_training_without_loss_function_or_train_step_is_refused(tmp_path: Path):
    exp = make_experiment(tmp_path, loss_function=None)
    with pytest.raises(ConfigurationError, match=r"Training needs a loss function"):
        exp.train(make_data(), epochs=1, progress=False)


def unweighted_triple_step(trainer: Any, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
    x, y, _ = batch
    y_pred = trainer.network(x)
    return {"loss": nn.functional.cross_entropy(y_pred, y), "y_pred": y_pred, "y_true": y}


def test_a_run_resumed_with_another_custom_step_is_refused(tmp_path: Path):
    custom_run(tmp_path / "run", "triple", interrupt_at=5)
    exp = make_experiment(tmp_path / "run", loss_function=None, train_step=unweighted_triple_step)
    before = sorted(path.name for path in (tmp_path / "run" / "checkpoints").iterdir())

    with pytest.raises(StateMismatchError, match=r"train_step was '.*\.triple_step'.*unweighted_triple_step"):
        exp.train(
            DataLoader(triples(), batch_size=16, shuffle=True), triples(48, seed=2), epochs=3, progress=False
        )

    assert sorted(path.name for path in (tmp_path / "run" / "checkpoints").iterdir()) == before
