"""A run never lies: values that cannot be saved, non-finite states, lost or foreign checkpoints,
runs at their end, and changes between runs are handled explicitly, never silently."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader, TensorDataset

from experiment import BestModelRestore, Callback
from experiment.errors import (
    CheckpointError,
    ConfigurationError,
    DataError,
    NonFiniteStateError,
    RunDirectoryError,
    StateMismatchError,
)
from experiment.store.checkpoints import load_newest_state
from experiment.store.directory import RunDirectory
from tests.support.state_checks import snapshot_files, state_files
from tests.support.training import (
    Interrupt,
    assert_same_training_state,
    make_data,
    make_experiment,
    train_run,
)

LOCK_FILES = (".lock", ".lock.holder")


class AddsNumpyLogs(Callback):
    """Adds a NumPy scalar to the epoch logs and keeps one in its state, as scikit-learn users do."""

    adds_epoch_logs = True

    def __init__(self) -> None:
        super().__init__()
        self.last = np.float64(0.0)

    def on_epoch_end(self, epoch_number: int, logs: dict[str, Any]) -> None:
        self.last = np.float64(0.25 * epoch_number)
        logs["sk_score"] = self.last

    def state_dict(self) -> dict[str, Any]:
        return {"last": self.last, "seen": np.int64(3)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last = state["last"]


def test_numpy_values_in_logs_and_states_become_plain_numbers(tmp_path: Path):
    train_run(tmp_path, epochs=2, callbacks=lambda: [AddsNumpyLogs()])
    tree, _ = load_newest_state(RunDirectory(tmp_path))  # the library's own safe loader accepts it
    state = next(s for name, s in tree["nodes"].items() if name.endswith("AddsNumpyLogs"))
    assert state == {"last": 0.5, "seen": 3} and type(state["last"]) is float
    assert [row["sk_score"] for row in tree["nodes"]["progress"]["history"]] == [0.25, 0.5]
    assert (tmp_path / "log.tsv").read_text().splitlines()[1].split("\t")[-1] == "0.25"
    again = train_run(tmp_path, epochs=3, callbacks=lambda: [AddsNumpyLogs()])
    assert list(again.logs["sk_score"]) == [0.25, 0.5, 0.75]


class AddsAList(Callback):
    adds_epoch_logs = True

    def on_epoch_end(self, epoch_number: int, logs: dict[str, Any]) -> None:
        logs["per_class"] = [0.5, 0.25]


def test_a_log_value_that_is_not_a_number_fails_before_anything_is_committed(tmp_path: Path):
    with pytest.raises(
        ConfigurationError, match=r"logs\['per_class'\] of epoch 1: received list .*expected a number"
    ):
        train_run(tmp_path, epochs=2, callbacks=lambda: [AddsAList()])
    assert state_files(tmp_path) == []


class PoisonsGradients(Callback):
    """Makes the gradients NaN at one step while the loss stays finite."""

    def __init__(self, step: int) -> None:
        super().__init__()
        self.step = step

    def on_backward_end(self, batch_number: int) -> None:
        if self.trainer.global_step + 1 == self.step:
            for parameter in self.trainer.network.parameters():
                parameter.grad.fill_(float("nan"))


def test_non_finite_weights_with_a_finite_loss_are_never_committed(tmp_path: Path):
    with pytest.raises(
        NonFiniteStateError,
        match=r"holds NaN or infinity at global step 8 .*last checkpoint \(state-000002.pt\) is intact",
    ):
        train_run(tmp_path, epochs=3, checkpoint_every=4, callbacks=lambda: [PoisonsGradients(8)])
    tree, _ = load_newest_state(RunDirectory(tmp_path))
    assert tree["nodes"]["progress"]["global_step"] == 6
    assert all(torch.isfinite(value).all() for value in tree["nodes"]["model"].values())


def test_test_last_after_a_mid_epoch_interruption_uses_the_end_of_the_last_epoch(tmp_path: Path):
    train_run(tmp_path, epochs=3, checkpoint_every=4, interrupt_at=9)  # commits: 4, end of epoch 1, 8
    states = [torch.load(path, weights_only=True) for path in state_files(tmp_path)]
    end_of_epoch_1 = next(s for s in states if s["reason"] == "epoch")["nodes"]["model"]
    exp = make_experiment(tmp_path)
    logs = exp.test(make_data(48, seed=3), checkpoint="last", progress=False)
    assert all(torch.equal(value, end_of_epoch_1[key]) for key, value in exp.network.state_dict().items())
    row = (tmp_path / "test_log.tsv").read_text().splitlines()[1].split("\t")
    assert row[1:3] == ["last", "1"] and float(row[3]) == logs["test_loss"]


def test_test_last_is_refused_when_the_end_of_the_last_epoch_is_not_kept(tmp_path: Path):
    train_run(tmp_path, epochs=3, checkpoint_every=1, interrupt_at=10)
    with pytest.raises(
        CheckpointError, match=r"end of epoch 1, the last completed one, .*3 step\(s\) into epoch 2"
    ):
        make_experiment(tmp_path).test(make_data(48, seed=3), checkpoint="last", progress=False)


def _worst_epoch_restore() -> BestModelRestore:
    """Restores the epoch of the highest validation loss: the first, never the last one."""
    return BestModelRestore(monitor="val_loss", mode="max")


class FailsAtTrainEnd(Callback):
    def on_train_end(self, logs: dict[str, Any]) -> None:
        raise Interrupt("killed after the final commit, before the end hooks")


def test_end_hooks_run_on_the_rerun_of_a_run_killed_before_them(run_dirs):
    straight, resumed = run_dirs
    expected = train_run(straight, epochs=3, callbacks=lambda: [_worst_epoch_restore()])
    with contextlib.suppress(Interrupt):
        train_run(resumed, epochs=3, callbacks=lambda: [FailsAtTrainEnd(), _worst_epoch_restore()])
    actual = train_run(resumed, epochs=3, callbacks=lambda: [_worst_epoch_restore()])
    assert_same_training_state(expected, actual)
    assert json.loads((resumed / "experiment.json").read_text())["status"] == "finished"


def test_train_on_a_finished_run_leaves_the_network_as_the_run_ended(tmp_path: Path):
    expected = train_run(tmp_path / "a", epochs=3, callbacks=lambda: [_worst_epoch_restore()])
    again = train_run(tmp_path / "a", epochs=3, callbacks=lambda: [_worst_epoch_restore()])
    assert_same_training_state(expected, again)
    last = torch.load(state_files(tmp_path / "a")[-1], weights_only=True)["nodes"]["model"]
    assert not torch.equal(again.network.state_dict()["0.weight"], last["0.weight"])  # the epoch-1 weights


def test_pruning_converges_on_the_next_open(tmp_path: Path):
    train_run(tmp_path, epochs=2, checkpoint_every=2)
    newest, previous = state_files(tmp_path)[::-1][:2]
    shutil.copy(previous, tmp_path / "checkpoints" / "state-000001.pt")  # left by a kill before pruning
    assert len(state_files(tmp_path)) == 3
    train_run(tmp_path, epochs=2, checkpoint_every=2)
    assert state_files(tmp_path) == sorted([previous, newest])


def test_another_learning_rate_is_refused_and_changes_nothing(tmp_path: Path):
    train_run(tmp_path, epochs=2)
    before = snapshot_files(tmp_path, ignore=LOCK_FILES)
    network_exp = make_experiment(tmp_path)
    network_exp.optimizer.param_groups[0]["lr"] = 0.01
    with pytest.raises(
        StateMismatchError,
        match=r"the optimizer's hyperparameters differ.*\n +lr \(group 0\): 0.1 when the run was created, 0.01 now",
    ):
        network_exp.train(make_data(), make_data(48, seed=2), epochs=3)
    assert snapshot_files(tmp_path, ignore=LOCK_FILES) == before


def test_several_other_hyperparameters_listed_once_with_one_advice(tmp_path: Path):
    train_run(tmp_path, epochs=2)
    exp = make_experiment(tmp_path)
    exp.optimizer.param_groups[0].update(lr=0.01, momentum=0.5)
    with pytest.raises(StateMismatchError) as raised:
        exp.train(make_data(), make_data(48, seed=2), epochs=3)
    message = str(raised.value)
    assert "lr (group 0): 0.1 when the run was created, 0.01 now" in message
    assert "momentum (group 0): 0.9 when the run was created, 0.5 now" in message
    assert message.count("Build the optimizer as before") == 1


def test_another_batch_size_mid_epoch_is_refused(tmp_path: Path):
    train_run(tmp_path, epochs=3, checkpoint_every=2, interrupt_at=9)
    x, y = make_data()
    exp = make_experiment(tmp_path)
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)
    with pytest.raises(
        StateMismatchError, match=r"train_data: batch_size was 16 when the run was created and is 8 now"
    ):
        exp.train(loader, make_data(48, seed=2), epochs=3)


def test_another_batch_size_at_an_epoch_boundary_is_applied_with_a_warning_and_recorded(tmp_path: Path):
    train_run(tmp_path, epochs=2)
    x, y = make_data()
    exp = make_experiment(tmp_path)
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)
    with pytest.warns(UserWarning, match=r"train_data.batch_size: 16 -> 8"):
        exp.train(loader, make_data(48, seed=2), epochs=3, progress=False)
    changes = json.loads((tmp_path / "experiment.json").read_text())["changes"]
    assert {"what": "train_data.batch_size", "from": 16, "to": 8, "at": "epoch 3, step 0"} in changes


def test_switching_from_a_loader_to_a_tuple_is_refused_before_training(tmp_path: Path):
    train_run(tmp_path, epochs=3, interrupt_at=4, checkpoint_every=2)
    with pytest.raises(
        StateMismatchError, match="train_data was a DataLoader when the run was created and is a tuple now"
    ):
        make_experiment(tmp_path).train(make_data(), make_data(48, seed=2), epochs=3)


def test_another_config_is_recorded_with_a_warning(tmp_path: Path):
    train_run(tmp_path, epochs=1, experiment_options={"config": {"note": "a"}})
    with pytest.warns(UserWarning, match=r"config: \{'note': 'a'\} -> \{'note': 'b'\}"):
        train_run(tmp_path, epochs=2, experiment_options={"config": {"note": "b"}}, progress=False)
    metadata = json.loads((tmp_path / "experiment.json").read_text())
    assert metadata["config"] == {"note": "b"}
    assert metadata["changes"][-1]["what"] == "config" and metadata["changes"][-1]["from"] == {"note": "a"}


class Batches:
    """A re-iterable source without a length: the first ``count`` batches of a list."""

    def __init__(self, batches: list[Any], count: int) -> None:
        self.batches, self.count = batches, count

    def __iter__(self):
        return iter(self.batches[: self.count])


def test_an_empty_source_after_a_mid_epoch_resume_is_the_same_data_error(tmp_path: Path):
    x, y = make_data()
    batches = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 96, 16)]
    exp = make_experiment(tmp_path)
    with contextlib.suppress(Interrupt):
        from tests.support.training import InterruptAt

        exp.train(
            Batches(batches, 6), epochs=2, steps_per_epoch=6, checkpoint_every=1, callbacks=[InterruptAt(3)]
        )
    with (
        pytest.warns(UserWarning, match="no index sampler to fast-forward"),
        pytest.raises(DataError, match="train_data yielded no batches in epoch 1; expected at least one"),
    ):
        make_experiment(tmp_path).train(Batches(batches, 0), epochs=2, steps_per_epoch=6, checkpoint_every=1)


def test_deleted_checkpoints_with_a_history_are_refused(tmp_path: Path):
    train_run(tmp_path, epochs=2)
    for path in state_files(tmp_path):
        path.unlink()
    before = snapshot_files(tmp_path, ignore=LOCK_FILES)
    with pytest.raises(
        RunDirectoryError, match=r"holds the history of a run \(2 epoch\(s\) in log.tsv.*no state checkpoint"
    ):
        train_run(tmp_path, epochs=3)
    assert snapshot_files(tmp_path, ignore=LOCK_FILES) == before


def test_a_kill_before_the_first_commit_still_starts_afresh(tmp_path: Path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "log.tsv").write_text("epoch\tloss\n1\t0.5\n")  # a row written before the kill
    expected = train_run(tmp_path / "fresh", epochs=2)
    actual = train_run(tmp_path, epochs=2)
    assert_same_training_state(expected, actual)


def test_a_checkpoint_copied_from_another_run_is_refused(tmp_path: Path):
    train_run(tmp_path / "a", epochs=2)
    train_run(tmp_path / "b", epochs=1)
    for path in state_files(tmp_path / "b"):
        path.unlink()
    for path in state_files(tmp_path / "a"):
        shutil.copy(path, tmp_path / "b" / "checkpoints" / path.name)
    with pytest.raises(StateMismatchError, match="copied from another run directory"):
        train_run(tmp_path / "b", epochs=3)


def test_monitoring_val_loss_without_validation_says_it_monitors_the_training_loss(tmp_path: Path):
    exp = make_experiment(tmp_path, monitor_metric="val_loss")
    with pytest.warns(
        UserWarning, match="received no valid_data: the best epoch is decided by the training loss"
    ):
        exp.train(make_data(), epochs=1, progress=False)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"callbacks": [5]}, r"callbacks\[0\]: received 5; expected a Callback instance"),
        ({"callbacks": BestModelRestore()}, r"callbacks: received .*; expected a list of Callback instances"),
        ({"lr_schedulers": [5]}, r"lr_schedulers\[0\]: received 5; expected a torch LR scheduler"),
        ({"seed": "1"}, r"seed: received '1'; expected an integer >= 0"),
    ],
)
def test_wrong_train_arguments_are_refused_before_anything_is_written(tmp_path: Path, options, expected):
    with pytest.raises(ConfigurationError, match=expected):
        make_experiment(tmp_path / "run").train(make_data(), epochs=1, **options)
    assert not (tmp_path / "run").exists()


def test_a_deleted_tensorboard_folder_is_rebuilt_from_the_committed_history(tmp_path: Path):
    train_run(tmp_path, epochs=2)
    shutil.rmtree(tmp_path / "tensorboard")
    train_run(tmp_path, epochs=3)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [event.step for event in events.Scalars("loss")] == [1, 2, 3]


def test_a_config_that_is_not_json_is_refused_before_any_file_is_created(tmp_path: Path):
    with pytest.raises(ConfigurationError, match=r"config\['weights'\]: received torch.Tensor"):
        make_experiment(tmp_path / "run", config={"weights": torch.ones(3)})
    assert not (tmp_path / "run").exists()
    exp = make_experiment(tmp_path / "run", config={"lr": np.float64(0.1), "out": tmp_path})
    exp.train(make_data(), epochs=1, progress=False)
    assert json.loads((tmp_path / "run" / "experiment.json").read_text())["config"] == {
        "lr": 0.1,
        "out": str(tmp_path),
    }
