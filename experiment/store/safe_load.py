"""Loading tensor files without ever executing code from them, and telling damage from danger.

A file written by ``torch.save`` of plain data and tensors loads with ``weights_only=True``. A pickle
that would import anything else is refused as unsafe (and named); a truncated or bit-flipped file
(checked against its zip CRCs) is reported as corrupt, so that resuming can fall back to the
previous checkpoint.

The file is read once: torch maps it (``mmap=True``), a second thread checks the CRC of every zip
record over the mapped pages while the tensors are copied out of the mapping into memory of their
own, so a large checkpoint loads about as fast as a bare ``torch.load``. The copies matter: a tensor
left on the mapping would keep the file's space allocated after the file is pruned (an optimizer
keeps the tensors it is given), and would change if the file were rewritten in place.
"""

from __future__ import annotations

import contextlib
import mmap
import pickle
import pickletools
import re
import struct
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from experiment.errors import CheckpointError, UnsafeCheckpointError

if TYPE_CHECKING:
    import torch


def load_tensors(path: Path) -> Any:
    """Load a file written by :func:`save_tensors` without ever executing code from it.

    Raises:
        UnsafeCheckpointError: the file holds a pickle that refers to arbitrary callables.
        CheckpointError: the file is missing, truncated, damaged or not a torch file.
    """
    path = Path(path)
    try:
        return _load_checked(path)
    except pickle.UnpicklingError as error:
        match = re.search(r"GLOBAL ([\w.]+)", str(error))
        imported = match.group(1) if match else _foreign_import(path)
        if imported:
            raise UnsafeCheckpointError(
                f"Refused to load {path}: it holds a pickle that would call {imported}. "
                "Nothing from it was executed. Only files of plain data and tensors (torch.save of "
                "state dicts, as this library writes them) are loaded; do not use files of unknown "
                "origin, and if you wrote this one yourself, save plain state dicts instead of objects."
            ) from error
        raise CheckpointError(
            f"{path} is corrupt: it holds pickle instructions that a safe load does not accept "
            "(damaged, or not written by torch.save)."
        ) from error
    except FileNotFoundError as error:
        raise CheckpointError(f"{path} does not exist.") from error
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as error:
        raise CheckpointError(f"{path} is truncated or corrupt: {_first_line(str(error))}") from error


def _load_checked(path: Path) -> Any:
    """``torch.load`` of ``path`` (weights only), its zip CRCs checked by a second thread meanwhile.

    A damaged record is reported as such even when it also makes torch fail: damage explains the
    failure better than what torch makes of the damaged bytes.
    """
    import torch

    with contextlib.ExitStack() as stack:
        image = _mapped(path, stack)
        records = _stored_records(path, image, stack) if image is not None else None
        if image is None or records is None:
            _verify_checksums(path)  # not a zip file, or not one torch wrote: the slow, general way
            damaged: Future[str | None] | None = None
        else:
            # Registered after the mapping, so the check ends before the mapping is closed.
            checker = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="crc-check"))
            damaged = checker.submit(_damaged_record, image, records)
        try:
            with warnings.catch_warnings():
                # A foreign pickle protocol is refused later anyway; torch's warning adds nothing.
                warnings.filterwarnings("ignore", message="Detected pickle protocol")
                loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=damaged is not None)
            if damaged is not None:
                _copy_out_of_mapping(loaded)
        except BaseException as error:
            if damaged is not None:
                _raise_if_damaged(path, damaged.result(), error)
            raise
        if damaged is not None:
            _raise_if_damaged(path, damaged.result())
        return loaded


def _mapped(path: Path, stack: contextlib.ExitStack) -> memoryview | None:
    """The bytes of ``path`` mapped read-only, or None for an empty file or one that cannot be mapped."""
    file = stack.enter_context(open(path, "rb"))  # noqa: SIM115 (closed by the stack)
    try:
        mapping = stack.enter_context(mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ))
    except (OSError, ValueError):
        return None  # an empty file, or a file system without mmap: the general way reports it
    return stack.enter_context(memoryview(mapping))


#: A record's place in the file: name, first byte of its data, size, CRC-32.
_Record = tuple[str, int, int, int]


def _stored_records(path: Path, image: memoryview, stack: contextlib.ExitStack) -> list[_Record] | None:
    """Where the data of each record of the zip file ``path`` lies in ``image``, with its CRC.

    Returns:
        The records, or None when ``path`` is not a zip file or compresses a record (torch stores).
    """
    if not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
    if any(info.compress_type != zipfile.ZIP_STORED for info in infos):
        return None
    records = []
    for info in infos:
        start = info.header_offset
        header = bytes(image[start : start + 30])
        if len(header) < 30 or header[:4] != b"PK\x03\x04":
            start = len(image)  # a damaged local header: reported as a damaged record
        else:
            name_length, extra_length = struct.unpack("<HH", header[26:30])
            start += 30 + name_length + extra_length
        records.append((info.filename, start, info.compress_size, info.CRC))
    return records


