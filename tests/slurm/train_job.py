"""The training script of the SLURM tests, as a batch script runs it (``exec python train_job.py``,
``srun python train_job.py`` or ``torchrun ... train_job.py``):

    python tests/slurm/train_job.py RUN_DIR [--pause-at K1,K2,... --pause-dir DIR] [--epochs N]

It trains the network of tests/distributed/workload.py (BatchNorm, Dropout, AdamW, a StepLR) on a
shuffling DataLoader of 96 samples, in batches of 8 per rank, with a step checkpoint every 4 steps.
Nothing in it knows SLURM: the library does.

``--pause-at``: when rank 0 finishes one of these global steps, it writes DIR/ready-K (holding the
job's restart count) and waits until a stop signal has reached this process (the
test sends it once it sees the file; ``--pause-timeout`` seconds at most), so that each signal
lands at a known step. Every rank writes
DIR/exit-<restart>-<rank> as it leaves: the exit code and the last step it finished.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch

from experiment import Callback
from tests.distributed.workload import make_data_as, make_experiment

SAMPLES, BATCH_SIZE, EPOCHS = 96, 8, 3


class PauseForSignal(Callback):
    """At each step of ``steps``, tells the test and waits until a stop signal has been received."""

    needs_batch_values = False

    def __init__(self, steps: set[int], pause_dir: Path | None, restart: str, timeout: float) -> None:
        super().__init__()
        self.steps, self.pause_dir, self.restart, self.timeout = steps, pause_dir, restart, timeout
        self.global_step = 0

    def on_train_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
        self.global_step = self.trainer.global_step
        if self.pause_dir is None or self.global_step not in self.steps:
            return
        (self.pause_dir / f"ready-{self.global_step}").write_text(self.restart)
        handler = signal.getsignal(signal.SIGTERM)  # the library's; its flag is set by any stop signal
        deadline = time.monotonic() + self.timeout
        while handler.flag.signum is None and time.monotonic() < deadline:  # type: ignore[union-attr]
            time.sleep(0.005)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--pause-at", default="")
    parser.add_argument("--pause-dir", type=Path, default=None)
    parser.add_argument("--pause-timeout", type=float, default=60.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rank = int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))
    restart = os.environ.get("SLURM_RESTART_COUNT", "0")
    steps = {int(step) for step in args.pause_at.split(",") if step}
    pause = PauseForSignal(steps if rank == 0 else set(), args.pause_dir, restart, args.pause_timeout)
    code: Any = 0
    try:
        exp = make_experiment(args.run_dir)
        data = make_data_as("loader", samples=SAMPLES, valid_samples=40, batch_size=BATCH_SIZE)
        scheduler = torch.optim.lr_scheduler.StepLR(exp.optimizer, step_size=1, gamma=0.7)
        exp.train(
            data.train,
            data.valid,
            epochs=args.epochs,
            checkpoint_every=4,
            lr_schedulers=[scheduler],
            callbacks=[pause],
            seed=7,
            progress=False,
        )
    except SystemExit as exit:
        code = exit.code
        raise
    except BaseException as error:
        code = f"{type(error).__name__}: {error}"
        raise
    finally:
        if args.pause_dir is not None:
            report = {"exit_code": code, "global_step": pause.global_step}
            (args.pause_dir / f"exit-{restart}-{rank}").write_text(json.dumps(report))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
