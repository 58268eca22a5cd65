"""SIGTERM, SIGINT and SIGHUP during train(): commit at the current step, mark the run interrupted, exit.

The subprocess tests run a real training script; a callback in it waits at a given step (polling for
a file the test writes once it has sent the signal), so that the signal lands at a known step. Running
the script again must end bit-identical to a run that was never interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from experiment.store.checkpoints import load_newest_state
from experiment.store.directory import RunDirectory
from experiment.training.interrupts import InterruptFlag, interrupt_on_signals
from tests.support.state_checks import assert_same_run, state_files
from tests.support.training import SendSignal, train_run

SCRIPT = '''
"""Train a small classifier in RUN_DIR; with --pause-at, wait at that step for the test's signal."""
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from experiment import Callback, Experiment


class WaitForSignal(Callback):
    needs_batch_values = False

    def __init__(self, step, ready, sent):
        super().__init__()
        self.step, self.ready, self.sent = step, ready, sent

    def on_train_batch_end(self, batch_number, logs):
        if self.trainer.global_step == self.step:
            self.ready.write_text("ready")
            deadline = time.monotonic() + 60
            while not self.sent.exists() and time.monotonic() < deadline:
                time.sleep(0.005)


run_dir = Path(sys.argv[1])
callbacks = []
if len(sys.argv) > 2:
    callbacks.append(WaitForSignal(int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])))
generator = torch.Generator().manual_seed(1)
x = torch.randn(96, 6, generator=generator)
y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
torch.manual_seed(0)
net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))
opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
exp = Experiment(run_dir, net, optimizer=opt, loss_function="cross_entropy", batch_metrics=["accuracy"])
loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)
exp.train(loader, (x[:48], y[:48]), epochs=3, checkpoint_every=2, callbacks=callbacks,
          lr_schedulers=[torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)])
