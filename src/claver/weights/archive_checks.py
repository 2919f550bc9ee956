"""Bounds on what a checkpoint may make us allocate, checked before PyTorch reads it.

- Zip checkpoints (``torch.save`` and TorchScript archives): every member's declared size
  is checked before anything is read; compressed members may inflate to at most
  :data:`MAX_INFLATED_MEMBER` bytes each (:data:`MAX_INFLATED_TOTAL` together), pickles to
  :data:`MAX_PICKLE_BYTES`; reads are bounded (never more than declared + 1 bytes).
- Storages: each storage record must hold exactly ``numel x element size`` bytes, as its
  pickle declares (PyTorch would otherwise allocate what the pickle says, or read past a
  short record); a legacy ``torch.save`` stream's storages must fit in the file.
- Tensors: a tensor must not need more bytes than its storage holds (a zero-stride or
  overlapping view of a few bytes can describe a 30000 x 30000 tensor that later
  ``.float()``/``.clone()`` materialise), and all tensors together must not describe more
  than :data:`VIEW_ALIAS_FACTOR` times the stored bytes.
"""

from __future__ import annotations

import argparse
import io
import struct
import tarfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import torch

from claver.weights.errors import CheckpointReadError, UnsafeCheckpointError
from claver.weights.restricted_pickle import (
    Global,
    PickleCorrupt,
    Symbol,
    SymbolicObject,
    run_pickle,
)

MiB = 2**20
MAX_ZIP_MEMBERS = 200_000
MAX_PICKLE_BYTES = 32 * MiB  # a real data.pkl is KBs; evaluating 32 MiB takes ~8 s
MAX_INFLATED_MEMBER = 64 * MiB
MAX_INFLATED_TOTAL = 256 * MiB
MAX_NESTING = 100
VIEW_ALIAS_FACTOR = 4
VIEW_ALIAS_SLACK = 64 * MiB

_DTYPE_OF_STORAGE = {
    "DoubleStorage": torch.float64, "FloatStorage": torch.float32,
    "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64, "IntStorage": torch.int32, "ShortStorage": torch.int16,
    "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
    "ComplexDoubleStorage": torch.complex128, "ComplexFloatStorage": torch.complex64,
}
_QUANTIZED_STORAGE = {
    "QInt8Storage": torch.qint8, "QInt32Storage": torch.qint32, "QUInt8Storage": torch.quint8,
    "QUInt4x2Storage": torch.quint4x2, "QUInt2x4Storage": torch.quint2x4,
}


def storage_dtype(name: str, *, quantized: bool = True) -> torch.dtype | None:
    """dtype of a pickled storage class name (``torch.FloatStorage``, ``torch.cuda.HalfStorage``,
    ``torch.UntypedStorage`` = bytes); None for anything else."""
    if name in ("torch.UntypedStorage", "torch.storage.UntypedStorage"):
        return torch.uint8
    module, _, cls = name.rpartition(".")
    if module not in ("torch", "torch.cuda"):
        return None
    if quantized and module == "torch" and cls in _QUANTIZED_STORAGE:
        return _QUANTIZED_STORAGE[cls]
    return _DTYPE_OF_STORAGE.get(cls)


@dataclass(frozen=True)
class StorageDecl:
    """A storage as a pickle declares it: its record key, dtype and number of elements."""

    key: str
    dtype: torch.dtype
    numel: int

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


@dataclass
class PickleScan:
    """What a ``torch.save`` pickle references, found without running any of it."""

    globals: set[str] = field(default_factory=set)
    storages: dict[str, StorageDecl] = field(default_factory=dict)
    value: Any = None


def _size(n: int) -> str:
    return f"{n:,} bytes" if n < 10 * MiB else f"{n / MiB:,.0f} MiB"


# ------------------------------------------------------------------------------ pickles


def scan_torch_pickle(stream: IO[bytes], scan: PickleScan | None = None) -> PickleScan:
    """Evaluate the next pickle of ``stream`` symbolically (nothing is imported or called):
    the globals it names and the storages its persistent ids declare."""
    scan = scan if scan is not None else PickleScan()

    def resolve(name: str) -> Global:
        scan.globals.add(name)
        return Symbol(name)

    def persistent_load(pid: Any) -> Any:
        if type(pid) is not tuple or not pid or pid[0] not in ("storage", b"storage"):
            return SymbolicObject("<persistent id>")  # PyTorch refuses these itself
        if len(pid) not in (5, 6) or not isinstance(pid[1], Symbol):
            raise PickleCorrupt("malformed storage reference")
        _, cls, key, _location, numel, *_ = pid
        dtype = storage_dtype(cls.name)
        if dtype is None:
            raise PickleCorrupt(f"unknown storage type {cls.name}")
        if type(key) is bytes:
            key = key.decode("ascii", "replace")
        if type(key) is not str or type(numel) is not int or not 0 <= numel < 2**63:
            raise PickleCorrupt("malformed storage reference")
        decl = StorageDecl(key, dtype, numel)
        if scan.storages.setdefault(key, decl) != decl:
            raise PickleCorrupt(f"storage {key!r} is declared twice with different sizes")
        return SymbolicObject("<storage>")

    scan.value = run_pickle(stream, resolve_global=resolve, persistent_load=persistent_load,
                            symbolic=True)
    return scan


