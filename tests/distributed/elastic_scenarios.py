"""Phases of elastic runs under torchrun, several in one launch.

    torchrun --standalone --nproc-per-node=N tests/distributed/elastic_scenarios.py WORKDIR \
        NAME:SAMPLES:BATCH_SIZE:EPOCHS:STOP[:exact=GROUPS][:acc=N][:loader=1][:spe=STEPS][:fsdp=1] ...

Each phase trains (or resumes) WORKDIR/NAME on the N ranks of the launch until optimizer step STOP
(0: to the end), with ``elastic="exact"`` and GROUPS groups, N batches per optimizer step, the data
as a DataLoader, STEPS steps per epoch, strategy="fsdp" when the spec says so, and writes, per rank, WORKDIR/records/NAME-wN-rankR.json (see
:func:`tests.distributed.elastic_workload.run_phase`). An unexpected error on a rank is written to
WORKDIR/errors/rank-R.txt; a library error met by a phase is recorded in its file.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import torch.distributed as dist

from tests.distributed.elastic_workload import run_phase, write_phase


def main() -> None:
    workdir = Path(sys.argv[1])
    try:
        for spec in sys.argv[2:]:
            name, samples, batch_size, epochs, stop, *extras = spec.split(":")
            options = {key: int(value) for key, value in (extra.split("=") for extra in extras)}
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
            )
            world, rank = dist.get_world_size(), dist.get_rank()
            write_phase(workdir / "records" / f"{name}-w{world}-rank{rank}.json", outcome)
            dist.barrier()
    except BaseException:
        rank = dist.get_rank() if dist.is_initialized() else -1
        errors = workdir / "errors"
        errors.mkdir(parents=True, exist_ok=True)
        (errors / f"rank-{rank}.txt").write_text(traceback.format_exc())
        raise


if __name__ == "__main__":
    main()
