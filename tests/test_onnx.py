"""ONNX export and the ONNX Runtime path of zero-shot prediction (issue 14).

Parity of the exported towers with the eager model (CLAVER KMT and KMCT, every ActionCLIP
head, plain CLIP), the files' metadata, a checkpoint written by ``claver train`` exported and
predicted with, the one-line error when onnxruntime is missing (and the default falling back
to torch), the export cache, int8, and the agreement rule a faster mode must pass.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch
import torch.nn.functional as F

import claver
from claver.cli import main
from claver.runtime.agreement import agreement
from claver.zeroshot import Predictor, predict
from videos import make_video

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from claver.runtime import onnx as ronnx  # noqa: E402

LABELS = ["running", "swimming", "cooking"]

pytestmark = pytest.mark.usefixtures("one_thread", "onnx_cache")


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory):
    """Exports go to a temporary cache, not ~/.cache/claver."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLAVER_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def tiny(name: str, seed: int = 0, **kw):
    torch.manual_seed(seed)
    return claver.create_model(name, num_frames=4, **kw).eval()


def eager_video(model, video: torch.Tensor) -> torch.Tensor:
    """Reference from the definitions: CLAVER/ActionCLIP's encode_video; plain CLIP the
    normalised mean of its frame features."""
    with torch.no_grad():
        if hasattr(model, "encode_video"):
            return model.encode_video(video)
        b, t = video.shape[:2]
        frames = model.encode_image(video.flatten(0, 1), normalize=False).view(b, t, -1)
        return F.normalize(frames.mean(1), dim=-1)


# ------------------------------------------------------------------------------- parity

@pytest.mark.parametrize("name,kw", [("claver-tiny", {"mask": "kmt"}),
                                     ("claver-tiny", {"mask": "kmct"}),
                                     ("actionclip-tiny", {"fusion": "meanP"}),
                                     ("actionclip-tiny", {"fusion": "Conv1D"}),
                                     ("actionclip-tiny", {"fusion": "LSTM"}),
                                     ("actionclip-tiny", {"fusion": "Transf"}),
                                     ("actionclip-tiny", {"fusion": "Transf_cls"}),
                                     ("clip-tiny", {})])
def test_exported_towers_equal_the_eager_model(tmp_path, name, kw):
    model = tiny(name, **kw)
    paths = ronnx.export_onnx(model, tmp_path / "m.onnx")
    assert paths == {"video": tmp_path / "m.onnx", "text": tmp_path / "m.text.onnx"}
    exported = ronnx.load_onnx_model(tmp_path / "m.onnx")
    for batch in (1, 3):  # dynamic batch
        video = torch.randn(batch, 4, 3, 32, 32)
        got = exported.encode_video(video)
        assert got.shape == (batch, 64)
        torch.testing.assert_close(got, eager_video(model, video), rtol=0, atol=1e-4)
    tokens = claver.tokenize(["a", "a video of a person riding a bike down a hill.", "swim"])
    with torch.no_grad():
        expected = model.encode_text(tokens)
    torch.testing.assert_close(exported.encode_text(tokens), expected, rtol=0, atol=1e-4)
    # what the files say about the model
    assert exported.config == model.config
    assert exported.preprocess == claver.inputs.Preprocess.for_model(model)
    assert float(exported.logit_scale) == pytest.approx(float(model.logit_scale.detach()))


def test_kmt_and_kmct_exports_carry_their_own_mask(tmp_path):
    kmt = tiny("claver-tiny", mask="kmt")
    kmct = tiny("claver-tiny", mask="kmct")
    kmct.load_state_dict(kmt.state_dict())  # same weights: only the mask differs
    video = torch.randn(2, 4, 3, 32, 32)
    outs = {}
    for tag, model in (("kmt", kmt), ("kmct", kmct)):
        ronnx.export_onnx(model, tmp_path / f"{tag}.onnx", text=False)
        outs[tag] = ronnx.load_onnx_model(tmp_path / f"{tag}.onnx").encode_video(video)
        torch.testing.assert_close(outs[tag], eager_video(model, video), rtol=0, atol=1e-4)
    assert (outs["kmt"] - outs["kmct"]).abs().max() > 1e-3


