"""PeriodicSaveCallback and its family: hooks with fake logs, and resume equivalence with training."""

from __future__ import annotations

import io
import os
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Any

import pytest
import torch
from torch import nn

from experiment import Callback
from experiment.callbacks.checkpoint_savers import (
    LRSchedulerCheckpoint,
    ModelCheckpoint,
    OptimizerCheckpoint,
    PeriodicSaveLambda,
)
from experiment.callbacks.lr_schedulers import StepLR
from experiment.callbacks.periodic_save import PeriodicSaveCallback
from experiment.errors import ConfigurationError, MonitorError, StateMismatchError, StorageError
from tests.support.format_1 import migrated_state
from tests.support.training import CrashAtEpochEnd, assert_same_training_state, train_run


class EpochWriter(PeriodicSaveCallback):
    """Writes the epoch number as text."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, open_mode="w", **kwargs)

    def save_file(self, fd: IO[Any], epoch_number: int, logs: dict[str, Any]) -> None:
        fd.write(str(epoch_number))


def fake_trainer() -> SimpleNamespace:
    torch.manual_seed(0)
    network = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1, momentum=0.9)
    return SimpleNamespace(network=network, optimizer=optimizer, stop_training=False)


def run_epochs(callback: Any, losses: list[float], *, trainer: Any = None) -> Any:
    """Drive the hooks as the loop does, one epoch per value of val_loss."""
    callback.set_trainer(trainer or fake_trainer())
    callback.set_params({"epochs": len(losses), "steps_per_epoch": 1})
    callback.on_train_begin({})
    for epoch, loss in enumerate(losses, start=1):
        callback.on_epoch_begin(epoch, {})
        callback.on_epoch_end(
            epoch, {"epoch": epoch, "loss": loss + 1, "val_loss": loss, "val_acc": 1 - loss}
        )
    callback.on_train_end({})
    return callback


def names(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def test_periodic_save_formats_filename_with_epoch_and_logs(tmp_path):
    run_epochs(EpochWriter(tmp_path / "w.{epoch:02d}-{val_loss:.2f}.txt"), [0.5, 0.25])
    assert names(tmp_path) == ["w.01-0.50.txt", "w.02-0.25.txt"]
    assert (tmp_path / "w.02-0.25.txt").read_text() == "2"


def test_periodic_save_unknown_filename_key_raises(tmp_path):
    with pytest.raises(ConfigurationError, match=r"'val_f1'.*val_loss"):
        run_epochs(EpochWriter(tmp_path / "w-{val_f1}.txt"), [0.5])


def test_periodic_save_invalid_format_string_raises(tmp_path):
    with pytest.raises(ConfigurationError, match="not a valid format string"):
        run_epochs(EpochWriter(str(tmp_path / "w-{epoch:q}.txt")), [0.5])


def test_periodic_save_creates_missing_folders(tmp_path):
    run_epochs(EpochWriter(tmp_path / "deep" / "er" / "last.txt"), [0.5])
    assert (tmp_path / "deep" / "er" / "last.txt").read_text() == "1"


def test_periodic_save_period_saves_every_nth_epoch(tmp_path):
    run_epochs(EpochWriter(tmp_path / "w{epoch}.txt", period=2), [0.5, 0.4, 0.3, 0.2, 0.1])
    assert names(tmp_path) == ["w2.txt", "w4.txt"]


def test_periodic_save_best_only_overwrites_on_improvement_only(tmp_path):
    writer = run_epochs(EpochWriter(tmp_path / "best.txt", save_best_only=True), [0.5, 0.6, 0.4, 0.45])
    assert (tmp_path / "best.txt").read_text() == "3"
    assert (writer.best_epoch, writer.best_value) == (3, 0.4)


def test_periodic_save_best_only_with_mode_max(tmp_path):
    run_epochs(
        EpochWriter(tmp_path / "w{epoch}.txt", monitor="val_acc", mode="max", save_best_only=True),
        [0.5, 0.6, 0.4, 0.45],
    )
    assert names(tmp_path) == ["w1.txt", "w3.txt"]


def test_periodic_save_best_only_keeps_every_best_by_default(tmp_path):
    run_epochs(EpochWriter(tmp_path / "w{epoch}.txt", save_best_only=True), [0.5, 0.6, 0.4, 0.3])
    assert names(tmp_path) == ["w1.txt", "w3.txt", "w4.txt"]


def test_periodic_save_keep_only_last_best_removes_previous_once_committed(tmp_path):
    writer = EpochWriter(tmp_path / "w{epoch}.txt", save_best_only=True, keep_only_last_best=True)
    writer.set_trainer(fake_trainer())
    writer.on_train_begin({})
    for epoch, loss in ((1, 0.5), (2, 0.4)):
        writer.on_epoch_begin(epoch, {})
        writer.on_epoch_end(epoch, {"epoch": epoch, "val_loss": loss})
    # epoch 2 is not committed yet: the committed best (epoch 1) must still be there
    assert names(tmp_path) == ["w1.txt", "w2.txt"]
    writer.on_epoch_begin(3, {})
    assert names(tmp_path) == ["w2.txt"]
    writer.on_epoch_end(3, {"epoch": 3, "val_loss": 0.3})
    writer.on_train_end({})
    assert names(tmp_path) == ["w3.txt"]
    assert writer.best_filename == str(tmp_path / "w3.txt")


def test_periodic_save_missing_monitor_raises(tmp_path):
    with pytest.raises(MonitorError, match=r"'val_f1'.*val_loss"):
        run_epochs(EpochWriter(tmp_path / "w.txt", monitor="val_f1", save_best_only=True), [0.5])


def test_periodic_save_atomic_write_leaves_no_temporary_file(tmp_path):
    temporary = tmp_path / "scratch-{epoch}.tmp"
    run_epochs(EpochWriter(tmp_path / "w{epoch}.txt", temporary_filename=temporary), [0.5, 0.4])
    run_epochs(EpochWriter(tmp_path / "last.txt"), [0.5, 0.4])
    assert names(tmp_path) == ["last.txt", "w1.txt", "w2.txt"]


class FailingWriter(PeriodicSaveCallback):
    def save_file(self, fd: IO[Any], epoch_number: int, logs: dict[str, Any]) -> None:
        fd.write(b"half of it")
        raise OSError(28, "No space left on device")


def test_periodic_save_failed_write_keeps_previous_file(tmp_path):
    target = tmp_path / "w.bin"
    target.write_bytes(b"previous")
    with pytest.raises(StorageError, match="No space left"):
        run_epochs(FailingWriter(target), [0.5])
    assert names(tmp_path) == ["w.bin"]
    assert target.read_bytes() == b"previous"


def test_periodic_save_without_atomic_write_opens_the_file(tmp_path):
    run_epochs(EpochWriter(tmp_path / "w.txt", atomic_write=False), [0.5, 0.4])
    assert names(tmp_path) == ["w.txt"]
    assert (tmp_path / "w.txt").read_text() == "2"


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"period": 0}, "period: received 0"),
        ({"keep_only_last_best": True}, "needs save_best_only|save_best_only=False"),
        ({"mode": "maximum"}, "'maximum'"),
        ({"open_mode": "r"}, "open_mode: received 'r'"),
    ],
)
def test_periodic_save_invalid_options_raise(tmp_path, options, match):
    with pytest.raises(ConfigurationError, match=match):
        ModelCheckpoint(tmp_path / "w.pt", **options)


def test_periodic_save_state_round_trip_resumes_the_best(tmp_path):
    first = run_epochs(
        EpochWriter(tmp_path / "w{epoch}.txt", save_best_only=True, keep_only_last_best=True), [0.5, 0.4]
    )
    second = EpochWriter(tmp_path / "w{epoch}.txt", save_best_only=True, keep_only_last_best=True)
    second.load_state_dict(first.state_dict())
    assert second.state_dict() == first.state_dict()
    second.set_trainer(fake_trainer())
    second.on_epoch_end(3, {"epoch": 3, "val_loss": 0.45})  # worse than the restored best: no file
    second.on_epoch_end(4, {"epoch": 4, "val_loss": 0.35})
    second.on_train_end({})
    assert names(tmp_path) == ["w4.txt"]


def test_model_checkpoint_writes_weights_loadable_safely(tmp_path):
    trainer = fake_trainer()
    run_epochs(ModelCheckpoint(tmp_path / "w{epoch}.pt"), [0.5], trainer=trainer)
    weights = torch.load(tmp_path / "w1.pt", weights_only=True)
    for key, value in trainer.network.state_dict().items():
        assert torch.equal(weights[key], value)


class PerturbWeights(Callback):
    """Changes the weights at each epoch end, before the checkpoint callbacks run."""

    def on_epoch_end(self, epoch_number: int, logs: dict[str, Any]) -> None:
        with torch.no_grad():
            for parameter in self.trainer.network.parameters():
                parameter.add_(float(epoch_number))


def test_model_checkpoint_restore_best_loads_best_weights_at_train_end(tmp_path):
    trainer = fake_trainer()
    checkpoint = ModelCheckpoint(tmp_path / "w{epoch}.pt", save_best_only=True, restore_best=True)
    perturb = PerturbWeights()
    for callback in (perturb, checkpoint):
        callback.set_trainer(trainer)
    snapshots = {}
    for epoch, loss in enumerate([0.5, 0.3, 0.4], start=1):
        logs = {"epoch": epoch, "val_loss": loss}
        perturb.on_epoch_end(epoch, logs)
        snapshots[epoch] = {k: v.clone() for k, v in trainer.network.state_dict().items()}
        checkpoint.on_epoch_end(epoch, logs)
    checkpoint.on_train_end({})
    for key, value in trainer.network.state_dict().items():
        assert torch.equal(value, snapshots[2][key])
        assert not torch.equal(value, snapshots[3][key])


def run_perturbed(checkpoint: ModelCheckpoint, losses: list[float]) -> dict[int, dict[str, torch.Tensor]]:
    """Drive ``checkpoint`` over epochs whose weights differ; return each epoch's weights."""
    trainer, perturb = fake_trainer(), PerturbWeights()
    for callback in (perturb, checkpoint):
        callback.set_trainer(trainer)
    checkpoint.on_train_begin({})
    snapshots = {}
    for epoch, loss in enumerate(losses, start=1):
        logs = {"epoch": epoch, "val_loss": loss}
        checkpoint.on_epoch_begin(epoch, {})
        perturb.on_epoch_end(epoch, logs)
        snapshots[epoch] = {k: v.clone() for k, v in trainer.network.state_dict().items()}
        checkpoint.on_epoch_end(epoch, logs)
    checkpoint.on_train_end({})
    snapshots[0] = trainer.network.state_dict()  # the weights training ends with
    return snapshots


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def test_model_checkpoint_restore_best_without_save_best_only_restores_the_best_saved_epoch(tmp_path):
    checkpoint = ModelCheckpoint(tmp_path / "w{epoch}.pt", restore_best=True)
    snapshots = run_perturbed(checkpoint, [0.5, 0.3, 0.4])
    assert names(tmp_path) == ["w1.pt", "w2.pt", "w3.pt"]  # every epoch saved
    assert (checkpoint.best_epoch, checkpoint.best_filename) == (2, str(tmp_path / "w2.pt"))
    assert same_weights(snapshots[0], snapshots[2]) and not same_weights(snapshots[0], snapshots[3])


