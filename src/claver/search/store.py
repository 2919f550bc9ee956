"""The on-disk format of a video index, read back as hostile input.

An index is a folder::

    INDEX/index.json              header: format, version, model identity, settings,
                                  sources, dim, rows, files, data (the folder below)
    INDEX/data-000003/vectors.npy float32 (rows, dim), L2-normalised embeddings
    INDEX/data-000003/spans.npy   float64 (rows, 2), start and end seconds of each row
    INDEX/data-000003/files.jsonl one JSON object per file, in path order: path, size,
                                  mtime_ns, sha256, first, rows, duration, error
    INDEX/pending/                chunks of a run in progress (see below)
    INDEX/.lock                   held (flock) by the run writing the index

Rows are grouped by file, files in path order, a file's rows in time order; file ``i`` owns
rows ``first .. first + rows - 1``. A file that could not be read has ``rows`` 0 and an
``error``. ``index.json`` is the commit point: a run writes a complete new ``data-NNNNNN``
folder, then replaces ``index.json`` atomically, then removes the old folder; readers see
the old index or the new one, never a mix.

While a run embeds videos it appends **chunks** to ``pending/``: ``chunk-NNNNNN.npy`` (the
chunk's vectors) then ``chunk-NNNNNN.json`` (its files and spans, and the sha256 of the
``.npy``), each written to a temporary name and renamed. A chunk without its ``.json``, or
whose ``.npy`` does not match the recorded sha256, is discarded; the others are used by the
next run, so an interrupted run loses at most the chunk it was writing.

Reading checks everything against the header: array dtypes and shapes (``np.load`` with
``allow_pickle=False``; the file size must be exactly what the shape says), one
``files.jsonl`` line per file, rows contiguous and summing to the header's count, finite
values. Nothing read is executed; sizes are bounded by what the header claims.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from claver.fileio import (
    FileFormatError,
    atomic_write_bytes,
    atomic_write_text,
    parse_json,
    read_json,
    read_text,
)

__all__ = ["FORMAT", "VERSION", "Chunk", "FileRecord", "IndexData", "IndexLockedError",
           "chunk_paths", "index_lock", "read_chunk", "read_header", "read_index_data",
           "write_chunk", "write_index"]

FORMAT = "claver-video-index"
VERSION = 1
HEADER = "index.json"
PENDING = "pending"
MAX_LINE_BYTES = 64 * 1024  # one files.jsonl line: a path and an error message
_DATA_RE = re.compile(r"^data-\d{6}$")
_CHUNK_RE = re.compile(r"^chunk-(\d{6})\.json$")
_CHECK_ROWS = 1 << 16  # rows checked for finiteness at a time


class IndexLockedError(RuntimeError):
    """Another process is writing the same index."""


@dataclass
class FileRecord:
    """One indexed file: its fingerprint, its rows (``first``, ``rows``) and, for a file
    that could not be read, ``error``. ``spans`` (rows, 2) only while a run assembles."""

    path: str
    size: int
    mtime_ns: int
    sha256: str
    rows: int = 0
    first: int = 0
    duration: float | None = None
    error: str | None = None
    spans: list[list[float]] = field(default_factory=list, repr=False)

    def to_json(self, with_spans: bool = False) -> dict[str, Any]:
        out = {"path": self.path, "size": self.size, "mtime_ns": self.mtime_ns,
               "sha256": self.sha256, "first": self.first, "rows": self.rows,
               "duration": self.duration, "error": self.error}
        if with_spans:
            out["spans"] = self.spans
        return out

    @classmethod
    def from_json(cls, data: Any, where: str, with_spans: bool = False) -> FileRecord:
        """A record from a parsed line; wrong types are one-line errors naming ``where``."""
        if not isinstance(data, dict):
            raise FileFormatError(f"{where}: expected a JSON object per file, got "
                                  f"{type(data).__name__}; rebuild the index")
        kinds = {"path": str, "size": int, "mtime_ns": int, "sha256": str, "first": int,
                 "rows": int}
        for key, kind in kinds.items():
            value = data.get(key)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise FileFormatError(f"{where}: key {key!r} must be {kind.__name__}, got "
                                      f"{type(value).__name__}; rebuild the index")
        if data["rows"] < 0 or data["first"] < 0 or data["size"] < 0:
            raise FileFormatError(f"{where}: negative size/first/rows; rebuild the index")
        duration, error = data.get("duration"), data.get("error")
        if duration is not None and not isinstance(duration, (int, float)):
            raise FileFormatError(f"{where}: 'duration' must be a number or null")
        if error is not None and not isinstance(error, str):
            raise FileFormatError(f"{where}: 'error' must be a string or null")
        spans: list[list[float]] = []
        if with_spans:
            spans = data.get("spans")
            if (not isinstance(spans, list) or len(spans) != data["rows"] or not all(
                    isinstance(s, list) and len(s) == 2 and all(
                        isinstance(x, (int, float)) for x in s) for s in spans)):
                raise FileFormatError(f"{where}: 'spans' must hold one [start, end] per row")
        return cls(data["path"], data["size"], data["mtime_ns"], data["sha256"], data["rows"],
                   data["first"], None if duration is None else float(duration), error,
                   [[float(a), float(b)] for a, b in spans])


@dataclass
class IndexData:
    """What a committed index holds: ``vectors`` float32 (N, E), ``spans`` float64 (N, 2),
    ``files`` in path order (file ``i`` owns rows ``first .. first + rows - 1``)."""

    header: dict[str, Any]
    vectors: np.ndarray
    spans: np.ndarray
    files: list[FileRecord]


# ------------------------------------------------------------------------------- writing

def _save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write_bytes(path, lambda f: np.save(f, np.ascontiguousarray(array),
                                               allow_pickle=False), fsync=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_index(root: Path, header: dict[str, Any], vectors: np.ndarray, spans: np.ndarray,
                files: list[FileRecord]) -> dict[str, Any]:
    """Write a new data folder, then ``index.json`` (the commit), then drop older folders.
    ``vectors`` float32 (N, E), ``spans`` float64 (N, 2); returns the header written."""
    old = sorted(p.name for p in root.iterdir() if _DATA_RE.match(p.name) and p.is_dir())
    number = int(old[-1][5:]) + 1 if old else 1
    data = root / f"data-{number:06d}"
    data.mkdir()
    _save_npy(data / "vectors.npy", vectors.astype(np.float32, copy=False))
    _save_npy(data / "spans.npy", spans.astype(np.float64, copy=False))
    lines = "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in files)
    atomic_write_text(data / "files.jsonl", lines)
    header = {**header, "format": FORMAT, "version": VERSION, "data": data.name,
              "rows": int(vectors.shape[0]), "dim": int(vectors.shape[1]),
              "files": len(files), "failed": sum(r.error is not None for r in files)}
    text = json.dumps(header, indent=1, ensure_ascii=False) + "\n"
    atomic_write_text(root / HEADER, text)
    for name in old:
        _remove_tree(root / name)
    return header


def _remove_tree(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


def chunk_paths(root: Path, number: int) -> tuple[Path, Path]:
    """(vectors .npy, record .json) of pending chunk ``number``."""
    base = root / PENDING / f"chunk-{number:06d}"
    return base.with_suffix(".npy"), base.with_suffix(".json")


def write_chunk(root: Path, number: int, vectors: np.ndarray, files: list[FileRecord],
                run: dict[str, Any]) -> None:
    """Append chunk ``number``: vectors float32 (n, E) first, then the record naming them
    (the chunk exists once its record does). ``run``: the run's model and settings."""
    npy, record = chunk_paths(root, number)
    npy.parent.mkdir(parents=True, exist_ok=True)
    _save_npy(npy, vectors.astype(np.float32, copy=False))
    body = {"format": FORMAT + "-chunk", "version": VERSION, "run": run,
            "rows": int(vectors.shape[0]), "dim": int(vectors.shape[1]),
            "sha256": _sha256(npy), "files": [r.to_json(with_spans=True) for r in files]}
    atomic_write_text(record, json.dumps(body, ensure_ascii=False) + "\n")


