"""What a video stream's packets tell before (or while) it is decoded: whether packet
timestamps give the decoder's output order (``timestamps_consistent``), open GOPs
(``leading_frames``), hidden VP8/VP9 frames (``vpx_shows``), the first frame a decode puts
out (``FirstFrame``), HEVC temporal sub-layers and where FFmpeg's ``skip_frame = "NONREF"``
leaves every other frame exact (``skips_safely``). Used by the PyAV backend's packet scan.
"""

from __future__ import annotations

import re
from typing import Any

import av
import numpy as np

# Decoders whose skip_frame "NONREF" drops only frames that no other frame references (H.264
# pictures with nal_ref_idc 0; MPEG-1/2 and MPEG-4 part 2 B-frames), so the frames still
# decoded are bit-identical to a full decode. HEVC qualifies with one temporal sub-layer
# (``skips_safely``), MPEG-4 part 2 without DivX "packed B-frames". Not VP8/VP9 (VP9 predicts
# motion vectors from the previously decoded frame, referenced or not) nor AV1 (libdav1d reads
# skip_frame only when it opens); intra-only codecs have nothing to skip.
NONREF_CODECS = frozenset({"h264", "mpeg4", "mpeg1video", "mpeg2video"})
# Codecs whose decoder puts out one frame per packet in packet order (no B-frame reordering):
# increasing packet timestamps are their display order. Any other codec with increasing
# timestamps and a reordering decoder is decoded by counting.
NEVER_REORDER = frozenset({
    "vp8", "vp9", "av1", "libdav1d", "mjpeg", "mjpegb", "png", "apng", "gif", "rawvideo",
    "ffv1", "huffyuv", "ffvhuff", "utvideo", "prores", "dnxhd", "qtrle", "theora", "jpeg2000",
    "cinepak", "msvideo1", "h261", "flv1", "zlib", "zmbv", "v210", "r210", "dvvideo", "hap",
    "magicyuv", "cfhd", "vp6", "vp6f", "vp6a", "vp3", "msmpeg4v1", "msmpeg4v2", "msmpeg4v3",
    "wmv1", "wmv2", "svq1", "rpza", "smc", "tscc", "mszh", "indeo3", "indeo5",
})
# DivX/XviD user data marking packed B-frames (FFmpeg: "DivX%dBuild%d%c" / "DivX%db%d%c" with
# a trailing 'p'): the decoder holds back part of each packet for the next one, so a packet
# decoded with skipping could lose the frame that rides with it
PACKED_BFRAMES = re.compile(rb"DivX\d+(?:Build|b)\d+p")
NOPTS = -(2**63)  # a packet without a timestamp, in the int64 arrays
HEAD_AFTER_KEY, HEAD_MAX = 16, 300  # packets the scan decodes at most to see a frame


def leading_frames(pts: np.ndarray, keys: np.ndarray) -> bool:
    """Whether some keyframe is followed (in decoding order, before the next keyframe) by a
    frame shown before it: an open GOP."""
    starts = np.flatnonzero(keys)
    ends = [*starts[1:], len(pts)]
    return any(end > start + 1 and pts[start + 1 : end].min() < pts[start]
               for start, end in zip(starts, ends, strict=True))


class FirstFrame:
    """Decodes the first packets of a stream, during the scan, until a frame comes out: its
    size and display matrix, its timestamp and whether it is a keyframe tell what the scan
    cannot (FFmpeg puts out nothing before a keyframe; frames before the first one out are
    not frames of the video). Gives up ``HEAD_AFTER_KEY`` packets after the first keyframe
    (or ``HEAD_MAX`` packets) and drains the decoder."""

    def __init__(self, stream: Any) -> None:
        self._ctx = stream.codec_context
        self.first: Any = None
        self.first_is_key = False
        self.first_key_at: int | None = None  # index of the first keyframe (frame packets)
        self._fed, self._after_key, self.done = 0, 0, False

    def feed(self, packet: Any, index: int) -> None:
        if packet.is_keyframe and self.first_key_at is None:
            self.first_key_at = index
        try:
            self._take(self._ctx.decode(packet))
        except av.FFmpegError:
            pass  # undecodable (no reference yet): FFmpeg puts nothing out for it either
        self._fed += 1
        self._after_key += self.first_key_at is not None
        if not self.done and (self._after_key > HEAD_AFTER_KEY or self._fed >= HEAD_MAX):
            self.finish()

    def finish(self) -> None:
        if not self.done:
            try:
                self._take(self._ctx.decode(None))
            except av.FFmpegError:
                pass
        self.done = True
        self._ctx.flush_buffers()  # (also leaves the drained state)

    def _take(self, frames: list[Any]) -> None:
        if frames and self.first is None:
            self.first = frames[0]
            self.first_is_key = bool(frames[0].key_frame)
            self.done = True


