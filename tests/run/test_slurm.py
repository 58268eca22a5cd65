"""Training in a SLURM job, in this process, without a cluster: the job read from the environment,
the warning signal, the job states that tell a cancellation from a time limit, and a stop whose
requeue fails (no scontrol, as inside some containers). tests/slurm runs real jobs."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from experiment.errors import ConfigurationError, NonFiniteStateError
from experiment.run.slurm import SlurmJob, after_stop, cancelled, duration, slurm_job, warning_signal
from experiment.store.checkpoints import load_newest_state
from experiment.store.directory import RunDirectory
from tests.support.state_checks import assert_same_run
from tests.support.training import SendSignal, train_run

JOB_ENVIRONMENT = {"SLURM_JOB_ID": "41", "SLURM_JOB_PARTITION": "debug", "SLURM_RESTART_COUNT": "2"}


@pytest.fixture
def in_job(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """This process in SLURM job 41 (restarted twice), where scontrol cannot be found; the signal
    handlers of the test runner are put back after the test (a stopped job leaves them ignored)."""
    for name, value in JOB_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    empty = tmp_path / "no-scontrol"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
    before = {signum: signal.getsignal(signum) for signum in handled}
    yield
    for signum, handler in before.items():
        signal.signal(signum, handler)


def committed_step(run_dir: Path) -> int:
    """The global step of the run's newest checkpoint."""
    newest = load_newest_state(RunDirectory(run_dir))
    assert newest is not None, f"no checkpoint in {run_dir}"
    return int(newest[0]["nodes"]["progress"]["global_step"])


def test_slurm_job_reads_the_job_array_element_restarts_and_partition() -> None:
    environ = {**JOB_ENVIRONMENT, "SLURM_ARRAY_JOB_ID": "40", "SLURM_ARRAY_TASK_ID": "3"}
    job = slurm_job(environ)
    assert job == SlurmJob("41", array_job_id="40", array_task_id="3", restart_count=2, partition="debug")
    assert job.requeue_id == "40_3"
    assert job.recorded() == {"job_id": "41", "array": "40_3", "restart_count": 2, "partition": "debug"}


def test_slurm_job_is_none_outside_slurm_and_counts_no_restart_on_a_first_run() -> None:
    assert slurm_job({}) is None
    job = slurm_job({"SLURM_JOB_ID": "7"})
    assert job is not None and (job.requeue_id, job.restart_count) == ("7", 0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", signal.SIGUSR1), ("USR2", signal.SIGUSR2), ("sigusr2", signal.SIGUSR2), ("1", signal.SIGHUP)],
)
def test_warning_signal_is_usr1_or_the_one_named(value: str, expected: signal.Signals) -> None:
    assert warning_signal({"EXPERIMENT_SLURM_SIGNAL": value}) == expected


@pytest.mark.parametrize("value", ["USR3", "KILL", "CONT", "-1"])
def test_warning_signal_rejects_a_name_that_is_no_catchable_signal(value: str) -> None:
    with pytest.raises(ConfigurationError, match=f"Received: '{value}'; expected a signal name"):
        warning_signal({"EXPERIMENT_SLURM_SIGNAL": value})


# The fields of `scontrol show job` seen in the SIGTERM handler of real jobs (SLURM 22.05).
SCANCEL = {"JobState": "COMPLETING", "Reason": "None", "RunTime": "00:00:03", "TimeLimit": "365-00:00:00"}
TIME_LIMIT = {"JobState": "COMPLETING", "Reason": "TimeLimit", "RunTime": "00:01:26", "TimeLimit": "00:01:00"}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (SCANCEL, True),
        ({**SCANCEL, "TimeLimit": "UNLIMITED"}, True),  # no limit: the SIGTERM is a scancel
        ({"JobState": "CANCELLED"}, True),
        (TIME_LIMIT, False),
        ({**TIME_LIMIT, "Reason": "None"}, False),  # past the limit whatever the reason says
        ({"JobState": "TIMEOUT"}, False),
        ({"JobState": "RUNNING", "RunTime": "00:00:03", "TimeLimit": "01:00:00"}, False),
    ],
)
def test_cancelled_tells_a_cancellation_from_a_time_limit(fields: dict[str, str], expected: bool) -> None:
    assert cancelled(fields) is expected


