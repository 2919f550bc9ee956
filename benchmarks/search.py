"""Benchmark exact text-to-video search (``claver search``) on random unit vectors.

What it measures
----------------
For each index size N (default 1e4, 1e5, 1e6 rows of dim 512, float32 unit vectors drawn
with a fixed seed; 2 GiB at 1e6):

- **build**: writing the index in claver's on-disk format (``claver.search.store``:
  ``vectors.npy`` + ``spans.npy`` + ``files.jsonl`` + ``index.json``) and loading it back
  with :class:`claver.search.Index` (every array checked against the header, values checked
  finite); building a FAISS ``IndexFlatIP`` when ``faiss-cpu`` is installed.
- **query**: one batch of Q queries (default 16), top k (default 10), median of
  ``--repeats`` runs, for each exact implementation: ``torch`` (claver's default: chunked
  matrix product + ``topk``), ``numpy`` (chunked product + ``argpartition``), ``faiss``
  (``IndexFlatIP.search``), and the **baseline**: the obvious numpy code, one full
  ``V @ q.T`` then a full ``argsort`` of every score. ``speed`` = baseline / method (> 1:
  faster than the baseline). A pure-Python loop over rows (one ``np.dot`` per row) is timed
  once on the smallest N as a second, much slower reference.
- **memory**: MiB of the vectors, and the growth of the process's resident memory while
  loading the index and while building the FAISS index (``/proc/self/statm``; 0 where that
  is not available).

Before the table it checks that every implementation returns the same rows as the full sort
(rows ordered by score, then row) and prints ``all backends return the same rows: yes``;
otherwise it exits with status 1.

How to run
----------
    .venv/bin/python benchmarks/search.py             # 1e4, 1e5, 1e6: about a minute
    .venv/bin/python benchmarks/search.py --quick     # a few seconds (tests use it)
    .venv/bin/python benchmarks/search.py --sizes 100000 --queries 64

Torch's thread count is left at its default (``--threads N`` sets torch's and FAISS's) and
printed with the load average: on a busy shared machine absolute times move between runs,
and with more threads than idle cores torch/OpenMP threads spin-wait for each other (on a
2-core machine at load 8, a 2000-row torch query took 48 ms with 2 threads, 0.2 ms with 1).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from claver.search import Index, exact_topk
from claver.search.query import flat_ip_index
from claver.search.store import FileRecord, write_index


def rss_mib() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float32)
    for i in range(0, n, 1 << 16):
        block = rng.standard_normal((min(1 << 16, n - i), dim), dtype=np.float32)
        out[i:i + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def full_sort(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """The baseline: every score, then a full sort (ties by row: a stable sort)."""
    scores = vectors @ queries.T  # (N, Q)
    return np.argsort(-scores, axis=0, kind="stable")[:k].T


def python_loop(vectors: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    scores = [(float(np.dot(row, query)), i) for i, row in enumerate(vectors)]
    scores.sort(key=lambda s: (-s[0], s[1]))
    return [i for _, i in scores[:k]]


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def write_and_load(vectors: np.ndarray, folder: Path) -> tuple[float, float, float, Index]:
    """(write s, load s, load RSS growth MiB, loaded index) of one file per 100 rows."""
    n = vectors.shape[0]
    per = 100
    files = [FileRecord(f"/videos/{i:07d}.mp4", 1000, 1, "0" * 64, min(per, n - i * per),
                        i * per, per / 10.0) for i in range((n + per - 1) // per)]
    spans = np.stack([np.arange(n) % per / 10.0, np.arange(n) % per / 10.0 + 0.1], 1)
    header = {"model": {"spec": None, "architecture": "benchmark", "weights_sha256": "0",
                        "config_sha256": "0"}, "settings": {}, "sources": []}
    t0 = time.perf_counter()
    write_index(folder, header, vectors, spans, files)
    write_s = time.perf_counter() - t0
    before = rss_mib()
    t0 = time.perf_counter()
    idx = Index(folder)
    return write_s, time.perf_counter() - t0, rss_mib() - before, idx


def measure(n: int, queries: np.ndarray, args: argparse.Namespace, have_faiss: bool
            ) -> tuple[bool, list[tuple]]:
    """(same rows as the full sort everywhere, table rows) for an index of ``n`` rows."""
    with tempfile.TemporaryDirectory(prefix="claver-search-bench-") as tmp:
        write_s, load_s, load_mib, idx = write_and_load(unit_vectors(n, args.dim, seed=0),
                                                        Path(tmp))
        vectors = idx.vectors
        truth_s, truth = timed(lambda: full_sort(vectors, queries, args.k),
                               args.repeats if n < 500_000 else 1)  # seconds each at 1e6
        rows = [("baseline: full sort", "-", truth_s, truth)]
        for backend in ("torch", "numpy"):
            t, (_, got) = timed(lambda b=backend: exact_topk(
                vectors, queries, args.k, backend=b), args.repeats)
            rows.append((f"claver {backend}", "-", t, got))
        if have_faiss:
            before = rss_mib()
            t0 = time.perf_counter()
            fidx = flat_ip_index(vectors)
            build = f"{time.perf_counter() - t0:.2f}s +{rss_mib() - before:.0f}MiB"
            t, (_, got) = timed(lambda: exact_topk(vectors, queries, args.k, backend="faiss",
                                                   faiss_index=fidx), args.repeats)
            rows.append(("faiss IndexFlatIP", build, t, got))
        same = all(np.array_equal(np.asarray(got), truth) for _, _, _, got in rows[1:])
        mib = vectors.nbytes / 2**20
        table = [(n, name, build, t, truth_s / t, mib) for name, build, t, _ in rows]
        table.append((n, "store write / load", f"{write_s:.2f}s / {load_s:.2f}s", None, None,
                      load_mib))
    return same, table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10000,100000,1000000")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queries", type=int, default=16)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-faiss", action="store_true", help="skip FAISS even if installed")
    p.add_argument("--quick", action="store_true", help="sizes 2000,20000, dim 64")
    p.add_argument("--threads", type=int, help="torch and FAISS threads (numpy's BLAS: set "
                                               "OPENBLAS_NUM_THREADS); default: theirs")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.sizes, args.dim, args.repeats = "2000,20000", 64, 2
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    try:
        import faiss

        have_faiss = not args.no_faiss
        if args.threads:
            faiss.omp_set_num_threads(args.threads)
    except ImportError:
        have_faiss = False
    print(f"exact top-{args.k} search, {args.queries} queries per batch, dim {args.dim}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{os.getloadavg()[0]:.1f}; faiss: {'yes' if have_faiss else 'not installed'}")
    queries = unit_vectors(args.queries, args.dim, seed=1)
    base = unit_vectors(sizes[0], args.dim, seed=0)
    loop_s, _ = timed(lambda: [python_loop(base, q, args.k) for q in queries], 1)
    sort_s, _ = timed(lambda: full_sort(base, queries, args.k), args.repeats)
    print(f"python loop over rows, N={sizes[0]}: {1000 * loop_s:.0f} ms per batch; the full "
          f"sort is {loop_s / sort_s:.0f}x faster, claver's torch path below faster again")
    same, table = True, []
    for n in sizes:
        ok, rows = measure(n, queries, args, have_faiss)
        same &= ok
        table += rows
    print(f"all backends return the same rows: {'yes' if same else 'NO'}")
    print(f"\n  {'N':>8}  {'method':<20} {'build':>18} {'query ms':>9} {'per query':>10} "
          f"{'MiB':>7} {'speed':>7}")
    for n, name, build, t, speed, mib in table:
        q_ms = f"{1000 * t:9.1f}" if t is not None else f"{'':>9}"
        per = f"{1000 * t / args.queries:10.2f}" if t is not None else f"{'':>10}"
        ratio = f"{speed:6.2f}x" if speed is not None else "      x"
        print(f"  {n:>8}  {name:<20} {build:>18} {q_ms} {per} {mib:7.0f} {ratio}")
    print("\nspeed: baseline (full sort) time / method time, same N; MiB: the vectors (store "
          "row: resident memory growth while loading)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
