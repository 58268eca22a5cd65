"""What the writer threads of FSDP2 commits see: run by fsdp_scenarios.py in its launch.

``non_finite``: rank 1 writes NaN into its shard of the first parameter at the end of the last step of a one-epoch
run (its loss is finite: the step's forward came before), with step commits every 2 steps. The
commit of that step must be refused on every rank with a NonFiniteStateError naming the network,
synchronously (at the commit) and asynchronously (at the next wait, the epoch's commit), and the
commit of step 4 must stay the newest, no temporary folder left.

``live_state``: a callback whose ``state_dict()`` returns its live tensor adds to it in place after
a commit while that commit's writer thread is held (DCP's save waits for the next batch's end): the
commit must hold the value it had at the commit.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from experiment import Callback
from experiment.store import shards
from tests.distributed.scenarios import gather
from tests.distributed.workload import make_data_as, make_experiment, make_network


class PoisonRankOne(Callback):
    """Fills rank 1's shard of the network's first parameter with NaN after global step ``step``."""

    def __init__(self, step: int) -> None:
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
        if self.trainer.global_step == self.step and dist.get_rank() == 1:
            parameter = next(self.trainer.network.parameters())
            with torch.no_grad():
                parameter.to_local().fill_(float("nan"))


def non_finite(runs_dir: Path) -> dict[str, Any]:
    """For synchronous and asynchronous commits: the error train() raised on each rank (gathered
    to rank 0), the commit folders and temporary folders left."""
    data = make_data_as("tuple", samples=96, valid_samples=16, batch_size=8)  # 6 steps per rank
    found: dict[str, Any] = {}
    for mode in ("sync", "async"):
        run_dir = runs_dir / f"non-finite-{mode}"
        experiment = make_experiment(run_dir, network=make_network(), strategy="fsdp")
        error = None
        try:
            experiment.train(
                data.train,
                epochs=1,
                batch_size=8,
                checkpoint_every=2,
                async_checkpoint=mode == "async",
                callbacks=[PoisonRankOne(6)],
                progress=False,
            )
        except Exception as raised:  # noqa: BLE001 - the error is the result
            error = f"{type(raised).__name__}: {raised}"
        checkpoints = run_dir / "checkpoints"
        found[mode] = {
            "errors": gather(error),
            "folders": sorted(p.name for p in checkpoints.iterdir()) if checkpoints.exists() else [],
        }
    return found


class LiveList(Callback):
    """Counts global steps in a tensor that it adds to in place and that ``state_dict()`` returns
    as it is (not a copy), as metric sums are; after step ``release`` it lets the held writer go on."""

    def __init__(self, release: int, held: threading.Event) -> None:
        super().__init__()
        self.steps = torch.zeros((), dtype=torch.int64)
        self.release, self.held = release, held

    def on_train_batch_end(self, batch_number: int, logs: dict[str, Any]) -> None:
        self.steps += 1
        if self.trainer.global_step == self.release:
            self.held.set()

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = state["steps"].clone()


def live_state(runs_dir: Path) -> dict[str, Any]:
    """The steps the first asynchronous commit (after step 2) recorded for :class:`LiveList`, its
    writer held until step 3 has changed the list (rank 0's tree file; None on rank 1)."""
    data = make_data_as("tuple", samples=48, valid_samples=16, batch_size=8)  # 3 steps per rank
    run_dir = runs_dir / "live-state"
    held = threading.Event()
    save = shards.save

    def held_save(*args: Any, **kwargs: Any) -> Any:
        held.wait(timeout=60)  # the first commit's writer waits for step 3; later ones do not
        return save(*args, **kwargs)

    shards.save = held_save
    try:
        experiment = make_experiment(run_dir, network=make_network(), strategy="fsdp")
        callback = LiveList(release=3, held=held)
        experiment.train(
            data.train,
            epochs=1,
            batch_size=8,
            checkpoint_every=2,
            async_checkpoint=True,
            callbacks=[callback],
            progress=False,
        )
    finally:
        shards.save = save
    if dist.get_rank() != 0:
        return {"recorded": None}
    tree = torch.load(run_dir / "checkpoints" / "state-000001" / "tree.pt", weights_only=True)
    return {"recorded": int(tree["nodes"][f"callbacks/{LiveList.__module__}.LiveList"]["steps"])}
