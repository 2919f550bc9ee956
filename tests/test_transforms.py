"""Video transforms: exact pixels on small synthetic tensors, one draw per clip, mixup."""

from __future__ import annotations

import colorsys

import pytest
import torch

from claver.data import mixup as mx
from claver.data import transforms as tr
from claver.models.config import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def arange_video(t: int = 2, h: int = 6, w: int = 8, c: int = 3) -> torch.Tensor:
    return torch.arange(t * c * h * w, dtype=torch.float32).reshape(t, c, h, w)


def rand_video(t: int = 3, h: int = 5, w: int = 7, seed: int = 0) -> torch.Tensor:
    return torch.rand(t, 3, h, w, generator=gen(seed))


# --------------------------------------------------------------------------- geometry

def test_crop_gives_expected_block():
    v = arange_video()
    out = tr.crop(v, 1, 2, 3, 4)
    assert out.shape == (2, 3, 3, 4)
    # frame 0, channel 0, rows 1..3, cols 2..5 of a 6x8 arange
    assert out[0, 0].tolist() == [[10, 11, 12, 13], [18, 19, 20, 21], [26, 27, 28, 29]]
    assert torch.equal(out, v[..., 1:4, 2:6])
    with pytest.raises(ValueError, match="does not fit"):
        tr.crop(v, 4, 0, 3, 4)
    with pytest.raises(ValueError, match="does not fit"):
        tr.crop(v, 0, -1, 3, 4)


def test_hflip_reverses_columns():
    v = arange_video()
    out = tr.hflip(v)
    for j in range(8):
        assert torch.equal(out[..., j], v[..., 7 - j])
    assert out[0, 0, 0].tolist() == [7, 6, 5, 4, 3, 2, 1, 0]


def test_center_crop_offsets():
    v = arange_video(1, 6, 8)
    assert torch.equal(tr.center_crop(v, 4), v[..., 1:5, 2:6])  # (6-4)//2, (8-4)//2
    v = arange_video(1, 7, 9)
    assert torch.equal(tr.center_crop(v, (4, 5)), v[..., 1:5, 2:7])  # 3//2, 4//2
    with pytest.raises(ValueError):
        tr.center_crop(v, 8)


def test_three_crop_positions():
    v = arange_video(1, 4, 10)  # landscape: left 0, centre 3, right 6
    crops = tr.three_crop(v, 4)
    for out, left in zip(crops, (0, 3, 6), strict=True):
        assert torch.equal(out, v[..., :, left:left + 4])
    v = arange_video(1, 10, 4)  # portrait: top 0, centre 3, bottom 6
    for out, top in zip(tr.three_crop(v, 4), (0, 3, 6), strict=True):
        assert torch.equal(out, v[..., top:top + 4, :])
    # crop smaller than the short side: centred vertically (top 1); 11 - 4 = 7 is odd, so the
    # far crop starts at 2 * (7 // 2) = 6, one pixel short of the edge (mmaction2 ThreeCrop)
    v = arange_video(1, 6, 11)
    for out, left in zip(tr.three_crop(v, 4), (0, 3, 6), strict=True):
        assert torch.equal(out, v[..., 1:5, left:left + 4])


def test_resize_short_side_sizes():
    assert tr.short_side_size(240, 320, 224) == (224, 299)  # 298.67 -> 299
    assert tr.short_side_size(320, 240, 224) == (299, 224)  # portrait
    assert tr.short_side_size(5, 7, 3) == (3, 4)  # 4.2 -> 4
    assert tr.short_side_size(7, 5, 3) == (4, 3)
    assert tr.short_side_size(2, 3, 3) == (3, 5)  # 4.5 rounds half up
    assert tr.short_side_size(256, 340, 256) == (256, 340)
    for shape, size, expected in [((2, 3, 240, 320), 224, (224, 299)),
                                  ((2, 3, 320, 240), 224, (299, 224)),
                                  ((1, 3, 5, 7), 3, (3, 4)),
                                  ((1, 3, 9, 9), 13, (13, 13))]:
        for dtype in (torch.uint8, torch.float32):
            out = tr.resize_short_side(torch.zeros(shape, dtype=dtype), size)
            assert out.shape[-2:] == expected and out.dtype == dtype
    v = torch.zeros(1, 3, 256, 340)
    assert tr.resize_short_side(v, 256) is v


