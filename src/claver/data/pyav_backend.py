"""The default ``"pyav"`` video backend (``_PyAVBackend``) and its helpers: opening a file
safely, deciding how decoded frames are placed, telling whether FFmpeg's
``skip_frame = "NONREF"`` is safe for a codec, rotation and short-side scaling.
:mod:`claver.data.decode` describes how it decodes.

Frame ``i`` is the ``i``-th frame a full sequential FFmpeg decode puts out. Frames are placed
in one of two ways (``placement``):

- ``"timestamps"``: by the rank of their timestamp among the stream's packet timestamps.
  Only where the packet scan finds the timestamps consistent with decoding order (present,
  unique; not merely increasing in decoding order for a codec that reorders frames, which is
  what AVI's decode-order counters look like; no frame shown before it is decoded; every
  keyframe a barrier no earlier packet's timestamp crosses), and checked again on every frame
  that comes out: a decoder putting out timestamps out of order switches the file to
  counting. This placement allows keyframe seeks and skipping unreferenced frames.
- ``"count"``: by counting the decoder's output from the first packet. Exact by definition;
  reads go forward (going back restarts) and nothing is skipped.
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
import time
from array import array
from collections.abc import Iterator
from typing import Any

import av
import numpy as np
import torch
import torch.nn.functional as F

from claver.data.video_source import DecodeLimits, VideoInfo, _Source

_SEEK_MIN_SKIP = 2  # seek forward only if that skips decoding at least this many frames
# Decoders whose skip_frame "NONREF" drops only frames that no other frame references (H.264
# pictures with nal_ref_idc 0; MPEG-1/2 and MPEG-4 part 2 B-frames), so the frames still
# decoded are bit-identical to a full decode. HEVC qualifies with one temporal sub-layer
# (``_skips_safely``), MPEG-4 part 2 without DivX "packed B-frames". Not VP8/VP9 (VP9 predicts
# motion vectors from the previously decoded frame, referenced or not) nor AV1 (libdav1d reads
# skip_frame only when it opens); intra-only codecs have nothing to skip.
_NONREF_CODECS = frozenset({"h264", "mpeg4", "mpeg1video", "mpeg2video"})
# Codecs whose decoder puts out one frame per packet in packet order (no B-frame reordering):
# increasing packet timestamps are their display order. Any other codec with increasing
# timestamps and a reordering decoder is decoded by counting.
_NEVER_REORDER = frozenset({
    "vp8", "vp9", "av1", "libdav1d", "mjpeg", "mjpegb", "png", "apng", "gif", "rawvideo",
    "ffv1", "huffyuv", "ffvhuff", "utvideo", "prores", "dnxhd", "qtrle", "theora", "jpeg2000",
    "cinepak", "msvideo1", "h261", "flv1", "zlib", "zmbv", "v210", "r210", "dvvideo", "hap",
    "magicyuv", "cfhd", "vp6", "vp6f", "vp6a", "vp3", "msmpeg4v1", "msmpeg4v2", "msmpeg4v3",
    "wmv1", "wmv2", "svq1", "rpza", "smc", "tscc", "mszh", "indeo3", "indeo5",
})
# DivX/XviD user data marking packed B-frames (FFmpeg: "DivX%dBuild%d%c" / "DivX%db%d%c" with
# a trailing 'p'): the decoder holds back part of each packet for the next one, so a packet
# decoded with skipping could lose the frame that rides with it
_PACKED_BFRAMES = re.compile(rb"DivX\d+(?:Build|b)\d+p")
_SKIP_NONREF = True  # private switch: False decodes every frame (tests compare both ways)
# FFmpeg may open only these demuxers (its ``format_whitelist``): media containers and raw
# video streams. Playlists (HLS, DASH), concat lists, image sequences, devices and anything
# else that reads other files or the network is refused, whatever the file name says.
MEDIA_DEMUXERS = (
    "mov", "mp4", "avi", "matroska", "webm", "mpeg", "mpegts", "mpegvideo", "flv", "asf",
    "ogg", "h264", "hevc", "vvc", "m4v", "ivf", "obu", "av1", "nut", "yuv4mpegpipe", "dv",
    "mxf", "rm", "gif", "mjpeg", "wtv", "vc1", "h261", "h263", "cavsvideo", "avs2", "flic",
    "bink", "smjpeg", "nsv", "vivo",
    # audio containers: read nothing else; opened only to say "audio-only file"
    "wav", "w64", "mp3", "flac", "aac", "aiff", "caf", "amr",
)
# what refused non-media files start with, to name them in the error
_PLAYLIST_SIGNATURES = ((b"ffconcat", "an FFmpeg concat list"),
                        (b"#EXTM3U", "an HLS/M3U playlist"), (b"[playlist]", "a PLS playlist"),
                        (b"<?xml", "an XML document (a DASH manifest?)"),
                        (b"<MPD", "a DASH manifest"), (b"#!", "a script"))
_NOPTS = -(2**63)
_KEY, _CORRUPT = 1, 2  # packet flag bits


class _Inconsistent(Exception):
    """Frames came out in an order their timestamps do not explain: place them by counting."""


def _sniff(source: _Source) -> str:
    """What a file that is not a media container looks like, for the error message."""
    try:
        if source.path is not None:
            with open(source.path, "rb") as f:
                head = f.read(64)
        else:
            fileobj = source.for_library()
            head = fileobj.read(64)
            fileobj.seek(0)
    except OSError:
        return ""
    head = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    return next((what for magic, what in _PLAYLIST_SIGNATURES if head.startswith(magic)), "")


def _open_video(source: _Source, limits: DecodeLimits) -> tuple[Any, Any]:
    """Open with PyAV (media demuxers only, reads time-limited) and pick the first video
    stream (one decoder thread, FFmpeg's own frame-size limit set)."""
    options = {"format_whitelist": ",".join(MEDIA_DEMUXERS)}
    target = source.for_library()
    if isinstance(target, str):  # a path: the file protocol only, never "concat:" & co
        options["protocol_whitelist"] = "file"
        target = "file:" + str(source.path.resolve()) if source.path is not None else target
    try:
        container = av.open(target, mode="r", metadata_errors="ignore", options=options,
                            timeout=limits.timeout)
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        kind = _sniff(source)
        if kind or getattr(exc, "errno", None) == 22:  # EINVAL: a demuxer not on the list
            what = kind or "a file FFmpeg reads with a demuxer that is not a media container"
            raise source.error(
                f"refused: this is {what}, not a video container (playlists, concat lists, "
                "image sequences and devices can read other files or the network)",
                "pass the video file itself; convert other inputs with ffmpeg first") from exc
        raise source.error(f"cannot open: not a video container FFmpeg understands, or a "
                           f"corrupt/truncated file ({exc})") from exc
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams})
        container.close()
        if "audio" in kinds:
            raise source.error("audio-only file: no video stream",
                               "this is not a video; drop it from the list")
        raise source.error(f"no video stream (streams: {', '.join(kinds) or 'none'})",
                           "check that this is a video file")
    stream = container.streams.video[0]
    ctx = stream.codec_context
    if ctx.width * ctx.height > limits.max_pixels:
        container.close()
        raise _too_large(source, ctx.width, ctx.height, limits)
    ctx.thread_count = 1
    ctx.thread_type = "NONE"
    ctx.options = {"max_pixels": str(limits.max_pixels)}  # FFmpeg refuses larger pictures
    return container, stream


