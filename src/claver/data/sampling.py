"""Frame-index samplers: pure functions of (frames in the video, rng).

Nothing here reads a file. Every function returns ``int64`` numpy arrays of frame indices
into ``[0, n)`` that a decoder can fetch; the dataset decides what ``n`` is.

Two families:

- **TSN segment sampling** (:func:`segment_indices`), used by CLAVER / X-CLIP / ActionCLIP:
  split the video into ``T`` segments and take one frame per segment (random in training,
  the centre at test time). Training follows the official code by default (mmaction2
  ``SampleFrames(clip_len=1, num_clips=T)``: integer segments of ``n // T`` frames, so the
  last ``n mod T`` frames are never drawn); ``keep_tail=True`` spreads the segments over the
  whole video instead.
- **Clip sampling** (:func:`clip_indices`), the mmaction2 ``SampleFrames`` rules: ``num_clips``
  clips of ``clip_len`` frames taken every ``frame_interval`` frames; test clips follow
  mmaction2 1.x by default (``test_rule="1.x"``) or 0.x (``"0.x"``).

:func:`multiview_indices` places ``N`` temporal views *deterministically and evenly* (the
reference code sampled test clips at random; we do not). :class:`FrameSampler` bundles the
choices in one frozen object a dataset can hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "FrameSampler",
    "clip_indices",
    "multiview_indices",
    "segment_indices",
]

OutOfBound = Literal["loop", "repeat_last"]
SamplingMode = Literal["segment", "clip"]
TestRule = Literal["1.x", "0.x"]
_OUT_OF_BOUND = ("loop", "repeat_last")
_MODES = ("segment", "clip")
TEST_RULES = ("1.x", "0.x")


def _check_n(n: int) -> int:
    if isinstance(n, bool) or int(n) != n:
        raise ValueError(f"the number of frames must be an integer, got n={n!r}")
    n = int(n)
    if n <= 0:
        raise ValueError(f"cannot sample frames from a video with n={n} frames (need n >= 1)")
    return n


def _check_positive(name: str, value: int) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {name}={value!r}")
    return int(value)


def segment_indices(
    n: int,
    num_segments: int,
    *,
    train: bool,
    rng: np.random.Generator | None = None,
    keep_tail: bool = False,
) -> np.ndarray:
    """TSN segment sampling: one frame from each of ``T = num_segments`` segments.

    - test (``train=False``): the centre of the real segment ``[i n / T, (i + 1) n / T)``,
      ``int(n / T * i + n / (2 T))``, computed in exact integer arithmetic as
      ``((2 i + 1) * n) // (2 T)`` (mmaction2 ``SampleFrames(1, 1, T, test_mode=True)``).
    - train, ``keep_tail=False`` (the official CLAVER / X-CLIP / TSN rule, mmaction2
      ``SampleFrames(clip_len=1, frame_interval=1, num_clips=T)``): with ``avg = n // T``,
      ``n >= T`` gives ``i * avg + U{0, avg - 1}`` (the last ``n - T * avg`` frames are never
      drawn); ``n < T`` gives ``round(i * n / T) mod n`` (numpy's round-half-to-even, no
      randomness; the ``mod`` is mmaction2's default ``"loop"`` for an index that rounds
      up to ``n``, e.g. ``n=2, T=4 -> 0 0 1 0``).
    - train, ``keep_tail=True``: a frame drawn uniformly among the integer frames ``f`` inside
      the real segment ``i`` (``i * n / T <= f < (i + 1) * n / T``), so the whole video is
      covered. When ``n < T`` a segment may hold no integer frame; it then takes
      ``floor(i * n / T)``, the frame its start falls in.

    Frames repeat when ``n < T``; the result is inside ``[0, n)`` and non-decreasing except
    for the official rule's wrapped index when ``T >= 2 n``.

    Args:
        n: frames in the video (>= 1).
        num_segments: ``T``, the number of frames to return.
        train: random (True) or centre (False) frame per segment.
        rng: numpy generator for the training draw (a fresh unseeded one when ``None``).
        keep_tail: training only; cover the whole video instead of ``T * (n // T)`` frames.

    Returns:
        int64 array of shape ``(T,)``.
    """
    n = _check_n(n)
    t = _check_positive("num_segments", num_segments)
    i = np.arange(t, dtype=np.int64)
    if not train:
        return ((2 * i + 1) * n) // (2 * t)
    if rng is None:
        rng = np.random.default_rng()
    if not keep_tail:  # mmaction2 loops an index past the end (out_of_bound_opt='loop')
        return np.mod(_train_clip_offsets(n, 1, t, rng), n).astype(np.int64)
    lo = -((-i * n) // t)  # ceil(i * n / T): first integer frame in segment i
    hi = -((-(i + 1) * n) // t)  # ceil((i + 1) * n / T): one past the last
    count = hi - lo
    draw = rng.integers(0, np.maximum(count, 1), dtype=np.int64)
    return np.where(count > 0, lo + draw, (i * n) // t).astype(np.int64)


def _train_clip_offsets(
    n: int, ori_clip_len: int, num_clips: int, rng: np.random.Generator
) -> np.ndarray:
    avg_interval = (n - ori_clip_len + 1) // num_clips
    if avg_interval > 0:
        base = np.arange(num_clips, dtype=np.int64) * avg_interval
        return base + rng.integers(0, avg_interval, size=num_clips, dtype=np.int64)
    if n > max(num_clips, ori_clip_len):
        return np.sort(rng.integers(0, n - ori_clip_len + 1, size=num_clips, dtype=np.int64))
    if avg_interval == 0:
        ratio = (n - ori_clip_len + 1.0) / num_clips
        return np.around(np.arange(num_clips) * ratio).astype(np.int64)
    return np.zeros(num_clips, dtype=np.int64)


def _test_clip_offsets_1x(n: int, clip_len: int, frame_interval: int, num_clips: int,
                          twice_sample: bool) -> np.ndarray:
    """mmaction2 1.x ``SampleFrames._get_test_clips`` (without ``target_fps``)."""
    if clip_len == 1:  # 2D recognisers: segment centres of n / num_clips
        avg = n / float(num_clips)
        base = np.arange(num_clips) * avg
        offsets = base + avg / 2.0
        if twice_sample:
            offsets = np.concatenate([offsets, base])
        return offsets.astype(np.int64)
    if twice_sample:
        raise ValueError("twice_sample with clip_len > 1 divides by zero or runs past the end "
                         "in mmaction2 1.x; use test_rule='0.x' for it")
    max_offset = max(n - ((clip_len - 1) * frame_interval + 1), 0)
    if num_clips == 1:
        return np.array([max_offset // 2], dtype=np.int64)
    step = max_offset / float(num_clips - 1)  # PySlowFast: first clip at 0, last at the end
    return np.round(np.arange(num_clips) * step).astype(np.int64)


def _test_clip_offsets(n: int, ori_clip_len: int, num_clips: int, twice_sample: bool) -> np.ndarray:
    """mmaction2 0.x ``SampleFrames._get_test_clips``."""
    avg_interval = (n - ori_clip_len + 1) / float(num_clips)
    if n > ori_clip_len - 1:
        base = np.arange(num_clips) * avg_interval
        offsets = (base + avg_interval / 2.0).astype(np.int64)
        if twice_sample:
            offsets = np.concatenate([offsets, base.astype(np.int64)])
        return offsets
    return np.zeros(num_clips * (2 if twice_sample else 1), dtype=np.int64)


def clip_indices(
    n: int,
    clip_len: int,
    frame_interval: int = 1,
    num_clips: int = 1,
    *,
    train: bool,
    rng: np.random.Generator | None = None,
    out_of_bound: OutOfBound = "loop",
    twice_sample: bool = False,
    test_rule: TestRule = "1.x",
) -> np.ndarray:
    """mmaction2 ``SampleFrames``: ``num_clips`` clips of ``clip_len`` frames, strided.

    Let ``L = clip_len * frame_interval`` (the span of one clip, "ori_clip_len"). First one
    start offset per clip is chosen, then clip ``k`` takes frames
    ``offset[k] + j * frame_interval`` for ``j < clip_len``.

    Training offsets (``avg = (n - L + 1) // num_clips``, integer division as in mmaction2):

    1. ``avg > 0``: ``offset[k] = k * avg + U{0, avg - 1}`` (one random draw inside each of
       ``num_clips`` equal strides).
    2. else if ``n > max(num_clips, L)``: ``num_clips`` draws from ``U{0, n - L}``, sorted.
    3. else if ``avg == 0``: ``offset[k] = round(k * (n - L + 1) / num_clips)`` (no randomness;
       numpy's round-half-to-even).
    4. else (the video is shorter than one clip): all offsets 0.

    Test offsets (deterministic), ``test_rule="1.x"`` (mmaction2 1.x, the default):

    - ``clip_len == 1``: ``offset[k] = int(k * avg + avg / 2)`` with ``avg = n / num_clips``
      (``twice_sample`` appends ``int(k * avg)``).
    - ``clip_len > 1`` (PySlowFast placement): the clip spans ``S = (clip_len - 1) *
      frame_interval + 1`` frames, ``M = max(n - S, 0)``; one clip starts at ``M // 2``;
      ``N > 1`` clips start at ``round(k * M / (N - 1))`` (first flush with the start, last
      with the end; numpy's round-half-to-even). ``twice_sample`` is refused here.

    ``test_rule="0.x"`` (mmaction2 0.x, used by X-CLIP / CLAVER's copy), with
    ``avg = (n - L + 1) / num_clips`` as a float:

    - ``n > L - 1``: ``offset[k] = int(k * avg + avg / 2)`` (the centre of stride ``k``);
      with ``twice_sample`` the stride starts ``int(k * avg)`` are appended, giving
      ``2 * num_clips`` clips.
    - else (video shorter than the clip): all offsets 0 (``2 * num_clips`` with twice_sample).

    The two rules agree for ``clip_len == 1, frame_interval == 1`` (TSN segment centres).

    Out-of-bound frames (``>= n``, possible when the video is shorter than a clip):

    - ``"loop"``: ``index mod n``.
    - ``"repeat_last"``: replaced by the clip's last in-range index (mmaction2's rule, which
      repeats the last *sampled* valid frame of that clip, e.g. ``n=8, L=4x3``: 0 3 6 9 ->
      0 3 6 6, not 0 3 6 7).

    Args:
        n: frames in the video (>= 1).
        clip_len: frames per clip.
        frame_interval: stride between sampled frames of a clip.
        num_clips: clips to take.
        train: random (True) or evenly spaced deterministic (False) offsets.
        rng: numpy generator for training (a fresh unseeded one when ``None``).
        out_of_bound: ``"loop"`` or ``"repeat_last"``.
        twice_sample: test only; also take the clips at the stride starts.
        test_rule: ``"1.x"`` or ``"0.x"``: which mmaction2 version places test clips.

    Returns:
        int64 array of shape ``(num_clips * clip_len,)``, clip-major
        (``(2 * num_clips * clip_len,)`` with ``twice_sample``).
    """
    n = _check_n(n)
    clip_len = _check_positive("clip_len", clip_len)
    frame_interval = _check_positive("frame_interval", frame_interval)
    num_clips = _check_positive("num_clips", num_clips)
    if out_of_bound not in _OUT_OF_BOUND:
        raise ValueError(f"out_of_bound must be one of {_OUT_OF_BOUND}, got {out_of_bound!r}")
    if twice_sample and train:
        raise ValueError("twice_sample applies to test sampling only (train=False)")
    if test_rule not in TEST_RULES:
        raise ValueError(f"test_rule must be one of {TEST_RULES}, got {test_rule!r}")
    ori_clip_len = clip_len * frame_interval
    if train:
        if rng is None:
            rng = np.random.default_rng()
        offsets = _train_clip_offsets(n, ori_clip_len, num_clips, rng)
    elif test_rule == "1.x":
        offsets = _test_clip_offsets_1x(n, clip_len, frame_interval, num_clips, twice_sample)
    else:
        offsets = _test_clip_offsets(n, ori_clip_len, num_clips, twice_sample)
    inds = offsets[:, None] + np.arange(clip_len, dtype=np.int64)[None, :] * frame_interval
    if out_of_bound == "loop":
        inds = np.mod(inds, n)
    else:
        valid = inds < n
        last = np.max(np.where(valid, inds, 0), axis=1, keepdims=True)
        inds = np.where(valid, inds, last)
    return inds.reshape(-1).astype(np.int64)


def multiview_indices(
    n: int,
    num_frames: int,
    num_clips: int,
    *,
    mode: SamplingMode = "segment",
    clip_len: int | None = None,
    frame_interval: int | None = None,
    out_of_bound: OutOfBound = "loop",
    test_rule: TestRule = "1.x",
) -> np.ndarray:
    """``num_clips`` temporal views of ``T = num_frames`` frames, placed deterministically.

    - ``mode="segment"``: TSN segments of length ``n / T``; view ``k`` takes, in every segment
      ``i``, the point at fraction ``(k + 0.5) / num_clips`` of it:
      ``int(n / T * (i + (k + 0.5) / num_clips))``, computed exactly as
      ``(n * (2 N i + 2 k + 1)) // (2 N T)`` with ``N = num_clips``. View 0 of 1 is the
      segment centre, i.e. ``segment_indices(n, T, train=False)``.
    - ``mode="clip"``: the test offsets of :func:`clip_indices` with ``num_clips`` clips of
      ``clip_len = T`` frames every ``frame_interval`` (default 1) frames.

    No randomness: equal inputs give equal outputs.

    Args:
        n: frames in the video (>= 1).
        num_frames: ``T``, frames per view.
        num_clips: ``N``, number of views.
        mode: ``"segment"`` or ``"clip"``.
        clip_len: clip mode only; must equal ``num_frames`` when given (kept for callers that
            speak mmaction2's vocabulary).
        frame_interval: clip mode only (default 1); segment mode accepts only ``None``/1.
        out_of_bound: clip mode only, see :func:`clip_indices`.
        test_rule: clip mode only, see :func:`clip_indices`.

    Returns:
        int64 array of shape ``(num_clips, T)``.
    """
    n = _check_n(n)
    t = _check_positive("num_frames", num_frames)
    views = _check_positive("num_clips", num_clips)
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if clip_len is not None and clip_len != t:
        raise ValueError(f"clip_len={clip_len} must equal num_frames={t} (or be None)")
    if mode == "segment":
        if frame_interval not in (None, 1):
            raise ValueError(
                f"frame_interval={frame_interval} has no meaning in segment mode; use mode='clip'"
            )
        i = np.arange(t, dtype=np.int64)[None, :]
        k = np.arange(views, dtype=np.int64)[:, None]
        return (n * (2 * views * i + 2 * k + 1)) // (2 * views * t)
    inds = clip_indices(
        n, t, 1 if frame_interval is None else frame_interval, views,
        train=False, out_of_bound=out_of_bound, test_rule=test_rule,
    )
    return inds.reshape(views, t)


@dataclass(frozen=True)
class FrameSampler:
    """The frame-sampling choice a dataset holds: ``sampler(n, rng) -> indices``.

    Attributes:
        num_frames: ``T``, frames per view (segments in segment mode, ``clip_len`` in clip
            mode).
        mode: ``"segment"`` (TSN, the papers' default) or ``"clip"`` (mmaction2 SampleFrames
            with one clip per view).
        frame_interval: stride inside a clip (clip mode only; must be 1 in segment mode).
        num_clips: temporal views at test time (must be 1 when ``train``).
        train: random (training) or deterministic (evaluation) sampling.
        out_of_bound: clip mode's handling of frames past the end, see :func:`clip_indices`.
        keep_tail: segment-mode training only: cover the whole video (see
            :func:`segment_indices`); False is the official rule.
        test_rule: clip-mode test placement, ``"1.x"`` or ``"0.x"`` (see :func:`clip_indices`).

    Calling returns int64 ``(T,)`` in training and single-view testing, ``(num_clips, T)``
    when ``num_clips > 1``.
    """

    num_frames: int
    mode: SamplingMode = "segment"
    frame_interval: int = 1
    num_clips: int = 1
    train: bool = False
    out_of_bound: OutOfBound = "loop"
    keep_tail: bool = False
    test_rule: TestRule = "1.x"

    def __post_init__(self) -> None:
        _check_positive("num_frames", self.num_frames)
        _check_positive("frame_interval", self.frame_interval)
        _check_positive("num_clips", self.num_clips)
        if self.mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {self.mode!r}")
        if self.out_of_bound not in _OUT_OF_BOUND:
            raise ValueError(
                f"out_of_bound must be one of {_OUT_OF_BOUND}, got {self.out_of_bound!r}"
            )
        if self.test_rule not in TEST_RULES:
            raise ValueError(f"test_rule must be one of {TEST_RULES}, got {self.test_rule!r}")
        if self.mode == "segment" and self.frame_interval != 1:
            raise ValueError(
                f"frame_interval={self.frame_interval} needs mode='clip' (segment mode spreads "
                "frames over the whole video)"
            )
        if self.train and self.num_clips != 1:
            raise ValueError(
                f"num_clips={self.num_clips} is a test-time multi-view setting; training "
                "samples one view (num_clips=1)"
            )

    @property
    def views(self) -> int:
        """Temporal views returned per video (``num_clips``)."""
        return self.num_clips

    def __call__(self, n: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """Indices for a video of ``n`` frames: ``(T,)``, or ``(num_clips, T)`` if multi-view."""
        if self.num_clips > 1:
            return multiview_indices(
                n, self.num_frames, self.num_clips, mode=self.mode,
                frame_interval=self.frame_interval, out_of_bound=self.out_of_bound,
                test_rule=self.test_rule,
            )
        if self.mode == "segment":
            return segment_indices(n, self.num_frames, train=self.train, rng=rng,
                                   keep_tail=self.keep_tail)
        return clip_indices(
            n, self.num_frames, self.frame_interval, 1, train=self.train, rng=rng,
            out_of_bound=self.out_of_bound, test_rule=self.test_rule,
        )
