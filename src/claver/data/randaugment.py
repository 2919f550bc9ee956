"""RandAugment for video clips, as ActionCLIP trains with it (``RandAugment(N=2, M=9)``).

ActionCLIP imports ``RandAugment`` from ildoonet/pytorch-randaugment (version 0.1), whose op
list follows the EfficientNet AutoAugment code: 16 PIL image ops, ``N`` of them drawn with
replacement per call, each at magnitude ``v = M / 30 * (high - low) + low``; the geometric
ops (rotate, shear, translate) flip the sign of ``v`` with probability 1/2. This module
computes the same ops on uint8 tensors, written from the PIL definitions (nearest-neighbour
affine sampling with PIL's 16.16 fixed-point coordinates, black fill; PIL's 8-bit LUT,
histogram and float32 blend arithmetic), so each op equals PIL's on every pixel.

=============  ===========  ==============================================================
op             range        at M = 9
=============  ===========  ==============================================================
AutoContrast   -            per frame and channel, min -> 0, max -> 255
Equalize       -            per frame and channel, PIL's histogram equalisation
Invert         -            255 - x
Rotate         0 .. 30      +-9 degrees about the centre
Posterize      0 .. 4       keep int(1.2) = 1 high bit
Solarize       0 .. 256     invert pixels >= 76.8
SolarizeAdd    0 .. 110     add 33, clip, invert pixels >= 128
Color          0.1 .. 1.9   blend with the grey (L) image, factor 0.64
Contrast       0.1 .. 1.9   blend with the mean grey level, factor 0.64
Brightness     0.1 .. 1.9   blend with black, factor 0.64
Sharpness      0.1 .. 1.9   blend with PIL's SMOOTH filter, factor 0.64
ShearX/Y       0 .. 0.3     +-0.09
Cutout         0 .. 40      a 13 x 13 grey (125, 123, 114) square at a random centre
TranslateX/Y   0 .. 100     +-30 pixels
=============  ===========  ==============================================================

Difference from ActionCLIP: the original wraps RandAugment in a per-frame group transform,
so every frame of a clip draws its own ops, signs and cutout centre. Here the draw is made
once per clip and applied to every frame (``per_frame=True`` restores the original's draw
per frame). Content-dependent ops (AutoContrast, Equalize, Contrast) use each frame's own
statistics, as PIL on each frame does.

Clips are uint8 ``(T, 3, H, W)`` (any leading dims: channels are dim -3).
"""

from __future__ import annotations

import math

import torch

Tensor = torch.Tensor

# (name, low, high, signed): ildoonet/pytorch-randaugment 0.1 ``augment_list()``, in order.
OPS: tuple[tuple[str, float, float, bool], ...] = (
    ("AutoContrast", 0, 1, False),
    ("Equalize", 0, 1, False),
    ("Invert", 0, 1, False),
    ("Rotate", 0, 30, True),
    ("Posterize", 0, 4, False),
    ("Solarize", 0, 256, False),
    ("SolarizeAdd", 0, 110, False),
    ("Color", 0.1, 1.9, False),
    ("Contrast", 0.1, 1.9, False),
    ("Brightness", 0.1, 1.9, False),
    ("Sharpness", 0.1, 1.9, False),
    ("ShearX", 0.0, 0.3, True),
    ("ShearY", 0.0, 0.3, True),
    ("Cutout", 0, 40, False),
    ("TranslateX", 0.0, 100, True),
    ("TranslateY", 0.0, 100, True),
)
CUTOUT_FILL = (125, 123, 114)
MAX_MAGNITUDE = 30


def magnitude(m: float, low: float, high: float) -> float:
    """The op value at magnitude ``m`` (0..30), computed as the original does."""
    return (float(m) / 30) * float(high - low) + low


def _check(clip: Tensor) -> None:
    if clip.dtype != torch.uint8 or clip.dim() < 3 or clip.shape[-3] != 3:
        raise ValueError(f"RandAugment expects a uint8 clip (T, 3, H, W), got {clip.dtype} "
                         f"{tuple(clip.shape)}; apply it to decoded frames before to_float")


# ------------------------------------------------------------------------ per-channel LUTs

def _apply_lut(clip: Tensor, lut: Tensor) -> Tensor:
    """``lut`` (256,) or one (..., 3, 256) table per frame and channel -> mapped clip."""
    if lut.dim() == 1:
        return lut.to(torch.uint8)[clip.long()]
    flat = clip.reshape(-1, clip.shape[-2] * clip.shape[-1]).long()
    out = torch.gather(lut.reshape(-1, 256), 1, flat)
    return out.to(torch.uint8).view_as(clip)


