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
from claver.images import write_png
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


def test_pictures_have_the_documented_shapes(tmp_path):
    exp = explain(square_video(), ["thing", "other"], rigged(), label="other")
    assert exp.label == "other" and exp.frames.shape == (4, 32, 32, 3)
    paths = exp.save(tmp_path, "sq")
    png = np.asarray(PIL.open(paths["png"]).convert("RGB"))
    assert png.shape == (2 * 128 + 4, 4 * 128 + 3 * 4, 3)  # tiles of max(S, 128) px, 4 px gaps
    gif = PIL.open(paths["gif"])
    assert gif.n_frames == 4 and gif.size == (128, 128)
    # top row: the frames the model saw (white square where expected)
    for t, (r, c) in enumerate(CELLS):
        tile = png[:128, t * 132:t * 132 + 128]
        far = ((r + 2) % 4 * 32 + 16, (c + 2) % 4 * 32 + 16)
        assert tile[r * 32 + 16, c * 32 + 16].min() > 200 and tile[far].max() < 30
        # bottom row: the hottest colour (dark red end of the scale) sits on the square
        heat = png[132:, t * 132:t * 132 + 128].astype(int)
        redness = heat[..., 0] - heat[..., 2]
        y, x = np.unravel_index(redness.argmax(), redness.shape)
        assert (y // 32, x // 32) == (r, c)
    assert exp.grid(tile=40).shape == (84, 172, 3)


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
    back = np.asarray(PIL.open(write_png(tmp_path / "m.png", img)))
    assert (back == img.numpy()).all()


def test_cli_explain_writes_grid_gif_and_mask(tmp_path, capsys):
    model_path = save_model(rigged(), tmp_path / "rigged.safetensors")
    video = tmp_path / "clip.mp4"
    make_video(video, num_frames=10, size=(64, 48))
    out = tmp_path / "out"
    assert main(["explain", str(video), "--labels", "a,b", "--model", str(model_path),
                 "--out", str(out), "--tile", "64"]) == 0
    text = capsys.readouterr().out
    assert "grad-attention" in text and "mask" in text
    png = np.asarray(PIL.open(out / "clip.explain.png"))
    assert png.shape == (2 * 64 + 4, 4 * 64 + 3 * 4, 3)
    assert PIL.open(out / "clip.explain.gif").n_frames == 4
    mask = PIL.open(out / "clip.mask.png")
    assert mask.size[0] == mask.size[1] >= 4 * 17
    # an ActionCLIP model has no Kronecker mask: no mask picture, a note instead
    ac = save_model(rigged("actionclip-tiny"), tmp_path / "ac.safetensors")
    assert main(["explain", str(video), "--labels", "a,b", "--model", str(ac), "--out",
                 str(tmp_path / "ac"), "--method", "attention"]) == 0
    assert "no Kronecker mask" in capsys.readouterr().out
    assert not (tmp_path / "ac" / "clip.mask.png").exists()
    assert main(["explain", str(video), "--labels", "a,b", "--model", str(ac),
                 "--label", "zzz"]) == 2
