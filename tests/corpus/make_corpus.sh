#!/usr/bin/env bash
# Regenerate the ffmpeg-made half of the video test corpus (tests/corpus/gen/).
#
# Every file is written by the ffmpeg COMMAND-LINE TOOL (Debian bookworm's FFmpeg 5.1), the way
# real muxers write them: B-frames in AVI (decode-order counters as timestamps), packed B-frames,
# MP4 edit lists and negative composition offsets, timestamps rewritten by the setts bitstream
# filter, open GOPs, streams without an index, truncated files, ... -- never by PyAV, whose
# files have clean timestamps and hid the bug these files exist to catch.
#
# The committed files are what the tests read; this script only documents and reproduces them
# (an encoder of another version may write different bytes, so after running it, run
#   .venv/bin/python tests/corpus/make_manifest.py
# to recompute the ground truth in manifest.json). Tests never run ffmpeg.
#
# Usage: bash tests/corpus/make_corpus.sh          (needs ffmpeg with libx264, libx265,
#                                                    libxvid, libvpx, libmp3lame; ffprobe)
#
# The real third-party files in real/ are not made here: see fetch_real.sh beside this file.
set -euo pipefail

cd "$(dirname "$0")"
OUT=gen
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$OUT"

# -bitexact keeps encoder/muxer version strings out, -threads 1 keeps the encoders deterministic
FF=(ffmpeg -hide_banner -loglevel error -nostdin -y)
BX=(-fflags +bitexact -flags:v +bitexact -flags:a +bitexact -map_metadata -1 -threads 1)

# test sources: testsrc2 moves and changes every frame, so a frame in the wrong place shows
src() {  # src WxH SECONDS [RATE]
    echo "-f lavfi -i testsrc2=size=$1:rate=${3:-25}:duration=$2"
}
tone() {  # tone SECONDS: a second input with a mono sine (audio interleaved with the video)
    echo "-f lavfi -i sine=frequency=440:sample_rate=22050:duration=$1"
}
X264=(-c:v libx264 -preset veryfast -crf 30 -pix_fmt yuv420p)

