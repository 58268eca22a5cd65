"""Shared fixtures; the helpers that tests import live in tests/support/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.support.mounts import read_only_mount
from tests.support.training import train_run


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    """Run torch on one thread: the tiny models gain nothing from more, and lose much on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def run_dirs(tmp_path: Path) -> tuple[Path, Path]:
    """Two run directories: one for an uninterrupted run, one for an interrupted and resumed one."""
    return tmp_path / "uninterrupted", tmp_path / "resumed"


@pytest.fixture
def read_only_run(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A finished run of 2 epochs, and the same run seen through a read-only mount (unmounted after
    the test): ``(writable source, read-only view)``. Skipped where no mount can be made."""
    source = tmp_path / "source"
    train_run(source, epochs=2, progress=False)
    with read_only_mount(source, tmp_path / "shared") as view:
        yield source, view
