"""Video decoding behind one small interface: ``VideoReader``, ``read_video``, ``probe_video``.

Frames come out as uint8 tensors (T, H, W, 3), RGB, upright, in the order of the requested
indices. Frame ``i`` is the ``i``-th frame a full sequential FFmpeg decode puts out (what
FFmpeg, OpenCV and decord users see), on any file FFmpeg decodes fully, whatever its
timestamps say.

Backends, chosen by name:

- ``"pyav"`` (default, always installed). One demux-only pass over the packets when the reader
  opens gives the frame count (the container header is never trusted: it can lie or be
  absent; edit-list pre-roll packets, which FFmpeg decodes but never puts out, are not
  counted) and the keyframe positions. Frames are then *placed* (``reader.placement``):

  * ``"timestamps"`` where the scan finds the packet timestamps consistent with display order
    (present and unique; not merely increasing in decoding order for a decoder that reorders
    frames, which is what AVI's decode-order counters and MP4s without composition offsets
    look like; no frame shown before it is decoded; no timestamp crossing a keyframe). Every
    frame that comes out is checked again: positions must follow each other, gaps only where
    a frame was left undecoded on purpose; anything else switches the file to counting and
    the read starts again. Decoding runs forward and seeks only when a keyframe lies between
    the current position and the target (or to go backwards), and frames between the wanted
    ones that no other frame references are not decoded at all (FFmpeg ``skip_frame =
    "NONREF"``, set packet by packet; H.264, HEVC with one temporal sub-layer, MPEG-1/2/4
    part 2: B-frames and non-reference pictures, about half the frames of x264's default
    B-pyramid). Every reference frame is still decoded, so frames are bit-identical to a full
    decode. Known limit: timestamps swapped *between* non-reference frames of one group of
    pictures are caught only when both frames are decoded (any read without gaps, e.g.
    ``claver data check --full``); a sparse read that skips one of them cannot see it.
  * ``"count"`` otherwise (AVI with B-frames, as HMDB-51 and UCF-101 ship; raw streams;
    repeated or missing timestamps): frames are placed by counting the decoder's output from
    the first packet, nothing is skipped, reads go forward and going back restarts.

  ``reader.stats`` counts ``seeks``, ``decoded`` and ``skipped`` frames. One decoder thread,
  on the container the scan opened (seeked back to the start, not reopened).

  Only media demuxers are opened (FFmpeg's ``format_whitelist``; paths through the ``file``
  protocol only): a ``.mp4`` that is really a concat list, an HLS/DASH playlist or an image
  sequence, which would make FFmpeg read other files or the network, is refused.
  ``DecodeLimits`` bounds each reader: frame size (``max_pixels``, checked before anything is
  decoded, and FFmpeg's own ``max_pixels``), time per call (``timeout``: the scan, and each
  ``get_frames``; FFmpeg's reads are interrupted too) and packets (``max_packets``; the index
  keeps ~25 bytes a packet).
- ``"decord"`` (``pip install "claver[decord]"``, decord2) and ``"torchcodec"``
  (``pip install "claver[torchcodec]"``, pinned 0.13.0, needs FFmpeg shared libraries:
  ``apt install ffmpeg``), imported lazily, one thread each. The PyAV packet scan supplies
  ``info`` and checks them; a file they get wrong is handed to PyAV with a ``RuntimeWarning``
  (``reader.backend`` then says ``"pyav"``). Found here: decord2 3.4 crashes on 90/270-degree
  rotated videos, returns wrong frames after seeks in AVI files with B-frames and rejects
  raw streams; torchcodec 0.13 rejects raw streams and returns wrong frames after seeks in
  AVI files with B-frames; both count the cut-short last packet of a truncated file.

Rotation: a display matrix (phone videos) is applied so frames come out upright;
``VideoInfo.rotation`` is the clockwise angle (0/90/180/270, the convention of the legacy
``rotate`` tag) that was applied, and ``width``/``height`` are the upright size. Flips in
the matrix and non-square sample aspect ratios are ignored.

``short_side``: frames are scaled so their shorter side equals ``short_side`` (aspect ratio
kept, long side rounded), in both directions. PyAV scales inside the colour conversion
(swscale, bilinear with area-aware filtering when shrinking), which is cheaper than
decoding at full size and resizing afterwards; decord and torchcodec frames are resized
with antialiased bilinear interpolation in torch (decord2's own scaler fails for some sizes).
``info`` always describes the video at its native size.

Code: this module holds the reader (``VideoReader``, ``read_video``, ``probe_video``,
``available_backends``); the backends live in :mod:`claver.data.pyav_backend` (its packet facts in
:mod:`claver.data.stream_facts`) and
:mod:`claver.data.optional_backends`, the shared pieces (``VideoSource``, ``VideoInfo``,
``VideoDecodeError``) in :mod:`claver.data.video_source`. Import them all from here.
"""

from __future__ import annotations

import operator
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from claver.data.optional_backends import (
    BackendUnavailableError,
    _backend_module,
    _DecordBackend,
    _TorchCodecBackend,
    _Unsupported,
)
from claver.data.pyav_backend import _PyAVBackend, _scaled_size
from claver.data.sampling import segment_indices
from claver.data.video_source import BACKENDS, DecodeLimits, VideoInfo, VideoSource, _Source
from claver.data.video_source import VideoDecodeError as VideoDecodeError  # re-exported

