"""Search an index: :class:`Index` (``claver search``) and exact top-k cosine search.

    idx = claver.Index("runs/footage-index")
    for hit in idx.search("someone slicing bread", k=5):
        print(hit.score, hit.file, hit.start, hit.end)

A text query is embedded by the index's own model with the same text-row machinery as
``claver predict`` (:func:`claver.inputs.text_rows`: one row per template, one per
description): the query vector is the mean of the rows' unit text embeddings, normalised.
Scores are cosines between that vector and the stored unit video vectors. A model whose
weights or architecture differ from the index's is refused (:class:`ModelMismatchError`).

Search is exact: ``backend="torch"`` (default; chunked matrix products and ``topk``),
``"numpy"`` (the same with ``argpartition``) or ``"faiss"`` (``IndexFlatIP``, when
``faiss-cpu`` is installed: ``pip install "claver[search]"``); all three return the same
rows. Ties are ordered by row (file path, then time).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from claver.search.identity import describe_identity, model_identity, same_model
from claver.search.store import FileRecord, read_header, read_index_data

__all__ = ["BACKENDS", "Hit", "Index", "ModelMismatchError", "exact_topk"]

BACKENDS = ("torch", "numpy", "faiss")
_CHUNK = 1 << 16  # rows scored at a time: bounds the (rows, queries) score matrix


class ModelMismatchError(ValueError):
    """The query model is not the model that built the index."""


@dataclass(frozen=True)
class Hit:
    """One result: ``file`` and the ``start``/``end`` seconds of the matched row (the whole
    video when the index has no windows), its cosine ``score``, ``rank`` (0 = best) and
    ``row`` in the index."""

    file: str
    start: float
    end: float
    score: float
    rank: int
    row: int

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank + 1, "score": round(self.score, 6), "file": self.file,
                "start": round(self.start, 3), "end": round(self.end, 3), "row": self.row}


def _ordered(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Candidates (Q, M) -> the best ``k`` per query: score descending, then row."""
    out_s = np.empty((scores.shape[0], k), np.float32)
    out_r = np.empty((scores.shape[0], k), np.int64)
    for q in range(scores.shape[0]):
        order = np.lexsort((rows[q], -scores[q]))[:k]
        out_s[q], out_r[q] = scores[q, order], rows[q, order]
    return out_s, out_r


