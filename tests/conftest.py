"""Shared fixtures; the helpers that tests import live in tests/support/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch


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
