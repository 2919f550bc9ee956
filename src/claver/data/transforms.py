"""Video transforms in plain torch: functional ops, small callables, pipelines, mixup/cutmix.

Layout: every functional op takes a video ``(T, C, H, W)`` (any leading dims work: channels
are dim ``-3``), ``uint8`` in ``[0, 255]`` or float in ``[0, 1]``, and returns the same dtype
(uint8 results are rounded and clamped). Decoders return ``(T, H, W, 3)`` uint8; the pipelines
from :func:`build_train_transform` / :func:`build_eval_transform` accept both layouts (see
:func:`to_tchw`).

The colour ops (brightness, contrast, saturation, hue, grayscale, HSV) live in
:mod:`claver.data.color` and are re-exported here.

Randomness comes from a ``torch.Generator`` passed in (``None``: torch's global generator).
Random callables draw **once per call**, i.e. once per clip: every frame of a clip gets the
same crop, flip, colour jitter and grayscale decision (the training pipeline can also jitter
every frame with its own factors, as the official code did: ``color_jitter_mode``).

Resizing is bilinear (half-pixel centres). The papers' official pipelines resized with
OpenCV (mmcv) without antialiasing; ``antialias=False`` reproduces that, ``True`` (default)
averages over the source pixels when shrinking.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from claver.data.color import (
    _COLOR_OPS,
    _check_video,
    _chunks,
    _from_unit,
    _grayscale_,
    _jitter_,
    _owned_float,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    hsv_to_rgb,
    rgb_to_hsv,
    to_float,
    to_grayscale,
)
from claver.models.config import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "CLIP_MEAN", "CLIP_STD", "IMAGENET_MEAN", "IMAGENET_STD", "MULTI_SCALES", "ColorJitter",
    "EvalTransform", "RandomGrayscale", "RandomHorizontalFlip", "TrainTransform",
    "adjust_brightness", "adjust_contrast", "adjust_hue", "adjust_saturation",
    "build_eval_transform", "build_train_transform", "center_crop", "crop", "hflip",
    "hsv_to_rgb", "multi_scale_crop", "multi_scale_crop_boxes",
    "multi_scale_crop_params", "normalize", "random_resized_crop", "random_resized_crop_params",
    "resize", "resize_short_side", "rgb_to_hsv", "short_side_size",
    "three_crop", "to_float", "to_grayscale", "to_tchw",
]

Tensor = torch.Tensor
Layout = Literal["auto", "THWC", "TCHW"]
JitterMode = Literal["clip", "per_frame"]
JITTER_MODES = ("clip", "per_frame")
MULTI_SCALES = (1.0, 0.875, 0.75, 0.66)


# ----------------------------------------------------------------------------- helpers

def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _rand(generator: torch.Generator | None, lo: float = 0.0, hi: float = 1.0) -> float:
    """Uniform float in ``[lo, hi)``."""
    return lo + (hi - lo) * float(torch.rand((), generator=generator))


def _randint(high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in ``[0, high)``."""
    return int(torch.randint(high, (), generator=generator))


def to_tchw(video: Tensor, layout: Layout = "auto") -> Tensor:
    """Return a ``(T, 3, H, W)`` view of a ``(T, H, W, 3)`` or ``(T, 3, H, W)`` video.

    ``"auto"`` decides from the shape: last dim 3 and dim 1 not 3 -> THWC (the decoders'
    layout); dim 1 is 3 and last dim not 3 -> TCHW. A shape where both are 3 is ambiguous and
    raises; pass ``layout`` explicitly then.
    """
    shape = tuple(video.shape)
    if video.dim() != 4:
        raise ValueError(f"expected a video (T, H, W, 3) or (T, 3, H, W), got {shape}")
    if layout == "auto":
        last, second = shape[-1] == 3, shape[1] == 3
        if last == second:
            raise ValueError(f"cannot tell the channel axis of {shape}; pass layout='THWC' "
                             "or 'TCHW'" + (" (ambiguous)" if last else ""))
        layout = "THWC" if last else "TCHW"
    if layout not in ("THWC", "TCHW"):
        raise ValueError(f"layout must be 'auto', 'THWC' or 'TCHW', got {layout!r}")
    return video.permute(0, 3, 1, 2) if layout == "THWC" else video


# ----------------------------------------------------------------------------- value ops

