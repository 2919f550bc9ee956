"""Build or update a video index: :func:`index` (``claver index``).

One embedding per video, or with ``window`` one per window of ``window`` seconds every
``stride`` seconds (a video shorter than a window gives one row over all of it), exactly as
``claver predict`` samples them (:func:`claver.zeroshot.window_spans`,
:func:`claver.zeroshot.window_indices`, the model's :class:`claver.inputs.Preprocess`).
Each row is stored L2-normalised, so a dot product with a unit text embedding is a cosine.

**Incremental.** A file is fingerprinted by size, mtime and sha256. On a re-run, a file
whose size and mtime are unchanged keeps its rows without being read; otherwise it is
hashed: the same content keeps (or, moved or copied, reuses) its rows, new content is
embedded. Files no longer found under the sources are dropped. Files that could not be read
are reported, recorded with their error, and tried again on the next run.

**Crash-safe.** Work is committed in chunks (``batch_size`` videos, or one windowed video)
appended to ``INDEX/pending/`` (see :mod:`claver.search.store`); the final index is written
in a new folder and committed by replacing ``index.json``. After ``kill -9`` a re-run reuses
the chunks and embeds the rest in the same groups, so it writes the same index, vector for
vector and in the same order, as a run that was never interrupted. Rows are ordered by file
path, then time, whatever order the work was done in.
"""

from __future__ import annotations

import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from claver.search.identity import (
    describe_identity,
    model_identity,
    same_model,
    same_preprocessing,
)
from claver.search.store import (
    PENDING,
    FileRecord,
    read_chunk,
    read_header,
    read_index_data,
    write_chunk,
    write_index,
)
from claver.search.store import index_lock as _lock_for
from claver.zeroshot import error_line

__all__ = ["IndexReport", "find_videos", "index"]

KILL_AFTER_ENV = "CLAVER_INDEX_KILL_AFTER_CHUNKS"  # testing hook: SIGKILL after N chunks
_READ_ERRORS = (OSError, ValueError)  # VideoDecodeError is a ValueError


@dataclass
class IndexReport:
    """What a run did: files ``embedded`` (read and run through the model), ``kept``
    (unchanged), ``reused`` (moved/copied: rows taken from the same content),
    ``resumed`` (taken from an interrupted run's chunks), ``removed`` (gone from the
    sources), ``failed`` [(path, error)], total ``rows`` and ``seconds``."""

    files: int = 0
    rows: int = 0
    embedded: int = 0
    kept: int = 0
    reused: int = 0
    resumed: int = 0
    removed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"{self.files} file(s), {self.rows} row(s): {self.embedded} embedded, "
                f"{self.kept} unchanged, {self.reused} reused (moved/copied), {self.resumed} "
                f"from an interrupted run, {self.removed} removed, {len(self.failed)} failed; "
                f"{self.seconds:.1f} s")


# ------------------------------------------------------------------------------ sources

def find_videos(sources: Sequence[str | os.PathLike]) -> list[str]:
    """Absolute paths of the videos named or found (recursively, by extension, hidden
    entries skipped, symlinked folders not followed) under ``sources``, sorted, unique."""
    from claver.data.annotations import VIDEO_EXTENSIONS

    found: set[str] = set()
    for src in sources:
        path = Path(src).expanduser().absolute()
        if path.is_file():
            found.add(str(path))
        elif path.is_dir():
            for folder, dirs, names in os.walk(path):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                found.update(str(Path(folder) / n) for n in names
                             if not n.startswith(".") and n.lower().endswith(VIDEO_EXTENSIONS))
        else:
            raise FileNotFoundError(f"{src}: no such file or folder; give video files or "
                                    "folders of videos")
    return sorted(found)


def _sha256_file(path: str) -> str:
    from claver.weights.download import sha256_file

    return sha256_file(path)


# ---------------------------------------------------------------------------- embedding

Embedded = tuple[np.ndarray, list[list[float]], float | None, str | None]


