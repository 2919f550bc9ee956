"""Zero-shot recognition: videos and label words in, label probabilities out.

    import claver
    result = claver.predict("clip.mp4", ["singing", "dancing"], model="openai-vit-b32")
    result.label, result["dancing"], result.top(3)

**Scores** (as in the papers' evaluation). The text side has R rows of C texts: one row per
template (``template.format(label)``) and one per interpretive description index. For a
video embedding ``v`` the logits are ``exp(logit_scale) * v . t_hat[r, c]``; the label
probabilities are the softmax over the C labels of each row, averaged over the R rows (one
template: a plain softmax).

**Preprocessing** comes from the model (:class:`Preprocess`): T frames at the centres of T
equal segments (TSN test sampling), short side scaled to ``short_side`` (the crop size
unless the named weights say otherwise, e.g. 256 for the mmaction2 ports), centre crop S x S,
/255 and the model's mean/std. Files are decoded with the short side scaled inside the
decoder (``read_video(short_side=...)``); arrays are resized with antialiased bilinear
interpolation, so a file and its decoded frames give very slightly different scores.

Inputs: paths, ``bytes``, uint8 arrays/tensors (T, H, W, 3) (T may differ from the model's
frames: T segment centres are taken), and lists of these. :class:`Predictor` keeps the text
features of a label set and decodes the next batch in a background thread while the model
runs; the functions :func:`predict`, :func:`predict_windows`, :func:`encode_video` and
:func:`encode_text` build one per call.

**Runtimes** (``runtime=``): ``"torch"`` (eager PyTorch, any device, autocast precisions),
``"onnx"`` (the video tower exported once per weights and run by ONNX Runtime on the CPU,
:mod:`claver.runtime.onnx`; ``precision="int8"`` quantises its weights) and ``"auto"``.
**Precisions** (``precision=``): ``"fp32"``, ``"bf16"``/``"fp16"`` (torch autocast on the
video tower's matrix products; the patch embedding, the residual stream, the output
projection and the text tower stay float32), ``"int8"`` (ONNX Runtime) and ``"auto"``.
The functions and ``claver predict`` default to ``runtime="auto", precision="auto"``: on a
CPU with native bf16 (AVX512-BF16/AMX) torch bf16, about 2x faster than fp32 with the same
top-1 and probabilities within 0.01 (``benchmarks/predict.py`` measures it); on other CPUs
ONNX Runtime fp32 when ``onnxruntime`` is installed (``pip install 'claver[onnx]'``; the
eager probabilities to ~1e-6), else torch fp32; on a GPU torch fp32. A model exported with
``claver export`` (``model="m.onnx"``) always runs on ONNX Runtime.
"""

from __future__ import annotations

import contextlib
import math
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from claver.data.decode import VideoDecodeError, VideoReader
from claver.data.sampling import segment_indices
from claver.inputs import (
    DEFAULT_TEMPLATE,
    FILE_TYPES,
    Preprocess,
    as_frames,
    as_items,
    check_labels,
    source_name,
    text_rows,
    tokens_for,
)
from claver.pretrained import resolve_model
from claver.prompts.rows import mean_row_probabilities
from claver.runtime.select import choose_runtime, is_onnx_file, load_exported, onnx_video
from claver.runtime.towers import video_embedding

__all__ = ["BACKGROUND", "DEFAULT_TEMPLATE", "Prediction", "Predictor", "Preprocess",
           "encode_text", "encode_video", "merge_windows", "predict", "predict_windows",
           "resolve_model", "smooth_probs", "text_rows", "window_indices", "window_spans"]

BACKGROUND = "no action"
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16,
                                             "fp16": torch.float16, "int8": None}
_INPUT_ERRORS = (VideoDecodeError, FileNotFoundError, ValueError, TypeError, OSError)


# -------------------------------------------------------------------------------- results

