"""Decoding: exact frames for given indices and seeks, every installed backend and codec.

The videos are made here (``videos.py``); each frame draws its own index, so every test
checks the exact frames returned, their orientation and RGB order.
"""

from __future__ import annotations

import io
import re
import time
from fractions import Fraction
from pathlib import Path

import av
import pytest
import torch

import claver
from claver.data import optional_backends, pyav_backend, stream_facts
from claver.data.decode import (
    BackendUnavailableError,
    VideoDecodeError,
    VideoInfo,
    VideoReader,
    available_backends,
    probe_video,
    read_video,
)
from videos import (
    MAX_INDEX,
    ByteWindow,
    decode_all,
    draw_index,
    frame_index,
    frame_indices,
    keyframe_indices,
    make_audio_only,
    make_empty,
    make_garbage,
    make_lying_header,
    make_raw_h264,
    make_truncated,
    make_video,
    vfr_pts_ms,
)

BACKENDS = available_backends()
# optional backends hand some files to pyav with a RuntimeWarning (tested at the end)
pytestmark = pytest.mark.filterwarnings("ignore:.*decoding it with pyav instead:RuntimeWarning")
N = 100  # frames in the main videos; keyframes every GOP frames
GOP = 10
MAIN = {  # name: (codec, file suffix, extra make_video arguments)
    "h264": ("h264", "mp4", {}),
    "mpeg4": ("mpeg4", "avi", {}),
    "vp9": ("vp9", "webm", {}),
    "mjpeg": ("mjpeg", "avi", {}),
    "mjpeg-mkv": ("mjpeg", "mkv", {}),
    "mpeg4-bframes": ("mpeg4", "avi", {"bframes": 2}),
}
CODECS = ["h264", "mpeg4", "vp9", "mjpeg"]
INDEX_CASES = {
    "sparse-sorted": [0, 7, 13, 29, 30, 64, 99],
    "unsorted-duplicates": [50, 3, 50, 99, 0, 3, 71, 70, 71],
    "far-seeks": [2, 95, 41, 88, 17],
    "single-last": [99],
}
HAS_X265 = "libx265" in av.codecs_available
needs_x265 = pytest.mark.skipif(not HAS_X265, reason="PyAV's FFmpeg has no libx265")


