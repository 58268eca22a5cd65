"""SIGKILL a real training process between an improving epoch's state commit and its best weights.

A synchronous commit writes the best weights of a new best epoch after the state, from the writer
thread. The child is told to hold that write (it prints BEST HELD and blocks, see
tests/support/kill_child.py), so the kill lands in the window every time: the newest state is that
epoch's end and its best file is missing. Resuming writes the file from the state, and the run ends
bit for bit as an uninterrupted one, best weights included (the held epoch is the run's best, so
its file is kept to the end and compared).
"""

from __future__ import annotations

import dataclasses

import pytest

from experiment.store.checkpoints import load_newest_state, saved_weights
from experiment.store.directory import RunDirectory
from tests.support import kill
from tests.support.kill_child import Child
from tests.support.run_comparison import run_differences, tree_differences

pytestmark = pytest.mark.slow

#: Each configuration with the epoch whose best weights are held: the run's best epoch (in the
#: uninterrupted run, epoch 4 of the first improves and 5 does not; epoch 3 of the second improves
#: and 4 and 5 do not).
CONFIGS = [
    kill.Config(epochs=5, checkpoint_every=4, hold_best_write=4),
    kill.Config(epochs=5, checkpoint_every=None, loader_generator=True, hold_best_write=3),
]


@pytest.mark.parametrize("config", CONFIGS, ids=["step-checkpoints", "epoch-checkpoints"])
def test_kill_before_best_weights_of_committed_epoch_resumes_bit_identical(tmp_path, config):
    script = kill.write_training_script(tmp_path)
    plain = dataclasses.replace(config, hold_best_write=None)
    reference, run_dir = tmp_path / "reference", tmp_path / "run"
    kill.run_uninterrupted(script, reference, plain)
    held = config.hold_best_write
    best_name = f"best-epoch{held:04d}.pt"
    assert (reference / "checkpoints" / best_name).is_file()  # the held epoch stays the best

    with Child(script, run_dir, config) as child:
        child.wait_ready()
        assert child.wait_best_held()
        child.kill()

    tree, _ = load_newest_state(RunDirectory(run_dir))
    progress = tree["nodes"]["progress"]
    assert (tree["reason"], progress["epochs_completed"], progress["steps_in_epoch"]) == ("epoch", held, 0)
    assert tree["nodes"]["best"]["epoch"] == held
    assert not (run_dir / "checkpoints" / best_name).exists()
    # Until a resume writes the file, test(checkpoint="best") reads the weights from the state.
    epoch, weights = saved_weights(RunDirectory(run_dir), "best")
    assert epoch == held and tree_differences(tree["nodes"]["model"], weights) == []

    with Child(script, run_dir, plain) as child:
        child.wait_ready()
        child.wait_exit()

    assert run_differences(reference, run_dir, config.epochs) == []