def test_model_checkpoint_restore_best_with_a_period_restores_the_best_of_the_saved_epochs(tmp_path):
    checkpoint = ModelCheckpoint(tmp_path / "w{epoch}.pt", period=2, restore_best=True)
    snapshots = run_perturbed(checkpoint, [0.1, 0.4, 0.5, 0.3])  # epoch 1 is best but never saved
    assert names(tmp_path) == ["w2.pt", "w4.pt"]
    assert checkpoint.best_epoch == 4 and same_weights(snapshots[0], snapshots[4])


def test_model_checkpoint_restore_best_without_save_best_only_refuses_a_file_every_save_overwrites(tmp_path):
    with pytest.raises(ConfigurationError, match=r"which every save overwrites.*expected a filename holding"):
        ModelCheckpoint(tmp_path / "last-{val_loss:.1f}.pt", restore_best=True)
    ModelCheckpoint(tmp_path / "last.pt", save_best_only=True, restore_best=True)  # one best file: fine


@pytest.mark.parametrize("options", [{"save_best_only": True}, {"restore_best": True}])
def test_model_checkpoint_monitor_of_unknown_direction_needs_a_mode_when_the_best_matters(tmp_path, options):
    with pytest.raises(
        ConfigurationError, match=r"mode: not given, and whether a larger or a smaller 'val_iou'"
    ):
        ModelCheckpoint(tmp_path / "w{epoch}.pt", monitor="val_iou", **options)
    ModelCheckpoint(tmp_path / "w{epoch}.pt", monitor="val_iou")  # every epoch saved: no best needed


