"""Append-only cache of generation attempts, so that no finished generation is ever lost.

One JSON object per line, written with a single ``write`` then ``flush`` + ``fsync``::

    {"class_id": 3, "kind": "body", "sample": 1, "model": "llama3", "prompt_hash": "9c1e...",
     "attempt": 0, "status": "ok", "text": "...", "reason": null, "shortened": false,
     "class_name": "bowling", "raw": "..."}

An attempt is keyed by ``(class_id, kind, sample, model, prompt_hash)`` plus its attempt
number; ``status`` is ``ok`` (accepted by post-processing) or ``rejected`` (``reason`` says
why). A run killed mid-write leaves at most one incomplete last line: it is cut off, with a
warning, when the cache is opened again. An exclusive lock (``flock``, where available)
stops two runs from writing one cache at the same time.
"""

from __future__ import annotations

import json
import os
import threading
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["CacheEntry", "CacheError", "CacheKey", "GenerationCache"]

CacheKey = tuple[int, str, int, str, str]  # class_id, kind, sample, model, prompt_hash
_RAW_LIMIT = 4000


class CacheError(RuntimeError):
    """The cache file cannot be used (corrupt line, or another run is writing it)."""


@dataclass(frozen=True)
class CacheEntry:
    """One generation attempt."""

    class_id: int
    kind: str
    sample: int
    model: str
    prompt_hash: str
    attempt: int
    status: str  # "ok" or "rejected"
    text: str
    reason: str | None = None
    shortened: bool = False
    class_name: str = ""
    raw: str = ""

    @property
    def key(self) -> CacheKey:
        return (self.class_id, self.kind, self.sample, self.model, self.prompt_hash)


def _entry(path: Path, line: int, raw: bytes) -> CacheEntry:
    fix = ("delete that line (or the whole cache file, which loses the cached generations) "
           "and rerun")
    try:
        obj = json.loads(raw)
        entry = CacheEntry(**obj)
        if entry.status not in ("ok", "rejected") or not isinstance(entry.attempt, int):
            raise TypeError(f"bad status/attempt {entry.status!r}/{entry.attempt!r}")
        return entry
    except (ValueError, TypeError) as e:
        raise CacheError(f"{path}, line {line}: not a cache record ({e}): "
                         f"{raw[:80]!r}. Fix: {fix}") from e


class GenerationCache:
    """The cache file at ``path``: ``open()`` loads it, ``append()`` adds durably.

    Use as a context manager. ``entries`` holds every record, loaded and appended.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.entries: list[CacheEntry] = []
        self._file = None
        self._lock = threading.Lock()

    def __enter__(self) -> GenerationCache:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> GenerationCache:
        """Take the write lock, repair an incomplete last line, load all records."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "ab+")  # kept open (and locked) until close()
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                handle.close()
                raise CacheError(
                    f"{self.path} is being written by another run; wait for it to finish, or "
                    "give this run its own --cache file") from e
        handle.seek(0)
        data = handle.read()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            warnings.warn(f"{self.path}: dropped an incomplete last record "
                          f"({len(data) - keep} bytes) left by an interrupted run", stacklevel=2)
            handle.truncate(keep)
            handle.flush()
            os.fsync(handle.fileno())
            data = data[:keep]
        self.entries = [_entry(self.path, number, line)
                        for number, line in enumerate(data.split(b"\n"), start=1)
                        if line.strip()]
        handle.seek(0, os.SEEK_END)
        self._file = handle
        return self

    def append(self, entry: CacheEntry) -> None:
        """Write one record and force it to disk before returning."""
        if self._file is None:
            raise CacheError(f"{self.path} is not open; call open() first")
        record = asdict(entry)
        record["raw"] = record["raw"][:_RAW_LIMIT]
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())
            self.entries.append(entry)

    def close(self) -> None:
        """Release the lock and close the file (records are already on disk)."""
        if self._file is not None:
            self._file.close()  # closing releases the flock
            self._file = None