'''

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # as the in-process tests run
PAUSE_STEP = 9  # epoch 2, batch 3; the step checkpoint of step 8 exists by then


def run_script(script: Path, run_dir: Path, *extra: str) -> subprocess.Popen[bytes]:
    """Start the script; its output goes to RUN_DIR.out, next to the run directory."""
    with open(run_dir.parent / f"{run_dir.name}.out", "ab") as output:
        return subprocess.Popen(
            [sys.executable, str(script), str(run_dir), *extra],
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, **ONE_THREAD},
        )


def wait_for(path: Path, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"the training process exited with {process.returncode} early"
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout} s"
        time.sleep(0.01)


@pytest.fixture(scope="module")
def script_and_reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The training script and a run of it that was never interrupted."""
    folder = tmp_path_factory.mktemp("signals")
    script = folder / "train_script.py"
    script.write_text(SCRIPT)
    reference = folder / "reference"
    process = run_script(script, reference)
    assert process.wait(timeout=120) == 0, (folder / "reference.out").read_text()
    return script, reference


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "exit_code"),
    [
        pytest.param(signal.SIGTERM, 143, id="SIGTERM"),
        pytest.param(signal.SIGINT, 130, id="SIGINT"),
        pytest.param(signal.SIGHUP, 129, id="SIGHUP"),
    ],
)
def test_signals_subprocess_commits_exits_and_resumes_identical(
    tmp_path, script_and_reference, signum, exit_code
):
    script, reference = script_and_reference
    run_dir, ready, sent = tmp_path / "run", tmp_path / "ready", tmp_path / "sent"
    process = run_script(script, run_dir, str(PAUSE_STEP), str(ready), str(sent))
    wait_for(ready, process)
    assert state_files(run_dir), "a step checkpoint exists before the signal"
    process.send_signal(signum)
    sent.write_text("sent")
    assert process.wait(timeout=60) == exit_code, (tmp_path / "run.out").read_text()

    metadata = json.loads((run_dir / "experiment.json").read_text())
    assert metadata["status"] == "interrupted"
    assert metadata["message"] == f"{signal.Signals(signum).name} at epoch 2, step 3"
    tree, _ = load_newest_state(RunDirectory(run_dir))
    assert (tree["reason"], tree["nodes"]["progress"]["global_step"]) == ("interrupt", PAUSE_STEP)
    assert not RunDirectory(run_dir).is_locked()

    rerun = run_script(script, run_dir)
    assert rerun.wait(timeout=120) == 0, (tmp_path / "run.out").read_text()
    assert json.loads((run_dir / "experiment.json").read_text())["status"] == "finished"
    assert_same_run(reference, run_dir)


# ----------------------------------------------------------------------------------- in process
@pytest.mark.parametrize(("checkpoint_every", "async_checkpoint"), [(None, False), (4, False), (4, True)])
def test_signals_sigterm_in_process_exits_143_and_resumes_identical(
    run_dirs, checkpoint_every, async_checkpoint
):
    before = signal.getsignal(signal.SIGTERM)  # whatever the test runner inherited
    straight, resumed = run_dirs
    options = {"checkpoint_every": checkpoint_every, "async_checkpoint": async_checkpoint}
    train_run(straight, **options)
    with pytest.raises(SystemExit) as exited:
        train_run(resumed, callbacks=lambda: [SendSignal(9, signal.SIGTERM)], **options)
    assert exited.value.code == 143
    assert json.loads((resumed / "experiment.json").read_text())["status"] == "interrupted"
    assert load_newest_state(RunDirectory(resumed))[0]["nodes"]["progress"]["global_step"] == 9
    assert RunDirectory(resumed).temporary_files() == []  # the interrupt's write ended before the exit
    assert signal.getsignal(signal.SIGTERM) is before
    train_run(resumed, **options)
    assert_same_run(straight, resumed)


@pytest.fixture
def sighup_caught() -> Any:
    """A SIGHUP handler of the test's own around the test: without the library's handler, a SIGHUP
    would end the test runner. Yields the signals it received."""
    received: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        received.append(signum)

    previous = signal.signal(signal.SIGHUP, handler)
    yield received
    signal.signal(signal.SIGHUP, previous)


def test_signals_sighup_in_process_exits_129_and_resumes_identical(run_dirs, sighup_caught):
    """A closed terminal or ssh session (SIGHUP) commits and exits as SIGTERM does."""
    before = signal.getsignal(signal.SIGHUP)
    straight, resumed = run_dirs
    train_run(straight, checkpoint_every=4)
    with pytest.raises(SystemExit) as exited:
        train_run(resumed, checkpoint_every=4, callbacks=lambda: [SendSignal(9, signal.SIGHUP)])
    assert exited.value.code == 129
    assert sighup_caught == []  # the training's handler took it
    metadata = json.loads((resumed / "experiment.json").read_text())
    assert (metadata["status"], metadata["message"]) == ("interrupted", "SIGHUP at epoch 2, step 3")
    assert load_newest_state(RunDirectory(resumed))[0]["nodes"]["progress"]["global_step"] == 9
    assert signal.getsignal(signal.SIGHUP) is before
    train_run(resumed, checkpoint_every=4)
    assert_same_run(straight, resumed)


def test_signals_second_sigint_in_training_stops_at_once(run_dirs):
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN in a background job
    straight, resumed = run_dirs
    train_run(straight, checkpoint_every=4)
    with pytest.raises(KeyboardInterrupt):
        train_run(resumed, checkpoint_every=4, callbacks=lambda: [SendSignal(10, signal.SIGINT, times=2)])
    assert signal.getsignal(signal.SIGINT) is before
    tree, _ = load_newest_state(RunDirectory(resumed))
    assert tree["nodes"]["progress"]["global_step"] == 8  # no commit after the second Ctrl-C
    train_run(resumed, checkpoint_every=4)
    assert_same_run(straight, resumed)


def test_signals_second_sigint_raises_keyboard_interrupt_from_the_handler():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    flag = InterruptFlag()
    with interrupt_on_signals(flag):
        handler = signal.getsignal(signal.SIGINT)
        assert signal.getsignal(signal.SIGTERM) is handler
        handler(signal.SIGINT, None)
        assert flag.signum == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            handler(signal.SIGINT, None)
        assert signal.getsignal(signal.SIGINT) is before[0]  # restored at once
    assert signal.getsignal(signal.SIGTERM) is before[1]


def test_signals_sighup_shares_the_handler_that_exposes_its_flag():
    before = signal.getsignal(signal.SIGHUP)
    flag = InterruptFlag()
    with interrupt_on_signals(flag):
        handler = signal.getsignal(signal.SIGHUP)
        assert handler is signal.getsignal(signal.SIGINT) and handler.flag is flag
        handler(signal.SIGHUP, None)
        assert flag.signum == signal.SIGHUP
    assert signal.getsignal(signal.SIGHUP) is before