class _Embedder:
    """Videos -> unit vectors (n, E) with their spans, through a :class:`Predictor`."""

    def __init__(self, predictor: Any, window: float | None, stride: float | None,
                 workers: int) -> None:
        self.pred, self.pre = predictor, predictor.preprocess
        self.window, self.stride, self.workers = window, stride, workers
        self.dim = int(predictor.model.config.embed_dim)

    def _vectors(self, clips: list[torch.Tensor]) -> np.ndarray:
        """uint8 clips [(T, S, S, 3)] -> float32 unit vectors (n, E), ``batch_size`` at once."""
        out = []
        for i in range(0, len(clips), self.pred.batch_size):
            batch = self.pre.normalize(torch.stack(clips[i:i + self.pred.batch_size]))
            out.append(F.normalize(self.pred.video_features(batch).float(), dim=-1).cpu())
        if not out:
            return np.zeros((0, self.dim), np.float32)
        return torch.cat(out).numpy().astype(np.float32, copy=False)

    def _load(self, path: str) -> tuple[torch.Tensor | None, float | None, str | None]:
        """One clip uint8 (T, S, S, 3) at the segment centres, the duration, or an error."""
        from claver.data.decode import VideoReader

        try:
            with VideoReader(path, self.pre.backend, short_side=self.pre.short_side) as r:
                info = r.info
                clip = self.pre.crop(r.get_frames(self.pre.indices(info.num_frames)))
            return clip, float(info.duration), None
        except _READ_ERRORS as e:
            return None, None, error_line(e, path)

    def loaded(self, units: Sequence[list[str]]) -> Iterator[list[tuple]]:
        """Per unit, [(clip, duration, error)] per file; the next unit decodes in
        background threads while the caller runs the model on this one."""
        if self.workers == 0:
            for unit in units:
                yield [self._load(p) for p in unit]
            return
        with ThreadPoolExecutor(self.workers, thread_name_prefix="claver-index") as pool:
            ahead: deque = deque()
            todo = iter(units)
            for unit in todo:
                ahead.append([pool.submit(self._load, p) for p in unit])
                if len(ahead) == 2:
                    break
            while ahead:
                futures = ahead.popleft()
                unit = next(todo, None)
                if unit is not None:
                    ahead.append([pool.submit(self._load, p) for p in unit])
                yield [f.result() for f in futures]

    def whole(self, loads: list[tuple]) -> list[Embedded]:
        """One row per readable file of a unit: span [0, duration]."""
        vectors = iter(self._vectors([c for c, _, e in loads if e is None]))
        return [(np.zeros((0, self.dim), np.float32), [], None, e) if e is not None
                else (next(vectors)[None], [[0.0, d or 0.0]], d, None) for c, d, e in loads]

    def windows(self, path: str) -> Embedded:
        """One row per window of one file (``claver predict --window``'s windows)."""
        spans: list[tuple[float, float]] = []
        vectors = []
        try:
            for part, batch in self.pred.window_batches(path, self.window, self.stride,
                                                        name=path):
                spans += part
                vectors.append(F.normalize(self.pred.video_features(batch).float(), dim=-1))
        except _READ_ERRORS as e:
            return np.zeros((0, self.dim), np.float32), [], None, error_line(e, path)
        rows = torch.cat(vectors).cpu().numpy().astype(np.float32, copy=False)
        return rows, [[float(s), float(e)] for s, e in spans], spans[-1][1] if spans else 0.0, None


# -------------------------------------------------------------------------------- the run

@dataclass
class _Rows:
    """Where a file's rows come from while a run assembles the index."""

    record: FileRecord
    vectors: np.ndarray  # (rows, E), possibly a view into the old index or a chunk
    spans: np.ndarray  # (rows, 2)


def _settings(window: float | None, stride: float | None, precision: str) -> dict[str, Any]:
    if window is None:
        if stride is not None:
            raise ValueError("--stride needs --window SECONDS")
        return {"window": None, "stride": None, "precision": precision}
    if not window > 0 or (stride is not None and not stride > 0):
        raise ValueError(f"--window and --stride must be > 0 seconds, got {window}, {stride}")
    return {"window": float(window), "stride": float(stride if stride is not None else window),
            "precision": precision}


