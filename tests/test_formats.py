"""Every supported checkpoint format, built from random weights in the test, loads strictly."""

from __future__ import annotations

import sys
import types
import warnings

import pytest
import torch

import claver
from claver.models.factory import build_model, load_model, save_model
from claver.weights.formats import CheckpointError, read_checkpoint

T = 4


def tiny(name="claver-tiny", seed=0, **kw):
    torch.manual_seed(seed)
    model = claver.create_model(name, num_frames=T, **kw).eval()
    with torch.no_grad():  # non-trivial values in every tensor (biases, norms)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def video(b=2):
    return torch.randn(b, T, 3, 32, 32, generator=torch.Generator().manual_seed(7))


TEXT = claver.tokenize(["jumping", "a video of swimming"])


def same_outputs(a, b, atol=1e-6):
    with torch.no_grad():
        torch.testing.assert_close(a(video(), TEXT), b(video(), TEXT), atol=atol, rtol=1e-5)


# --------------------------------------------------------------------------- ours

def test_our_format_round_trip_is_self_describing(tmp_path):
    m = tiny(mask="kmct")
    path = save_model(m, tmp_path / "m.safetensors")
    loaded = load_model(path).eval()
    assert loaded.config == m.config and loaded.config.mask == "kmct"
    same_outputs(m, loaded, atol=0)
    assert read_checkpoint(path).format == "claver"


@pytest.mark.parametrize("fusion", ["meanP", "Conv1D", "LSTM", "Transf", "Transf_cls"])
def test_our_format_actionclip(tmp_path, fusion):
    m = tiny("actionclip-tiny", fusion=fusion)
    loaded = load_model(save_model(m, tmp_path / "a.safetensors")).eval()
    assert loaded.config.fusion == fusion
    same_outputs(m, loaded, atol=0)


# --------------------------------------------------------------------------- OpenAI CLIP

@pytest.fixture()
def openai_torchscript(oracle_clip_model, tmp_path):
    """An OpenAI-style TorchScript archive (traced, with the three int entries OpenAI adds)."""
    torch.manual_seed(5)
    ref = oracle_clip_model.CLIP(64, 32, 3, 64, 8, 77, 49408, 64, 1, 2).float().eval()
    for name, value in [("input_resolution", 32), ("context_length", 77), ("vocab_size", 49408)]:
        ref.__dict__.pop(name, None)  # plain attributes in model.py; buffers in the archives
        ref.register_buffer(name, torch.tensor(value))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings of torch.jit
        traced = torch.jit.trace(ref, (torch.randn(1, 3, 32, 32), TEXT[:1]))
    path = tmp_path / "ViT-tiny.pt"
    traced.save(str(path))
    return ref, path


def test_openai_torchscript_archive_loads_as_clip(openai_torchscript):
    ref, path = openai_torchscript
    ckpt = read_checkpoint(path)
    assert ckpt.format == "openai-clip"
    assert "input_resolution" not in ckpt.state_dict
    model = load_model(path).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(images, normalize=False),
                                   ref.encode_image(images), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.encode_text(TEXT, normalize=False),
                                   ref.encode_text(TEXT), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["claver-tiny", "actionclip-tiny"])
def test_openai_weights_under_a_video_model(openai_torchscript, name):
    ref, path = openai_torchscript
    model = claver.create_model(name, num_frames=T, pretrained=path, fusion="Transf")
    ref_sd = {k: v for k, v in ref.state_dict().items()
              if k not in ("input_resolution", "context_length", "vocab_size")}
    ours = model.state_dict()
    for k, v in ref_sd.items():
        assert torch.equal(ours[k], v), k
    fresh = [k for k in ours if k not in ref_sd]
    assert fresh and all(k.startswith(("visual.temporal_embedding", "visual.transformer_t.",
                                       "fusion.")) for k in fresh)
    # and via load_model with an architecture override
    assert type(load_model(path, arch="claver", num_frames=T)).__name__ == "CLAVER"


def test_openai_plain_fp16_state_dict(tmp_path):
    m = tiny("clip-tiny")
    path = tmp_path / "clip_fp16.pt"
    torch.save({k: v.half() for k, v in m.state_dict().items()}, path)
    loaded = load_model(path)
    assert loaded.dtype == torch.float32
    for k, v in m.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v.half().float())


# --------------------------------------------------------------------------- CLAVER official