def encode_plain(path: Path, codec: str, num_frames: int, *, bframes: int | None = None,
                 gop: int | None = None, options: dict[str, str] | None = None,
                 size: tuple[int, int] = (64, 48)) -> Path:
    """Index-pattern frames with an encoder ``make_video`` does not cover (x265, MPEG-2)."""
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = *size, "yuv420p"
        stream.codec_context.thread_count = 1
        if bframes is not None:
            stream.codec_context.max_b_frames = bframes
        if gop is not None:
            stream.codec_context.gop_size = gop
        stream.options = options or {}
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(draw_index(i, *size), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


@pytest.fixture(scope="module")
def vids(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    out: dict[str, Path] = {}
    for name, (codec, ext, extra) in MAIN.items():
        out[name] = make_video(d / f"{name}.{ext}", num_frames=N, codec=codec, gop=GOP, **extra)
    for codec in CODECS:
        ext = MAIN[codec][1]
        out[f"odd-{codec}"] = make_video(d / f"odd-{codec}.{ext}", num_frames=12, codec=codec,
                                         size=(171, 97))
    out["vfr-h264"] = make_video(d / "vfr.mp4", num_frames=60, codec="h264", vfr=True, gop=8)
    out["vfr-vp9"] = make_video(d / "vfr.webm", num_frames=60, codec="vp9", vfr=True, gop=8)
    for rot in (90, 180, 270):
        out[f"rot{rot}"] = make_video(d / f"rot{rot}.mp4", num_frames=12, rotation=rot)
    out["short"] = make_video(d / "short.mp4", num_frames=5)
    out["lying"] = make_lying_header(d / "lying.avi", num_frames=30, claimed=500)
    out["raw"] = make_raw_h264(d / "raw.h264", num_frames=40, gop=GOP)
    # x264 defaults (keyframe every 250 frames: one here; 3 B-frames, B-pyramid)
    out["h264-long"] = make_video(d / "h264-long.mp4", num_frames=N)
    out["mpeg2-bframes"] = encode_plain(d / "mpeg2.mkv", "mpeg2video", N, bframes=2, gop=12)
    # the MPEG-4 AVI with its encoder string turned into DivX user data that announces
    # "packed B-frames" (FFmpeg then decodes in packed mode)
    data, found = re.subn(rb"Lavc\d+\.\d+\.\d+",
                          lambda m: b"DivX5b" + b"1" * (len(m[0]) - 7) + b"p",
                          out["mpeg4-bframes"].read_bytes())
    assert found, "the MPEG-4 encoder wrote no Lavc user data to turn into DivX's"
    out["mpeg4-packed"] = d / "mpeg4-packed.avi"
    out["mpeg4-packed"].write_bytes(data)
    if HAS_X265:  # x265 defaults: 4 B-frames, B-pyramid; then 2 temporal sub-layers
        quiet = "log-level=error"
        out["hevc"] = encode_plain(d / "hevc.mp4", "libx265", N, options={"x265-params": quiet})
        out["hevc-layers"] = encode_plain(d / "hevc-layers.mp4", "libx265", 30, options={
            "x265-params": f"{quiet}:temporal-layers=2"})
    out["empty"] = make_empty(d / "empty.mp4")
    out["garbage"] = make_garbage(d / "garbage.mp4")
    out["audio-m4a"] = make_audio_only(d / "audio.m4a")
    out["audio-wav"] = make_audio_only(d / "audio.wav", codec="pcm_s16le")
    for name in ("h264", "vp9", "mpeg4"):
        src = out[name]
        out[f"cut-{name}"] = make_truncated(src, d / f"cut-{name}{src.suffix}", fraction=0.6)
    out["missing"] = d / "no_such_video.mp4"
    return out


# -- the fixture itself ------------------------------------------------------------------
def test_pattern_round_trip_and_orientation_check():
    for i in (0, 1, 2, 77, 1000, MAX_INDEX):
        assert frame_index(draw_index(i, 64, 48)) == i
        assert frame_index(draw_index(i, 171, 97)) == i
    img = draw_index(5, 64, 48)
    for bad in (img[:, ::-1], img[::-1], img[..., ::-1], torch.from_numpy(img).rot90().numpy()):
        with pytest.raises(ValueError):
            frame_index(bad)


def test_fixture_videos_have_the_intended_structure(vids):
    assert keyframe_indices(vids["h264"]) == list(range(0, N, GOP))
    assert len(keyframe_indices(vids["vp9"])) >= 5
    assert keyframe_indices(vids["mjpeg"]) == list(range(N))
    with av.open(str(vids["mjpeg-mkv"])) as c:
        assert c.streams.video[0].frames == 0  # Matroska stores no frame count
    with av.open(str(vids["lying"])) as c:
        assert c.streams.video[0].frames == 500  # the header lies: 30 frames inside


# -- exact indices: every backend x codec ------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(MAIN))
def test_all_frames(vids, backend, name):
    with VideoReader(vids[name], backend) as r:
        assert r.info.num_frames == N
        frames = r.get_frames(range(N))
    assert frames.dtype == torch.uint8 and frames.shape == (N, 48, 64, 3)
    assert frame_indices(frames) == list(range(N))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(MAIN))
@pytest.mark.parametrize("case", list(INDEX_CASES))
def test_exact_indices(vids, backend, name, case):
    indices = INDEX_CASES[case]
    with VideoReader(vids[name], backend) as r:
        assert frame_indices(r.get_frames(indices)) == indices


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(MAIN))
def test_backward_and_forward_jumps_on_oneVideoReader(vids, backend, name):
    calls = [[90, 91], [10, 11], [95], [5], [60, 2], [60], [99, 98, 97]]
    with VideoReader(vids[name], backend) as r:
        for indices in calls:
            assert frame_indices(r.get_frames(indices)) == indices


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", CODECS)
def test_tsn_segment_centres(vids, backend, name):
    # n = 100, T = 8: segment 12.5 frames, centre int(12.5 * i + 6.25)
    frames = read_video(vids[name], num_frames=8, backend=backend)
    assert frame_indices(frames) == [6, 18, 31, 43, 56, 68, 81, 93]


