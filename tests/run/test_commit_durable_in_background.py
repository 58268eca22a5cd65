"""A synchronous commit serializes the state in the training thread and leaves the waits for the disk
(fsync, rename, fsync of the folder) to the writer thread: training goes on meanwhile, the commit is
durable before the next one and before ``train()`` returns, and a kill before the rename leaves the
previous commit (tested with real processes in tests/run/test_kill.py and by
scripts/kill_stress.py).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from experiment import Callback
from experiment.store.files import StagedFile
from tests.support.state_checks import assert_same_run
from tests.support.training import train_run

#: Guard against a hang if the test goes wrong; never reached when it goes as planned.
HOLD_LIMIT_S = 120.0


class HeldPublish:
    """Holds the writer thread's publication of ``state-000001.pt`` until :meth:`release`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reached = threading.Event()
        self.released = threading.Event()
        real_publish = StagedFile.publish

        def held_publish(staged: StagedFile, **options: Any) -> None:
            if staged.path.name == "state-000001.pt":
                self.reached.set()
                if not self.released.wait(HOLD_LIMIT_S):
                    raise AssertionError("the publication of state-000001.pt was never released")
            real_publish(staged, **options)

        monkeypatch.setattr(StagedFile, "publish", held_publish)


class LookAtEpochBegin(Callback):
    """At the beginning of epoch 2, with epoch 1's publication held: list the checkpoints, then
    release it."""

    def __init__(self, run_dir: Path, held: HeldPublish) -> None:
        super().__init__()
        self.run_dir, self.held = run_dir, held
        self.seen: list[str] = []

    def on_epoch_begin(self, epoch_number: int, logs: dict[str, Any]) -> None:
        if epoch_number != 2:
            return
        try:
            assert self.held.reached.wait(HOLD_LIMIT_S)
            self.seen = sorted(path.name for path in (self.run_dir / "checkpoints").iterdir())
        finally:
            self.held.released.set()


def test_training_goes_on_while_the_commit_is_made_durable_and_ends_as_an_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    straight, run_dir = tmp_path / "straight", tmp_path / "run"
    train_run(straight, epochs=3)
    held = HeldPublish(monkeypatch)
    look = LookAtEpochBegin(run_dir, held)
    train_run(run_dir, epochs=3, callbacks=lambda: [look])

    # Epoch 2 trained while epoch 1's state, written in full, waited for its rename.
    assert (
        len(look.seen) == 1 and look.seen[0].startswith(".state-000001.pt.") and look.seen[0].endswith(".tmp")
    )
    # Every commit became durable in turn: the run ends as one that never waited.
    names = sorted(
        path.name for path in (run_dir / "checkpoints").iterdir() if path.name.startswith("state-")
    )
    assert names == ["state-000002.pt", "state-000003.pt"]
    assert not [path for path in (run_dir / "checkpoints").iterdir() if path.name.endswith(".tmp")]
    assert_same_run(straight, run_dir)
