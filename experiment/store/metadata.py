"""What experiment.json records: versions, the command that started the run, status and config.

:func:`check_metadata` checks the shape of what a reader loads; :func:`plain_config` turns a user's
configuration into JSON data (or says which key cannot be) before anything is written. The command
is :func:`~experiment.store.relaunch.current_command`, the one ``exp resume`` reruns.
"""

from __future__ import annotations

import datetime
import os
import pathlib
import platform
import socket
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from experiment.arguments import check_choice, reject
from experiment.errors import RunDirectoryError
from experiment.store.relaunch import current_command

#: The run directory's format; 2 since the checkpoints hold a named state tree (1 is still read).
FORMAT_VERSION = 2

STATUSES = ("running", "finished", "stopped", "interrupted", "failed")


def library_version() -> str:
    from experiment import __version__

    return __version__


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def new_metadata(
    config: dict[str, Any] | None,
    settings: dict[str, Any],
    *,
    directory: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """The content of experiment.json for a run that starts now in ``directory``.

    It names the run with a fresh ``run_id`` (a copy of the directory keeps it) and records the
    resolved ``directory``, so that ``exp resume`` can tell a moved or copied run.

    Raises:
        ConfigurationError: ``config`` is not JSON data (see :func:`plain_config`).
    """
    located = {} if directory is None else {"directory": str(pathlib.Path(directory).resolve())}
    return {
        "format_version": FORMAT_VERSION,
        "run_id": uuid.uuid4().hex,
        **located,
        "library_version": library_version(),
        "torch_version": _torch_version(),
        "python_version": platform.python_version(),
        "created": now_iso(),
        "updated": now_iso(),
        "command": current_command(),
        "config": plain_config(config),
        "settings": settings,
        "status": "running",
        "message": None,
        "pid": os.getpid(),
        "host": socket.gethostname(),
    }


def with_status(metadata: dict[str, Any], status: str, message: str | None = None) -> dict[str, Any]:
    """A copy of ``metadata`` with a new status, the writer's pid and host, and the time.

    Raises:
        ConfigurationError: ``status`` is not one of :data:`STATUSES`.
    """
    check_choice("status", status, STATUSES, owner="with_status")
    return {
        **metadata,
        "status": status,
        "message": message,
        "updated": now_iso(),
        "pid": os.getpid(),
        "host": socket.gethostname(),
    }


def _torch_version() -> str:
    import torch

    return torch.__version__


def flat_hparams(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``config`` with nested dicts flattened to "a.b" keys and values TensorBoard cannot show as text."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_hparams(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = repr(value)
    return flat


def plain_config(config: Any) -> dict[str, Any]:
    """A deep copy of ``config`` made of JSON data only, ready for experiment.json.

    NumPy scalars (and arrays of one element) become Python numbers, paths become strings, tuples
    become lists. Nothing else is converted: a tensor, a set or an arbitrary object is refused
    rather than written as something that would read back differently.

    Raises:
        ConfigurationError: a value or key is not JSON data; the message names its key path
            (``config['optim']['betas']``) and its type.

    Example:
        >>> plain_config({"lr": numpy.float32(0.5), "data": Path("data"), "betas": (0.9, 0.99)})
        {'lr': 0.5, 'data': 'data', 'betas': [0.9, 0.99]}
    """
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise reject("config", config, "a dict of JSON values, or None", received=_type_name(config))
    return _plain(config, "config")


def _plain(value: Any, where: str) -> Any:
    if value is None:
        return None
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, pathlib.PurePath):
        return str(value)
    if isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                raise reject(f"{where}: the key {key!r}", key, _EXPECTED, received=_type_name(key))
        return {key: _plain(item, f"{where}[{key!r}]") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item, f"{where}[{index}]") for index, item in enumerate(value)]
    if type(value).__module__.partition(".")[0] == "numpy" and getattr(value, "size", None) == 1:
        return _plain(value.item(), where)  # a NumPy scalar or one-element array, no import needed
    raise reject(where, value, _EXPECTED, received=f"{_type_name(value)} {_short(value)}")


