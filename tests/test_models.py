"""CLAVER and ActionCLIP: forward semantics, gradients, presets and bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import claver
from claver.models.config import get_config, model_names

T = 4


def tiny(name="claver-tiny", **kw):
    torch.manual_seed(0)
    return claver.create_model(name, num_frames=T, **kw).eval()


def video(b=2, t=T, s=32, seed=1):
    return torch.randn(b, t, 3, s, s, generator=torch.Generator().manual_seed(seed))


def test_claver_structure_follows_the_paper():
    m = tiny()
    cfg = m.config
    assert len(m.visual.transformer.resblocks) == cfg.vision.layers == 3
    assert len(m.visual.transformer_t.resblocks) == cfg.vision.layers // 3 == 1
    assert m.visual.temporal_embedding.shape == (1, T, cfg.vision.width)
    keys = set(m.state_dict())
    for k in ["visual.temporal_embedding",
              "visual.transformer_t.resblocks.0.temporal_attn.in_proj_weight",
              "visual.transformer_t.resblocks.0.temporal_attn.out_proj.weight",
              "visual.transformer_t.resblocks.0.temporal_ln_1.weight",
              "visual.transformer_t.resblocks.0.temporal_mlp.c_fc.weight",
              "visual.transformer_t.resblocks.0.temporal_mlp.c_proj.bias",
              "visual.transformer_t.resblocks.0.temporal_ln_2.bias",
              "visual.transformer.resblocks.2.attn.in_proj_bias", "visual.proj",
              "token_embedding.weight", "text_projection", "logit_scale", "ln_final.weight"]:
        assert k in keys, k
    assert get_config("claver-vit-l14").num_temporal_layers == 8


def test_claver_video_embedding_is_mean_of_normalised_frames():
    m = tiny()
    v = video()
    with torch.no_grad():
        frames = m.encode_frames(v)
        emb = m.encode_video(v)
        # the same pipeline written out step by step
        vis = m.visual
        x = vis.tokens(v.flatten(0, 1)).view(2, T, -1, vis.cfg.width)
        x = x + vis.temporal_embedding[:, :, None]
        x = vis.transformer_t(x.reshape(2, -1, vis.cfg.width), T).view(2, T, -1, vis.cfg.width)
        manual = F.normalize(vis.ln_post(x[:, :, 0]) @ vis.proj, dim=-1).mean(1)
    assert frames.shape == (2, T, 64)
    torch.testing.assert_close(emb, manual)
    assert not torch.allclose(emb.norm(dim=-1), torch.ones(2))  # mean is not re-normalised


def test_forward_logits_shape_and_scale():
    m = tiny()
    tokens = claver.tokenize(["a", "b", "c"])  # C = 3
    text = torch.stack([tokens, claver.tokenize(["a video of a", "b!", "c?"])])  # A = 2
    with torch.no_grad():
        logits = m(video(), text)
        v = m.encode_video(video())
        t = m.encode_text(text.view(-1, 77)).view(2, 3, -1)
    assert logits.shape == (2, 2, 3)
    expected = m.logit_scale.exp() * torch.einsum("be,ace->bac", v, t)
    torch.testing.assert_close(logits, expected)
    assert m(video(), tokens).shape == (2, 3)


@pytest.mark.parametrize("mode", ["kmt", "kmct"])
def test_temporal_order_matters(mode):
    m = tiny(mask=mode)
    v = video()
    with torch.no_grad():
        a, b = m.encode_video(v), m.encode_video(v.flip(1))
    assert (a - b).abs().max() > 1e-4


def test_kmct_model_is_causal_per_frame():
    m = tiny(mask="kmct")
    v = video()
    v2 = v.clone()
    v2[:, 2:] = torch.randn_like(v2[:, 2:])
    with torch.no_grad():
        f1, f2 = m.encode_frames(v), m.encode_frames(v2)
    torch.testing.assert_close(f1[:, :2], f2[:, :2])
    assert (f1[:, 2:] - f2[:, 2:]).abs().max() > 1e-4


@pytest.mark.parametrize("name,kw", [
    ("claver-tiny", {"mask": "kmt"}), ("claver-tiny", {"mask": "kmct"}),
    *[("actionclip-tiny", {"fusion": f}) for f in ["Conv1D", "LSTM", "Transf", "Transf_cls"]],
])
def test_every_parameter_receives_a_gradient(name, kw):
    m = tiny(name, **kw).train()
    text = claver.tokenize(["x", "y", "z"])
    logits = m(video(), text)
    F.cross_entropy(logits, torch.tensor([0, 2])).backward()
    no_grad = [n for n, p in m.named_parameters()
               if p.grad is None or p.grad.abs().sum() == 0]
    # the embedding rows of tokens never used legitimately get no gradient
    assert no_grad == ["token_embedding.weight"] or no_grad == [], no_grad
    assert m.token_embedding.weight.grad[text.unique()].abs().sum() > 0


def test_gradient_checkpointing_gives_same_gradients():
    m = tiny().train()
    text = claver.tokenize(["x", "y"])
    v = video()
    F.cross_entropy(m(v, text), torch.tensor([0, 1])).backward()
    ref = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad()
    m.set_grad_checkpointing(True)
    F.cross_entropy(m(v, text), torch.tensor([0, 1])).backward()
    for n, p in m.named_parameters():
        torch.testing.assert_close(p.grad, ref[n], msg=n)


def test_actionclip_meanp_is_normalised_mean():
    m = tiny("actionclip-tiny", fusion="meanP")
    v = video()
    with torch.no_grad():
        frames = m.encode_frames(v)
        manual = F.normalize(m.visual(v.flatten(0, 1)).view(2, T, -1).mean(1), dim=-1)
        torch.testing.assert_close(m.encode_video(v), manual)
    assert frames.shape == (2, T, 64)


def test_conv1d_fusion_convolves_over_time():
    """Shift init: 1/4 channels read t-1, 1/4 read t+1, 1/2 identity; + residual; mean."""
    m = tiny("actionclip-tiny", fusion="Conv1D")
    E = m.config.embed_dim
    x = torch.randn(3, T, E)
    out = m.fusion(x)
    s = x.sum(1)
    q = E // 4
    expected = torch.empty(3, E)
    expected[:, :q] = (2 * s[:, :q] - x[:, T - 1, :q]) / T  # frame t-1 shifted in, last drops
    expected[:, q:E - q] = 2 * s[:, q:E - q] / T
    expected[:, E - q:] = (2 * s[:, E - q:] - x[:, 0, E - q:]) / T
    torch.testing.assert_close(out, expected)


def test_transf_fusion_uses_frame_order():
    m = tiny("actionclip-tiny", fusion="Transf")
    x = torch.randn(2, T, 64)
    with torch.no_grad():
        assert (m.fusion(x) - m.fusion(x.flip(1))).abs().max() > 1e-5
        cls_m = tiny("actionclip-tiny", fusion="Transf_cls")
        assert cls_m.fusion(x).shape == (2, 64)


def test_model_names_and_presets():
    names = claver.list_models()
    for n in ["claver-vit-b32", "claver-vit-b16", "claver-vit-l14", "claver-vit-l14-336",
              "actionclip-vit-b16", "clip-vit-b32", "claver-tiny"]:
        assert n in names
    assert names == model_names()
    b16 = get_config("claver-vit-b16", num_frames=16)
    assert (b16.vision.patch_size, b16.vision.width, b16.num_frames) == (16, 768, 16)
    assert get_config("ViT-L/14@336px").vision.image_size == 336


@pytest.mark.parametrize("bad,match", [
    ("claver-vit-b99", "unknown model name 'claver-vit-b99'"),
    ("resnet50", "expected one of"),
])
def test_unknown_model_name(bad, match):
    with pytest.raises(ValueError, match=match):
        claver.create_model(bad)


def test_bad_options():
    with pytest.raises(ValueError, match="mask must be one of"):
        claver.create_model("claver-tiny", mask="causal")
    with pytest.raises(ValueError, match="fusion must be one of"):
        claver.create_model("actionclip-tiny", fusion="GRU")
    with pytest.raises(TypeError, match="unknown model option"):
        claver.create_model("claver-tiny", frames=8)


@pytest.mark.parametrize("shape,match", [
    ((2, 8, 3, 32, 32), "built for num_frames=4, got a video with 8 frames"),
    ((2, T, 3, 64, 64), "expects 32x32 frames, got 64x64"),
    ((T, 3, 32, 32), r"expected a video batch of shape \(B, T=4, 3, 32, 32\)"),
    ((2, T, 32, 32, 3), "channels before height"),
])
def test_bad_video_shapes(shape, match):
    m = tiny()
    with pytest.raises(ValueError, match=match):
        m.encode_video(torch.zeros(shape))


def test_bad_text_and_dtype():
    m = tiny()
    with pytest.raises(ValueError, match=r"expected text tokens of shape \(N, 77\)"):
        m.encode_text(torch.zeros(2, 50, dtype=torch.long))
    with pytest.raises(ValueError, match="normalised float video"):
        m.encode_video(torch.zeros(1, T, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(A, C, 77\)"):
        m(video(), torch.zeros(1, 1, 2, 77, dtype=torch.long))


@pytest.mark.parametrize("name,count", [
    # parameter counts of OpenAI's released CLIP models
    ("clip-vit-b32", 151_277_313), ("clip-vit-b16", 149_620_737),
    ("clip-vit-l14", 427_616_513), ("clip-vit-l14-336", 427_944_193),
])
def test_full_size_presets_match_openai_parameter_counts(name, count):
    from claver.models.factory import build_model

    with torch.device("meta"):  # shapes only, no memory
        model = build_model(get_config(name))
    assert sum(p.numel() for p in model.parameters()) == count


def test_parameter_count_arithmetic_matches_every_architecture():
    """count_parameters (used for the size limit before building) equals the built model."""
    from claver.models.config import ARCHS, BACKBONES, FUSIONS, count_parameters
    from claver.models.factory import build_model

    for backbone in BACKBONES:
        for arch in ARCHS:
            for fusion in FUSIONS if arch == "actionclip" else ("meanP",):
                config = get_config(f"{arch}-{backbone}", fusion=fusion, num_frames=5)
                with torch.device("meta"):
                    model = build_model(config)
                built = sum(p.numel() for p in model.state_dict().values())
                assert count_parameters(config) == built, (arch, backbone, fusion)


@pytest.mark.parametrize("overrides,match", [
    ({"vision": {"width": "768"}}, "vision.width must be a whole number from 1 to 8192, got '768'"),
    ({"text": {"heads": 0}}, "text.heads is out of range: it must be from 1 to 64, got 0"),
    ({"text": {"heads": 5}}, "text.heads = 5 does not divide the width 64"),
    ({"vision": {"layers": 129}}, "vision.layers is out of range: it must be from 1 to 128"),
    ({"num_frames": 0}, "num_frames is out of range: it must be from 1 to 256, got 0"),
    ({"embed_dim": 8193}, "embed_dim is out of range"),
    ({"text": {"context_length": 77.0}}, "text.context_length must be a whole number"),
    ({"mean": (0.5, float("nan"), 0.5)}, "mean must be 3 finite numbers"),
    ({"arch": "actionclip", "fusion": "Transf", "fusion_heads": 3}, "fusion_heads = 3 does not"),
])
def test_model_config_fields_are_validated(overrides, match):
    from claver.models.config import ModelConfigError

    with pytest.raises(ModelConfigError, match=match):
        get_config("claver-tiny", **overrides)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_model_runs_in_low_precision(dtype):
    m = tiny()
    v = video()
    with torch.no_grad():
        ref = m(v, claver.tokenize(["a", "b"]))
        low = m.to(dtype)(v.to(dtype), claver.tokenize(["a", "b"]))
    assert low.dtype == dtype
    torch.testing.assert_close(low.float(), ref, atol=0.5, rtol=0.05)


def test_text_features_do_not_depend_on_the_batch_padding_length():
    """encode_text drops the padding after the longest text in the batch; a text's feature is
    the same alone (a few positions) as next to a 77-token text (all positions)."""
    torch.manual_seed(0)
    model = claver.create_model("claver-tiny", num_frames=4).eval()
    short = claver.tokenize(["a video of dancing", "juggling"])
    full = claver.tokenize(["word " * 80], truncate=True)  # end-of-text at position 76
    assert int(full.argmax()) == 76
    with torch.no_grad():
        alone = model.encode_text(short)
        mixed = model.encode_text(torch.cat([short, full]))
        one_by_one = torch.cat([model.encode_text(t[None]) for t in short])
    torch.testing.assert_close(mixed[:2], alone, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(one_by_one, alone, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(mixed[2], alone[0])
