"""Colour ops on videos in plain torch: luma, HSV, brightness/contrast/saturation/hue.

Public ops take a video ``(..., 3, H, W)`` (channels at dim ``-3``), ``uint8`` in ``[0, 255]``
or float in ``[0, 1]``, and return a new tensor of the same dtype (uint8 results are rounded
and clamped); their input is never modified. Underneath, in-place kernels (``_name_``) work
on float frames a few at a time (:func:`_chunks`) so that a chunk and its temporaries stay in
the CPU caches; :class:`~claver.data.transforms.ColorJitter` and
:class:`~claver.data.transforms.TrainTransform` run them directly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

__all__ = [
    "adjust_brightness", "adjust_contrast", "adjust_hue", "adjust_saturation", "hsv_to_rgb",
    "rgb_to_hsv", "to_float", "to_grayscale",
]

Tensor = torch.Tensor
_GRAY = (0.299, 0.587, 0.114)


def _check_video(video: Tensor) -> None:
    if video.dim() < 3:
        raise ValueError(f"expected a video (..., C, H, W), got shape {tuple(video.shape)}")


def _from_unit(video: Tensor, dtype: torch.dtype) -> Tensor:
    """Back from float [0, 1] to ``dtype`` (uint8: rounded and clamped)."""
    if dtype == torch.uint8:
        return video.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
    return video


def to_float(video: Tensor) -> Tensor:
    """uint8 ``[0, 255]`` -> float32 ``[0, 1]`` (÷255); a float video is returned unchanged."""
    if video.dtype == torch.uint8:
        return video.float().div_(255.0)
    if video.is_floating_point():
        return video
    raise TypeError(f"expected a uint8 or float video, got {video.dtype}")


def _gray_plane(x: Tensor) -> Tensor:
    """Luma ``0.299 R + 0.587 G + 0.114 B`` of float ``(..., 3, H, W)`` -> ``(..., H, W)``."""
    if x.shape[-3] != 3:
        raise ValueError(f"colour ops need 3 channels at dim -3, got shape {tuple(x.shape)}")
    r, g, b = x.unbind(-3)
    return torch.mul(r, _GRAY[0]).add_(g, alpha=_GRAY[1]).add_(b, alpha=_GRAY[2])


# In-place colour kernels on float frames ``(N, 3, H, W)`` in [0, 1] that the caller owns
# (see _jitter_): few passes, few temporaries, results kept in [0, 1].

def _brightness_(x: Tensor, f: float) -> None:
    x.mul_(f).clamp_(0.0, 1.0)


def _contrast_(x: Tensor, f: float) -> None:
    # the mean luma of each frame, as the luma of its mean colour (linear: same value)
    w = torch.tensor(_GRAY, dtype=x.dtype, device=x.device)
    mean = (x.mean(dim=(-2, -1)) @ w).view(-1, 1, 1, 1)
    torch.add(mean.mul_(1.0 - f), x, alpha=f, out=x).clamp_(0.0, 1.0)


def _saturation_(x: Tensor, f: float) -> None:
    gray = _gray_plane(x).mul_(1.0 - f).unsqueeze(-3)
    torch.add(gray, x, alpha=f, out=x).clamp_(0.0, 1.0)


def _hue_(x: Tensor, f: float) -> None:
    """HSV hue rotation by ``f`` turns, in closed form: no division, no branch.

    With ``v``/``m`` the largest/smallest channel and ``c = v - m``, HSV -> RGB gives channel
    ``n`` as ``m - c + clamp(d_n, c, 2c)``, where ``d_n`` is the distance from 0, around a
    circle of length ``6c``, of ``z_n = c·h + c (o_n + 6 f) - 3c`` (``o = 0, 4, 2`` for R, G,
    B). ``c·h`` (hue in sixths times chroma) is ``g - b``, ``2c + b - r`` or ``4c + r - g``
    when R, G or B is the largest (ties: R, then G), selected by exact 0/1 lerps. ``z`` lies
    in ``[-4c, 8c]``, where ``min(|z|, |z - 6c|)`` and the true distance clamp alike; the
    final clamp to ``[m, v]`` keeps every channel within the pixel's own range (and [0, 1]).
    """
    r, g, b = x.unbind(-3)
    v = torch.maximum(r, g)
    torch.maximum(v, b, out=v)
    m = torch.minimum(r, g)
    torch.minimum(m, b, out=m)
    c = v - m
    pick = torch.empty_like(c)  # 1.0 where a channel is the largest, else 0.0
    ch = torch.sub(r, g).add_(c, alpha=4.0)
    other = torch.sub(b, r).add_(c, alpha=2.0)
    torch.lerp(ch, other, torch.eq(g, v, out=pick), out=ch)  # 0/1 weights: exact picks
    torch.lerp(ch, torch.sub(g, b, out=other), torch.eq(r, v, out=pick), out=ch)
    offsets = [(o + 6.0 * f) % 6.0 - 3.0 for o in (0.0, 4.0, 2.0)]
    c, m, v = c.unsqueeze(-3), m.unsqueeze(-3), v.unsqueeze(-3)
    z = torch.addcmul(ch.unsqueeze(-3), c, torch.tensor(
        offsets, dtype=x.dtype, device=x.device).view(3, 1, 1), out=x)  # r, g, b are spent
    far = torch.sub(z, c, alpha=6.0).abs_()
    torch.minimum(z.abs_(), far, out=z)
    z.add_(m - c)
    torch.clamp(z, m, v, out=z)


def _grayscale_(x: Tensor) -> None:
    x.copy_(_gray_plane(x).unsqueeze(-3).expand_as(x))


_COLOR_OPS: dict[str, Callable[[Tensor, float], None]] = {
    "brightness": _brightness_, "contrast": _contrast_, "saturation": _saturation_,
    "hue": _hue_}
# pixels per chunk (whole frames, at least one): a chunk and its temporaries stay in the CPU
# caches across all the colour ops (2 frames at S = 224), instead of each op streaming the
# whole clip through memory
_CHUNK_PIXELS = 1 << 17


def _chunks(x: Tensor) -> list[Tensor]:
    """``x`` (contiguous ``(..., 3, H, W)``) as ``(n, 3, H, W)`` views of whole frames."""
    frames = x.view(-1, *x.shape[-3:])
    return list(frames.split(max(1, _CHUNK_PIXELS // (x.shape[-2] * x.shape[-1]))))


def _jitter_(x: Tensor, ops: Sequence[tuple[str, float]]) -> None:
    """Apply ``[(op, factor), ...]`` in order, in place, to float ``x`` that the caller owns."""
    for chunk in _chunks(x):
        for name, factor in ops:
            _COLOR_OPS[name](chunk, factor)


def _owned_float(video: Tensor) -> Tensor:
    """A contiguous float copy in [0, 1] that in-place ops may overwrite."""
    x = to_float(video)
    if x is video or not x.is_contiguous():
        x = x.clone(memory_format=torch.contiguous_format)
    return x


def _hsv_parts(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(h, s, v) of float RGB ``(..., 3, H, W)``, each ``(..., H, W)`` (branch-free for speed)."""
    r, g, b = x.unbind(-3)
    maxc = torch.maximum(torch.maximum(r, g), b)
    chroma = maxc - torch.minimum(torch.minimum(r, g), b)
    # hue sector by the max channel (ties: R, then G): (g-b)/c, 2+(b-r)/c, 4+(r-g)/c, in sixths
    is_r = (maxc == r).to(x.dtype)
    is_g = (maxc == g).to(x.dtype).mul_(1.0 - is_r)
    h = torch.sub(r, g).add_(chroma, alpha=4.0)
    h = h.add_(torch.sub(b, r).add_(chroma, alpha=2.0).sub_(h).mul_(is_g))
    h = h.add_(torch.sub(g, b).sub_(h).mul_(is_r))
    h = h.div_(chroma.mul(6.0).clamp_min_(1e-12))
    return h.sub_(h.floor()), chroma.div_(maxc.clamp_min(1e-12)), maxc