def test_model_checkpoint_restore_best_missing_monitor_raises_at_the_save(tmp_path):
    checkpoint = ModelCheckpoint(tmp_path / "w{epoch}.pt", monitor="val_top5_acc", restore_best=True)
    with pytest.raises(MonitorError, match=r"ModelCheckpoint\(monitor=...\): received 'val_top5_acc'"):
        run_epochs(checkpoint, [0.5])


def test_model_checkpoint_restore_best_without_any_save_warns(tmp_path):
    checkpoint = ModelCheckpoint(tmp_path / "w.pt", save_best_only=True, restore_best=True)
    checkpoint.set_trainer(fake_trainer())
    with pytest.warns(UserWarning, match=r"ModelCheckpoint\(restore_best=True\): no file was saved"):
        checkpoint.on_train_end({})


@pytest.mark.parametrize("saver", [OptimizerCheckpoint, EpochWriter])
def test_periodic_save_restore_best_needs_a_callback_that_can_restore(tmp_path, saver):
    with pytest.raises(ConfigurationError, match=rf"{saver.__name__} cannot read a saved file back"):
        saver(tmp_path / "w{epoch}.txt", save_best_only=True, restore_best=True)


def test_model_checkpoint_restore_loads_weights_from_an_open_file(tmp_path):
    trainer = fake_trainer()
    checkpoint = run_epochs(ModelCheckpoint(tmp_path / "w.pt"), [0.5], trainer=trainer)
    saved = {k: v.clone() for k, v in trainer.network.state_dict().items()}
    with torch.no_grad():
        trainer.network.weight.add_(1.0)
    with open(tmp_path / "w.pt", checkpoint.read_mode) as fd:  # "rb": Poutyne's restore(fd)
        checkpoint.restore(fd)
    assert same_weights(trainer.network.state_dict(), saved)