@dataclass(frozen=True, eq=False)
class Prediction:
    """Label probabilities for one video, or one window of a long video.

    ``probs``: float32 (C,) in label order, ``None`` when the video could not be read
    (``error`` says why). Windows carry ``start``/``end`` seconds; ``background`` is True
    when the best probability fell below the threshold (``label`` is then "no action").
    """

    source: str
    labels: tuple[str, ...]
    probs: torch.Tensor | None
    error: str | None = None
    topk: int | None = None
    start: float | None = None
    end: float | None = None
    background: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def label(self) -> str | None:
        """The best label ("no action" for a background window, None on error)."""
        if self.probs is None:
            return None
        return BACKGROUND if self.background else self.labels[int(self.probs.argmax())]

    @property
    def score(self) -> float | None:
        """Probability of the best label."""
        return None if self.probs is None else float(self.probs.max())

    def top(self, k: int | None = None) -> list[tuple[str, float]]:
        """The ``k`` (default ``topk``, else all) most probable labels, best first."""
        if self.probs is None:
            return []
        k = min(k or self.topk or len(self.labels), len(self.labels))
        order = torch.sort(self.probs, descending=True, stable=True).indices[:k]
        return [(self.labels[i], float(self.probs[i])) for i in order.tolist()]

    def __getitem__(self, label: str) -> float:
        if self.probs is None:
            raise KeyError(f"{self.source} has no scores ({self.error})")
        try:
            return float(self.probs[self.labels.index(label)])
        except ValueError:
            raise KeyError(f"{label!r} is not one of the labels {list(self.labels)}") from None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: video, ok, error or label/prob/top/probs (and start/end for windows)."""
        out: dict[str, Any] = {"video": self.source, "ok": self.ok}
        if self.start is not None:
            out.update(start=round(self.start, 3), end=round(self.end or 0.0, 3))
        if not self.ok:
            out["error"] = self.error
            return out
        out.update(label=self.label, prob=self.score,
                   top=[{"label": lb, "prob": p} for lb, p in self.top()],
                   probs=dict(zip(self.labels, self.probs.tolist(), strict=True)))
        if self.start is not None:
            out["background"] = self.background
        return out


# -------------------------------------------------------------------------------- windows

def window_spans(duration: float, window: float, stride: float | None = None
                 ) -> list[tuple[float, float]]:
    """(start, end) seconds of windows of ``window`` seconds every ``stride`` seconds.

    The last window ends at ``duration`` (it may overlap the one before more than the
    others); a video shorter than one window gives one window over all of it.
    """
    stride = window if stride is None else stride
    if not window > 0 or not stride > 0:
        raise ValueError(f"window and stride must be > 0 seconds, got {window}, {stride}")
    if duration <= window:
        return [(0.0, max(duration, 0.0))]
    spans = []
    k = 0
    while k * stride + window <= duration + 1e-6:
        spans.append((k * stride, k * stride + window))
        k += 1
    if spans[-1][1] < duration - 1e-6:
        spans.append((duration - window, duration))
    return spans


def window_indices(start: float, end: float, fps: float, num_frames: int, t: int) -> list[int]:
    """``t`` segment-centre frames among the frames whose time ``i / fps`` is in
    [start, end) (at least one frame)."""
    lo = min(num_frames - 1, max(0, math.ceil(start * fps - 1e-6)))
    hi = max(lo + 1, min(num_frames, math.ceil(end * fps - 1e-6)))
    return (lo + segment_indices(hi - lo, t, train=False)).tolist()


def smooth_probs(probs: torch.Tensor, size: int) -> torch.Tensor:
    """Centred moving average over windows: (W, C) -> (W, C); ``size`` windows (odd; at the
    ends the average runs over the windows that exist)."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"smoothing size must be an odd number of windows >= 1, got {size}")
    if size == 1 or probs.shape[0] < 2:
        return probs
    half = size // 2
    padded = F.pad(probs.t()[None], (half, half))  # (1, C, W + 2 half), zeros outside
    ones = F.pad(torch.ones(1, 1, probs.shape[0]), (half, half))
    kernel = torch.ones(1, 1, size)
    sums = F.conv1d(padded.transpose(0, 1), kernel)[:, 0]  # (C, W)
    counts = F.conv1d(ones, kernel)[0, 0]  # (W,)
    return (sums / counts).t().contiguous()


