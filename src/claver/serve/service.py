"""What ``claver serve`` does for one request, without HTTP: one model, many label sets.

:class:`Service` holds the model loaded at start, the checkpoint's training text (class
names, templates) when it records them, and the limits. :meth:`Service.predict` takes a
video file on disk and returns the JSON of ``claver predict --json`` for it (plus an
``explanation`` GIF and a ``timeline`` PNG when asked). Model work runs one job at a time
(explaining patches the model's last attention block while it runs); :meth:`Service.job`
admits at most ``max_jobs`` jobs (running or waiting) and refuses more with :class:`Busy`.
With an index (``claver serve --index``), :meth:`Service.search` ranks its rows against a
text query and adds a thumbnail of each hit (only files the index records are opened).
"""

from __future__ import annotations

import base64
import contextlib
import io
import math
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from claver.zeroshot import result_header, windows_result

__all__ = ["Busy", "RequestError", "ServeOptions", "Service", "parse_labels"]

MAX_SEARCH_K = 100  # results per search request
THUMBNAIL_SIDE = 160  # pixels: the longer side of a search result's thumbnail


class RequestError(ValueError):
    """A request the server refuses: ``status`` is the HTTP code, the message says why."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Busy(RequestError):
    """More jobs than ``max_jobs`` at once."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 503)


@dataclass(frozen=True)
class ServeOptions:
    """Limits and the folder served: ``root`` (None: uploads only), ``max_upload_mb`` (one
    request's body), ``max_duration_s`` (video length), ``max_jobs`` (running or waiting),
    ``max_labels`` (labels per request)."""

    root: Path | None = None
    max_upload_mb: float = 200.0
    max_duration_s: float = 600.0
    max_jobs: int = 2
    max_labels: int = 1000

    def __post_init__(self) -> None:
        if not self.max_upload_mb > 0 or not self.max_duration_s > 0 or self.max_jobs < 1:
            raise ValueError(f"--max-upload-mb and --max-duration-s must be > 0 and --max-jobs "
                             f">= 1, got {self.max_upload_mb}, {self.max_duration_s}, "
                             f"{self.max_jobs}")
        if self.root is not None and not Path(self.root).is_dir():
            raise ValueError(f"--root {self.root}: not a folder; give the folder whose videos "
                             "the page may open")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)


def parse_labels(text: str | None) -> list[str]:
    """Labels typed in one field: one per line, or comma-separated on one line."""
    if text is None or not text.strip():
        return []
    if "\n" in text.strip():
        return [line.strip() for line in text.splitlines() if line.strip()]
    labels = [x.strip() for x in text.split(",")]
    if any(not x for x in labels):
        raise RequestError(f"labels {text[:80]!r} have an empty label; separate labels with "
                           "single commas or put one per line")
    return labels


def _data_url(path: Path, kind: str) -> str:
    return f"data:{kind};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