def test_optimizer_checkpoint_writes_optimizer_state(tmp_path):
    trainer = fake_trainer()
    trainer.network(torch.ones(4, 3)).sum().backward()
    trainer.optimizer.step()
    run_epochs(OptimizerCheckpoint(tmp_path / "opt.pt"), [0.5], trainer=trainer)
    saved = torch.load(tmp_path / "opt.pt", weights_only=True)
    assert saved["param_groups"] == trainer.optimizer.state_dict()["param_groups"]
    assert torch.equal(
        saved["state"][0]["momentum_buffer"],
        trainer.optimizer.state[trainer.network.weight]["momentum_buffer"],
    )


def test_periodic_save_lambda_calls_func_with_file_epoch_and_logs(tmp_path):
    calls = []

    def write(fd: IO[Any], epoch: int, logs: dict[str, Any]) -> None:
        calls.append((epoch, logs["val_loss"]))
        fd.write(f"{epoch}\t{logs['val_loss']}\n")

    run_epochs(PeriodicSaveLambda(write, tmp_path / "note.txt", open_mode="w"), [0.5, 0.25])
    assert calls == [(1, 0.5), (2, 0.25)]
    assert (tmp_path / "note.txt").read_text() == "2\t0.25\n"


def test_periodic_save_lambda_needs_callable(tmp_path):
    with pytest.raises(ConfigurationError, match="func: received str"):
        PeriodicSaveLambda("write", tmp_path / "note.txt")


def write_epoch(fd: IO[Any], epoch: int, logs: dict[str, Any]) -> None:
    fd.write(f"epoch {epoch}")


def test_periodic_save_lambda_restore_best_reads_the_best_file_back_at_train_end(tmp_path):
    restored: list[str] = []
    saver = PeriodicSaveLambda(
        write_epoch,
        tmp_path / "w{epoch}.txt",
        open_mode="w",
        save_best_only=True,
        restore_best=True,
        restore=lambda fd: restored.append(fd.read()),
    )
    assert saver.read_mode == "r"  # text, as written
    run_epochs(saver, [0.5, 0.3, 0.4])
    assert restored == ["epoch 2"]
    assert saver.restores_weights_at_end is True  # a run already over restores it again


def test_periodic_save_lambda_restore_best_every_period_restores_the_best_saved_file(tmp_path):
    restored: list[bytes] = []
    saver = PeriodicSaveLambda(
        lambda fd, epoch, logs: fd.write(bytes([epoch])),
        tmp_path / "w{epoch}.bin",
        restore_best=True,
        restore=lambda fd: restored.append(fd.read()),
    )
    run_epochs(saver, [0.5, 0.3, 0.4])
    assert restored == [bytes([2])]  # opened in "rb", as written in "wb"


