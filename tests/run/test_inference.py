"""Experiment.evaluate and Experiment.predict: the network in memory (or saved weights), no files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from experiment import Callback, CheckpointError, ConfigurationError, DataError, Experiment
from tests.support.state_checks import snapshot_files
from tests.support.training import make_data, make_experiment, train_run


def _expected_outputs(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
    network.eval()
    with torch.no_grad():
        return network(x)


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to the rounding that another batch size may bring."""
    return a.shape == b.shape and torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_evaluate_matches_test_of_the_same_weights_and_writes_nothing(tmp_path: Path):
    exp = train_run(tmp_path / "run", epochs=2)
    x, y = make_data(40, seed=5)
    tested = exp.test((x, y), checkpoint="last", progress=False)
    before = snapshot_files(tmp_path / "run")
    logs = exp.evaluate((x, y))
    assert logs == tested
    assert set(logs) == {"test_loss", "test_acc", "test_f1"}
    assert snapshot_files(tmp_path / "run") == before


def test_evaluate_uses_the_network_in_memory_without_a_run_directory(tmp_path: Path):
    exp = make_experiment(tmp_path / "never-trained")
    x, y = make_data(20)
    logs = exp.evaluate((x, y), batch_size=7)
    expected = nn.functional.cross_entropy(_expected_outputs(exp.network, x), y)
    assert logs["test_loss"] == pytest.approx(float(expected), rel=1e-5)
    assert not (tmp_path / "never-trained").exists()


def test_evaluate_restores_the_training_mode(tmp_path: Path):
    exp = make_experiment(tmp_path / "run")
    x, y = make_data(20)
    exp.network.train()
    exp.evaluate((x, y))
    assert exp.network.training
    exp.network.eval()
    exp.evaluate((x, y))
    assert not exp.network.training


def test_evaluate_return_pred_gives_the_outputs_in_order(tmp_path: Path):
    exp = make_experiment(tmp_path / "run")
    x, y = make_data(30)
    logs, predictions = exp.evaluate(DataLoader(TensorDataset(x, y), batch_size=8), return_pred=True)
    assert _close(predictions, _expected_outputs(exp.network, x))
    assert set(logs) == {"test_loss", "test_acc", "test_f1"}


def _bf16_outputs(network: nn.Module, *inputs: torch.Tensor) -> object:
    network.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        return network(*inputs)


def test_evaluate_runs_in_the_runs_precision_and_returns_float32(tmp_path: Path):
    exp = make_experiment(tmp_path / "run", precision="bf16-mixed")
    x, y = make_data(20)
    _, predictions = exp.evaluate((x, y), return_pred=True)
    expected = _bf16_outputs(exp.network, x)
    assert expected.dtype == torch.bfloat16
    assert predictions.dtype == torch.float32
    assert torch.equal(predictions, expected.float())


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_predict_of_a_mixed_precision_run_returns_float32_that_numpy_takes(tmp_path: Path, precision):
    exp = train_run(tmp_path / "run", epochs=1, experiment_options={"precision": precision})
    x, _ = make_data(20)
    predictions = exp.predict(x)
    exp.network.eval()
    dtype = torch.bfloat16 if precision == "bf16-mixed" else torch.float16
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
        expected = exp.network(x)
    assert expected.dtype == dtype
    assert predictions.dtype == torch.float32
    assert torch.equal(predictions, expected.float())  # the half values, upcast exactly
    assert predictions.numpy().dtype == "float32"