def _damaged_record(image: memoryview, records: list[_Record]) -> str | None:
    """The first record whose bytes do not match its CRC-32 (zlib releases the GIL while it sums)."""
    for name, start, size, crc in records:
        if start + size > len(image) or zlib.crc32(image[start : start + size]) != crc:
            return name
    return None


def _raise_if_damaged(path: Path, damaged: str | None, error: BaseException | None = None) -> None:
    if damaged is not None:
        raise CheckpointError(
            f"{path} is corrupt: the checksum of its record {damaged!r} does not match its bytes "
            "(a damaged disk or an interrupted copy)."
        ) from error


def _copy_out_of_mapping(loaded: Any) -> None:
    """Move every tensor of ``loaded`` from the pages of the mapped file to memory of its own.

    Tensors that shared a storage still share one. The copy runs on one thread (numpy, which
    releases the GIL for the CRC thread): torch's parallel copy faults the same mapping from several
    threads, which was several times slower on a 2-core machine.
    """
    import torch

    copies: dict[tuple[int, int], torch.UntypedStorage] = {}
    with torch.no_grad():
        for tensor in _tensors(loaded):
            if tensor.layout != torch.strided or tensor.is_quantized or tensor.device.type != "cpu":
                continue  # not a plain storage to move (never in a state dict written here)
            storage = tensor.untyped_storage()
            key = (storage.data_ptr(), storage.nbytes())
            if key not in copies:
                copies[key] = _own_copy(storage)
            tensor.set_(copies[key], tensor.storage_offset(), tensor.size(), tensor.stride())


def _own_copy(storage: torch.UntypedStorage) -> torch.UntypedStorage:
    import numpy as np
    import torch

    source = torch.empty(0, dtype=torch.uint8).set_(storage)
    copy = torch.empty(storage.nbytes(), dtype=torch.uint8)
    np.copyto(copy.numpy(), source.numpy())
    return copy.untyped_storage()


def _tensors(loaded: Any) -> Iterator[torch.Tensor]:
    """Every tensor in the containers a weights-only load builds (dicts, lists, tuples)."""
    import torch

    pending = [loaded]
    while pending:
        item = pending.pop()
        if isinstance(item, torch.Tensor):
            yield item
        elif isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, (list, tuple)):
            pending.extend(item)


#: The modules a pickle of plain data and tensors written by torch.save refers to.
_TENSOR_MODULES = ("torch", "collections")


def _foreign_import(path: Path) -> str | None:
    """The first callable outside torch that the pickle in ``path`` would import (read, not run).

    torch's safe loader stops at the first instruction it does not know (a newer pickle protocol's
    framing, say) before it sees what the pickle imports; this reads the instructions themselves.
    """
    try:
        with contextlib.ExitStack() as stack:
            if zipfile.is_zipfile(path):
                archive = stack.enter_context(zipfile.ZipFile(path))
                member = next(name for name in archive.namelist() if name.endswith("data.pkl"))
                file = stack.enter_context(archive.open(member))
            else:
                file = stack.enter_context(open(path, "rb"))  # noqa: SIM115 (closed by the stack)
            strings: list[str] = []
            for opcode, arg, _ in pickletools.genops(file):
                if opcode.name in ("GLOBAL", "INST"):
                    imported = str(arg).replace(" ", ".")
                elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    imported = f"{strings[-2]}.{strings[-1]}"
                else:
                    if isinstance(arg, str):
                        strings.append(arg)
                    continue
                if imported.split(".")[0] not in _TENSOR_MODULES:
                    return imported
    except (OSError, ValueError, StopIteration, zipfile.BadZipFile):
        return None  # damaged before any foreign import: reported as corrupt
    return None


def _verify_checksums(path: Path) -> None:
    """Check the CRC-32 of every record of a torch zip file: torch.load would read damaged bytes."""
    if not zipfile.is_zipfile(path):
        return  # not a zip file (missing, truncated, legacy format): torch.load reports it
    with zipfile.ZipFile(path) as archive:
        damaged = archive.testzip()
    if damaged is not None:
        raise CheckpointError(
            f"{path} is corrupt: the checksum of its record {damaged!r} does not match its bytes "
            "(a damaged disk or an interrupted copy)."
        )


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else text
