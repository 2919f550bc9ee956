"""The HTTP side of ``claver serve`` (FastAPI): the page, ``GET /v1/model``, ``POST
/v1/predict``, ``GET /v1/search`` (with ``--index``).

``POST /v1/predict`` takes a form (``multipart/form-data`` or urlencoded) with either a
``video`` file or a ``path`` under ``--root``, and optionally ``labels`` (comma-separated or
one per line; default: the checkpoint's classes), ``template`` (repeatable; a format string
with ``{}`` or a named set), ``topk``, ``window``/``stride``/``smooth``/``threshold`` (long
videos), ``explain`` and ``plot`` (``1``/``true``). It answers what ``claver predict --json``
prints for that video. ``GET /v1/search?q=TEXT&k=10`` ranks the index loaded with
``--index`` against the text: ``{"query", "results": [{"rank", "score", "file", "start",
"end", "thumbnail"}]}`` (404 without an index). Errors are ``{"error": "..."}`` with a 4xx
code (503 when busy).

The request body is counted while it arrives (:class:`BodyLimit`): a body larger than
``--max-upload-mb`` is refused with 413 as soon as that many bytes have come, and a declared
``Content-Length`` over the limit before anything is read. Uploads go to a temporary folder
that is removed after the request.
"""

from __future__ import annotations

import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from claver.serve.service import RequestError, Service, parse_labels

__all__ = ["BodyLimit", "create_app"]

_FORM_SLACK = 1 << 16  # bytes of multipart headers and small fields beyond the video itself
_TRUE = ("1", "true", "yes", "on")


class BodyTooLarge(Exception):
    """The request body passed the limit while it was being read."""


class BodyLimit:
    """ASGI middleware: refuse HTTP request bodies over ``max_bytes`` (413, JSON naming
    ``max_upload_mb``)."""

    def __init__(self, app: Any, max_bytes: int, max_upload_mb: float) -> None:
        self.app, self.max_bytes, self.max_upload_mb = app, max_bytes, max_upload_mb

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _too_large(self.max_upload_mb)(scope, receive, send)
            return
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge
            return message

        await self.app(scope, counted, send)


def _too_large(max_upload_mb: float) -> JSONResponse:
    return JSONResponse({"error": f"the upload is larger than {max_upload_mb:g} MB, this "
                                  "server's limit (--max-upload-mb)"}, status_code=413)


def _number(form: Any, key: str, kind: type, default: Any = None) -> Any:
    value = form.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    try:
        return kind(value)
    except (TypeError, ValueError):
        what = "an integer" if kind is int else "a number"
        raise RequestError(f"{key}={str(value)[:40]!r} is not {what}") from None


def create_app(service: Service) -> Any:
    """The ASGI app (FastAPI wrapped in :class:`BodyLimit`) serving ``service``."""
    app = FastAPI(title="claver serve", docs_url=None, redoc_url=None, openapi_url=None)
    limit = service.options.max_upload_bytes + _FORM_SLACK
    page = resources.files("claver.serve").joinpath("static/index.html").read_text("utf-8")

    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/v1/model")
    async def model() -> dict[str, Any]:
        return service.info()

    @app.post("/v1/predict")
    async def predict(request: Request) -> JSONResponse:
        with service.job():
            try:
                form = await request.form(max_files=1, max_fields=40)
            except BodyTooLarge:
                return _too_large(service.options.max_upload_mb)
            try:
                return JSONResponse(await _predict(service, form))
            finally:
                await form.close()

    @app.get("/v1/search")
    async def search(request: Request) -> JSONResponse:
        params = request.query_params
        query, k = params.get("q", ""), _number(params, "k", int, 10)
        with service.job():
            return JSONResponse(await run_in_threadpool(service.search, query, k))

    @app.exception_handler(404)
    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": f"no such page: {request.url.path} (try /, /v1/model, "
                                      "POST /v1/predict or GET /v1/search)"}, status_code=404)

    @app.exception_handler(405)
    async def wrong_method(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": f"{request.method} is not allowed on "
                                      f"{request.url.path}"}, status_code=405)

    return BodyLimit(app, limit, service.options.max_upload_mb)


async def _predict(service: Service, form: Any) -> dict[str, Any]:
    upload, given = form.get("video"), form.get("path")
    has_file = upload is not None and not isinstance(upload, str)
    if has_file == bool(given):
        raise RequestError("send one video: a file in the 'video' field or a 'path' under "
                           "the served folder")
    options = {
        "labels": parse_labels(form.get("labels")),
        "templates": [t for t in form.getlist("template") if isinstance(t, str) and t.strip()],
        "topk": _number(form, "topk", int, 5), "window": _number(form, "window", float),
        "stride": _number(form, "stride", float), "smooth": _number(form, "smooth", int, 1),
        "threshold": _number(form, "threshold", float),
        "explain": str(form.get("explain", "")).lower() in _TRUE,
        "plot": str(form.get("plot", "")).lower() in _TRUE}
    if not has_file:
        path = service.resolve_path(str(given))
        return await run_in_threadpool(service.predict, path, str(given), **options)
    name = Path(upload.filename or "upload").name or "upload"
    with tempfile.TemporaryDirectory(prefix="claver-serve-") as tmp:
        path = Path(tmp) / ("video" + Path(name).suffix[:16])
        with open(path, "wb") as f:
            await run_in_threadpool(shutil.copyfileobj, upload.file, f, 1 << 20)
        if path.stat().st_size == 0:
            raise RequestError(f"{name}: the upload is empty")
        return await run_in_threadpool(service.predict, path, name, **options)
