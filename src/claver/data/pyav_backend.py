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
import time
from array import array
from collections.abc import Iterator
from typing import Any

import av
import numpy as np
import torch
import torch.nn.functional as F

from claver.data.stream_facts import (
    NEVER_REORDER,
    NOPTS,
    FirstFrame,
    leading_frames,
    skips_safely,
    timestamps_consistent,
    vpx_shows,
)
from claver.data.video_source import DecodeLimits, VideoInfo, _Source

_SEEK_MIN_SKIP = 2  # seek forward only if that skips decoding at least this many frames
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


def _too_large(source: _Source, width: int, height: int, limits: DecodeLimits,
               when: str = "") -> Exception:
    return source.error(
        f"frames of {width}x{height} = {width * height:,} pixels{when} exceed the limit of "
        f"{limits.max_pixels:,} pixels",
        "downscale it (ffmpeg -i IN -vf scale=-2:720 OUT.mp4) or raise the limit "
        "(DecodeLimits(max_pixels=...), config DATA.MAX_PIXELS)")


def _clockwise(ccw: float | None) -> int:
    """FFmpeg's counter-clockwise display rotation -> clockwise degrees in {0, 90, 180, 270}."""
    if ccw is None or not math.isfinite(ccw):
        return 0
    return int(round(-ccw / 90.0)) % 4 * 90