def merge_windows(windows: Sequence[Prediction]) -> list[dict[str, Any]]:
    """Consecutive windows with the same label merged: [{start, end, label, prob}] (prob:
    the mean best probability of the merged windows)."""
    segments: list[dict[str, Any]] = []
    for w in windows:
        if not w.ok:
            continue
        if segments and segments[-1]["label"] == w.label:
            seg = segments[-1]
            seg["end"], seg["_probs"] = w.end, [*seg["_probs"], w.score]
        else:
            segments.append({"start": w.start, "end": w.end, "label": w.label,
                             "_probs": [w.score]})
    for seg in segments:
        probs = seg.pop("_probs")
        seg["prob"] = sum(probs) / len(probs)
    return segments


def windows_result(video: Any, windows: Sequence[Prediction]) -> dict[str, Any]:
    """One video's entry of ``claver predict --window --json`` (and of the ``claver serve``
    API): its windows and their merged segments."""
    return {"video": str(video), "ok": True, "windows": [w.to_dict() for w in windows],
            "segments": merge_windows(windows)}


def result_header(pred: Predictor, model_name: str) -> dict[str, Any]:
    """The header of ``claver predict --json`` (and of the ``claver serve`` API): model,
    architecture, labels, text rows, preprocessing, precision and runtime."""
    from claver.weights.formats import describe

    return {"model": model_name, "architecture": describe(pred.model.config),
            "labels": list(pred.labels), "text_rows": len(pred.rows),
            "preprocessing": {"frames": pred.preprocess.num_frames,
                              "short_side": pred.preprocess.short_side,
                              "crop": pred.preprocess.image_size},
            "precision": pred.precision, "runtime": pred.runtime}


# ------------------------------------------------------------------------------ predictor