# ------------------------------------------------------------------------------ zip


class CheckedZip:
    """A zip checkpoint whose directory passed :func:`open_checked_zip`'s checks.

    Member names are relative to the archive's folder (``data.pkl``, ``data/0``), which is the
    folder of the first member, as PyTorch's reader picks it.
    """

    def __init__(self, zf: zipfile.ZipFile, path: Path, prefix: str) -> None:
        self.zf = zf
        self.path = path
        self.prefix = prefix
        self.infos = {info.filename: info for info in zf.infolist()}

    def member(self, rel: str) -> zipfile.ZipInfo | None:
        return self.infos.get(f"{self.prefix}/{rel}")

    def names(self) -> Iterator[str]:
        start = len(self.prefix) + 1
        return (name[start:] for name in self.infos if name.startswith(self.prefix + "/"))

    def read(self, rel: str, limit: int, what: str) -> bytes:
        """The member's bytes, refused if it declares more than ``limit`` or inflates to more
        (or less) than it declares."""
        info = self.member(rel)
        if info is None:
            raise CheckpointReadError(
                f"Cannot read {str(self.path)!r}: the archive has no {self.prefix}/{rel}.",
                self.path)
        if info.file_size > limit:
            bomb = "" if info.compress_type == zipfile.ZIP_STORED else (
                f", compressed into {_size(info.compress_size)}: this looks like a zip bomb")
            raise UnsafeCheckpointError(
                f"Refusing to load {str(self.path)!r}: its {what} {info.filename} declares "
                f"{_size(info.file_size)}, over the limit of {_size(limit)} for such a member "
                f"(a real one is far smaller{bomb}). Nothing was read.", self.path)
        buf = bytearray(info.file_size)
        self._read_into(info, memoryview(buf))
        return bytes(buf)

    def read_storage(self, rel: str, nbytes: int) -> torch.Tensor:
        """uint8 tensor of the member's bytes; the member must hold exactly ``nbytes``."""
        info = self.member(rel)
        if info is None or info.file_size != nbytes:
            held = "is missing" if info is None else f"holds {_size(info.file_size)}"
            raise CheckpointReadError(
                f"Cannot read {str(self.path)!r}: storage record {self.prefix}/{rel} {held}, "
                f"but the pickle declares {_size(nbytes)}; the file is corrupt or was altered.",
                self.path)
        if nbytes == 0:
            return torch.empty(0, dtype=torch.uint8)
        buf = bytearray(nbytes)
        self._read_into(info, memoryview(buf))
        return torch.frombuffer(buf, dtype=torch.uint8)

    def _read_into(self, info: zipfile.ZipInfo, out: memoryview) -> None:
        pos, total = 0, len(out)
        try:
            with self.zf.open(info) as f:
                while pos < total:
                    chunk = f.read(min(MiB, total - pos))
                    if not chunk:
                        break
                    out[pos:pos + len(chunk)] = chunk
                    pos += len(chunk)
                extra = f.read(1)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
            raise CheckpointReadError(
                f"Cannot read {str(self.path)!r}: member {info.filename} is corrupt ({exc}).",
                self.path) from exc
        if pos != total or extra:
            raise CheckpointReadError(
                f"Cannot read {str(self.path)!r}: member {info.filename} does not hold the "
                f"{_size(total)} its header declares; the file is corrupt or was altered.",
                self.path)