def _too_large(source: _Source, width: int, height: int, limits: DecodeLimits) -> Exception:
    return source.error(
        f"frames of {width}x{height} = {width * height:,} pixels exceed the limit of "
        f"{limits.max_pixels:,} pixels",
        "downscale it (ffmpeg -i IN -vf scale=-2:720 OUT.mp4) or raise the limit "
        "(DecodeLimits(max_pixels=...), config DATA.MAX_PIXELS)")


def _first_frame(stream: Any, packet: Any) -> Any | None:
    """Decode one packet (plus a drain) to read size and display matrix; None on failure."""
    try:
        stream.codec_context.flush_buffers()
        frames = stream.decode(packet) or stream.decode(None)
    except av.FFmpegError:
        return None
    return frames[0] if frames else None


def _timestamps_consistent(pts: np.ndarray, dts: np.ndarray, keys: np.ndarray,
                           reorders: bool) -> str:
    """Why packet timestamps cannot place frames ("" when the scan finds them consistent).

    ``pts``/``dts``/``keys``: per packet in decoding order (``_NOPTS`` where unknown);
    ``reorders``: the decoder may put frames out in another order than it gets them."""
    if (pts == _NOPTS).any():
        return "packets without timestamps"
    if len(np.unique(pts)) != len(pts):
        return "repeated timestamps"
    if len(pts) < 2:
        return ""
    increasing = bool((np.diff(pts) > 0).all())
    if increasing:  # display order only if the decoder keeps packet order
        return "timestamps in decoding order with a reordering decoder" if reorders else ""
    known = dts != _NOPTS
    if (pts[known] < dts[known]).any():
        return "frames shown before they are decoded"
    # every keyframe is a barrier: no packet before it is shown after a packet from it on
    running_max = np.maximum.accumulate(pts)[:-1]
    suffix_min = np.minimum.accumulate(pts[::-1])[::-1][1:]
    at_key = keys[1:].astype(bool)
    if (running_max[at_key] > suffix_min[at_key]).any():
        return "timestamps that cross a keyframe"
    return ""


