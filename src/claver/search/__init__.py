"""Text-to-video search: index a folder of videos once, find moments by describing them.

- :func:`index` (``claver index``): embed videos (or windows of long videos) into an index
  folder, incrementally and crash-safely (:mod:`claver.search.builder`).
- :class:`Index` (``claver search``): load an index and rank its rows against text or
  embeddings (:mod:`claver.search.query`); exact cosine search in torch, numpy or FAISS.
- The on-disk format is documented in :mod:`claver.search.store`.
"""

from __future__ import annotations

from claver.search.builder import IndexReport, find_videos, index
from claver.search.query import BACKENDS, Hit, Index, ModelMismatchError, exact_topk

__all__ = ["BACKENDS", "Hit", "Index", "IndexReport", "ModelMismatchError", "exact_topk",
           "find_videos", "index"]