def test_periodic_save_lambda_restore_is_called_with_the_file(tmp_path):
    seen: list[str] = []
    saver = PeriodicSaveLambda(
        write_epoch, tmp_path / "w.txt", open_mode="w", restore=lambda fd: seen.append(fd.read())
    )
    (tmp_path / "w.txt").write_text("epoch 7")
    with open(tmp_path / "w.txt") as fd:
        saver.restore(fd)
    assert seen == ["epoch 7"]
    run_epochs(saver, [0.5])  # without restore_best, nothing is restored at the end
    assert seen == ["epoch 7"]


def test_periodic_save_lambda_restore_best_needs_a_restore_function(tmp_path):
    with pytest.raises(ConfigurationError, match="PeriodicSaveLambda cannot read a saved file back"):
        PeriodicSaveLambda(write_epoch, tmp_path / "w.txt", save_best_only=True, restore_best=True)
    with pytest.raises(ConfigurationError, match="restore: received str; expected None or a callable"):
        PeriodicSaveLambda(write_epoch, tmp_path / "w.txt", restore="load")
    saver = PeriodicSaveLambda(write_epoch, tmp_path / "w.txt")
    with pytest.raises(ConfigurationError, match=r"received restore=None.*Pass restore=lambda fd"):
        saver.restore(io.StringIO("epoch 1"))


def test_periodic_save_read_mode_must_be_a_read_mode(tmp_path):
    with pytest.raises(ConfigurationError, match=r"read_mode: received 'r\+'; expected a read mode"):
        ModelCheckpoint(tmp_path / "w.pt", read_mode="r+")


