"""Synthetic test videos whose frames encode their own index (made with PyAV).

Every frame is a 4 x 4 grid of flat cells. The top-left cell is pure red (orientation and
RGB-order marker), the other three corners are black, and the remaining 12 cells are black
(bit 0) or white (bit 1): bit ``j`` of the frame index lives in the ``j``-th non-corner cell in
row-major order. Cells are large and flat, so the pattern survives lossy codecs, chroma
subsampling and downscaling to ~4 px per cell. ``frame_index`` reads it back and raises
``ValueError`` when the markers are wrong (frame rotated, mirrored, BGR or garbled), so a test
that calls it also checks that frames come out upright and in RGB order.

What each codec supports (FFmpeg bundled with PyAV 18):

===========  =========  ==========================  ==========================================
codec        container  pixel format                odd sizes (e.g. 171 x 97)
===========  =========  ==========================  ==========================================
``h264``     ``.mp4``   yuv420p (even), yuv444p     libx264 refuses odd sizes with 4:2:0, so
                        (odd sizes, chosen          odd sizes switch to yuv444p (High 4:4:4)
                        automatically)
``mpeg4``    ``.avi``   yuv420p                     yes (encoder pads internally)
``vp9``      ``.webm``  yuv420p                     yes
``mjpeg``    ``.avi``   yuvj420p (full range; the   yes
             ``.mkv``   encoder rejects yuv420p)
===========  =========  ==========================  ==========================================

* ``gop``: keyframe interval (x264 also gets ``scenecut=0`` so keyframes land exactly every
  ``gop`` frames; mjpeg is all-intra). ``bframes`` sets ``max_b_frames`` (x264 default: 3).
* ``vfr=True`` gives irregular presentation times (durations cycle through ``VFR_STEPS_MS``)
  in a 1/1000 time base. AVI is a constant-rate container (FFmpeg writes empty "skip" chunks
  for gaps), so use mp4/webm/mkv for VFR.
* ``rotation`` (0/90/180/270, *clockwise*, the convention of the legacy ``rotate`` tag and of
  phone videos) is written as a display matrix with PyAV 18's
  ``VideoStream.set_display_rotation`` (which takes counter-clockwise degrees, hence the sign
  flip). mp4/mov store it in the track header; webm/mkv/avi drop it, so use mp4. The stored
  frames are the upright pattern turned the other way, so only a reader that applies the
  rotation gets frames that ``frame_index`` accepts. ``size`` is always the *stored* size:
  ``size=(64, 48), rotation=90`` displays as 48 wide x 64 high.
"""

from __future__ import annotations

import io
import os
import random
import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

GRID = 4
CORNERS = (0, GRID - 1, GRID * (GRID - 1), GRID * GRID - 1)
DATA_CELLS = tuple(i for i in range(GRID * GRID) if i not in CORNERS)
MAX_INDEX = 2 ** len(DATA_CELLS) - 1
VFR_STEPS_MS = (40, 20, 80, 33, 60, 17)
CONTAINERS = {"h264": "mp4", "mpeg4": "avi", "vp9": "webm", "mjpeg": "avi"}
ENCODERS = {"h264": "libx264", "mpeg4": "mpeg4", "vp9": "libvpx-vp9", "mjpeg": "mjpeg"}
_LOW, _HIGH = 16, 240


def _cell_bounds(n: int, i: int) -> tuple[int, int]:
    return (i * n) // GRID, ((i + 1) * n) // GRID


def draw_index(index: int, width: int, height: int) -> np.ndarray:
    """The upright pattern of frame ``index``: uint8 (height, width, 3) RGB."""
    if not 0 <= index <= MAX_INDEX:
        raise ValueError(f"index {index} outside 0..{MAX_INDEX}")
    img = np.full((height, width, 3), _LOW, dtype=np.uint8)
    for cell in range(GRID * GRID):
        r, c = divmod(cell, GRID)
        y0, y1 = _cell_bounds(height, r)
        x0, x1 = _cell_bounds(width, c)
        if cell == 0:
            img[y0:y1, x0:x1] = (_HIGH, _LOW, _LOW)
        elif cell in DATA_CELLS and (index >> DATA_CELLS.index(cell)) & 1:
            img[y0:y1, x0:x1] = _HIGH
    return img


def _cell_means(frame: np.ndarray) -> np.ndarray:
    """Mean RGB of the central half of each cell: (GRID * GRID, 3) float."""
    h, w = frame.shape[:2]
    out = np.empty((GRID * GRID, 3))
    for cell in range(GRID * GRID):
        r, c = divmod(cell, GRID)
        y0, y1 = _cell_bounds(h, r)
        x0, x1 = _cell_bounds(w, c)
        dy, dx = (y1 - y0) // 4, (x1 - x0) // 4
        patch = frame[y0 + dy : max(y1 - dy, y0 + dy + 1), x0 + dx : max(x1 - dx, x0 + dx + 1)]
        out[cell] = patch.reshape(-1, 3).mean(0)
    return out


