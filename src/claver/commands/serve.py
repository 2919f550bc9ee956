"""``claver serve``: a local web page and JSON API for one model (FastAPI + uvicorn)."""

from __future__ import annotations

import argparse
import ipaddress
from pathlib import Path


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from claver.serve.app import create_app
    except ImportError as e:
        raise RuntimeError(f"claver serve needs FastAPI, uvicorn and python-multipart ({e}); "
                           "install them with: pip install 'claver[serve]'") from None
    from claver.commands.predict import training_text
    from claver.pretrained import default_model
    from claver.serve.service import ServeOptions, Service

    name = args.model or default_model()
    options = ServeOptions(root=Path(args.root).resolve() if args.root else None,
                           max_upload_mb=args.max_upload_mb,
                           max_duration_s=args.max_duration_s, max_jobs=args.max_jobs)
    service = Service(name, name=name, options=options, record=training_text(name),
                      device=args.device, allow_unverified=args.allow_unverified,
                      index=args.index)
    url = f"http://{args.host if ':' not in args.host else f'[{args.host}]'}:{args.port}/"
    print(f"model   {name}: {service.architecture}")
    if options.root is not None:
        print(f"folder  {options.root} (the page may open videos under it, nothing outside)")
    if service.index is not None:
        print(f"index   {service.index.path}: {len(service.index)} rows of "
              f"{len(service.index.files)} files (GET /v1/search?q=...)")
    print(f"limits  uploads {options.max_upload_mb:g} MB, videos {options.max_duration_s:g} s, "
          f"{options.max_jobs} job(s) at once")
    if _is_loopback(args.host):
        print(f"serving {url}  (this machine only; --host 0.0.0.0 to let others connect)")
    else:
        print(f"serving {url}  WARNING: reachable from other machines, with no password")
    uvicorn.run(create_app(service), host=args.host, port=args.port, log_level="warning",
                timeout_graceful_shutdown=5)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve", help="a local web page and JSON API for one model (pip install "
                      "'claver[serve]')",
        description="Load one model and serve a web page (drop a video, type labels, see the "
                    "top labels and where the model looked) and a JSON API: GET /v1/model, "
                    "POST /v1/predict (same JSON as `claver predict --json`).")
    p.add_argument("--model", help="named weights (claver models list), a checkpoint path, or "
                                   "$CLAVER_MODEL; default openai-vit-b32")
    p.add_argument("--root", metavar="DIR",
                   help="let requests name video files under DIR (never outside it)")
    p.add_argument("--index", metavar="INDEX",
                   help="an index built by `claver index` with this model: adds a search box "
                        "and GET /v1/search?q=TEXT&k=10")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--max-upload-mb", type=float, default=200.0,
                   help="largest upload in MB (default 200)")
    p.add_argument("--max-duration-s", type=float, default=600.0,
                   help="longest video in seconds (default 600)")
    p.add_argument("--max-jobs", type=int, default=2,
                   help="jobs running or waiting at once; more are refused with 503 "
                        "(default 2)")
    p.add_argument("--device", help="cpu (default), cuda, cuda:1 ...")
    p.add_argument("--allow-unverified", action="store_true",
                   help="allow downloading named weights that have no published sha256")
    p.set_defaults(func=_cmd_serve)