class MixedOutputs(nn.Module):
    """Outputs of every kind of leaf: the autocast's bfloat16, float64, integers and booleans."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> dict[str, object]:
        out = self.linear(x)
        return {"logits": out, "parts": (out.double(), [out.argmax(dim=1), out > 0]), "total": out.sum()}


def test_predict_upcasts_only_half_precision_leaves_of_nested_outputs(tmp_path: Path):
    torch.manual_seed(0)
    network = MixedOutputs()
    exp = Experiment(tmp_path / "run", network, loss_function="mse", precision="bf16-mixed")
    x = torch.randn(11, 6)
    predictions = exp.predict(x, batch_size=4)
    batches = [_bf16_outputs(network, chunk) for chunk in x.split(4)]
    logits = torch.cat([batch["logits"] for batch in batches])
    assert logits.dtype == torch.bfloat16
    assert predictions["logits"].dtype == torch.float32
    assert torch.equal(predictions["logits"], logits.float())
    assert predictions["total"].dtype == torch.float32
    assert torch.equal(predictions["total"], torch.stack([batch["total"] for batch in batches]).float())
    double, (labels, positive) = predictions["parts"]
    assert double.dtype == torch.float64 and torch.equal(double, logits.double())
    assert labels.dtype == torch.int64 and torch.equal(labels, logits.argmax(dim=1))
    assert positive.dtype == torch.bool and torch.equal(positive, logits > 0)


def test_evaluate_without_a_loss_function_is_refused(tmp_path: Path):
    exp = make_experiment(tmp_path / "run", loss_function=None, batch_metrics=[], epoch_metrics=[])
    with pytest.raises(ConfigurationError, match=r"Evaluating needs a loss function"):
        exp.evaluate(make_data(8))


def test_predict_takes_a_tensor_or_an_array_as_inputs_only(tmp_path: Path):
    exp = make_experiment(tmp_path / "run")
    x, _ = make_data(37)
    expected = _expected_outputs(exp.network, x)
    assert _close(exp.predict(x, batch_size=10), expected)
    assert _close(exp.predict(x.numpy(), batch_size=10), expected)


def test_predict_uses_x_of_pairs_from_tuples_datasets_and_loaders(tmp_path: Path):
    exp = make_experiment(tmp_path / "run")
    x, y = make_data(37)
    expected = _expected_outputs(exp.network, x)
    assert _close(exp.predict((x, y)), expected)
    assert _close(exp.predict((x.numpy(), y.numpy())), expected)
    assert _close(exp.predict(TensorDataset(x, y), batch_size=5), expected)
    assert _close(exp.predict(DataLoader(TensorDataset(x, y), batch_size=9)), expected)


class InputsOnly(Dataset):
    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.x[index]


def test_predict_takes_datasets_and_loaders_of_inputs_only(tmp_path: Path):
    exp = make_experiment(tmp_path / "run")
    x, _ = make_data(23)
    expected = _expected_outputs(exp.network, x)
    assert _close(exp.predict(InputsOnly(x), batch_size=4), expected)
    assert _close(exp.predict(DataLoader(InputsOnly(x), batch_size=6)), expected)
    assert _close(exp.predict(batch for batch in (x[:10], x[10:])), expected)  # batches of inputs


class TwoInputsNestedOutputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(6, 3)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> dict[str, object]:
        out = self.linear(a + b)
        return {"logits": out, "parts": (out.sum(dim=1), [out.argmax(dim=1)])}


def test_predict_concatenates_nested_outputs_leaf_by_leaf_and_has_targets_false(tmp_path: Path):
    torch.manual_seed(0)
    network = TwoInputsNestedOutputs()
    exp = Experiment(tmp_path / "run", network, loss_function="mse")
    a, b = torch.randn(11, 6), torch.randn(11, 6)
    predictions = exp.predict((a, b), batch_size=4, has_targets=False)
    with torch.no_grad():
        expected = network(a, b)
    assert _close(predictions["logits"], expected["logits"])
    assert _close(predictions["parts"][0], expected["parts"][0])
    assert torch.equal(predictions["parts"][1][0], expected["parts"][1][0])
    assert isinstance(predictions["parts"], tuple) and isinstance(predictions["parts"][1], list)


def test_predict_has_targets_true_requires_pairs(tmp_path: Path):
    exp = make_experiment(tmp_path / "run")
    x, _ = make_data(8)
    with pytest.raises(DataError, match=r"has_targets=True, but a batch is Tensor"):
        exp.predict(InputsOnly(x), has_targets=True)
    with pytest.raises(DataError, match=r"single Tensor with has_targets=True"):
        exp.predict(x, has_targets=True)


def test_predict_restores_the_training_mode_and_leaves_no_gradient(tmp_path: Path):
    exp = make_experiment(tmp_path / "run")
    exp.network.train()
    predictions = exp.predict(make_data(8)[0])
    assert exp.network.training
    assert not predictions.requires_grad


def test_predict_loads_saved_weights_as_test_does(tmp_path: Path):
    exp = train_run(tmp_path / "run", epochs=3)
    x, y = make_data(16, seed=3)
    best = exp.predict(x, checkpoint="best")
    exp.test((x, y), checkpoint="best", progress=False)
    assert _close(best, _expected_outputs(exp.network, x))
    fresh = make_experiment(tmp_path / "run")
    assert _close(fresh.predict(x, checkpoint="best"), best)
    last = fresh.predict(x, checkpoint="last")
    assert _close(last, _expected_outputs(train_run(tmp_path / "run", epochs=3).network, x))


def test_predict_of_a_run_without_checkpoint_is_refused(tmp_path: Path):
    exp = make_experiment(tmp_path / "run")
    with pytest.raises(CheckpointError, match=r"holds no checkpoint yet"):
        exp.predict(make_data(8)[0], checkpoint="best")


@pytest.mark.parametrize(
    ("data", "options", "match"),
    [
        (torch.tensor(1.0), {}, r"0-dim"),
        ("text", {}, r"received str; expected inputs as a tensor"),
        ([torch.zeros(3, 6), torch.zeros(4, 6), torch.zeros(5, 6)], {}, r"same number of samples"),
        (torch.zeros(3, 6), {"batch_size": 0}, r"batch_size"),
        (torch.zeros(3, 6), {"has_targets": "yes"}, r"has_targets: received 'yes'"),
    ],
)
def test_predict_refuses_unusable_arguments(tmp_path: Path, data, options, match):
    exp = make_experiment(tmp_path / "run")
    with pytest.raises((DataError, ConfigurationError), match=match):
        exp.predict(data, **options)


def test_evaluate_calls_the_test_hooks_of_its_callbacks(tmp_path: Path):
    class Hooks(Callback):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[str] = []

        def on_test_begin(self, logs: dict) -> None:
            self.calls.append("begin")

        def on_test_batch_end(self, batch_number: int, logs: dict) -> None:
            self.calls.append(f"batch {batch_number}")

        def on_test_end(self, logs: dict) -> None:
            self.calls.append(f"end {sorted(logs)}")

    hooks = Hooks()
    make_experiment(tmp_path / "run").evaluate(make_data(20), batch_size=16, callbacks=[hooks])
    assert hooks.calls == ["begin", "batch 1", "batch 2", "end ['test_acc', 'test_f1', 'test_loss', 'time']"]


def test_predict_with_an_eval_step_gives_each_whole_batch_to_it_and_returns_its_y_pred(tmp_path: Path):
    network = nn.Linear(4, 3)
    seen = []

    def eval_step(trainer, batch):  # dict batches, as text models have them
        seen.append(sorted(batch))
        y_pred = trainer.network(batch["features"]) * batch["scale"]
        return {"loss": y_pred.sum() * 0, "y_pred": y_pred}

    exp = Experiment(tmp_path / "run", network, loss_function="cross_entropy", eval_step=eval_step)
    x = torch.randn(10, 4)
    batches = [
        {"features": x[:6], "scale": torch.tensor(2.0)},
        {"features": x[6:], "scale": torch.tensor(2.0)},
    ]

    outputs = exp.predict(batches)

    assert seen == [["features", "scale"], ["features", "scale"]]
    assert _close(outputs, _expected_outputs(network, x) * 2)


def test_predict_with_an_eval_step_that_returns_no_y_pred_says_what_to_return(tmp_path: Path):
    network = nn.Linear(4, 3)
    exp = Experiment(
        tmp_path / "run", network, loss_function="cross_entropy", eval_step=lambda t, b: t.network(b[0]).sum()
    )

    with pytest.raises(ConfigurationError, match=r"eval_step.*'y_pred'"):
        exp.predict((torch.randn(5, 4), torch.zeros(5, dtype=torch.long)))


def test_predict_casts_float64_numpy_inputs_to_the_networks_dtype(tmp_path: Path):
    """NumPy's default float64 (scikit-learn's too) as inputs alone, (x, y) or several inputs."""
    import numpy as np

    exp = make_experiment(tmp_path)
    x, y = make_data()
    expected = exp.predict(x)
    x64 = x.numpy().astype(np.float64)
    assert torch.equal(exp.predict(x64), expected)
    assert torch.equal(exp.predict((x64, y.numpy())), expected)
    assert torch.equal(exp.predict(torch.from_numpy(x64)), expected)
    two_inputs = nn.Bilinear(6, 6, 2)
    exp2 = Experiment(tmp_path / "two", two_inputs, loss_function="cross_entropy")
    assert exp2.predict((x64, x64), has_targets=False).dtype == torch.float32