def _check_zip_directory(zf: zipfile.ZipFile, path: Path) -> str:
    infos = zf.infolist()
    if not infos:
        raise CheckpointReadError(f"Cannot read {str(path)!r}: the zip archive is empty.", path)
    if len(infos) > MAX_ZIP_MEMBERS:
        raise UnsafeCheckpointError(
            f"Refusing to load {str(path)!r}: {len(infos):,} zip members (limit "
            f"{MAX_ZIP_MEMBERS:,}).", path)
    first = infos[0].filename
    if "/" not in first:
        raise CheckpointReadError(
            f"Cannot read {str(path)!r}: {first!r} is not inside the archive's folder, as "
            "torch.save and torch.jit.save write it.", path)
    prefix = first.split("/", 1)[0]
    archive_size = path.stat().st_size
    names: set[str] = set()
    inflated = 0
    for info in infos:
        if info.filename in names:
            raise CheckpointReadError(
                f"Cannot read {str(path)!r}: the zip archive holds {info.filename!r} twice "
                "(readers would disagree on which one counts).", path)
        names.add(info.filename)
        if info.flag_bits & 0x1:
            raise CheckpointReadError(
                f"Cannot read {str(path)!r}: member {info.filename} is encrypted.", path)
        if info.header_offset + info.compress_size > archive_size:
            raise CheckpointReadError(
                f"Cannot read {str(path)!r}: member {info.filename} extends past the end of "
                "the file (truncated or corrupt).", path)
        if info.compress_type == zipfile.ZIP_STORED:
            if info.file_size != info.compress_size:
                raise CheckpointReadError(
                    f"Cannot read {str(path)!r}: stored member {info.filename} declares "
                    f"{info.file_size} bytes but occupies {info.compress_size}.", path)
        elif info.compress_type == zipfile.ZIP_DEFLATED:
            inflated += info.file_size
            if info.file_size > MAX_INFLATED_MEMBER or inflated > MAX_INFLATED_TOTAL:
                raise UnsafeCheckpointError(
                    f"Refusing to load {str(path)!r}: compressed member {info.filename} "
                    f"would inflate to {_size(info.file_size)} (from "
                    f"{_size(info.compress_size)}); compressed members may inflate to at most "
                    f"{_size(MAX_INFLATED_MEMBER)} each and {_size(MAX_INFLATED_TOTAL)} in "
                    "all (torch.save and torch.jit.save never compress weights; this looks "
                    "like a zip bomb). Nothing was inflated.", path)
        else:
            raise CheckpointReadError(
                f"Cannot read {str(path)!r}: member {info.filename} uses zip compression "
                f"method {info.compress_type}; PyTorch archives use only stored or deflated "
                "members.", path)
    return prefix


