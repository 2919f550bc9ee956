"""The synthetic motion dataset: videos, motion geometry, label-swapping augmentation, caching."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

import claver
from claver import synthetic as sy
from claver.data.sources import read_labels, read_video_list

SMALL = dict(train_per_class=2, val_per_class=1, zero_shot_per_class=1, frames=8, size=32)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic") / "motion"
    return sy.make_motion_dataset(root, seed=3, workers=2, log=None, **SMALL)


# --------------------------------------------------------------------------- measurements


def centroid(weights: np.ndarray) -> np.ndarray:
    """(T, H, W) weights -> (T, 2) x, y centroids (pixel centres at +0.5)."""
    h, w = weights.shape[-2:]
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    total = weights.sum((-2, -1))
    return np.stack([(weights * xs).sum((-2, -1)) / total,
                     (weights * ys).sum((-2, -1)) / total], -1)


def orientation_turns(mask: np.ndarray, order: int) -> np.ndarray:
    """Per-step rotation (radians, image coordinates: > 0 is clockwise on screen) from the
    ``order``-fold angular moment of a (T, H, W) mask."""
    c = centroid(mask)
    h, w = mask.shape[-2:]
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    z = (xs[None] - c[:, 0, None, None]) + 1j * (ys[None] - c[:, 1, None, None])
    moment = (mask * z**order).sum((-2, -1))
    step = np.angle(moment[1:] / moment[:-1])  # wrapped to (-pi, pi]
    return step / order


def moving_centroid(frames: np.ndarray) -> np.ndarray:
    """Centroid of what moves in decoded frames (T, H, W, 3): the difference from the
    per-pixel temporal median (background and static distractors) above a threshold."""
    f = frames.astype(np.float64)
    diff = np.abs(f - np.median(f, axis=0)).sum(-1)
    return centroid(np.where(diff > 60, diff, 0.0))


def check_motion(motion: str, shape: str, mask: np.ndarray) -> None:
    c, area = centroid(mask), mask.sum((-2, -1))
    dx, dy = np.diff(c[:, 0]), np.diff(c[:, 1])
    if motion in ("left", "right"):
        sign = 1 if motion == "right" else -1
        assert (sign * dx > 1.5).all(), (motion, dx)  # fast: ~3-4 px per frame at 32 px
        assert np.abs(dy).max() < 0.5
    elif motion in ("up", "down"):
        sign = 1 if motion == "down" else -1  # image y grows downwards
        assert (sign * dy > 1.5).all(), (motion, dy)
        assert np.abs(dx).max() < 0.5
    elif motion in ("grow", "shrink"):
        sign = 1 if motion == "grow" else -1
        assert (sign * np.diff(area) > 0).all(), (motion, area)
        assert area.max() > 4 * area.min()
    else:
        turns = orientation_turns(mask, {"square": 4, "triangle": 3}[shape])
        sign = 1 if motion == "cw" else -1
        assert (sign * np.degrees(turns) > 15).all(), (motion, np.degrees(turns))
        assert np.abs(dx).max() < 0.5 and np.abs(dy).max() < 0.5  # in place


# --------------------------------------------------------------------------- drawing


ROTATIONS = [sy.MotionClass(s, m) for s in ("square", "triangle") for m in ("cw", "ccw")]


@pytest.mark.parametrize("cls", [*sy.DEFAULT_CLASSES, *sy.DEFAULT_ZERO_SHOT, *ROTATIONS],
                         ids=lambda c: f"{c.shape}-{c.motion}")
def test_motion_is_what_the_label_says(cls):
    for seed in range(3):
        clip = sy.render_clip(cls, np.random.default_rng(seed), frames=8, size=32)
        assert clip.frames.shape == (8, 32, 32, 3) and clip.frames.dtype == np.uint8
        check_motion(cls.motion, cls.shape, clip.mask)


def test_clean_render_has_the_shape_where_the_mask_is():
    clip = sy.render_clip(("triangle", "left"), np.random.default_rng(0), clutter=False)
    bright = clip.frames.astype(float).mean(-1) > 200
    assert ((clip.mask > 0.5) == bright).mean() > 0.99


def test_partners_are_time_reversals_in_distribution():
    """Order-blind statistics (mean position, mean size) match between partners."""
    def stats(cls):
        xs, rs = [], []
        for seed in range(300):
            clip = sy.render_clip(cls, np.random.default_rng(seed), clutter=False)
            xs.append(clip.cx.mean())
            rs.append(clip.radius.mean())
        return np.mean(xs), np.mean(rs)

    for a, b in (("left", "right"), ("grow", "shrink")):
        (xa, ra), (xb, rb) = stats(("disc", a)), stats(("disc", b))
        assert abs(xa - xb) < 0.5 and abs(ra - rb) < 0.3


def test_class_names_and_text_rows():
    c = sy.MotionClass("square", "ccw")
    assert c.name == "square rotating anticlockwise"
    assert sy.motion_class(c.name) == c == sy.motion_class("square-ccw")
    rows = sy.text_rows(sy.DEFAULT_CLASSES)
    assert len(rows) == len(sy.TEMPLATES) + 2 and all(len(r) == 12 for r in rows)
    tokens = claver.tokenize([t for r in rows for t in r])  # every row fits 77 tokens
    assert tokens.shape == (len(rows) * 12, 77)
    with pytest.raises(ValueError, match="invisible"):
        sy.MotionClass("disc", "cw")


# --------------------------------------------------------------------------- augmentation


def stacked(cls, seed=0):
    """Frames and mask of a clean clip as one (T, 4, H, W) array (mask as channel 3)."""
    clip = sy.render_clip(cls, np.random.default_rng(seed), clutter=False)
    return np.concatenate([clip.frames.transpose(0, 3, 1, 2),
                           (clip.mask * 255)[:, None]], axis=1)


class FixedRng:
    """An rng whose ``random()`` returns queued values (0.0 applies an op, 0.9 skips it)."""

    def __init__(self, *values: float) -> None:
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)


@pytest.mark.parametrize("ops, source, target", [
    ((0.0, 0.9, 0.9), "left", "right"),  # hflip
    ((0.0, 0.9, 0.9), "up", "up"),
    ((0.9, 0.0, 0.9), "up", "down"),  # vflip
    ((0.9, 0.0, 0.9), "right", "right"),
    ((0.9, 0.9, 0.0), "left", "right"),  # time reversal
    ((0.9, 0.9, 0.0), "grow", "shrink"),
    ((0.0, 0.9, 0.9), "cw", "ccw"),
    ((0.9, 0.0, 0.9), "ccw", "cw"),
    ((0.9, 0.9, 0.0), "cw", "ccw"),
    ((0.0, 0.0, 0.9), "cw", "cw"),  # two mirrors: a half turn
    ((0.0, 0.9, 0.0), "down", "up"),
])
def test_augment_swaps_labels_to_match_the_motion(ops, source, target):
    classes = [sy.MotionClass("square", m) for m in sy.MOTIONS]
    label = sy.MOTIONS.index(source)
    video, new = sy.augment(stacked(classes[label]), label, FixedRng(*ops), classes=classes)
    assert sy.MOTIONS[new] == target
    check_motion(target, "square", np.ascontiguousarray(video[:, 3]) / 255)


def test_augment_batch_matches_labels_and_keeps_splits_closed():
    for pairs in (sy.HFLIP_PAIRS, sy.VFLIP_PAIRS, sy.REVERSE_PAIRS):
        for split in (sy.DEFAULT_CLASSES, sy.DEFAULT_ZERO_SHOT):
            table = sy.swap_table(split, pairs)
            assert sorted(table) == list(range(len(split)))  # a permutation of the split
    classes = [sy.MotionClass("triangle", m) for m in ("left", "right", "grow", "shrink")]
    videos = torch.from_numpy(np.stack([stacked(c, seed=i) for i, c in enumerate(classes)]))
    videos = videos.repeat(4, 1, 1, 1, 1)
    labels = torch.arange(4).repeat(4)
    out, new = sy.augment_batch(videos, labels, torch.Generator().manual_seed(0),
                                classes=classes)
    assert (new != labels).any() and (new == labels).any()
    for v, y in zip(out.numpy(), new.tolist(), strict=True):
        check_motion(classes[y].motion, "triangle", v[:, 3] / 255)
    with pytest.raises(ValueError, match="not one of the classes"):
        sy.swap_table([sy.MotionClass("square", "left")], sy.HFLIP_PAIRS)


def test_pair_accuracy():
    classes = sy.DEFAULT_CLASSES[:4]  # square left/right, square grow/shrink
    probs = np.array([[0.6, 0.4, 0, 0], [0.6, 0.4, 0, 0], [0, 0, 0.1, 0.9], [0, 0, 0.1, 0.9]])
    acc = sy.pair_accuracy(probs, np.array([0, 1, 2, 3]), classes)
    assert acc == {"square moving left / moving right": 0.5, "square growing / shrinking": 0.5}
    assert sy.direction_pairs(sy.DEFAULT_CLASSES) == [(i, i + 1) for i in range(0, 12, 2)]


# --------------------------------------------------------------------------- the dataset


def test_dataset_files_lists_and_videos(dataset):
    root = dataset["root"]
    names = read_labels(dataset["labels"])
    zs_names = read_labels(dataset["zero_shot_labels"])
    assert names == [c.name for c in sy.DEFAULT_CLASSES]
    assert zs_names == [c.name for c in sy.DEFAULT_ZERO_SHOT]
    counts = {"train": 2 * 12, "val": 12, "zero_shot": 6}
    for split, n in counts.items():
        entries = read_video_list(dataset[split], num_classes=len(
            zs_names if split == "zero_shot" else names))
        assert len(entries) == n
        assert all((root / e.path).is_file() for e in entries)
    descriptions = json.loads(dataset["descriptions"].read_text())
    assert set(descriptions) == set(names) | set(zs_names)
    info = claver.probe_video(root / read_video_list(dataset["val"])[0].path)
    assert (info.num_frames, info.width, info.height, info.codec) == (8, 32, 32, "h264")


def test_decoded_videos_move_as_labelled(dataset):
    root = dataset["root"]
    names = read_labels(dataset["labels"])
    checked = 0
    for e in read_video_list(dataset["train"]):
        cls = sy.motion_class(names[e.label])
        frames = claver.read_video(root / e.path).numpy()
        assert frames.shape == (8, 32, 32, 3)
        if cls.axis in ("horizontal", "vertical"):
            c = moving_centroid(frames)
            along = c[:, 0] if cls.axis == "horizontal" else c[:, 1]
            sign = 1 if cls.motion in ("right", "down") else -1
            assert sign * (along[-1] - along[0]) > 12, (e.path, along)
            checked += 1
    assert checked == 16  # 4 translation pairs x 2 videos


def test_videos_match_the_renderer(dataset):
    """A file is its rendered clip (same seed key) up to h264 loss."""
    e = read_video_list(dataset["train"])[5]
    cls = sy.DEFAULT_CLASSES[e.label]
    key = [3, 0, sy.SHAPES.index(cls.shape), sy.MOTIONS.index(cls.motion), 1]
    clip = sy.render_clip(cls, np.random.default_rng(key))
    frames = claver.read_video(dataset["root"] / e.path).numpy().astype(float)
    psnr = 10 * np.log10(255**2 / ((frames - clip.frames) ** 2).mean())
    assert psnr > 30


def test_zero_shot_split_is_unseen_but_its_words_are_seen(dataset):
    train = {sy.motion_class(n) for n in read_labels(dataset["labels"])}
    zero = {sy.motion_class(n) for n in read_labels(dataset["zero_shot_labels"])}
    assert not train & zero
    assert {c.shape for c in zero} <= {c.shape for c in train}
    assert {c.motion for c in zero} <= {c.motion for c in train}
    assert {c.axis for c in zero} <= {c.axis for c in train}
    with pytest.raises(ValueError, match="also in training"):
        sy.make_motion_dataset(dataset["root"].parent / "bad", zero_shot_classes=[
            sy.DEFAULT_CLASSES[0]], log=None, **SMALL)


def test_deterministic_for_a_seed_whatever_the_workers(dataset, tmp_path):
    again = sy.make_motion_dataset(tmp_path / "again", seed=3, workers=1, log=None, **SMALL)
    other = sy.make_motion_dataset(tmp_path / "other", seed=4, workers=1, log=None, **SMALL)
    for split in sy.SPLITS:
        assert again[split].read_text() == dataset[split].read_text()
        for e in read_video_list(dataset[split])[:6]:
            data = (dataset["root"] / e.path).read_bytes()
            assert (again["root"] / e.path).read_bytes() == data
            assert (other["root"] / e.path).read_bytes() != data


def test_cache_hit_and_invalidation(tmp_path):
    root = tmp_path / "motion"
    logs: list[str] = []
    paths = sy.make_motion_dataset(root, seed=1, workers=1, log=logs.append, **SMALL)
    video = next((root / "videos" / "val").iterdir())
    stamp = video.stat().st_mtime_ns
    assert sy.make_motion_dataset(root, seed=1, workers=1, log=logs.append, **SMALL) == paths
    assert "cached" in logs[-1] and video.stat().st_mtime_ns == stamp
    # an interrupted dataset (here: a deleted video) is regenerated...
    video.unlink()
    sy.make_motion_dataset(root, seed=1, workers=1, log=logs.append, **SMALL)
    assert "cached" not in logs[-1] and video.is_file()
    # ...and so is one made with other parameters; nothing is left beside it
    sy.make_motion_dataset(root, seed=2, workers=1, log=None, **SMALL)
    manifest = json.loads((root / sy.MANIFEST).read_text())
    assert manifest["params"]["seed"] == 2
    assert sorted(os.listdir(tmp_path)) == ["motion"]


def test_never_leaves_a_half_dataset(tmp_path, monkeypatch):
    root = tmp_path / "motion"
    calls = {"n": 0}
    original = sy.write_mp4

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(sy, "write_mp4", failing)
    with pytest.raises(KeyboardInterrupt):
        sy.make_motion_dataset(root, seed=1, workers=1, log=None, **SMALL)
    assert os.listdir(tmp_path) == []  # no dataset, no partial folder
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        sy.make_motion_dataset(tmp_path / "mine", workers=1, log=None, **SMALL)
    assert (tmp_path / "mine" / "notes.txt").is_file()


def test_load_split_into_memory(dataset):
    videos, labels = sy.load_split(dataset, "val", workers=1)
    assert videos.shape == (12, 8, 3, 32, 32) and videos.dtype == torch.uint8
    assert labels.tolist() == list(range(12))
    small, _ = sy.load_split(dataset, "zero_shot", num_frames=4, size=16, workers=2)
    assert small.shape == (6, 4, 3, 16, 16)
