"""ActionCLIP fidelity: heads, init, loss, evaluation scale and RandAugment against references
written here from the original definitions (sallymmx/ActionCLIP, ildoonet/pytorch-randaugment
0.1 on PIL)."""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageEnhance, ImageOps
from torch import nn

from claver.data import randaugment as ra
from claver.data.randaugment import RandAugment
from claver.engine import data as engine_data
from claver.engine.config import ConfigError, load_config
from claver.engine.evaluate import video_scores
from claver.engine.losses import actionclip_loss
from claver.models.actionclip import Conv1DFusion, TransfClsFusion, TransfFusion
from claver.models.config import ModelConfigError, get_config
from claver.models.factory import build_model, create_model, load_model, save_model
from claver.weights.formats import read_checkpoint
from test_engine_train import dataset, write_config  # noqa: F401 - the fixture

T, E = 4, 64


def tiny_actionclip(fusion: str, seed: int = 0, **kw):
    torch.manual_seed(seed)
    return build_model(get_config("actionclip-tiny", fusion=fusion, num_frames=T, **kw)).eval()


# ------------------------------------------------------------------ reference heads (original)

class RefLayerNorm(nn.Module):
    """The original TF-style LayerNorm: (x - mean) / sqrt(var + eps), eps 1e-12."""

    def __init__(self, n: int, eps: float = 1e-12) -> None:
        super().__init__()
        self.weight, self.bias, self.eps = nn.Parameter(torch.ones(n)), nn.Parameter(
            torch.zeros(n)), eps

    def forward(self, x):
        u = x.mean(-1, keepdim=True)
        s = (x - u).pow(2).mean(-1, keepdim=True)
        return self.weight * (x - u) / torch.sqrt(s + self.eps) + self.bias


class RefBlock(nn.Module):
    def __init__(self, d: int, heads: int, eps: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads)
        self.ln_1 = RefLayerNorm(d, eps)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(d, 4 * d)),
                                              ("gelu", _QuickGELU()),
                                              ("c_proj", nn.Linear(4 * d, d))]))
        self.ln_2 = RefLayerNorm(d, eps)

    def forward(self, x):  # (L, N, D), sequence first as the original
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class _QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class RefTransf(nn.Module):
    """visual_prompt 'Transf': x + pos -> permute -> blocks -> permute -> + x -> mean."""

    def __init__(self, d: int, layers: int, heads: int, eps: float = 1e-12) -> None:
        super().__init__()
        self.frame_position_embeddings = nn.Embedding(77, d)
        self.resblocks = nn.Sequential(*[RefBlock(d, heads, eps) for _ in range(layers)])

    def forward(self, x):
        b, t, c = x.shape
        pos = self.frame_position_embeddings(torch.arange(t)[None].expand(b, -1))
        y = self.resblocks((x + pos).permute(1, 0, 2)).permute(1, 0, 2)
        return (y + x).mean(dim=1)


def _ref_from_ours(ours: TransfFusion, eps: float) -> RefTransf:
    layers = len(ours.transformer.resblocks)
    heads = ours.transformer.resblocks[0].attn.heads
    ref = RefTransf(E, layers, heads, eps)
    sd = {}
    for k, v in ours.state_dict().items():
        if k == "frame_position_embeddings.weight":
            table = torch.randn(77, E)
            table[: v.shape[0]] = v
            sd[k] = table
        else:
            sd[k.replace("transformer.resblocks", "resblocks")] = v
    ref.load_state_dict(sd)
    return ref.eval()


def test_transf_head_matches_original_with_tf_layernorm_eps():
    """Tiny frame features: eps 1e-12 vs 1e-5 is visible; ours must follow 1e-12."""
    m = tiny_actionclip("Transf", fusion_layers=2)
    x = torch.randn(3, T, E) * 1e-4
    with torch.no_grad():
        ours = m.fusion(x)
        ref = _ref_from_ours(m.fusion, 1e-12)(x)
        wrong = _ref_from_ours(m.fusion, 1e-5)(x)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-4)
    assert (wrong - ref).abs().max() > 100 * (ours - ref).abs().max() + 1e-5
    assert all(b.ln_1.eps == 1e-12 and b.ln_2.eps == 1e-12 for b in m.fusion.transformer.resblocks)


