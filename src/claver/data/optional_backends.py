"""The optional ``"decord"`` and ``"torchcodec"`` video backends, imported lazily
(``_backend_module``), each checked against the PyAV packet scan; a file they cannot handle
raises ``_Unsupported`` carrying the PyAV backend to fall back to.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

import torch

from claver.data.pyav_backend import _PyAVBackend, _resize_short_side
from claver.data.video_source import BACKENDS, DecodeLimits, _Source

_INSTALL_HINTS = {
    "decord": 'pip install "claver[decord]"',
    "torchcodec": 'pip install "claver[torchcodec]" (torchcodec==0.13.0) and install FFmpeg '
                  "shared libraries (Debian/Ubuntu: apt install ffmpeg)",
}
_MODULES = {"decord": "decord", "torchcodec": "torchcodec.decoders"}


class BackendUnavailableError(ImportError):
    """An optional decoding backend is not installed; the message gives the install command."""


@functools.cache
def _backend_module(name: str) -> Any:
    if name not in _MODULES:
        raise ValueError(f"unknown video backend {name!r}; choose one of {BACKENDS}")
    try:
        return importlib.import_module(_MODULES[name])
    except Exception as exc:  # missing package, or torchcodec without FFmpeg libraries
        raise BackendUnavailableError(
            f"video backend {name!r} is not usable ({type(exc).__name__}: {exc}); "
            f"install it with: {_INSTALL_HINTS[name]}. The default backend 'pyav' needs "
            "nothing extra."
        ) from exc


class _Unsupported(Exception):
    """An optional backend cannot handle this file; the reader falls back to PyAV."""

    def __init__(self, reason: str, fallback: _PyAVBackend | None = None) -> None:
        super().__init__(reason)
        self.fallback = fallback


def _short_error(exc: Exception) -> str:
    return str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else type(exc).__name__


def _check_timestamps(probe: _PyAVBackend, name: str) -> None:
    """Both optional backends seek by timestamp: files whose timestamps do not give the
    frame order go to PyAV, which counts frames instead."""
    if probe.placement != "timestamps":
        raise _Unsupported(f"{name} places frames by timestamps, and this file's frames can "
                           f"only be placed by counting ({probe.placement_reason})", probe)


class _DecordBackend:
    """decord2 ``VideoReader.get_batch``, checked against the PyAV packet scan."""

    name = "decord"

    def __init__(self, source: _Source, short_side: int | None,
                 limits: DecodeLimits | None = None) -> None:
        decord = _backend_module("decord")
        self._short_side = short_side
        self.stats = {"seeks": 0, "decoded": 0, "skipped": 0}
        # exact count and rotation from the packet scan (closed again: decord reads the file)
        self.probe = _PyAVBackend(source, short_side, keep_open=False, limits=limits)
        self.placement = self.probe.placement
        self.info = self.probe.info
        _check_timestamps(self.probe, "decord2")
        if self.info.rotation in (90, 270):
            raise _Unsupported("decord2 cannot decode 90/270-degree rotated videos", self.probe)
        # found on the tests/corpus files: wrong frames (shifted, or after seeks) for these
        if self.info.codec == "hevc":
            raise _Unsupported("decord2 returns wrong frames after seeks in HEVC", self.probe)
        if self.probe.format_name in ("mpegts", "mpeg"):
            raise _Unsupported("decord2 returns shifted frames from MPEG-TS/PS", self.probe)
        if self.probe.open_gop:
            raise _Unsupported("decord2 returns wrong frames after seeks into an open GOP "
                               "(frames shown before the keyframe they follow)", self.probe)
        try:
            self._reader = decord.VideoReader(source.for_library(), ctx=decord.cpu(0),
                                              num_threads=1)
            n = len(self._reader)
            starts = self._reader.get_frame_timestamp(list(range(n)))[:, 0] if n else None
        except Exception as exc:  # decord raises its own DECORDError (an Exception)
            raise _Unsupported(f"decord2 failed: {_short_error(exc)}", self.probe) from exc
        if n != self.info.num_frames:
            raise _Unsupported(f"decord2 counts {n} frames where the stream holds "
                               f"{self.info.num_frames}", self.probe)
        if starts is None or not (starts >= 0).all():
            raise _Unsupported("decord2 has no valid frame timestamps (its seeks would return "
                               "wrong frames)", self.probe)

    def get_frames(self, indices: list[int]) -> torch.Tensor:
        try:
            batch = self._reader.get_batch(indices).asnumpy()
        except Exception as exc:
            raise _Unsupported(f"decord2 failed: {_short_error(exc)}", self.probe) from exc
        self.stats["decoded"] += len(indices)
        return _resize_short_side(torch.from_numpy(batch), self._short_side)

    def close(self) -> None:
        self._reader = None
        self.probe.close()


class _TorchCodecBackend:
    """torchcodec ``VideoDecoder`` (exact seek mode, applies rotation itself), checked
    against the PyAV packet scan."""

    name = "torchcodec"

    def __init__(self, source: _Source, short_side: int | None,
                 limits: DecodeLimits | None = None) -> None:
        decoders = _backend_module("torchcodec")
        self._short_side = short_side
        self.stats = {"seeks": 0, "decoded": 0, "skipped": 0}
        self.probe = _PyAVBackend(source, short_side, keep_open=False, limits=limits)
        self.placement = self.probe.placement
        self.info = self.probe.info
        _check_timestamps(self.probe, "torchcodec")
        if "avi" in self.probe.format_name.split(",") and self.probe.reordered:
            raise _Unsupported("torchcodec returns wrong frames after seeks in AVI files with "
                               "B-frames", self.probe)
        try:
            self._decoder = decoders.VideoDecoder(source.for_library(), dimension_order="NHWC",
                                                  num_ffmpeg_threads=1, seek_mode="exact")
            n = int(self._decoder.metadata.num_frames or 0)
        except Exception as exc:
            raise _Unsupported(f"torchcodec failed: {_short_error(exc)}", self.probe) from exc
        if n != self.info.num_frames:
            raise _Unsupported(f"torchcodec counts {n} frames where the stream holds "
                               f"{self.info.num_frames}", self.probe)

    def get_frames(self, indices: list[int]) -> torch.Tensor:
        try:
            frames = self._decoder.get_frames_at(indices=indices).data
        except Exception as exc:
            raise _Unsupported(f"torchcodec failed: {_short_error(exc)}", self.probe) from exc
        self.stats["decoded"] += len(indices)
        return _resize_short_side(frames.contiguous(), self._short_side)

    def close(self) -> None:
        self._decoder = None
        self.probe.close()
