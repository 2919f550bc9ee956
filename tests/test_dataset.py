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


# ----------------------------------------------------------------------------- engine side:
# reduced-size decoding, decode limits and the loader timeout, as a run config sets them


def engine_config(root, labels, good, *opts):
    from claver.engine.config import load_config

    return load_config(None, [f"DATA.ROOT={root}", f"DATA.TRAIN_FILE={good}",
                              f"DATA.VAL_FILE={good}", f"DATA.LABEL_LIST={labels}",
                              "DATA.NUM_FRAMES=4", "DATA.INPUT_SIZE=32", *opts])


class RecordInput:
    """Wraps a transform and records the shape of every video handed to it."""

    def __init__(self, transform):
        self.transform, self.shapes = transform, []

    def __call__(self, video, generator=None):
        self.shapes.append(tuple(video.shape))
        return self.transform(video, generator)


@pytest.mark.parametrize("crops,clips", [(1, 1), (3, 2)])
def test_engine_datasets_decode_at_the_short_side_the_transform_resizes_to(data, crops, clips):
    from claver.data.transforms import short_side_size
    from claver.engine import data as engine_data

    root, labels, good, _ = data
    cfg = engine_config(root, labels, good, f"TEST.NUM_CROPS={crops}", f"TEST.NUM_CLIPS={clips}")
    # one view: short side 256 * S // 224 then a centre crop; three crops: short side S
    for ds, short in ((engine_data.train_dataset(cfg, 3), 256 * 32 // 224),
                      (engine_data.eval_dataset(cfg, 3), 256 * 32 // 224 if crops == 1 else 32)):
        assert ds.short_side == short == engine_data.decode_short_side(ds.transform)
        ds.transform = RecordInput(ds.transform)
        video = ds[0]["video"]
        assert ds.transform.shapes, "the transform was not called"
        for t, h, w, c in ds.transform.shapes:  # 64x48 videos decoded with that short side
            assert (t, min(h, w), c) == (4, short, 3)
            assert short_side_size(h, w, short) == (h, w)  # so the transform's resize is a no-op
        if not ds.train:
            assert video.shape == ((clips * crops, 4, 3, 32, 32) if clips * crops > 1
                                   else (4, 3, 32, 32))


def test_reduced_size_decoding_matches_resizing_after_decoding(data):
    """Decoding at the short side (swscale) gives what the transform's own resize gave."""
    from claver.engine import data as engine_data

    root, labels, good, _ = data
    cfg = engine_config(root, labels, good)
    reduced = engine_data.eval_dataset(cfg, 3)
    native = engine_data.eval_dataset(cfg, 3)
    native.short_side = None
    for i in range(len(GOOD)):
        a, b = reduced[i]["video"], native[i]["video"]
        assert a.shape == b.shape
        assert (a - b).abs().mean() < 0.05  # normalised units (std 0.23): ~3/255 on average


def test_decode_limits_reach_the_reader(data):
    from claver.data.video_source import DecodeLimits
    from claver.engine import data as engine_data

    root, labels, good, _ = data
    cfg = engine_config(root, labels, good, "DATA.MAX_PIXELS=1000", "DATA.DECODE_TIMEOUT=0",
                        "DATA.MAX_PACKETS=50", "DATA.ON_ERROR=raise")
    ds = engine_data.train_dataset(cfg, 3)
    assert ds.limits == DecodeLimits(max_pixels=1000, timeout=None, max_packets=50)
    with pytest.raises(VideoLoadError, match="1,000 pixels"):  # 64x48 frames are too large
        ds[0]
    defaults = engine_data.eval_dataset(engine_config(root, labels, good), 3)
    assert defaults.limits == DecodeLimits()  # config defaults are the reader's defaults


@pytest.mark.parametrize("key,value", [
    ("DATA.MAX_PIXELS", "0"), ("DATA.MAX_PACKETS", "-3"), ("DATA.DECODE_TIMEOUT", "-1"),
    ("DATA.LOADER_TIMEOUT", "-5"), ("DATA.LOADER_TIMEOUT", ".nan"),
    ("DATA.DECODE_TIMEOUT", ".inf"),
])
def test_limit_keys_are_validated(key, value):
    from claver.engine.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=rf"{key} must be a finite number >= \d .* e\.g\. {key}="):
        load_config(None, [f"{key}={value}"])


def test_loader_timeout_is_configured(data):
    from claver.data.dataset import loader_with_sampler
    from claver.engine import data as engine_data
    from claver.engine.config import ConfigError

    root, labels, good, _ = data
    cfg = engine_config(root, labels, good, "DATA.NUM_WORKERS=1", "DATA.LOADER_TIMEOUT=321")
    train, evals = engine_data.train_dataset(cfg, 3), engine_data.eval_dataset(cfg, 3)
    loader = engine_data.train_loader(cfg, train)
    assert loader.timeout == 321 and loader.timeout_setting == "DATA.LOADER_TIMEOUT"
    again = loader_with_sampler(loader, EvalShardSampler(len(train)))  # the engine's resume
    assert (again.timeout, again.timeout_setting, again.num_workers) == (
        321, "DATA.LOADER_TIMEOUT", 1)
    assert engine_data.eval_loader(cfg, evals).timeout == 321
    cfg.DATA.NUM_WORKERS = 0  # no workers: nothing to time out
    assert engine_data.train_loader(cfg, train).timeout == 0
    cfg.DATA.NUM_WORKERS, cfg.DATA.LOADER_TIMEOUT = 2, 60.0  # below DATA.DECODE_TIMEOUT (120)
    with pytest.raises(ConfigError, match="DATA.LOADER_TIMEOUT .* longer than DATA.DECODE_TIMEOUT"):
        engine_data.train_loader(cfg, train)


class Stuck(torch.utils.data.Dataset):
    """An item that takes far longer than the loader waits (a video that hangs the decoder)."""

    def __len__(self):
        return 1

    def __getitem__(self, index):
        import time

        time.sleep(2)
        return {"video": torch.zeros(1), "label": torch.tensor(0), "index": index,
                "valid": True, "failures": []}


def test_a_stuck_worker_is_reported_with_the_setting_to_raise():
    from claver.data.dataset import LoaderTimeoutError

    loader = build_eval_loader(Stuck(), batch_size=1, num_workers=1, timeout=0.5,
                               timeout_setting="DATA.LOADER_TIMEOUT")
    with pytest.raises(LoaderTimeoutError, match=r"within 0\.5 s \(DATA.LOADER_TIMEOUT\).*"
                                                 r"claver data check.*raise DATA.LOADER_TIMEOUT"):
        next(iter(loader))
