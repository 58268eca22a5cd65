"""The kill tests of a torchrun module: each test's own killed launch, then one shared rerun.

A kill test kills (or signals) a launch of tests/distributed/train_script.py at a known moment and
checks what that left (its :class:`Kill` driver does both), then reruns the same command and
compares the finished run with an uninterrupted one. A launch costs about 9 s on 2 cores, nearly
all of it starting torchrun and importing; the training itself takes under a second. So the runs a
module's tests killed are rerun together: one launch per set of options (train_script.py resumes
its run directories one after the other, each with a new Experiment as a fresh script would), the
one without extra options first training the uninterrupted reference. Each test then checks its own
run.

Example:
    >>> MID_EPOCH = Kill("mid-epoch", kill_rank_1_at_step_9)
    >>> runs = KilledRuns(SCRIPT, tmp_path, [MID_EPOCH], nproc=2, timeout=90)
    >>> assert_same_as(runs.reference(), runs.resumed(MID_EPOCH).run_dir)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.torchrun import Launch, run_torchrun


@dataclass(frozen=True)
class Kill:
    """One test's killed launch: ``drive(run_dir, options)`` launches train_script.py on
    ``run_dir`` with ``options`` (and its own pause or delay arguments), kills or signals it,
    asserts what the kill left, and returns what the test needs after the rerun; ``options`` (an
    asynchronous commit) are the run's, so its rerun's too."""

    name: str
    drive: Callable[[Path, tuple[str, ...]], Any]
    options: tuple[str, ...] = ()

    def __str__(self) -> str:  # the test's id
        return self.name


@dataclass
class Resumed:
    """A killed run once rerun to the end: its directory and what its driver returned."""

    run_dir: Path
    seen: Any


class KilledRuns:
    """Every kill of ``kills`` (in order, one launch each), then their reruns, shared.

    Args:
        script: train_script.py.
        root: a fresh folder: the reference and each kill's run go under it.
        kills: what the selected tests kill.
        options: the options of every launch of the module (``--strategy fsdp``).
        nproc: the ranks of every launch.
        timeout: seconds for each rerun launch.
    """

    def __init__(
        self,
        script: Path,
        root: Path,
        kills: Iterable[Kill],
        *,
        options: tuple[str, ...] = (),
        nproc: int,
        timeout: float,
    ) -> None:
        self._root = root
        self.reference_dir = root / "reference" / "run"
        self._seen: dict[Kill, Any] = {}
        self._failed: dict[Kill, BaseException] = {}
        kills = list(kills)
        names = [kill.name for kill in kills]
        assert len(set(names)) == len(names), f"two kills of one module share a name (their folder): {names}"
        for kill in kills:
            run_dir = self._run_dir(kill)
            run_dir.parent.mkdir(parents=True)
            try:
                self._seen[kill] = kill.drive(run_dir, (*options, *kill.options))
            except (Exception, pytest.fail.Exception) as error:  # its test raises it
                self._failed[kill] = error
        groups: dict[tuple[str, ...], list[Kill]] = {(): []}
        for kill in self._seen:
            groups.setdefault(kill.options, []).append(kill)
        self._reruns: dict[Kill, Launch] = {}
        for extra, group in groups.items():
            run_dirs = [str(self._run_dir(kill)) for kill in group]
            reference = ["--reference", str(self.reference_dir)] if extra == () else []
            if not run_dirs:  # no killed run without extra options: the reference alone
                run_dirs, reference = [str(self.reference_dir)], []
            launch = run_torchrun(
                script, *run_dirs, *options, *extra, *reference, nproc=nproc, timeout=timeout
            )
            if extra == ():
                self._reference_launch = launch
            self._reruns.update(dict.fromkeys(group, launch))

    def reference(self) -> Path:
        """The uninterrupted run; fails if it did not finish or its launch failed."""
        metadata = self.reference_dir / "experiment.json"
        finished = metadata.exists() and json.loads(metadata.read_text())["status"] == "finished"
        launch = self._reference_launch
        assert finished and launch.returncode == 0, f"the reference's launch failed\n{launch.describe()}"
        return self.reference_dir

    def resumed(self, kill: Kill) -> Resumed:
        """``kill``'s run rerun to the end; raises what failed in its driver, fails if the rerun did."""
        if kill in self._failed:
            raise self._failed[kill]
        launch = self._reruns[kill]
        assert launch.returncode == 0, f"the shared rerun failed\n{launch.describe()}"
        return Resumed(self._run_dir(kill), self._seen[kill])

    def _run_dir(self, kill: Kill) -> Path:
        return self._root / kill.name / "run"
