"""The safe loader: one read of the file, its zip CRCs checked meanwhile, tensors in their own memory."""

from __future__ import annotations

import mmap
import os
import struct
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch

from experiment import CheckpointError, UnsafeCheckpointError
from experiment.store.safe_load import load_tensors


def state(seed: int = 0) -> dict[str, Any]:
    torch.manual_seed(seed)
    network = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    optimizer = torch.optim.Adam(network.parameters())
    network(torch.randn(4, 6)).sum().backward()
    optimizer.step()
    return {"format": 2, "nodes": {"model": network.state_dict(), "optimizer": optimizer.state_dict()}}


def saved(tmp_path: Path, obj: Any = None, name: str = "state.pt") -> Path:
    path = tmp_path / name
    torch.save(state() if obj is None else obj, path)
    return path


def record_data(path: Path, suffix: str) -> tuple[str, int, int]:
    """The name, first data byte and size of the record of ``path`` whose name ends with ``suffix``."""
    with zipfile.ZipFile(path) as archive:
        info = next(info for info in archive.infolist() if info.filename.endswith(suffix))
    with open(path, "rb") as file:
        file.seek(info.header_offset + 26)
        name_length, extra_length = struct.unpack("<HH", file.read(4))
    return info.filename, info.header_offset + 30 + name_length + extra_length, info.compress_size


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def tensors(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    return {key: value for k, v in items for key, value in tensors(v, f"{prefix}/{k}").items()}


def assert_same_tensors(expected: Any, loaded: Any) -> None:
    expected_tensors, loaded_tensors = tensors(expected), tensors(loaded)
    assert sorted(loaded_tensors) == sorted(expected_tensors)
    for key, tensor in expected_tensors.items():
        assert torch.equal(loaded_tensors[key], tensor), key
        assert loaded_tensors[key].stride() == tensor.stride(), key


# ------------------------------------------------------------------------------ what loads
def test_load_tensors_matches_a_bare_torch_load(tmp_path):
    path = saved(tmp_path)
    assert_same_tensors(torch.load(path, weights_only=True), load_tensors(path))


def test_load_tensors_keeps_shared_storages_shared_and_parameters(tmp_path):
    base = torch.arange(10.0)
    path = saved(tmp_path, {"whole": base, "view": base[2:5], "parameter": torch.nn.Parameter(torch.ones(3))})
    loaded = load_tensors(path)
    assert loaded["whole"].untyped_storage().data_ptr() == loaded["view"].untyped_storage().data_ptr()
    assert loaded["view"].tolist() == [2.0, 3.0, 4.0]
    assert isinstance(loaded["parameter"], torch.nn.Parameter) and loaded["parameter"].requires_grad


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_load_tensors_leaves_no_mapping_of_the_file(tmp_path):
    path = saved(tmp_path, name="never-mapped-after-load.pt")
    loaded = load_tensors(path)
    maps = Path("/proc/self/maps").read_text()
    assert path.name not in maps
    assert loaded["nodes"]["model"]["0.weight"].shape == (16, 6)


def test_load_tensors_result_survives_the_file_being_replaced_and_removed(tmp_path):
    path = saved(tmp_path)
    loaded = load_tensors(path)
    expected = torch.load(path, weights_only=True)
    os.replace(saved(tmp_path, state(seed=1), name="other.pt"), path)
    path.unlink()
    assert_same_tensors(expected, loaded)


def test_load_tensors_loads_plain_data_without_tensors(tmp_path):
    assert load_tensors(saved(tmp_path, {"format": 2, "serial": 3, "names": ["a", "b"]}))["serial"] == 3


# ---------------------------------------------------------------------------- what is refused
def test_load_tensors_reports_a_flipped_byte_in_a_tensor_record_as_corrupt(tmp_path):
    path = saved(tmp_path)
    name, start, size = record_data(path, "data/0")
    flip(path, start + size // 2)
    with pytest.raises(CheckpointError, match=rf"is corrupt: the checksum of its record '{name}'"):
        load_tensors(path)


def test_load_tensors_reports_a_flipped_byte_in_the_pickle_as_corrupt_not_unsafe(tmp_path):
    path = saved(tmp_path)
    name, start, size = record_data(path, "data.pkl")
    flip(path, start + size // 2)
    with pytest.raises(CheckpointError, match=rf"checksum of its record '{name}'") as raised:
        load_tensors(path)
    assert not isinstance(raised.value, UnsafeCheckpointError)


def test_load_tensors_reports_a_damaged_record_header_as_corrupt(tmp_path):
    path = saved(tmp_path)
    with zipfile.ZipFile(path) as archive:
        info = next(info for info in archive.infolist() if info.filename.endswith("data/0"))
    flip(path, info.header_offset)  # the local header's signature
    with pytest.raises(CheckpointError, match=r"is (truncated or )?corrupt"):
        load_tensors(path)


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_load_tensors_reports_a_truncated_file(tmp_path, keep):
    path = saved(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match=r"is truncated or corrupt"):
        load_tensors(path)


def test_load_tensors_reports_an_empty_file(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.pt is truncated or corrupt"):
        load_tensors(path)


def test_load_tensors_reports_a_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"missing\.pt does not exist"):
        load_tensors(tmp_path / "missing.pt")


class RunsCommand:
    """Unpickling this object would run a shell command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.command,))


def test_load_tensors_refuses_a_pickle_that_would_run_code(tmp_path):
    marker = tmp_path / "marker"
    path = saved(tmp_path, {"model": RunsCommand(f"touch {marker}"), "weights": torch.ones(3)})
    with pytest.raises(UnsafeCheckpointError, match=r"would call (posix|os)\.system. Nothing from it"):
        load_tensors(path)
    assert not marker.exists()


# ----------------------------------------------------------------- without a mapping of the file
@pytest.fixture
def no_mmap(monkeypatch):
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError("mmap is not supported by this file system")

    monkeypatch.setattr(mmap, "mmap", refuse)


def test_load_tensors_without_mmap_still_loads(tmp_path, no_mmap):
    path = saved(tmp_path)
    assert_same_tensors(torch.load(path, weights_only=True), load_tensors(path))


def test_load_tensors_without_mmap_still_reports_a_flipped_byte(tmp_path, no_mmap):
    path = saved(tmp_path)
    name, start, size = record_data(path, "data/0")
    flip(path, start + size // 2)
    with pytest.raises(CheckpointError, match=rf"checksum of its record '{name}'"):
        load_tensors(path)