def _check_same(root: Path, header: dict[str, Any], identity: dict[str, Any],
                settings: dict[str, Any]) -> None:
    old = header["model"]
    if not (same_model(old, identity) and same_preprocessing(old, identity)):
        raise ValueError(f"{root} was built with {describe_identity(old)}, not "
                         f"{describe_identity(identity)}; use that model, or write a new "
                         "index with another --out")
    if header.get("settings") != settings:
        raise ValueError(f"{root} was built with settings {header.get('settings')}, not "
                         f"{settings}; use the same --window/--stride/--precision, or "
                         "another --out")


def _check_out(root: Path) -> None:
    """``out`` must be an index, a new or empty folder, or what an interrupted first run
    left: a folder holding other files is refused (nothing is overwritten silently)."""
    import re

    if root.exists() and not root.is_dir():
        raise FileExistsError(f"--out {root} is a file; give a folder for the index")
    if not root.is_dir() or (root / "index.json").exists():
        return
    ours = re.compile(r"^(\.lock|pending|data-\d{6})$")
    other = sorted(p.name for p in root.iterdir() if not ours.match(p.name))
    if other:
        raise FileExistsError(f"--out {root} is a folder that is not a claver index (it holds "
                              f"{other[0]!r}{' ...' if len(other) > 1 else ''}); give a new or "
                              "empty folder")


def _pending(root: Path, run: dict[str, Any], dim: int) -> tuple[dict[str, _Rows], int]:
    """Rows of an interrupted run's chunks (same model and settings) by path, and the next
    chunk number; stray or damaged chunk files are removed."""
    folder = root / PENDING
    rows: dict[str, _Rows] = {}
    last = 0
    if not folder.is_dir():
        return rows, 1
    records = sorted(folder.glob("chunk-*.json"))
    for record_path in records:
        chunk = read_chunk(record_path, run, dim)
        if chunk is None:
            continue
        last = max(last, chunk.number)
        at = 0
        for rec in chunk.files:
            rows[rec.path] = _Rows(rec, chunk.vectors[at:at + rec.rows],
                                   np.asarray(rec.spans, np.float64).reshape(-1, 2))
            at += rec.rows
    known = {p.with_suffix(s).name for p in records for s in (".json", ".npy")}
    for stray in folder.iterdir():  # torn writes: temporary files, .npy without its record
        if stray.name not in known:
            stray.unlink(missing_ok=True)
    return rows, last + 1


def _plan(files: list[str], old: Any, pending: dict[str, _Rows], rehash: bool,
          report: IndexReport) -> tuple[dict[str, _Rows], list[FileRecord]]:
    """Rows that need no model (unchanged, moved, resumed) and the files to embed."""
    done: dict[str, _Rows] = {}
    todo: list[FileRecord] = []
    by_path, by_sha = {}, {}
    if old is not None:
        for rec in old.files:
            if rec.error is None:
                rows = _Rows(rec, old.vectors[rec.first:rec.first + rec.rows],
                             old.spans[rec.first:rec.first + rec.rows])
                by_path[rec.path] = rows
                by_sha.setdefault(rec.sha256, rows)
        present = set(files)
        report.removed = sum(1 for rec in old.files if rec.path not in present)
    for path in files:
        try:
            st = os.stat(path)
        except OSError as e:
            todo.append(FileRecord(path, 0, 0, "", error=error_line(e, path)))
            continue
        stamp = (st.st_size, st.st_mtime_ns)
        got = pending.get(path)
        if got is not None and (got.record.size, got.record.mtime_ns) == stamp:
            done[path] = got
            report.resumed += 1
            continue
        got = by_path.get(path)
        if got is not None and not rehash and (got.record.size, got.record.mtime_ns) == stamp:
            done[path] = got
            report.kept += 1
            continue
        try:
            sha = _sha256_file(path)
        except OSError as e:
            todo.append(FileRecord(path, *stamp, "", error=error_line(e, path)))
            continue
        donor = got if got is not None and got.record.sha256 == sha else by_sha.get(sha)
        if donor is not None:
            rec = replace(donor.record, path=path, size=st.st_size, mtime_ns=st.st_mtime_ns)
            done[path] = _Rows(rec, donor.vectors, donor.spans)
            if donor is got:
                report.kept += 1
            else:
                report.reused += 1
            continue
        todo.append(FileRecord(path, *stamp, sha))
    return done, todo