__all__ = ["BackendUnavailableError", "DecodeLimits", "VideoDecodeError", "VideoInfo",
           "VideoReader", "VideoSource", "available_backends", "probe_video", "read_video"]


def available_backends() -> list[str]:
    """Names of the backends that import here, ``"pyav"`` first."""
    names = ["pyav"]
    for name in BACKENDS[1:]:
        try:
            _backend_module(name)
        except BackendUnavailableError:
            continue
        names.append(name)
    return names


_BACKEND_CLASSES = {"pyav": _PyAVBackend, "decord": _DecordBackend,
                    "torchcodec": _TorchCodecBackend}


class VideoReader:
    """Random access to the frames of one video.

    ``src`` is a path, ``bytes`` or a seekable binary file object (read from position 0 to
    its end). ``backend`` is ``"pyav"``, ``"decord"`` or ``"torchcodec"``; ``short_side``
    scales frames so their shorter side has that many pixels; ``limits`` bounds frame size,
    time per call and packet count (``DecodeLimits()`` by default). Opening checks the file
    and raises ``VideoDecodeError`` (missing, empty, corrupt, audio-only, too large, not a
    media container, ...).
    """

    def __init__(self, src: VideoSource, backend: str = "pyav", *,
                 short_side: int | None = None, limits: DecodeLimits | None = None) -> None:
        if backend not in _BACKEND_CLASSES:
            raise ValueError(f"unknown video backend {backend!r}; choose one of {BACKENDS}")
        if short_side is not None and short_side < 1:
            raise ValueError(f"short_side must be a positive integer, got {short_side}")
        self.requested_backend = backend
        self.fallback_reason: str | None = None
        self._short_side = short_side
        self._limits = limits or DecodeLimits()
        if backend != "pyav":
            _backend_module(backend)  # BackendUnavailableError before anything else
        self._source = _Source(src)
        try:
            self._impl: Any = _BACKEND_CLASSES[backend](self._source, short_side,
                                                        limits=self._limits)
        except _Unsupported as exc:
            self._fall_back(exc)

    def _fall_back(self, exc: _Unsupported) -> None:
        if hasattr(self, "_impl"):
            self._impl.close()  # a closed PyAV probe reopens itself when used
        self._impl = exc.fallback or _PyAVBackend(self._source, self._short_side,
                                                   limits=self._limits)
        self.fallback_reason = str(exc)
        warnings.warn(f"{self._source.name}: {exc}; decoding it with pyav instead",
                      RuntimeWarning, stacklevel=3)

    @property
    def backend(self) -> str:
        """The backend actually decoding this file (``"pyav"`` after a fallback)."""
        return self._impl.name

    @property
    def info(self) -> VideoInfo:
        return self._impl.info

    @property
    def stats(self) -> dict[str, int]:
        """Work counters: ``seeks`` (demuxer seeks and rewinds), ``decoded`` frames and
        ``skipped`` frames (left undecoded: nobody asked for them and nothing references
        them). decord/torchcodec: ``decoded`` counts frames returned; they report no seeks
        and no skipping."""
        return self._impl.stats

    @property
    def placement(self) -> str:
        """How frames are placed: ``"timestamps"`` (proven consistent: seeks and skipping
        allowed) or ``"count"`` (counting decoder output from frame 0)."""
        impl = getattr(self._impl, "probe", self._impl)
        return impl.placement

    def __len__(self) -> int:
        return self.info.num_frames

    def get_frames(self, indices: Sequence[int]) -> torch.Tensor:
        """Frames at ``indices`` (any order, repeats allowed): uint8 (T, H, W, 3)."""
        wanted = [operator.index(i) for i in indices]
        n = self.info.num_frames
        for i in wanted:
            if not 0 <= i < n:
                raise self._source.error(
                    f"frame index {i} out of range: the video has {n} frames (valid 0..{n - 1})",
                    "sample indices from reader.info.num_frames")
        if not wanted:
            w, h = _scaled_size(self.info.width, self.info.height, self._short_side)
            return torch.empty((0, h, w, 3), dtype=torch.uint8)
        try:
            return self._impl.get_frames(wanted)
        except _Unsupported as exc:
            self._fall_back(exc)
            return self._impl.get_frames(wanted)

    def close(self) -> None:
        self._impl.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"VideoReader({self._source.name!r}, backend={self.backend!r}, {self.info})"


def read_video(src: VideoSource, num_frames: int | None = None,
               indices: Sequence[int] | None = None, backend: str = "pyav",
               short_side: int | None = None,
               limits: DecodeLimits | None = None) -> torch.Tensor:
    """Decode a video to uint8 (T, H, W, 3).

    ``num_frames``: T frames at the centres of T equal segments (TSN test sampling; short
    videos repeat frames). ``indices``: exactly those frames. Neither: every frame.
    """
    if num_frames is not None and indices is not None:
        raise ValueError("pass num_frames or indices, not both")
    if num_frames is not None and num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    with VideoReader(src, backend, short_side=short_side, limits=limits) as reader:
        n = reader.info.num_frames
        if indices is None:
            indices = (range(n) if num_frames is None
                       else segment_indices(n, num_frames, train=False).tolist())
        return reader.get_frames(indices)


def probe_video(src: VideoSource, backend: str = "pyav",
                limits: DecodeLimits | None = None) -> VideoInfo:
    """Metadata of a video (exact frame count, fps, duration, upright size, codec, rotation)."""
    with VideoReader(src, backend, limits=limits) as reader:
        return reader.info