def test_predict_with_an_exported_file_equals_torch(tmp_path):
    model = tiny("claver-tiny")
    ronnx.export_onnx(model, tmp_path / "m.onnx")
    video = torch.randint(0, 256, (6, 40, 48, 3), dtype=torch.uint8)
    ref = predict(video, LABELS, model=model, runtime="torch", templates="claver",
                  precision="fp32")
    by_file = predict(video, LABELS, model=str(tmp_path / "m.onnx"), templates="claver")
    auto = predict(video, LABELS, model=model, templates="claver", precision="fp32")
    torch.testing.assert_close(by_file.probs, ref.probs, rtol=0, atol=1e-5)
    torch.testing.assert_close(auto.probs, ref.probs, rtol=0, atol=1e-5)
    pred = Predictor(model, LABELS, runtime="auto")
    assert (pred.runtime, pred.precision) == ("onnx", "fp32")


def test_export_refuses_files_that_are_not_ours(tmp_path):
    model = tiny("clip-tiny")
    with pytest.raises(ValueError, match=r"must end in \.onnx"):
        ronnx.export_onnx(model, tmp_path / "m.bin")
    ronnx.export_onnx(model, tmp_path / "m.onnx")
    with pytest.raises(ronnx.OnnxModelError, match="text tower; pass the video tower"):
        ronnx.load_onnx_model(tmp_path / "m.text.onnx")
    data = (tmp_path / "m.onnx").read_bytes()
    i = data.index(b"claver.format")
    (tmp_path / "plain.onnx").write_bytes(data[:i - 4])  # without our metadata
    with pytest.raises(ronnx.OnnxModelError, match="not an ONNX file written by"):
        ronnx.load_onnx_model(tmp_path / "plain.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ronnx.OnnxModelError, match="junk.onnx: ONNX Runtime cannot load it"):
        ronnx.load_onnx_model(tmp_path / "junk.onnx")


# ------------------------------------------------------------------------ cache and int8

def test_video_encoder_exports_once_per_weights(tmp_path):
    model = tiny("actionclip-tiny", seed=3, fusion="meanP")
    a = ronnx.video_encoder(model, cache=tmp_path)
    files = sorted(tmp_path.glob("*.onnx"))
    assert len(files) == 1 and ronnx.weights_sha256(model) in files[0].name
    assert ronnx.video_encoder(model, cache=tmp_path) is a
    video = torch.randn(2, 4, 3, 32, 32)
    before = a(video)
    with torch.no_grad():
        model.visual.ln_post.bias.add_(0.5)  # new weights: a new export, not the stale one
    b = ronnx.video_encoder(model, cache=tmp_path)
    assert b is not a and len(list(tmp_path.glob("*.onnx"))) == 2
    torch.testing.assert_close(b(video), eager_video(model, video), rtol=0, atol=1e-4)
    assert (b(video) - before).abs().max() > 1e-3


def test_int8_quantises_the_matmuls_and_stays_close(tmp_path):
    model = tiny("claver-tiny", seed=1)
    paths = ronnx.export_onnx(model, tmp_path / "q.onnx", precision="int8", text=False)
    import onnx

    ops = {n.op_type for n in onnx.load(str(paths["video"])).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops
    exported = ronnx.load_onnx_model(paths["video"])
    assert exported.precision == "int8"
    video = torch.randn(2, 4, 3, 32, 32)
    diff = (exported.encode_video(video) - eager_video(model, video)).abs().max()
    assert 0 < diff < 0.05  # quantised: close, not equal
    pred = Predictor(model, LABELS, precision="int8", runtime="auto")
    assert (pred.runtime, pred.precision) == ("onnx", "int8")


def test_runtime_and_precision_errors():
    model = tiny("clip-tiny")
    with pytest.raises(ValueError, match="runtime 'onnx' runs fp32 or int8"):
        Predictor(model, LABELS, runtime="onnx", precision="bf16")
    with pytest.raises(ValueError, match="'int8' needs runtime 'onnx'"):
        Predictor(model, LABELS, runtime="torch", precision="int8")
    with pytest.raises(ValueError, match="runtime must be one of"):
        Predictor(model, LABELS, runtime="tensorrt")
    assert Predictor(model, LABELS, runtime="auto", precision="bf16").runtime == "torch"


# -------------------------------------------------------------- without onnxruntime

def test_missing_onnxruntime_is_one_line_and_auto_falls_back(tmp_path, capsys, monkeypatch):
    model = tiny("claver-tiny")
    ckpt = claver.models.factory.save_model(model, tmp_path / "m.safetensors")
    video = make_video(tmp_path / "v.mp4", num_frames=12, size=(40, 36))
    args = ["predict", str(video), "--labels", "a,b", "--model", str(ckpt), "--no-progress"]
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime: ImportError
    assert main([*args, "--runtime", "onnx"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "pip install 'claver[onnx]'" in lines[0], lines
    assert main(["export", str(ckpt), str(tmp_path / "x.onnx")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "claver[onnx]" in lines[0], lines
    assert not (tmp_path / "x.onnx").exists()
    assert main([*args, "--json"]) == 0  # the default falls back to torch
    assert json.loads(capsys.readouterr().out)["runtime"] == "torch"


# ------------------------------------------------- a checkpoint written by claver train

def test_export_a_training_checkpoint_and_predict_with_it(tmp_path, capsys):
    from claver.data.sources import write_labels
    from claver.engine.config import load_config
    from claver.engine.train import train
    from test_engine_train import write_config

    data = tmp_path / "data"
    data.mkdir()
    lines = []
    for c in range(3):
        for k in range(2):
            make_video(data / f"c{c}_{k}.mp4", num_frames=12, size=(40, 36))
            lines.append(f"c{c}_{k}.mp4 {c}")
    (data / "train.txt").write_text("\n".join(lines) + "\n")
    (data / "val.txt").write_text("\n".join(lines[::2]) + "\n")
    write_labels(["jumping", "running", "swimming"], data / "labels.csv")
    cfg = load_config(write_config(tmp_path / "c.yaml", data, tmp_path / "run"),
                      ["TRAIN.EPOCHS=1"])
    train(cfg, log=lambda *a: None)
    ckpt = tmp_path / "run" / "last.pth"
    out = tmp_path / "trained.onnx"
    assert main(["export", str(ckpt), str(out)]) == 0
    printed = capsys.readouterr().out
    diffs = [float(x.split()[1].rstrip(",")) for x in printed.split("torch| on a random input: ")[
        1].splitlines()[0].split(", ")[0:1]]
    assert "video" in printed and diffs[0] <= 1e-4
    assert out.is_file() and (tmp_path / "trained.text.onnx").is_file()
    video = str(data / "c1_0.mp4")
    labels = "jumping,running,swimming"
    assert main(["predict", video, "--labels", labels, "--model", str(out), "--json",
                 "--no-progress"]) == 0
    by_onnx = json.loads(capsys.readouterr().out)
    assert main(["predict", video, "--labels", labels, "--model", str(ckpt), "--json",
                 "--runtime", "torch", "--precision", "fp32", "--no-progress",
                 "--template", "a video of {}."]) == 0
    by_torch = json.loads(capsys.readouterr().out)
    assert by_onnx["runtime"] == "onnx" and by_torch["runtime"] == "torch"
    for name, p in by_torch["results"][0]["probs"].items():
        assert by_onnx["results"][0]["probs"][name] == pytest.approx(p, abs=1e-5)


# ------------------------------------------------------------------------ agreement

def test_agreement_rule():
    ref = torch.tensor([[0.50, 0.30, 0.20],    # margin 0.20: top-1 must stay
                        [0.405, 0.40, 0.195],  # margin 0.005: top-1 may flip
                        [0.34, 0.33, 0.33]])   # margin 0.01 exactly: not "exceeds"
    same = agreement(ref, ref.clone())
    assert (same.videos, same.checked, same.same_top1, same.max_abs, same.ok) == (3, 1, 1, 0, True)
    flipped_close = ref.clone()
    flipped_close[1] = torch.tensor([0.400, 0.405, 0.195])  # flip under the margin: fine
    flipped_close[2] = torch.tensor([0.33, 0.34, 0.33])
    assert agreement(ref, flipped_close).ok
    flipped_confident = ref.clone()
    flipped_confident[0] = torch.tensor([0.395, 0.405, 0.20])  # dp 0.105 and top-1 moved
    a = agreement(ref, flipped_confident)
    assert (a.checked, a.same_top1, a.ok) == (1, 0, False)
    shifted = ref + torch.tensor([[0.011, -0.011, 0.0], [0, 0, 0], [0, 0, 0]])
    b = agreement(ref, shifted)  # same top-1 everywhere, one probability 0.011 off
    assert b.same_top1 == b.checked and b.max_abs == pytest.approx(0.011) and not b.ok
    assert "DISAGREES" in str(b) and "agrees" in str(same)
    with pytest.raises(ValueError, match="same shape"):
        agreement(ref, ref[:2])