@pytest.mark.parametrize("backend", BACKENDS)
def test_tsn_more_segments_than_frames_repeats_frames(vids, backend):
    # n = 5, T = 8: segment 0.625, centres int(0.625 * i + 0.3125)
    frames = read_video(vids["short"], num_frames=8, backend=backend)
    assert frame_indices(frames) == [0, 0, 1, 2, 2, 3, 4, 4]
    assert frame_indices(read_video(vids["short"], backend=backend)) == [0, 1, 2, 3, 4]


# -- seeking is keyframe-aware (instrumented pyav reader) --------------------------------
@pytest.mark.parametrize("name", CODECS)
def test_sequential_reads_never_seek(vids, name):
    with VideoReader(vids[name]) as r:
        for start in range(0, 40, 8):
            assert frame_indices(r.get_frames(range(start, start + 8))) == list(
                range(start, start + 8))
        assert r.stats == {"seeks": 0, "decoded": 40, "skipped": 0}


@pytest.mark.parametrize("name", CODECS)
def test_far_jump_seeks_and_skips_decoding(vids, name):
    with VideoReader(vids[name]) as r:
        assert frame_indices(r.get_frames([95])) == [95]
        assert r.stats["seeks"] >= 1
        # keyframe 90 -> about 6 frames (+ B-frame reorder delay), far fewer than 95
        assert r.stats["decoded"] <= 15
        seeks = r.stats["seeks"]
        assert frame_indices(r.get_frames([97])) == [97]  # same GOP: continue, no seek
        assert r.stats["seeks"] == seeks


@pytest.mark.parametrize("name", ["h264", "mpeg4", "vp9"])
def test_seek_only_when_a_keyframe_lies_between(vids, name):
    with VideoReader(vids[name]) as r:
        r.get_frames([2])
        r.get_frames([8])  # next keyframe is 10: decode forward
        assert r.stats["seeks"] == 0
        r.get_frames([57])  # keyframes 10..50 in between: seek to 50
        assert r.stats["seeks"] == 1
        decoded = r.stats["decoded"]
        r.get_frames([3])  # backwards: rewind
        assert r.stats["seeks"] == 2
        assert r.stats["decoded"] - decoded <= 10


def test_raw_stream_without_timestamps_decodes_forward_and_rewinds(vids):
    with VideoReader(vids["raw"]) as r:
        assert r.info.num_frames == 40 and r.info.frame_count_exact
        assert frame_indices(r.get_frames([35, 2, 20])) == [35, 2, 20]
        assert frame_indices(r.get_frames([1])) == [1]
        assert r.stats["seeks"] == 1  # one rewind for the backward jump


@pytest.mark.parametrize("name", ["h264", "mpeg4-bframes", "vp9", "mjpeg-mkv", "h264-long"])
def test_one_container_per_reader(vids, name, monkeypatch):
    # the packet scan's container is reused: going back seeks it instead of reopening
    opened = []
    real_open = pyav_backend._open_video
    monkeypatch.setattr(pyav_backend, "_open_video",
                        lambda src, limits: opened.append(src) or real_open(src, limits))
    with VideoReader(vids[name]) as r:
        for indices in ([50, 3], [2], [99, 0], [1]):
            assert frame_indices(r.get_frames(indices)) == indices
        assert r.stats["seeks"] >= 3
    assert len(opened) == 1


# -- skipping frames nobody asked for (skip_frame NONREF) --------------------------------
SKIPPING = ["h264-long", "h264", "mpeg4-bframes", "mpeg2-bframes",
            pytest.param("hevc", marks=needs_x265)]
