"""A train() call that trains nothing: the run is at its end, or the call asks for fewer epochs.

:class:`~experiment.run.session.TrainingSession` asks these two questions once the checkpoint is
restored and the run's progress has reached the call's ``epochs``. Neither changes the recorded
target: ``epochs`` is the run's total, never a number to add (a Keras habit reads it the other way).
"""

from __future__ import annotations

import warnings

from experiment.run.run_record import RunRecord
from experiment.training.loop import TrainingLoop
from experiment.training.plan import TrainingPlan


def asks_for_less(record: RunRecord, done: int, *, warn: bool) -> bool:
    """Whether the call's ``epochs`` is below what the run has done or targets.

    Such a call trains nothing and changes nothing: the recorded target and status stay.

    Args:
        record: the call's settings (its ``epochs``) against experiment.json (the recorded target).
        done: the epochs the run has completed.
        warn: whether to warn (rank 0 of a distributed run; the other ranks keep quiet).

    Returns:
        True when the call asks for less, after a UserWarning that says which ``epochs`` to pass.
        The warning points at the user's ``train()`` line, three calls up (this function,
        ``TrainingSession.run``, ``Experiment.train``).
    """
    target, directory_path = record.settings.epochs, record.directory.path
    recorded = record.metadata.get("settings", {}).get("epochs")
    if done <= target and not (isinstance(recorded, int) and recorded > target):
        return False
    if warn:
        goal = max(done, recorded) if isinstance(recorded, int) else done
        warnings.warn(
            f"{directory_path} has {done} epoch(s) (target {goal}); epochs={target} is the "
            f"run's total, not a number to add: nothing to train, and the recorded target stays "
            f"{goal}. "
            + (
                f"Pass epochs={goal} to train on to it."
                if goal > done
                else f"Pass epochs={done + target} to train {target} more epoch(s)."
            ),
            stacklevel=4,
        )
    return True


def end_without_training(record: RunRecord, loop: TrainingLoop, plan: TrainingPlan) -> str:
    """A run whose checkpoint is at its end: leave the network as an uninterrupted run leaves it.

    The callbacks that can say so (``announce_no_training``) get one line saying why nothing is
    trained. If the process that reached the end was killed before its end hooks ran (the recorded
    status is not finished or stopped), every callback's ``on_train_end`` runs now; otherwise only
    the callbacks that put weights back at the end (``restores_weights_at_end``) do it again.

    Args:
        record: the run directory (named in the line) and experiment.json (the recorded status).
        loop: the restored loop, at the end of the run.
        plan: this call's plan, whose callbacks are set up here.

    Returns:
        The status to record: "stopped" when a callback stopped the run early, else "finished".
    """
    callbacks = plan.callbacks
    callbacks.setup({"epochs": plan.epochs, "steps_per_epoch": plan.train.steps_per_epoch}, loop)
    done, target, directory_path = loop.epochs_completed, plan.epochs, record.directory.path
    line = (
        f"{directory_path} was stopped early, by a callback, after {done} of {target} "
        "epoch(s); nothing to train."
        if loop.stop_training
        else f"{directory_path} has its {done} epoch(s); nothing to train (pass a larger "
        "epochs= to train further)."
    )
    for callback in callbacks.callbacks:
        if callable(getattr(callback, "announce_no_training", None)):
            callback.announce_no_training(line)
    if record.metadata.get("status") in ("finished", "stopped"):
        for callback in callbacks.callbacks:
            if getattr(callback, "restores_weights_at_end", False):
                callback.on_train_end({})
    else:
        callbacks.call("on_train_end", {})
    return "stopped" if loop.stop_training else "finished"
