"""The Callback hooks: each documented where it is declared, and called with the logs it documents."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from experiment.callbacks.base import HOOKS, Callback
from tests.support.training import make_data, train_run


@pytest.mark.parametrize("hook", HOOKS)
def test_callback_hook_docstring_says_when_it_is_called_and_what_logs_holds(hook):
    method = getattr(Callback, hook)
    doc = inspect.getdoc(method)
    assert doc is not None and doc.startswith("Called "), hook
    if "logs" in inspect.signature(method).parameters:
        assert "``logs``" in doc, hook


class KeyRecorder(Callback):
    """Records, for every hook, its arguments other than logs and the keys of its logs, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, tuple[Any, ...], list[str] | None]] = []

    def _record(self, hook: str, *args: Any) -> None:
        *numbers, logs = args if hook != "on_backward_end" else (*args, None)
        self.calls.append((hook, tuple(numbers), None if logs is None else list(logs)))


def _record_every_hook(hook: str) -> Any:
    return lambda self, *args: self._record(hook, *args)


for _hook in HOOKS:
    setattr(KeyRecorder, _hook, _record_every_hook(_hook))


def _keys(recorder: KeyRecorder, hook: str) -> list[list[str] | None]:
    return [keys for name, _, keys in recorder.calls if name == hook]


def test_callback_hooks_receive_the_logs_their_docstrings_name(tmp_path):
    recorder = KeyRecorder()
    exp = train_run(tmp_path / "run", epochs=1, callbacks=lambda: [recorder])  # 6 batches of 16, 48 valid
    metrics = ["acc"]
    assert _keys(recorder, "on_train_begin") == _keys(recorder, "on_train_end") == [[]]
    assert [args for name, args, _ in recorder.calls if name == "on_epoch_begin"] == [(1,)]
    assert _keys(recorder, "on_train_batch_begin") == [[]] * 6
    assert _keys(recorder, "on_train_batch_end") == [["batch", "size", "time", "loss", *metrics]] * 6
    assert [args for name, args, _ in recorder.calls if name == "on_backward_end"] == [
        (n,) for n in range(1, 7)
    ]
    assert _keys(recorder, "on_valid_begin") == [[]]
    valid_batch = ["batch", "size", "time", "val_loss", "val_acc"]
    assert _keys(recorder, "on_valid_batch_end") == [valid_batch] * 2
    assert _keys(recorder, "on_valid_end") == [["time", "val_loss", "val_acc", "val_f1"]]
    (epoch_keys,) = _keys(recorder, "on_epoch_end")
    assert epoch_keys == ["epoch", "time", "lr", "loss", "acc", "f1", "val_loss", "val_acc", "val_f1"]
    order = [name for name, _, _ in recorder.calls]
    assert order.index("on_valid_end") < order.index("on_epoch_end") < order.index("on_train_end")

    tester = KeyRecorder()
    exp.test(make_data(40, seed=3), callbacks=[tester], progress=False)
    assert _keys(tester, "on_test_begin") == [[]]
    assert _keys(tester, "on_test_batch_end") == [["batch", "size", "time", "test_loss", "test_acc"]] * 2
    assert _keys(tester, "on_test_end") == [["time", "test_loss", "test_acc", "test_f1"]]
