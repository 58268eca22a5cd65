"""One torchrun launch of a scenarios script, read back: torchrun's exit and output, the result file
rank 0 wrote, and any rank's error file. The DDP and FSDP2 test modules each make one per module and
assert on one kind of check per test."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.torchrun import Launch, run_torchrun


@dataclass
class ScenarioLaunch:
    """The scenarios launch: torchrun's exit and output, rank 0's result file, any rank's error."""

    workdir: Path
    launch: Launch
    result: dict[str, Any]
    errors: dict[str, str]

    def describe(self) -> str:
        errors = "\n".join(f"--- {name} ---\n{text}" for name, text in sorted(self.errors.items()))
        return f"{self.launch.describe()}\n{errors or '(no rank wrote an error file)'}"

    def checks(self, name: str, check: str) -> list[str]:
        """The problems found by ``check`` in scenario ``name``; fails if the scenario did not end."""
        if name not in self.result.get("scenarios", {}):
            pytest.fail(f"scenario {name!r} did not complete in the launch\n{self.describe()}")
        return self.result["scenarios"][name]["checks"].get(check, [])

    def entry(self, key: str) -> Any:
        """A top-level entry of the result file; fails if the launch did not get to it."""
        if key not in self.result:
            pytest.fail(f"the launch did not get to {key!r}\n{self.describe()}")
        return self.result[key]


def launch_scenarios(script: Path, workdir: Path, *args: str, nproc: int, timeout: float) -> ScenarioLaunch:
    """Run ``script WORKDIR ARGS`` under torchrun and read back what it left in ``workdir``
    (``result.json`` and ``errors/*.txt``)."""
    launch = run_torchrun(script, str(workdir), *args, nproc=nproc, timeout=timeout)
    result_path = workdir / "result.json"
    result = json.loads(result_path.read_text()) if result_path.exists() else {}
    errors = {p.name: p.read_text() for p in (workdir / "errors").glob("*.txt") if p.stat().st_size}
    return ScenarioLaunch(workdir, launch, result, errors)


def assert_no_problems(problems: list[str]) -> None:
    assert problems == [], f"{len(problems)} problem(s):\n" + "\n".join(problems)
