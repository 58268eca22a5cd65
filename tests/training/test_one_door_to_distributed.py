"""torch.distributed has few doors: experiment/training/distributed.py (the World: the process group,
collectives, DDP wrapping), and for FSDP2 experiment/training/fsdp.py (fully_shard, sharded state
dicts) and experiment/store/shards.py (Distributed Checkpoint files, read only once verified). The
loop, the step, the callbacks, the run layer and the state tree ask them.

import-linter cannot forbid a subpackage of an external package, so this test reads every module's
import statements (those inside functions included) with ``ast``.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGES = [Path(__file__).resolve().parents[2] / name for name in ("experiment", "cli")]
DOOR = Path("experiment/training/distributed.py")
DOORS = {DOOR, Path("experiment/training/fsdp.py"), Path("experiment/store/shards.py")}
DOORS.add(Path("experiment/training/fsdp_interop.py"))  # FSDP2 and the state users handle themselves
DOORS.add(Path("experiment/training/sharded_tensors.py"))  # DTensor state for the directory backends


def distributed_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.startswith("torch.distributed")]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("torch.distributed"):
                found.append(node.module)
            elif node.module == "torch":
                found += [f"torch.{alias.name}" for alias in node.names if alias.name == "distributed"]
    return found


def test_one_door_only_the_world_module_imports_torch_distributed():
    root = PACKAGES[0].parent
    offenders = {
        str(path.relative_to(root)): imports
        for package in PACKAGES
        for path in sorted(package.rglob("*.py"))
        if path.relative_to(root) not in DOORS and (imports := distributed_imports(path))
    }
    assert offenders == {}


def test_one_door_probe_sees_the_door_itself():
    """The probe is not vacuous: the World's own module is found importing torch.distributed."""
    root = PACKAGES[0].parent
    assert "torch.distributed" in distributed_imports(root / DOOR)