def test_resize_values():
    v = torch.full((2, 3, 9, 13), 0.25)
    assert torch.allclose(tr.resize(v, (4, 5)), torch.full((2, 3, 4, 5), 0.25))
    u = torch.full((1, 3, 9, 13), 77, dtype=torch.uint8)
    assert torch.equal(tr.resize(u, (20, 7)), torch.full((1, 3, 20, 7), 77, dtype=torch.uint8))
    # 12x12 checkerboard -> 4x4 (factor 3): antialiasing averages it to ~0.5; plain bilinear
    # samples exact pixel centres (1, 4, 7, 10) and aliases to 0/1
    board = ((torch.arange(12)[:, None] + torch.arange(12)[None, :]) % 2).float()
    board = board.expand(1, 3, 12, 12)
    half = torch.full((1, 3, 4, 4), 0.5)
    assert torch.allclose(tr.resize(board, 4), half, atol=0.12)
    assert torch.equal(tr.resize(board, 4, antialias=False), board[..., 1::3, 1::3])
    # leading dims are kept: (V, T, C, H, W)
    assert tr.resize(torch.zeros(2, 4, 3, 8, 8), 4).shape == (2, 4, 3, 4, 4)


# --------------------------------------------------------------------------- colour

def test_brightness_matches_formula():
    v = rand_video()
    assert torch.allclose(tr.adjust_brightness(v, 1.7), (v * 1.7).clamp(0, 1))
    u = (v * 255).round().to(torch.uint8)
    expected = (u.float() / 255 * 0.6).clamp(0, 1).mul(255).round().to(torch.uint8)
    assert torch.equal(tr.adjust_brightness(u, 0.6), expected)
    assert torch.equal(tr.adjust_brightness(v, 0.0), torch.zeros_like(v))


def test_grayscale_matches_formula():
    v = rand_video()
    gray = 0.299 * v[:, 0] + 0.587 * v[:, 1] + 0.114 * v[:, 2]
    out = tr.to_grayscale(v)
    assert out.shape == v.shape
    for c in range(3):
        assert torch.allclose(out[:, c], gray, atol=1e-6)
    assert tr.to_grayscale(v, 1).shape == (3, 1, 5, 7)
    px = torch.tensor([255, 0, 0], dtype=torch.uint8).view(1, 3, 1, 1)
    assert tr.to_grayscale(px, 1).item() == 76  # round(0.299 * 255) = round(76.245)


def test_contrast_and_saturation_match_formulas():
    v = rand_video()
    gray = 0.299 * v[:, 0:1] + 0.587 * v[:, 1:2] + 0.114 * v[:, 2:3]
    mean = gray.mean(dim=(1, 2, 3), keepdim=True)  # per frame
    assert torch.allclose(tr.adjust_contrast(v, 1.3), (1.3 * v - 0.3 * mean).clamp(0, 1),
                          atol=1e-6)
    assert torch.allclose(tr.adjust_contrast(v, 0.0), mean.expand_as(v), atol=1e-6)
    assert torch.allclose(tr.adjust_saturation(v, 0.5), (0.5 * v + 0.5 * gray).clamp(0, 1),
                          atol=1e-6)
    assert torch.allclose(tr.adjust_saturation(v, 0.0), gray.expand_as(v), atol=1e-6)