def _scaled_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(W, H) with the shorter side equal to ``short_side`` and the aspect ratio kept."""
    if short_side is None:
        return width, height
    short, long = min(width, height), max(width, height)
    new_long = max(1, (2 * long * short_side + short) // (2 * short))  # half up, as mmcv
    return (short_side, new_long) if width <= height else (new_long, short_side)


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
    undecoded where the codec allows it, ``skips_safely``) and by counting otherwise."""

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
    def _demux_index(self, container: Any, stream: Any) -> tuple[array, array, array,
                                                                  bytearray, FirstFrame]:
        """One demux pass: per packet that puts out a frame, its pts, dts, duration and
        flags (``_KEY``, ``_CORRUPT``); meanwhile the head of the stream is decoded."""
        pts, dts, durations, flags = array("q"), array("q"), array("q"), bytearray()
        self._start_key: tuple[Any, ...] | None = None  # identifies the first packet
        self._mpeg4_head = b""  # MPEG-4 part 2: the start of the first packet (user data)
        ctx = stream.codec_context
        vpx = ctx.name in ("vp8", "vp9")
        head = FirstFrame(stream)
        max_packets = self.limits.max_packets
        try:
            for packet in container.demux(stream):
                self._check_clock()
                if not packet.size:
                    continue  # end-of-stream marker or an empty AVI "skip" chunk
                if self._start_key is None:
                    self._start_key = (packet.pts, packet.pos, packet.size)
                    if ctx.name == "mpeg4":
                        self._mpeg4_head = bytes(packet)[:4096]
                if not head.done:
                    head.feed(packet, len(flags))
                if packet.is_discard:
                    continue  # edit-list pre-roll: decoded, never put out
                if vpx and not vpx_shows(ctx.name, memoryview(packet)):
                    continue  # a hidden (alt-ref) frame in a packet of its own
                if len(flags) >= max_packets:
                    raise self.source.error(
                        f"more than {max_packets:,} video packets",
                        "split the video, or raise the limit (DecodeLimits(max_packets=...))")
                pts.append(NOPTS if packet.pts is None else packet.pts)
                dts.append(NOPTS if packet.dts is None else packet.dts)
                durations.append(packet.duration or 0)
                flags.append(_KEY * packet.is_keyframe | _CORRUPT * packet.is_corrupt)
        except (av.FFmpegError, OSError) as exc:  # truncated or corrupt container
            self._error = exc
            self._check_clock()  # (or FFmpeg's reads interrupted by the time limit)
        head.finish()
        return pts, dts, durations, flags, head

    def _scan(self, container: Any, stream: Any, short_side: int | None) -> None:
        """Exact count, placement, keyframes, size and rotation from one demux pass."""
        pts, dts, durations, flags, head = self._demux_index(container, stream)
        ctx = stream.codec_context
        codec, width, height = ctx.name, ctx.width, ctx.height
        self.format_name = container.format.name
        time_base, rate = stream.time_base, stream.average_rate or stream.guessed_rate
        first = head.first
        exact = self._error is None
        n = len(flags)
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
        if self._size[0] * self._size[1] > self.limits.max_pixels:  # (extreme aspect ratio)
            raise _too_large(self.source, *self._size, self.limits,
                             f" when scaled to short side {short_side}")
        p = np.frombuffer(pts, dtype=np.int64)
        d = np.frombuffer(dts, dtype=np.int64)
        keys = np.frombuffer(bytes(flags), dtype=np.uint8) & _KEY
        reorders = codec not in NEVER_REORDER and bool(ctx.has_b_frames)
        self.placement_reason = timestamps_consistent(p, d, keys, reorders)
        self.placement = "count" if self.placement_reason else "timestamps"
        # frames before the first that comes out (a recording that starts inside a group of
        # pictures: FFmpeg puts out nothing until a keyframe) are not frames of the video
        keep = np.ones(n, dtype=bool)
        if self.placement == "timestamps" and first is not None and first.pts is not None:
            keep &= p >= first.pts
        elif head.first_is_key and head.first_key_at:
            keep[: head.first_key_at] = False
        self._truncated = bool(flags[-1] & _CORRUPT)
        if self._truncated:  # cut short by truncation: does its frame come out?
            exact = False
            total = self._count_full_decode()
            self.placement = "count"
            self.placement_reason = "a truncated stream (frames counted by a full decode)"
            keep[:] = False
            keep[: min(total, n)] = True  # only the count matters now
        p, d, keys = p[keep], d[keep], keys[keep]
        n = len(p)
        if n == 0:
            raise self.source.error("corrupt or truncated stream: no decodable video frames")
        self.reordered = bool((p == NOPTS).any() or (np.diff(p) < 0).any())
        self.open_gop = self.placement == "timestamps" and leading_frames(p, keys)
        self._pts = np.sort(p)  # a frame's position is its timestamp's rank
        order = np.argsort(p, kind="stable")
        self._keyframes = np.flatnonzero(keys[order]).tolist()  # positions of keyframes
        if self._pts[0] != NOPTS and (n == 1 or bool((np.diff(self._pts) > 0).all())):
            steps = np.sort(np.diff(self._pts)) if n > 1 else np.zeros(1, np.int64)
            last = int(durations[int(np.flatnonzero(keep)[order[-1]])]) or int(
                steps[len(steps) // 2])
            duration = float(int(self._pts[-1] - self._pts[0] + last) * time_base)
        else:  # no usable timestamps (raw bitstreams)
            duration = n / float(rate) if rate else 0.0
        # skipping drops frames, which only timestamps can place
        self._skip = (_SKIP_NONREF and self.placement == "timestamps"
                      and skips_safely(ctx, self._mpeg4_head))
        fps = n / duration if duration > 0 else float(rate or 0.0)
        if self._rotation in (90, 270):
            width, height = height, width
        self.info = VideoInfo(num_frames=n, fps=fps, duration=duration, width=width,
                              height=height, codec=codec, rotation=self._rotation,
                              frame_count_exact=exact)

    def _count_full_decode(self) -> int:
        """How many frames a full sequential decode puts out (for truncated files only)."""
        container, stream = _open_video(self.source, self.limits)
        count = 0
        try:
            for packet in container.demux(stream):
                self._check_clock()
                try:
                    count += len(stream.decode(packet))
                except av.FFmpegError:
                    continue
            count += len(stream.decode(None))
        except (av.FFmpegError, OSError):
            pass
        finally:
            container.close()
        return count

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
                except av.FFmpegError as exc:
                    if not self._damage_is_expected(packet):
                        self._active = False
                        raise self.source.error(
                            f"corrupt stream: a video packet (timestamp {packet.pts}) does "
                            f"not decode ({exc})") from exc
                    self._error = exc  # before the first frame, or the cut end: no frame
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

    def _damage_is_expected(self, packet: Any) -> bool:
        """A packet FFmpeg cannot decode is no frame of the video when it comes before the
        first frame (a recording that starts inside a group of pictures) or at the cut end
        of a truncated file (both counted so by the scan); anywhere else the file is damaged
        and frames after it would come out one place early."""
        if self._truncated:
            return True
        if self.placement == "timestamps":
            return self._position(packet.pts) is None
        return self._last_out < 0 and self._next == 0

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
        if self._container is not None and self._pts[0] != NOPTS:
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
