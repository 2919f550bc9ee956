"""`claver data check` reads what training reads: evaluation views, training draws, --full.

The bad files here decode their first and last frames (all the old check read) but not all
frames in the middle: MJPEG in AVI (every frame its own packet) with chosen packets zeroed,
so the decoder drops those frames. Each test first checks that premise with the reader, so
a reader that handles such files differently fails loudly here rather than silently passing.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import av
import pytest

from claver.cli import main
from claver.data.check import check_dataset, check_video
from claver.data.decode import VideoReader
from claver.data.sources import write_labels
from claver.engine import data as engine_data
from claver.engine.config import load_config
from videos import frame_indices, make_video

N = 24  # frames per video
# Defaults (8 frames, one view): the evaluation view reads the segment centres.
CENTRES_8 = [(2 * i + 1) * N // 16 for i in range(8)]  # [1, 4, 7, 10, 13, 16, 19, 22]
CENTRES_4 = [(2 * i + 1) * N // 8 for i in range(4)]  # [3, 9, 15, 21]


def corrupt_frames(src: Path, dst: Path, frames: list[int]) -> Path:
    """Copy of an all-intra AVI with the payload of ``frames`` zeroed (container intact)."""
    data = bytearray(src.read_bytes())
    with av.open(str(src)) as c:
        packets = [(p.pos, p.size) for p in c.demux(video=0) if p.size]
    for k in frames:
        pos, size = packets[k]
        data[pos + 8: pos + size] = bytes(size - 8)
    dst.write_bytes(bytes(data))
    return dst


def reads_fail(path: Path, indices: list[int], short_side: int | None = None) -> bool:
    try:
        with VideoReader(path, short_side=short_side) as reader:
            reader.get_frames(indices)
    except ValueError:
        return True
    return False


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("check")
    for c in range(2):
        make_video(root / f"good{c}.mp4", num_frames=N, size=(64, 48), gop=8)
    clean = make_video(root / "clean.avi", num_frames=N, size=(64, 48), codec="mjpeg")
    # frames 12-14 (segment 4 of 8, centre 13): the default evaluation view fails
    corrupt_frames(clean, root / "centre.avi", [12, 13, 14])
    # frame 12 alone: the default evaluation view reads fine; only a full decode fails
    corrupt_frames(clean, root / "offcentre.avi", [12])
    # frame 8 with 4 frames per view: the evaluation view is fine, some training draws fail
    corrupt_frames(clean, root / "segment.avi", [8])
    labels = write_labels(["a", "b"], root / "labels.csv")
    for name, files in {"good": ["good0.mp4", "good1.mp4", "clean.avi"],
                        "centre": ["good0.mp4", "centre.avi", "good1.mp4"],
                        "offcentre": ["good0.mp4", "offcentre.avi"],
                        "segment": ["good1.mp4", "segment.avi"]}.items():
        (root / f"{name}.txt").write_text("".join(f"{f} {k % 2}\n" for k, f in enumerate(files)))
    return root, labels


def check(*args: str) -> int:
    return main(["data", "check", *args, "--no-progress"])


def test_corrupt_files_decode_first_and_last_frames(data):
    """What the old check read (first and last frame) passes; a full read does not."""
    root, _ = data
    for name in ("centre.avi", "offcentre.avi", "segment.avi"):
        with VideoReader(root / name) as reader:
            assert reader.info.num_frames == N
            assert frame_indices(reader.get_frames([0, N - 1])) == [0, N - 1]
        assert reads_fail(root / name, list(range(N))), name


def test_a_bad_middle_frame_is_reported_with_exit_1(data, capsys):
    root, labels = data
    assert reads_fail(root / "centre.avi", CENTRES_8, short_side=224)  # what evaluation reads
    assert check(str(root / "good.txt"), "--labels", str(labels)) == 0
    out = capsys.readouterr().out
    assert "videos listed 3, readable 3, bad 0" in out
    assert "evaluation views (1 x 8 frames, segment sampling" in out and "3 training draws" in out

    assert check(str(root / "centre.txt"), "--labels", str(labels)) == 1
    out = capsys.readouterr().out
    assert "videos listed 3, readable 2, bad 1" in out
    bad = [line for line in out.splitlines() if "centre.avi" in line]
    assert len(bad) == 1 and "evaluation views" in bad[0] and "VideoDecodeError" in bad[0]


def test_full_decodes_every_frame(data, capsys):
    root, labels = data
    assert not reads_fail(root / "offcentre.avi", CENTRES_8, short_side=224)
    args = [str(root / "offcentre.txt"), "--labels", str(labels), "--draws", "0"]
    assert check(*args) == 0
    assert "bad 0" in capsys.readouterr().out
    assert check(*args, "--full") == 1
    out = capsys.readouterr().out
    assert "every frame" in out
    assert "offcentre.avi: full decode: VideoDecodeError" in out


def test_training_draws_are_the_reads_training_makes(data, capsys):
    """For every seed, the check fails the video exactly when training's own loads in epochs
    0..2 fail; some seeds hit a bad frame, others do not, the evaluation view never does."""
    root, labels = data
    outcomes = set()
    for seed in range(8):
        cfg = load_config(None, [f"DATA.LABEL_LIST={labels}", "DATA.NUM_FRAMES=4",
                                 "DATA.INPUT_SIZE=32", "DATA.ON_ERROR=raise", f"SEED={seed}"])
        train = engine_data.train_dataset(cfg, 2, str(root / "segment.txt"))
        views = engine_data.eval_dataset(cfg, 2, str(root / "segment.txt"))
        failed = []
        for epoch in range(3):
            train.set_epoch(epoch)
            try:
                train.load(1)
            except ValueError:
                failed.append(epoch)
        views.load(1)  # the evaluation view is fine
        result = check_video(1, views, train, draws=3)
        assert result.ok == (not failed), (seed, failed, result.reason)
        if failed:
            assert result.reason.startswith(f"training draw {failed[0] + 1}:")
        assert check_video(1, views, train, draws=0).ok
        assert check_video(0, views, train, draws=3).ok
        outcomes.add(bool(failed))
    assert outcomes == {True, False}

    args = [str(root / "segment.txt"), "--labels", str(labels), "DATA.NUM_FRAMES=4"]
    bad_seed = next(s for s in range(8) if check(*args, f"SEED={s}") == 1)
    assert "segment.avi: training draw" in capsys.readouterr().out
    assert check(*args, f"SEED={bad_seed}", "--draws", "0") == 0


def test_config_gives_lists_views_and_settings(data, tmp_path, capsys):
    root, labels = data
    config = tmp_path / "c.yaml"
    config.write_text(textwrap.dedent(f"""
        DATA: {{ROOT: {root}, TRAIN_FILE: {root}/good.txt, VAL_FILE: {root}/centre.txt,
               LABEL_LIST: {labels}, NUM_FRAMES: 4, INPUT_SIZE: 32}}
        TEST: {{NUM_CLIPS: 2, NUM_CROPS: 3}}
        """))
    assert check("--config", str(config)) == 1  # the validation list holds centre.avi
    out = capsys.readouterr().out
    assert f"== {root}/good.txt" in out and f"== {root}/centre.txt" in out
    # 2 views x 4 frames, decoded at the short sides the transforms resize to
    assert "evaluation views (2 x 4 frames, segment sampling, short side 32)" in out
    assert "3 training draws (4 frames, short side 36)" in out
    assert "bad 0" in out.split("==")[1] and "readable 2, bad 1" in out.split("==")[2]

    # a positional list wins over the config's lists; KEY=VALUE overrides right after it
    assert check(str(root / "good.txt"), "-c", str(config), "TEST.NUM_CLIPS=3") == 0
    assert "evaluation views (3 x 4 frames" in capsys.readouterr().out
    # overrides with no list (argparse hands the first to the list slot)
    assert check("-c", str(config), "TEST.NUM_CLIPS=1", "DATA.NUM_FRAMES=8",
                 "--draws", "0") == 1
    out = capsys.readouterr().out
    assert "evaluation views (1 x 8 frames" in out and "centre.avi: evaluation views" in out
    assert check("-c", str(config), "--opts", "DATA.VAL_FILE", f"{root}/good.txt") == 0
    capsys.readouterr()


@pytest.mark.parametrize("args,message", [
    (["--labels", "{labels}"], "nothing to check"),
    (["{root}/good.txt", "DATA.LABEL_LIST="], "no label list"),
    (["{root}/good.txt", "--labels", "{labels}", "DATA.DECODE_TIMEOUT=-1"],
     "DATA.DECODE_TIMEOUT must be a finite number >= 0"),
    (["{root}/good.txt", "DATA.NUM_FRAME=4", "--labels", "{labels}"], "did you mean"),
    (["{root}/missing.txt", "--labels", "{labels}"], "missing.txt"),
    (["{root}/good.txt", "--labels", "{labels}", "--draws", "-1"], "draws"),
])
def test_usage_errors_exit_2(data, capsys, args, message):
    root, labels = data
    assert check(*[a.format(root=root, labels=labels) for a in args]) == 2
    assert message in capsys.readouterr().err


def test_check_dataset_library_call(data):
    root, labels = data
    cfg = load_config(None, [f"DATA.LABEL_LIST={labels}"])
    views = engine_data.eval_dataset(cfg, 2, str(root / "centre.txt"))
    report = check_dataset(views, ["a", "b"], workers=2, progress=False)
    assert [c.ok for c in report.checks] == [True, False, True]
    assert report.checks[0].frames == N and (report.checks[0].width, report.checks[0].height) \
        == (64, 48)  # the native size, although frames are decoded at short side 224
    assert views.short_side == 256  # single view: short side 256/224 * S, centre crop S


def test_a_wrong_root_is_named(data, tmp_path, capsys):
    root, labels = data
    assert check(str(root / "good.txt"), "--labels", str(labels), "--root", str(tmp_path)) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"none of the 3 videos listed in {root / 'good.txt'}" in err
    assert f"exists under {tmp_path}" in err and "set DATA.ROOT" in err