def exact_topk(vectors: np.ndarray, queries: np.ndarray, k: int, *, backend: str = "torch",
               faiss_index: Any = None, chunk: int = _CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """Exact maximum inner product search: ``vectors`` (N, E) float32, ``queries`` (Q, E)
    -> (scores float32 (Q, k), rows int64 (Q, k)), best first; ``k`` is capped at N.

    ``backend``: "torch" / "numpy" score ``chunk`` rows at a time (memory (chunk, Q));
    "faiss" searches ``faiss_index`` (an ``IndexFlatIP`` holding ``vectors``; built here
    when None)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    n = vectors.shape[0]
    k = min(k, n)
    queries = np.ascontiguousarray(queries, np.float32)
    if k == 0:
        return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
    if backend == "faiss":
        index = faiss_index if faiss_index is not None else flat_ip_index(vectors)
        scores, rows = index.search(queries, k)
        return _ordered(scores.astype(np.float32), rows.astype(np.int64), k)
    cand_s, cand_r = [], []
    q_t = torch.from_numpy(queries)
    for i in range(0, n, chunk):
        block = vectors[i:i + chunk]
        kk = min(k, block.shape[0])
        if backend == "torch":
            s = torch.from_numpy(np.ascontiguousarray(block)) @ q_t.T  # (rows, Q)
            top = torch.topk(s, kk, dim=0)
            cand_s.append(top.values.T.numpy())
            cand_r.append(top.indices.T.numpy().astype(np.int64) + i)
        else:
            s = (block @ queries.T).T  # (Q, rows)
            part = np.argpartition(-s, kk - 1, axis=1)[:, :kk] if kk < s.shape[1] else \
                np.broadcast_to(np.arange(s.shape[1]), s.shape)
            cand_s.append(np.take_along_axis(s, part, 1))
            cand_r.append(part.astype(np.int64) + i)
    return _ordered(np.concatenate(cand_s, 1), np.concatenate(cand_r, 1), k)


def flat_ip_index(vectors: np.ndarray) -> Any:
    """A FAISS ``IndexFlatIP`` (exact inner product) holding ``vectors`` (N, E)."""
    try:
        import faiss
    except ImportError:
        raise ImportError("backend 'faiss' needs faiss-cpu: pip install \"claver[search]\" "
                          "(or use the default backend 'torch')") from None
    index = faiss.IndexFlatIP(vectors.shape[1])
    for i in range(0, vectors.shape[0], _CHUNK):
        index.add(np.ascontiguousarray(vectors[i:i + _CHUNK], np.float32))
    return index


class Index:
    """A video index written by :func:`claver.index` / ``claver index``, loaded to search.

    ``model``: the model for text queries (a model object, named weights or a checkpoint
    path); default: the one recorded in the index, loaded on the first text query. It must
    be the model that built the index. ``mmap``: map the vectors instead of reading them.
    Attributes: ``vectors`` float32 (N, E), ``spans`` float64 (N, 2), ``files`` (records with
    path, size, mtime, sha256, rows, error), ``header``; ``report`` after :func:`claver.index`.
    A server can load one at start-up and call :meth:`search` from one thread at a time.
    """

    def __init__(self, path: str | os.PathLike, model: Any = None, *, mmap: bool = False,
                 device: str | None = None) -> None:
        self.path = Path(path).expanduser()
        header = read_header(self.path) if self.path.is_dir() else None
        if header is None:
            raise FileNotFoundError(f"{self.path}: no index here (no index.json); build one "
                                    "with `claver index VIDEOS... --out INDEX`")
        data = read_index_data(self.path, header, mmap=mmap)
        self.header, self.vectors, self.spans = header, data.vectors, data.spans
        self.files: list[FileRecord] = data.files
        counts = np.array([f.rows for f in self.files], np.int64)
        self._file_of_row = np.repeat(np.arange(len(self.files)), counts)
        self.identity: dict[str, Any] = header["model"]
        self.device = device
        self.report: Any = None
        self._model = model
        self._model_identity: dict[str, Any] | None = None
        self._predictor: Any = None
        self._faiss: Any = None

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def failed(self) -> list[FileRecord]:
        """Files that could not be read when the index was built."""
        return [f for f in self.files if f.error is not None]

    def __repr__(self) -> str:
        return (f"Index({str(self.path)!r}, {len(self)} rows of {self.dim}, "
                f"{len(self.files)} files, model {describe_identity(self.identity)})")

    # -- text ----------------------------------------------------------------------
    def _text_predictor(self) -> Any:
        if self._predictor is not None:
            return self._predictor
        from claver.inputs import Preprocess
        from claver.pretrained import resolve_model
        from claver.zeroshot import Predictor

        given = self._model if self._model is not None else self.identity.get("spec")
        if given is None:
            raise ValueError(f"{self.path} was built from a model object, not a named model or "
                             "checkpoint; pass model=... (the same model) to search it by text")
        model = resolve_model(given)
        self.check_model(model, spec=str(given) if isinstance(given, (str, os.PathLike))
                         else None)
        self._predictor = Predictor(model, preprocess=Preprocess.for_model(model),
                                    device=self.device)
        return self._predictor

    def check_model(self, model: torch.nn.Module, spec: str | None = None) -> None:
        """Raise :class:`ModelMismatchError` unless ``model`` built this index (``spec``:
        its name or path, for the message)."""
        from claver.inputs import Preprocess

        if self._model_identity is None or model is not self._model:
            self._model_identity = model_identity(model, Preprocess.for_model(model), spec)
            self._model = model
        if not same_model(self.identity, self._model_identity):
            raise ModelMismatchError(
                f"{self.path} was built with {describe_identity(self.identity)}; the query "
                f"model is {describe_identity(self._model_identity)}: search with the index's "
                "model, or rebuild the index with this one")

    def encode_queries(self, texts: Sequence[str], *,
                       templates: str | Sequence[str] | None = None,
                       descriptions: Mapping[str, Sequence[str] | str] | None = None
                       ) -> np.ndarray:
        """Unit query vectors float32 (Q, E): per text, the normalised mean of its text rows
        (templates on the text, then its descriptions; see :func:`claver.inputs.text_rows`)."""
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise ValueError(f"query {i} is {t!r}; queries must be non-empty text")
        unique = list(dict.fromkeys(texts))
        pred = self._text_predictor()
        pred.set_labels(unique, templates=templates, descriptions=descriptions)
        rows = pred.text_features.float().mean(0)  # (C, E)
        vecs = torch.nn.functional.normalize(rows, dim=-1).cpu().numpy()
        where = {t: i for i, t in enumerate(unique)}
        return vecs[[where[t] for t in texts]].astype(np.float32)

    # -- search --------------------------------------------------------------------
    def search(self, query: str | Sequence[str] | np.ndarray | torch.Tensor, k: int = 10, *,
               templates: str | Sequence[str] | None = None,
               descriptions: Mapping[str, Sequence[str] | str] | None = None,
               backend: str = "torch") -> list[Hit] | list[list[Hit]]:
        """The ``k`` best rows for a query: text, a list of texts, or embeddings (E,) /
        (Q, E) (normalised here). One query -> a list of :class:`Hit`; several -> a list
        of such lists, in query order."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        single = isinstance(query, str) or (
            isinstance(query, (np.ndarray, torch.Tensor)) and query.ndim == 1)
        if isinstance(query, (str, list, tuple)):
            texts = [query] if isinstance(query, str) else list(query)
            if not texts:
                raise ValueError("no queries given")
            vecs = self.encode_queries(texts, templates=templates, descriptions=descriptions)
        else:
            vecs = self._embeddings(query)
        if backend == "faiss" and self._faiss is None:
            self._faiss = flat_ip_index(self.vectors)
        scores, rows = exact_topk(self.vectors, vecs, k, backend=backend,
                                  faiss_index=self._faiss)
        hits = [[self._hit(int(r), float(s), rank) for rank, (s, r) in
                 enumerate(zip(scores[q], rows[q], strict=True))] for q in range(len(vecs))]
        return hits[0] if single else hits

    def _embeddings(self, query: Any) -> np.ndarray:
        x = query.detach().cpu().float().numpy() if isinstance(query, torch.Tensor) else \
            np.asarray(query, np.float32)
        x = x[None] if x.ndim == 1 else x
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"query embeddings must be (E,) or (Q, E) with E = {self.dim} "
                             f"(this index), got shape {tuple(x.shape)}")
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        if not np.isfinite(x).all() or (norms == 0).any():
            raise ValueError("query embeddings must be finite and non-zero")
        return (x / norms).astype(np.float32)

    def _hit(self, row: int, score: float, rank: int) -> Hit:
        f = self.files[int(self._file_of_row[row])]
        start, end = self.spans[row]
        return Hit(f.path, float(start), float(end), score, rank, row)