class Predictor:
    """A model, its preprocessing and (optionally) the text features of a label set.

    ``model``: a CLIP/CLAVER/ActionCLIP model (plain CLIP models average their frame
    features, i.e. ActionCLIP meanP), or an exported :class:`claver.runtime.onnx.OnnxModel`.
    ``runtime``: "torch" (default here), "onnx" or "auto" (see the module docstring).
    ``precision``: "fp32" (default here), "bf16"/"fp16" (torch autocast on the video tower's
    matrix products; bf16 is about 2x faster on CPUs with AVX-512 BF16, probabilities change
    by < 0.01), "int8" (onnx runtime: int8 weights) or "auto" (bf16 on a CPU with native bf16,
    else fp32). Text features are always computed in float32.
    ``workers``: background threads decoding the next batch (0: decode in the caller).
    ``streams``: batches run through the model at once, each in its own thread with
    single-threaded torch ops (``torch.set_num_threads(1)`` during the call, restored after):
    on a CPU this keeps every core busy without OpenMP synchronisation, often faster than one
    multi-threaded stream for many videos. 1 (default) leaves torch's threading alone.
    """

    def __init__(self, model: torch.nn.Module, labels: Sequence[str] | None = None, *,
                 templates: str | Sequence[str] | None = None,
                 descriptions: Mapping[str, Sequence[str] | str] | Sequence[Sequence[str]]
                 | None = None, preprocess: Preprocess | None = None,
                 device: str | torch.device | None = None, precision: str = "fp32",
                 batch_size: int = 4, workers: int = 1, streams: int = 1,
                 runtime: str = "torch") -> None:
        if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
            raise TypeError(f"model must be a claver model (create_model/load_model/"
                            f"load_pretrained), got {type(model).__name__}")
        if precision not in (*PRECISIONS, "auto"):
            raise ValueError(f"precision must be one of {[*PRECISIONS, 'auto']}, got "
                             f"{precision!r}")
        if batch_size < 1 or workers < 0 or streams < 1:
            raise ValueError(f"batch_size and streams must be >= 1 and workers >= 0, got "
                             f"{batch_size}, {streams}, {workers}")
        self.device = torch.device(device) if device is not None else model.logit_scale.device
        self.model = model.to(self.device) if device is not None else model
        self.preprocess = preprocess or Preprocess.for_model(model)
        self.batch_size, self.workers, self.streams = batch_size, workers, streams
        self.runtime, self.precision = choose_runtime(runtime, model, self.device, precision)
        self._video: Callable[[torch.Tensor], torch.Tensor] | None = None
        if self.runtime == "onnx" and not hasattr(model, "video_session"):
            self._video = onnx_video(model, self.precision, 1 if streams > 1 else None,
                                     strict=runtime == "onnx" or precision == "int8")
            if self._video is None:
                self.runtime = "torch"
        self.labels: tuple[str, ...] | None = None
        self.rows: list[list[str]] = []
        self.text_features: torch.Tensor | None = None  # (R, C, E)
        if labels is not None:
            self.set_labels(labels, templates=templates, descriptions=descriptions)

    @contextlib.contextmanager
    def _eval(self) -> Iterator[None]:
        """Eval mode for the duration (restored after). Entered once per public call, never
        from worker threads, so concurrent streams cannot flip the mode under each other."""
        was_training = self.model.training
        self.model.eval()
        try:
            yield
        finally:
            self.model.train(was_training)

    def _inference(self) -> contextlib.ExitStack:
        """No autograd and the chosen autocast (both per thread); video tower only."""
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        dtype = PRECISIONS[self.precision]
        if dtype is not None:
            stack.enter_context(torch.autocast(self.device.type, dtype=dtype))
        return stack

    def set_labels(self, labels: Sequence[str], *,
                   templates: str | Sequence[str] | None = None,
                   descriptions: Any = None) -> None:
        """Encode the text rows of a label set once (see :func:`text_rows`)."""
        self.labels = check_labels(labels)
        self.rows = text_rows(self.labels, templates, descriptions)
        flat = [t for row in self.rows for t in row]
        self.text_features = self.encode_text(flat).view(len(self.rows), len(self.labels), -1)

    def encode_text(self, texts: Sequence[str], chunk: int = 256) -> torch.Tensor:
        """Texts -> L2-normalised float32 features (N, E)."""
        if isinstance(texts, str):
            texts = [texts]
        tokens = tokens_for(self.model, texts).to(self.device)
        # float32 always: it runs once per label set, and bf16 text features are ~1 % off,
        # enough to move probabilities by 0.01
        with self._eval(), torch.inference_mode():
            parts = [self.model.encode_text(tokens[i:i + chunk]).float()
                     for i in range(0, len(tokens), chunk)]
        return F.normalize(torch.cat(parts), dim=-1)

    def video_features(self, video: torch.Tensor) -> torch.Tensor:
        """Normalised videos (B, T, 3, S, S) -> float32 embeddings (B, E), as matched
        against text (CLAVER's is a mean of unit vectors, not re-normalised)."""
        with self._eval():
            return self._features(video)

    def _features(self, video: torch.Tensor) -> torch.Tensor:
        if self._video is not None:  # ONNX Runtime
            return self._video(video)
        video = video.to(self.device)
        with self._inference():  # reduced precision: patch embedding + projection in fp32
            return video_embedding(self.model, video,
                                   cls_only=PRECISIONS[self.precision] is not None)

    def probs_from_features(self, v: torch.Tensor) -> torch.Tensor:
        """Embeddings (B, E) -> label probabilities (B, C) (row softmax averaged)."""
        if self.text_features is None:
            raise RuntimeError("no labels set: pass labels=... or call set_labels() first")
        scale = self.model.logit_scale.detach().float().exp()
        logits = scale * torch.einsum("be,rce->brc", v.float(), self.text_features)
        return mean_row_probabilities(logits).cpu()

    # -- batches -----------------------------------------------------------------------
    def _load(self, item: Any, index: int) -> tuple[str, torch.Tensor | None,
                                                    Exception | None]:
        name = source_name(item, index)
        try:
            return name, self.preprocess.load_crop(item, name), None  # uint8: no torch work
        except _INPUT_ERRORS as e:
            return name, None, e

    def _loaded(self, items: Sequence[Any]) -> Iterator[tuple[str, torch.Tensor | None,
                                                               Exception | None]]:
        """Loaded inputs in order; with workers, decoded ahead in background threads."""
        if self.workers == 0:
            for i, item in enumerate(items):
                yield self._load(item, i)
            return
        ahead = self.batch_size * 2
        with ThreadPoolExecutor(self.workers, thread_name_prefix="claver-decode") as pool:
            pending: deque = deque()
            next_i = 0
            while next_i < len(items) or pending:
                while next_i < len(items) and len(pending) < ahead:
                    pending.append(pool.submit(self._load, items[next_i], next_i))
                    next_i += 1
                yield pending.popleft().result()

    def _batches(self, items: Sequence[Any], on_error: str, progress: bool
                 ) -> Iterator[list[tuple[str, torch.Tensor | None, str | None]]]:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        bar = _progress(len(items), progress)
        batch: list = []
        try:
            for name, video, error in self._loaded(items):
                if error is not None and on_error == "raise":
                    raise error
                batch.append((name, video, None if error is None else error_line(error, name)))
                if len(batch) == self.batch_size:
                    yield batch
                    if bar is not None:
                        bar.update(len(batch))
                    batch = []
            if batch:
                yield batch
                if bar is not None:
                    bar.update(len(batch))
        finally:
            if bar is not None:
                bar.close()

    def _run(self, items: Sequence[Any], on_error: str, progress: bool,
             head: Callable[[torch.Tensor], torch.Tensor]
             ) -> list[tuple[str, torch.Tensor | None, str | None]]:
        def forward(batch: list) -> list[tuple[str, torch.Tensor | None, str | None]]:
            good = [v for _, v, e in batch if e is None]
            clips = self.preprocess.normalize(torch.stack(good)) if good else None
            values = iter(head(self._features(clips)) if good else [])
            return [(name, None if e else next(values), e) for name, _, e in batch]

        out: list = []
        with self._eval():
            if self.streams == 1:
                for batch in self._batches(items, on_error, progress):
                    out += forward(batch)
                return out
            with _single_threaded_ops(), ThreadPoolExecutor(
                    self.streams, thread_name_prefix="claver-stream") as pool:
                running: deque = deque()
                for batch in self._batches(items, on_error, progress):
                    running.append(pool.submit(forward, batch))
                    while len(running) > self.streams:
                        out += running.popleft().result()
                while running:
                    out += running.popleft().result()
        return out

    def encode_videos(self, videos: Any, *, on_error: str = "raise", progress: bool = False
                      ) -> list[tuple[str, torch.Tensor | None, str | None]]:
        """[(source, embedding (E,) or None, error or None)] per input."""
        items, _ = as_items(videos)
        return self._run(items, on_error, progress, lambda v: v.cpu())

    def predict(self, videos: Any, *, topk: int | None = None, on_error: str = "raise",
                progress: bool = False) -> list[Prediction]:
        """One :class:`Prediction` per input, in order. ``on_error="skip"``: unreadable inputs
        give a Prediction with ``error`` set instead of raising."""
        if self.labels is None:
            raise RuntimeError("no labels set: pass labels=... or call set_labels() first")
        items, _ = as_items(videos)
        return [Prediction(name, self.labels, p, e, topk)
                for name, p, e in self._run(items, on_error, progress,
                                            self.probs_from_features)]

    def predict_windows(self, video: Any, *, window: float, stride: float | None = None,
                        smooth: int = 1, threshold: float | None = None,
                        fps: float | None = None, topk: int | None = None) -> list[Prediction]:
        """Per-window predictions of a long video (path/bytes; frames need ``fps``).

        Windows of ``window`` seconds every ``stride`` seconds (:func:`window_spans`), T
        segment-centre frames each; ``smooth``: moving average of the probabilities over that
        many windows; ``threshold``: windows whose best (smoothed) probability is below it
        are background ("no action").
        """
        if self.labels is None:
            raise RuntimeError("no labels set: pass labels=... or call set_labels() first")
        name = source_name(video, 0)
        spans: list[tuple[float, float]] = []
        probs = []
        for part, batch in self.window_batches(video, window, stride, fps, name):
            spans += part
            probs.append(self.probs_from_features(self.video_features(batch)))
        p = smooth_probs(torch.cat(probs), smooth)
        return [Prediction(name, self.labels, p[k], None, topk, s, e,
                           threshold is not None and float(p[k].max()) < threshold)
                for k, (s, e) in enumerate(spans)]

    def window_batches(self, video: Any, window: float, stride: float | None = None,
                       fps: float | None = None, name: str | None = None
                       ) -> Iterator[tuple[list[tuple[float, float]], torch.Tensor]]:
        """The windows of ``video`` (as :meth:`predict_windows` places them), ``batch_size``
        at a time: ``(spans [(start, end)], model input (B, T, 3, S, S))``; each chunk's
        frames are decoded once. Raises on an unreadable video or an unknown frame rate."""
        name = name or source_name(video, 0)
        spans, get, close = self._window_source(video, window, stride, fps, name)
        try:
            for i in range(0, len(spans), self.batch_size):
                part = spans[i:i + self.batch_size]
                wanted = sorted({j for _, _, idx in part for j in idx})
                frames = get(wanted)
                pos = {j: k for k, j in enumerate(wanted)}
                yield [(s, e) for s, e, _ in part], self.preprocess.normalize(torch.stack(
                    [self.preprocess.crop(frames[[pos[j] for j in idx]]) for _, _, idx in part]))
        finally:
            close()

    def _window_source(self, video: Any, window: float, stride: float | None, fps: float | None,
                       name: str) -> tuple[list[tuple[float, float, list[int]]], Callable,
                                           Callable]:
        t = self.preprocess.num_frames
        close: Callable[[], None] = lambda: None  # noqa: E731
        if isinstance(video, FILE_TYPES):
            reader = VideoReader(video, self.preprocess.backend,
                                 short_side=self.preprocess.short_side)
            n, duration = reader.info.num_frames, reader.info.duration
            rate = fps or (n / duration if duration > 0 else reader.info.fps)
            get: Callable = reader.get_frames
            close = reader.close
        else:
            frames = as_frames(video, name)
            if not fps:
                raise ValueError(f"{name}: windows over frames need fps=... (frames per second)")
            n, rate = frames.shape[0], fps
            duration = n / fps

            def get(indices: list[int]) -> torch.Tensor:
                return frames[indices]
        if not rate or rate <= 0:
            raise ValueError(f"{name}: unknown frame rate; pass fps=...")
        spans = [(s, e, window_indices(s, e, rate, n, t))
                 for s, e in window_spans(duration, window, stride)]
        return spans, get, close