TSN8 = [6, 18, 31, 43, 56, 68, 81, 93]  # test-mode TSN centres of 8 segments of 100 frames


def read_calls(path: Path, calls: list[list[int]], skip: bool,
               monkeypatch: pytest.MonkeyPatch) -> tuple[list[torch.Tensor], dict[str, int]]:
    """Frames of each ``get_frames`` call on one reader, with or without skipping."""
    monkeypatch.setattr(pyav_backend, "_SKIP_NONREF", skip)
    with VideoReader(path) as r:
        assert r._impl._skip is skip
        frames = [r.get_frames(indices) for indices in calls]
        assert r._impl._skip is skip  # never had to fall back
        return frames, dict(r.stats)


@pytest.mark.parametrize("name", SKIPPING)
def test_skipping_returns_exactly_the_frames_of_a_full_decode(vids, name, monkeypatch):
    calls = [TSN8, *INDEX_CASES.values(), [90, 91], [10, 11], [95], [5], [60, 2], [60],
             [99, 98, 97], list(range(40, 48)), list(range(48, 56))]
    fast, fast_stats = read_calls(vids[name], calls, True, monkeypatch)
    full, full_stats = read_calls(vids[name], calls, False, monkeypatch)
    for indices, a, b in zip(calls, fast, full, strict=True):
        assert frame_indices(a) == indices
        assert torch.equal(a, b)  # bit-identical pixels
    assert fast_stats["skipped"] > 0 and full_stats["skipped"] == 0
    assert fast_stats["decoded"] < full_stats["decoded"]
    assert fast_stats["seeks"] == full_stats["seeks"]  # skipping never adds a seek


@pytest.mark.parametrize("name", SKIPPING)
def test_skipping_decodes_fewer_frames_for_sparse_indices(vids, name, monkeypatch):
    _, fast = read_calls(vids[name], [TSN8], True, monkeypatch)
    _, full = read_calls(vids[name], [TSN8], False, monkeypatch)
    assert full["skipped"] == 0 and fast["skipped"] > 0
    # every frame up to the last wanted one is either decoded or skipped
    assert fast["decoded"] + fast["skipped"] >= full["decoded"] - 3  # (B-frame delay)
    assert fast["decoded"] <= 0.75 * full["decoded"]
    if name == "h264-long":  # one keyframe: without skipping all 94 frames are decoded
        assert keyframe_indices(vids[name]) == [0] and full["decoded"] >= 94
        assert fast["decoded"] < 70 and fast["seeks"] == full["seeks"] == 0


@pytest.mark.parametrize("name,skips", [
    ("h264", True), ("mpeg4-bframes", True), ("mpeg4", True), ("mpeg2-bframes", True),
    pytest.param("hevc", True, marks=needs_x265),
    pytest.param("hevc-layers", False, marks=needs_x265),  # sub-layers may reference "non-ref"
    ("vp9", False), ("mjpeg", False), ("mjpeg-mkv", False),  # vp9: MVs from the last frame
    ("mpeg4-packed", False),  # the decoder carries data from packet to packet
    ("raw", False),  # no timestamps: a skipped frame would shift the frame count
])
def test_skipping_only_where_it_cannot_change_frames(vids, name, skips):
    with VideoReader(vids[name]) as r:
        assert r._impl._skip is skips
        indices = [r.info.num_frames - 1, 2, 5, 0]
        assert frame_indices(r.get_frames(indices)) == indices


