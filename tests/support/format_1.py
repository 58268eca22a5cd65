"""Hand-made state trees of checkpoint format 1 (release 0.1.0), as that release wrote them.

Format 1 held the network, optimizer, schedulers, callback states (by class name), the best and the
loop at the top. Only the parts a migration reads are filled with real-looking values.
"""

from __future__ import annotations

from typing import Any

import torch

from experiment.run.run_state import keyed_callbacks, state_key
from experiment.store.migration import migrate


def format_1_tree(
    callbacks: dict[str, Any] | None = None, *, epochs_completed: int = 3, steps_in_epoch: int = 0
) -> dict[str, Any]:
    """A format-1 tree whose callback states are ``callbacks`` (by their format-1 key: class name,
    ``Name#2``...), saved after ``epochs_completed`` epochs and ``steps_in_epoch`` more steps."""
    rng = {"python": [3, torch.arange(4)], "numpy": None, "torch": torch.arange(8, dtype=torch.uint8)}
    return {
        "format": 1,
        "serial": 7,
        "reason": "step" if steps_in_epoch else "epoch",
        "classes": {"network": "Linear", "optimizer": "SGD", "schedulers": ["StepLR"]},
        "model": {"weight": torch.ones(2, 3), "bias": torch.zeros(2)},
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]},
        "schedulers": [{"step_size": 1, "last_epoch": epochs_completed}],
        "callbacks": dict(callbacks or {}),
        "best": {"monitor": "val_loss", "mode": "min", "epoch": 2, "value": 0.5},
        "loop": {
            "epochs_completed": epochs_completed,
            "steps_in_epoch": steps_in_epoch,
            "global_step": 4 * epochs_completed + steps_in_epoch,
            "stop_training": False,
            "history": [{"epoch": epoch, "loss": 1.0 / epoch} for epoch in range(1, epochs_completed + 1)],
            "epoch_time": 0.25,
            "rng": rng,
            "epoch_rng": rng,
            "pass_step": 0,
            "train_metrics": None,
        },
    }


def migrated_state(callback: Any, old_state: Any, *, epochs_completed: int = 3) -> Any:
    """The state that ``callback`` gets from a format-1 checkpoint that saved ``old_state`` for it
    after ``epochs_completed`` epochs, once migrated with it as the run's one callback."""
    tree = format_1_tree({type(callback).__name__: old_state}, epochs_completed=epochs_completed)
    return migrate(tree, callbacks=keyed_callbacks([callback]))["nodes"][f"callbacks/{state_key(callback)}"]
