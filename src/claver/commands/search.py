"""``claver index`` and ``claver search``: text-to-video search over your own footage."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def _cmd_index(args: argparse.Namespace) -> int:
    from claver.search import index
    from claver.search.identity import describe_identity

    idx = index(args.videos or None, args.out, args.model, window=args.window,
                stride=args.stride, batch_size=args.batch_size, workers=args.workers,
                precision=args.precision, device=args.device, backend=args.backend,
                rehash=args.rehash, progress=not args.no_progress,
                allow_unverified=args.allow_unverified)
    report = idx.report
    if args.json:
        print(json.dumps({"index": str(idx.path), "model": idx.identity,
                          "settings": idx.header.get("settings"), **vars(report),
                          "failed": [{"file": f, "error": e} for f, e in report.failed]},
                         indent=2))
    else:
        print(f"index   {idx.path}: {report.summary()}")
        print(f"model   {describe_identity(idx.identity)}")
        for _, error in report.failed:
            print(f"FAILED  {error}")
    if report.failed:
        print(f"claver index: {len(report.failed)} of {report.files} video(s) could not be "
              "read and are not searchable (listed above); fix or remove them and run again",
              file=sys.stderr)
        return 1
    return 0


def _templates(args: argparse.Namespace, spec: str | None) -> Any:
    """--template (one, several, or a named set); else what a `claver train` checkpoint
    recorded; else the default ("a video of {}.")."""
    if args.templates:
        return args.templates[0] if len(args.templates) == 1 else args.templates
    from claver.commands.predict import training_text

    record = training_text(spec)
    return record["templates"] if record is not None else None


def _cmd_search(args: argparse.Namespace) -> int:
    from claver.commands.predict import descriptions_from_args
    from claver.search import Index

    if args.top < 1:
        raise ValueError(f"--top must be >= 1, got {args.top}")
    idx = Index(args.index, model=args.model, device=args.device)
    queries = list(dict.fromkeys(args.queries))
    templates = _templates(args, args.model or idx.identity.get("spec"))
    hits = idx.search(queries, k=args.top, templates=templates,
                      descriptions=descriptions_from_args(args, queries), backend=args.backend)
    if args.json:
        print(json.dumps({"index": str(idx.path), "model": idx.identity, "rows": len(idx),
                          "results": [{"query": q, "hits": [h.to_dict() for h in hs]}
                                      for q, hs in zip(queries, hits, strict=True)]},
                         indent=2))
        return 0
    width = max(4, *(len(h.file) for hs in hits for h in hs)) if len(idx) else 4
    print(f"index   {idx.path}: {len(idx)} row(s) of {len(idx.files)} file(s)")
    for q, hs in zip(queries, hits, strict=True):
        print(f"\n{q!r}")
        print(f"  {'rank':>4}  {'score':>7}  {'start':>8}  {'end':>8}  {'file':<{width}}")
        for h in hs:
            print(f"  {h.rank + 1:>4}  {h.score:7.4f}  {h.start:8.2f}  {h.end:8.2f}  {h.file}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "index", help="embed videos (or windows of long videos) into a searchable index",
        description="Embed every video under the given files/folders into INDEX, one vector "
                    "per video or per window. Re-runs embed only new or changed files (size, "
                    "mtime, sha256) and drop deleted ones; an interrupted run keeps what it "
                    "embedded. Unreadable videos are reported and skipped (exit status 1).")
    p.add_argument("videos", nargs="*", metavar="VIDEO_OR_DIR",
                   help="video files or folders (searched recursively); none: refresh the "
                        "sources recorded in INDEX")
    p.add_argument("--out", required=True, metavar="INDEX", help="index folder")
    p.add_argument("--model", help="named weights (claver models list), a checkpoint path, "
                                   "or $CLAVER_MODEL; default openai-vit-b32")
    p.add_argument("--window", type=float, metavar="SECONDS",
                   help="one vector per window of this many seconds (long videos)")
    p.add_argument("--stride", type=float, metavar="SECONDS",
                   help="a window starts every this many seconds (default: --window)")
    p.add_argument("--batch-size", type=int, default=8, help="videos/windows per forward pass "
                                                             "and per crash-safe chunk")
    p.add_argument("--workers", type=int, default=2, help="background decoding threads")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    p.add_argument("--device", help="cpu (default), cuda, cuda:1 ...")
    p.add_argument("--backend", help="video decoder: pyav (default), decord, torchcodec")
    p.add_argument("--rehash", action="store_true",
                   help="hash every file, even those whose size and mtime are unchanged")
    p.add_argument("--allow-unverified", action="store_true",
                   help="allow downloading named weights that have no published sha256")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_index)

    s = subparsers.add_parser(
        "search", help="find videos and moments in an index by describing them",
        description="Rank the videos/windows of INDEX against each text query (cosine of "
                    "the index model's embeddings). Several queries at once; templates and "
                    "descriptions as in `claver predict`. A --model other than the index's "
                    "is refused.")
    s.add_argument("index", metavar="INDEX", help="folder written by `claver index`")
    s.add_argument("queries", nargs="+", metavar="TEXT", help="what to look for")
    s.add_argument("--top", type=int, default=10, help="results per query (default 10)")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.add_argument("--model", help="the index's model (default: the one it records)")
    s.add_argument("--template", action="append", dest="templates", metavar="TEMPLATE",
                   help="text template with {} for the query (repeat to average several; "
                        "'claver'/'actionclip': the papers' 16; default 'a video of {}.')")
    s.add_argument("--descriptions",
                   help="extra text rows per query: JSON {query: [description, ...]}, or the "
                        "JSONL / CSV of `claver prompts` (class ids index the queries)")
    s.add_argument("--backend", default="torch", choices=("torch", "numpy", "faiss"),
                   help="exact search implementation (faiss: pip install 'claver[search]')")
    s.add_argument("--device", help="device for the text model: cpu (default), cuda ...")
    s.set_defaults(func=_cmd_search)