def test_hevc_sub_layers_are_read_from_the_sps():
    sps = bytes([0x42, 0x01, 0b0000_0011, 0x60])  # NAL type 33, max_sub_layers_minus1 = 1
    vps = bytes([0x40, 0x01, 0x0C, 0x01])
    annex_b = b"\x00\x00\x00\x01" + vps + b"\x00\x00\x01" + sps
    assert stream_facts.hevc_sub_layers(annex_b) == 2
    # hvcC: version 1, 21 more header bytes, 1 array of type 33 holding 1 NAL unit
    hvcc = bytes([1]) + bytes(21) + bytes([1, 0xA1, 0, 1, 0, len(sps)]) + sps
    assert stream_facts.hevc_sub_layers(hvcc) == 2
    single = bytes([0x42, 0x01, 0x01])
    assert stream_facts.hevc_sub_layers(b"\x00\x00\x01" + single) == 1
    assert stream_facts.hevc_sub_layers(b"") is None
    assert stream_facts.hevc_sub_layers(b"\x00\x00\x01" + vps) is None  # no SPS: not known


def test_a_frame_skipping_cannot_place_is_decoded_again_without_skipping(vids):
    # white-box: forget the timestamp of frame 40, so it comes out unplaceable while frames
    # are being dropped; the reader turns skipping off and decodes again, still exact
    with VideoReader(vids["h264-long"]) as r:
        impl = r._impl
        real_position = impl._position
        forgotten = int(impl._pts[40])
        impl._position = lambda pts: None if pts == forgotten else real_position(pts)
        assert frame_indices(r.get_frames([30, 45, 60])) == [30, 45, 60]
        assert not impl._skip
        assert frame_indices(r.get_frames([41, 39])) == [41, 39]


# -- metadata and awkward files ----------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", CODECS)
def test_probe(vids, backend, name):
    info = probe_video(vids[name], backend=backend)
    assert isinstance(info, VideoInfo)
    assert (info.num_frames, info.width, info.height, info.rotation) == (N, 64, 48, 0)
    assert info.fps == pytest.approx(25.0, rel=1e-3)
    assert info.duration == pytest.approx(N / 25.0, rel=1e-3)
    assert info.codec == MAIN[name][0] and info.frame_count_exact


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["vfr-h264", "vfr-vp9"])
def test_variable_frame_rate(vids, backend, name):
    with VideoReader(vids[name], backend) as r:
        assert r.info.num_frames == 60
        assert r.info.duration == pytest.approx(vfr_pts_ms(60)[-1] / 1000, abs=0.1)
        assert frame_indices(r.get_frames(range(60))) == list(range(60))
        assert frame_indices(r.get_frames([59, 1, 33, 34, 2])) == [59, 1, 33, 34, 2]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("codec", CODECS)
def test_odd_size(vids, backend, codec):
    with VideoReader(vids[f"odd-{codec}"], backend) as r:
        assert (r.info.width, r.info.height) == (171, 97)
        frames = r.get_frames([11, 0, 5])
    assert frames.shape == (3, 97, 171, 3)
    assert frame_indices(frames) == [11, 0, 5]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_is_applied(vids, backend, rotation):
    with VideoReader(vids[f"rot{rotation}"], backend) as r:
        info = r.info
        frames = r.get_frames([0, 7, 3])
    size = (64, 48) if rotation in (90, 270) else (48, 64)  # stored 64 x 48 (W x H)
    assert info.rotation == rotation and (info.height, info.width) == size
    assert frames.shape == (3, *size, 3)
    assert frame_indices(frames) == [0, 7, 3]  # raises if a frame is not upright


@pytest.mark.parametrize("backend", BACKENDS)
def test_header_that_lies_about_the_frame_count(vids, backend):
    with VideoReader(vids["lying"], backend) as r:
        assert r.info.num_frames == 30 and r.info.frame_count_exact
        assert frame_indices(r.get_frames([29, 0])) == [29, 0]
        with pytest.raises(VideoDecodeError, match="out of range"):
            r.get_frames([30])