class Service:
    """One loaded model answering prediction requests (see the module docstring).

    ``model``: a model object, named weights or a checkpoint path (as for ``claver
    predict --model``); ``name``: how responses name it; ``record``: the checkpoint's
    training text (``claver.commands.predict.training_text``) or None; ``index``: a folder
    written by ``claver index`` with this model (another model's index raises
    :class:`claver.search.ModelMismatchError`, a ``ValueError``), or None.
    """

    def __init__(self, model: Any, *, name: str | None = None, options: ServeOptions | None
                 = None, record: dict[str, Any] | None = None, device: str | None = None,
                 allow_unverified: bool = False, index: str | Path | None = None) -> None:
        from claver.inputs import Preprocess
        from claver.pretrained import resolve_model
        from claver.weights.formats import describe

        self.options = options or ServeOptions()
        self.model = resolve_model(model, allow_unverified=allow_unverified).eval()
        if device is not None:
            self.model = self.model.to(device)
        self.name = name or (model if isinstance(model, str) else type(model).__name__)
        self.record = record
        self.preprocess = Preprocess.for_model(self.model)
        self.architecture = describe(self.model.config)
        self._slots = threading.BoundedSemaphore(self.options.max_jobs)
        self._model_lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._predictors: OrderedDict[tuple, Any] = OrderedDict()
        self.index: Any = None
        if index is not None:
            from claver.search import Index

            self.index = Index(index, model=self.model, device=device)
            self.index.check_model(self.model, spec=model if isinstance(model, str) else None)

    # -- description ----------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """``GET /v1/model``: the model, its classes and default text, the limits."""
        o = self.options
        return {"model": self.name, "architecture": self.architecture,
                "classes": list(self.record["classes"]) if self.record else None,
                "templates": self.record["templates"] if self.record else None,
                "preprocessing": {"frames": self.preprocess.num_frames,
                                  "short_side": self.preprocess.short_side,
                                  "crop": self.preprocess.image_size},
                "root": o.root is not None,
                "index": None if self.index is None else {
                    "path": str(self.index.path), "rows": len(self.index),
                    "files": len(self.index.files)},
                "limits": {"max_upload_mb": o.max_upload_mb,
                           "max_duration_s": o.max_duration_s, "max_jobs": o.max_jobs,
                           "max_labels": o.max_labels}}

    # -- admission ------------------------------------------------------------------------
    @contextlib.contextmanager
    def job(self) -> Iterator[None]:
        """Admit one job or raise :class:`Busy` (no waiting for a slot)."""
        if not self._slots.acquire(blocking=False):
            raise Busy(f"the server is busy with {self.options.max_jobs} job(s) (--max-jobs); "
                       "try again in a moment")
        try:
            yield
        finally:
            self._slots.release()

    def resolve_path(self, given: str) -> Path:
        """A file under ``--root`` (symlinks resolved; anything outside is refused)."""
        root = self.options.root
        if root is None:
            raise RequestError("this server was started without --root: upload the video "
                               "instead of naming a path", 403)
        base = Path(root).resolve()
        try:
            target = (base / given).resolve(strict=True)
        except (OSError, RuntimeError, ValueError):
            raise RequestError(f"path {given!r}: no such file under the served folder",
                               404) from None
        if not target.is_relative_to(base):
            raise RequestError(f"path {given!r} is outside the served folder; name a file "
                               "under --root", 403)
        if not target.is_file():
            raise RequestError(f"path {given!r} is not a file", 400)
        return target

    # -- prediction -----------------------------------------------------------------------
    def _text(self, labels: Sequence[str], templates: Sequence[str]
              ) -> tuple[list[str], Any, Any]:
        if not labels:
            if self.record is None:
                raise RequestError("no labels: type the labels (this model records no class "
                                   "names)")
            labels = list(self.record["classes"])
        if len(labels) > self.options.max_labels:
            raise RequestError(f"{len(labels)} labels; this server takes at most "
                               f"{self.options.max_labels} per request")
        chosen: Any = list(templates) or None
        if chosen is not None and len(chosen) == 1:
            chosen = chosen[0]  # one template, or a named set ("claver", "actionclip")
        descriptions = None
        if self.record is not None and chosen is None:  # as `claver predict`: training text
            chosen = self.record["templates"]
            if list(labels) == list(self.record["classes"]):
                descriptions = self.record["descriptions"]
        return list(labels), chosen, descriptions

    def predictor(self, labels: Sequence[str], templates: Sequence[str] = ()) -> Any:
        """A :class:`claver.zeroshot.Predictor` for a label set (the last 16 are kept)."""
        from claver.zeroshot import Predictor

        labels, chosen, descriptions = self._text(labels, templates)
        key = (tuple(labels), repr(chosen))
        with self._cache_lock:
            if key in self._predictors:
                self._predictors.move_to_end(key)
                return self._predictors[key]
        try:
            with self._model_lock:
                pred = Predictor(self.model, labels, templates=chosen, descriptions=descriptions,
                                 preprocess=self.preprocess, workers=0, runtime="auto",
                                 precision="auto")  # what claver predict does
        except (ValueError, TypeError, KeyError) as e:
            raise RequestError(f"labels/template: {e}") from None
        with self._cache_lock:
            self._predictors[key] = pred
            while len(self._predictors) > 16:
                self._predictors.popitem(last=False)
        return pred

    def check_video(self, path: Path, name: str) -> None:
        """Refuse unreadable videos (422) and videos longer than ``max_duration_s`` (413)."""
        from claver.data.decode import VideoDecodeError, probe_video

        try:
            info = probe_video(path, self.preprocess.backend)
        except (VideoDecodeError, OSError, ValueError) as e:
            raise RequestError(f"{name}: not a readable video "
                               f"({str(e).replace(str(path), name)})", 422) from None
        if info.duration > self.options.max_duration_s:
            raise RequestError(f"{name}: the video is {info.duration:.1f} s long; this server "
                               f"takes videos up to {self.options.max_duration_s:g} s "
                               "(--max-duration-s)", 413)

    def predict(self, path: Path, name: str, *, labels: Sequence[str] = (),
                templates: Sequence[str] = (), topk: int = 5, window: float | None = None,
                stride: float | None = None, smooth: int = 1, threshold: float | None = None,
                explain: bool = False, plot: bool = False) -> dict[str, Any]:
        """The JSON of ``claver predict --json`` for one video file (``name``: how results
        name it); ``explain``: add ``explanation`` (attention GIF as a data URL, frame
        times); ``plot`` (with ``window``): add ``timeline`` (PNG data URL)."""
        if topk < 1:
            raise RequestError(f"topk must be >= 1, got {topk}")
        if window is None and (stride is not None or threshold is not None or smooth != 1):
            raise RequestError("stride, smooth and threshold need a window (seconds)")
        self.check_video(path, name)
        pred = self.predictor(labels, templates)
        with self._model_lock:
            try:
                if window is None:
                    result = pred.predict([path], topk=topk, on_error="skip")[0].to_dict()
                else:
                    result = self._windows(pred, path, topk, window, stride, smooth, threshold)
            except ValueError as e:  # window options
                raise RequestError(str(e)) from None
            result["video"] = name
            for w in result.get("windows", []):
                w["video"] = name
            if result["ok"] and explain:
                result["explanation"] = self._explain(pred, path)
        if result["ok"] and plot and window is not None:
            result["timeline"] = self._timeline(result, threshold)
        if not result["ok"]:
            raise RequestError(str(result["error"]).replace(str(path), name), 422)
        return {**result_header(pred, self.name), "results": [result], "failed": 0}

    @staticmethod
    def _windows(pred: Any, path: Path, topk: int, window: float, stride: float | None,
                 smooth: int, threshold: float | None) -> dict[str, Any]:
        windows = pred.predict_windows(path, window=window, stride=stride, smooth=smooth,
                                       threshold=threshold, topk=topk)
        return windows_result(path, windows)

    def _explain(self, pred: Any, path: Path) -> dict[str, Any]:
        from claver.explain import explain_with
        from claver.images import save_gif

        with torch.inference_mode(False):
            exp = explain_with(pred, path)
        with tempfile.TemporaryDirectory(prefix="claver-serve-") as tmp:
            gif = save_gif(Path(tmp) / "a.gif", exp.overlays(), 400, exp.captions())
            return {"label": exp.label, "method": exp.method, "times": exp.times,
                    "gif": _data_url(gif, "image/gif")}

    @staticmethod
    def _timeline(result: dict[str, Any], threshold: float | None) -> str:
        from claver.figures import window_timeline

        with tempfile.TemporaryDirectory(prefix="claver-serve-") as tmp:
            png = window_timeline(result, Path(tmp) / "t.png", threshold)
            return _data_url(png, "image/png")

    # -- search ---------------------------------------------------------------------------
    def search(self, query: str, k: int = 10) -> dict[str, Any]:
        """``GET /v1/search``: the ``k`` best rows of the index for ``query`` (as
        :meth:`claver.search.Index.search`), each with a ``thumbnail`` (JPEG data URL of the
        frame at its start, or None when its file cannot be read)."""
        if self.index is None:
            raise RequestError("this server has no index: start it with --index INDEX "
                               "(built by `claver index` with this model)", 404)
        if not isinstance(query, str) or not query.strip():
            raise RequestError("q is empty; give the text to search for: /v1/search?q=...")
        if not 1 <= k <= MAX_SEARCH_K:
            raise RequestError(f"k={k}; give 1 to {MAX_SEARCH_K} results per search")
        with self._model_lock:
            hits = self.index.search(query, k)
        results = []
        for hit in hits:
            d = hit.to_dict()
            d.pop("row")
            results.append({**d, "thumbnail": self._thumbnail(hit.file, hit.start)})
        return {"query": query, "results": results}

    def _thumbnail(self, path: str, time: float) -> str | None:
        """JPEG data URL of the frame shown at ``time`` s of ``path`` (frame 0 when the rate
        is unknown), sides at most :data:`THUMBNAIL_SIDE`; None when it cannot be read."""
        from PIL import Image

        from claver.data.decode import DecodeLimits, VideoReader

        try:
            with VideoReader(path, self.preprocess.backend,
                             limits=DecodeLimits(timeout=30.0)) as reader:
                n, duration = reader.info.num_frames, float(reader.info.duration)
                rate = n / duration if duration > 0 else reader.info.fps
                i = 0
                if rate and rate > 0 and math.isfinite(time):
                    i = min(n - 1, max(0, math.ceil(time * rate - 1e-6)))
                frame = reader.get_frames([i])[0]  # uint8 (H, W, 3)
        except Exception:  # noqa: BLE001 - a file gone, changed or corrupt: no thumbnail
            return None
        image = Image.fromarray(frame.numpy())
        image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))  # only ever shrinks
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=80)
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
