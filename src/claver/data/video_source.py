"""Pieces every video decoding backend shares: what a video source may be (``VideoSource``,
checked by ``_Source``), what a video holds (``VideoInfo``) and the error for a video that
cannot be read (``VideoDecodeError``). Public names are re-exported by
:mod:`claver.data.decode`.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

VideoSource = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO

BACKENDS = ("pyav", "decord", "torchcodec")
_REENCODE = "re-encode it (e.g. ffmpeg -i IN -c:v libx264 OUT.mp4) or drop it from the list"


@dataclass(frozen=True)
class VideoInfo:
    """What a video holds. ``width``/``height`` are the upright (rotation-applied) size;
    ``rotation`` is clockwise degrees; ``frame_count_exact`` is True when ``num_frames`` was
    counted from the stream rather than read from the container header."""

    num_frames: int
    fps: float
    duration: float
    width: int
    height: int
    codec: str
    rotation: int = 0
    frame_count_exact: bool = True


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds on what one video may cost, whatever the file claims.

    ``max_pixels``: frames larger than this (width x height, native size) are refused before
    decoding (default 8K UHD, 7680 x 4320). ``timeout``: seconds one reader may spend opening,
    scanning and decoding (None: no limit); FFmpeg's own reads are interrupted when it passes.
    ``max_packets``: packets one video stream may hold (a file of millions of tiny packets
    is refused rather than indexed)."""

    max_pixels: int = 7680 * 4320
    timeout: float | None = 120.0
    max_packets: int = 5_000_000

    def __post_init__(self) -> None:
        if self.max_pixels < 1:
            raise ValueError(f"max_pixels must be >= 1, got {self.max_pixels}")
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds or None, got {self.timeout}")
        if self.max_packets < 1:
            raise ValueError(f"max_packets must be >= 1, got {self.max_packets}")


class VideoDecodeError(ValueError):
    """A video cannot be read. ``source`` names the file, ``reason`` says why, ``hint`` how
    to fix it; the message holds all three."""

    def __init__(self, source: str, reason: str, hint: str = "") -> None:
        self.source, self.reason, self.hint = source, reason, hint
        super().__init__(f"{source}: {reason}" + (f". Fix: {hint}" if hint else ""))


class _Source:
    """A checked video source: a path, bytes, or a seekable binary file object."""

    def __init__(self, src: VideoSource) -> None:
        self.path: Path | None = None
        self.data: bytes | None = None
        self.fileobj: BinaryIO | None = None
        if isinstance(src, (str, os.PathLike)):
            self.path = Path(src)
            self.name = str(src)
            if not self.path.exists():
                raise VideoDecodeError(self.name, "file not found",
                                       "check the path and the dataset root directory")
            if not self.path.is_file():
                raise VideoDecodeError(self.name, "not a regular file (a directory?)",
                                       "pass the path of a video file")
            size = self.path.stat().st_size
        elif isinstance(src, (bytes, bytearray, memoryview)):
            self.data = bytes(src)
            size = len(self.data)
            self.name = f"<bytes, {size} bytes>"
        elif hasattr(src, "read") and hasattr(src, "seek"):
            self.fileobj = src
            name = getattr(src, "name", None)
            self.name = name if isinstance(name, str) else "<file object>"
            src.seek(0, io.SEEK_END)
            size = src.tell()
            src.seek(0)
        else:
            raise TypeError(f"video source must be a path, bytes or a seekable binary file "
                            f"object, got {type(src).__name__}")
        if not size:
            raise VideoDecodeError(self.name, "file is empty (0 bytes)",
                                   "re-download or re-create it, or drop it from the list")

    def for_library(self) -> Any:
        """What decoders accept: a path string, or a file object at position 0."""
        if self.path is not None:
            return str(self.path)
        if self.data is not None:
            return io.BytesIO(self.data)
        assert self.fileobj is not None
        self.fileobj.seek(0)
        return self.fileobj

    def error(self, reason: str, hint: str = _REENCODE) -> VideoDecodeError:
        return VideoDecodeError(self.name, reason, hint)
