"""The CLAVER recipe against the official code (yjyddq/CLAVER, X-CLIP's mmaction2 0.x pipeline,
timm's cosine scheduler, mmaction2 1.x SampleFrames): every reference below is written here
from the original definition, independently of the code under test (docs/fidelity.md)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import claver
from claver.data import mixup as mx
from claver.data import transforms as tr
from claver.data.sampling import FrameSampler, clip_indices, multiview_indices, segment_indices
from claver.engine import data as engine_data
from claver.engine.config import Config, ConfigError, load_config
from claver.engine.optim import WarmupCosine, param_groups
from claver.models.config import CLIP_MEAN, CLIP_STD

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- LR schedule

def timm_cosine(t: int, base: float, lr_min: float, total: int, warmup: int) -> float:
    """timm CosineLRScheduler._get_lr with warmup_lr_init=0, cycle_limit=1, no prefix."""
    if t < warmup:
        return 0.0 + t * (base - 0.0) / warmup
    if t // total >= 1:  # past the only cycle
        return lr_min
    return lr_min + 0.5 * (base - lr_min) * (1 + math.cos(math.pi * (t % total) / total))


def test_lr_schedule_is_timm_cosine_over_the_whole_run_with_one_floor():
    lr, total, warmup = 12e-6, 1000, 50
    model = torch.nn.ModuleDict({"a": torch.nn.Linear(2, 2)})
    opt = torch.optim.AdamW([{"params": [model["a"].weight], "lr_mult": 1.0},
                             {"params": [model["a"].bias], "lr_mult": 10.0}], lr=lr)
    s = WarmupCosine(opt, lr, total, warmup, 0.01)
    for step in (0, 1, warmup - 1, warmup, total // 2, total - 1, total, total + 7):
        got = s.apply(step)
        for group, mult in zip(opt.param_groups, (1.0, 10.0), strict=True):
            want = timm_cosine(step, lr * mult, lr / 100, total, warmup)
            assert group["lr"] == pytest.approx(want, rel=1e-12, abs=1e-18), (step, mult)
        assert got == pytest.approx(timm_cosine(step, lr, lr / 100, total, warmup), rel=1e-12)
    assert s.lr(0) == 0.0 and s.lr(0, 10.0) == 0.0  # warm-up starts at 0
    assert s.lr(warmup) < lr  # the cosine already ran for the warm-up steps
    assert s.lr(total - 1, 10.0) == pytest.approx(lr / 100, rel=1e-2)  # absolute floor ...
    assert s.lr(total, 10.0) == s.lr(total) == pytest.approx(lr / 100)  # ... for every group


def test_lr_schedule_warmup_prefix_is_actionclip_cosine():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    s = WarmupCosine(opt, 5e-6, 100, 10, 0.0, warmup_prefix=True)
    for step in (0, 5, 10, 55, 99, 100, 150):
        if step < 10:
            want = 5e-6 * step / 10
        else:  # ActionCLIP WarmupCosineAnnealingLR, final_factor 0
            p = min((step - 10) / (100 - 10), 1.0)
            want = 5e-6 * (math.cos(math.pi * p) + 1) / 2
        assert s.lr(step) == pytest.approx(want, abs=1e-20), step


# --------------------------------------------------------------------------- weight decay

def test_weight_decay_set_matches_the_official_rule_on_a_tiny_claver():
    model = claver.create_model("claver-tiny", num_frames=4)
    names = [n for n, _ in model.named_parameters()]
    groups = param_groups(model, 1e-5, 0.001, 10.0)
    no_decay = {n for g in groups if g["weight_decay"] == 0.0 for n in g["names"]}
    # official set_weight_decay + no_weight_decay_keywords {'positional_embedding'}: biases
    # (".bias" and MultiheadAttention's in_proj_bias), LayerNorm weights, class_embedding
    # (all 1-D), and the two positional embeddings; nothing else
    expected = {n for n in names if n.endswith("bias")}
    expected |= {n for n in names if n.endswith(".weight")
                 and n.split(".")[-2].startswith(("ln_", "temporal_ln_"))}
    expected |= {"visual.class_embedding", "visual.positional_embedding", "positional_embedding"}
    assert no_decay == expected
    for n in ("visual.temporal_embedding", "logit_scale", "token_embedding.weight",
              "visual.proj", "text_projection", "visual.conv1.weight"):
        assert n in names and n not in no_decay, n
    # decay-everything (ActionCLIP) and the 10x groups
    every = param_groups(model, 1e-5, 0.2, 10.0, no_decay="none")
    assert all(g["weight_decay"] == 0.2 for g in every)
    assert sorted(n for g in every for n in g["names"]) == sorted(names)
    ten_x = {n for g in groups if g["lr_mult"] == 10.0 for n in g["names"]}
    assert ten_x == {n for n in names if "temporal_" in n}  # the official "temporal_" set
    with pytest.raises(ValueError, match="no_decay"):
        param_groups(model, 1e-5, 0.001, 10.0, no_decay="some")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- samplers

def mm_train_clip1(n: int, t: int, rng: np.random.Generator) -> np.ndarray:
    """mmaction2 0.x SampleFrames(clip_len=1, frame_interval=1, num_clips=t) training
    indices, loop out-of-bound."""
    avg = (n - 1 + 1) // t
    if avg > 0:
        offsets = np.arange(t) * avg + rng.integers(0, avg, size=t, dtype=np.int64)
    elif n > max(t, 1):
        offsets = np.sort(rng.integers(0, n, size=t, dtype=np.int64))
    elif avg == 0:
        offsets = np.around(np.arange(t) * ((n - 1 + 1.0) / t))
    else:
        offsets = np.zeros(t)
    return np.mod(offsets.astype(np.int64), n)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 15, 16, 17, 31, 100, 301])
@pytest.mark.parametrize("t", [1, 4, 8, 16])
def test_segment_training_follows_mmaction2_sample_frames(n, t):
    for seed in range(5):
        got = segment_indices(n, t, train=True, rng=np.random.default_rng(seed))
        want = mm_train_clip1(n, t, np.random.default_rng(seed))
        np.testing.assert_array_equal(got, want)
        assert got.dtype == np.int64
        sampler = FrameSampler(t, train=True)(n, np.random.default_rng(seed))
        np.testing.assert_array_equal(sampler, want)


def test_official_training_never_draws_the_tail_and_keep_tail_does():
    n, t = 17, 8  # n // T = 2: frame 16 lies in no official segment
    official = set(), set()
    for seed in range(300):
        official[0].update(segment_indices(n, t, train=True, rng=np.random.default_rng(seed)))
        official[1].update(segment_indices(n, t, train=True, rng=np.random.default_rng(seed),
                                           keep_tail=True))
    assert official[0] == set(range(16)) and official[1] == set(range(17))


def test_segment_test_centres_unchanged():
    for n in (1, 5, 8, 17, 300):
        for t in (1, 4, 8):
            want = (np.arange(t) * (n / t) + n / t / 2.0).astype(np.int64)  # mmaction2 test
            np.testing.assert_array_equal(segment_indices(n, t, train=False), want)


def mm1_test(n: int, clip_len: int, interval: int, num_clips: int) -> np.ndarray:
    """mmaction2 1.x SampleFrames._get_test_clips + transform (loop), clip_len > 1."""
    span = (clip_len - 1) * interval + 1
    max_offset = max(n - span, 0)
    if num_clips > 1:
        offsets = np.round(np.arange(num_clips) * (max_offset / float(num_clips - 1)))
    else:
        offsets = np.array([max_offset // 2])
    inds = offsets[:, None] + np.arange(clip_len)[None, :] * interval
    return np.mod(inds, n).astype(np.int64)


@pytest.mark.parametrize("n", [5, 16, 30, 64, 101, 250])
def test_clip_test_placement_follows_mmaction2_1x(n):
    for clip_len, interval, clips in ((8, 1, 1), (4, 2, 3), (8, 4, 4), (16, 2, 2), (32, 2, 10)):
        want = mm1_test(n, clip_len, interval, clips)
        np.testing.assert_array_equal(
            clip_indices(n, clip_len, interval, clips, train=False).reshape(clips, clip_len),
            want)
        np.testing.assert_array_equal(
            multiview_indices(n, clip_len, clips, mode="clip", frame_interval=interval), want)
    # 0.x stays available and differs (stride centres, not PySlowFast placement)
    old = clip_indices(64, 4, 2, 3, train=False, test_rule="0.x").reshape(3, 4)[:, 0]
    assert old.tolist() == [int(k * 57 / 3 + 57 / 6) for k in range(3)]
    with pytest.raises(ValueError, match="twice_sample"):
        clip_indices(64, 4, 2, 3, train=False, twice_sample=True)


# --------------------------------------------------------------------------- transforms

def bilinear_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) weights of OpenCV INTER_LINEAR / half-pixel bilinear, no antialiasing."""
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        src = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(int(math.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        lam = src - i0
        m[i, i0] += 1 - lam
        m[i, i1] += lam
    return m


def ref_resize(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(..., H, W) float -> (..., h, w) float with :func:`bilinear_matrix` on both axes."""
    out = bilinear_matrix(x.shape[-2], h) @ x.double() @ bilinear_matrix(x.shape[-1], w).T
    return out.float()


def ref_short_side(h: int, w: int, s: int) -> tuple[int, int]:
    """mmcv rescale_size for scale (inf, s): long side int(long * s / short + 0.5)."""
    f = s / min(h, w)
    return int(h * f + 0.5), int(w * f + 0.5)


def test_single_view_eval_resizes_to_256_224_and_centre_crops():
    s = 16  # 256 * 16 // 224 = 18
    video = torch.rand(2, 3, 30, 50, generator=gen(1))
    t = tr.build_eval_transform(s, mean=(0, 0, 0), std=(1, 1, 1), antialias=False)
    assert t.resize_to == 18 == int(256 / 224 * s)
    h, w = ref_short_side(30, 50, 18)
    big = ref_resize(video, h, w)
    top, left = (h - s) // 2, (w - s) // 2
    torch.testing.assert_close(t(video), big[..., top:top + s, left:left + s], atol=1e-5,
                               rtol=0)
    three = tr.build_eval_transform(s, mean=(0, 0, 0), std=(1, 1, 1), crops=3,
                                    antialias=False)
    assert three.resize_to == s
    h, w = ref_short_side(30, 50, s)
    small = ref_resize(video, h, w)
    step = (w - s) // 2  # mmaction2 ThreeCrop: 0, step, 2 * step
    out = three(video)
    for k, left in enumerate((0, step, 2 * step)):
        torch.testing.assert_close(out[k], small[..., :, left:left + s], atol=1e-5, rtol=0)


def test_train_geometry_without_antialiasing_is_opencv_bilinear():
    s = 16
    video = torch.rand(3, 3, 40, 60, generator=gen(2))
    t = tr.build_train_transform(s, mean=(0, 0, 0), std=(1, 1, 1), flip=0.0, color_jitter=0.0,
                                 grayscale=0.0, antialias=False)
    for seed in range(4):
        got = t(video, gen(seed))
        h, w = ref_short_side(40, 60, t.resize_to)
        big = ref_resize(video, h, w)
        top, left, ch, cw = tr.multi_scale_crop_params(h, w, s, generator=gen(seed))
        want = ref_resize(big[..., top:top + ch, left:left + cw], s, s)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    smooth = tr.build_train_transform(s, mean=(0, 0, 0), std=(1, 1, 1), flip=0.0,
                                      color_jitter=0.0, grayscale=0.0)(video, gen(0))
    assert (smooth - t(video, gen(0))).abs().max() > 1e-3  # antialiasing is a real difference


def test_decoding_at_reduced_size_only_with_antialiasing():
    for crops, short in ((1, 18), (3, 16)):
        t = tr.build_eval_transform(16, mean=CLIP_MEAN, std=CLIP_STD, crops=crops)
        assert engine_data.decode_short_side(t) == short
        t = tr.build_eval_transform(16, mean=CLIP_MEAN, std=CLIP_STD, crops=crops,
                                    antialias=False)
        assert engine_data.decode_short_side(t) is None
    t = tr.build_train_transform(16, mean=CLIP_MEAN, std=CLIP_STD, antialias=False)
    assert engine_data.decode_short_side(t) is None


def test_color_jitter_per_frame_draws_per_frame_after_one_clip_decision():
    s = 8
    video = torch.full((4, 3, 8, 8), 0.5)
    video[:, 0] = 0.7  # a coloured, uniform clip: every jitter op changes it
    kw = {"mean": (0, 0, 0), "std": (1, 1, 1), "flip": 0.0, "grayscale": 0.0, "scales": (1.0,)}
    per_frame = tr.build_train_transform(s, color_jitter=1.0, color_jitter_mode="per_frame", **kw)
    clip = tr.build_train_transform(s, color_jitter=1.0, **kw)
    for seed in range(3):
        out = per_frame(video, gen(seed))
        # reference: the same draws in the same order (crop, flip, p, per-frame ops, gray)
        g = gen(seed)
        tr.multi_scale_crop_params(8, 8, s, (1.0,), generator=g)
        tr._rand(g)  # flip
        assert tr._rand(g) < 1.0  # the one per-clip decision
        cj = tr.ColorJitter(p=1.0)
        for k in range(4):
            want = video[k:k + 1]
            for name, factor in cj.sample_ops(g):
                want = {"brightness": tr.adjust_brightness, "contrast": tr.adjust_contrast,
                        "saturation": tr.adjust_saturation, "hue": tr.adjust_hue}[name](
                    want, factor)
            torch.testing.assert_close(out[k:k + 1], want, atol=1e-5, rtol=0)
        assert (out[0] - out[1]).abs().max() > 1e-3  # frames differ
        same = clip(video, gen(seed))
        assert torch.equal(same[0], same[3])  # one draw per clip
    off = tr.build_train_transform(s, color_jitter=0.0, color_jitter_mode="per_frame", **kw)
    torch.testing.assert_close(off(video, gen(0)), video)
    with pytest.raises(ValueError, match="color_jitter_mode"):
        tr.build_train_transform(s, color_jitter_mode="frame", **kw)  # type: ignore[arg-type]


def test_randaugment_runs_on_uint8_frames_before_the_crop():
    calls = []

    def record(clip: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        calls.append((clip.dtype, tuple(clip.shape)))
        return 255 - clip  # an op whose effect survives the rest of the pipeline

    video = torch.randint(0, 256, (2, 20, 30, 3), dtype=torch.uint8, generator=gen(3))
    kw = {"mean": (0, 0, 0), "std": (1, 1, 1), "flip": 0.0, "color_jitter": 0.0,
          "grayscale": 0.0}
    t = tr.build_train_transform(16, randaugment=record, **kw)
    plain = tr.build_train_transform(16, **kw)
    out = t(video, gen(0))
    assert calls == [(torch.uint8, (2, 3, 18, 27))]  # short side 256 * 16 // 224, pre-crop
    inverted = plain((255 - video), gen(0))
    # inverting before or after two uint8 roundings differs by at most 2 levels
    torch.testing.assert_close(out, inverted, atol=2 / 255 + 1e-6, rtol=0)


# --------------------------------------------------------------------------- mixup partner

def test_mixup_partner_is_a_random_permutation_deterministic_per_generator():
    b, c = 6, 6
    videos = torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1, 1).expand(b, 2, 3, 4, 4)
    labels = torch.arange(b)
    perms = set()
    for seed in range(12):
        out, targets = mx.mixup_cutmix(videos, labels, c, cutmix_alpha=0.0,
                                       label_smoothing=0.0, generator=gen(seed))
        again = mx.mixup_cutmix(videos, labels, c, cutmix_alpha=0.0, label_smoothing=0.0,
                                generator=gen(seed))
        assert torch.equal(out, again[0]) and torch.equal(targets, again[1])
        partner = []
        for i in range(b):
            lam = targets[i, i].item()
            others = [j for j in range(c) if j != i and targets[i, j] > 0]
            partner.append(others[0] if others else i)
            if others:  # out = lam x_i + (1 - lam) x_p(i)
                assert lam < 1.0
                assert out[i].flatten()[0].item() == pytest.approx(
                    lam * i + (1 - lam) * partner[-1], abs=1e-5)
        assert sorted(partner) == list(range(b))  # a permutation
        perms.add(tuple(partner))
    assert len(perms) > 3  # the pairing is random, not a fixed (e.g. reversed) order


# --------------------------------------------------------------------------- text rows

class RecordText(torch.nn.Module):
    """Stands in for the train step: records the text rows it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.rows: list[list[int]] = []

    def forward(self, video: torch.Tensor, text: torch.Tensor, pairwise: bool = False):
        self.rows.append(text[:, 0, 0].tolist())  # tokens[r] hold r everywhere
        return torch.zeros(video.shape[0], text.shape[0], text.shape[1]) + self.w


def row_draws(draw: str, steps: int = 20, micros: int = 2) -> list[list[list[int]]]:
    from claver.engine.train import compute_loss

    cfg = Config()
    cfg.TRAIN.MIXUP = cfg.TRAIN.CUTMIX = 0.0
    cfg.TRAIN.TEXT_ROW_DRAW = draw
    tokens = torch.arange(3).view(3, 1, 1).expand(3, 4, 77).contiguous()  # R = 3 rows
    batch = {"video": torch.zeros(2, 4, 3, 8, 8), "label": torch.tensor([0, 1])}
    module = RecordText()
    out = []
    for step in range(steps):
        per = []
        for micro in range(micros):
            compute_loss(cfg, module, batch, tokens, 4, step, micro, torch.device("cpu"), None)
            per.append(module.rows[-1])
        out.append(per)
    return out


def test_text_rows_official_draw_is_k_with_replacement_per_micro_batch():
    draws = row_draws("official")
    assert draws == row_draws("official")  # a function of (seed, step, micro): resumable
    flat = [rows for per in draws for rows in per]
    assert all(len(rows) == 5 for rows in flat)  # K = 5 even with R = 3: with replacement
    assert all(0 <= r < 3 for rows in flat for r in rows)
    assert any(per[0] != per[1] for per in draws)  # a new draw per micro-batch
    per_step = row_draws("per_step")
    for per in per_step:  # ours: min(K, R) distinct rows once per optimizer step
        assert per[0] == per[1] and sorted(per[0]) == [0, 1, 2]


# --------------------------------------------------------------------------- configs

def test_paper_configs_state_their_recipe_and_official_epochs():
    for path in sorted(CONFIGS.rglob("*.yaml")):
        first = path.read_text().splitlines()[0]
        assert first.startswith("# Recipe:") or path.parent.name == "actionclip", path
    for name in ("k400/claver_b16_8f_kmt", "k400/claver_l14_8f_kmct", "k600/claver_b16_8f_kmt",
                 "zero_shot/k400_b16_32f"):
        cfg = load_config(CONFIGS / f"{name}.yaml")
        t, d = cfg.TRAIN, cfg.DATA
        assert (t.EPOCHS, t.WARMUP_EPOCHS, t.LR, t.MIN_LR_RATIO) == (60, 5, 12e-6, 0.01), name
        assert (t.NO_DECAY, t.WARMUP_PREFIX, t.TEXT_ROW_DRAW) == ("official", False, "official")
        assert (d.ANTIALIAS, d.KEEP_TAIL_FRAMES) == (False, False)
        assert t.EFFECTIVE_BATCH_SIZE == 256
    for name in ("hmdb51_b16_32f", "ucf101_b16_32f"):
        t = load_config(CONFIGS / "few_shot" / f"{name}.yaml").TRAIN
        assert (t.EPOCHS, t.LR, t.EFFECTIVE_BATCH_SIZE) == (80, 2e-6, 64)
    t = load_config(CONFIGS / "actionclip" / "k400_b16_8f_transf.yaml").TRAIN
    assert (t.NO_DECAY, t.MIN_LR_RATIO, t.WARMUP_PREFIX, t.WEIGHT_DECAY) == ("none", 0.0, True,
                                                                            0.2)


def test_new_config_keys_validate():
    cfg = load_config(None, ["TRAIN.RANDAUGMENT=[2,9]", "DATA.CLIP_TEST_RULE=0.x"])
    assert cfg.TRAIN.RANDAUGMENT == [2, 9] and cfg.DATA.CLIP_TEST_RULE == "0.x"
    for bad, match in (("TRAIN.RANDAUGMENT=[2]", "RANDAUGMENT"),
                       ("TRAIN.NO_DECAY=all", "NO_DECAY"),
                       ("TRAIN.TEXT_ROW_DRAW=once", "TEXT_ROW_DRAW"),
                       ("TRAIN.COLOR_JITTER_MODE=frame", "COLOR_JITTER_MODE"),
                       ("DATA.CLIP_TEST_RULE=2.x", "CLIP_TEST_RULE")):
        with pytest.raises(ConfigError, match=match):
            load_config(None, [bad])
