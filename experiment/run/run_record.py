"""experiment.json as one training call sees it: the run's identity, what it was created with, and
the changes this call brings, checked before anything is loaded and recorded after; and the refusal
to start afresh over a run whose history it records but whose checkpoints are gone, or that was
cleaned to its best weights."""

from __future__ import annotations

import shutil
import uuid
import warnings
from typing import Any

from experiment.errors import RunDirectoryError
from experiment.run.creation import creation_changes, creation_problems
from experiment.run.settings import RunSettings
from experiment.run.slurm import SlurmJob
from experiment.state.progress import Progress
from experiment.store import metadata as meta
from experiment.store import tsv
from experiment.store.directory import RunDirectory


class RunRecord:
    """The recorded run (experiment.json) against the objects and data of this call.

    Args:
        directory: the run directory.
        creation: this call's :func:`~experiment.run.creation.creation_record`.
        config: this call's config (empty: keep the recorded one).
        settings: this call's settings (epochs, seed, monitor, cadence...).
        fresh_objects: whether the network and optimizer were built for this call (not trained
            already in this process), so that their hyperparameters can be compared.
        slurm: the SLURM job of this call (recorded under ``slurm``), or None outside SLURM (the
            key is then removed: it describes the latest call).
    """

    def __init__(
        self,
        directory: RunDirectory,
        *,
        creation: dict[str, Any],
        config: dict[str, Any],
        settings: RunSettings,
        fresh_objects: bool,
        slurm: SlurmJob | None = None,
    ) -> None:
        self.directory = directory
        self.metadata = directory.read_metadata() if directory.is_run() else {}
        self.creation = creation
        self.config = config
        self.settings = settings
        self.fresh_objects = fresh_objects
        self.slurm = slurm
        self.run_id: str | None = self.metadata.get("run_id")
        self.changes: list[dict[str, Any]] = []
        #: The number of processes that wrote the checkpoint resumed from (None: none read yet).
        self.saved_world_size: int | None = None

    @property
    def created_with(self) -> dict[str, Any] | None:
        return self.metadata.get("created_with")

    def problems(self, saved: dict[str, Any]) -> list[str]:
        """What in a saved state tree, or in this call, contradicts the recorded run."""
        problems = []
        self.saved_world_size = int(saved.get("world_size", 1))
        saved_id = saved.get("run_id")
        if saved_id is not None and self.run_id is not None and saved_id != self.run_id:
            problems.append(
                f"the checkpoint belongs to run {saved_id}, but {self.directory.path} is run {self.run_id} "
                "(its experiment.json): it was copied from another run directory. Put back this run's "
                "own checkpoints, or train in a new directory"
            )
        progress = saved["nodes"]["progress"]
        over = Progress.saved_is_over(progress, self.settings.epochs)
        if self.created_with is not None and not over:  # a run at its end trains no more
            # Hyperparameters are compared only for an optimizer built for this call and of the run's
            # class: the state tree reports another class, which makes every hyperparameter differ.
            compare = self.fresh_objects and not self._optimizer_class_changed(saved)
            current = self.creation if compare else {**self.creation, "optimizer": []}
            recorded = self.created_with if compare else {**self.created_with, "optimizer": []}
            mid_epoch = progress["steps_in_epoch"] > 0
            problems += creation_problems(recorded, current, mid_epoch=mid_epoch)
        return problems

    def _optimizer_class_changed(self, saved: dict[str, Any]) -> bool:
        """Whether the optimizer's class differs from the one the checkpoint ``saved`` was written by."""
        now = str(self.creation.get("optimizer_class", "")).rsplit(".", 1)[-1]
        return saved.get("classes", {}).get("optimizer") not in (None, now)

    def refuse_lost_history(self) -> None:
        """Refuse to start afresh over a run whose checkpoints are gone.

        experiment.json says ``committed`` once the first checkpoint is durable. (Directories made
        before it was recorded count as committed when log.tsv holds two epochs: derived files lead
        the committed state by one epoch at most.)

        Raises:
            RunDirectoryError: the run has committed, but no checkpoint is left to resume from.
        """
        logged = tsv.read_rows(self.directory.log_path) if self.directory.log_path.is_file() else []
        bests = self.directory.best_paths()
        committed = self.metadata.get("committed", len(logged) >= 2)
        if committed:
            raise RunDirectoryError(
                f"{self.directory.path} holds the history of a run ({len(logged)} epoch(s) in log.tsv, "
                f"{len(bests)} best-weights file(s)) but no state checkpoint to resume from: they were "
                "deleted or moved. Nothing was changed. Put the checkpoints back, or train in a new "
                "directory (or remove this one's files) to start afresh."
            )

    def resumed(self, saved_run_id: str | None, position: str, *, over: bool) -> None:
        """Adopt the checkpoint's identity if experiment.json lost it; warn about applied changes
        (none when the run is ``over``: it trains no more)."""
        self.run_id = self.run_id or saved_run_id
        if over:
            return
        if self.created_with is not None:
            self.changes = creation_changes(self.created_with, self.creation)
        recorded_config = self.metadata.get("config")
        if self.config and recorded_config is not None and recorded_config != self.config:
            self.changes.append({"what": "config", "from": recorded_config, "to": self.config})
        for change in self.changes:
            change["at"] = position
        if self.changes:
            listed = "; ".join(f"{c['what']}: {c['from']!r} -> {c['to']!r}" for c in self.changes)
            warnings.warn(
                f"This call differs from the run recorded in {self.directory.metadata_path} ({listed}). "
                f"Applied from {position} on and recorded under 'changes' in experiment.json; the run "
                "is no longer what one call with these settings would give.",
                stacklevel=5,
            )
        self._world_size_changed(position)

    def _world_size_changed(self, position: str) -> None:
        """Warn about, and record, an elastic run resumed on another number of processes (the
        restorer refuses it for a run that is not elastic)."""
        then, now = self.saved_world_size, self.creation.get("world_size", 1)
        if then is None or then == now:
            return
        self.changes.append({"what": "world_size", "from": then, "to": now, "at": position})
        promise = (
            "summed in a fixed order, so bit-identical to the uninterrupted run as long as data "
            "loading draws no random numbers of its own (dropout is seeded per group; augmentations "
            "drawn from each process's random state are not)"
            if self.creation.get("elastic") == "exact"
            else "so the same run up to floating-point summation order (not bit-identical), with each "
            "process's random state derived anew from the seed, the step and its rank"
        )
        warnings.warn(
            f"The elastic run in {self.directory.path} was saved by {then} process(es) and resumes on "
            f"{now} at {position}: the same global batches and optimizer steps, {promise}. Recorded "
            "under 'changes' in experiment.json.",
            stacklevel=6,
        )

    def with_status(self, status: str, message: str | None = None) -> dict[str, Any]:
        """experiment.json's new content: settings, config, identity, creation record, changes, status."""
        if self.directory.is_run():
            current = self.directory.read_metadata()
            current["settings"] = {**current.get("settings", {}), **self.settings.recorded()}
            if self.config:
                current["config"] = self.config
        else:
            current = meta.new_metadata(self.config, self.settings.recorded())
            if self.run_id is not None:  # experiment.json was lost: keep the checkpoints' identity
                current["run_id"] = self.run_id
        self.run_id = current.setdefault("run_id", uuid.uuid4().hex)
        current.setdefault("created_with", self.creation)
        if self.changes:
            current["changes"] = [*current.get("changes", []), *self.changes]
            self.changes = []
        current.pop("slurm", None)
        if self.slurm is not None:
            current["slurm"] = self.slurm.recorded()
        return meta.with_status(current, status, message)


def check_resumable(directory: RunDirectory) -> None:
    """Refuse a run cleaned to its best weights; remove what interrupted writes left.

    Run before a training call, once the directory's lock is held.

    Raises:
        RunDirectoryError: experiment.json says the run is no longer resumable (``exp clean --keep best``).
    """
    if directory.is_run() and directory.read_metadata().get("resumable") is False:
        raise RunDirectoryError(
            f"{directory.path} was cleaned to its best weights (exp clean --keep best): its "
            "training state is gone, so it can be tested but not resumed or extended. Train in a "
            "new directory."
        )
    for leftover in directory.temporary_files():  # of writes a crash cut short
        leftover.unlink(missing_ok=True)
    for folder in directory.temporary_directories():  # directory commits cut short
        shutil.rmtree(folder)