@pytest.fixture()
def fake_yacs():
    """A stand-in for yacs.config.CfgNode present only while the checkpoint is written."""
    yacs, config = types.ModuleType("yacs"), types.ModuleType("yacs.config")

    class CfgNode(dict):
        pass

    CfgNode.__module__, CfgNode.__qualname__ = "yacs.config", "CfgNode"
    config.CfgNode = CfgNode
    yacs.config = config
    sys.modules["yacs"], sys.modules["yacs.config"] = yacs, config
    yield CfgNode
    del sys.modules["yacs"], sys.modules["yacs.config"]


def _official_claver(model, cfg_cls, mask=None):
    node = cfg_cls(MODEL=cfg_cls(ARCH="ViT-B/32"), DATA=cfg_cls(NUM_FRAMES=T))
    if mask:
        node["MODEL"]["MASK"] = mask
    sd = {f"module.{k}": v for k, v in model.state_dict().items()}
    return {"model": sd, "config": node, "optimizer": {"state": {}, "param_groups": []},
            "lr_scheduler": {"last_epoch": 3}, "max_accuracy": 71.5, "epoch": 3}


@pytest.mark.parametrize("mask", ["kmt", "kmct"])
def test_official_claver_checkpoint(tmp_path, fake_yacs, mask):
    m = tiny(mask=mask)
    path = tmp_path / "ckpt_epoch_3.pth"
    torch.save(_official_claver(m, fake_yacs, mask.upper()), path)
    ckpt = read_checkpoint(path)
    assert ckpt.format == "claver-official" and ckpt.extra["epoch"] == 3
    loaded = load_model(path).eval()
    assert loaded.config.mask == mask and loaded.config.num_frames == T
    same_outputs(m, loaded, atol=0)


def test_official_claver_without_mask_record_warns(tmp_path, fake_yacs):
    path = tmp_path / "ckpt.pth"
    torch.save(_official_claver(tiny(), fake_yacs), path)
    with pytest.warns(UserWarning, match="KMT or KMCT: assuming kmt"):
        load_model(path)


def test_num_frames_override_interpolates_temporal_embedding(tmp_path):
    m = tiny()
    path = save_model(m, tmp_path / "m.safetensors")
    with pytest.warns(UserWarning, match="temporal embedding has 4 frames, the model 7"):
        loaded = load_model(path, num_frames=7)
    old, new = m.visual.temporal_embedding[0], loaded.visual.temporal_embedding[0]
    assert new.shape == (7, 64)
    torch.testing.assert_close(new[0], old[0])
    torch.testing.assert_close(new[-1], old[-1])
    torch.testing.assert_close(new[2], old[1])  # new frame i sits at old position i / 2
    torch.testing.assert_close(new[1], (old[0] + old[1]) / 2)
    assert loaded.encode_video(torch.randn(1, 7, 3, 32, 32)).shape == (1, 64)


# --------------------------------------------------------------------------- ActionCLIP

def _to_original_actionclip(model, frame_rows=77):
    """Our ActionCLIP -> the original repo's checkpoint layout (written independently here)."""
    clip_sd, fusion_sd = {}, {}
    for k, v in model.state_dict().items():
        if not k.startswith("fusion."):
            clip_sd[f"module.{k}"] = v.half()
            continue
        k = k[len("fusion."):]
        if k.startswith(("transformer_enc.", "cls_token", "pos_embed")):
            k = "transformer." + k
        fusion_sd[f"module.{k}"] = v.half()
    fusion = model.config.fusion
    if fusion != "meanP":  # every head but meanP has a 77-row frame position table
        table = fusion_sd.get("module.frame_position_embeddings.weight")
        full = torch.randn(frame_rows, model.config.embed_dim).half()
        if table is not None:
            full[: table.shape[0]] = table
        fusion_sd["module.frame_position_embeddings.weight"] = full
    return {"model_state_dict": clip_sd, "fusion_model_state_dict": fusion_sd,
            "optimizer_state_dict": {"state": {}, "param_groups": []}, "epoch": 9}


@pytest.mark.parametrize("fusion", ["meanP", "Conv1D", "LSTM", "Transf", "Transf_cls"])
def test_original_actionclip_checkpoint(tmp_path, fusion):
    m = tiny("actionclip-tiny", fusion=fusion)
    path = tmp_path / "model_best.pt"
    torch.save(_to_original_actionclip(m), path)
    ckpt = read_checkpoint(path)
    assert ckpt.format == "actionclip-original" and ckpt.config.fusion == fusion
    loaded = load_model(path, num_frames=T).eval()
    # reference: our model with weights rounded through fp16, as stored; an original Conv1D
    # head keeps the original's (B, T, C) -> (B, C, T) view (tests/test_fidelity_actionclip.py)
    layout = "original" if fusion == "Conv1D" else "time"
    assert loaded.config.conv1d_layout == layout
    ref = build_model(m.config.replace(conv1d_layout=layout)).eval()
    ref.load_state_dict({k: v.half().float() for k, v in m.state_dict().items()})
    same_outputs(ref, loaded, atol=1e-6)