def test_hue_shifts():
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    assert torch.allclose(tr.adjust_hue(red, 1 / 3).flatten(), torch.tensor([0.0, 1.0, 0.0]),
                          atol=1e-5)
    assert torch.allclose(tr.adjust_hue(red, -1 / 3).flatten(), torch.tensor([0.0, 0.0, 1.0]),
                          atol=1e-5)
    u = torch.tensor([255, 0, 0], dtype=torch.uint8).view(1, 3, 1, 1)
    assert tr.adjust_hue(u, 1 / 3).flatten().tolist() == [0, 255, 0]
    v = rand_video()
    assert torch.allclose(tr.adjust_hue(v, 0.0), v, atol=1e-5)
    assert torch.allclose(tr.hsv_to_rgb(tr.rgb_to_hsv(v)), v, atol=1e-5)
    with pytest.raises(ValueError, match="hue"):
        tr.adjust_hue(v, 0.7)


def test_hsv_agrees_with_colorsys():
    v = rand_video(1, 4, 4, seed=3)
    hsv = tr.rgb_to_hsv(v)
    for y in range(4):
        for x in range(4):
            expected = colorsys.rgb_to_hsv(*v[0, :, y, x].tolist())
            assert torch.allclose(hsv[0, :, y, x], torch.tensor(expected), atol=1e-5)
    # ties between channels and the wrap-around of negative hues
    pixels = [(0.4, 0.4, 0.4), (1, 1, 0), (0, 1, 1), (1, 0, 1), (0.9, 0.1, 0.5), (0, 0, 0),
              (0.2, 0.7, 0.7), (0.6, 0.6, 0.1)]
    px = torch.tensor(pixels).T.reshape(1, 3, 1, len(pixels))
    hsv = tr.rgb_to_hsv(px)
    for i, rgb in enumerate(pixels):
        assert hsv[0, :, 0, i].tolist() == pytest.approx(colorsys.rgb_to_hsv(*rgb), abs=1e-6)
    assert torch.allclose(tr.hsv_to_rgb(hsv), px, atol=1e-6)


def tricky_pixels(n: int = 4000, seed: int = 11) -> torch.Tensor:
    """(1, 3, 1, N) RGB pixels: random, saturated, gray, black, white, two-way ties, and
    colours on sector edges (where the hue formula changes branch)."""
    g = gen(seed)
    px = [torch.rand(3, n, generator=g)]
    q = torch.randint(0, 256, (3, n), generator=g).float() / 255  # uint8 levels: many ties
    px.append(q)
    edges = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 1, 1], [0, 0, 1], [1, 0, 1],
                          [0.5, 0.5, 0.5], [0, 0, 0], [1, 1, 1], [0.7, 0.7, 0.2],
                          [0.2, 0.7, 0.7], [0.7, 0.2, 0.7], [0.3, 0.2, 0.2]]).T
    px.append(edges)
    return torch.cat(px, dim=1).view(1, 3, 1, -1)


def test_hue_equals_hsv_round_trip_and_colorsys():
    px = tricky_pixels()
    hsv = tr.rgb_to_hsv(px)
    for f in torch.linspace(-0.5, 0.5, 21).tolist() + [0.1, -0.1, 1 / 6, -1 / 3]:
        shifted = torch.stack([torch.remainder(hsv[:, 0] + f, 1.0), hsv[:, 1], hsv[:, 2]], 1)
        expected = tr.hsv_to_rgb(shifted).clamp(0, 1)
        out = tr.adjust_hue(px, f)
        assert (out - expected).abs().max() <= 2e-6, f
        assert out.min() >= 0 and out.max() <= 1
        # HSV keeps v and v - c: every channel stays within the pixel's own [min, max]
        assert (out >= px.amin(1, keepdim=True)).all() and (out <= px.amax(1, keepdim=True)).all()
    # an independent implementation: colorsys, pixel by pixel
    for f in (0.1, -0.07, 0.5, -0.5, 0.33):
        out = tr.adjust_hue(px[..., ::40], f)
        for i in range(out.shape[-1]):
            h, s, v = colorsys.rgb_to_hsv(*px[0, :, 0, 40 * i].tolist())
            expected = colorsys.hsv_to_rgb((h + f) % 1.0, s, v)
            assert out[0, :, 0, i].tolist() == pytest.approx(expected, abs=2e-6)


