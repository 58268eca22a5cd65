"""Which values of a parameter the selected tests of a module use: a module fixture that starts the
work of its tests up front (kill runs, killed launches) starts only what ``-k`` or ``-m`` kept."""

from __future__ import annotations

from typing import Any

import pytest


def selected_parameters(request: pytest.FixtureRequest, name: str) -> list[Any]:
    """The values of parameter ``name`` in the selected tests of the requesting module, each once
    (by identity), in the tests' order."""
    values: dict[int, Any] = {}
    for item in request.session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if getattr(item, "module", None) is request.module and name in params:
            values.setdefault(id(params[name]), params[name])
    return list(values.values())
