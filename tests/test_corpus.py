"""Real and quirky video files (``tests/corpus/``) read through every reader path.

The truth is the definition of a correct read: frame i of a video is the i-th frame that comes
out of a full sequential FFmpeg decode (PyAV, computed here, not by claver), made upright with
the display rotation and, for ``short_side``, scaled by swscale the way the reader's colour
conversion does it. ``manifest.json`` records the frame counts (Debian's ffprobe and PyAV) and
sizes; ``make_corpus.sh`` / ``fetch_real.sh`` say how each file was made or where it came from.
No ffmpeg runs here: the tests read the committed files.
"""

from __future__ import annotations

import hashlib
import json
import warnings
import zlib
from functools import cached_property
from pathlib import Path

import av
import numpy as np
import pytest

import claver
from claver.data import pyav_backend
from claver.data.decode import VideoReader, available_backends
from claver.data.sampling import segment_indices
from videos import full_decode

CORPUS = Path(__file__).resolve().parent / "corpus"
MANIFEST = json.loads((CORPUS / "manifest.json").read_text())
ENTRIES = MANIFEST["files"]
SHORT_SIDE = 32
OPTIONAL_BACKENDS = ["decord", "torchcodec"]


def _clockwise(ccw: float | None) -> int:
    """Counter-clockwise display rotation (PyAV ``frame.rotation``) -> clockwise degrees."""
    return int(round(-ccw / 90.0)) % 4 * 90 if ccw else 0