class CountingScheduler(Callback):
    """A stand-in for an LR scheduler callback: counts the hooks it receives."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.steps = 0

    def on_train_begin(self, logs: dict[str, Any]) -> None:
        self.calls.append("train_begin")

    def on_train_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
        self.calls.append("batch_end")

    def on_epoch_end(self, epoch_number: int, logs: dict[str, Any]) -> None:
        self.steps += 1
        self.calls.append("epoch_end")

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.steps = state_dict["steps"]


def test_lr_scheduler_checkpoint_forwards_hooks_and_saves_stepped_state(tmp_path):
    scheduler = CountingScheduler()
    saver = LRSchedulerCheckpoint(scheduler, tmp_path / "sched-{epoch}.pt")
    trainer = fake_trainer()
    saver.set_trainer(trainer)
    assert scheduler.trainer is trainer
    saver.on_train_begin({})
    saver.on_train_batch_end(1, {"loss": 1.0})
    saver.on_epoch_end(1, {"epoch": 1, "val_loss": 0.5})
    assert scheduler.calls == ["train_begin", "batch_end", "epoch_end"]
    assert torch.load(tmp_path / "sched-1.pt", weights_only=True) == {"steps": 1}
    restored_scheduler = CountingScheduler()
    restored = LRSchedulerCheckpoint(restored_scheduler, tmp_path / "sched-{epoch}.pt")
    restored.load_state_dict(saver.state_dict())
    assert restored_scheduler.steps == 1


def test_lr_scheduler_checkpoint_needs_state_dict(tmp_path):
    with pytest.raises(ConfigurationError, match="has no state_dict"):
        LRSchedulerCheckpoint(object(), tmp_path / "sched.pt")


# ------------------------------------------------------------------------ resume with real training


def savers(run_dir: Path) -> list[Any]:
    files = run_dir / "saved"
    return [
        ModelCheckpoint(
            files / "best-{epoch:02d}-{val_loss:.4f}.pt",
            save_best_only=True,
            keep_only_last_best=True,
            restore_best=True,
        ),
        ModelCheckpoint(files / "every-{epoch:02d}.pt"),
        OptimizerCheckpoint(files / "optimizer-{epoch}.pt", period=2),
        PeriodicSaveLambda(
            lambda fd, epoch, logs: fd.write(f"{epoch} {logs['loss']!r}\n"), files / "loss.txt", open_mode="w"
        ),
        LRSchedulerCheckpoint(StepLR(step_size=2, gamma=0.5), files / "scheduler-{epoch}.pt"),
    ]


def saved_files(run_dir: Path) -> dict[str, Any]:
    found = {}
    for path in sorted((run_dir / "saved").iterdir()):
        found[path.name] = path.read_text() if path.suffix == ".txt" else torch.load(path, weights_only=True)
    return found


def assert_same_saved_files(expected: dict[str, Any], actual: dict[str, Any]) -> None:
    assert list(expected) == list(actual)
    for name, value in expected.items():
        if isinstance(value, str) or name.startswith("scheduler"):
            assert value == actual[name], name
        elif "optimizer" in name:
            assert value["param_groups"] == actual[name]["param_groups"], name
            for index, buffers in value["state"].items():
                assert torch.equal(
                    buffers["momentum_buffer"], actual[name]["state"][index]["momentum_buffer"]
                )
        else:
            assert value.keys() == actual[name].keys(), name
            assert all(torch.equal(value[k], actual[name][k]) for k in value), name


def test_periodic_save_resume_matches_uninterrupted(run_dirs):
    straight, resumed = run_dirs
    expected = train_run(straight, epochs=5, callbacks=lambda: savers(straight), checkpoint_every=4)
    for step in (3, 10):
        train_run(resumed, epochs=5, interrupt_at=step, callbacks=lambda: savers(resumed), checkpoint_every=4)
    for crash_epoch in (3, 4):  # files written, epoch not committed
        train_run(
            resumed,
            epochs=5,
            callbacks=lambda e=crash_epoch: [*savers(resumed), CrashAtEpochEnd(e)],
            checkpoint_every=4,
        )
    actual = train_run(resumed, epochs=5, callbacks=lambda: savers(resumed), checkpoint_every=4)
    assert_same_training_state(expected, actual)
    expected_files, actual_files = saved_files(straight), saved_files(resumed)
    assert len([n for n in expected_files if n.startswith("best-")]) == 1
    assert len([n for n in expected_files if n.startswith("every-")]) == 5
    assert expected_files["scheduler-5.pt"]["last_epoch"] == 5
    assert expected.logs["lr"].tolist() == [0.1, 0.1, 0.05, 0.05, 0.025]
    assert_same_saved_files(expected_files, actual_files)


class ScriptedScore(Callback):
    """Logs ``score`` at each epoch end from a script, so that the best epoch (2) is not the last."""

    adds_epoch_logs = True
    SCORES = {1: 0.5, 2: 0.2, 3: 0.4, 4: 0.3, 5: 0.6}

    def on_epoch_end(self, epoch_number: int, logs: dict[str, Any]) -> None:
        logs["score"] = self.SCORES[epoch_number]


def every_epoch_restoring_best(run_dir: Path) -> list[Any]:
    path = run_dir / "saved" / "every-{epoch:02d}.pt"
    return [ScriptedScore(), ModelCheckpoint(path, monitor="score", mode="min", restore_best=True)]


def test_model_checkpoint_restore_best_every_epoch_resumes_to_the_same_best_weights(run_dirs):
    straight, resumed = run_dirs
    expected = train_run(straight, epochs=5, callbacks=lambda: every_epoch_restoring_best(straight))
    for step in (3, 10):
        train_run(resumed, epochs=5, interrupt_at=step, callbacks=lambda: every_epoch_restoring_best(resumed))
    train_run(  # epoch 3's file written, the epoch not committed
        resumed, epochs=5, callbacks=lambda: [*every_epoch_restoring_best(resumed), CrashAtEpochEnd(3)]
    )
    actual = train_run(resumed, epochs=5, callbacks=lambda: every_epoch_restoring_best(resumed))
    assert_same_training_state(expected, actual)
    assert_same_saved_files(saved_files(straight), saved_files(resumed))
    best = torch.load(straight / "saved" / "every-02.pt", weights_only=True)
    last = torch.load(straight / "saved" / "every-05.pt", weights_only=True)
    assert same_weights(expected.network.state_dict(), best)
    assert not same_weights(best, last)
    again = train_run(resumed, epochs=5, callbacks=lambda: every_epoch_restoring_best(resumed))
    assert same_weights(again.network.state_dict(), best)  # a run already over ends as it ended


# ------------------------------------------------------------------------ the monitored best on resume
def test_model_checkpoint_state_holds_the_monitored_best(tmp_path):
    checkpoint = run_epochs(ModelCheckpoint(tmp_path / "w{epoch}.pt", save_best_only=True), [0.5, 0.3, 0.4])
    state = checkpoint.state_dict()
    assert state["best"] == {"monitor": "val_loss", "mode": "min", "epoch": 2, "value": 0.3}
    assert checkpoint.state_problems(state) == []


def test_model_checkpoint_resumed_with_the_same_monitor_keeps_its_best(tmp_path):
    saved = run_epochs(
        ModelCheckpoint(tmp_path / "w{epoch}.pt", save_best_only=True), [0.5, 0.3]
    ).state_dict()
    resumed = ModelCheckpoint(tmp_path / "w{epoch}.pt", save_best_only=True)
    resumed.load_state_dict(saved)
    assert (resumed.best_epoch, resumed.best_value) == (2, 0.3)
    resumed.set_trainer(fake_trainer())
    resumed.on_epoch_end(3, {"epoch": 3, "val_loss": 0.4})
    assert resumed.best_epoch == 2 and not (tmp_path / "w3.pt").exists()


def test_model_checkpoint_resumed_with_another_monitor_warns_and_starts_a_fresh_best(tmp_path):
    saved = run_epochs(
        ModelCheckpoint(tmp_path / "w{epoch}.pt", save_best_only=True), [0.5, 0.3]
    ).state_dict()
    resumed = ModelCheckpoint(tmp_path / "a{epoch}.pt", monitor="val_acc", mode="max", save_best_only=True)
    with pytest.warns(UserWarning, match=r"ModelCheckpoint: .*watched 'val_loss' \(min\).*'val_acc' \(max\)"):
        resumed.load_state_dict(saved)
    assert (resumed.best_epoch, resumed.best_value) == (None, None)
    resumed.set_trainer(fake_trainer())
    resumed.on_epoch_end(3, {"epoch": 3, "val_acc": 0.1})  # a low accuracy, never compared with 0.3
    assert resumed.best_epoch == 3 and (tmp_path / "a3.pt").exists()


def test_periodic_save_state_problems_reports_a_state_without_its_best(tmp_path):
    saver = EpochWriter(tmp_path / "w.txt")
    (problem,) = saver.state_problems({"best_filename": None})
    assert "EpochWriter: the saved state lacks ['best', 'pending_removal']" in problem


def test_periodic_save_loads_a_migrated_format_1_state_for_the_monitor_of_today(tmp_path):
    old = {"best_value": 0.3, "best_epoch": 2, "best_filename": "w2.pt", "pending_removal": None}
    checkpoint = ModelCheckpoint(tmp_path / "w{epoch}.pt", save_best_only=True)
    state = migrated_state(checkpoint, old)
    assert checkpoint.state_problems(state) == []
    checkpoint.load_state_dict(state)
    assert (checkpoint.best_epoch, checkpoint.best_value, checkpoint.best_filename) == (2, 0.3, "w2.pt")
    assert (checkpoint.monitor, checkpoint.mode) == ("val_loss", "min")


def test_periodic_save_refuses_a_format_1_state_that_was_not_migrated(tmp_path):
    old = {"best_value": 0.3, "best_epoch": 2, "best_filename": "w2.pt", "pending_removal": None}
    checkpoint = ModelCheckpoint(tmp_path / "w{epoch}.pt", save_best_only=True)
    with pytest.raises(StateMismatchError, match=r"ModelCheckpoint: the saved state lacks \['best'\]"):
        checkpoint.load_state_dict(old)
    assert checkpoint.best_filename is None


def test_lr_scheduler_checkpoint_state_problems_include_the_scheduler_ones(tmp_path):
    saver = LRSchedulerCheckpoint(StepLR(step_size=1), tmp_path / "sched.pt")
    state = {**saver.state_dict(), "lr_scheduler": {"unrelated": 1}}
    (problem,) = saver.state_problems(state)
    assert "StepLR: the saved state holds ['unrelated']" in problem
    with pytest.raises(StateMismatchError, match="not the state of a torch LR scheduler"):
        saver.load_state_dict(state)


def test_lr_scheduler_checkpoint_needs_batch_values_of_its_scheduler_only(tmp_path):
    assert LRSchedulerCheckpoint(CountingScheduler(), tmp_path / "s.pt").needs_batch_values is True
    assert LRSchedulerCheckpoint(StepLR(step_size=1), tmp_path / "s.pt").needs_batch_values is False