def _hevc_sub_layers(extradata: bytes | None) -> int | None:
    """Largest ``sps_max_sub_layers`` of the SPS NAL units in HEVC extradata (hvcC or Annex B
    start codes); None when there is no SPS to read."""
    if not extradata:
        return None
    nals: list[bytes] = []
    if extradata[0] == 1 and len(extradata) > 22:  # hvcC: 22-byte header, then NAL arrays
        pos = 23
        for _ in range(extradata[22]):
            count = int.from_bytes(extradata[pos + 1 : pos + 3], "big")
            pos += 3
            for _ in range(count):
                if pos >= len(extradata):
                    break
                size = int.from_bytes(extradata[pos : pos + 2], "big")
                nals.append(extradata[pos + 2 : pos + 2 + size])
                pos += 2 + size
    else:
        nals = extradata.split(b"\x00\x00\x01")[1:]
    # SPS (type 33): 2-byte NAL header, then 4 bits VPS id, 3 bits max_sub_layers_minus1
    layers = [(nal[2] >> 1 & 7) + 1 for nal in nals if len(nal) > 2 and nal[0] >> 1 & 63 == 33]
    return max(layers) if layers else None


def _skips_safely(ctx: Any, head: bytes = b"") -> bool:
    """Whether ``skip_frame = "NONREF"`` on this decoder drops only unreferenced frames and
    nothing else (``head``: the start of the first packet, where MPEG-4 user data may be).

    HEVC "sub-layer non-reference" pictures may still be referenced by pictures of a higher
    temporal sub-layer, so HEVC only with a single sub-layer (x265's default)."""
    if ctx.name == "mpeg4":
        return not _PACKED_BFRAMES.search((ctx.extradata or b"") + head)
    if ctx.name in _NONREF_CODECS:
        return True
    return ctx.name == "hevc" and _hevc_sub_layers(ctx.extradata) == 1


def _clockwise(ccw: float | None) -> int:
    """FFmpeg's counter-clockwise display rotation -> clockwise degrees in {0, 90, 180, 270}."""
    if ccw is None or not math.isfinite(ccw):
        return 0
    return int(round(-ccw / 90.0)) % 4 * 90


