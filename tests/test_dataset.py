"""VideoDataset + loaders + `claver data check` on real encoded videos, good and bad."""

from __future__ import annotations

import tarfile

import pytest
import torch

from claver.cli import main
from claver.data.dataset import (
    EvalShardSampler,
    LoadReport,
    VideoDataset,
    VideoLoadError,
    build_eval_loader,
    build_train_loader,
    collate_videos,
)
from claver.data.sampling import FrameSampler
from claver.data.sources import FolderSource, TarSource, write_labels
from claver.data.transforms import build_eval_transform, build_train_transform
from videos import (
    frame_indices,
    make_audio_only,
    make_empty,
    make_garbage,
    make_truncated,
    make_video,
)

N = 24  # frames per video
GOOD = [f"cls{c}/v{k}.mp4" for c in range(3) for k in range(2)]  # 6 good videos, 3 classes
BAD = {"cls0/missing.mp4": None, "cls1/empty.mp4": make_empty, "cls2/garbage.mp4": make_garbage,
       "cls0/audio.m4a": make_audio_only, "cls1/truncated.mp4": "truncated"}


def keep_frames(frames, generator=None):
    """Identity transform (uint8 (T, H, W, 3)), so tests can read each frame's index."""
    return frames


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    for rel in GOOD:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        make_video(root / rel, num_frames=N, size=(64, 48), gop=8)
    for rel, make in BAD.items():
        if make == "truncated":
            make_truncated(root / GOOD[0], root / rel, fraction=0.3)
        elif make is not None:
            make(root / rel)
    labels = write_labels(["cls0", "cls1", "cls2"], root / "labels.csv")
    good = root / "good.txt"
    good.write_text("".join(f"{p} {p[3]}\n" for p in GOOD))
    mixed = root / "mixed.txt"
    mixed.write_text("".join(f"{p} {p[3]}\n" for p in [*GOOD[:3], *BAD, *GOOD[3:]]))
    return root, labels, good, mixed


def test_eval_samples_segment_centres(data):
    root, _, good, _ = data
    ds = VideoDataset(FolderSource(root, good), FrameSampler(4), keep_frames, train=False)
    sample = ds[2]
    # n = 24, T = 4: centres (2i + 1) * 24 // 8
    assert frame_indices(sample["video"]) == [3, 9, 15, 21]
    assert sample["label"].item() == 1 and sample["index"] == 2 and sample["valid"]


def test_train_sampling_is_random_per_epoch_and_reproducible(data):
    root, _, good, _ = data
    ds = VideoDataset(FolderSource(root, good), FrameSampler(4, train=True), keep_frames, seed=3)
    first = frame_indices(ds[0]["video"])
    assert frame_indices(ds[0]["video"]) == first  # a pure function of (seed, epoch, index)
    assert all(6 * i <= f < 6 * (i + 1) for i, f in enumerate(first))  # one per segment
    draws = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        draws.add(tuple(frame_indices(ds[0]["video"])))
    assert len(draws) > 1


def test_transformed_shapes_single_and_multi_view(data):
    root, _, good, _ = data
    src = FolderSource(root, good)
    train = VideoDataset(src, FrameSampler(4, train=True),
                         build_train_transform(32, mean=(0.5,) * 3, std=(0.5,) * 3))
    assert train[0]["video"].shape == (4, 3, 32, 32)
    assert train[0]["video"].dtype == torch.float32
    views = VideoDataset(src, FrameSampler(4, num_clips=2),
                         build_eval_transform(32, mean=(0.5,) * 3, std=(0.5,) * 3, crops=3),
                         train=False)
    assert views[0]["video"].shape == (6, 4, 3, 32, 32)  # 2 clips x 3 crops
    raw = VideoDataset(src, FrameSampler(4, num_clips=2), keep_frames, train=False)
    clips = raw[0]["video"]  # (2, T, H, W, 3) with identity transform
    assert [frame_indices(c) for c in clips] == [[1, 7, 13, 19], [4, 10, 16, 22]]


def test_training_replaces_bad_videos_and_reports_them(data):
    root, _, _, mixed = data
    ds = VideoDataset(FolderSource(root, mixed), FrameSampler(4, train=True), keep_frames)
    reasons = {}
    for i in range(len(ds)):
        sample = ds[i]
        assert sample["valid"] and sample["video"].shape[0] == 4
        for f in sample["failures"]:
            reasons[f.split(":")[0]] = f
    assert len(reasons) == len(BAD)
    assert "FileNotFoundError" in next(v for k, v in reasons.items() if "missing" in k)
    for name in BAD:
        assert any(name in k for k in reasons), name


def test_evaluation_marks_bad_videos_invalid(data):
    root, _, _, mixed = data
    ds = VideoDataset(FolderSource(root, mixed), FrameSampler(4),
                      build_eval_transform(32, mean=(0,) * 3, std=(1,) * 3), train=False)
    batch = collate_videos([ds[i] for i in range(len(ds))])
    assert batch["video"].shape == (len(ds), 4, 3, 32, 32)
    assert batch["valid"].tolist() == [True] * 3 + [False] * len(BAD) + [True] * 3
    assert len(batch["failures"]) == len(BAD)
    assert batch["index"].tolist() == list(range(len(ds)))  # nothing replaced