def test_colour_ops_leave_input_alone_and_chunks_do_not_matter(monkeypatch):
    from claver.data import color

    v = rand_video(5, 9, 11, seed=4)
    kept = v.clone()
    ops = [("saturation", 1.15), ("hue", -0.08), ("contrast", 0.7), ("brightness", 1.3)]
    jitter = tr.ColorJitter(p=1.0)
    outs = []
    for pixels in (1, 2 * 99, 1 << 20):  # one frame, two frames, the whole clip per chunk
        monkeypatch.setattr(color, "_CHUNK_PIXELS", pixels)
        outs.append(jitter(v, gen(8)))
        x = v.clone()
        color._jitter_(x, ops)
        outs.append(x)
        for fn in (tr.adjust_brightness, tr.adjust_contrast, tr.adjust_saturation):
            outs.append(fn(v, 0.6))
        outs.append(tr.adjust_hue(v, 0.2))
    assert torch.equal(v, kept)
    k = len(outs) // 3
    for a, b, c in zip(outs[:k], outs[k:2 * k], outs[2 * k:], strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_train_transform_equals_its_steps():
    # the fused chunked pipeline gives what its public steps give, one after the other
    t = tr.build_train_transform(20, mean=CLIP_MEAN, std=CLIP_STD, color_jitter=1.0,
                                 grayscale=0.3)
    v = torch.randint(0, 256, (5, 26, 34, 3), generator=gen(2), dtype=torch.uint8)
    for seed in range(12):
        g = gen(seed)
        x = tr.resize_short_side(v.permute(0, 3, 1, 2), t.resize_to)
        box = tr.multi_scale_crop_params(x.shape[-2], x.shape[-1], 20, generator=g)
        x = tr.to_float(tr.resize(tr.crop(x, *box), 20))
        x = t.gray(t.jitter(t.flip(x, g), g), g)
        expected = tr.normalize(x, CLIP_MEAN, CLIP_STD)
        out = t(v, gen(seed))
        assert (out - expected).abs().max() <= 1e-5, seed


def test_normalize_and_to_float():
    u = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1)
    f = tr.to_float(u)
    assert f.dtype == torch.float32 and f.flatten().tolist() == pytest.approx([0, 0.2, 1])
    assert tr.to_float(f) is f
    out = tr.normalize(f, CLIP_MEAN, CLIP_STD)
    expected = [(x - m) / s for x, m, s in zip([0, 0.2, 1], CLIP_MEAN, CLIP_STD, strict=True)]
    assert out.flatten().tolist() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(TypeError):
        tr.normalize(u, IMAGENET_MEAN, IMAGENET_STD)


# --------------------------------------------------------------------------- random crops