_EXPECTED = (
    "JSON data: a str, int, float, bool, None, a list, or a dict with str keys (NumPy scalars, "
    "paths and tuples are converted). Convert it before passing config= (tensor.item() or "
    ".tolist(), list(a_set), str(an_object)), or leave it out of config"
)


def _type_name(value: Any) -> str:
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _short(value: Any) -> str:
    text = repr(value)
    return f"({text if len(text) <= 60 else text[:57] + '...'})"


# -------------------------------------------------------------------------------- reading
def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or check(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


_MAPPING = "a JSON object (mapping) or null"
_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "format_version": (_is_int, "an integer"),
    "run_id": (_is_str, "a string"),
    "directory": (_is_str, "a string (the run directory's path when it was created)"),
    "status": (lambda value: value in STATUSES, "one of " + ", ".join(map(repr, STATUSES))),
    "message": (_optional(_is_str), "a string or null"),
    "pid": (_optional(_is_int), "an integer or null"),
    "host": (_optional(_is_str), "a string or null"),
    "created": (_optional(_is_str), "a string or null"),
    "updated": (_optional(_is_str), "a string or null"),
    "resumable": (lambda value: isinstance(value, bool), "true or false"),
    "command": (_optional(lambda value: isinstance(value, dict)), _MAPPING),
    "config": (_optional(lambda value: isinstance(value, dict)), _MAPPING),
    "settings": (_optional(lambda value: isinstance(value, dict)), _MAPPING),
}
_COMMAND_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "command.argv": (
        lambda value: isinstance(value, list) and all(map(_is_str, value)),
        "a list of strings (the interpreter and its arguments)",
    ),
    "command.cwd": (_is_str, "a string (the working directory)"),
}
_SETTINGS_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "settings.epochs": (_optional(_is_int), "an integer or null"),
    "settings.seed": (_optional(_is_int), "an integer or null"),
    "settings.checkpoint_every": (_optional(_is_int), "an integer or null"),
    "settings.steps_per_epoch": (_optional(_is_int), "an integer or null"),
    "settings.monitor_metric": (_optional(_is_str), "a string or null"),
    "settings.monitor_mode": (_optional(lambda value: value in ("min", "max")), "'min', 'max' or null"),
}


def check_metadata(metadata: Any, path: str | os.PathLike[str]) -> dict[str, Any]:
    """``metadata``, loaded from ``path``, if it has the shape this library writes.

    Fields written by later versions are accepted; those missing from earlier ones (``run_id``,
    ``directory``) may be absent.

    Raises:
        RunDirectoryError: the document is not an object, or a field has the wrong type; the
            message names the field.
    """
    if not isinstance(metadata, dict):
        _refuse(path, f"it holds {_json_type(metadata)}; expected a JSON object of fields")
    _check_fields(path, metadata, _FIELDS)
    if isinstance(metadata.get("command"), dict):
        _check_fields(path, {f"command.{k}": v for k, v in metadata["command"].items()}, _COMMAND_FIELDS)
    if isinstance(metadata.get("settings"), dict):
        _check_fields(path, {f"settings.{k}": v for k, v in metadata["settings"].items()}, _SETTINGS_FIELDS)
    return metadata


def _check_fields(
    path: Any, values: dict[str, Any], fields: dict[str, tuple[Callable[[Any], bool], str]]
) -> None:
    for field, (check, expected) in fields.items():
        if field not in values:
            continue
        value = values.get(field)
        if not check(value):
            shown = _json_type(value) if expected == _MAPPING else _short(value)[1:-1]
            _refuse(path, f'"{field}" received {shown}; expected {expected}')


def _refuse(path: Any, problem: str) -> None:
    raise RunDirectoryError(
        f"{path} is not the metadata of a run: {problem}. Fix it with a text editor or restore it "
        "from a backup (the library writes it as JSON; see the run directory section of README)."
    )


def _json_type(value: Any) -> str:
    names = {dict: "a JSON object", list: "a list", type(None): "null", bool: "a bool", int: "an int"}
    return names.get(type(value), f"a {type(value).__name__}")