def _scaled(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(W, H) with the shorter side ``short_side``, the longer one rounded, aspect kept."""
    if width <= height:
        return short_side, max(1, round(height * short_side / width))
    return max(1, round(width * short_side / height)), short_side


class Video:
    """One corpus file, its manifest entry and its truth (computed once, lazily)."""

    def __init__(self, entry: dict) -> None:
        self.entry = entry
        self.name = entry["name"]
        self.path = CORPUS / self.name
        self.seed = zlib.crc32(self.name.encode())

    @cached_property
    def frames(self) -> list[av.VideoFrame]:
        return full_decode(self.path)

    @property
    def n(self) -> int:
        return len(self.frames)

    @cached_property
    def rotation(self) -> int:
        return _clockwise(self.frames[0].rotation)

    def _upright(self, array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.rot90(array, -self.rotation // 90, axes=(0, 1)))

    @cached_property
    def truth(self) -> np.ndarray:
        """(n, H, W, 3) uint8: every frame, RGB, upright."""
        return np.stack([self._upright(f.to_ndarray(format="rgb24")) for f in self.frames])

    @cached_property
    def truth_scaled(self) -> np.ndarray:
        """The truth at ``short_side=SHORT_SIDE``: swscale bilinear at the scaled size of the
        stored (not yet rotated) frame, then rotated upright."""
        first = self.frames[0]
        width, height = _scaled(first.width, first.height, SHORT_SIDE)
        return np.stack([
            self._upright(f.to_ndarray(format="rgb24", width=width, height=height,
                                       interpolation="BILINEAR"))
            for f in self.frames])

    def access_patterns(self) -> list[tuple[str, list[int]]]:
        """Index lists for one reader, in this order: random sorted, unsorted with repeats,
        backwards, the last frame alone, then the first frame again."""
        rng = np.random.default_rng(self.seed)
        n = self.n
        picks = sorted(rng.choice(n, size=min(n, 6), replace=False).tolist())
        shuffled = rng.integers(0, n, size=8).tolist()
        shuffled += shuffled[:2]  # repeats, out of order
        start = int(rng.integers(n // 2, n))
        backwards = list(range(start, max(-1, start - 7), -2))
        return [("random sorted", picks), ("unsorted with repeats", shuffled),
                ("backwards", backwards), ("last frame", [n - 1]), ("first frame again", [0])]


@pytest.fixture(scope="module", params=ENTRIES, ids=[e["name"] for e in ENTRIES])
def video(request: pytest.FixtureRequest) -> Video:
    """Module-scoped, so pytest runs all the tests of one file together (truth computed once)."""
    return Video(request.param)


def _describe(got: np.ndarray, want: np.ndarray, truth: np.ndarray) -> str:
    """Which requested positions came out wrong, and which truth frame each one equals."""
    wrong = [i for i in range(len(want)) if not np.array_equal(got[i], want[i])]
    parts = []
    for i in wrong[:6]:
        same = [j for j in range(len(truth)) if np.array_equal(got[i], truth[j])]
        diff = np.abs(got[i].astype(np.int16) - want[i].astype(np.int16)).max()
        parts.append(f"#{i}: max|diff| {diff}, equals truth frame(s) {same[:3] or 'none'}")
    more = f" (+{len(wrong) - 6} more)" if len(wrong) > 6 else ""
    return f"{len(wrong)}/{len(want)} frames differ: " + "; ".join(parts) + more


def assert_frames(got: object, indices: list[int], truth: np.ndarray, what: str) -> None:
    got = np.asarray(got)
    want = truth[indices]
    assert got.shape == want.shape, f"{what}: shape {got.shape}, want {want.shape}"
    if not np.array_equal(got, want):
        raise AssertionError(f"{what} (indices {indices[:12]}): {_describe(got, want, truth)}")


# ------------------------------------------------------------------------------------------


def test_manifest_is_current(video: Video) -> None:
    """The committed file is the one the manifest describes, and its truth still holds."""
    entry = video.entry
    data = video.path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["sha256"], (
        "file changed since make_manifest.py ran: rerun it")
    assert entry["counts_agree"] or entry.get("note"), "ffprobe and PyAV disagree, unexplained"
    assert entry["ffprobe_frames"] == entry["pyav_frames"] or entry.get("note")
    assert video.n == entry["pyav_frames"], "this PyAV decodes a different number of frames"
    assert (video.truth.shape[2], video.truth.shape[1]) == (entry["width"], entry["height"])
    assert video.rotation == entry["rotation"]


def test_probe_video(video: Video) -> None:
    info = claver.probe_video(video.path)
    assert info.num_frames == video.entry["pyav_frames"] == video.n
    assert (info.width, info.height) == (video.entry["width"], video.entry["height"])
    assert info.rotation == video.rotation


def test_read_all_frames(video: Video) -> None:
    frames = claver.read_video(video.path)
    assert_frames(frames, list(range(video.n)), video.truth, "read_video(all)")


def test_read_num_frames(video: Video) -> None:
    indices = segment_indices(video.n, 8, train=False).tolist()
    frames = claver.read_video(video.path, num_frames=8)
    assert_frames(frames, indices, video.truth, "read_video(num_frames=8)")


def _check_patterns(video: Video, reader: VideoReader, truth: np.ndarray, label: str) -> None:
    for what, indices in video.access_patterns():
        assert_frames(reader.get_frames(indices), indices, truth, f"{label}, {what}")


def test_reader_access_patterns(video: Video) -> None:
    with VideoReader(video.path) as reader:
        assert len(reader) == video.n
        _check_patterns(video, reader, video.truth, "get_frames")


def test_short_side(video: Video) -> None:
    frames = claver.read_video(video.path, short_side=SHORT_SIDE)
    assert_frames(frames, list(range(video.n)), video.truth_scaled,
                  f"read_video(short_side={SHORT_SIDE})")
    with VideoReader(video.path, short_side=SHORT_SIDE) as reader:
        _check_patterns(video, reader, video.truth_scaled, f"short_side={SHORT_SIDE}")


def test_without_nonref_skipping(video: Video, monkeypatch: pytest.MonkeyPatch) -> None:
    """The private switch that decodes every frame gives the same frames."""
    monkeypatch.setattr(pyav_backend, "_SKIP_NONREF", False)
    frames = claver.read_video(video.path)
    assert_frames(frames, list(range(video.n)), video.truth, "no skip: read_video(all)")
    with VideoReader(video.path) as reader:
        _check_patterns(video, reader, video.truth, "no skip: get_frames")


@pytest.mark.parametrize("backend", OPTIONAL_BACKENDS)
def test_optional_backend(video: Video, backend: str) -> None:
    """decord/torchcodec give the truth, or hand the file to pyav with a RuntimeWarning."""
    if backend not in available_backends():
        pytest.skip(f"{backend} is not installed")
    patterns = [("all", list(range(video.n))), *video.access_patterns()]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with VideoReader(video.path, backend=backend) as reader:
            assert reader.info.num_frames == video.n
            got = [(what, indices, reader.get_frames(indices)) for what, indices in patterns]
            used = reader.backend
    fallbacks = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    if used != backend:
        assert used == "pyav" and fallbacks, f"{backend} -> {used} without a RuntimeWarning"
    for what, indices, frames in got:
        assert_frames(frames, indices, video.truth, f"{backend} (decoded by {used}), {what}")
