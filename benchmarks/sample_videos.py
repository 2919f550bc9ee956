"""Sample videos for the benchmarks: h264 mp4 files of moving textured content, x264
defaults (a keyframe every 250 frames, B-frames), like Kinetics after short-side-256
preprocessing."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np


def make_videos(folder: Path, count: int, seconds: float, size: tuple[int, int],
                fps: int = 25) -> list[Path]:
    """Encode ``count`` h264 mp4 files of moving textured content with x264 defaults."""
    import av

    w, h = size
    paths = []
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    for k in range(count):
        path = folder / f"video_{k}.mp4"
        with av.open(str(path), "w") as out:
            stream = out.add_stream("h264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            stream.time_base = Fraction(1, fps)
            phase = rng.uniform(0, 6.28, 3)
            for t in range(int(seconds * fps)):
                img = np.stack([
                    127 + 100 * np.sin(xx / (9 + c * 3) + yy / 17 + t * 0.15 + phase[c])
                    for c in range(3)], -1)
                img[(yy - 60 - t) % h < 40, :] = (40 * k) % 255  # a moving band
                frame = av.VideoFrame.from_ndarray(img.astype(np.uint8), format="rgb24")
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        paths.append(path)
    return paths