def test_multi_scale_crop_box_set_by_hand():
    # 8x12 video, target 4, scales (1, .5): sides int(8) = 8 and int(4) = 4; pairs (h, w)
    # with |i - j| <= 1: (8,8) (8,4) (4,8) (4,4); steps ((8-h)//4, (12-w)//4)
    expected5 = {
        (0, 0, 8, 8), (0, 4, 8, 8), (0, 2, 8, 8),  # steps (0, 1): lefts 0, 4, 2
        (0, 0, 8, 4), (0, 8, 8, 4), (0, 4, 8, 4),  # steps (0, 2)
        (0, 0, 4, 8), (0, 4, 4, 8), (4, 0, 4, 8), (4, 4, 4, 8), (2, 2, 4, 8),  # steps (1, 1)
        (0, 0, 4, 4), (0, 8, 4, 4), (4, 0, 4, 4), (4, 8, 4, 4), (2, 4, 4, 4),  # steps (1, 2)
    }
    assert tr.multi_scale_crop_boxes(8, 12, 4, (1, 0.5), num_fixed_crops=5) == expected5
    extra13 = {  # 4 edge midpoints and 4 quarter points, for the sizes whose steps are > 0
        (0, 1, 8, 8), (0, 3, 8, 8), (0, 2, 8, 4), (0, 6, 8, 4),
        (2, 0, 4, 8), (2, 4, 4, 8), (4, 2, 4, 8), (0, 2, 4, 8), (1, 1, 4, 8), (1, 3, 4, 8),
        (3, 1, 4, 8), (3, 3, 4, 8),
        (2, 0, 4, 4), (2, 8, 4, 4), (4, 4, 4, 4), (0, 4, 4, 4), (1, 2, 4, 4), (1, 6, 4, 4),
        (3, 2, 4, 4), (3, 6, 4, 4),
    }
    assert tr.multi_scale_crop_boxes(8, 12, 4, (1, 0.5)) == expected5  # default: 5 positions
    assert tr.multi_scale_crop_boxes(8, 12, 4, (1, 0.5), num_fixed_crops=13) == expected5 | extra13
    g = gen(0)
    drawn = {tr.multi_scale_crop_params(8, 12, 4, (1, 0.5), num_fixed_crops=5, generator=g)
             for _ in range(400)}
    assert drawn == expected5


def test_multi_scale_crop_kinetics_sizes():
    # 256x340 with S=224: sides int(256 s) = 256, 224, 192, 168 -> 10 (h, w) pairs
    allowed = tr.multi_scale_crop_boxes(256, 340, 224, num_fixed_crops=13)
    sizes = {(h, w) for _, _, h, w in allowed}
    assert sizes == {(256, 256), (256, 224), (224, 256), (224, 224), (224, 192), (192, 224),
                     (192, 192), (192, 168), (168, 192), (168, 168)}
    assert (0, 84, 256, 256) in allowed and (0, 21, 256, 256) in allowed  # w step 21
    g = gen(1)
    for _ in range(100):
        assert tr.multi_scale_crop_params(256, 340, 224, generator=g,
                                          num_fixed_crops=13) in allowed
    out = tr.multi_scale_crop(torch.zeros(2, 3, 256, 340, dtype=torch.uint8), 224, generator=g)
    assert out.shape == (2, 3, 224, 224) and out.dtype == torch.uint8


def test_random_resized_crop():
    g = gen(2)
    for _ in range(50):
        top, left, h, w = tr.random_resized_crop_params(60, 80, generator=g)
        assert 0 <= top <= 60 - h and 0 <= left <= 80 - w
        assert 0.08 * 4800 * 0.8 <= h * w <= 4800 and 0.7 <= w / h <= 1.45
    # impossible scale -> fallback: centred box with the aspect clamped to 4/3
    assert tr.random_resized_crop_params(10, 40, scale=(2.0, 3.0), generator=g) == (0, 13, 10, 13)
    assert tr.random_resized_crop_params(40, 10, scale=(2.0, 3.0), generator=g) == (13, 0, 13, 10)
    out = tr.random_resized_crop(rand_video(2, 30, 40), 16, generator=g)
    assert out.shape == (2, 3, 16, 16)


# --------------------------------------------------------------------------- random callables

def same_frames(t: int = 4, h: int = 20, w: int = 28, layout: str = "TCHW") -> torch.Tensor:
    frame = torch.randint(0, 256, (1, 3, h, w), generator=gen(5), dtype=torch.uint8)
    v = frame.expand(t, 3, h, w).contiguous()
    return v.permute(0, 2, 3, 1).contiguous() if layout == "THWC" else v


