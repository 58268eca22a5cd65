"""The torchrun helper of tests/support/torchrun.py: it finds the workers by rank and reads their fate."""

from __future__ import annotations

import re
import signal

import pytest

from tests.support.torchrun import Launch, Torchrun

#: A plain torch.distributed script: each worker prints its rank and pid, then waits to be killed.
WAITING_SCRIPT = """
import os, time
import torch.distributed as dist
dist.init_process_group("gloo")
print(f"rank {dist.get_rank()} pid {os.getpid()}", flush=True)
dist.barrier()
time.sleep(60)
"""

FAILURE_SUMMARY = """
Failures:
[1]:
  time      : 2026-11-30_06:50:27
  host      : localhost
  rank      : 0 (local_rank: 0)
  exitcode  : -15 (pid: 14853)
  error_file: <N/A>
  traceback : Signal 15 (SIGTERM) received by PID 14853
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-11-30_06:50:27
  host      : localhost
  rank      : 1 (local_rank: 1)
  exitcode  : 143 (pid: 14854)
"""


def test_launch_failed_workers_reads_torchrun_failure_summary():
    launch = Launch(returncode=1, stdout="", stderr=FAILURE_SUMMARY, seconds=1.0)
    assert launch.failed_workers() == {0: -15, 1: 143}
    assert Launch(returncode=0, stdout="", stderr="", seconds=1.0).failed_workers() == {}


@pytest.mark.slow
def test_torchrun_finds_workers_by_rank_and_reports_a_killed_one(tmp_path):
    script = tmp_path / "waiting.py"
    script.write_text(WAITING_SCRIPT)
    with Torchrun(script, nproc=2) as launch:
        printed: dict[int, int] = {}

        def both_printed() -> bool:
            lines = re.findall(r"rank (\d+) pid (\d+)", launch.result().stdout)
            printed.update((int(rank), int(pid)) for rank, pid in lines)
            return len(printed) == 2

        launch.wait_until(both_printed, 60, "both workers to print their pid")
        assert launch.wait_for_workers() == printed
        launch.signal_worker(1, signal.SIGKILL)
        ended = launch.wait(60)
    assert ended.returncode != 0 and not ended.timed_out, ended.describe()
    assert ended.failed_workers()[1] == -signal.SIGKILL, ended.describe()