@dataclass
class Chunk:
    """A pending chunk read back: its vectors (n, E) and files (with spans)."""

    number: int
    vectors: np.ndarray
    files: list[FileRecord]


def read_chunk(record_path: Path, run: dict[str, Any], dim: int | None
               ) -> Chunk | None:
    """A pending chunk of the same ``run`` (model and settings), or None (removed) when it
    is torn, damaged or from another run."""
    match = _CHUNK_RE.match(record_path.name)
    if match is None:
        return None
    number = int(match.group(1))
    npy = record_path.with_suffix(".npy")
    try:
        body = read_json(record_path, max_bytes=64 << 20, what="index chunk")
        if not isinstance(body, dict) or body.get("run") != run or not npy.is_file():
            raise FileFormatError("another run")
        rows, width = body.get("rows"), body.get("dim")
        if not isinstance(rows, int) or not isinstance(width, int) or (
                dim is not None and width != dim) or body.get("sha256") != _sha256(npy):
            raise FileFormatError("vectors do not match the record")
        vectors = _load_array(npy, np.float32, (rows, width), mmap=False)
        files = [FileRecord.from_json(f, str(record_path), with_spans=True)
                 for f in body.get("files") or []]
        if sum(f.rows for f in files) != rows:
            raise FileFormatError("rows do not add up")
    except (OSError, ValueError):
        for p in (record_path, npy):
            p.unlink(missing_ok=True)
        return None
    return Chunk(number, vectors, files)


