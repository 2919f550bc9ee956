"""Attention heat-maps, their pictures, and the Kronecker mask picture.

The heat-map must follow a bright square across frames. A random model does not look at
anything in particular, so the test *rigs* a tiny model whose behaviour is known by
construction: patch tokens carry their brightness in one channel, the earlier blocks are
identities, and in the last spatial block the CLS query matches that channel, so CLS attends
to bright patches; the attention output feeds the video embedding, so the label's logit
grows with the attention paid to bright patches (its gradient is positive there). Both
methods must then put each frame's maximum on the square's patch: this checks the plumbing
(frame order, patch grid orientation, per-frame maps, up-sampling into the picture), not
what a trained network learns.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import claver
from claver.cli import main
from claver.explain import (
    attention_maps,
    explain,
    mask_image,
    recorded_attention,
)
from claver.models.factory import save_model
from claver.models.kronecker import kronecker_mask
from videos import make_video

PIL = pytest.importorskip("PIL.Image")
CELLS = [(0, 0), (1, 2), (3, 1), (2, 3)]  # (row, col) of the square's patch in frames 0..3


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def rigged(name: str = "claver-tiny") -> torch.nn.Module:
    """A tiny model whose last spatial block's CLS attends to bright patches (see above)."""
    torch.manual_seed(0)
    m = claver.create_model(name, num_frames=4).eval()
    v = m.visual
    w = v.conv1.weight.shape[0]
    with torch.no_grad():
        v.conv1.weight.zero_()
        v.conv1.weight[0] = 1.0 / v.conv1.weight[0].numel()  # channel 0: mean brightness
        v.class_embedding.zero_()
        v.class_embedding[2] = 1.0  # channel 2: "I am CLS"
        v.positional_embedding.zero_()
        v.positional_embedding[:, 1] = 1.0  # a constant, so LayerNorm keeps brightness
        blocks = list(v.transformer.resblocks)
        if hasattr(v, "transformer_t"):
            blocks += list(v.transformer_t.resblocks)
            v.temporal_embedding.zero_()
        for block in blocks:  # identities: zero what they add to the residual stream
            for name_, p in block.named_parameters():
                if "out_proj" in name_ or "c_proj" in name_:
                    p.zero_()
        last = v.transformer.resblocks[-1].attn
        last.in_proj_weight.zero_()
        last.in_proj_bias.zero_()
        last.in_proj_weight[0, 2] = 1.0  # q[0] = CLS flag
        last.in_proj_weight[w, 0] = 1.0  # k[0] = brightness
        last.in_proj_weight[2 * w + 3, 0] = 1.0  # v[3] = brightness
        last.out_proj.weight[3, 3] = 1.0  # CLS channel 3 += attended brightness
        v.proj.zero_()
        v.proj[3, 0] = 1.0  # embedding dim 0: attended brightness
        v.proj[2, 1] = 1.0  # embedding dim 1: a constant
        m.ln_final.weight.zero_()
        m.ln_final.bias.zero_()
        m.ln_final.bias[0] = 1.0
        m.text_projection.zero_()
        m.text_projection[0, 0] = 1.0  # every text embeds to e0
    return m