@pytest.mark.parametrize("backend", BACKENDS)
def test_missing_frame_count(vids, backend):
    assert probe_video(vids["raw"], backend=backend).num_frames == 40
    assert probe_video(vids["mjpeg-mkv"], backend=backend).num_frames == N
    assert frame_indices(read_video(vids["raw"], indices=[39, 0], backend=backend)) == [39, 0]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,short,shape", [
    ("h264", 24, (24, 32)), ("odd-h264", 24, (24, 42)), ("odd-vp9", 50, (50, 88)),
    ("rot90", 24, (32, 24)), ("mjpeg", 96, (96, 128)),
])
def test_short_side(vids, backend, name, short, shape):
    frames = read_video(vids[name], indices=[3, 1], backend=backend, short_side=short)
    assert frames.shape == (2, *shape, 3)
    assert frame_indices(frames) == [3, 1]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", CODECS)
def test_bytes_and_file_objects_match_the_path(vids, backend, name, tmp_path):
    path = vids[name]
    indices = [40, 3, 99, 3]
    expected = read_video(path, indices=indices, backend=backend)
    data = path.read_bytes()
    assert torch.equal(read_video(data, indices=indices, backend=backend), expected)
    with open(path, "rb") as f:
        assert torch.equal(read_video(f, indices=indices, backend=backend), expected)
    # a window into a bigger file, the way a tar member is read in place
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"x" * 777 + data + b"y" * 333)
    with open(blob, "rb") as f:
        window = ByteWindow(f, 777, len(data), name="archive.tar:" + path.name)
        assert torch.equal(read_video(window, indices=indices, backend=backend), expected)


# -- bad inputs --------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,reason", [
    ("missing", "file not found"), ("empty", "empty"), ("garbage", "cannot open"),
    ("audio-m4a", "audio-only"), ("audio-wav", "audio-only"),
])
def test_bad_files_raise_a_clear_error(vids, backend, name, reason):
    with pytest.raises(VideoDecodeError) as err:
        read_video(vids[name], num_frames=4, backend=backend)
    message = str(err.value)
    assert str(vids[name]) in message and reason in message and "Fix:" in message
    assert err.value.source == str(vids[name])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["cut-h264", "cut-vp9", "cut-mpeg4"])
def test_truncated_files_return_real_frames_or_raise(vids, backend, name):
    start = time.monotonic()
    try:
        with VideoReader(vids[name], backend) as r:
            n = r.info.num_frames
            assert n <= N
            frames = r.get_frames(range(n))
    except VideoDecodeError as exc:
        assert str(vids[name]) in str(exc)
    else:
        assert frame_indices(frames) == decode_all(vids[name])  # what FFmpeg puts out
    assert time.monotonic() - start < 10


def test_a_truncated_file_counts_what_a_full_decode_puts_out(vids):
    # 31 packets, the last one cut short: FFmpeg's MPEG-4 decoder still puts out a frame for
    # it (concealed from frame 29), so the video has 31 frames
    with VideoReader(vids["cut-mpeg4"]) as r:
        truth = decode_all(vids["cut-mpeg4"])
        assert r.info.num_frames == len(truth) == 31 and not r.info.frame_count_exact
        assert r.placement == "count"
        assert frame_indices(r.get_frames([30, 29, 0])) == [truth[30], 29, 0]


def test_wrong_keyframe_flags_still_give_the_right_frames(vids):
    # white-box: flag two non-keyframes as keyframes; seeks land on the real keyframe
    # before them, and frames are identified by timestamp, so the output stays exact
    with VideoReader(vids["h264"]) as r:
        r._impl._keyframes = sorted({*r._impl._keyframes, 55, 77})
        assert frame_indices(r.get_frames([58, 79, 56])) == [58, 79, 56]
        assert r.stats["seeks"] >= 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_index_out_of_range(vids, backend):
    path = vids["h264"]
    for bad in ([N], [0, 150], [-1]):
        with pytest.raises(VideoDecodeError, match=rf"out of range.*{N} frames") as err:
            read_video(path, indices=bad, backend=backend)
        assert str(path) in str(err.value)


def test_error_names_bytes_and_file_objects(vids):
    with pytest.raises(VideoDecodeError, match=r"<bytes, 0 bytes>.*empty"):
        read_video(b"")
    data = vids["garbage"].read_bytes()
    with pytest.raises(VideoDecodeError, match=rf"<bytes, {len(data)} bytes>: cannot open"):
        read_video(data)
    with open(vids["audio-wav"], "rb") as f, pytest.raises(VideoDecodeError, match="audio"):
        read_video(f)
    with pytest.raises(VideoDecodeError, match="<file object>.*empty"):
        read_video(io.BytesIO())