def test_color_jitter_one_draw_per_clip():
    v = tr.to_float(same_frames())
    for seed in range(20):
        out = tr.ColorJitter(p=1.0)(v, gen(seed))
        assert all(torch.equal(out[0], out[t]) for t in range(1, 4))
    assert tr.ColorJitter(p=0.0)(v, gen(0)) is v
    ops = tr.ColorJitter(p=1.0).sample(gen(3))
    assert sorted(name for name, _ in ops) == ["brightness", "contrast", "hue", "saturation"]
    bounds = {"brightness": (0.6, 1.4), "contrast": (0.6, 1.4), "saturation": (0.8, 1.2),
              "hue": (-0.1, 0.1)}
    for name, factor in ops:
        assert bounds[name][0] <= factor <= bounds[name][1]
    # brightness only: the output is clamp(x * f) with one f for every pixel and frame
    x = torch.full((3, 3, 4, 4), 0.5)
    out = tr.ColorJitter(brightness=0.4, contrast=0, saturation=0, hue=0, p=1.0)(x, gen(7))
    f = out[0, 0, 0, 0].item() / 0.5
    assert 0.6 <= f <= 1.4 and torch.allclose(out, (x * f).clamp(0, 1))


def test_flip_and_grayscale_callables():
    v = arange_video()
    assert torch.equal(tr.RandomHorizontalFlip(1.0)(v, gen()), tr.hflip(v))
    assert tr.RandomHorizontalFlip(0.0)(v, gen()) is v
    x = rand_video()
    assert torch.equal(tr.RandomGrayscale(1.0)(x, gen()), tr.to_grayscale(x))
    assert tr.RandomGrayscale(0.0)(x, gen()) is x


# --------------------------------------------------------------------------- pipelines

def test_train_transform_same_draw_for_all_frames():
    t = tr.build_train_transform(16, mean=CLIP_MEAN, std=CLIP_STD, color_jitter=1.0,
                                 grayscale=0.5)
    assert t.resize_to == 18  # 256 * 16 // 224
    v = same_frames(layout="THWC")
    for seed in range(10):
        out = t(v, gen(seed))
        assert out.shape == (4, 3, 16, 16) and out.dtype == torch.float32
        assert all(torch.equal(out[0], out[i]) for i in range(1, 4))