def _progress(total: int, enabled: bool) -> Any:
    if not enabled or total < 1:
        return None
    import sys

    from tqdm.auto import tqdm

    return tqdm(total=total, unit="video", file=sys.stderr, leave=False, disable=None)


def _embed_all(root: Path, todo: list[FileRecord], embedder: _Embedder, run: dict[str, Any],
               number: int, progress: bool, on_chunk: Callable[[], None]
               ) -> dict[str, _Rows]:
    """Embed ``todo`` (path order) in units, committing a chunk per unit."""
    readable = [r for r in todo if r.error is None]
    failed = [r for r in todo if r.error is not None]
    size = 1 if embedder.window is not None else embedder.pred.batch_size
    units = [readable[i:i + size] for i in range(0, len(readable), size)]
    done: dict[str, _Rows] = {}
    bar = _progress(len(readable), progress)
    try:
        if embedder.window is not None:
            results: Iterator[list[Embedded]] = (
                [embedder.windows(u[0].path)] for u in units)
        else:
            results = (embedder.whole(loads) for loads in
                       embedder.loaded([[r.path for r in u] for u in units]))
        for unit, embedded in zip(units, results, strict=True):
            records, vectors = [], []
            for rec, (vec, spans, duration, error) in zip(unit, embedded, strict=True):
                records.append(replace(rec, rows=len(spans), duration=duration, error=error,
                                       spans=spans))
                vectors.append(vec)
            block = np.concatenate(vectors) if vectors else np.zeros((0, embedder.dim))
            write_chunk(root, number, block, records, run)
            number += 1
            at = 0
            for rec in records:
                done[rec.path] = _Rows(rec, block[at:at + rec.rows],
                                       np.asarray(rec.spans, np.float64).reshape(-1, 2))
                at += rec.rows
            if bar is not None:
                bar.update(len(unit))
            on_chunk()
    finally:
        if bar is not None:
            bar.close()
    for rec in failed:
        done[rec.path] = _Rows(rec, np.zeros((0, embedder.dim), np.float32),
                               np.zeros((0, 2)))
    return done


def _kill_hook() -> Callable[[], None]:
    """After ``$CLAVER_INDEX_KILL_AFTER_CHUNKS`` chunks this process SIGKILLs itself (tests
    of crash safety); a no-op when unset."""
    limit = os.environ.get(KILL_AFTER_ENV)
    if not limit:
        return lambda: None
    count = [0]

    def hook() -> None:
        count[0] += 1
        if count[0] >= int(limit):
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def _records(files: list[str], rows: dict[str, _Rows]) -> list[FileRecord]:
    """The final file records, in path order, with their first rows."""
    records, at = [], 0
    for path in files:
        rec = rows[path].record
        records.append(replace(rec, first=at, spans=[]))
        at += rec.rows
    return records