def test_transf_cls_matches_original_post_norm_encoder():
    m = tiny_actionclip("Transf_cls", fusion_layers=2)
    enc_layer = nn.TransformerEncoderLayer(d_model=E, nhead=8)  # seq-first, as TAggregate
    ref_enc = nn.TransformerEncoder(enc_layer, num_layers=2, norm=nn.LayerNorm(E),
                                    enable_nested_tensor=False)
    ref_enc.load_state_dict({k[len("transformer_enc."):]: v for k, v in m.fusion.state_dict()
                             .items() if k.startswith("transformer_enc.")})
    ref_enc.eval()
    x = torch.randn(3, T, E)
    with torch.no_grad():
        seq = torch.cat([m.fusion.cls_token.expand(3, -1, -1), x], 1) + m.fusion.pos_embed
        ref = ref_enc(seq.transpose(0, 1))[0]
        torch.testing.assert_close(m.fusion(x), ref, atol=1e-5, rtol=1e-4)
    layer = m.fusion.transformer_enc.layers[0]
    assert not layer.norm_first and layer.linear1.out_features == 2048
    assert layer.norm1.eps == 1e-5 and layer.self_attn.num_heads == 8


def original_conv1d(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The original: view (B, T, C) as (B, C, T) (no transpose), conv, permute, + x, mean."""
    b, t, c = x.shape
    y = F.conv1d(x.contiguous().view(-1, c, t), weight, padding=1, groups=c)
    return (y.permute(0, 2, 1) + x).mean(dim=1)


def original_shift_weight(c: int) -> torch.Tensor:
    w = torch.zeros(c, 1, 3)
    w[:c // 4, 0, 0] = 1.0
    w[c // 4:c // 4 + c // 2, 0, 1] = 1.0
    w[-c // 4:, 0, 2] = 1.0
    return w


@pytest.mark.parametrize("dim", [64, 66, 67])
def test_conv1d_original_layout_and_shift_init(dim):
    head = Conv1DFusion(dim, layout="original")
    torch.testing.assert_close(head.shift.weight.data, original_shift_weight(dim))
    with torch.no_grad():
        head.shift.weight.add_(0.1 * torch.randn(dim, 1, 3))  # trained weights
        x = torch.randn(2, T, dim)
        torch.testing.assert_close(head(x), original_conv1d(x, head.shift.weight))
        ours = Conv1DFusion(dim, layout="time")
        ours.load_state_dict(head.state_dict())
        over_time = (F.conv1d(x.transpose(1, 2), head.shift.weight, padding=1, groups=dim)
                     .transpose(1, 2) + x).mean(1)
        torch.testing.assert_close(ours(x), over_time)
        assert (ours(x) - head(x)).abs().max() > 1e-2


def _save_original(model, path):
    clip_sd = {f"module.{k}": v.half() for k, v in model.state_dict().items()
               if not k.startswith("fusion.")}
    fusion_sd = {"module.shift.weight": model.fusion.shift.weight.detach().half(),
                 "module.frame_position_embeddings.weight": torch.randn(77, E).half()}
    torch.save({"model_state_dict": clip_sd, "fusion_model_state_dict": fusion_sd,
                "optimizer_state_dict": {}, "epoch": 3}, path)


def test_original_conv1d_checkpoint_computes_original_layout(tmp_path):
    m = tiny_actionclip("Conv1D")
    assert m.config.conv1d_layout == "time"  # new models convolve over time
    with torch.no_grad():
        m.fusion.shift.weight.add_(0.2 * torch.randn_like(m.fusion.shift.weight))
    path = tmp_path / "model_best.pt"
    _save_original(m, path)
    assert read_checkpoint(path).config.conv1d_layout == "original"
    loaded = load_model(path, num_frames=T).eval()
    assert loaded.config.conv1d_layout == "original"
    video = torch.randn(2, T, 3, 32, 32)
    with torch.no_grad():
        frames = loaded.encode_frames(video)
        expected = F.normalize(original_conv1d(frames, loaded.fusion.shift.weight), dim=-1)
        torch.testing.assert_close(loaded.encode_video(video), expected)
        # the layout travels with our own checkpoints
        again = load_model(save_model(loaded, tmp_path / "ours.safetensors")).eval()
        assert again.config.conv1d_layout == "original"
        torch.testing.assert_close(again.encode_video(video), expected)
        # a preset + pretrained= takes the checkpoint's layout too (A21)
        named = create_model("actionclip-tiny", fusion="Conv1D", num_frames=T,
                             pretrained=path).eval()
        assert named.config.conv1d_layout == "original"
        torch.testing.assert_close(named.encode_video(video), expected)
    with pytest.raises(ModelConfigError, match="conv1d_layout"):
        get_config("actionclip-tiny", fusion="Conv1D", conv1d_layout="channels")


# ------------------------------------------------------------------ initialisation

def test_transf_init_as_original():
    torch.manual_seed(0)
    head = TransfFusion(256, T, layers=2, heads=4)
    block = head.transformer.resblocks[0]
    for lin in (block.mlp.c_fc, block.mlp.c_proj, block.attn.out_proj):
        assert abs(lin.weight.std().item() - 0.02) < 0.001
        assert lin.weight.mean().abs() < 0.001 and (lin.bias == 0).all()
    bound = math.sqrt(6 / (256 + 3 * 256))  # xavier_uniform of the (3E, E) in-projection
    w = block.attn.in_proj_weight
    assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound
    assert abs(w.std().item() - bound / math.sqrt(3)) < 0.002
    assert (block.attn.in_proj_bias == 0).all()
    assert abs(head.frame_position_embeddings.weight.std().item() - 0.02) < 0.002
    assert (block.ln_1.weight == 1).all() and (block.ln_1.bias == 0).all()


def test_transf_cls_init_as_original():
    torch.manual_seed(0)
    head = TransfClsFusion(E, T, layers=2, heads=8)
    layer = head.transformer_enc.layers[0]
    for lin in (layer.linear1, layer.linear2, layer.self_attn.out_proj):
        w = lin.weight
        assert w.abs().max() < 0.04  # folded at 2 std: defaults/trunc_normal_ exceed this
        assert 0.017 < w.std().item() < 0.0205 and (lin.bias == 0).all()
    for p in (head.cls_token, head.pos_embed):
        assert p.abs().max() < 0.04 and p.abs().max() > 0
    # every value as the original TAggregate draws it (same construction and init order)
    torch.manual_seed(5)
    ours = TransfClsFusion(E, T, layers=2, heads=8)
    torch.manual_seed(5)
    ref = RefTAggregate(T, E, 2)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[k], v, atol=0, rtol=0, msg=k)


class RefTAggregate(nn.Module):
    """The original TAggregate's construction and init: encoder, zeros, trunc_normal_ of
    pos_embed then cls_token (``normal().fmod(2) * std``), then linears / LayerNorms."""

    def __init__(self, clip_length: int, embed_dim: int, n_layers: int) -> None:
        super().__init__()
        enc_layer = nn.TransformerEncoderLayer(d_model=embed_dim, nhead=8)
        self.transformer_enc = nn.TransformerEncoder(enc_layer, num_layers=n_layers,
                                                     norm=nn.LayerNorm(embed_dim),
                                                     enable_nested_tensor=False)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, clip_length + 1, embed_dim))
        with torch.no_grad():
            self.pos_embed.normal_().fmod_(2).mul_(0.02)
            self.cls_token.normal_().fmod_(2).mul_(0.02)
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            with torch.no_grad():
                m.weight.normal_().fmod_(2).mul_(0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)


# ------------------------------------------------------------------ loss

def original_kl_loss(logits_img, logits_txt, labels):
    """KLLoss(prediction, gen_label(labels)) per direction, averaged (original train.py)."""
    n = len(labels)
    gt = np.zeros((n, n))
    for i, label in enumerate(labels):
        for k in range(n):
            if labels[k] == label:
                gt[i, k] = 1
    gt = torch.tensor(gt, dtype=torch.float32)

    def kl(pred, label):  # KLDivLoss(size_average=True): sum / B^2; then * batch size
        b = pred.shape[0]
        return F.kl_div(F.log_softmax(pred, 1), F.softmax(label * 10, 1),
                        reduction="sum") / (b * b) * b

    return (kl(logits_img, gt) + kl(logits_txt, gt)) / 2


def test_actionclip_loss_matches_original_kl():
    torch.manual_seed(0)
    v = F.normalize(torch.randn(6, 32), dim=-1)
    t = F.normalize(torch.randn(6, 32), dim=-1)
    labels = [3, 1, 3, 0, 1, 2]
    scale = torch.tensor(math.log(100.0))
    ref = original_kl_loss(100 * v @ t.t(), 100 * t @ v.t(), labels)
    ours = actionclip_loss(v, t, torch.tensor(labels), scale)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    same = (torch.tensor(labels)[:, None] == torch.tensor(labels)[None]).float()
    uniform = same / same.sum(1, keepdim=True)  # the old target: must differ
    old = F.kl_div(F.log_softmax(100 * v @ t.t(), 1), uniform, reduction="batchmean")
    assert (old - ref).abs() > 1e-3


# ------------------------------------------------------------------ evaluation scale

def test_video_scores_fixed_logit_scale():
    m = tiny_actionclip("meanP")
    with torch.no_grad():
        m.logit_scale.fill_(math.log(7.0))
        video = torch.randn(2, T, 3, 32, 32)
        text = F.normalize(torch.randn(3, 5, E), dim=-1)  # (rows, classes, E)
        v = m.encode_video(video)
        cos = torch.einsum("be,rce->brc", v, text)
        ref100 = (100 * cos).softmax(-1).mean(1)  # the original test
        torch.testing.assert_close(video_scores(m, video, text, logit_scale=100.0), ref100)
        ref7 = (7 * cos).softmax(-1).mean(1)
        torch.testing.assert_close(video_scores(m, video, text), ref7)
        torch.testing.assert_close(video_scores(m, video, text, logit_scale=0.0), ref7)
        assert (ref100 - ref7).abs().max() > 1e-3
        with pytest.raises(ValueError, match="logit_scale"):
            video_scores(m, video, text, logit_scale=-1.0)


def test_test_logit_scale_config(tmp_path):
    assert load_config().TEST.LOGIT_SCALE == 0.0
    cfg = load_config("configs/actionclip/k400_b16_8f_transf.yaml")
    assert cfg.TEST.LOGIT_SCALE == 100.0 and cfg.TRAIN.RANDAUGMENT == [2, 9]
    assert cfg.TRAIN.WEIGHT_DECAY == 0.2 and cfg.TRAIN.NO_DECAY == "none"
    assert cfg.TRAIN.MIN_LR_RATIO == 0.0
    with pytest.raises(ConfigError, match="TEST.LOGIT_SCALE"):
        load_config(opts=["TEST.LOGIT_SCALE", "-1"])


def test_fixed_crop_positions_reach_the_training_transform(dataset, tmp_path):  # noqa: F811
    assert load_config("configs/actionclip/k400_b16_8f_transf.yaml").TRAIN.FIXED_CROPS == 13
    assert load_config().TRAIN.FIXED_CROPS == 5  # mmaction2 / CLAVER
    cfg = load_config(write_config(tmp_path / "c.yaml", dataset, tmp_path / "run"),
                      ["TRAIN.FIXED_CROPS=13"])
    assert engine_data.train_dataset(cfg, 3).transform.num_fixed_crops == 13
    with pytest.raises(ConfigError, match="TRAIN.FIXED_CROPS"):
        load_config(opts=["TRAIN.FIXED_CROPS=7"])


# ------------------------------------------------------------------ RandAugment (PIL oracle)

def _pil_ops():
    """The original op functions (ildoonet/pytorch-randaugment 0.1), sign given explicitly."""
    def affine(m):
        return lambda im, v: im.transform(im.size, Image.AFFINE, m(v))

    def solarize_add(im, addition):
        a = np.clip(np.array(im).astype(np.int64) + addition, 0, 255).astype(np.uint8)
        return ImageOps.solarize(Image.fromarray(a), 128)

    return {
        "AutoContrast": lambda im, v: ImageOps.autocontrast(im),
        "Equalize": lambda im, v: ImageOps.equalize(im),
        "Invert": lambda im, v: ImageOps.invert(im),
        "Rotate": lambda im, v: im.rotate(v),
        "Posterize": lambda im, v: ImageOps.posterize(im, int(v)),
        "Solarize": lambda im, v: ImageOps.solarize(im, v),
        "SolarizeAdd": solarize_add,
        "Color": lambda im, v: ImageEnhance.Color(im).enhance(v),
        "Contrast": lambda im, v: ImageEnhance.Contrast(im).enhance(v),
        "Brightness": lambda im, v: ImageEnhance.Brightness(im).enhance(v),
        "Sharpness": lambda im, v: ImageEnhance.Sharpness(im).enhance(v),
        "ShearX": affine(lambda v: (1, v, 0, 0, 1, 0)),
        "ShearY": affine(lambda v: (1, 0, 0, v, 1, 0)),
        "TranslateX": affine(lambda v: (1, 0, v, 0, 1, 0)),
        "TranslateY": affine(lambda v: (1, 0, 0, 0, 1, v)),
    }


def _clips(seed=0):
    g = np.random.default_rng(seed)
    for h, w in [(9, 13), (16, 16), (21, 11)]:
        noise = g.integers(0, 256, (2, h, w, 3), dtype=np.uint8)
        narrow = g.integers(70, 130, (2, h, w, 3)).astype(np.uint8)
        ramp = np.clip(np.linspace(0, 255, w)[None, None, :, None]
                       + g.normal(0, 25, (2, h, w, 3)), 0, 255).astype(np.uint8)
        yield from (noise, narrow, ramp)


@pytest.mark.parametrize("name", [op[0] for op in ra.OPS if op[0] != "Cutout"])
def test_randaugment_op_matches_pil(name):
    low, high, signed = next((lo, hi, s) for n, lo, hi, s in ra.OPS if n == name)
    pil = _pil_ops()[name]
    for frames in _clips():
        clip = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()  # (T, 3, H, W)
        for m in (5, 9, 17, 30):
            v = ra.magnitude(m, low, high)
            if name == "Posterize" and int(v) == 0:
                continue  # Pillow >= 10 refuses 0 bits (checked below)
            for sign in ((1.0, -1.0) if signed else (1.0,)):
                ours = ra.apply_op(clip, name, v, sign).permute(0, 2, 3, 1).numpy()
                for t in range(len(frames)):
                    ref = np.array(pil(Image.fromarray(frames[t]), v * sign))
                    assert np.array_equal(ours[t], ref), (name, m, sign, frames.shape)


def test_randaugment_cutout_and_posterize_zero_from_definition():
    frames = np.random.default_rng(1).integers(0, 256, (2, 20, 24, 3), dtype=np.uint8)
    clip = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()
    for size, cx, cy in [(12.000000000000002, 5.3, 17.9), (0.0, 1.5, 1.5), (40, 23.9, 2.0)]:
        out = ra.cutout(clip, size, cx, cy).permute(0, 2, 3, 1).numpy()
        for t in range(2):  # the original CutoutAbs with the centre given
            im = Image.fromarray(frames[t]).copy()
            x0, y0 = int(max(0, cx - size / 2.0)), int(max(0, cy - size / 2.0))
            xy = (x0, y0, min(24, x0 + size), min(20, y0 + size))
            ImageDraw.Draw(im).rectangle(xy, (125, 123, 114))
            assert np.array_equal(out[t], np.array(im))
    # Pillow >= 10 refuses 0 bits; the original's Pillow 8 mask ~(2**8 - 1) gave black
    assert (ra.posterize(clip, 0) == 0).all()
    assert torch.equal(ra.posterize(clip, 1), clip & 0x80)
    assert torch.equal(ra.translate_x(clip, 3.0)[..., :-3], clip[..., 3:])
    assert (ra.translate_x(clip, 3.0)[..., -3:] == 0).all()


def test_randaugment_magnitudes_and_op_list():
    names = [op[0] for op in ra.OPS]
    assert names == ["AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize",
                     "SolarizeAdd", "Color", "Contrast", "Brightness", "Sharpness", "ShearX",
                     "ShearY", "Cutout", "TranslateX", "TranslateY"]
    values = {n: ra.magnitude(9, lo, hi) for n, lo, hi, _ in ra.OPS}
    expected = {"Rotate": 9, "Posterize": 1.2, "Solarize": 76.8, "SolarizeAdd": 33,
                "Color": 0.64, "ShearX": 0.09, "Cutout": 12, "TranslateX": 30}
    for n, v in expected.items():
        assert values[n] == pytest.approx(v)
    assert {n for n, *_, s in ra.OPS if s} == {"Rotate", "ShearX", "ShearY", "TranslateX",
                                               "TranslateY"}
    with pytest.raises(ValueError, match="magnitude"):
        RandAugment(2, 31)
    with pytest.raises(ValueError, match="whole number"):
        RandAugment(-1, 9)
    with pytest.raises(ValueError, match="uint8 clip"):
        RandAugment(2, 9)(torch.zeros(2, 3, 8, 8))


def test_randaugment_deterministic_and_same_on_every_frame():
    frame = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (3, 64, 64),
                                                               dtype=np.uint8))
    clip = frame.expand(4, -1, -1, -1).contiguous()  # 4 identical frames
    aug = RandAugment(2, 9)
    outs = []
    for seed in range(12):
        a = aug(clip, torch.Generator().manual_seed(seed))
        b = aug(clip, torch.Generator().manual_seed(seed))
        assert torch.equal(a, b) and a.shape == clip.shape and a.dtype == torch.uint8
        assert all(torch.equal(a[0], a[t]) for t in range(4))  # same ops on every frame
        outs.append(a)
    assert len({o.numpy().tobytes() for o in outs}) > 6  # the draw depends on the seed
    per_frame = RandAugment(2, 9, per_frame=True)
    differ = [not all(torch.equal(o[0], o[t]) for t in range(4))
              for o in (per_frame(clip, torch.Generator().manual_seed(s)) for s in range(6))]
    assert any(differ)  # the original's per-frame draw