def test_train_transform_deterministic_and_layouts_agree():
    t = tr.build_train_transform(16, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    thwc, tchw = same_frames(layout="THWC"), same_frames(layout="TCHW")
    assert torch.equal(t(thwc, gen(3)), t(thwc, gen(3)))
    f = tr.to_float(tchw)
    kept = f.clone()
    for seed in range(5):  # float input in [0, 1]: the same draws and result up to the
        # rounding of the uint8 resize (<= 1/255, which hue/contrast can amplify on noise)
        diff = (t(f, gen(seed)) - t(tchw, gen(seed))).abs()
        assert diff.mean() < 0.01 and diff.max() < 0.15, (seed, diff.mean(), diff.max())
    assert torch.equal(f, kept)
    assert torch.allclose(t(thwc, gen(3)), t(tchw, gen(3)))
    outs = {t(thwc, gen(s)).sum().item() for s in range(6)}
    assert len(outs) > 1  # the draws do vary with the seed
    with pytest.raises(ValueError, match="ambiguous"):
        t(torch.zeros(2, 3, 8, 3, dtype=torch.uint8), gen())
    both = torch.zeros(2, 3, 8, 3, dtype=torch.uint8)
    assert t.__class__(16, mean=CLIP_MEAN, std=CLIP_STD, layout="TCHW")(both, gen()).shape \
        == (2, 3, 16, 16)


def test_train_transform_plain_path_is_exact():
    # no flip/jitter/grayscale; input short side already 256 * 28 // 224 = 32 and scales=(1,):
    # the only box is the whole 32x32 frame, resized to 28x28
    s = 28
    t = tr.build_train_transform(s, mean=(0, 0, 0), std=(1, 1, 1), scales=(1.0,), flip=0.0,
                                 color_jitter=0.0, grayscale=0.0)
    assert t.resize_to == 32
    v = torch.randint(0, 256, (2, 32, 32, 3), generator=gen(4), dtype=torch.uint8)
    expected = tr.to_float(tr.resize(v.permute(0, 3, 1, 2), s))  # uint8 resize, then /255
    assert torch.allclose(t(v, gen(0)), expected, atol=1e-6)
    float_path = tr.resize(tr.to_float(v.permute(0, 3, 1, 2)), s)
    assert (t(v, gen(0)) - float_path).abs().max() <= 1.01 / 255  # uint8 kernel: <= 1 step
    # with a 14 px target the 16 px side is within 2 px of it and snaps to 14 (mmaction2);
    # the position steps (16 - 14) // 4 are 0, so every fixed position is the corner
    assert tr.multi_scale_crop_boxes(16, 16, 14, (1.0,)) == {(0, 0, 14, 14)}
    # 22x22, scales (1, .75): sides 22 and int(16.5) = 16 -> snaps to 14; steps 0 and 2
    boxes = tr.multi_scale_crop_boxes(22, 22, 14, (1.0, 0.75), num_fixed_crops=13)
    assert {(h, w) for _, _, h, w in boxes} == {(22, 22), (22, 14), (14, 22), (14, 14)}
    assert {(0, 0, 22, 22), (8, 8, 14, 14), (4, 4, 14, 14), (6, 2, 14, 14)} <= boxes


def test_eval_transform_exact_pixels():
    s = 8
    # one view: short side 256 * 8 // 224 = 9 (already), centre crop top 0, left (15 - 8) // 2
    v1 = torch.randint(0, 256, (3, 9, 15, 3), generator=gen(6), dtype=torch.uint8)
    one = tr.build_eval_transform(s, mean=CLIP_MEAN, std=CLIP_STD)
    assert one.resize_to == 9
    out = one(v1)
    assert out.shape == (3, 3, s, s)
    x1 = tr.to_float(v1.permute(0, 3, 1, 2))
    assert torch.allclose(out, tr.normalize(x1[..., 0:s, 3:3 + s], CLIP_MEAN, CLIP_STD),
                          atol=1e-6)
    # three crops: short side S = 8 (already), lefts 0, 3, 6
    v = torch.randint(0, 256, (3, s, s + 6, 3), generator=gen(6), dtype=torch.uint8)
    x = tr.to_float(v.permute(0, 3, 1, 2))
    three = tr.build_eval_transform(s, mean=CLIP_MEAN, std=CLIP_STD, crops=3)(v)
    assert three.shape == (3, 3, 3, s, s)
    for k, left in enumerate((0, 3, 6)):
        assert torch.allclose(three[k], tr.normalize(x[..., left:left + s], CLIP_MEAN, CLIP_STD),
                              atol=1e-6)
    big = torch.zeros(2, 3, 24, 40, dtype=torch.uint8)
    assert one(big).shape == (2, 3, s, s)
    with pytest.raises(ValueError, match="crops"):
        tr.build_eval_transform(s, mean=CLIP_MEAN, std=CLIP_STD, crops=2)


# --------------------------------------------------------------------------- mixup / cutmix

def test_smooth_one_hot_hard_and_multi_hot():
    y = mx.smooth_one_hot(torch.tensor([2, 0]), 4, 0.1)
    off, on = 0.1 / 4, 1 - 0.1 + 0.1 / 4
    assert y.flatten().tolist() == pytest.approx([off, off, on, off, on, off, off, off])
    multi = mx.smooth_one_hot(torch.tensor([[1, 0, 1, 0]]), 4, 0.0)
    assert multi.tolist() == [[0.5, 0.0, 0.5, 0.0]]
    with pytest.raises(ValueError, match="outside"):
        mx.smooth_one_hot(torch.tensor([4]), 4, 0.1)


def test_mixup_off_gives_smoothed_one_hot_for_hard_labels():
    videos = torch.rand(3, 2, 3, 4, 4, generator=gen())
    labels = torch.tensor([0, 1, 2])
    expected = mx.smooth_one_hot(labels, 5, 0.1)
    for kwargs in ({"prob": 0.0}, {"mixup_alpha": 0.0, "cutmix_alpha": 0.0}):
        out, targets = mx.mixup_cutmix(videos, labels, 5, generator=gen(), **kwargs)
        assert out is videos and torch.allclose(targets, expected)


SWAP = torch.tensor([1, 0])  # pair the two videos with each other (the default is random)


def two_videos() -> tuple[torch.Tensor, torch.Tensor]:
    videos = torch.stack([torch.zeros(3, 3, 10, 12), torch.ones(3, 3, 10, 12)])
    return videos, torch.tensor([1, 3])


def test_mixup_lambda_mix():
    videos, labels = two_videos()
    y = mx.smooth_one_hot(labels, 4, 0.1)
    for seed in range(5):
        out, targets = mx.mixup_cutmix(videos, labels, 4, cutmix_alpha=0.0, generator=gen(seed),
                                       partner=SWAP)
        lam = 1.0 - out[0, 0, 0, 0, 0].item()  # video 0 = lam * 0 + (1 - lam) * 1
        assert torch.allclose(out[0], torch.full_like(out[0], 1 - lam))
        assert torch.allclose(out[1], torch.full_like(out[1], lam))
        assert torch.allclose(targets.sum(1), torch.ones(2))
        assert torch.allclose(targets[0], lam * y[0] + (1 - lam) * y[1], atol=1e-6)
        assert torch.allclose(targets[1], lam * y[1] + (1 - lam) * y[0], atol=1e-6)
    assert videos[0].eq(0).all() and videos[1].eq(1).all()  # inputs untouched


def test_cutmix_box_same_across_frames_and_lambda_is_area():
    videos, labels = two_videos()
    y = mx.smooth_one_hot(labels, 4, 0.1)
    nonempty = 0
    for seed in range(20):
        out, targets = mx.mixup_cutmix(videos, labels, 4, mixup_alpha=0.0, generator=gen(seed),
                                       partner=SWAP)
        box = out[0] == 1  # pasted from video 1
        assert torch.equal(box, box[:1, :1].expand_as(box))  # same for every frame and channel
        assert torch.equal(out[1] == 0, box)  # the same box pasted the other way
        rows, cols = box[0, 0].any(1), box[0, 0].any(0)
        assert box[0, 0].sum() == rows.sum() * cols.sum()  # a rectangle
        lam = 1.0 - box[0, 0].float().mean().item()
        assert torch.allclose(targets[0], lam * y[0] + (1 - lam) * y[1], atol=1e-6)
        assert torch.allclose(targets.sum(1), torch.ones(2))
        nonempty += int(box.any())
    assert nonempty > 10


def test_mixup_switch_deterministic_odd_batch_and_multi_hot():
    videos = torch.rand(5, 2, 3, 8, 8, generator=gen(1))
    labels = torch.tensor([0, 1, 2, 3, 4])
    a = mx.mixup_cutmix(videos, labels, 6, generator=gen(9))
    b = mx.mixup_cutmix(videos, labels, 6, generator=gen(9))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # paired with the mirror batch, the middle sample of an odd batch pairs with itself
    m = mx.mixup_cutmix(videos, labels, 6, generator=gen(9), partner=torch.arange(4, -1, -1))
    assert torch.allclose(m[0][2], videos[2]) and torch.allclose(
        m[1][2], mx.smooth_one_hot(labels[2:3], 6, 0.1)[0])
    multi = torch.zeros(5, 6)
    multi[:, 0] = 1
    multi[0, 5] = 1
    _, targets = mx.mixup_cutmix(videos, multi, 6, generator=gen(2))
    assert torch.allclose(targets.sum(1), torch.ones(5))
    with pytest.raises(TypeError):
        mx.mixup_cutmix(videos.to(torch.uint8), labels, 6)