def _scaled_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(W, H) with the shorter side equal to ``short_side`` and the aspect ratio kept."""
    if short_side is None:
        return width, height
    if width <= height:
        return short_side, max(1, round(height * short_side / width))
    return max(1, round(width * short_side / height)), short_side


def _resize_short_side(frames: torch.Tensor, short_side: int | None) -> torch.Tensor:
    """Antialiased bilinear resize of uint8 (T, H, W, 3) so min(H, W) == short_side."""
    if short_side is None or frames.shape[0] == 0:
        return frames
    t, h, w, _ = frames.shape
    new_w, new_h = _scaled_size(w, h, short_side)
    if (new_w, new_h) == (w, h):
        return frames
    x = frames.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False,
                      antialias=True)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


class _PyAVBackend:
    """PyAV decoding with a packet index: exact count, frames placed by timestamp where the
    scan proves that right (then keyframe-aware seeking and frames nobody asked for left
    undecoded where the codec allows it, ``_skips_safely``) and by counting otherwise."""

    name = "pyav"

    def __init__(self, source: _Source, short_side: int | None, keep_open: bool = True,
                 limits: DecodeLimits | None = None) -> None:
        self.source = source
        self.limits = limits or DecodeLimits()
        self.stats = {"seeks": 0, "decoded": 0, "skipped": 0}
        self._container: Any = None
        self._stream: Any = None
        self._frames: Iterator[tuple[int | None, Any]] = iter(())
        self._active = False  # self._frames continues from a known decoder position
        self._next = 0  # position of the next frame out of self._frames
        self._last_out = -1  # position of the last frame out since the decoder started
        self._last: tuple[int, torch.Tensor] | None = None
        self._error: Exception | None = None
        self._skip = False  # send packets of unwanted frames with skip_frame NONREF
        self._wanted: set[int] = set()  # positions the current get_frames call asks for
        self._wanted_end = 0  # 1 + the last of them: later frames are not skipped
        # packets sent since the last seek whose frame has not come out yet: position ->
        # sent with NONREF (then the decoder may have dropped it: getting it needs a seek)
        self._in_flight: dict[int, bool] = {}
        self._deadline = self._start_clock()
        container, stream = _open_video(source, self.limits)
        try:
            self._scan(container, stream, short_side)
        except BaseException:
            container.close()
            raise
        if keep_open and self._error is None:
            self._container, self._stream = container, stream  # decoding seeks back to 0
        else:  # a probe for another backend, or a file that may not seek back exactly
            container.close()

    # -- limits -------------------------------------------------------------------------
    def _start_clock(self) -> float:
        timeout = self.limits.timeout
        return math.inf if timeout is None else time.monotonic() + timeout

    def _check_clock(self) -> None:
        if time.monotonic() > self._deadline:
            self._active = False  # whatever was running is abandoned: start afresh next time
            raise self.source.error(
                f"decoding took longer than the limit of {self.limits.timeout:g} s",
                "check the file (claver data check --full), re-encode it, or raise the limit "
                "(DecodeLimits(timeout=...), config DATA.DECODE_TIMEOUT)")

    # -- the packet scan -----------------------------------------------------------------
    def _scan(self, container: Any, stream: Any, short_side: int | None) -> None:
        """One demux-only pass: exact count, placement, keyframes; decode frame 0."""
        pts, dts, flags = array("q"), array("q"), bytearray()  # ~17 bytes per packet
        durations = array("q")
        self._start_key: tuple[Any, ...] | None = None  # identifies the first packet
        head = b""  # MPEG-4 part 2: the start of the first packet (user data)
        first, tries = None, 3  # decode the first keyframe(s) until one frame comes out
        max_packets = self.limits.max_packets
        try:
            for packet in container.demux(stream):
                self._check_clock()
                if not packet.size:
                    continue  # end-of-stream marker or an empty AVI "skip" chunk
                if self._start_key is None:
                    self._start_key = (packet.pts, packet.pos, packet.size)
                    if stream.codec_context.name == "mpeg4":
                        head = bytes(packet)[:4096]
                if packet.is_discard:
                    continue  # edit-list pre-roll: decoded, never put out
                if len(flags) >= max_packets:
                    raise self.source.error(
                        f"more than {max_packets:,} video packets",
                        "split the video, or raise the limit (DecodeLimits(max_packets=...))")
                pts.append(_NOPTS if packet.pts is None else packet.pts)
                dts.append(_NOPTS if packet.dts is None else packet.dts)
                durations.append(packet.duration or 0)
                flags.append(_KEY * packet.is_keyframe | _CORRUPT * packet.is_corrupt)
                if first is None and tries and (packet.is_keyframe or len(flags) == 1):
                    first, tries = _first_frame(stream, packet), tries - 1
        except (av.FFmpegError, OSError) as exc:  # truncated or corrupt container
            self._error = exc
            self._check_clock()  # (or FFmpeg's reads interrupted by the time limit)
        ctx = stream.codec_context
        codec, width, height = ctx.name, ctx.width, ctx.height
        self.format_name = container.format.name
        time_base, rate = stream.time_base, stream.average_rate or stream.guessed_rate
        exact = self._error is None
        n = len(flags)
        while n and flags[n - 1] & _CORRUPT:  # a packet cut short by truncation: not a frame
            n -= 1
            exact = False
        if n == 0 or (first is None and self._error is not None):
            detail = f" ({self._error})" if self._error else ""
            raise self.source.error(f"corrupt or truncated stream: no decodable video frames"
                                    f"{detail}")
        if first is not None:
            width, height = first.width, first.height
            if width * height > self.limits.max_pixels:
                raise _too_large(self.source, width, height, self.limits)
        self._rotation = _clockwise(first.rotation) if first is not None else 0
        self._rot_k = -self._rotation // 90  # torch.rot90 turns counter-clockwise for k > 0
        self._size = _scaled_size(width, height, short_side)
        p = np.frombuffer(pts, dtype=np.int64)[:n]
        d = np.frombuffer(dts, dtype=np.int64)[:n]
        keys = np.frombuffer(bytes(flags[:n]), dtype=np.uint8) & _KEY
        reorders = codec not in _NEVER_REORDER and bool(ctx.has_b_frames)
        self.placement_reason = _timestamps_consistent(p, d, keys, reorders)
        self.placement = "count" if self.placement_reason else "timestamps"
        self.reordered = bool((p == _NOPTS).any() or (np.diff(p) < 0).any())
        self._pts = np.sort(p)  # a frame's position is its timestamp's rank
        order = np.argsort(p, kind="stable")
        self._keyframes = np.flatnonzero(keys[order]).tolist()  # positions of keyframes
        if self._pts[0] != _NOPTS and len(np.unique(self._pts)) == n:
            steps = np.sort(np.diff(self._pts)) if n > 1 else np.zeros(1, np.int64)
            last = durations[int(order[-1])] or int(steps[len(steps) // 2])
            duration = float(int(self._pts[-1] - self._pts[0] + last) * time_base)
        else:  # no usable timestamps (raw bitstreams)
            duration = n / float(rate) if rate else 0.0
        # skipping drops frames, which only timestamps can place
        self._skip = (_SKIP_NONREF and self.placement == "timestamps"
                      and _skips_safely(ctx, head))
        fps = n / duration if duration > 0 else float(rate or 0.0)
        if self._rotation in (90, 270):
            width, height = height, width
        self.info = VideoInfo(num_frames=n, fps=fps, duration=duration, width=width,
                              height=height, codec=codec, rotation=self._rotation,
                              frame_count_exact=exact)

    def _position(self, pts: int | None) -> int | None:
        """The presentation position of a timestamp (None if no packet had it)."""
        if pts is None or self.placement != "timestamps":
            return None
        i = int(np.searchsorted(self._pts, pts))
        return i if i < len(self._pts) and self._pts[i] == pts else None

    # -- decoding -----------------------------------------------------------------------
    def _start(self, packets: Iterator[Any], first: Any = None) -> None:
        """Decode ``packets`` (and ``first`` before them) with a freshly flushed decoder."""
        self._stream.codec_context.skip_frame = "DEFAULT"
        self._in_flight.clear()
        self._sent_nonref: set[int] = set()  # positions sent with NONREF since the start
        self._last_out = -1
        self._frames = self._decoded_frames(packets, first)
        self._active = True

    def _decoded_frames(self, packets: Iterator[Any],
                        first: Any) -> Iterator[tuple[int | None, Any]]:
        """(position or None, frame) for each frame the decoder puts out, to the end.

        While skipping, the packet of a frame that is not wanted and lies before the last
        wanted one is sent with ``skip_frame = "NONREF"``: FFmpeg drops it if no other frame
        references it (no output at all) and decodes it fully otherwise, so reference frames,
        and with them every frame that comes out, are exactly as without skipping. Frames
        after the last wanted one (sent only to get it out of the reorder delay) are decoded,
        so that the next call can go on reading forward. One decoder thread, so the setting
        applies to the packet sent right after it."""
        ctx = self._stream.codec_context
        if first is not None:
            packets = itertools.chain([first], packets)
        try:
            for packet in packets:
                self._check_clock()
                if not packet.size:
                    continue
                if self._skip:
                    position = self._position(packet.pts)
                    wanted = (position is None or position >= self._wanted_end
                              or position in self._wanted)
                    ctx.skip_frame = "DEFAULT" if wanted else "NONREF"
                    if position is not None:
                        self._in_flight[position] = not wanted
                        if not wanted:
                            self._sent_nonref.add(position)
                try:
                    frames = ctx.decode(packet)
                except av.FFmpegError as exc:  # a damaged packet: skip it, remember why
                    self._error = exc
                    continue
                for frame in frames:
                    yield self._placed(frame), frame
            ctx.skip_frame = "DEFAULT"
            frames = ctx.decode(None)
        except (av.FFmpegError, OSError) as exc:
            self._error = exc
            return
        for frame in frames:
            yield self._placed(frame), frame

    def _placed(self, frame: Any) -> int | None:
        """The presentation position of a decoded frame (None if its pts is unknown); count
        it, and count as skipped the frames sent before it that will never come out."""
        self.stats["decoded"] += 1
        position = self._position(frame.pts)
        if self._in_flight and position is not None:
            self._in_flight.pop(position, None)
            for earlier in [p for p in self._in_flight if p < position]:  # output is in order
                self.stats["skipped"] += self._in_flight.pop(earlier)
        return position

    def _rewind(self) -> None:
        """Decode from the first packet: seek the open container back when that provably
        lands on the scan's first packet, else (re)open the file."""
        packets, first = None, None
        if self._container is not None and self._pts[0] != _NOPTS:
            try:
                self._container.seek(int(self._pts[0]), stream=self._stream, backward=True)
                packets = self._container.demux(self._stream)
                first = next((p for p in packets if p.size), None)
            except (av.FFmpegError, OSError):
                first = None
            if first is None or (first.pts, first.pos, first.size) != self._start_key:
                packets, first = None, None
        if packets is None:
            if self._container is not None:
                self._container.close()
            self._container, self._stream = _open_video(self.source, self.limits)
            packets = self._container.demux(self._stream)
        if self._active:
            self.stats["seeks"] += 1  # going back (the first start is not counted)
        self._next = 0
        self._start(packets, first)

    def _seek_before(self, target: int) -> None:
        """Position the decoder at the last keyframe <= target (or at frame 0)."""
        if not self._active:
            self._rewind()  # first use: start at frame 0
            if not self._needs_seek(target):
                return
        k = bisect.bisect_right(self._keyframes, target) - 1
        while self.placement == "timestamps" and k >= 0 and self._keyframes[k] > 0:
            self._container.seek(int(self._pts[self._keyframes[k]]), stream=self._stream,
                                 backward=True)  # PyAV flushes the decoder after a seek
            self.stats["seeks"] += 1
            self._start(self._container.demux(self._stream))
            first = next(self._frames, None)
            if first is not None and first[0] is not None and first[0] <= target:
                self._next = first[0]
                self._frames = itertools.chain([first], self._frames)
                return
            k -= 1  # landed after the target (inexact index): try an earlier keyframe
        self._rewind()

    def _needs_seek(self, target: int) -> bool:
        if not self._active or target < self._next or self._in_flight.get(target):
            return True  # (in flight as NONREF: the decoder may have dropped it)
        if self.placement != "timestamps":
            return False
        k = bisect.bisect_right(self._keyframes, target) - 1
        return k >= 0 and self._keyframes[k] - self._next >= _SEEK_MIN_SKIP

    def _decode_to(self, target: int) -> Any | None:
        """Decode forward to the frame at ``target``; None if it does not come out."""
        by_timestamp = self.placement == "timestamps"
        for position, frame in self._frames:
            if not by_timestamp:
                position = self._next
            elif position is None or not self._follows(position):
                raise _Inconsistent(f"a frame with timestamp {frame.pts} came out after "
                                    f"position {self._last_out}")
            self._last_out = position
            self._next = position + 1
            if position == target:
                return frame
            if position > target:
                return None
        return None

    def _follows(self, position: int) -> bool:
        """Whether a frame at ``position`` may come out next: the positions in between must
        be frames sent with NONREF (dropped). Anything else means the decoder's order is not
        the timestamps' order (a frame shown earlier has a later timestamp, or one with an
        earlier timestamp is still to come)."""
        if self._last_out < 0:
            return True  # the first frame since the decoder started (at a keyframe)
        if position <= self._last_out:
            return False
        return all(p in self._sent_nonref for p in range(self._last_out + 1, position))

    def _frame_at(self, target: int) -> torch.Tensor:
        if self._last is not None and self._last[0] == target:
            return self._last[1]
        if self._needs_seek(target):
            self._seek_before(target)
        frame = self._decode_to(target)
        if frame is None and self._skip:
            # not expected from the codecs that skip, but never worth an error: decode this
            # file again without skipping
            self._skip = False
            self._seek_before(target)
            frame = self._decode_to(target)
        if frame is None and self.placement == "timestamps":
            raise _Inconsistent(f"frame {target} did not come out where its timestamp says")
        if frame is None:
            self._check_clock()  # FFmpeg's reads interrupted by the time limit: say so
            detail = f"; FFmpeg said: {self._error}" if self._error else ""
            raise self.source.error(f"corrupt or truncated stream: frame {target} of "
                                    f"{self.info.num_frames} could not be decoded{detail}")
        self._last = (target, self._convert(frame))
        return self._last[1]

    def _convert(self, frame: Any) -> torch.Tensor:
        width, height = self._size
        array_ = frame.to_ndarray(format="rgb24", width=width, height=height,
                                  interpolation="BILINEAR", threads=1)
        tensor = torch.from_numpy(array_)
        return torch.rot90(tensor, self._rot_k, dims=(0, 1)) if self._rot_k else tensor

    def _count_from_now_on(self, reason: str) -> None:
        """Timestamps proved wrong while decoding: place frames by counting from frame 0."""
        self.placement, self.placement_reason = "count", reason
        self._skip = False
        self._last = None
        self._active = False  # next read rewinds to frame 0

    def get_frames(self, indices: list[int]) -> torch.Tensor:
        width, height = self._size
        if self._rotation in (90, 270):
            width, height = height, width
        out = torch.empty((len(indices), height, width, 3), dtype=torch.uint8)
        slots: dict[int, list[int]] = {}
        for slot, index in enumerate(indices):
            slots.setdefault(index, []).append(slot)
        self._wanted, self._wanted_end = set(slots), max(slots) + 1
        self._deadline = self._start_clock()
        try:
            try:
                self._fill(out, slots)
            except _Inconsistent as exc:
                self._count_from_now_on(str(exc))
                self._fill(out, slots)
        except (av.FFmpegError, OSError) as exc:
            self._check_clock()
            raise self.source.error(f"corrupt or truncated stream ({exc})") from exc
        return out

    def _fill(self, out: torch.Tensor, slots: dict[int, list[int]]) -> None:
        for index in sorted(slots):
            frame = self._frame_at(index)
            for slot in slots[index]:  # out[int] = ...: a plain copy (a list index
                out[slot] = frame      # takes torch's index_put path, ~60x slower)

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
        self._active = False  # used again: reopens at frame 0
