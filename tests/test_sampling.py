"""Frame-index samplers: every branch against numbers derived by hand."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from claver.data.sampling import FrameSampler, clip_indices, multiview_indices, segment_indices


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def assert_int64(a: np.ndarray, expected: list | np.ndarray) -> None:
    assert a.dtype == np.int64
    np.testing.assert_array_equal(a, np.asarray(expected))


# --------------------------------------------------------------------------- segments

def test_segment_test_centres():
    # n=10, T=4: segment length 2.5, centres 1.25, 3.75, 6.25, 8.75 -> int
    assert_int64(segment_indices(10, 4, train=False), [1, 3, 6, 8])
    # n=8, T=8: one frame per segment, centre int(i + .5) = i
    assert_int64(segment_indices(8, 8, train=False), list(range(8)))
    # n=300, T=8: seg 37.5, centres 18.75 + 37.5 i
    assert_int64(segment_indices(300, 8, train=False), [18, 56, 93, 131, 168, 206, 243, 281])


def test_segment_test_matches_exact_formula():
    # int(seg * i + seg / 2) in exact rational arithmetic; the float expression is off by one
    # where the centre is an integer, e.g. n=6, T=7, i=3: 6/7 * 3.5 = 3 but floats give 2.999..
    for n in range(1, 200):
        for t in (1, 3, 7, 8, 16):
            seg = Fraction(n, t)
            expected = [math.floor(seg * i + seg / 2) for i in range(t)]
            assert_int64(segment_indices(n, t, train=False), expected)
    assert int(6 / 7 * 3 + 6 / 7 / 2) == 2 and segment_indices(6, 7, train=False)[3] == 3


def test_segment_short_video_repeats_frames():
    # n=3, T=5: seg 0.6, centres 0.3, 0.9, 1.5, 2.1, 2.7
    assert_int64(segment_indices(3, 5, train=False), [0, 0, 1, 2, 2])
    # keep_tail train: boundaries 0, .6, 1.2, 1.8, 2.4, 3 -> segments hold {0}, {1}, {}, {2},
    # {}; the empty ones take the frame their start falls in: 1 and 2
    for seed in range(5):
        assert_int64(segment_indices(3, 5, train=True, rng=rng(seed), keep_tail=True),
                     [0, 1, 1, 2, 2])
    assert_int64(segment_indices(1, 4, train=True, rng=rng(), keep_tail=True), [0, 0, 0, 0])
    # official (mmaction2) train: round(k * 3 / 5) = round(0, .6, 1.2, 1.8, 2.4)
    assert_int64(segment_indices(3, 5, train=True, rng=rng()), [0, 1, 1, 2, 2])


def test_segment_train_membership_and_determinism():
    # n=10, T=4: segments [0,2.5) [2.5,5) [5,7.5) [7.5,10) -> {0,1,2} {3,4} {5,6,7} {8,9}
    allowed = [{0, 1, 2}, {3, 4}, {5, 6, 7}, {8, 9}]
    seen = [set() for _ in allowed]
    for seed in range(200):
        a = segment_indices(10, 4, train=True, rng=rng(seed), keep_tail=True)
        assert a.dtype == np.int64 and a.shape == (4,)
        for i, v in enumerate(a.tolist()):
            assert v in allowed[i]
            seen[i].add(v)
        np.testing.assert_array_equal(
            a, segment_indices(10, 4, train=True, rng=rng(seed), keep_tail=True))
    assert seen == allowed  # every frame of every segment gets drawn


def test_segment_train_non_decreasing_everywhere():
    g = rng(1)
    for n in range(1, 60):
        for t in (1, 2, 5, 8, 13):
            for keep_tail in (True, False):
                a = segment_indices(n, t, train=True, rng=g, keep_tail=keep_tail)
                assert a.shape == (t,) and a.min() >= 0 and a.max() < n
                if keep_tail or t < 2 * n:  # the official rule wraps round(k n / T) = n to 0
                    assert np.all(np.diff(a) >= 0)


def test_segment_errors():
    with pytest.raises(ValueError, match="n=0"):
        segment_indices(0, 8, train=False)
    with pytest.raises(ValueError, match="n=-3"):
        segment_indices(-3, 8, train=True)
    with pytest.raises(ValueError, match="num_segments"):
        segment_indices(10, 0, train=False)


# --------------------------------------------------------------------------- clips, train

def test_clip_train_branch_stride_offsets():
    # n=30, clip_len=4, interval=2 -> L=8; avg = (30-8+1)//3 = 7: offsets 7k + U{0..6}
    starts = [set() for _ in range(3)]
    for seed in range(300):
        a = clip_indices(30, 4, 2, 3, train=True, rng=rng(seed)).reshape(3, 4)
        np.testing.assert_array_equal(a - a[:, :1], np.tile([0, 2, 4, 6], (3, 1)))
        for k in range(3):
            starts[k].add(int(a[k, 0]))
        np.testing.assert_array_equal(
            a.reshape(-1), clip_indices(30, 4, 2, 3, train=True, rng=rng(seed)))
    assert starts == [set(range(7 * k, 7 * k + 7)) for k in range(3)]


def test_clip_train_branch_sorted_random():
    # n=10, L=8, 4 clips: avg = 3//4 = 0 and n > max(4, 8): 4 sorted draws of U{0..2}
    seen = set()
    for seed in range(100):
        a = clip_indices(10, 4, 2, 4, train=True, rng=rng(seed)).reshape(4, 4)
        offsets = a[:, 0]
        assert np.all(np.diff(offsets) >= 0) and offsets.min() >= 0 and offsets.max() <= 2
        np.testing.assert_array_equal(a - offsets[:, None], np.tile([0, 2, 4, 6], (4, 1)))
        seen |= set(offsets.tolist())
    assert seen == {0, 1, 2}


def test_clip_train_branch_ratio():
    # n=8, L=8, 3 clips: avg = 1//3 = 0, n > max(3, 8) is false -> ratio 1/3,
    # offsets round(0, 1/3, 2/3) = 0, 0, 1 (no randomness)
    expected = [0, 2, 4, 6, 0, 2, 4, 6, 1, 3, 5, 7]
    for seed in range(3):
        assert_int64(clip_indices(8, 4, 2, 3, train=True, rng=rng(seed)), expected)
    # n=7, L=8, 1 clip: avg = 0//1 = 0 -> ratio 0 -> offset 0; 0 2 4 6 all in range
    assert_int64(clip_indices(7, 4, 2, 1, train=True, rng=rng()), [0, 2, 4, 6])


def test_clip_train_branch_zeros_and_out_of_bound():
    # n=5, L=8: avg = -2 -> zeros; frames 0 2 4 6 -> loop: 6 % 5 = 1; repeat_last: 4
    assert_int64(clip_indices(5, 4, 2, 1, train=True, rng=rng()), [0, 2, 4, 1])
    assert_int64(clip_indices(5, 4, 2, 1, train=True, rng=rng(), out_of_bound="repeat_last"),
                 [0, 2, 4, 4])
    # n=8, clip_len=4, interval=3 (L=12), 2 clips: avg = -3//2 = -2 -> zeros; 0 3 6 9
    assert_int64(clip_indices(8, 4, 3, 2, train=True, rng=rng(), out_of_bound="repeat_last"),
                 [0, 3, 6, 6, 0, 3, 6, 6])
    assert_int64(clip_indices(8, 4, 3, 2, train=True, rng=rng()), [0, 3, 6, 1, 0, 3, 6, 1])


# --------------------------------------------------------------------------- clips, test

def test_clip_test_evenly_spaced():
    # n=30, L=8, 3 clips: avg = 23/3 = 7.667; offsets int(3.83), int(11.5), int(19.17)
    assert_int64(clip_indices(30, 4, 2, 3, train=False, test_rule="0.x"),
                 [3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25])
    # twice_sample appends the stride starts int(0), int(7.67), int(15.33) = 0, 7, 15
    assert_int64(clip_indices(30, 4, 2, 3, train=False, twice_sample=True, test_rule="0.x"),
                 [3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25,
                  0, 2, 4, 6, 7, 9, 11, 13, 15, 17, 19, 21])
    # n=100, clip_len=8, interval 1, 1 clip: avg = 93 -> offset int(46.5) = 46
    assert_int64(clip_indices(100, 8, train=False, test_rule="0.x"), list(range(46, 54)))


def test_clip_test_short_video():
    # n=8, L=8: n > 7 -> avg = 1, offset int(0.5) = 0
    assert_int64(clip_indices(8, 4, 2, 1, train=False, test_rule="0.x"), [0, 2, 4, 6])
    # n=3, clip_len=4: n > 3 false -> zeros; 0 1 2 3 -> loop 0 1 2 0 / repeat 0 1 2 2
    old = {"test_rule": "0.x"}
    assert_int64(clip_indices(3, 4, 1, 2, train=False, **old), [0, 1, 2, 0, 0, 1, 2, 0])
    assert_int64(clip_indices(3, 4, 1, 1, train=False, out_of_bound="repeat_last", **old),
                 [0, 1, 2, 2])
    assert_int64(clip_indices(3, 4, 1, 1, train=False, twice_sample=True, **old),
                 [0, 1, 2, 0] * 2)


def test_clip_errors():
    with pytest.raises(ValueError, match="n=0"):
        clip_indices(0, 4, train=False)
    with pytest.raises(ValueError, match="out_of_bound"):
        clip_indices(10, 4, train=False, out_of_bound="wrap")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="frame_interval"):
        clip_indices(10, 4, 0, train=False)
    with pytest.raises(ValueError, match="twice_sample"):
        clip_indices(10, 4, train=True, twice_sample=True)


# --------------------------------------------------------------------------- multi-view

def test_multiview_segment_hand_values():
    # n=16, T=4, 2 views: segment 4 frames; view 0 at 1/4 -> 1 5 9 13, view 1 at 3/4 -> 3 7 11 15
    assert_int64(multiview_indices(16, 4, 2), [[1, 5, 9, 13], [3, 7, 11, 15]])
    # n=40, T=2, 4 views: segment 20, fractions 1/8 3/8 5/8 7/8 -> 2.5 7.5 12.5 17.5
    assert_int64(multiview_indices(40, 2, 4), [[2, 22], [7, 27], [12, 32], [17, 37]])


def test_multiview_single_view_is_segment_centre_and_deterministic():
    for n in (1, 5, 17, 250):
        np.testing.assert_array_equal(multiview_indices(n, 8, 1)[0],
                                      segment_indices(n, 8, train=False))
        np.testing.assert_array_equal(multiview_indices(n, 8, 4), multiview_indices(n, 8, 4))


def test_multiview_segment_evenness():
    # n=64, T=8, N=4: segments of 8 frames, view k at 8 (i + (k + .5) / 4) = 8 i + 2 k + 1
    n, t, views = 4 * 8 * 2, 8, 4
    a = multiview_indices(n, t, views)
    assert a.shape == (views, t)
    assert_int64(a[:, 0], [1, 3, 5, 7])
    np.testing.assert_array_equal(np.diff(a, axis=0), np.full((views - 1, t), n // (t * views)))
    np.testing.assert_array_equal(np.diff(a, axis=1), np.full((views, t - 1), n // t))
    flat = np.sort(a.reshape(-1))
    assert np.all(np.diff(flat) == n // (t * views))  # views interleave evenly


def test_multiview_clip_mode():
    # clip mode = clip_indices test offsets: n=30, T=4, interval 2, 3 views (see above)
    assert_int64(multiview_indices(30, 4, 3, mode="clip", frame_interval=2, test_rule="0.x"),
                 [[3, 5, 7, 9], [11, 13, 15, 17], [19, 21, 23, 25]])
    assert_int64(multiview_indices(30, 4, 3, mode="clip", clip_len=4, frame_interval=2,
                                   test_rule="0.x"),
                 [[3, 5, 7, 9], [11, 13, 15, 17], [19, 21, 23, 25]])
    with pytest.raises(ValueError, match="clip_len"):
        multiview_indices(30, 4, 3, mode="clip", clip_len=5)
    with pytest.raises(ValueError, match="frame_interval"):
        multiview_indices(30, 4, 3, mode="segment", frame_interval=2)
    with pytest.raises(ValueError, match="mode"):
        multiview_indices(30, 4, 3, mode="random")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- FrameSampler

def test_frame_sampler_shapes_and_modes():
    assert_int64(FrameSampler(4)(10), [1, 3, 6, 8])
    assert FrameSampler(8, train=True)(100, rng(0)).shape == (8,)
    np.testing.assert_array_equal(FrameSampler(8, train=True)(100, rng(3)),
                                  segment_indices(100, 8, train=True, rng=rng(3)))
    views = FrameSampler(4, num_clips=2)(16)
    assert_int64(views, [[1, 5, 9, 13], [3, 7, 11, 15]])
    assert_int64(FrameSampler(4, mode="clip", frame_interval=2)(30), [11, 13, 15, 17])
    assert_int64(FrameSampler(4, mode="clip", frame_interval=2, num_clips=3,
                              test_rule="0.x")(30),
                 [[3, 5, 7, 9], [11, 13, 15, 17], [19, 21, 23, 25]])
    # mmaction2 1.x: span 7, max offset 23, starts round(0, 11.5, 23) = 0, 12, 23
    assert_int64(FrameSampler(4, mode="clip", frame_interval=2, num_clips=3)(30),
                 [[0, 2, 4, 6], [12, 14, 16, 18], [23, 25, 27, 29]])
    clip = FrameSampler(4, mode="clip", frame_interval=2, train=True)(30, rng(0))
    assert clip.shape == (4,) and np.all(np.diff(clip) == 2) and 0 <= clip[0] <= 22
    assert FrameSampler(8, num_clips=4).views == 4


def test_frame_sampler_is_frozen_and_validates():
    s = FrameSampler(8)
    with pytest.raises(AttributeError):
        s.num_frames = 4  # type: ignore[misc]
    for kwargs, match in [
        ({"num_frames": 0}, "num_frames"),
        ({"num_frames": 8, "mode": "tsn"}, "mode"),
        ({"num_frames": 8, "frame_interval": 2}, "frame_interval"),
        ({"num_frames": 8, "num_clips": 0}, "num_clips"),
        ({"num_frames": 8, "num_clips": 4, "train": True}, "num_clips"),
        ({"num_frames": 8, "mode": "clip", "out_of_bound": "x"}, "out_of_bound"),
        ({"num_frames": 8, "test_rule": "2.x"}, "test_rule"),
    ]:
        with pytest.raises(ValueError, match=match):
            FrameSampler(**kwargs)
    with pytest.raises(ValueError, match="n=0"):
        s(0)