def frame_index(frame: np.ndarray | object) -> int:
    """Decode the index drawn by ``draw_index`` from an upright RGB frame (H, W, 3) uint8.

    Accepts numpy arrays and torch tensors. Raises ``ValueError`` when the orientation/colour
    markers are wrong (rotated, mirrored, BGR or not one of our frames).
    """
    arr = np.asarray(frame.numpy() if hasattr(frame, "numpy") else frame)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) frame, got shape {arr.shape}")
    means = _cell_means(arr.astype(np.float64))
    mid = (_LOW + _HIGH) / 2
    red = means[0]
    if not (red[0] > mid and red[1] < mid and red[2] < mid):
        raise ValueError(f"top-left marker is not red (RGB means {red.round(1)}): frame "
                         "rotated, mirrored, in BGR order, or not a synthetic frame")
    for cell in CORNERS[1:]:
        if means[cell].mean() > mid:
            raise ValueError(f"corner cell {cell} is not black: frame rotated or mirrored")
    bits = means[list(DATA_CELLS)].mean(1) > mid
    return int(sum(1 << j for j, bit in enumerate(bits) if bit))


def frame_indices(frames: object) -> list[int]:
    """``frame_index`` of each frame of a (T, H, W, 3) array or tensor."""
    return [frame_index(f) for f in frames]  # type: ignore[union-attr]


def vfr_pts_ms(num_frames: int) -> list[int]:
    """Presentation times (ms) used by ``make_video(vfr=True)``."""
    pts, t = [], 0
    for i in range(num_frames):
        pts.append(t)
        t += VFR_STEPS_MS[i % len(VFR_STEPS_MS)]
    return pts


