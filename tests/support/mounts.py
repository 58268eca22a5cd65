"""A real read-only mount of a folder, as a run directory shared read-only (results published on a
read-only volume) is seen: root cannot write through it either, unlike a folder made read-only by
chmod."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=60, check=False)


@contextlib.contextmanager
def read_only_mount(source: Path, mount_point: Path) -> Iterator[Path]:
    """``source`` seen at ``mount_point`` (created) through a read-only bind mount, unmounted on exit.

    Skips the test where a mount cannot be made: not root, or no permission to mount (a container
    without CAP_SYS_ADMIN).
    """
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root (mount --bind, then mount -o remount,bind,ro)")
    if shutil.which("mount") is None or shutil.which("umount") is None:
        pytest.skip("mount and umount are not installed")
    mount_point.mkdir()
    bound = _mount("--bind", str(source), str(mount_point))
    if bound.returncode != 0:
        pytest.skip(f"mount --bind failed (no permission to mount here?): {bound.stderr.strip()}")
    try:
        remounted = _mount("-o", "remount,bind,ro", str(mount_point))
        if remounted.returncode != 0:
            pytest.skip(f"mount -o remount,bind,ro failed: {remounted.stderr.strip()}")
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], capture_output=True, text=True, timeout=60, check=True)
