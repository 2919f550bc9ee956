"""ONNX export of the video and text towers, and ONNX Runtime sessions that run them.

:func:`export_onnx` writes two files: ``out.onnx``, the video tower (``video`` float32
(B, T, 3, S, S), normalised -> ``embedding`` float32 (B, E), dynamic batch; a CLAVER model's
Kronecker mask is a constant inside the graph) and ``out.text.onnx``, the text tower
(``tokens`` int64 (N, n), cut after the longest end-of-text token -> ``features`` (N, E),
L2-normalised). Both carry the model's identity as metadata (``claver.*``: format, kind,
model config, preprocessing, logit scale, weights fingerprint), so :func:`load_onnx_model`
rebuilds a model that :class:`claver.zeroshot.Predictor` uses like a torch one.

:func:`video_encoder` is what ``runtime="onnx"`` uses for a torch model: the video tower is
exported once per weights (keyed by the sha256 of the config and the visual parameters) into
``$CLAVER_CACHE/onnx`` (default ``~/.cache/claver/onnx``, written atomically) and one session
is kept per (weights, precision, threads) in the process.

``precision="int8"``: the video tower with its MatMul weights quantised to int8 (ONNX
Runtime's dynamic quantisation; activations quantised per call).

``onnxruntime`` and ``onnx`` are optional: ``pip install 'claver[onnx]'``. Without them every
entry point raises :class:`OnnxUnavailable` (an ``ImportError``) with one line naming the fix.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import logging
import os
import tempfile
import threading
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from claver.fileio import atomic_write_bytes
from claver.runtime.towers import TextTower, VideoTower, cut_tokens, video_embedding

FORMAT = "claver-onnx-v1"
REVISION = 2  # of what the export writes: part of the cache file names (bump on changes)
INSTALL_HINT = "pip install 'claver[onnx]'"
PRECISIONS = ("fp32", "int8")
OPSET = 17


class OnnxUnavailable(ImportError, RuntimeError):
    """onnxruntime (or onnx, for export) is not installed (a RuntimeError too, so the CLI
    reports it as one line)."""


class OnnxModelError(ValueError):
    """An ONNX file that is not a claver export (or not a readable one)."""


def import_onnxruntime() -> Any:
    """The ``onnxruntime`` module, or :class:`OnnxUnavailable` naming the extra."""
    try:
        import onnxruntime
    except ImportError:
        raise OnnxUnavailable(f"ONNX Runtime is not installed: {INSTALL_HINT} (or use the "
                              "torch runtime: --runtime torch / runtime='torch')") from None
    return onnxruntime


def import_onnx() -> Any:
    """The ``onnx`` module (needed to export), or :class:`OnnxUnavailable`."""
    try:
        import onnx
    except ImportError:
        raise OnnxUnavailable(f"the onnx package is not installed (needed to export): "
                              f"{INSTALL_HINT}") from None
    return onnx


def onnxruntime_available() -> bool:
    """True when ``onnxruntime`` imports (it is an optional extra)."""
    try:
        import_onnxruntime()
    except OnnxUnavailable:
        return False
    return True


def onnx_available() -> bool:
    """True when both ``onnxruntime`` and ``onnx`` (to export) import."""
    try:
        import_onnxruntime()
        import_onnx()
    except OnnxUnavailable:
        return False
    return True


def text_path(path: str | os.PathLike) -> Path:
    """The text tower's file next to the video tower's: ``out.onnx`` -> ``out.text.onnx``."""
    p = Path(path)
    return p.with_name(p.name[:-5] + ".text.onnx" if p.name.endswith(".onnx")
                       else p.name + ".text.onnx")


# --------------------------------------------------------------------------------- export

def _cpu_fp32(model: nn.Module) -> nn.Module:
    """The model itself when it is float32 on the CPU, else a float32 CPU copy."""
    params = list(model.parameters())
    if all(p.dtype == torch.float32 and p.device.type == "cpu" for p in params):
        return model
    return copy.deepcopy(model).float().cpu()


def _trace(module: nn.Module, example: torch.Tensor, names: tuple[str, str],
           dynamic: dict[str, dict[int, str]], config: Any = None) -> bytes:
    """The module traced to ONNX (TorchScript exporter: deterministic and fast on CPU)."""
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad(), _constant_masks(config), _no_fastpath():
        warnings.simplefilter("ignore")  # tracer warnings about the models' shape checks
        torch.onnx.export(module, (example,), buf, dynamo=False, input_names=[names[0]],
                          output_names=[names[1]], dynamic_axes=dynamic, opset_version=OPSET,
                          do_constant_folding=True)
    return buf.getvalue()


@contextlib.contextmanager
def _no_fastpath() -> Iterator[None]:
    """``nn.TransformerEncoderLayer`` (ActionCLIP's Transf_cls head) in plain operations:
    its fused inference kernel has no ONNX operator."""
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)


@contextlib.contextmanager
def _constant_masks(config: Any) -> Iterator[None]:
    """While tracing, CLAVER's Kronecker mask is looked up with plain ints (the tracer hands
    out sizes as tensors) from the cache filled here, so it enters the graph as one boolean
    constant (T·L, T·L) instead of traced ``kron`` operations, which ONNX has no operator for."""
    from claver.models import kronecker

    original = kronecker.cached_kronecker_mask
    if config is not None and config.arch == "claver":
        original(config.num_frames, config.vision.num_tokens, config.mask, torch.device("cpu"))

    def constant(t: Any, l: Any, mode: str, device: torch.device) -> torch.Tensor:
        return original(int(t), int(l), mode, device)

    kronecker.cached_kronecker_mask = constant
    try:
        yield
    finally:
        kronecker.cached_kronecker_mask = original


def _with_metadata(data: bytes, meta: dict[str, str]) -> bytes:
    """``data`` (a serialized ModelProto without metadata, as the exporter writes it) with
    ``meta`` as metadata_props and producer "claver". Protobuf merges concatenated messages
    (repeated fields appended, scalars replaced), so a small ModelProto holding only these
    fields is appended instead of parsing and re-serializing hundreds of MB of weights."""
    onnx = import_onnx()
    extra = onnx.ModelProto(producer_name="claver")
    for key, value in meta.items():
        extra.metadata_props.add(key=key, value=value)
    return data + extra.SerializeToString()


def quantize_int8(data: bytes) -> bytes:
    """An ONNX model with its MatMul weights quantised to int8 (dynamic quantisation:
    activations quantised per call, per-tensor weights)."""
    import_onnx()
    import_onnxruntime()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="claver-int8-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(data)
        quiet = logging.getLogger()
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # "consider pre-processing" advice on every call
        try:
            quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul"])
        finally:
            quiet.setLevel(level)
        return dst.read_bytes()


def _metadata(model: nn.Module, kind: str, fingerprint: str, precision: str) -> dict[str, str]:
    from claver.inputs import Preprocess

    pre = Preprocess.for_model(model)
    return {"claver.format": FORMAT, "claver.kind": kind, "claver.precision": precision,
            "claver.config": json.dumps(model.config.to_dict()),
            "claver.preprocess": json.dumps({
                "num_frames": pre.num_frames, "image_size": pre.image_size,
                "short_side": pre.short_side, "mean": list(pre.mean), "std": list(pre.std)}),
            "claver.logit_scale": repr(float(model.logit_scale.detach().float())),
            "claver.weights_sha256": fingerprint}


def export_video_bytes(model: nn.Module, *, precision: str = "fp32",
                       fingerprint: str | None = None) -> bytes:
    """The video tower as ONNX bytes with metadata (see the module docstring)."""
    if precision not in PRECISIONS:
        raise ValueError(f"ONNX precision must be one of {PRECISIONS}, got {precision!r}")
    import_onnx()
    cfg = model.config
    s = cfg.vision.image_size
    was_training = model.training
    m = _cpu_fp32(model).eval()
    try:
        example = torch.zeros(2, cfg.num_frames, 3, s, s)
        data = _trace(VideoTower(m, cls_only=True), example, ("video", "embedding"),
                      {"video": {0: "batch"}, "embedding": {0: "batch"}}, cfg)
    finally:
        model.train(was_training)
    if precision == "int8":
        data = quantize_int8(data)
    return _with_metadata(data, _metadata(model, "video", fingerprint or weights_sha256(model),
                                          precision))


def export_text_bytes(model: nn.Module, *, fingerprint: str | None = None) -> bytes:
    """The text tower as ONNX bytes with metadata (see the module docstring)."""
    import_onnx()
    was_training = model.training
    m = _cpu_fp32(model).eval()
    try:
        example = torch.zeros(2, 8, dtype=torch.long)
        example[:, -1] = m.config.text.vocab_size - 1
        data = _trace(TextTower(m), example, ("tokens", "features"),
                      {"tokens": {0: "texts", 1: "length"}, "features": {0: "texts"}})
    finally:
        model.train(was_training)
    return _with_metadata(data, _metadata(model, "text", fingerprint or weights_sha256(model),
                                          "fp32"))


def export_onnx(model: nn.Module, path: str | os.PathLike, *, precision: str = "fp32",
                text: bool = True) -> dict[str, Path]:
    """Write the video tower to ``path`` and (``text=True``) the text tower to
    :func:`text_path` (``out.text.onnx``); returns {"video": path, "text": path}."""
    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"{path}: the output file name must end in .onnx (e.g. model.onnx)")
    fingerprint = weights_sha256(model, text=True)
    out = {"video": atomic_write_bytes(path, export_video_bytes(
        model, precision=precision, fingerprint=fingerprint))}
    if text:
        out["text"] = atomic_write_bytes(text_path(path), export_text_bytes(
            model, fingerprint=fingerprint))
    return out


def check_export(model: nn.Module, path: str | os.PathLike) -> dict[str, float]:
    """max |ONNX Runtime - torch| of the exported towers on a random video (1, T, 3, S, S)
    and two label texts: {"video": ..., "text": ...} (text only when it was exported)."""
    from claver.text.tokenizer import tokenize

    exported = load_onnx_model(path)
    cfg = model.config
    video = torch.randn(1, cfg.num_frames, 3, cfg.vision.image_size, cfg.vision.image_size)
    m = _cpu_fp32(model).eval()
    with torch.inference_mode():
        out = {"video": float((video_embedding(m, video)
                               - exported.encode_video(video)).abs().max())}
        if exported.text_session is not None:
            tokens = tokenize(["a video of dancing.", "a video of a person riding a bike."],
                              context_length=cfg.text.context_length)
            out["text"] = float((m.encode_text(tokens).float()
                                 - exported.encode_text(tokens)).abs().max())
    return out


def weights_sha256(model: nn.Module, *, text: bool = False) -> str:
    """sha256 of the config and the visual parameters (``text=True``: all parameters)."""
    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for name, p in sorted(model.state_dict().items()):
        if not text and not name.startswith("visual.") and not name.startswith("fusion."):
            continue
        t = p.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            digest.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()


# -------------------------------------------------------------------------------- sessions

def session_options(threads: int | None = None) -> Any:
    """CPU session options: all graph optimisations, ``threads`` intra-op threads (default:
    torch's), sequential execution, and threads that sleep when idle: spinning ones slow
    whatever runs next on the same cores (the decoding thread, torch; 10-25 % measured) and
    gain nothing measurable for a model this size."""
    ort = import_onnxruntime()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.intra_op_num_threads = max(1, threads or torch.get_num_threads())
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    return opts


def make_session(model: str | os.PathLike | bytes, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session for a file or serialized model."""
    ort = import_onnxruntime()
    src = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(src, session_options(threads),
                                    providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for bad files
        where = "the exported model" if isinstance(model, bytes) else str(model)
        raise OnnxModelError(f"{where}: ONNX Runtime cannot load it "
                             f"({str(e).strip().splitlines()[0][:200]})") from None


class OnnxVideoEncoder:
    """A video-tower session: ``__call__(video (B, T, 3, S, S)) -> float32 (B, E)``."""

    def __init__(self, session: Any, precision: str = "fp32") -> None:
        self.session, self.precision = session, precision

    def __call__(self, video: torch.Tensor) -> torch.Tensor:
        x = video.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self.session.run(None, {"video": x})[0])


_SESSIONS: dict[tuple[str, str, int], OnnxVideoEncoder] = {}
_STAMPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def cache_dir() -> Path:
    """Where exported towers are kept: ``$CLAVER_CACHE/onnx`` (default ~/.cache/claver/onnx)."""
    from claver.weights.download import default_cache_dir

    return default_cache_dir() / "onnx"


def _stamp(model: nn.Module) -> tuple:
    """Changes when any parameter is replaced or modified in place (cheap to compute)."""
    return tuple((p.data_ptr(), p._version) for p in model.state_dict().values())


def _fingerprint(model: nn.Module) -> str:
    stamp = _stamp(model)
    known = _STAMPS.get(model)
    if known is not None and known[0] == stamp:
        return known[1]
    fingerprint = weights_sha256(model)
    _STAMPS[model] = (stamp, fingerprint)
    return fingerprint


def video_encoder(model: nn.Module, *, precision: str = "fp32", threads: int | None = None,
                  cache: str | os.PathLike | None = None) -> OnnxVideoEncoder:
    """The ONNX Runtime video tower of a torch model (exported once per weights and cached
    on disk, one session per (weights, precision, threads) kept in the process)."""
    if precision not in PRECISIONS:
        raise ValueError(f"ONNX precision must be one of {PRECISIONS}, got {precision!r}")
    import_onnxruntime()
    threads = max(1, threads or torch.get_num_threads())
    with _LOCK:
        fingerprint = _fingerprint(model)
        key = (fingerprint, precision, threads)
        if key not in _SESSIONS:
            path = Path(cache) if cache is not None else cache_dir()
            path = path / f"{fingerprint}.video.{precision}.r{REVISION}.onnx"
            if not path.is_file():
                atomic_write_bytes(path, export_video_bytes(model, precision=precision,
                                                            fingerprint=fingerprint))
            _SESSIONS[key] = OnnxVideoEncoder(make_session(path, threads), precision)
        return _SESSIONS[key]


# ----------------------------------------------------------------------- exported models

def read_metadata(session: Any, source: str) -> dict[str, Any]:
    """The ``claver.*`` metadata of an exported file, checked; one-line errors name it."""
    from claver.fileio import parse_json
    from claver.models.config import ModelConfig

    meta = dict(session.get_modelmeta().custom_metadata_map)
    if meta.get("claver.format") != FORMAT:
        raise OnnxModelError(f"{source}: not an ONNX file written by `claver export` (no "
                             f"claver.format={FORMAT} metadata); export it with claver export")
    try:
        config = ModelConfig.from_dict(parse_json(meta["claver.config"], source))
        pre = parse_json(meta["claver.preprocess"], source)
        out = {"kind": meta["claver.kind"], "config": config, "preprocess": pre,
               "precision": meta.get("claver.precision", "fp32"),
               "logit_scale": float(meta["claver.logit_scale"]),
               "weights_sha256": meta.get("claver.weights_sha256", "")}
    except (KeyError, ValueError, TypeError) as e:
        raise OnnxModelError(f"{source}: unreadable claver metadata ({e}); re-export the "
                             "model with claver export") from None
    return out


class OnnxModel(nn.Module):
    """A model exported by :func:`export_onnx`, run by ONNX Runtime.

    ``encode_video`` (B, T, 3, S, S) -> (B, E) float32; ``encode_text`` (N, ctx) -> (N, E)
    L2-normalised; ``config``, ``preprocess`` and ``logit_scale`` as for a torch model, so
    :class:`claver.zeroshot.Predictor` takes it as its model.
    """

    def __init__(self, video: Any, text: Any, meta: dict[str, Any], source: str) -> None:
        super().__init__()
        from claver.inputs import Preprocess

        self.video_session, self.text_session, self.source = video, text, source
        self.config = meta["config"]
        self.precision = meta["precision"]
        p = meta["preprocess"]
        self.preprocess = Preprocess(int(p["num_frames"]), int(p["image_size"]),
                                     int(p["short_side"]), tuple(p["mean"]), tuple(p["std"]))
        self.register_buffer("logit_scale", torch.tensor(meta["logit_scale"]))
        self._video = OnnxVideoEncoder(video, self.precision)

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        return self._video(video)

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        if self.text_session is None:
            raise RuntimeError(f"{self.source}: no text tower next to it ("
                               f"{text_path(self.source).name}); export with text")
        x = cut_tokens(tokens).to("cpu", torch.int64).numpy()
        return torch.from_numpy(self.text_session.run(None, {"tokens": x})[0])


def load_onnx_model(path: str | os.PathLike, *, threads: int | None = None) -> OnnxModel:
    """An :class:`OnnxModel` from the video tower file (the text tower is read from
    :func:`text_path` next to it when it exists)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    video = make_session(path, threads)
    meta = read_metadata(video, str(path))
    if meta["kind"] != "video":
        raise OnnxModelError(f"{path}: this is the {meta['kind']} tower; pass the video tower "
                             "file (the one without .text)")
    tpath = text_path(path)
    text = None
    if tpath.is_file():
        text = make_session(tpath, threads)
        tmeta = read_metadata(text, str(tpath))
        if tmeta["kind"] != "text" or tmeta["weights_sha256"] != meta["weights_sha256"]:
            raise OnnxModelError(f"{tpath}: not the text tower of {path.name} (other weights);"
                                 " export both again with claver export")
    return OnnxModel(video, text, meta, str(path))