def _rgb_from_parts(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    """Channel n in (5, 3, 1) for (R, G, B): ``v - v s clamp(min(k, 4 - k), 0, 1)``,
    ``k = (n + 6 h) mod 6``."""
    vs = v * s
    out = []
    for n in (5.0, 3.0, 1.0):
        k = torch.add(h, n / 6.0)
        k = k.sub_(k.floor()).mul_(6.0)
        w = torch.minimum(k, k.neg().add_(4.0)).clamp_(0.0, 1.0)
        out.append(torch.sub(v, w.mul_(vs)))
    return torch.stack(out, dim=-3)


def rgb_to_hsv(video: Tensor) -> Tensor:
    """Float RGB ``(..., 3, H, W)`` in [0, 1] -> HSV, each channel in [0, 1] (hue in turns)."""
    return torch.stack(_hsv_parts(video), dim=-3)


def hsv_to_rgb(video: Tensor) -> Tensor:
    """Inverse of :func:`rgb_to_hsv`: float HSV ``(..., 3, H, W)`` -> RGB in [0, 1]."""
    return _rgb_from_parts(*video.unbind(-3))


def _value_op(video: Tensor, fn: Callable[[Tensor, float], None], factor: float,
              name: str, lo: float = 0.0, hi: float = math.inf) -> Tensor:
    if not lo <= factor <= hi:
        raise ValueError(f"{name} factor must be in [{lo}, {hi}], got {factor}")
    _check_video(video)
    x = _owned_float(video)
    for chunk in _chunks(x):
        fn(chunk, factor)
    return _from_unit(x, video.dtype)


def adjust_brightness(video: Tensor, factor: float) -> Tensor:
    """``clamp(x * factor)``; factor >= 0 (0: black, 1: unchanged)."""
    return _value_op(video, _brightness_, factor, "brightness")


def adjust_contrast(video: Tensor, factor: float) -> Tensor:
    """Blend each frame with the mean of its grayscale: ``clamp(f x + (1 - f) mean)``."""
    return _value_op(video, _contrast_, factor, "contrast")


def adjust_saturation(video: Tensor, factor: float) -> Tensor:
    """Blend with the per-pixel grayscale: ``clamp(f x + (1 - f) gray)`` (0: grayscale)."""
    return _value_op(video, _saturation_, factor, "saturation")


def adjust_hue(video: Tensor, factor: float) -> Tensor:
    """Rotate the hue by ``factor`` turns (``-0.5 <= factor <= 0.5``): :func:`rgb_to_hsv`,
    hue + factor (mod 1), :func:`hsv_to_rgb`, computed in one closed form (see ``_hue_``)."""
    return _value_op(video, _hue_, factor, "hue", -0.5, 0.5)


def to_grayscale(video: Tensor, num_output_channels: int = 3) -> Tensor:
    """``0.299 R + 0.587 G + 0.114 B`` -> ``(..., num_output_channels, H, W)`` (1 or 3)."""
    if num_output_channels not in (1, 3):
        raise ValueError(f"num_output_channels must be 1 or 3, got {num_output_channels}")
    _check_video(video)
    g = _gray_plane(to_float(video)).unsqueeze(-3)
    if num_output_channels == 3:
        g = g.expand(*g.shape[:-3], 3, *g.shape[-2:]).contiguous()
    return _from_unit(g, video.dtype)
