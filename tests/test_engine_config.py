"""Config loading, optimizer groups, schedule and losses."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import claver
from claver.engine.config import ConfigError, load_config, parse_overrides
from claver.engine.losses import actionclip_loss, soft_target_cross_entropy
from claver.engine.optim import WarmupCosine, build_optimizer, param_groups


def test_yaml_inheritance_and_both_override_styles(tmp_path):
    (tmp_path / "base.yaml").write_text("TRAIN: {LR: 1.0e-5, EPOCHS: 30}\nDATA: {NUM_FRAMES: 8}\n")
    (tmp_path / "child.yaml").write_text("BASE: [base.yaml]\nTRAIN: {EPOCHS: 10}\nSEED: 3\n")
    cfg = load_config(tmp_path / "child.yaml", ["TRAIN.LR", "2e-6", "DATA.NUM_FRAMES=16",
                                                  "MODEL.MASK=kmct"])
    assert cfg.TRAIN.LR == 2e-6 and cfg.TRAIN.EPOCHS == 10 and cfg.SEED == 3
    assert cfg.DATA.NUM_FRAMES == 16 and cfg.MODEL.MASK == "kmct"
    assert parse_overrides(["A.B", "1", "C=x"]) == [("A.B", 1), ("C", "x")]


@pytest.mark.parametrize("text,opts,match", [
    ("TRAIN: {LRR: 1}", [], "unknown key TRAIN.LRR; did you mean TRAIN.LR"),
    ("TRAIN: {EPOCHS: many}", [], "TRAIN.EPOCHS must be int, got 'many'"),
    ("", ["MODEL.MASK", "causal"], "MODEL.MASK must be one of"),
    ("", ["TRAIN.LR"], "has no value"),
    ("- a\n- b", [], "expected a mapping"),
    ("BASE: [missing.yaml]", [], "config file not found"),
    ("BASE: 5", [], "BASE must be a file name or a list of file names"),
    ("a: &x [1]\nTRAIN: {BETAS: *x}", [], r"c.yaml, line 2: invalid YAML: YAML alias \*x is not"),
    ("SEED: " + "9" * 4400, [], "c.yaml, line 1: YAML holds an integer of more than 4300 digits"),
    ("DATA: {NUM_FRAMES: 0}", [], "DATA.NUM_FRAMES must be a finite number from 1 to 256"),
    ("", ["DATA.INPUT_SIZE=-224"], "command line: DATA.INPUT_SIZE must be a finite number"),
    ("", ["TRAIN.BETAS", "[&a 1, *a]"], "command line 'TRAIN.BETAS', line 1: invalid YAML"),
    ("OUTPUT: [" + "1, " * 5000 + "]", [],
     r"OUTPUT must be str, got \[1, 1, .*\.\.\.\]; e.g. OUTPUT: .runs/default."),
    ("MODEL: {ARCH: " + "x" * 100000 + "}", [], r"MODEL.ARCH: unknown model name 'x+\.\.\.x+'; "
                                                "expected one of"),
])
def test_config_errors_name_the_key_and_file(tmp_path, text, opts, match):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(path, opts)


def test_param_groups_cover_every_parameter_once_with_10x_for_new_parts():
    torch.manual_seed(0)
    model = claver.create_model("claver-tiny", num_frames=4)
    groups = param_groups(model, lr=1e-5, weight_decay=0.001, new_lr_mult=10)
    names = [n for g in groups for n in g["names"]]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())  # all, once
    by_name = {n: g for g in groups for n in g["names"]}
    assert by_name["visual.transformer_t.resblocks.0.temporal_attn.in_proj_weight"]["lr"] == 1e-4
    assert by_name["visual.transformer.resblocks.0.attn.in_proj_weight"]["lr"] == 1e-5
    assert by_name["visual.transformer.resblocks.0.attn.in_proj_weight"]["weight_decay"] == 0.001
    for n in ["visual.positional_embedding", "visual.class_embedding",
              "visual.ln_post.weight", "visual.transformer.resblocks.0.mlp.c_fc.bias"]:
        assert by_name[n]["weight_decay"] == 0.0, n
    # the official rule decays the temporal embedding (3-D) and the logit scale (0-D)
    for n in ["visual.temporal_embedding", "logit_scale"]:
        assert by_name[n]["weight_decay"] == 0.001, n
    opt = build_optimizer(model, 1e-5, 0.001, 10)
    assert opt.defaults["betas"] == (0.9, 0.98) and opt.defaults["eps"] == 1e-8


def test_warmup_cosine_schedule():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [p], "lr_mult": 10.0}], lr=1.0)
    # ActionCLIP form (warm-up prefix, per-group floor); the official form: test_fidelity_claver
    s = WarmupCosine(opt, base_lr=1.0, total_steps=110, warmup_steps=10, min_ratio=0.01,
                     warmup_prefix=True)
    assert s.apply(1) == pytest.approx(0.1) and opt.param_groups[0]["lr"] == pytest.approx(1.0)
    assert s.factor(0) == 0.0 and s.factor(9) == pytest.approx(0.9)
    assert s.factor(10) == pytest.approx(1.0)
    assert s.factor(60) == pytest.approx(0.01 + 0.99 * 0.5)
    assert s.factor(110) == pytest.approx(0.01) and s.factor(500) == pytest.approx(0.01)


def test_soft_target_cross_entropy_matches_cross_entropy():
    logits = torch.randn(4, 5)
    labels = torch.tensor([0, 3, 4, 1])
    torch.testing.assert_close(soft_target_cross_entropy(logits, labels),
                               F.cross_entropy(logits, labels))
    smooth = torch.full((4, 5), 0.02)
    smooth[torch.arange(4), labels] = 0.92
    torch.testing.assert_close(soft_target_cross_entropy(logits, smooth),
                               F.cross_entropy(logits, labels, label_smoothing=0.1))
    rows = torch.randn(4, 3, 5)  # K = 3 text rows: the mean of each row's loss
    expected = sum(F.cross_entropy(rows[:, k], labels) for k in range(3)) / 3
    torch.testing.assert_close(soft_target_cross_entropy(rows, labels), expected)


def test_actionclip_loss_multi_positive_targets():
    torch.manual_seed(0)
    v = F.normalize(torch.randn(4, 8), dim=-1)
    t = F.normalize(torch.randn(4, 8), dim=-1)
    labels = torch.tensor([0, 1, 0, 2])  # samples 0 and 2 share a class
    scale = torch.tensor(math.log(10.0))
    loss = actionclip_loss(v, t, labels, scale)
    logits = 10 * v @ t.t()
    same = (labels[:, None] == labels[None]).float()
    target = torch.softmax(10 * same, 1)  # the original ActionCLIP target, not same / sum
    kl = lambda lg: (target * (target.clamp(min=1e-12).log() - lg.log_softmax(1))).sum(1).mean()  # noqa: E731
    torch.testing.assert_close(loss, (kl(logits) + kl(logits.t())) / 2)
