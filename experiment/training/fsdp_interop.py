"""FSDP2 and the state that users save or load themselves, outside the run's own commits.

Under ``strategy="fsdp"`` the network's and the optimizer's state are sharded: each rank holds a
shard of every tensor (a DTensor). A callback that calls ``state_dict()`` or ``load_state_dict()``
of the network or the optimizer itself would save or load one rank's shards and nothing would say
so; :func:`refuse_weight_callbacks` refuses such callbacks before anything is written, and names
what the run keeps instead. An optimizer state saved whole (``optimizer.state_dict()``, keyed by
index, as ``OptimizerCheckpoint`` writes it in one process) is cut into each rank's shards by
:func:`cut_to_shards`, without communication: every rank reads the same file.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.distributed.tensor import DTensor, distribute_tensor

from experiment.errors import ConfigurationError


def refuse_weight_callbacks(callbacks: Any) -> None:
    """Refuse the callbacks (a sequence) whose ``handles_weights`` or ``reads_every_gradient`` is
    true.

    Raises:
        ConfigurationError: naming the first such callback and what to use instead.
    """
    for index, callback in enumerate(callbacks):
        if getattr(callback, "reads_every_gradient", False):
            raise ConfigurationError(
                f"callbacks[{index}]: received {type(callback).__name__}, which reads every parameter's "
                "gradient on rank 0 alone; with strategy='fsdp' each gradient is sharded over the ranks "
                "and reading it whole is a collective, so rank 0 would wait for the others forever. "
                "Expected callbacks that leave the gradients alone; nothing was written. Remove it, or "
                "train with strategy='ddp' to track gradients."
            )
        if getattr(callback, "handles_weights", False):
            raise ConfigurationError(
                f"callbacks[{index}]: received {type(callback).__name__}, which saves or loads the "
                "network's or the optimizer's state itself (or runs a function or a callback that may); "
                "with strategy='fsdp' that state is sharded over the ranks, so it would save or load one "
                "rank's shards. Expected callbacks that leave the weights to the run; nothing was "
                "written. Instead: the run keeps the best epoch's weights (checkpoints/best-epochNNNN.pt, "
                "a full state dict) and every commit the optimizer's state; test(..., checkpoint='best') "
                "or predict(..., checkpoint='best') loads the best weights into the network, "
                "`exp export RUN --checkpoint best -o model.pt` writes them (or the last) as one file, "
                "and load_optimizer_state('RUN/checkpoints/state-NNNNNN') loads a commit's optimizer state."
            )


def cut_to_shards(state: dict[str, Any], optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """A full optimizer state dict (keyed by index, checked against ``optimizer`` already) with
    each tensor of its parameter's shape cut to this rank's shard, laid out as the parameter (a
    DTensor) is; scalars (Adam's ``step``) and the groups as they are."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    ids = [i for group in state["param_groups"] for i in group["params"]]
    by_id = dict(zip(ids, params))

    def cut(value: Any, param: Any) -> Any:
        if (
            isinstance(param, DTensor)
            and torch.is_tensor(value)
            and value.ndim
            and value.shape == param.shape
        ):
            return distribute_tensor(value, param.device_mesh, param.placements, src_data_rank=None)
        return value

    return {
        "state": {
            index: {key: cut(value, by_id[index]) for key, value in values.items()}
            for index, values in state["state"].items()
        },
        "param_groups": state["param_groups"],
    }


__all__ = ["cut_to_shards", "refuse_weight_callbacks"]