# cut_inside_last_packet FILE: keep the bytes up to the middle of the last video packet
cut_inside_last_packet() {
    local f=$1 pos size
    read -r pos size < <(ffprobe -v error -select_streams v:0 -show_entries packet=pos,size \
        -of compact=p=0 "$f" | tr '|=' '  ' | awk '{for (i = 1; i < NF; i += 2) v[$i] = $(i + 1)}
            v["pos"] != "N/A" && v["size"] > 0 {p = v["pos"]; s = v["size"]} END {print p, s}')
    head -c $((pos + size / 2)) "$f" > "$f.cut"
    mv "$f.cut" "$f"
}

# ---------------------------------------------------------------------------------------------
# AVI: the container stores one counter per chunk in decode order; FFmpeg hands it out as the
# pts, so with B-frames the packet "pts" are decode-order numbers, not presentation times
# (HMDB-51, UCF-101 and most DivX/XviD files are like this).

# H.264 with 3 B-frames, no B-pyramid, MP3 audio interleaved
"${FF[@]}" $(src 112x64 2) $(tone 2) "${X264[@]}" -bf 3 -g 12 \
    -x264-params b-pyramid=none:scenecut=0 -c:a libmp3lame -b:a 32k "${BX[@]}" \
    "$OUT/h264_bf3.avi"
# H.264 with 3 B-frames and B-pyramid (B-frames used as references)
"${FF[@]}" $(src 112x64 2) "${X264[@]}" -bf 3 -g 12 -x264-params b-pyramid=normal:scenecut=0 \
    "${BX[@]}" "$OUT/h264_bpyramid.avi"
# MPEG-4 part 2 (FFmpeg's encoder, unpacked B-frames) under three fourccs
"${FF[@]}" $(src 112x64 2) $(tone 2) -c:v mpeg4 -q:v 6 -bf 2 -g 12 -vtag XVID \
    -c:a libmp3lame -b:a 32k "${BX[@]}" "$OUT/mpeg4_xvid_bf2.avi"
"${FF[@]}" $(src 64x48 2) -c:v mpeg4 -q:v 6 -bf 2 -g 12 -vtag DX50 "${BX[@]}" \
    "$OUT/mpeg4_dx50_bf2.avi"
"${FF[@]}" $(src 128x72 1.6) -c:v mpeg4 -q:v 6 -bf 1 -g 10 -vtag DIVX "${BX[@]}" \
    "$OUT/mpeg4_divx_bf1.avi"
# DivX "packed B-frames": libxvid packs each B-frame into the packet of the P-frame after it
# and sends a 6-byte N-VOP placeholder next (user data "DivX503b1393p"). FFmpeg's own mpeg4
# encoder cannot pack (mpeg4_unpack_bframes only goes the other way); libxvid does so by
# itself for AVI. Note libxvid also drops the last frames: 25 in, 23 decodable frames out.
"${FF[@]}" $(src 112x64 1) -c:v libxvid -q:v 5 -bf 2 -g 12 "${BX[@]}" "$OUT/xvid_packed_bf2.avi"
# Motion JPEG (intra only, full-range yuvj420p)
"${FF[@]}" $(src 80x60 1.2) -c:v mjpeg -q:v 8 -pix_fmt yuvj420p "${BX[@]}" "$OUT/mjpeg.avi"
# truncated download: cut in the middle of the last video packet (idx1 index lost too)
"${FF[@]}" $(src 112x64 2) "${X264[@]}" -bf 3 -g 12 -x264-params scenecut=0 "${BX[@]}" \
    "$OUT/h264_truncated.avi"
cut_inside_last_packet "$OUT/h264_truncated.avi"

# ---------------------------------------------------------------------------------------------
# MP4 / MOV

# a clean H.264 + AAC MP4 with B-frames, the input of the stream-copy edits below
"${FF[@]}" $(src 112x64 2) $(tone 2) "${X264[@]}" -bf 3 -g 12 -x264-params scenecut=0 \
    -c:a aac -b:a 24k "${BX[@]}" "$TMP/base.mp4"
# cut at 0.7 s by stream copy: starts at the keyframe before (0.48 s) and writes an edit list
# that hides the frames before 0.7 s (demuxed and decoded, then discarded: more packets than
# frames)
"${FF[@]}" -ss 0.7 -i "$TMP/base.mp4" -c copy "${BX[@]}" "$OUT/h264_editlist_cut.mp4"
# start delayed by 0.4 s: an empty edit before the media in a .mov
"${FF[@]}" -itsoffset 0.4 -i "$TMP/base.mp4" -c copy "${BX[@]}" "$OUT/h264_itsoffset.mov"
# negative composition offsets (ctts version 1) instead of an edit list
"${FF[@]}" $(src 112x64 2) "${X264[@]}" -bf 3 -g 12 -x264-params scenecut=0 \
    -movflags negative_cts_offsets "${BX[@]}" "$OUT/h264_negcts.mp4"
# timestamps rewritten by a bitstream filter: pts := dts, so the pts run in decode order
"${FF[@]}" -i "$TMP/base.mp4" -map 0:v -c copy -bsf:v setts=pts=DTS "${BX[@]}" \
    "$OUT/h264_setts_pts_is_dts.mp4"
# ... and scrambled: pts = dts + a permutation of 0..4 frame durations (unique, >= dts,
# unrelated to the display order)
"${FF[@]}" -i "$TMP/base.mp4" -map 0:v -c copy \
    -bsf:v "setts=pts=DTS+mod(N*3\,5)*DURATION" "${BX[@]}" "$OUT/h264_setts_scrambled.mp4"
# open GOP: I-frames that are not IDR; the B-frames right after them in decode order (shown
# before them) reference the previous GOP, so decoding from the keyframe cannot produce them
"${FF[@]}" $(src 112x64 2) "${X264[@]}" -bf 3 \
    -x264-params open-gop=1:keyint=10:min-keyint=10:scenecut=0 "${BX[@]}" "$OUT/h264_opengop.mp4"
# short GOP: a keyframe every 5 frames (readers that seek a lot)
"${FF[@]}" $(src 112x64 3) "${X264[@]}" -bf 2 -g 5 -keyint_min 5 -x264-params scenecut=0 \
    "${BX[@]}" "$OUT/h264_gop5.mp4"
# rotation metadata: ffmpeg 5.1 has no -display_rotation (ffmpeg 6+), and its legacy
# "-metadata:s:v:0 rotate=N" is silently dropped when encoding: it only takes effect with
# -c copy. Beware: 5.1 writes the display matrix of the opposite angle (tag 90 -> matrix
# a=0 b=-1 c=1 d=0, which FFmpeg itself, 5.1 autorotate and PyAV alike, reads as 90 degrees
# counter-clockwise, i.e. 270 clockwise; tag 270 -> the iPhone-portrait matrix, 90 clockwise).
"${FF[@]}" $(src 112x64 1.2) "${X264[@]}" -bf 2 -g 12 "${BX[@]}" "$TMP/r90.mp4"
"${FF[@]}" -i "$TMP/r90.mp4" -c copy -metadata:s:v:0 rotate=90 "${BX[@]}" \
    "$OUT/h264_rotate_tag90.mp4"
"${FF[@]}" $(src 80x48 1) "${X264[@]}" -bf 0 "${BX[@]}" "$TMP/r180.mp4"
"${FF[@]}" -i "$TMP/r180.mp4" -c copy -metadata:s:v:0 rotate=180 "${BX[@]}" \
    "$OUT/h264_rotate_tag180.mp4"
"${FF[@]}" $(src 112x64 1.2) "${X264[@]}" -bf 3 -g 12 "${BX[@]}" "$TMP/r270.mov"
"${FF[@]}" -i "$TMP/r270.mov" -c copy -metadata:s:v:0 rotate=270 "${BX[@]}" \
    "$OUT/h264_rotate_tag270.mov"
# variable frame rate: every 4th frame dropped, the others keep their times (gaps)
"${FF[@]}" $(src 112x64 2) -vf "select='not(eq(mod(n\,4)\,3))'" -fps_mode vfr "${X264[@]}" \
    -bf 2 -g 12 "${BX[@]}" "$OUT/h264_vfr_drop.mp4"
# HEVC with B-frames (x265 default B-pyramid), hvc1 tag
"${FF[@]}" $(src 112x64 2) -c:v libx265 -preset ultrafast -crf 32 -tag:v hvc1 \
    -x265-params log-level=error:keyint=12:bframes=4:b-pyramid=1:pools=1:frame-threads=1 \
    "${BX[@]}" "$OUT/hevc_bf4.mp4"
# truncated MP4: index (moov) first, media data cut in the middle of the last video sample
"${FF[@]}" $(src 112x64 2) "${X264[@]}" -bf 3 -g 12 -x264-params scenecut=0 \
    -movflags +faststart "${BX[@]}" "$OUT/h264_faststart_truncated.mp4"
cut_inside_last_packet "$OUT/h264_faststart_truncated.mp4"

# ---------------------------------------------------------------------------------------------
# Matroska / WebM

# written to a pipe (non-seekable): no Cues index, no SeekHead, no Duration, clusters of
# unknown size -- like a live recording
"${FF[@]}" $(src 112x64 2) "${X264[@]}" -bf 3 -g 12 -x264-params scenecut=0 "${BX[@]}" \
    -f matroska - > "$OUT/h264_nocues.mkv"
# VFR: accelerating timestamps (1 ms resolution in Matroska)
"${FF[@]}" $(src 112x64 2) -vf "setpts='(N+N*N/60)/25/TB'" -fps_mode vfr "${X264[@]}" -bf 2 \
    -g 12 "${BX[@]}" "$OUT/h264_vfr_accel.mkv"
# odd size 97x61, 4:4:4 chroma (High 4:4:4 profile)
"${FF[@]}" $(src 98x62 1.2) -vf scale=97:61 -c:v libx264 -preset veryfast -crf 30 -pix_fmt yuv444p -bf 2 \
    -g 12 "${BX[@]}" "$OUT/h264_yuv444_97x61.mkv"
# HEVC with two temporal sub-layers (unreferenced B-frames in sub-layer 1)
"${FF[@]}" $(src 112x64 2) -c:v libx265 -preset ultrafast -crf 32 \
    -x265-params log-level=error:keyint=12:bframes=3:temporal-layers=1:pools=1:frame-threads=1 \
    "${BX[@]}" "$OUT/hevc_temporal_layers.mkv"
# VP9 with alt-ref (hidden) frames, carried in superframes (two-pass: libvpx places alt-refs
# only then)
VP9=(-c:v libvpx-vp9 -b:v 100k -g 50 -auto-alt-ref 1 -lag-in-frames 16 -deadline good
     -cpu-used 4 -row-mt 0 -passlogfile "$TMP/vp9")
"${FF[@]}" $(src 112x64 2) "${VP9[@]}" -pass 1 "${BX[@]}" -f null -
"${FF[@]}" $(src 112x64 2) "${VP9[@]}" -pass 2 "${BX[@]}" "$OUT/vp9_altref.webm"
# the same stream in AVI with the superframes split: each hidden frame in a chunk of its own
# (Matroska/WebM/IVF muxers merge them back, AVI does not): 54 packets, 50 frames
"${FF[@]}" -i "$OUT/vp9_altref.webm" -c copy -bsf:v vp9_superframe_split "${BX[@]}" \
    "$OUT/vp9_superframe_split.avi"

# ---------------------------------------------------------------------------------------------
# MPEG program / transport streams, FLV, raw

# MPEG-2 video with B-frames and MP2 audio in an MPEG-PS
"${FF[@]}" $(src 176x144 2) $(tone 2) -c:v mpeg2video -q:v 8 -bf 2 -g 12 -c:a mp2 -b:a 64k \
    "${BX[@]}" "$OUT/mpeg2_bf2.mpg"
# H.264 with B-frames and AAC in MPEG-TS
"${FF[@]}" $(src 112x64 2) $(tone 2) "${X264[@]}" -bf 3 -g 12 -x264-params scenecut=0 \
    -c:a aac -b:a 24k "${BX[@]}" "$TMP/full.ts"
cp "$TMP/full.ts" "$OUT/h264_bf3.ts"
# a recording that starts in the middle of a GOP: the same TS with its first 60 TS packets
# dropped (cut on a 188-byte boundary); the frames before the first keyframe cannot be decoded
tail -c +$((188 * 60 + 1)) "$TMP/full.ts" > "$OUT/h264_midgop_start.ts"
# H.264 with B-frames in FLV (composition time offsets); 96x64, a size at which decord2 3.4
# returns 4-channel frames or fails (the optional backend must hand it to pyav)
"${FF[@]}" $(src 96x64 2) "${X264[@]}" -bf 3 -g 12 -x264-params scenecut=0 "${BX[@]}" \
    "$OUT/h264_bf3.flv"
# raw H.264 Annex B elementary stream: no container, no timestamps
"${FF[@]}" $(src 112x64 1.2) "${X264[@]}" -bf 3 -g 12 -x264-params scenecut=0 "${BX[@]}" \
    -f h264 "$OUT/h264_raw.h264"

echo "wrote $(ls "$OUT" | wc -l) files to $(pwd)/$OUT ($(du -sh "$OUT" | cut -f1))"
