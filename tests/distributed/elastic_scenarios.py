"""Phases of elastic runs under torchrun, several in one launch.

    torchrun --standalone --nproc-per-node=N tests/distributed/elastic_scenarios.py WORKDIR \
        NAME:SAMPLES:BATCH_SIZE:EPOCHS:STOP[:exact=GROUPS][:acc=N][:loader=1][:spe=STEPS][:fsdp=1]
        [:pause=K[:pausing=R]][:raise=1] ...

Each phase trains (or resumes) WORKDIR/NAME on the N ranks of the launch until optimizer step STOP
(0: to the end), with ``elastic="exact"`` and GROUPS groups, N batches per optimizer step, the data
as a DataLoader, STEPS steps per epoch, strategy="fsdp" when the spec says so, and writes, per rank, WORKDIR/records/NAME-wN-rankR.json (see
:func:`tests.distributed.elastic_workload.run_phase`). An unexpected error on a rank is written to
WORKDIR/errors/rank-R.txt; a library error met by a phase is recorded in its file, or with
``raise=1`` ends the script as it would a user's. With ``pause=K``, rank R (by default 1; none if
the launch has no such rank) of torchrun's first attempt (not of the workers it restarts), once
step K is done, creates WORKDIR/signals/NAME/ready (holding its pid) and waits for the test there
(see :func:`tests.distributed.train_script.wait_for_go`). The world is read from torchrun's
variables, so that a launch of one process (no process group) runs the phases too.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

import torch.distributed as dist

from tests.distributed.elastic_workload import run_phase, write_phase
from tests.distributed.train_script import LastStep


def main() -> None:
    workdir = Path(sys.argv[1])
    world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
    try:
        for spec in sys.argv[2:]:
            name, samples, batch_size, epochs, stop, *extras = spec.split(":")
            options = {key: int(value) for key, value in (extra.split("=") for extra in extras)}
            pause = []
            if "pause" in options and first_attempt and rank == options.get("pausing", 1):
                (workdir / "signals" / name).mkdir(parents=True, exist_ok=True)
                pause.append(LastStep(options["pause"], workdir / "signals" / name))
            outcome = run_phase(
                workdir / name,
                samples=int(samples),
                batch_size=int(batch_size),
                epochs=int(epochs),
                stop_at=int(stop),
                elastic="exact" if "exact" in options else True,
                groups=options.get("exact"),
                accumulate=options.get("acc", 1),
                loader=bool(options.get("loader", 0)),
                steps_per_epoch=options.get("spe"),
                strategy="fsdp" if options.get("fsdp") else "auto",
                callbacks=pause,
                raise_errors=bool(options.get("raise", 0)),
            )
            write_phase(workdir / "records" / f"{name}-w{world}-rank{rank}.json", outcome)
            if dist.is_initialized():
                dist.barrier()
    except BaseException:
        errors = workdir / "errors"
        errors.mkdir(parents=True, exist_ok=True)
        (errors / f"rank-{rank}.txt").write_text(traceback.format_exc())
        raise


if __name__ == "__main__":
    main()
