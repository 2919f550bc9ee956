"""Reduced precision on the CPU (issue 14): what ``precision="auto"`` resolves to, and what
the bf16 path keeps in float32 (the patch embedding, the residual stream, the output
projection and the text tower), which is what makes it agree with fp32.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

import claver
from claver.cli import main
from claver.runtime import cpu
from claver.runtime.agreement import agreement
from claver.runtime.select import choose_runtime, default_precision
from claver.runtime.towers import video_embedding
from claver.zeroshot import Predictor
from videos import make_video

LABELS = ["running", "swimming", "cooking", "juggling", "reading"]
CPU = torch.device("cpu")

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(name: str, seed: int = 0, **kw):
    torch.manual_seed(seed)
    model = claver.create_model(name, num_frames=4, **kw).eval()
    with torch.no_grad():
        model.logit_scale.fill_(math.log(100.0))  # a trained CLIP's scale: peaked softmax
    return model


def onnx_installed() -> bool:
    from claver.runtime.onnx import onnx_available

    return onnx_available()


# ----------------------------------------------------------------------- resolution

@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_only_where_the_cpu_has_it(monkeypatch, native):
    monkeypatch.setattr(cpu, "native_bf16", lambda: native)
    model = tiny("clip-tiny")
    fp32_runtime = "onnx" if onnx_installed() else "torch"
    expected = ("torch", "bf16") if native else (fp32_runtime, "fp32")
    assert choose_runtime("auto", model, CPU, "auto") == expected
    assert choose_runtime("torch", model, CPU, "auto") == ("torch", "bf16" if native else "fp32")
    assert choose_runtime("auto", model, torch.device("cuda"), "auto") == ("torch", "fp32")
    assert choose_runtime("auto", model, CPU, "fp32") == (fp32_runtime, "fp32")  # explicit
    if onnx_installed():
        assert choose_runtime("onnx", model, CPU, "auto") == ("onnx", "fp32")
    pred = Predictor(model, LABELS, precision="auto", runtime="auto")
    assert (pred.runtime, pred.precision) == expected
    with pytest.raises(ValueError, match="precision must be one of"):
        Predictor(model, LABELS, precision="bf8")


def test_cli_default_reports_the_resolved_precision(tmp_path, capsys):
    model = tiny("claver-tiny")
    ckpt = claver.models.factory.save_model(model, tmp_path / "m.safetensors")
    video = make_video(tmp_path / "v.mp4", num_frames=12, size=(40, 36))
    assert main(["predict", str(video), "--labels", ",".join(LABELS), "--model", str(ckpt),
                 "--json", "--no-progress"]) == 0
    header = json.loads(capsys.readouterr().out)
    assert header["precision"] == default_precision("auto", CPU)
    assert header["runtime"] == ("torch" if header["precision"] == "bf16" else
                                 "onnx" if onnx_installed() else "torch")


# ------------------------------------------------------------------- the bf16 path

@pytest.mark.parametrize("name", ["claver-tiny", "clip-tiny"])
def test_bf16_runs_the_blocks_in_bf16_on_a_float32_stream(name):
    model = tiny(name)
    seen: dict[str, torch.dtype] = {}
    blocks = list(model.visual.transformer.resblocks)
    if hasattr(model.visual, "transformer_t"):
        blocks += list(model.visual.transformer_t.resblocks)

    def record(key: str, dtype: torch.dtype) -> None:
        seen.setdefault(key, dtype)

    hooks = []
    for i, block in enumerate(blocks):
        hooks.append(block.register_forward_hook(
            lambda m, args, out, i=i: record(f"stream{i}", args[0].dtype)))
        mlp = block.mlp if hasattr(block, "mlp") else block.temporal_mlp
        hooks.append(mlp.c_fc.register_forward_hook(
            lambda m, args, out, i=i: record(f"fc{i}", out.dtype)))
    video = torch.randn(2, 4, 3, 32, 32)
    out = Predictor(model, precision="bf16").video_features(video)
    for h in hooks:
        h.remove()
    assert out.dtype == torch.float32 and out.shape == (2, model.config.embed_dim)
    assert {seen[f"stream{i}"] for i in range(len(blocks) - 1)} == {torch.float32}
    # the last block runs at the CLS rows only (its module forward is not called)
    assert {seen[k] for k in seen if k.startswith("fc")} == {torch.bfloat16}


def test_bf16_text_features_are_the_fp32_ones():
    model = tiny("claver-tiny")
    fp32 = Predictor(model, LABELS, precision="fp32").text_features
    bf16 = Predictor(model, LABELS, precision="bf16").text_features
    assert torch.equal(fp32, bf16)


@pytest.mark.parametrize("name,seed", [("claver-tiny", 0), ("claver-tiny", 1),
                                       ("clip-tiny", 0)])
def test_bf16_is_closer_to_fp32_than_plain_autocast(name, seed):
    """Keeping the stream float32 more than halves the embedding error of autocast over the
    whole model (whose residual stream becomes bf16) and keeps every confident top-1.
    (Probabilities within 0.01 is what benchmarks/predict.py checks on ViT-B/32; on these
    width-64 models with logit scale 100 the largest change reaches 0.013 on one seed.)"""
    model = tiny(name, seed)
    torch.manual_seed(100 + seed)
    video = torch.randn(8, 4, 3, 32, 32)
    ref = Predictor(model, LABELS, precision="fp32")
    ours = Predictor(model, LABELS, precision="bf16")
    v_ref, v_ours = ref.video_features(video), ours.video_features(video)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        v_plain = video_embedding(model, video)
    err_ours = float((v_ours - v_ref).norm(dim=-1).max())
    err_plain = float((v_plain - v_ref).norm(dim=-1).max())
    assert 0 < err_ours < 0.5 * err_plain
    a = agreement(ref.probs_from_features(v_ref), ours.probs_from_features(v_ours))
    assert a.same_top1 == a.checked > 0 and a.max_abs < 0.02