def test_raise_policy_names_the_file(data):
    root, _, _, mixed = data
    ds = VideoDataset(FolderSource(root, mixed), FrameSampler(4), keep_frames, on_error="raise")
    with pytest.raises(VideoLoadError, match="empty.mp4"):
        ds[4]
    with pytest.raises(ValueError, match="on_error"):
        VideoDataset(FolderSource(root, mixed), FrameSampler(4), keep_frames, on_error="ignore")


def test_all_bad_dataset_stops_with_a_clear_error(data, tmp_path):
    root, _, _, _ = data
    bad = tmp_path / "bad.txt"
    bad.write_text("".join(f"{p} 0\n" for p in BAD))
    ds = VideoDataset(FolderSource(root, bad), FrameSampler(4, train=True), keep_frames,
                      max_retries=3)
    with pytest.raises(VideoLoadError, match="claver data check"):
        ds[0]


def test_multi_label_lists_give_multi_hot_targets(data, tmp_path):
    root, _, _, _ = data
    lst = tmp_path / "multi.txt"
    lst.write_text(f"{GOOD[0]} 0 2\n{GOOD[1]} 1\n")
    ds = VideoDataset(FolderSource(root, lst, num_classes=3), FrameSampler(4), keep_frames,
                      num_classes=3)
    assert ds[0]["label"].tolist() == [1.0, 0.0, 1.0]
    assert ds[1]["label"].tolist() == [0.0, 1.0, 0.0]


def test_tar_source_gives_the_same_frames(data, tmp_path):
    root, _, good, _ = data
    tar_path = tmp_path / "videos.tar"
    with tarfile.open(tar_path, "w") as tar:
        for rel in GOOD:
            tar.add(root / rel, arcname=rel)
    folder = VideoDataset(FolderSource(root, good), FrameSampler(5), keep_frames, train=False)
    packed = VideoDataset(TarSource(tar_path, good), FrameSampler(5), keep_frames, train=False)
    for i in range(len(GOOD)):
        assert torch.equal(folder[i]["video"], packed[i]["video"])


def test_train_loader_with_workers_collects_failures(data):
    root, _, _, mixed = data
    ds = VideoDataset(FolderSource(root, mixed), FrameSampler(4, train=True),
                      build_train_transform(32, mean=(0,) * 3, std=(1,) * 3))
    loader = build_train_loader(ds, batch_size=4, num_workers=2, drop_last=False)
    seen, failures = 0, []
    for batch in loader:
        assert batch["video"].shape[1:] == (4, 3, 32, 32)
        seen += len(batch["index"])
        failures += batch["failures"]
    assert seen == len(ds)
    assert len(failures) >= len(BAD)  # each bad video fails at least when its own index is read


def test_eval_shards_cover_every_video_exactly_once():
    for length in (0, 1, 7, 8):
        for world in (1, 2, 3):
            got = [i for r in range(world) for i in EvalShardSampler(length, world, r)]
            assert sorted(got) == list(range(length))
            assert sum(len(EvalShardSampler(length, world, r)) for r in range(world)) == length
    with pytest.raises(ValueError, match="rank 2"):
        EvalShardSampler(5, 2, 2)


def test_eval_loader_has_no_drop_last(data):
    root, _, good, _ = data
    ds = VideoDataset(FolderSource(root, good), FrameSampler(4),
                      build_eval_transform(32, mean=(0,) * 3, std=(1,) * 3), train=False)
    loader = build_eval_loader(ds, batch_size=4, num_workers=0)
    assert [len(b["index"]) for b in loader] == [4, 2]


def test_data_check_cli_reports_bad_files(data, capsys):
    root, labels, good, mixed = data
    assert main(["data", "check", str(mixed), "--labels", str(labels), "--workers", "2"]) == 1
    out = capsys.readouterr().out
    assert f"videos listed {len(GOOD) + len(BAD)}, readable {len(GOOD)}, bad {len(BAD)}" in out
    for name in BAD:
        assert name in out
    assert "cls0" in out and "resolution: 64x48 (6)" in out
    assert main(["data", "check", str(good), "--labels", str(labels)]) == 0
    assert "bad 0" in capsys.readouterr().out


def test_data_check_cli_label_errors(data, tmp_path, capsys):
    root, labels, _, _ = data
    lst = tmp_path / "l.txt"
    lst.write_text(f"{GOOD[0]} 7\n")
    assert main(["data", "check", str(lst), "--labels", str(labels), "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert "l.txt" in err and "7" in err


def test_eval_report_adds_up_through_a_loader(data):
    root, _, _, mixed = data
    ds = VideoDataset(FolderSource(root, mixed), FrameSampler(4),
                      build_eval_transform(32, mean=(0,) * 3, std=(1,) * 3), train=False)
    report = LoadReport(len(ds))
    for batch in build_eval_loader(ds, batch_size=3, num_workers=2):
        report.update(batch)
    assert (report.listed, report.scored, len(report.failures)) == (11, 6, 5)
    text = report.summary()
    assert text.startswith("videos listed 11, scored 6, skipped 5")
    assert all(name in text for name in BAD)


def test_videos_shorter_than_the_clip_repeat_frames(tmp_path):
    make_video(tmp_path / "short.mp4", num_frames=3, size=(64, 48))
    lst = tmp_path / "l.txt"
    lst.write_text("short.mp4 0\n")
    ds = VideoDataset(FolderSource(tmp_path, lst), FrameSampler(8), keep_frames, train=False)
    assert frame_indices(ds[0]["video"]) == [0, 0, 0, 1, 1, 2, 2, 2]
