"""The read side starts without torch: importing store, inspection and cli modules leaves torch unloaded.

import-linter's contracts (pyproject.toml) cannot check this: grimp counts the imports inside
functions too, and store/files.py imports torch inside the functions that read and write tensors
on purpose. So a fresh interpreter imports every module of those packages and looks.
"""

from __future__ import annotations

from tests.support.cli import probe_json

LIGHT_PACKAGES = ("experiment.store", "experiment.inspection", "cli")

#: Imports every module below the packages named in argv, then prints the heavy modules now loaded.
_PROBE = """
import importlib, json, pkgutil, sys
imported = []
for name in sys.argv[1:]:
    package = importlib.import_module(name)
    imported.append(name)
    for module in pkgutil.walk_packages(package.__path__, prefix=name + "."):
        importlib.import_module(module.name)
        imported.append(module.name)
heavy = sorted(m for m in ("torch", "experiment.training", "experiment.run", "experiment.callbacks")
               if m in sys.modules)
print(json.dumps({"imported": imported, "heavy": heavy}))
"""


def _probe(*packages: str) -> dict[str, list[str]]:
    return probe_json(_PROBE, *packages)


def test_light_imports_read_side_does_not_import_torch():
    result = _probe(*LIGHT_PACKAGES)
    assert "experiment.store.files" in result["imported"]
    assert "experiment.inspection.summary" in result["imported"]
    assert "cli.commands.ls" in result["imported"]
    assert result["heavy"] == []


def test_light_imports_probe_sees_torch_when_it_is_imported():
    """The probe is not vacuous: a package that imports torch at module level is reported."""
    result = _probe("experiment.training")
    assert "torch" in result["heavy"]