@contextlib.contextmanager
def _single_threaded_ops() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def error_line(error: Exception, name: str) -> str:
    """One line naming the input: VideoDecodeError messages already start with the file."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if not isinstance(error, VideoDecodeError):
        text = f"{type(error).__name__}: {text}"
    return text if name in text else f"{name}: {text}"


def _progress(total: int, enabled: bool) -> Any:
    if not enabled or total < 2:
        return None
    import sys

    from tqdm.auto import tqdm

    return tqdm(total=total, unit="video", file=sys.stderr, leave=False, disable=None)


def _predictor(model: Any, labels: Any, *, template: str | None, templates: Any,
               descriptions: Any, options: dict[str, Any]) -> Predictor:
    if template is not None and templates is not None:
        raise ValueError("pass template=... or templates=[...], not both")
    if template is not None:
        templates = [template]
    allow = options.pop("allow_unverified", False)
    cache_dir = options.pop("cache_dir", None)
    options.setdefault("runtime", "auto")
    options.setdefault("precision", "auto")
    if is_onnx_file(model):
        resolved = load_exported(model)
    else:
        resolved = resolve_model(model, allow_unverified=allow, cache_dir=cache_dir)
    pre = options.pop("preprocess", None) or Preprocess.for_model(
        resolved, num_frames=options.pop("num_frames", None),
        short_side=options.pop("short_side", None), backend=options.pop("backend", None))
    return Predictor(resolved, labels, templates=templates, descriptions=descriptions,
                     preprocess=pre, **options)


def predict(videos: Any, labels: Sequence[str], model: Any = None, *,
            template: str | None = None, templates: str | Sequence[str] | None = None,
            descriptions: Any = None, topk: int | None = None, on_error: str = "raise",
            progress: bool = False, **options: Any) -> Prediction | list[Prediction]:
    """Label probabilities of one video (a :class:`Prediction`) or of a list (a list).

    ``model``: a model object, named weights (``claver models list``), a checkpoint path, or
    None (:func:`default_model`). ``template``: one format string with ``{}`` (default
    ``"a video of {}."``); ``templates``: a list of them, or a named set (``"claver"``,
    ``"actionclip"``: the papers' 16 each) whose rows are averaged; ``descriptions``: label
    -> interpretive descriptions, extra text rows. ``topk`` limits :meth:`Prediction.top`.
    ``options``: ``runtime`` and ``precision`` (default "auto" both: see the module
    docstring), ``batch_size``, ``device``, ``workers``, ``streams``, ``num_frames``,
    ``short_side``, ``backend``, ``preprocess``, ``allow_unverified``, ``cache_dir``.
    """
    items, single = as_items(videos)
    pred = _predictor(model, labels, template=template, templates=templates,
                      descriptions=descriptions, options=dict(options))
    results = pred.predict(items, topk=topk, on_error=on_error, progress=progress)
    return results[0] if single else results


def predict_windows(video: Any, labels: Sequence[str], model: Any = None, *, window: float,
                    stride: float | None = None, smooth: int = 1,
                    threshold: float | None = None, fps: float | None = None,
                    template: str | None = None, templates: str | Sequence[str] | None = None,
                    descriptions: Any = None, topk: int | None = None,
                    **options: Any) -> list[Prediction]:
    """Per-window predictions of one long video; see :meth:`Predictor.predict_windows`."""
    pred = _predictor(model, labels, template=template, templates=templates,
                      descriptions=descriptions, options=dict(options))
    return pred.predict_windows(video, window=window, stride=stride, smooth=smooth,
                                threshold=threshold, fps=fps, topk=topk)


def encode_video(videos: Any, model: Any = None, **options: Any) -> torch.Tensor:
    """Video embeddings (N, E) float32 (one input: (E,)), as matched against text; inputs
    as for :func:`predict`. Unreadable inputs raise."""
    items, single = as_items(videos)
    pred = _predictor(model, None, template=None, templates=None, descriptions=None,
                      options=dict(options))
    out = torch.stack([v for _, v, _ in pred.encode_videos(items)])
    return out[0] if single else out


def encode_text(texts: str | Sequence[str], model: Any = None, **options: Any) -> torch.Tensor:
    """L2-normalised text embeddings (N, E) float32 (one string: (E,))."""
    pred = _predictor(model, None, template=None, templates=None, descriptions=None,
                      options=dict(options))
    out = pred.encode_text([texts] if isinstance(texts, str) else list(texts))
    return out[0] if isinstance(texts, str) else out
