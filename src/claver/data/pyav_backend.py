"""The default ``"pyav"`` video backend (``_PyAVBackend``) and its helpers: opening a file,
telling whether FFmpeg's ``skip_frame = "NONREF"`` is safe for a codec, rotation and
short-side scaling. :mod:`claver.data.decode` describes how it decodes.
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
from collections.abc import Iterator
from typing import Any

import av
import torch
import torch.nn.functional as F

from claver.data.video_source import VideoInfo, _Source

_SEEK_MIN_SKIP = 2  # seek forward only if that skips decoding at least this many frames
# Decoders whose skip_frame "NONREF" drops only frames that no other frame references (H.264
# pictures with nal_ref_idc 0; MPEG-1/2 and MPEG-4 part 2 B-frames), so the frames still
# decoded are bit-identical to a full decode. HEVC qualifies with one temporal sub-layer
# (``_skips_safely``), MPEG-4 part 2 without DivX "packed B-frames". Not VP8/VP9 (VP9 predicts
# motion vectors from the previously decoded frame, referenced or not) nor AV1 (libdav1d reads
# skip_frame only when it opens); intra-only codecs have nothing to skip.
_NONREF_CODECS = frozenset({"h264", "mpeg4", "mpeg1video", "mpeg2video"})
# DivX/XviD user data marking packed B-frames (FFmpeg: "DivX%dBuild%d%c" / "DivX%db%d%c" with
# a trailing 'p'): the decoder holds back part of each packet for the next one, so a packet
# decoded with skipping could lose the frame that rides with it
_PACKED_BFRAMES = re.compile(rb"DivX\d+(?:Build|b)\d+p")
_SKIP_NONREF = True  # private switch: False decodes every frame (tests compare both ways)


def _open_video(source: _Source) -> tuple[Any, Any]:
    """Open with PyAV and pick the first video stream (one decoder thread)."""
    try:
        container = av.open(source.for_library(), mode="r", metadata_errors="ignore")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
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
    stream.codec_context.thread_count = 1
    stream.codec_context.thread_type = "NONE"
    return container, stream


def _first_frame(stream: Any, packet: Any) -> Any | None:
    """Decode one packet (plus a drain) to read size and display matrix; None on failure."""
    try:
        stream.codec_context.flush_buffers()
        frames = stream.decode(packet) or stream.decode(None)
    except av.FFmpegError:
        return None
    return frames[0] if frames else None


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
    """PyAV decoding with a packet index: exact count, keyframe-aware seeking, and frames
    nobody asked for left undecoded where the codec allows it (``_skips_safely``)."""

    name = "pyav"

    def __init__(self, source: _Source, short_side: int | None, keep_open: bool = True) -> None:
        self.source = source
        self.stats = {"seeks": 0, "decoded": 0, "skipped": 0}
        self._container: Any = None
        self._stream: Any = None
        self._frames: Iterator[tuple[int | None, Any]] = iter(())
        self._active = False  # self._frames continues from a known decoder position
        self._next = 0
        self._last: tuple[int, torch.Tensor] | None = None
        self._error: Exception | None = None
        self._skip = False  # send packets of unwanted frames with skip_frame NONREF
        self._wanted: set[int] = set()  # positions the current get_frames call asks for
        self._wanted_end = 0  # 1 + the last of them: later frames are not skipped
        # packets sent since the last seek whose frame has not come out yet: position ->
        # sent with NONREF (then the decoder may have dropped it: getting it needs a seek)
        self._in_flight: dict[int, bool] = {}
        container, stream = _open_video(source)
        try:
            self._scan(container, stream, short_side)
        except BaseException:
            container.close()
            raise
        if keep_open and self._index_of and self._error is None:
            self._container, self._stream = container, stream  # decoding seeks back to 0
        else:  # a probe for another backend, or a file that may not seek back exactly
            container.close()

    def _scan(self, container: Any, stream: Any, short_side: int | None) -> None:
        """One demux-only pass: exact count, presentation order, keyframes; decode frame 0."""
        packets: list[tuple[Any, bool, int, bool]] = []  # pts, keyframe, duration, corrupt
        self._start_key: tuple[Any, ...] | None = None  # identifies the first packet
        head = b""  # MPEG-4 part 2: the start of the first packet (user data)
        first, tries = None, 3  # decode the first keyframe(s) until one frame comes out
        try:
            for packet in container.demux(stream):
                if not packet.size:  # end-of-stream marker or an empty AVI "skip" chunk
                    continue
                if not packets:
                    self._start_key = (packet.pts, packet.pos, packet.size)
                    if stream.codec_context.name == "mpeg4":
                        head = bytes(packet)[:4096]
                packets.append((packet.pts, packet.is_keyframe, packet.duration or 0,
                                packet.is_corrupt))
                if first is None and tries and (packet.is_keyframe or len(packets) == 1):
                    first, tries = _first_frame(stream, packet), tries - 1
        except (av.FFmpegError, OSError) as exc:  # truncated or corrupt container
            self._error = exc
        ctx = stream.codec_context
        codec, width, height = ctx.name, ctx.width, ctx.height
        self.format_name = container.format.name
        time_base, rate = stream.time_base, stream.average_rate or stream.guessed_rate
        exact = self._error is None
        while packets and packets[-1][3]:  # a packet cut short by truncation: not a frame
            packets.pop()
            exact = False
        n = len(packets)
        if n == 0 or (first is None and self._error is not None):
            detail = f" ({self._error})" if self._error else ""
            raise self.source.error(f"corrupt or truncated stream: no decodable video frames"
                                    f"{detail}")
        if first is not None:
            width, height = first.width, first.height
        self._rotation = _clockwise(first.rotation) if first is not None else 0
        self._rot_k = -self._rotation // 90  # torch.rot90 turns counter-clockwise for k > 0
        self._size = _scaled_size(width, height, short_side)
        self._index_of: dict[int, int] = {}
        self._keyframes: list[int] = []
        pts = [p[0] for p in packets]
        self.reordered = None in pts or any(b < a for a, b in itertools.pairwise(pts))
        if None not in pts and len(set(pts)) == n:
            order = sorted(range(n), key=pts.__getitem__)
            self._pts = [pts[i] for i in order]
            self._index_of = {t: i for i, t in enumerate(self._pts)}
            self._keyframes = [pos for pos, i in enumerate(order) if packets[i][1]]
            steps = sorted(b - a for a, b in itertools.pairwise(self._pts)) or [0]
            last = packets[order[-1]][2] or steps[len(steps) // 2]
            duration = float((self._pts[-1] - self._pts[0] + last) * time_base)
        else:  # no usable timestamps (raw bitstreams): forward decoding only
            duration = n / float(rate) if rate else 0.0
        # skipping needs every frame placed by its timestamp (dropped frames make counting
        # outputs wrong), so only with unique packet timestamps
        self._skip = _SKIP_NONREF and bool(self._index_of) and _skips_safely(ctx, head)
        fps = n / duration if duration > 0 else float(rate or 0.0)
        if self._rotation in (90, 270):
            width, height = height, width
        self.info = VideoInfo(num_frames=n, fps=fps, duration=duration, width=width,
                              height=height, codec=codec, rotation=self._rotation,
                              frame_count_exact=exact)

    # -- decoding -----------------------------------------------------------------------
    def _start(self, packets: Iterator[Any], first: Any = None) -> None:
        """Decode ``packets`` (and ``first`` before them) with a freshly flushed decoder."""
        self._stream.codec_context.skip_frame = "DEFAULT"
        self._in_flight.clear()
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
                if not packet.size:
                    continue
                if self._skip:
                    position = self._index_of.get(packet.pts)  # type: ignore[arg-type]
                    wanted = (position is None or position >= self._wanted_end
                              or position in self._wanted)
                    ctx.skip_frame = "DEFAULT" if wanted else "NONREF"
                    if position is not None:
                        self._in_flight[position] = not wanted
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
        position = self._index_of.get(frame.pts) if frame.pts is not None else None
        if self._in_flight and position is not None:
            self._in_flight.pop(position, None)
            for earlier in [p for p in self._in_flight if p < position]:  # output is in order
                self.stats["skipped"] += self._in_flight.pop(earlier)
        return position

    def _rewind(self) -> None:
        """Decode from the first packet: seek the open container back when that provably
        lands on the scan's first packet, else (re)open the file."""
        packets, first = None, None
        if self._container is not None and self._index_of:
            try:
                self._container.seek(self._pts[0], stream=self._stream, backward=True)
                packets = self._container.demux(self._stream)
                first = next((p for p in packets if p.size), None)
            except (av.FFmpegError, OSError):
                first = None
            if first is None or (first.pts, first.pos, first.size) != self._start_key:
                packets, first = None, None
        if packets is None:
            if self._container is not None:
                self._container.close()
            self._container, self._stream = _open_video(self.source)
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
        while k >= 0 and self._keyframes[k] > 0:
            self._container.seek(self._pts[self._keyframes[k]], stream=self._stream,
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
        k = bisect.bisect_right(self._keyframes, target) - 1
        return k >= 0 and self._keyframes[k] - self._next >= _SEEK_MIN_SKIP

    def _decode_to(self, target: int) -> Any | None:
        """Decode forward to the frame at ``target``; None if it does not come out."""
        for position, frame in self._frames:
            if position is None:
                if self._skip:
                    return None  # frames were dropped: counting outputs cannot place it
                position = self._next  # no usable timestamp: count frames
            self._next = position + 1
            if position == target:
                return frame
            if position > target:
                return None
        return None

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
        if frame is None:
            detail = f"; FFmpeg said: {self._error}" if self._error else ""
            raise self.source.error(f"corrupt or truncated stream: frame {target} of "
                                    f"{self.info.num_frames} could not be decoded{detail}")
        self._last = (target, self._convert(frame))
        return self._last[1]

    def _convert(self, frame: Any) -> torch.Tensor:
        width, height = self._size
        array = frame.to_ndarray(format="rgb24", width=width, height=height,
                                 interpolation="BILINEAR", threads=1)
        tensor = torch.from_numpy(array)
        return torch.rot90(tensor, self._rot_k, dims=(0, 1)) if self._rot_k else tensor

    def get_frames(self, indices: list[int]) -> torch.Tensor:
        width, height = self._size
        if self._rotation in (90, 270):
            width, height = height, width
        out = torch.empty((len(indices), height, width, 3), dtype=torch.uint8)
        slots: dict[int, list[int]] = {}
        for slot, index in enumerate(indices):
            slots.setdefault(index, []).append(slot)
        self._wanted, self._wanted_end = set(slots), max(slots) + 1
        try:
            for index in sorted(slots):
                frame = self._frame_at(index)
                for slot in slots[index]:  # out[int] = ...: a plain copy (a list index
                    out[slot] = frame      # takes torch's index_put path, ~60x slower)
        except (av.FFmpegError, OSError) as exc:
            raise self.source.error(f"corrupt or truncated stream ({exc})") from exc
        return out

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
        self._active = False  # used again: reopens at frame 0