def test_original_actionclip_warns_frames_unknown(tmp_path):
    path = tmp_path / "model_best.pt"
    torch.save(_to_original_actionclip(tiny("actionclip-tiny", fusion="Transf")), path)
    with pytest.warns(UserWarning, match="does not record the number of frames"):
        load_model(path)


def test_mmaction2_actionclip_checkpoint(tmp_path):
    m = tiny("actionclip-tiny", fusion="Transf")
    sd = {}
    for k, v in m.state_dict().items():
        if k.startswith("fusion."):
            sd["adapter." + k[len("fusion."):]] = v
        else:
            sd["clip." + k] = v
    path = tmp_path / "actionclip_mmaction2.pth"
    torch.save({"meta": {"epoch": 1}, "state_dict": sd}, path)
    ckpt = read_checkpoint(path)
    assert ckpt.format == "actionclip-mmaction2" and ckpt.config.num_frames == T
    loaded = load_model(path).eval()
    assert loaded.config.fusion == "Transf"
    same_outputs(m, loaded, atol=0)


# --------------------------------------------------------------------------- strictness

def test_mismatched_architecture_names_both(tmp_path):
    path = save_model(tiny(), tmp_path / "tiny.safetensors")
    with pytest.raises(CheckpointError) as e:
        claver.create_model("claver-tiny6", num_frames=T, pretrained=path)
    msg = str(e.value)
    assert "'claver-tiny6' vs the checkpoint: vision.layers: 6 vs 3" in msg
    assert "MODEL.ARCH=claver-tiny" in msg  # the preset the checkpoint matches


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    sd = tiny().state_dict()
    del sd["visual.transformer_t.resblocks.0.temporal_ln_2.bias"]
    sd["visual.prompts_generator.alpha"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save({"model": sd}, path)
    with pytest.raises(CheckpointError) as e, pytest.warns(UserWarning, match="assuming kmt"):
        load_model(path)
    msg = str(e.value)
    assert "missing 1 key(s): visual.transformer_t.resblocks.0.temporal_ln_2.bias" in msg
    assert "unexpected 1 key(s): visual.prompts_generator.alpha" in msg
    assert "bad.pth" in msg


def test_shape_mismatch_is_reported(tmp_path):
    path = save_model(tiny("clip-tiny"), tmp_path / "clip.safetensors")
    with pytest.raises(CheckpointError, match="shape mismatch"):
        claver.create_model("claver-tiny", pretrained=path, embed_dim=32)


def test_unsupported_and_corrupt_files(tmp_path):
    odd = tmp_path / "odd.pt"
    torch.save({"weights": [1, 2, 3]}, odd)
    with pytest.raises(CheckpointError, match="unsupported checkpoint format.*weights"):
        load_model(odd)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_model(tmp_path / "nope.pt")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(CheckpointError, match="junk.bin"):
        load_model(junk)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.safetensors"):
        load_model(empty)
    good = save_model(tiny(), tmp_path / "cut.safetensors")
    good.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="cut.safetensors"):
        load_model(good)
    safet = tmp_path / "other.safetensors"
    from safetensors.torch import save_file
    save_file({"encoder.weight": torch.zeros(2)}, str(safet))
    with pytest.raises(CheckpointError, match="unrecognised keys"):
        load_model(safet)


def test_bad_override(tmp_path):
    path = save_model(tiny(), tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match="cannot apply options"):
        load_model(path, frames=3)


def test_openai_tag_needs_openai_backbone(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="needs an OpenAI backbone"):
        claver.create_model("claver-tiny", pretrained="openai")
    monkeypatch.setenv("CLAVER_OFFLINE", "1")
    with pytest.raises(Exception, match=str(tmp_path)):
        claver.create_model("claver-vit-b32", pretrained="openai", cache_dir=tmp_path)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_load_model_refuses_a_malicious_pickle(tmp_path):
    from claver.weights.safe_load import UnsafeCheckpointError

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": tiny().state_dict(), "config": _Payload(marker)}, path)
    with pytest.raises(UnsafeCheckpointError, match="system") as e:
        load_model(path)
    assert isinstance(e.value, CheckpointError) and "evil.pth" in str(e.value)
    assert not marker.exists()