# -- API details ---------------------------------------------------------------------------
def test_read_video_arguments(vids):
    with pytest.raises(ValueError, match="not both"):
        read_video(vids["h264"], num_frames=4, indices=[1])
    with pytest.raises(ValueError, match="backend"):
        read_video(vids["h264"], backend="opencv")
    with pytest.raises(ValueError, match="short_side"):
        VideoReader(vids["h264"], short_side=0)
    with pytest.raises(TypeError):
        read_video(vids["h264"], indices=[1.5])
    assert frame_indices(read_video(vids["h264"], indices=torch.tensor([4, 2]))) == [4, 2]
    empty = read_video(vids["odd-h264"], indices=[], short_side=24)
    assert empty.shape == (0, 24, 42, 3)


def test_public_names_are_lazy_exports():
    assert claver.read_video is read_video
    assert claver.probe_video is probe_video
    assert issubclass(VideoDecodeError, ValueError)
    assert issubclass(BackendUnavailableError, ImportError)
    assert available_backends()[0] == "pyav"


def test_missing_backend_names_the_install_command(vids, monkeypatch):
    monkeypatch.setitem(optional_backends._MODULES, "torchcodec", "claver_no_such_module_xyz")
    monkeypatch.setitem(optional_backends._MODULES, "decord", "claver_no_such_module_xyz")
    optional_backends._backend_module.cache_clear()
    try:
        for name, command in [("torchcodec", 'pip install "claver[torchcodec]"'),
                              ("decord", 'pip install "claver[decord]"')]:
            with pytest.raises(BackendUnavailableError) as err:
                VideoReader(vids["h264"], name)
            assert command in str(err.value)
        with pytest.raises(ImportError, match="apt install ffmpeg"):
            read_video(vids["h264"], backend="torchcodec")
        assert available_backends() == ["pyav"]
    finally:
        monkeypatch.undo()
        optional_backends._backend_module.cache_clear()


FALLBACKS = [  # (backend, video, reason): files an optional backend gets wrong
    ("decord", "rot90", "rotated"), ("decord", "mpeg4-bframes", "open GOP"),
    ("decord", "raw", "packets without timestamps"),
    ("decord", "cut-mpeg4", "a truncated stream"),
    ("torchcodec", "mpeg4-bframes", "AVI files with B-frames"),
    ("torchcodec", "raw", "packets without timestamps"),
    ("torchcodec", "cut-mpeg4", "a truncated stream"),
]


@pytest.mark.parametrize("backend,name,reason", [
    pytest.param(*case, marks=pytest.mark.skipif(case[0] not in BACKENDS,
                                                 reason=f"{case[0]} not installed"))
    for case in FALLBACKS
])
def test_optional_backends_hand_files_they_get_wrong_to_pyav(vids, backend, name, reason):
    with pytest.warns(RuntimeWarning, match=reason):
        r = VideoReader(vids[name], backend)
    assert r.backend == "pyav" and r.requested_backend == backend
    assert reason in (r.fallback_reason or "")
    n = r.info.num_frames
    last = decode_all(vids[name])[-1] if name.startswith("cut") else n - 1  # (see above)
    assert frame_indices(r.get_frames([n - 1, 0])) == [last, 0]


def test_decoding_scales_to_the_size_the_transforms_resize_to():
    # the reader's short-side size and the transforms' must agree, or decoding at reduced
    # size would leave a 1-pixel resize to the transform (rounding is half up in both)
    from claver.data.transforms import short_side_size

    for w in range(1, 300, 7):
        for h in range(1, 300, 11):
            for s in (32, 224, 256):
                assert pyav_backend._scaled_size(w, h, s) == short_side_size(h, w, s)[::-1]