def vpx_shows(codec: str, data: memoryview) -> bool:
    """Whether a VP8/VP9 packet puts out a frame (hidden alt-ref frames do not; a VP9
    superframe shows if any of its frames does). Unknown layouts count as shown."""
    if not len(data):
        return True
    if codec == "vp8":  # frame tag: bit 4 of the first byte is show_frame
        return bool(data[0] >> 4 & 1)
    marker = data[-1]
    frames = [data]
    if marker & 0xE0 == 0xC0:  # superframe index: sizes of the frames it holds
        count, size_bytes = (marker & 7) + 1, (marker >> 3 & 3) + 1
        index_size = 2 + size_bytes * count
        if len(data) >= index_size and data[-index_size] == marker:
            frames, pos = [], 0
            for k in range(count):
                at = len(data) - index_size + 1 + k * size_bytes
                size = int.from_bytes(data[at : at + size_bytes], "little")
                frames.append(data[pos : pos + size])
                pos += size
    return any(vp9_frame_shows(bytes(f[:2])) for f in frames)


def vp9_frame_shows(head: bytes) -> bool:
    """show_existing_frame or show_frame of a VP9 uncompressed header."""
    if len(head) < 2:
        return True
    bits = int.from_bytes(head, "big")
    if bits >> 14 != 2:  # frame_marker
        return True
    profile = (bits >> 13 & 1) | (bits >> 12 & 1) << 1
    pos = 10 if profile == 3 else 11  # bit of show_existing_frame (profile 3: a reserved bit)
    if bits >> pos & 1:  # show_existing_frame
        return True
    return bool(bits >> (pos - 2) & 1)  # after frame_type: show_frame


def timestamps_consistent(pts: np.ndarray, dts: np.ndarray, keys: np.ndarray,
                           reorders: bool) -> str:
    """Why packet timestamps cannot place frames ("" when the scan finds them consistent).

    ``pts``/``dts``/``keys``: per packet in decoding order (``NOPTS`` where unknown);
    ``reorders``: the decoder may put frames out in another order than it gets them."""
    if (pts == NOPTS).any():
        return "packets without timestamps"
    if len(pts) < 2:
        return ""
    increasing = bool((np.diff(pts) > 0).all())
    if not increasing and not (np.diff(np.sort(pts)) > 0).all():
        return "repeated timestamps"
    if increasing:  # display order only if the decoder keeps packet order
        return "timestamps in decoding order with a reordering decoder" if reorders else ""
    known = dts != NOPTS
    if (pts[known] < dts[known]).any():
        return "frames shown before they are decoded"
    # every keyframe is a barrier: no packet before it is shown after a packet from it on
    running_max = np.maximum.accumulate(pts)[:-1]
    suffix_min = np.minimum.accumulate(pts[::-1])[::-1][1:]
    at_key = keys[1:].astype(bool)
    if (running_max[at_key] > suffix_min[at_key]).any():
        return "timestamps that cross a keyframe"
    return ""


def hevc_sub_layers(extradata: bytes | None) -> int | None:
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


def skips_safely(ctx: Any, head: bytes = b"") -> bool:
    """Whether ``skip_frame = "NONREF"`` on this decoder drops only unreferenced frames and
    nothing else (``head``: the start of the first packet, where MPEG-4 user data may be).

    HEVC "sub-layer non-reference" pictures may still be referenced by pictures of a higher
    temporal sub-layer, so HEVC only with a single sub-layer (x265's default)."""
    if ctx.name == "mpeg4":
        return not PACKED_BFRAMES.search((ctx.extradata or b"") + head)
    if ctx.name in NONREF_CODECS:
        return True
    return ctx.name == "hevc" and hevc_sub_layers(ctx.extradata) == 1