def _assemble(records: list[FileRecord], rows: dict[str, _Rows], dim: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """vectors float32 (N, E) and spans float64 (N, 2) in the records' order."""
    total = sum(r.rows for r in records)
    vectors = np.empty((total, dim), np.float32)
    spans = np.empty((total, 2), np.float64)
    for rec in records:
        got = rows[rec.path]
        vectors[rec.first:rec.first + rec.rows] = got.vectors
        spans[rec.first:rec.first + rec.rows] = got.spans
    return vectors, spans


def index(videos: str | os.PathLike | Sequence[str | os.PathLike] | None,
          out: str | os.PathLike, model: Any = None, *, window: float | None = None,
          stride: float | None = None, batch_size: int = 8, workers: int = 2,
          precision: str = "fp32", device: str | None = None, backend: str | None = None,
          rehash: bool = False, progress: bool = False, allow_unverified: bool = False
          ) -> Any:
    """Index video files and folders into ``out``; returns the :class:`Index`
    (``.report``: an :class:`IndexReport`).

    ``videos``: files or folders (searched recursively), or None to refresh the sources
    recorded in an existing index. ``model``: named weights, a checkpoint path, a model
    object or None (:func:`claver.pretrained.default_model`). ``window``/``stride``: seconds,
    one row per window (videos shorter than a window: one row). ``rehash``: hash every file
    even when its size and mtime are unchanged. An existing index must have been built by
    the same model, preprocessing and settings (otherwise: ``ValueError``).
    """
    from claver.inputs import Preprocess
    from claver.pretrained import resolve_model
    from claver.search.query import Index
    from claver.zeroshot import Predictor

    start = time.perf_counter()
    root = Path(out).expanduser().absolute()
    settings = _settings(window, stride, precision)
    _check_out(root)
    if batch_size < 1 or workers < 0:
        raise ValueError(f"batch_size must be >= 1 and workers >= 0, got {batch_size}, "
                         f"{workers}")
    spec = None
    if isinstance(model, (str, os.PathLike)) or model is None:
        from claver.pretrained import PRETRAINED, default_model

        name = str(model) if model is not None else default_model()
        path = Path(name).expanduser()
        spec = str(path.absolute()) if name not in PRETRAINED and path.exists() else name
    resolved = resolve_model(model if spec is None else spec, allow_unverified=allow_unverified)
    pre = Preprocess.for_model(resolved, backend=backend)
    pred = Predictor(resolved, preprocess=pre, device=device, precision=precision,
                     batch_size=batch_size, workers=0)
    identity = model_identity(resolved, pre, spec)
    run = {"model": identity, "settings": settings}
    report = IndexReport()
    with _lock_for(root):
        header = read_header(root) if root.is_dir() else None
        if header is not None:
            _check_same(root, header, identity, settings)
        if videos is None:
            if header is None:
                raise ValueError(f"{root} is not an index yet: give the videos or folders "
                                 "to index")
            sources = list(header.get("sources") or [])
        else:
            given = [videos] if isinstance(videos, (str, os.PathLike)) else list(videos)
            sources = [str(Path(v).expanduser().absolute()) for v in given]
        if not sources:
            raise ValueError("no videos given: pass video files or folders")
        files = find_videos(sources)
        if not files:
            raise ValueError(f"no videos found under {', '.join(sources)} (extensions: .mp4, "
                             ".avi, .mkv, .webm, .mov, ...)")
        old = read_index_data(root, header, mmap=True) if header is not None else None
        embedder = _Embedder(pred, settings["window"], settings["stride"], workers)
        pending, number = _pending(root, run, embedder.dim)
        rows, todo = _plan(files, old, pending, rehash, report)
        embedded = _embed_all(root, todo, embedder, run, number, progress, _kill_hook())
        report.embedded = sum(r.record.error is None for r in embedded.values())
        rows.update(embedded)
        records = _records(files, rows)
        unchanged = old is not None and header.get("sources") == sources and [
            r.to_json() for r in records] == [r.to_json() for r in old.files]
        if not unchanged:  # a re-run that changes nothing rewrites nothing
            vectors, spans = _assemble(records, rows, embedder.dim)
            header = write_index(root, {"model": identity, "settings": settings,
                                        "sources": sources}, vectors, spans, records)
        del old, rows
        import shutil

        shutil.rmtree(root / PENDING, ignore_errors=True)
    report.files, report.rows = len(records), sum(r.rows for r in records)
    report.failed = [(r.path, r.error) for r in records if r.error is not None]
    report.seconds = time.perf_counter() - start
    result = Index(root, model=resolved)
    result._model_identity = identity  # noqa: SLF001 (same package; saves hashing again)
    result.report = report
    return result