def make_video(
    path: str | os.PathLike,
    *,
    num_frames: int,
    size: tuple[int, int] = (64, 48),
    codec: str = "h264",
    fps: int = 25,
    gop: int | None = None,
    vfr: bool = False,
    rotation: int | None = None,
    pix_fmt: str | None = None,
    bframes: int | None = None,
    container: str | None = None,
) -> Path:
    """Encode ``num_frames`` index-pattern frames of stored size ``size=(W, H)`` to ``path``.

    ``container`` is an FFmpeg muxer name (``"mp4"``, ``"avi"``, ``"webm"``, ``"matroska"``,
    ``"h264"`` for a raw Annex-B stream); by default it follows the path's suffix. See the
    module docstring for what each codec supports.
    """
    path = Path(path)
    if codec not in ENCODERS:
        raise ValueError(f"codec must be one of {sorted(ENCODERS)}, got {codec!r}")
    width, height = size
    rot = (rotation or 0) % 360
    if rot % 90:
        raise ValueError(f"rotation must be a multiple of 90, got {rotation}")
    if pix_fmt is None:
        pix_fmt = {"mjpeg": "yuvj420p"}.get(codec, "yuv420p")
        if codec == "h264" and (width % 2 or height % 2):
            pix_fmt = "yuv444p"
    out = av.open(str(path), mode="w", format=container)
    try:
        stream = out.add_stream(ENCODERS[codec], rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.codec_context.thread_count = 1
        time_base = Fraction(1, 1000) if vfr else Fraction(1, fps)
        stream.codec_context.time_base = time_base
        if gop is not None:
            stream.codec_context.gop_size = gop
        if bframes is not None:
            stream.codec_context.max_b_frames = bframes
        if codec == "h264":
            params = ["scenecut=0"] + ([f"keyint={gop}", f"min-keyint={gop}"] if gop else [])
            if bframes is not None:
                params.append(f"bframes={bframes}")
            stream.options = {"preset": "fast", "x264-params": ":".join(params)}
        elif codec == "vp9":
            stream.options = {"deadline": "realtime", "cpu-used": "8", "crf": "20", "b": "0"}
            if gop is not None:
                stream.options = {**stream.options, "keyint_min": str(gop)}
        elif codec == "mpeg4" and gop is not None:
            stream.options = {"sc_threshold": "1000000000"}  # no extra scene-cut keyframes
        if rot:
            stream.set_display_rotation(-rot)  # PyAV takes counter-clockwise degrees
        times = vfr_pts_ms(num_frames) if vfr else list(range(num_frames))
        disp_w, disp_h = (height, width) if rot in (90, 270) else (width, height)
        for i, pts in enumerate(times):
            img = np.ascontiguousarray(np.rot90(draw_index(i, disp_w, disp_h), k=rot // 90))
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = pts, time_base
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    finally:
        out.close()
    return path


def make_empty(path: str | os.PathLike) -> Path:
    """A zero-byte file."""
    path = Path(path)
    path.write_bytes(b"")
    return path


def make_truncated(src: str | os.PathLike, path: str | os.PathLike,
                   fraction: float = 0.6) -> Path:
    """Copy of ``src`` cut after ``fraction`` of its bytes (mid-stream)."""
    data = Path(src).read_bytes()
    path = Path(path)
    path.write_bytes(data[: max(1, int(len(data) * fraction))])
    return path


def make_garbage(path: str | os.PathLike, num_bytes: int = 20_000, seed: int = 0) -> Path:
    """Random bytes (fixed seed), typically saved under a ``.mp4`` name."""
    path = Path(path)
    path.write_bytes(random.Random(seed).randbytes(num_bytes))
    return path


def make_audio_only(path: str | os.PathLike, seconds: float = 0.5, rate: int = 16000,
                    codec: str = "aac") -> Path:
    """A file with one audio stream and no video (``aac`` in .m4a or ``pcm_s16le`` in .wav)."""
    path = Path(path)
    out = av.open(str(path), mode="w")
    try:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        fmt = stream.codec_context.format.name
        dtype = np.float32 if fmt.startswith("flt") else np.int16
        scale = 0.3 if dtype == np.float32 else 0.3 * 32767
        n, step, start = int(seconds * rate), 1024, 0
        while start < n:
            t = np.arange(start, min(start + step, n)) / rate
            samples = (scale * np.sin(2 * np.pi * 440 * t)).astype(dtype)[None]
            frame = av.AudioFrame.from_ndarray(samples, format=fmt, layout="mono")
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                out.mux(packet)
            start += step
        for packet in stream.encode(None):
            out.mux(packet)
    finally:
        out.close()
    return path


def make_lying_header(path: str | os.PathLike, *, num_frames: int, claimed: int,
                      size: tuple[int, int] = (64, 48), codec: str = "mpeg4") -> Path:
    """An AVI whose header claims ``claimed`` frames although it holds ``num_frames``.

    Patches ``avih.dwTotalFrames`` and ``strh.dwLength`` (FFmpeg reports the latter as
    ``stream.frames``); the index (``idx1``) and the data stay correct.
    """
    path = make_video(path, num_frames=num_frames, size=size, codec=codec, container="avi")
    data = bytearray(path.read_bytes())
    avih = data.index(b"avih")
    struct.pack_into("<I", data, avih + 8 + 16, claimed)
    strh = data.index(b"strh")
    struct.pack_into("<I", data, strh + 8 + 32, claimed)
    path.write_bytes(bytes(data))
    return path


def make_raw_h264(path: str | os.PathLike, *, num_frames: int, size: tuple[int, int] = (64, 48),
                  gop: int | None = None) -> Path:
    """A raw Annex-B ``.h264`` bitstream: no container, no frame count, no timestamps."""
    return make_video(path, num_frames=num_frames, size=size, codec="h264", gop=gop,
                      container="h264")


class ByteWindow(io.RawIOBase):
    """Read-only seekable view of bytes ``[start, start + size)`` of an open binary file,
    the way a tar member is read in place (offset 0 of the window is ``start``)."""

    def __init__(self, file: io.BufferedIOBase, start: int, size: int, name: str | None = None):
        super().__init__()
        self._file, self._start, self._size, self._pos = file, start, size, 0
        if name is not None:
            self.name = name

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = min(max(base + offset, 0), self._size)
        return self._pos

    def readinto(self, buffer) -> int:  # type: ignore[override]
        n = min(len(buffer), self._size - self._pos)
        if n <= 0:
            return 0
        self._file.seek(self._start + self._pos)
        data = self._file.read(n)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


def keyframe_indices(path: str | os.PathLike) -> list[int]:
    """Presentation-order indices of the keyframe packets of a file (demux only)."""
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        pkts = [(p.pts, p.is_keyframe) for p in c.demux(stream) if p.size]
    order = sorted(range(len(pkts)), key=lambda i: pkts[i][0])
    return sorted(pos for pos, i in enumerate(order) if pkts[i][1])


def decode_all(path: str | os.PathLike) -> list[int]:
    """Indices of all frames decoded by plain sequential PyAV decoding (a reference)."""
    with av.open(str(path)) as c:
        return [frame_index(f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]


def full_decode(path: str | os.PathLike) -> list[av.VideoFrame]:
    """Every frame of a full sequential decode of the first video stream, in output order
    (the definition of a correct read). Like the ``ffmpeg`` tool (and unlike
    ``container.decode()``, which raises): a packet the decoder rejects is skipped, a demuxer
    error ends the input; then the decoder is drained. Empty packets (AVI "skip" chunks) are
    not sent: an empty packet would drain the decoder."""
    frames: list[av.VideoFrame] = []
    with av.open(str(path), metadata_errors="ignore") as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        try:
            for packet in container.demux(stream):
                if packet.size:
                    try:
                        frames += stream.decode(packet)
                    except av.FFmpegError:
                        continue
        except (av.FFmpegError, OSError):
            pass
        frames += stream.decode(None)
    return frames