# ------------------------------------------------------------------------------- reading

def read_header(root: Path) -> dict[str, Any] | None:
    """The header of the index at ``root``, checked; None when there is no index yet."""
    path = root / HEADER
    if not path.exists():
        return None
    header = read_json(path, what="index header")
    where = str(path)
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise FileFormatError(f"{where}: not a claver video index (format "
                              f"{header.get('format') if isinstance(header, dict) else None!r}"
                              f", expected {FORMAT!r}); give the folder `claver index` wrote")
    if header.get("version") != VERSION:
        raise FileFormatError(f"{where}: index version {header.get('version')!r}, this claver "
                              f"reads version {VERSION}; rebuild it with `claver index`")
    for key in ("rows", "dim", "files"):
        value = header.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise FileFormatError(f"{where}: {key!r} must be a non-negative integer, got "
                                  f"{value!r}; rebuild the index")
    if header["dim"] < 1 or not isinstance(header.get("model"), dict):
        raise FileFormatError(f"{where}: no model identity or dim; rebuild the index")
    if not isinstance(header.get("data"), str) or not _DATA_RE.match(header["data"]):
        raise FileFormatError(f"{where}: 'data' must name a data-NNNNNN folder, got "
                              f"{header.get('data')!r}; rebuild the index")
    return header


def _load_array(path: Path, dtype: Any, shape: tuple[int, ...], mmap: bool) -> np.ndarray:
    """An .npy of exactly ``dtype`` and ``shape`` (and exactly that many bytes)."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise FileFormatError(f"{path}: not a readable .npy array ({e}); rebuild the "
                              "index") from None
    if array.dtype != np.dtype(dtype) or array.shape != shape or not array.flags.c_contiguous:
        raise FileFormatError(f"{path}: holds {array.dtype} {array.shape}, the header says "
                              f"{np.dtype(dtype)} {shape}; rebuild the index")
    expected = array.offset + array.nbytes
    if os.path.getsize(path) != expected:
        raise FileFormatError(f"{path}: {os.path.getsize(path)} bytes, {expected} expected "
                              "for its shape; rebuild the index")
    if mmap:
        return array
    del array  # checked through the map; now read once, straight into memory
    loaded = np.load(path, allow_pickle=False)
    if loaded.dtype != np.dtype(dtype) or loaded.shape != shape:  # replaced meanwhile
        raise FileFormatError(f"{path}: changed while being read; try again")
    return loaded


def _check_finite(array: np.ndarray, path: Path) -> None:
    for i in range(0, array.shape[0], _CHECK_ROWS):
        if not np.isfinite(array[i:i + _CHECK_ROWS]).all():
            raise FileFormatError(f"{path}: holds NaN or infinite values (near row {i}); "
                                  "rebuild the index")


def _read_files(path: Path, count: int, rows: int) -> list[FileRecord]:
    text = read_text(path, max_bytes=max(1, count) * MAX_LINE_BYTES, what="index file list")
    lines = text.splitlines()
    if len(lines) != count:
        raise FileFormatError(f"{path}: {len(lines)} line(s), the header says {count} files; "
                              "rebuild the index")
    files, first = [], 0
    for i, line in enumerate(lines, 1):
        record = FileRecord.from_json(parse_json(line, f"{path}, line {i}"), f"{path}, line {i}")
        if record.first != first:
            raise FileFormatError(f"{path}, line {i}: rows start at {record.first}, expected "
                                  f"{first} (rows must be contiguous); rebuild the index")
        first += record.rows
        files.append(record)
    if first != rows:
        raise FileFormatError(f"{path}: files hold {first} rows, the header says {rows}; "
                              "rebuild the index")
    return files


def read_index_data(root: Path, header: dict[str, Any], *, mmap: bool = False) -> IndexData:
    """The arrays and file list of the committed index (checked against ``header``).
    ``mmap``: map the vectors instead of reading them into memory."""
    data = root / header["data"]
    rows, dim = header["rows"], header["dim"]
    vectors = _load_array(data / "vectors.npy", np.float32, (rows, dim), mmap)
    spans = _load_array(data / "spans.npy", np.float64, (rows, 2), False)
    _check_finite(vectors, data / "vectors.npy")
    _check_finite(spans, data / "spans.npy")
    files = _read_files(data / "files.jsonl", header["files"], rows)
    return IndexData(header, vectors, spans, files)


@contextlib.contextmanager
def index_lock(root: Path) -> Iterator[None]:
    """Exclusive lock on an index folder for one writing run (POSIX ``flock``, released
    by the kernel even on ``kill -9``; a no-op where there is no ``fcntl``)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise IndexLockedError(f"{root}: another `claver index` run is writing this index; "
                                   "wait for it to finish or use another --out") from None
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