def test_duration_reads_slurm_durations() -> None:
    assert [duration(text) for text in ("1-02:03:04", "02:03:04", "03:04", "UNLIMITED")] == [
        93784,
        7384,
        184,
        None,
    ]


def test_after_stop_says_why_when_scontrol_is_missing(in_job: None) -> None:
    outcome = after_stop(SlurmJob("41"), signal.SIGUSR1, signal.SIGUSR1)
    assert not outcome.requeued
    assert "`scontrol show job 41` failed: scontrol is not installed here" in outcome.message


def test_after_stop_never_requeues_on_sigint() -> None:
    outcome = after_stop(SlurmJob("41"), signal.SIGINT, signal.SIGUSR1)
    assert not outcome.requeued and "SIGINT does not requeue the job" in outcome.message


def test_slurm_warning_signal_commits_records_the_job_and_exits_143_when_requeue_fails(
    run_dirs: tuple[Path, Path], in_job: None
) -> None:
    straight, resumed = run_dirs
    train_run(straight, checkpoint_every=4)
    with pytest.raises(SystemExit) as exited:
        train_run(resumed, checkpoint_every=4, callbacks=lambda: [SendSignal(9, signal.SIGUSR1)])
    assert exited.value.code == 143
    metadata = json.loads((resumed / "experiment.json").read_text())
    assert metadata["status"] == "interrupted"
    assert metadata["message"].startswith("SIGUSR1 at epoch 2, step 3; not requeued: `scontrol show job 41`")
    assert metadata["slurm"] == {"job_id": "41", "array": None, "restart_count": 2, "partition": "debug"}
    assert committed_step(resumed) == 9
    train_run(resumed, checkpoint_every=4)
    assert_same_run(straight, resumed)


def test_slurm_second_sigterm_during_the_stop_is_ignored(run_dirs: tuple[Path, Path], in_job: None) -> None:
    """SLURM sends SIGTERM twice to srun tasks, and again after a requeue: the commit goes on."""
    straight, resumed = run_dirs
    train_run(straight, checkpoint_every=4)
    with pytest.raises(SystemExit) as exited:
        train_run(resumed, checkpoint_every=4, callbacks=lambda: [SendSignal(10, signal.SIGTERM, times=3)])
    assert exited.value.code == 143
    assert committed_step(resumed) == 10
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN  # until the process exits
    train_run(resumed, checkpoint_every=4)
    assert_same_run(straight, resumed)


class SignalWithNaN(SendSignal):
    """Also fills the network's first parameter with NaN at that step: the stop's commit is refused."""

    def on_train_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
        if self.trainer.global_step == self.step:
            with torch.no_grad():
                next(self.trainer.network.parameters()).fill_(float("nan"))
        super().on_train_batch_end(batch_number, logs)


def test_slurm_stop_whose_commit_fails_gives_the_script_its_signal_handlers_back(
    run_dirs: tuple[Path, Path], in_job: None
) -> None:
    """The process goes on after the error (a notebook, a script that catches it): SIGTERM and
    Ctrl-C must not stay ignored."""
    _, resumed = run_dirs
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    with pytest.raises(NonFiniteStateError, match="holds NaN or infinity at global step 9"):
        train_run(resumed, checkpoint_every=4, callbacks=lambda: [SignalWithNaN(9, signal.SIGTERM)])
    assert {signum: signal.getsignal(signum) for signum in handlers} == handlers


def test_slurm_warning_signal_is_configurable(
    run_dirs: tuple[Path, Path], in_job: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXPERIMENT_SLURM_SIGNAL", "USR2")
    _, resumed = run_dirs
    with pytest.raises(SystemExit) as exited:
        train_run(resumed, checkpoint_every=4, callbacks=lambda: [SendSignal(9, signal.SIGUSR2)])
    assert exited.value.code == 143
    assert json.loads((resumed / "experiment.json").read_text())["message"].startswith("SIGUSR2 at epoch 2")


def test_slurm_key_is_removed_by_a_call_outside_slurm(run_dirs: tuple[Path, Path], in_job: None) -> None:
    _, resumed = run_dirs
    with pytest.raises(SystemExit):
        train_run(resumed, checkpoint_every=4, callbacks=lambda: [SendSignal(9, signal.SIGUSR1)])
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("SLURM_JOB_ID")
        train_run(resumed, checkpoint_every=4)
    assert "slurm" not in json.loads((resumed / "experiment.json").read_text())