def normalize(video: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """``(x - mean) / std`` per channel (dim -3) of a float video ``(..., C, H, W)``."""
    if not video.is_floating_point():
        raise TypeError(f"normalize expects a float video (use to_float first), got {video.dtype}")
    return _normalize(video, mean, std, 1.0)


def _normalize(x: Tensor, mean: Sequence[float], std: Sequence[float], unit: float) -> Tensor:
    """``(x / unit - mean) / std`` in one fused op (out of place)."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return torch.addcmul(-m / s, x, 1.0 / (s * unit))


# ----------------------------------------------------------------------------- geometry

def _interp(x: Tensor, size: tuple[int, int], antialias: bool = True) -> Tensor:
    """Bilinear resize of ``(..., C, H, W)``; uint8 stays uint8 (rounded), float stays float.

    uint8 frames run through PyTorch's channels-last uint8 kernel (decoders return
    (T, H, W, 3), which is that layout already): ~10x faster than resizing in float.
    """
    in_h, in_w = x.shape[-2:]
    if (in_h, in_w) == size:
        return x
    lead, shrink = x.shape[:-3], size[0] < in_h or size[1] < in_w
    x4 = x.reshape(-1, *x.shape[-3:])
    if x4.dtype == torch.uint8:
        x4 = x4.contiguous(memory_format=torch.channels_last)
    elif not x4.is_floating_point():
        x4 = x4.float()
    x4 = F.interpolate(x4, size=size, mode="bilinear", align_corners=False,
                       antialias=antialias and shrink)
    return x4.reshape(*lead, *x4.shape[-3:])


def resize(video: Tensor, size: int | Sequence[int], *, antialias: bool = True) -> Tensor:
    """Bilinear resize of ``(..., C, H, W)`` to ``size = (h, w)`` (an int means square).

    Antialiasing is used when either side shrinks (``antialias=True``); an unchanged size
    returns the input itself. uint8 in, uint8 out (rounded), computed by the uint8 kernel.
    """
    _check_video(video)
    h, w = _pair(size)
    if h < 1 or w < 1:
        raise ValueError(f"resize target must be positive, got {(h, w)}")
    if tuple(video.shape[-2:]) == (h, w):
        return video
    return _interp(video, (h, w), antialias).to(video.dtype)


def short_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """``(h, w)`` with the short side ``size`` and the long side ``round(long * size / short)``.

    Rounding is half-up in exact integers (mmcv's ``int(x + 0.5)``), e.g. 320x240 -> 299x224.
    """
    if size < 1 or height < 1 or width < 1:
        raise ValueError(f"sizes must be positive, got {height}x{width} -> short side {size}")
    short, long = min(height, width), max(height, width)
    new_long = (2 * long * size + short) // (2 * short)
    return (size, new_long) if height <= width else (new_long, size)


def resize_short_side(video: Tensor, size: int, *, antialias: bool = True) -> Tensor:
    """Resize ``(..., C, H, W)`` keeping the aspect ratio so that ``min(H, W) == size``."""
    _check_video(video)
    return resize(video, short_side_size(video.shape[-2], video.shape[-1], size),
                  antialias=antialias)


def crop(video: Tensor, top: int, left: int, height: int, width: int) -> Tensor:
    """``video[..., top:top + height, left:left + width]`` (a view); the box must fit."""
    _check_video(video)
    in_h, in_w = video.shape[-2:]
    if top < 0 or left < 0 or height < 1 or width < 1 or top + height > in_h \
            or left + width > in_w:
        raise ValueError(f"crop box (top={top}, left={left}, h={height}, w={width}) does not "
                         f"fit a {in_h}x{in_w} video")
    return video[..., top:top + height, left:left + width]


def center_crop(video: Tensor, size: int | Sequence[int]) -> Tensor:
    """Centre ``(h, w)`` crop; top ``(H - h) // 2``, left ``(W - w) // 2`` (mmaction2)."""
    h, w = _pair(size)
    in_h, in_w = video.shape[-2:]
    return crop(video, (in_h - h) // 2, (in_w - w) // 2, h, w)


def three_crop(video: Tensor, size: int | Sequence[int]) -> list[Tensor]:
    """Three ``(h, w)`` crops along the long side: ``[left, centre, right]`` for landscape
    (and square) videos, ``[top, centre, bottom]`` for portrait ones.

    Along the long side the offsets are ``0``, ``step`` and ``2 * step`` with
    ``step = (L - s) // 2`` (mmaction2 ``ThreeCrop``: when ``L - s`` is odd the far crop stops
    one pixel short of the edge); the other axis is centred with ``(S - s) // 2``.
    """
    h, w = _pair(size)
    in_h, in_w = video.shape[-2:]
    if in_w >= in_h:
        top, step = (in_h - h) // 2, (in_w - w) // 2
        return [crop(video, top, left, h, w) for left in (0, step, 2 * step)]
    left, step = (in_w - w) // 2, (in_h - h) // 2
    return [crop(video, top, left, h, w) for top in (0, step, 2 * step)]


def hflip(video: Tensor) -> Tensor:
    """Mirror left-right (reverse the last axis)."""
    _check_video(video)
    return video.flip(-1)


def _crop_sizes(height: int, width: int, size: tuple[int, int], scales: Sequence[float],
                max_distort: int) -> list[tuple[int, int]]:
    base = min(height, width)
    sizes = [int(base * s) for s in scales]
    pairs = []
    for i, ch in enumerate(sizes):
        for j, cw in enumerate(sizes):
            if abs(i - j) <= max_distort:
                ch2 = size[0] if abs(ch - size[0]) < 3 else ch
                cw2 = size[1] if abs(cw - size[1]) < 3 else cw
                pairs.append((max(1, min(ch2, height)), max(1, min(cw2, width))))
    return pairs


def _fixed_offsets(height: int, width: int, ch: int, cw: int,
                   num_fixed_crops: int) -> list[tuple[int, int]]:
    if num_fixed_crops not in (5, 13):
        raise ValueError(f"num_fixed_crops must be 5 or 13, got {num_fixed_crops}")
    hs, ws = (height - ch) // 4, (width - cw) // 4
    grid = [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2)]  # (row, col) in quarter steps
    if num_fixed_crops == 13:
        grid += [(2, 0), (2, 4), (4, 2), (0, 2), (1, 1), (1, 3), (3, 1), (3, 3)]
    return [(r * hs, c * ws) for r, c in grid]


def multi_scale_crop_boxes(
    height: int, width: int, size: int | Sequence[int], scales: Sequence[float] = MULTI_SCALES,
    max_distort: int = 1, num_fixed_crops: int = 5,
) -> set[tuple[int, int, int, int]]:
    """Every ``(top, left, h, w)`` box :func:`multi_scale_crop` can pick on an ``H x W`` video.

    Crop sides are ``int(min(H, W) * s)`` for ``s`` in ``scales``, paired as ``(h_i, w_j)``
    with ``|i - j| <= max_distort``; a side within 2 px of the target ``size`` snaps to it
    (mmaction2), and sides never exceed the image. Positions (steps ``(H - h) // 4``,
    ``(W - w) // 4``): the 4 corners and the centre (``num_fixed_crops=5``, mmaction2's
    default, what the X-CLIP/CLAVER configs use, and ours) plus, for 13 (TSN
    ``more_fix_crop``, the ActionCLIP original), the 4 edge midpoints and the 4 quarter
    points ``(1|3, 1|3)``.
    """
    boxes = set()
    for ch, cw in _crop_sizes(height, width, _pair(size), scales, max_distort):
        for top, left in _fixed_offsets(height, width, ch, cw, num_fixed_crops):
            boxes.add((top, left, ch, cw))
    return boxes


def multi_scale_crop_params(
    height: int, width: int, size: int | Sequence[int], scales: Sequence[float] = MULTI_SCALES,
    max_distort: int = 1, num_fixed_crops: int = 5, generator: torch.Generator | None = None,
) -> tuple[int, int, int, int]:
    """Draw one ``(top, left, h, w)`` box: a size pair uniformly, then a fixed position
    uniformly (two draws), as in TSN / mmaction2. See :func:`multi_scale_crop_boxes`."""
    pairs = _crop_sizes(height, width, _pair(size), scales, max_distort)
    ch, cw = pairs[_randint(len(pairs), generator)]
    offsets = _fixed_offsets(height, width, ch, cw, num_fixed_crops)
    top, left = offsets[_randint(len(offsets), generator)]
    return top, left, ch, cw


def multi_scale_crop(
    video: Tensor, size: int | Sequence[int], *, scales: Sequence[float] = MULTI_SCALES,
    max_distort: int = 1, num_fixed_crops: int = 5, generator: torch.Generator | None = None,
) -> Tensor:
    """TSN "GroupMultiScaleCrop": one box for the whole clip, then resize to ``size``.

    The input is expected with short side ~``256 / 224 * S`` (see :func:`build_train_transform`).
    ``(..., C, H, W) -> (..., C, h, w)``.
    """
    top, left, ch, cw = multi_scale_crop_params(
        video.shape[-2], video.shape[-1], size, scales, max_distort, num_fixed_crops, generator)
    return resize(crop(video, top, left, ch, cw), _pair(size))


def random_resized_crop_params(
    height: int, width: int, scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3), generator: torch.Generator | None = None,
) -> tuple[int, int, int, int]:
    """Inception-style box ``(top, left, h, w)``: up to 10 tries of an area fraction from
    ``U(scale)`` and an aspect ``w / h`` log-uniform in ``ratio``; otherwise the largest centred
    box whose aspect is clamped into ``ratio``."""
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * _rand(generator, scale[0], scale[1])
        aspect = math.exp(_rand(generator, log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return _randint(height - h + 1, generator), _randint(width - w + 1, generator), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop(
    video: Tensor, size: int | Sequence[int], scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3), generator: torch.Generator | None = None,
) -> Tensor:
    """One random box per clip (:func:`random_resized_crop_params`), resized to ``size``."""
    box = random_resized_crop_params(video.shape[-2], video.shape[-1], scale, ratio, generator)
    return resize(crop(video, *box), _pair(size))


# ----------------------------------------------------------------------------- random callables

@dataclass
class RandomHorizontalFlip:
    """Flip the whole clip with probability ``p`` (one draw per call)."""

    p: float = 0.5

    def __call__(self, video: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return hflip(video) if _rand(generator) < self.p else video


@dataclass
class RandomGrayscale:
    """Convert the whole clip to 3-channel grayscale with probability ``p``."""

    p: float = 0.2

    def __call__(self, video: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return to_grayscale(video, 3) if _rand(generator) < self.p else video


@dataclass
class ColorJitter:
    """With probability ``p``, jitter brightness/contrast/saturation/hue in a random order.

    One set of factors per call (per clip): brightness, contrast and saturation factors are
    ``U[max(0, 1 - x), 1 + x]``, the hue shift ``U[-hue, hue]`` turns; 0 disables an op. The
    order is a random permutation (as torchvision's ``ColorJitter``). Draws: 1 for ``p``, then
    (if applied) a ``randperm(4)`` and one uniform per enabled op in that order.
    """

    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    p: float = 0.8

    def __post_init__(self) -> None:
        if min(self.brightness, self.contrast, self.saturation, self.hue) < 0 or self.hue > 0.5:
            raise ValueError("jitter strengths must be >= 0 and hue <= 0.5")

    def sample(self, generator: torch.Generator | None = None) -> list[tuple[str, float]]:
        """The ``[(op, factor), ...]`` to apply, in order (empty when not applied)."""
        if _rand(generator) >= self.p:
            return []
        return self.sample_ops(generator)

    def sample_ops(self, generator: torch.Generator | None = None) -> list[tuple[str, float]]:
        """One order and set of factors, without the ``p`` draw (torchvision's
        ``ColorJitter.get_params``)."""
        names = ("brightness", "contrast", "saturation", "hue")
        ops = []
        for k in torch.randperm(4, generator=generator).tolist():
            x = getattr(self, names[k])
            if x > 0:
                lo, hi = (-x, x) if names[k] == "hue" else (max(0.0, 1 - x), 1 + x)
                ops.append((names[k], _rand(generator, lo, hi)))
        return ops

    def __call__(self, video: Tensor, generator: torch.Generator | None = None) -> Tensor:
        ops = self.sample(generator)
        if not ops:
            return video
        _check_video(video)
        x = _owned_float(video)
        _jitter_(x, ops)
        return _from_unit(x, video.dtype)


# ----------------------------------------------------------------------------- pipelines

class TrainTransform:
    """Training pipeline (DESIGN §4): ``(video uint8 (T,H,W,3)|(T,3,H,W), generator)`` ->
    float ``(T, 3, S, S)``.

    Steps: layout -> short side ``256 * S // 224`` (integer division) -> ``randaugment``
    (when given) -> multi-scale crop (:func:`multi_scale_crop_params`) -> resize ``S x S`` ->
    ``/255`` -> flip (prob ``flip``) -> colour jitter (prob ``color_jitter``) -> grayscale
    (prob ``grayscale``) -> normalise. Geometry on uint8 input runs in uint8 (PyTorch's fast
    channels-last kernel; the crop is resized once, so there is one rounding); a float input
    is taken to be in [0, 1] and is never modified. The draws are those of ``self.flip``,
    ``self.jitter`` and ``self.gray`` called in turn; the value steps then run in place, a
    few frames at a time.

    ``antialias``: bilinear resizes average over the source when shrinking (True) or sample
    2x2 neighbours as OpenCV / the official pipeline (False). ``color_jitter_mode``:
    ``"clip"`` draws one order and set of jitter factors per clip; ``"per_frame"`` (the
    official X-CLIP / CLAVER ``ColorJitter``) decides once per clip whether to jitter, then
    draws an order and factors for every frame. ``randaugment``: a callable
    ``(uint8 (T, 3, H, W), generator) -> uint8 (T, 3, H, W)`` applied to the frames before
    the crop, where ActionCLIP applies RandAugment (first, on the frames as loaded); a float
    input is converted to uint8 for it.
    """

    def __init__(self, size: int, *, mean: Sequence[float], std: Sequence[float],
                 scales: Sequence[float] = MULTI_SCALES, flip: float = 0.5,
                 color_jitter: float = 0.8, grayscale: float = 0.2, max_distort: int = 1,
                 num_fixed_crops: int = 5, jitter: tuple[float, float, float, float] = (
                     0.4, 0.4, 0.2, 0.1), layout: Layout = "auto", antialias: bool = True,
                 color_jitter_mode: JitterMode = "clip",
                 randaugment: Callable[[Tensor, torch.Generator | None], Tensor] | None = None
                 ) -> None:
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        if color_jitter_mode not in JITTER_MODES:
            raise ValueError(f"color_jitter_mode must be one of {JITTER_MODES}, got "
                             f"{color_jitter_mode!r}")
        self.size, self.mean, self.std, self.layout = size, tuple(mean), tuple(std), layout
        self.antialias, self.color_jitter_mode = antialias, color_jitter_mode
        self.randaugment = randaugment
        self.resize_to = 256 * size // 224
        self.scales, self.max_distort, self.num_fixed_crops = (
            tuple(scales), max_distort, num_fixed_crops)
        self.flip = RandomHorizontalFlip(flip)
        self.jitter = ColorJitter(*jitter, p=color_jitter)
        self.gray = RandomGrayscale(grayscale)

    def __call__(self, video: Tensor, generator: torch.Generator | None = None) -> Tensor:
        x = to_tchw(video, self.layout)
        unit = 255.0 if x.dtype == torch.uint8 else 1.0
        size = short_side_size(x.shape[-2], x.shape[-1], self.resize_to)
        x = _interp(x, size, self.antialias)
        if self.randaugment is not None:
            if unit == 1.0:
                x, unit = _from_unit(x.clamp(0.0, 1.0), torch.uint8), 255.0
            x = self.randaugment(x.contiguous(), generator)
        top, left, h, w = multi_scale_crop_params(
            x.shape[-2], x.shape[-1], self.size, self.scales, self.max_distort,
            self.num_fixed_crops, generator)
        x = _interp(crop(x, top, left, h, w), (self.size, self.size), self.antialias)
        # the draws (flip, jitter, grayscale), then all the value work chunk by chunk
        flip = _rand(generator) < self.flip.p
        if self.color_jitter_mode == "clip":
            ops = self.jitter.sample(generator)
            frame_ops = None
        else:  # one decision per clip, then an order and factors per frame
            jitter = _rand(generator) < self.jitter.p
            ops = []
            frame_ops = [self.jitter.sample_ops(generator) if jitter else []
                         for _ in range(x.shape[0])]
        gray = _rand(generator) < self.gray.p
        out = torch.empty(x.shape, dtype=torch.float32 if unit > 1 else x.dtype,
                          device=x.device)
        m = torch.as_tensor(self.mean, dtype=out.dtype, device=out.device).view(-1, 1, 1)
        s = torch.as_tensor(self.std, dtype=out.dtype, device=out.device).view(-1, 1, 1)
        shift, scale = -m / s, 1.0 / s
        start = 0
        for chunk in _chunks(out):
            src = x[start:start + len(chunk)].contiguous()
            start += len(chunk)
            chunk.copy_(src.flip(-1) if flip else src)
            if unit > 1:
                chunk.mul_(1.0 / unit)  # uint8 / 255 lies in [0, 1] already
            else:
                chunk.clamp_(0.0, 1.0)
            for name, factor in ops:
                _COLOR_OPS[name](chunk, factor)
            if frame_ops is not None:
                for k in range(len(chunk)):
                    for name, factor in frame_ops[start - len(chunk) + k]:
                        _COLOR_OPS[name](chunk[k:k + 1], factor)
            if gray:
                _grayscale_(chunk)
            torch.addcmul(shift, chunk, scale, out=chunk)
        return out


class EvalTransform:
    """Evaluation pipeline (the official X-CLIP / CLAVER test pipelines):

    - ``crops=1``: short side -> ``resize_to = 256 * S // 224``, centre ``S x S`` crop ->
      ``(T, 3, S, S)``;
    - ``crops=3``: short side -> ``resize_to = S``, three crops (:func:`three_crop`) ->
      ``(3, T, 3, S, S)``, order left/centre/right or top/centre/bottom;

    then ``/255`` and normalise. ``antialias`` as in :class:`TrainTransform`. Deterministic;
    ``generator`` is ignored."""

    def __init__(self, size: int, *, mean: Sequence[float], std: Sequence[float],
                 crops: int = 1, layout: Layout = "auto", antialias: bool = True) -> None:
        if crops not in (1, 3):
            raise ValueError(f"crops must be 1 or 3, got {crops}")
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        self.size, self.mean, self.std = size, tuple(mean), tuple(std)
        self.crops, self.layout, self.antialias = crops, layout, antialias
        self.resize_to = 256 * size // 224 if crops == 1 else size

    def __call__(self, video: Tensor, generator: torch.Generator | None = None) -> Tensor:
        x = to_tchw(video, self.layout)
        unit = 255.0 if x.dtype == torch.uint8 else 1.0
        size = short_side_size(x.shape[-2], x.shape[-1], self.resize_to)
        x = _interp(x, size, self.antialias)
        if self.crops == 1:
            x = center_crop(x, self.size)
        else:
            x = torch.stack(three_crop(x, self.size))
        x = x.to(torch.float32 if unit > 1 else x.dtype, memory_format=torch.contiguous_format)
        return _normalize(x, self.mean, self.std, unit)


def build_train_transform(
    size: int, *, mean: Sequence[float], std: Sequence[float],
    scales: Sequence[float] = MULTI_SCALES, flip: float = 0.5, color_jitter: float = 0.8,
    grayscale: float = 0.2, num_fixed_crops: int = 5, layout: Layout = "auto",
    antialias: bool = True, color_jitter_mode: JitterMode = "clip",
    randaugment: Callable[[Tensor, torch.Generator | None], Tensor] | None = None,
) -> TrainTransform:
    """The papers' training augmentation, ``(video uint8 (T, H, W, 3) | (T, 3, H, W),
    generator) -> float (T, 3, S, S)``; see :class:`TrainTransform`."""
    return TrainTransform(size, mean=mean, std=std, scales=scales, flip=flip,
                          color_jitter=color_jitter, grayscale=grayscale,
                          num_fixed_crops=num_fixed_crops, layout=layout, antialias=antialias,
                          color_jitter_mode=color_jitter_mode, randaugment=randaugment)


def build_eval_transform(size: int, *, mean: Sequence[float], std: Sequence[float],
                         crops: int = 1, layout: Layout = "auto",
                         antialias: bool = True) -> EvalTransform:
    """Test-time preprocessing ``video -> (T, 3, S, S)`` or ``(3, T, 3, S, S)``; see
    :class:`EvalTransform`."""
    return EvalTransform(size, mean=mean, std=std, crops=crops, layout=layout,
                         antialias=antialias)