@contextmanager
def open_checked_zip(path: Path) -> Iterator[CheckedZip]:
    """Open a zip checkpoint after checking its directory (see the module docstring)."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise CheckpointReadError(
            f"Cannot read {str(path)!r}: a truncated or corrupt zip archive ({exc}).",
            path) from exc
    with zf:
        prefix = _check_zip_directory(zf, path)
        yield CheckedZip(zf, path, prefix)


def check_storage_records(archive: CheckedZip, scan: PickleScan) -> None:
    """Every storage the pickle declares has a ``data/<key>`` record of exactly its size."""
    for decl in scan.storages.values():
        info = archive.member(f"data/{decl.key}")
        if info is None or info.file_size != decl.nbytes:
            held = "is missing" if info is None else f"holds {_size(info.file_size)}"
            raise CheckpointReadError(
                f"Cannot read {str(archive.path)!r}: storage record "
                f"{archive.prefix}/data/{decl.key} {held}, but the pickle declares "
                f"{decl.numel:,} {decl.dtype} elements ({_size(decl.nbytes)}); the file is "
                "corrupt or was altered.", archive.path)


# ------------------------------------------------------------------------------ legacy


def scan_legacy_file(path: Path) -> PickleScan:
    """Scan a pre-1.6 ``torch.save`` stream: its pickles (symbolically) and the storage
    records after them, whose sizes must match the pickle and fit in the file."""
    if tarfile.is_tarfile(path):
        raise CheckpointReadError(
            f"Cannot read {str(path)!r}: tar-format checkpoints (PyTorch < 0.4) are not "
            "supported; re-save the file with a recent PyTorch.", path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        window = io.BytesIO(f.read(MAX_PICKLE_BYTES))
        scan = PickleScan()
        try:
            for _ in range(3):  # magic number, protocol version, sys info
                scan_torch_pickle(window, scan)
            main = scan_torch_pickle(window, scan).value
            keys = scan_torch_pickle(window, scan).value
        except PickleCorrupt:
            if size > MAX_PICKLE_BYTES and window.tell() >= MAX_PICKLE_BYTES:
                raise UnsafeCheckpointError(
                    f"Refusing to load {str(path)!r}: its pickles are longer than "
                    f"{_size(MAX_PICKLE_BYTES)} (a real one is far smaller).", path) from None
            raise
        scan.value = main
        f.seek(window.tell())
        if type(keys) is not list or not all(type(k) is str for k in keys):
            raise PickleCorrupt("the storage key list is not a list of strings")
        remaining = size - f.tell()
        declared = sum(d.nbytes for d in scan.storages.values())
        if declared > remaining:
            raise CheckpointReadError(
                f"Cannot read {str(path)!r}: its pickle declares {_size(declared)} of tensor "
                f"data but only {_size(remaining)} follow; the file is truncated or was "
                "altered. Nothing was allocated.", path)
        for key in keys:
            decl = scan.storages.get(key)
            head = f.read(8)
            if decl is None or len(head) != 8:
                raise PickleCorrupt(f"storage record {key!r} is not declared or is cut off")
            (numel,) = struct.unpack("<q", head)
            if numel != decl.numel:
                raise CheckpointReadError(
                    f"Cannot read {str(path)!r}: storage {key!r} holds {numel:,} elements but "
                    f"the pickle declares {decl.numel:,}; the file is corrupt or was altered.",
                    path)
            f.seek(decl.nbytes, io.SEEK_CUR)
        if f.tell() > size:
            raise CheckpointReadError(
                f"Cannot read {str(path)!r}: its storage records run past the end of the file "
                "(truncated).", path)
    return scan


# ------------------------------------------------------------------------------ tensors


def _path_text(node: tuple | None) -> str:
    parts: list[str] = []
    while node is not None:
        node, key = node
        parts.append(f".{key}" if isinstance(key, str) else f"[{key!r}]")
    text = "".join(reversed(parts)).lstrip(".") or "<the checkpoint itself>"
    return text if len(text) <= 300 else "..." + text[-300:]


def tensor_view_problem(numel: int, itemsize: int, storage_nbytes: int) -> bool:
    """Whether a view of ``numel`` elements needs more bytes than its storage holds."""
    return numel * itemsize > storage_nbytes


def oversized_view_error(path: Path, key: str, shape: tuple, stride: tuple, dtype: Any,
                         storage_nbytes: int) -> UnsafeCheckpointError:
    numel = 1
    for n in shape:
        numel *= n
    itemsize = dtype.itemsize
    return UnsafeCheckpointError(
        f"Refusing to load {str(path)!r}: tensor {key} has shape {tuple(shape)} ({dtype}, "
        f"{_size(numel * itemsize)}) but views a storage of only {_size(storage_nbytes)} "
        f"(strides {tuple(stride)}). A zero-stride or overlapping view larger than its "
        "storage lets a few bytes of file expand into a huge tensor once it is converted or "
        "copied; nothing was allocated. If you made this file, save such tensors with "
        ".contiguous().", path)


def _check_tensor(t: torch.Tensor, path: Path, where: tuple | None) -> tuple[int, int, int]:
    """(logical bytes, storage id, storage bytes) of a checked tensor."""
    key = _path_text(where)
    if t.layout != torch.strided or t.is_nested or t.device.type == "meta":
        kind = "a nested" if t.is_nested else f"a {t.layout}/{t.device.type}"
        raise UnsafeCheckpointError(
            f"Refusing to load {str(path)!r}: tensor {key} is {kind} tensor; only dense "
            "tensors with their data in the file are accepted.", path)
    storage = t.untyped_storage()
    nbytes = storage.nbytes()
    if tensor_view_problem(t.numel(), t.element_size(), nbytes):
        raise oversized_view_error(path, key, tuple(t.shape), tuple(t.stride()), t.dtype,
                                   nbytes)
    return t.numel() * t.element_size(), storage.data_ptr(), nbytes


def check_loaded_tensors(obj: Any, path: Path) -> None:
    """Walk a loaded checkpoint (dicts, lists, tuples, sets, Namespaces) and refuse tensors
    that need more bytes than their storage holds, more than :data:`MAX_NESTING` levels of
    nesting, or tensors that together describe far more than the stored bytes."""
    seen: set[int] = set()
    storages: dict[int, int] = {}
    logical = 0
    stack: list[tuple[Any, tuple | None, int]] = [(obj, None, 0)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, torch.Tensor):
            size, ptr, nbytes = _check_tensor(item, path, where)
            logical += size
            storages[ptr] = max(nbytes, storages.get(ptr, 0))
            continue
        if isinstance(item, str | bytes | int | float | type(None)):
            continue
        if id(item) in seen:
            continue
        seen.add(id(item))
        if depth >= MAX_NESTING:
            raise CheckpointReadError(
                f"Cannot read {str(path)!r}: {_path_text(where)} is nested more than "
                f"{MAX_NESTING} levels deep.", path)
        if isinstance(item, argparse.Namespace):
            item = vars(item)
        if isinstance(item, dict):
            stack.extend((v, (where, k), depth + 1) for k, v in item.items())
        elif isinstance(item, list | tuple):
            stack.extend((v, (where, i), depth + 1) for i, v in enumerate(item))
        elif isinstance(item, set | frozenset):
            stack.extend((v, where, depth + 1) for v in item)
    stored = sum(storages.values())
    if logical > VIEW_ALIAS_FACTOR * stored + VIEW_ALIAS_SLACK:
        raise UnsafeCheckpointError(
            f"Refusing to load {str(path)!r}: its tensors describe {_size(logical)} but its "
            f"storages hold only {_size(stored)}: many tensors view the same data (more than "
            f"{VIEW_ALIAS_FACTOR}x), which would multiply memory once they are converted. "
            "Nothing was allocated.", path)