def square_video(size: int = 64) -> np.ndarray:
    """uint8 (4, size, size, 3): black, one white patch-sized square per frame (CELLS)."""
    cell = size // 4
    video = np.zeros((4, size, size, 3), np.uint8)
    for t, (r, c) in enumerate(CELLS):
        video[t, r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = 255
    return video


@pytest.mark.parametrize("name", ["claver-tiny", "actionclip-tiny"])
@pytest.mark.parametrize("method", ["grad-attention", "attention"])
def test_heatmap_follows_the_bright_square(name, method):
    exp = explain(square_video(), ["thing", "other"], rigged(name), method=method)
    assert exp.heatmaps.shape == (4, 4, 4)
    assert float(exp.heatmaps.min()) == 0 and float(exp.heatmaps.max()) == 1
    peaks = [divmod(int(h.argmax()), 4) for h in exp.heatmaps]
    assert peaks == CELLS
    # the map is concentrated: the square's patch holds most of the frame's mass
    for h, (r, c) in zip(exp.heatmaps, CELLS, strict=True):
        assert h[r, c] > 0.5 * h.sum()


def test_a_random_model_does_not_pass_the_rigged_test():
    torch.manual_seed(0)
    random = claver.create_model("claver-tiny", num_frames=4)
    exp = explain(square_video(), ["thing", "other"], random, method="attention")
    assert [divmod(int(h.argmax()), 4) for h in exp.heatmaps] != CELLS


def test_explicit_attention_equals_sdpa():
    torch.manual_seed(0)
    m = claver.create_model("claver-tiny", num_frames=4).eval()
    x = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        a = m.encode_video(x)
        with recorded_attention(m.visual.transformer.resblocks[-1].attn) as store:
            b = m.encode_video(x)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert store["probs"].shape == (8, 1, 17, 17)
    torch.testing.assert_close(store["probs"].sum(-1), torch.ones(8, 1, 17))
    assert "forward" not in vars(m.visual.transformer.resblocks[-1].attn)  # restored


def inferno(values: np.ndarray) -> np.ndarray:
    """Reference colours: matplotlib's inferno map, float RGB in [0, 255]."""
    import matplotlib

    return np.asarray(matplotlib.colormaps["inferno"](values))[..., :3] * 255


def bilinear(grid: np.ndarray, y: int, x: int, size: int) -> float:
    """Pixel (y, x) of ``grid`` (g, g) scaled to (size, size), half-pixel centres, edges
    clamped (what ``F.interpolate(mode="bilinear", align_corners=False)`` defines)."""
    g = grid.shape[0]

    def taps(p: int) -> tuple[int, int, float]:
        s = min(max((p + 0.5) * g / size - 0.5, 0.0), g - 1.0)
        lo = int(np.floor(s))
        return lo, min(lo + 1, g - 1), s - lo

    y0, y1, wy = taps(y)
    x0, x1, wx = taps(x)
    top = grid[y0, x0] * (1 - wx) + grid[y0, x1] * wx
    bottom = grid[y1, x0] * (1 - wx) + grid[y1, x1] * wx
    return float(top * (1 - wy) + bottom * wy)


def test_pictures_have_the_documented_shapes(tmp_path):
    exp = explain(square_video(), ["thing", "other"], rigged(), label="other")
    assert exp.label == "other" and exp.frames.shape == (4, 32, 32, 3)
    assert exp.times is None and exp.captions() == [f"frame {i}/4" for i in range(1, 5)]
    paths = exp.save(tmp_path, "sq")
    png = PIL.open(paths["png"])
    assert png.size == (int(100 * (2.2 * 4 + 4)), 520)  # 2.2 in per frame + 4 in, 100 dpi
    gif = PIL.open(paths["gif"])
    assert gif.n_frames == 4 and gif.size == (128, 128) and gif.info.get("loop") == 0
    overlays = [o.numpy().astype(float) for o in exp.overlays()]
    for t, (r, c) in enumerate(CELLS):
        # the frames the model saw: white square where expected, black elsewhere
        frame = exp.frames[t].numpy()
        assert frame[r * 8 + 4, c * 8 + 4].min() > 200 and frame[(r + 2) % 4 * 8 + 4].max() < 30
        # overlay = (frame + colour of the bilinearly up-sampled heat) / 2
        heat = exp.heatmaps[t].numpy()
        y, x = r * 32 + 16, c * 32 + 16
        assert bilinear(heat, y, x, 128) > 0.9
        np.testing.assert_allclose(overlays[t][y, x],
                                   (255 + inferno(bilinear(heat, y, x, 128))) / 2, atol=1.01)
        far = ((r + 2) % 4 * 32 + 16, (c + 2) % 4 * 32 + 16)
        np.testing.assert_allclose(overlays[t][far], inferno(bilinear(heat, *far, 128)) / 2,
                                   atol=1.01)
        # the GIF holds the same picture (up to its 256-colour palette), caption on top
        gif.seek(t)
        shown = np.asarray(gif.convert("RGB")).astype(float)
        assert np.abs(shown[64:] - overlays[t][64:]).mean() < 6
    assert exp.overlays(tile=40)[0].shape == (40, 40, 3)


def test_file_frames_carry_their_times(tmp_path):
    path = make_video(tmp_path / "v.mp4", num_frames=20, fps=10, size=(64, 48))
    exp = explain(path, ["a", "b"], rigged())
    # 4 segment centres of 20 frames: 2, 7, 12, 17 -> at 10 fps
    assert exp.times == pytest.approx((0.2, 0.7, 1.2, 1.7))
    assert exp.captions() == ["t = 0.20 s", "t = 0.70 s", "t = 1.20 s", "t = 1.70 s"]


def test_grad_attention_of_the_other_label_also_works_on_files(tmp_path):
    path = make_video(tmp_path / "v.mp4", num_frames=12, size=(64, 48))
    m = rigged()
    for method in ("grad-attention", "attention"):
        maps = explain(path, ["a", "b"], m, method=method).heatmaps
        assert maps.shape == (4, 4, 4) and torch.isfinite(maps).all()
    with pytest.raises(ValueError, match="not one of the labels"):
        explain(path, ["a", "b"], m, label="c")
    with pytest.raises(ValueError, match="method"):
        attention_maps(m, torch.zeros(1, 4, 3, 32, 32), torch.zeros(1, 2, 64), 0, "saliency")


@pytest.mark.parametrize("mode", ["kmt", "kmct"])
def test_mask_picture_matches_the_mask(mode, tmp_path):
    t, n = 3, 4
    img = mask_image(t, n, mode, cell=5)
    assert img.shape == (60, 60, 3)
    mask = kronecker_mask(t, n, mode)
    for i in range(t * n):
        for j in range(t * n):
            pixel = img[i * 5 + 2, j * 5 + 2]
            if i == j:
                assert pixel.tolist() == [255, 140, 0]
            else:
                assert (pixel.min() > 200) == bool(mask[i, j])
    from claver.figures import mask_figure

    assert PIL.open(mask_figure(t, n, mode, tmp_path / "m.png")).size == (800, 860)


def test_cli_explain_writes_grid_gif_and_mask(tmp_path, capsys):
    model_path = save_model(rigged(), tmp_path / "rigged.safetensors")
    video = tmp_path / "clip.mp4"
    make_video(video, num_frames=10, size=(64, 48))
    out = tmp_path / "out"
    assert main(["explain", str(video), "--labels", "a,b", "--model", str(model_path),
                 "--out", str(out), "--tile", "64"]) == 0
    text = capsys.readouterr().out
    assert "grad-attention" in text and "mask" in text
    assert PIL.open(out / "clip.explain.png").size == (1280, 520)
    gif = PIL.open(out / "clip.explain.gif")
    assert gif.n_frames == 4 and gif.size == (64, 64)
    assert PIL.open(out / "clip.mask.png").size == (800, 860)
    # an ActionCLIP model has no Kronecker mask: no mask picture, a note instead
    ac = save_model(rigged("actionclip-tiny"), tmp_path / "ac.safetensors")
    assert main(["explain", str(video), "--labels", "a,b", "--model", str(ac), "--out",
                 str(tmp_path / "ac"), "--method", "attention"]) == 0
    assert "no Kronecker mask" in capsys.readouterr().out
    assert not (tmp_path / "ac" / "clip.mask.png").exists()
    assert main(["explain", str(video), "--labels", "a,b", "--model", str(ac),
                 "--label", "zzz"]) == 2