def _histograms(clip: Tensor) -> Tensor:
    """(..., 3, H, W) uint8 -> int64 counts (..., 3, 256) per frame and channel."""
    flat = clip.reshape(-1, clip.shape[-2] * clip.shape[-1]).long()
    hist = torch.zeros(flat.shape[0], 256, dtype=torch.long)
    hist.scatter_add_(1, flat, torch.ones_like(flat))
    return hist.view(*clip.shape[:-2], 256)


def autocontrast(clip: Tensor) -> Tensor:
    """PIL ``ImageOps.autocontrast`` (cutoff 0) on every frame and channel."""
    lo = clip.amin(dim=(-2, -1)).double()[..., None]  # (..., 3, 1)
    hi = clip.amax(dim=(-2, -1)).double()[..., None]
    scale = torch.full_like(hi, 255.0) / (hi - lo).clamp(min=1)  # true division, as Python
    offset = -lo * scale
    lut = (torch.arange(256, dtype=torch.float64) * scale + offset).trunc().clamp(0, 255)
    lut = torch.where(hi > lo, lut, torch.arange(256, dtype=torch.float64))
    return _apply_lut(clip, lut.long())


def equalize(clip: Tensor) -> Tensor:
    """PIL ``ImageOps.equalize`` on every frame and channel."""
    hist = _histograms(clip)
    top = clip.amax(dim=(-2, -1)).long()[..., None]  # largest value present
    step = (hist.sum(-1, keepdim=True) - hist.gather(-1, top)) // 255
    before = hist.cumsum(-1) - hist  # pixels below each value
    lut = ((step // 2 + before) // step.clamp(min=1)).clamp(max=255)
    identity = torch.arange(256).expand_as(lut)
    usable = ((hist > 0).sum(-1, keepdim=True) > 1) & (step > 0)
    return _apply_lut(clip, torch.where(usable, lut, identity))


def invert(clip: Tensor) -> Tensor:
    return 255 - clip


def posterize(clip: Tensor, bits: int) -> Tensor:
    """Keep the ``bits`` high bits (PIL ``ImageOps.posterize``; 0 bits -> black)."""
    mask = ~(2 ** (8 - int(bits)) - 1) & 0xFF
    return clip & mask


def solarize(clip: Tensor, threshold: float) -> Tensor:
    """Invert pixels ``>= threshold`` (PIL ``ImageOps.solarize``)."""
    return torch.where(clip < threshold, clip, 255 - clip)


def solarize_add(clip: Tensor, addition: float, threshold: float = 128) -> Tensor:
    """Add ``addition``, clip to 0..255 (truncating), then solarize at ``threshold``."""
    values = torch.arange(256, dtype=torch.float64)
    shifted = (values + addition).clamp(0, 255).trunc().to(torch.uint8)
    return _apply_lut(clip, solarize(shifted, threshold))  # a 256-entry table of the op


# ------------------------------------------------------------------------ PIL ImageEnhance

def _blend(degenerate: Tensor, clip: Tensor, factor: float) -> Tensor:
    """PIL ``Image.blend(degenerate, clip, factor)``: float32 ``d + f (x - d)``, truncated."""
    d = degenerate.float()
    out = d + torch.tensor(factor, dtype=torch.float32) * (clip.float() - d)
    return out.clamp(0, 255).trunc().to(torch.uint8)


def grey_level(clip: Tensor) -> Tensor:
    """PIL's RGB -> L conversion: (..., 3, H, W) uint8 -> (..., 1, H, W) uint8."""
    r, g, b = clip.long().unbind(-3)
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).to(torch.uint8)[..., None, :, :]


def color(clip: Tensor, factor: float) -> Tensor:
    """PIL ``ImageEnhance.Color``: blend with the grey image."""
    return _blend(grey_level(clip).expand_as(clip), clip, factor)


def contrast(clip: Tensor, factor: float) -> Tensor:
    """PIL ``ImageEnhance.Contrast``: blend with the frame's mean grey level (rounded)."""
    grey = grey_level(clip)
    total = grey.sum(dim=(-3, -2, -1), dtype=torch.long).double()
    mean = total / torch.full_like(total, grey.shape[-1] * grey.shape[-2])  # true division
    level = (mean + 0.5).floor().to(torch.uint8)[..., None, None, None]
    return _blend(level.expand_as(clip), clip, factor)


def brightness(clip: Tensor, factor: float) -> Tensor:
    """PIL ``ImageEnhance.Brightness``: blend with black."""
    return _blend(torch.zeros_like(clip), clip, factor)


def smooth(clip: Tensor) -> Tensor:
    """PIL ``ImageFilter.SMOOTH`` (3x3 kernel 1 1 1 / 1 5 1 / 1 1 1, / 13, rounded); the
    one-pixel border is copied unchanged, as PIL does."""
    x = clip.int()
    h, w = x.shape[-2:]
    if h < 3 or w < 3:
        return clip.clone()
    total = sum(x[..., 1 + dy: h - 1 + dy, 1 + dx: w - 1 + dx]
                for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    inner = total + 4 * x[..., 1:-1, 1:-1]
    out = clip.clone()
    out[..., 1:-1, 1:-1] = ((2 * inner + 13) // 26).to(torch.uint8)  # round(S / 13)
    return out


def sharpness(clip: Tensor, factor: float) -> Tensor:
    """PIL ``ImageEnhance.Sharpness``: blend with the smoothed image."""
    return _blend(smooth(clip), clip, factor)


# ------------------------------------------------------------------------ geometry

def _fix(v: float) -> int:
    """PIL's 16.16 fixed point: FLOOR(v * 65536 + 0.5)."""
    return math.floor(v * 65536.0 + 0.5)


def affine(clip: Tensor, matrix: tuple[float, ...]) -> Tensor:
    """PIL ``Image.transform(size, AFFINE, matrix)`` with nearest sampling and black fill:
    output pixel (x, y) reads input (a x' + b y' + c, d x' + e y' + f) at pixel centres
    (x' = x + 0.5), in PIL's arithmetic (float for translations, 16.16 fixed point else)."""
    a, b, c, d, e, f = (float(v) for v in matrix[:6])
    h, w = clip.shape[-2:]
    ys = torch.arange(h, dtype=torch.long)[:, None]
    xs = torch.arange(w, dtype=torch.long)[None, :]
    if b == 0 and d == 0:  # PIL's scale/translate path: float coordinates
        xin = torch.floor(c + a * 0.5 + xs.double() * a).long().expand(h, w)
        yin = torch.floor(f + e * 0.5 + ys.double() * e).long().expand(h, w)
    else:
        x0, y0 = _fix(c + a * 0.5 + b * 0.5), _fix(f + d * 0.5 + e * 0.5)
        xin = (x0 + ys * _fix(b) + xs * _fix(a)) >> 16
        yin = (y0 + ys * _fix(e) + xs * _fix(d)) >> 16
    valid = (xin >= 0) & (xin < w) & (yin >= 0) & (yin < h)
    out = clip[..., yin.clamp(0, h - 1), xin.clamp(0, w - 1)]
    return out * valid.to(torch.uint8)


def rotate(clip: Tensor, degrees: float) -> Tensor:
    """PIL ``Image.rotate(degrees)``: counter-clockwise about the centre, nearest, black."""
    angle = degrees % 360.0
    if angle == 0:
        return clip.clone()
    h, w = clip.shape[-2:]
    if angle == 180:
        return clip.flip(-1, -2)
    if angle in (90, 270) and h == w:
        return clip.transpose(-1, -2).flip(-2 if angle == 90 else -1)
    rad = -math.radians(angle)
    cos, sin = round(math.cos(rad), 15), round(math.sin(rad), 15)
    cx, cy = w / 2, h / 2
    c = cos * -cx + sin * -cy + cx
    f = -sin * -cx + cos * -cy + cy
    return affine(clip, (cos, sin, c, -sin, cos, f))


def shear_x(clip: Tensor, v: float) -> Tensor:
    return affine(clip, (1, v, 0, 0, 1, 0))


def shear_y(clip: Tensor, v: float) -> Tensor:
    return affine(clip, (1, 0, 0, v, 1, 0))


def translate_x(clip: Tensor, pixels: float) -> Tensor:
    """Content moves left by ``pixels`` (output x reads input x + pixels)."""
    return affine(clip, (1, 0, pixels, 0, 1, 0))


def translate_y(clip: Tensor, pixels: float) -> Tensor:
    return affine(clip, (1, 0, 0, 0, 1, pixels))


def cutout(clip: Tensor, size: float, cx: float, cy: float) -> Tensor:
    """The original's ``CutoutAbs``: a grey square, corners ``int(max(0, c - size/2))`` and
    ``min(W, corner + size)``, both inclusive (PIL rectangle), around centre (cx, cy)."""
    if size < 0:
        return clip
    h, w = clip.shape[-2:]
    x0, y0 = int(max(0.0, cx - size / 2.0)), int(max(0.0, cy - size / 2.0))
    x1, y1 = int(min(w, x0 + size)), int(min(h, y0 + size))
    out = clip.clone()
    fill = torch.tensor(CUTOUT_FILL, dtype=torch.uint8)[:, None, None]
    out[..., y0:y1 + 1, x0:x1 + 1] = fill
    return out


# ------------------------------------------------------------------------ the transform

def apply_op(clip: Tensor, name: str, value: float, sign: float = 1.0,
             centre: tuple[float, float] = (0.0, 0.0)) -> Tensor:
    """Op ``name`` (see :data:`OPS`) at value ``value``; ``sign`` (+-1) for the signed ops,
    ``centre`` (x, y) for Cutout. (..., 3, H, W) uint8 -> same."""
    v = value * sign
    ops = {
        "AutoContrast": lambda: autocontrast(clip),
        "Equalize": lambda: equalize(clip),
        "Invert": lambda: invert(clip),
        "Rotate": lambda: rotate(clip, v),
        "Posterize": lambda: posterize(clip, int(value)),
        "Solarize": lambda: solarize(clip, value),
        "SolarizeAdd": lambda: solarize_add(clip, value),
        "Color": lambda: color(clip, value),
        "Contrast": lambda: contrast(clip, value),
        "Brightness": lambda: brightness(clip, value),
        "Sharpness": lambda: sharpness(clip, value),
        "ShearX": lambda: shear_x(clip, v),
        "ShearY": lambda: shear_y(clip, v),
        "Cutout": lambda: cutout(clip, value, *centre),
        "TranslateX": lambda: translate_x(clip, v),
        "TranslateY": lambda: translate_y(clip, v),
    }
    if name not in ops:
        raise ValueError(f"unknown RandAugment op {name!r}; choose from {list(ops)}")
    return ops[name]()


class RandAugment:
    """``n`` ops drawn with replacement from :data:`OPS` at magnitude ``m`` (0..30), drawn
    once per clip and applied identically to every frame (``per_frame=True``: a new draw
    per frame, as the original's per-frame wrapper does).

    ``__call__(clip uint8 (T, 3, H, W), generator=None) -> uint8 (T, 3, H, W)``.
    """

    def __init__(self, n: int, m: float, per_frame: bool = False) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"RandAugment n (ops per clip) must be a whole number >= 0, got "
                             f"{n!r}; ActionCLIP uses n=2")
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not (
                0 <= m <= MAX_MAGNITUDE):
            raise ValueError(f"RandAugment m (magnitude) must be a number from 0 to "
                             f"{MAX_MAGNITUDE}, got {m!r}; ActionCLIP uses m=9")
        self.n, self.m, self.per_frame = n, m, per_frame

    def __repr__(self) -> str:
        return f"RandAugment(n={self.n}, m={self.m}, per_frame={self.per_frame})"

    def draw(self, width: int, height: int,
             generator: torch.Generator | None = None) -> list[tuple[str, float, float, tuple]]:
        """The ops of one draw: (name, value, sign, cutout centre) each."""
        index = torch.randint(len(OPS), (self.n,), generator=generator).tolist()
        plan = []
        for i in index:
            name, low, high, signed = OPS[i]
            u_sign, u_x, u_y = torch.rand(3, generator=generator, dtype=torch.float64).tolist()
            sign = -1.0 if signed and u_sign > 0.5 else 1.0
            # the original's np.random.uniform(W) draws from (1, W] (low=W, high=1)
            centre = (width + (1 - width) * u_x, height + (1 - height) * u_y)
            plan.append((name, magnitude(self.m, low, high), sign, centre))
        return plan

    def __call__(self, clip: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check(clip)
        h, w = clip.shape[-2:]
        if self.per_frame and clip.dim() > 3:
            frames = clip.reshape(-1, *clip.shape[-3:])
            out = torch.stack([self(f, generator) for f in frames.unbind(0)])
            return out.view_as(clip)
        for name, value, sign, centre in self.draw(w, h, generator):
            clip = apply_op(clip, name, value, sign, centre)
        return clip
