"""Zero-shot prediction: the Python API, windows over long videos and ``claver predict``.

Tiny random-weight models check the arithmetic (against ``model(video, text)``), inputs and
errors; a tiny CLAVER trained here for a few steps (3 colour classes) checks that predictions
through files, windows and the CLI are right.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import claver
from claver.cli import main
from claver.data.decode import VideoDecodeError, read_video
from claver.data.sampling import segment_indices
from claver.data.transforms import build_eval_transform
from claver.inputs import Preprocess, text_rows
from claver.models.factory import save_model
from claver.zeroshot import (
    Predictor,
    merge_windows,
    predict,
    predict_windows,
    smooth_probs,
    window_indices,
    window_spans,
)
from videos import draw_index, frame_index, make_empty, make_video

LABELS = ["running", "swimming", "cooking"]
COLOURS = {"red": (230, 30, 30), "green": (30, 200, 40), "blue": (40, 60, 230)}


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def tiny(name: str = "claver-tiny", seed: int = 0, **kw):
    torch.manual_seed(seed)
    return claver.create_model(name, num_frames=kw.pop("num_frames", 4), **kw).eval()


@pytest.fixture(scope="module")
def model():
    return tiny()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("videos")
    return [make_video(d / "a.mp4", num_frames=30, size=(64, 48)),
            make_video(d / "b.avi", num_frames=45, size=(80, 60), codec="mpeg4"),
            make_video(d / "c.webm", num_frames=12, size=(48, 64), codec="vp9")]


def reference_probs(model, video_uint8: torch.Tensor, rows: list[list[str]]) -> torch.Tensor:
    """Independent path: eval transform + claver.tokenize + model(video, text) (B, R, C).
    Zero-shot preprocessing scales the short side to S (not 256/224 S, as the one-crop
    evaluation of training does): the centre one of the three-crop view (short side S)."""
    cfg = model.config
    x = build_eval_transform(cfg.vision.image_size, mean=cfg.mean, std=cfg.std,
                             crops=3)(video_uint8)[1]
    text = torch.stack([claver.tokenize(r) for r in rows])  # (R, C, 77)
    with torch.no_grad():
        logits = model(x[None], text)
    return logits.softmax(-1).mean(1)[0]


# ----------------------------------------------------------------------------- arithmetic

def test_single_template_is_the_softmax_of_the_models_logits(model):
    video = torch.randint(0, 256, (4, 40, 40, 3), dtype=torch.uint8)
    result = predict(video, LABELS, model=model, template="a video of {}.", precision="fp32")
    expected = reference_probs(model, video, [[f"a video of {c}." for c in LABELS]])
    torch.testing.assert_close(result.probs, expected, rtol=0, atol=1e-6)
    assert abs(float(result.probs.sum()) - 1) < 1e-5
    assert result.label == LABELS[int(expected.argmax())]
    assert [p for _, p in result.top()] == sorted(result.probs.tolist(), reverse=True)
    assert result["cooking"] == pytest.approx(float(expected[2]))


def test_templates_and_descriptions_average_the_row_softmax(model):
    video = torch.randint(0, 256, (6, 36, 48, 3), dtype=torch.uint8)
    templates = ["a video of {}.", "Look, the human is {}"]
    descriptions = {"running": ["legs move fast", "a jogger on a track"],
                    "swimming": ["a person in water"], "cooking": ["a pan on a stove"],
                    "unused": ["ignored"]}
    rows = text_rows(LABELS, templates, descriptions)
    assert rows[2:] == [["legs move fast", "a person in water", "a pan on a stove"],
                        ["a jogger on a track", "a person in water", "a pan on a stove"]]
    result = predict(video, LABELS, model=model, templates=templates, descriptions=descriptions,
                     precision="fp32")
    frames = video[segment_indices(6, 4, train=False)]
    torch.testing.assert_close(result.probs, reference_probs(model, frames, rows),
                               rtol=0, atol=1e-6)
    one_row = predict(video, LABELS, model=model, template=templates[0])
    assert not torch.allclose(one_row.probs, result.probs)
    # the papers' named template sets (claver.text.prompts)
    assert len(text_rows(LABELS, "actionclip")) == 16
    assert text_rows(LABELS, "actionclip")[-1] == [f"The woman is {c}" for c in LABELS]


def test_batch_equals_one_by_one(model, files):
    data = files[0].read_bytes()
    frames = torch.randint(0, 256, (7, 50, 40, 3), dtype=torch.uint8)
    inputs = [files[0], str(files[1]), data, frames.numpy(), frames, files[2]]
    singles = [predict(x, LABELS, model=model) for x in inputs]
    threads = torch.get_num_threads()
    for batch_size, workers, streams in ((1, 0, 1), (2, 1, 1), (4, 2, 1), (6, 1, 1), (1, 1, 3),
                                         (2, 0, 2)):
        batch = predict(inputs, LABELS, model=model, batch_size=batch_size, workers=workers,
                        streams=streams)
        assert torch.get_num_threads() == threads
        assert [r.source for r in batch] == [str(files[0]), str(files[1]), "<bytes #2>",
                                             "<frames #3>", "<frames #4>", str(files[2])]
        for a, b in zip(batch, singles, strict=True):
            torch.testing.assert_close(a.probs, b.probs, rtol=0, atol=1e-6)
    # the same bytes decode to the same frames as the path
    torch.testing.assert_close(singles[2].probs, singles[0].probs, rtol=0, atol=0)
    torch.testing.assert_close(singles[3].probs, singles[4].probs, rtol=0, atol=0)


def test_preprocessing_takes_segment_centres_of_the_models_size():
    m = tiny(vision={"image_size": 64, "patch_size": 16})
    pre = Preprocess.for_model(m)
    assert (pre.num_frames, pre.image_size, pre.short_side) == (4, 64, 64)
    assert pre.mean == m.config.mean
    for n in (4, 10, 33):
        frames = torch.stack([torch.from_numpy(draw_index(i, 64, 64)) for i in range(n)])
        seen = [frame_index(f) for f in pre.display(pre(frames))]
        assert seen == segment_indices(n, 4, train=False).tolist()


def test_decoded_file_frames_are_segment_centres(tmp_path):
    m = tiny(vision={"image_size": 64, "patch_size": 16})
    path = make_video(tmp_path / "v.mp4", num_frames=21, size=(64, 64))
    pre = Preprocess.for_model(m)
    seen = [frame_index(f) for f in pre.display(pre.load(path))]
    assert seen == segment_indices(21, 4, train=False).tolist()


def test_plain_clip_model_averages_frame_features():
    clip = tiny("clip-tiny")
    meanp = tiny("actionclip-tiny", fusion="meanP")
    meanp.load_state_dict(clip.state_dict())
    video = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8)
    a = predict(video, LABELS, model=clip)
    b = predict(video, LABELS, model=meanp)
    torch.testing.assert_close(a.probs, b.probs, rtol=0, atol=1e-6)


def test_model_from_a_checkpoint_path_and_training_mode_kept(model, tmp_path):
    path = save_model(model, tmp_path / "m.safetensors")
    video = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8)
    torch.testing.assert_close(predict(video, LABELS, model=str(path)).probs,
                               predict(video, LABELS, model=model).probs, rtol=0, atol=0)
    trainee = tiny(seed=1).train()
    predict(video, LABELS, model=trainee)
    assert trainee.training


def test_encode_video_and_text_give_the_same_scores(model, files):
    v = claver.encode_video(files[:2], model=model)
    t = claver.encode_text([f"a video of {c}." for c in LABELS], model=model)
    assert v.shape == (2, 64) and t.shape == (3, 64)
    torch.testing.assert_close(t.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(claver.encode_video(files[1], model=model), v[1])
    probs = (model.logit_scale.exp() * v @ t.T).softmax(-1)
    got = torch.stack([r.probs for r in predict(files[:2], LABELS, model=model)])
    torch.testing.assert_close(got, probs, rtol=0, atol=1e-6)


def test_bf16_precision_is_close(model):
    video = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8)
    a = predict(video, LABELS, model=model)
    b = predict(video, LABELS, model=model, precision="bf16")
    assert (a.probs - b.probs).abs().max() < 0.05


# ------------------------------------------------------------------------------ bad input

def test_bad_inputs_name_the_input_and_the_fix(model, files, tmp_path):
    empty = make_empty(tmp_path / "empty.mp4")
    with pytest.raises(VideoDecodeError, match="empty.mp4"):
        predict(empty, LABELS, model=model)
    results = predict([files[0], empty, tmp_path / "missing.mp4"], LABELS, model=model,
                      on_error="skip")
    assert [r.ok for r in results] == [True, False, False]
    assert "empty.mp4" in results[1].error and "missing.mp4" in results[2].error
    assert results[1].label is None and results[1].to_dict() == {
        "video": str(empty), "ok": False, "error": results[1].error}
    checks = [
        (torch.rand(4, 32, 32, 3), "uint8"),
        (torch.zeros(32, 32, 3, dtype=torch.uint8), "time axis"),
        (torch.zeros(4, 3, 32, 32, dtype=torch.uint8), "permute"),
    ]
    for bad, hint in checks:
        with pytest.raises(ValueError, match=hint):
            predict(bad, LABELS, model=model)
    with pytest.raises(TypeError, match="split"):
        predict(files[0], "running,swimming", model=model)
    with pytest.raises(ValueError, match="distinct"):
        predict(files[0], ["a", "b", "a"], model=model)
    with pytest.raises(ValueError, match="exactly one"):
        predict(files[0], LABELS, model=model, template="a video")
    with pytest.raises(ValueError, match="no descriptions for label"):
        predict(files[0], LABELS, model=model, descriptions={"running": ["x"]})
    with pytest.raises(ValueError, match="random weights"):
        predict(files[0], LABELS, model="claver-tiny")
    with pytest.raises(FileNotFoundError, match="openai-vit-b32"):
        predict(files[0], LABELS, model=tmp_path / "nope.safetensors")


# ------------------------------------------------------------------- a model trained here

def _colour_clips(n: int, t: int, size: int, g: torch.Generator):
    """uint8 (n, t, size, size, 3): a coloured square drifting over dark noise."""
    y = torch.randint(len(COLOURS), (n,), generator=g)
    v = (torch.rand(n, t, size, size, 3, generator=g) * 60).to(torch.uint8)
    cols = torch.tensor(list(COLOURS.values()), dtype=torch.uint8)
    for i in range(n):
        s = int(torch.randint(size // 4, size // 2, (1,), generator=g))
        x0, y0 = (int(torch.randint(0, size - s, (1,), generator=g)) for _ in range(2))
        dx = int(torch.randint(-2, 3, (1,), generator=g))
        for k in range(t):
            x = min(max(x0 + dx * k, 0), size - s)
            v[i, k, y0:y0 + s, x:x + s] = cols[y[i]]
    return v, y


def _write_colour_video(path: Path, colours: list[str], seconds_each: float = 1.0,
                        fps: int = 10, size: tuple[int, int] = (64, 48)) -> Path:
    """An h264 mp4 showing a square of each colour in turn, ``seconds_each`` seconds each."""
    w, h = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        stream.options = {"preset": "fast", "crf": "10"}
        k = 0
        for colour in colours:
            for _ in range(int(seconds_each * fps)):
                img = np.full((h, w, 3), 20, np.uint8)
                x = 8 + (k % 10) * 2
                img[12:36, x:x + 24] = COLOURS[colour]
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts, frame.time_base = k, Fraction(1, fps)
                k += 1
                for packet in stream.encode(frame):
                    out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny CLAVER trained for 25 steps to tell red, green and blue squares apart
    (~5 s on 2 cores), saved in our format."""
    torch.manual_seed(0)
    m = claver.create_model("claver-tiny", num_frames=4)
    text = claver.tokenize([f"a video of {c}." for c in COLOURS])
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.0)
    mean = torch.tensor(m.config.mean).view(1, 1, 3, 1, 1)
    std = torch.tensor(m.config.std).view(1, 1, 3, 1, 1)
    g = torch.Generator().manual_seed(0)
    for _ in range(25):
        v, y = _colour_clips(12, 4, 32, g)
        x = (v.permute(0, 1, 4, 2, 3).float() / 255 - mean) / std
        loss = F.cross_entropy(m(x, text), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    return m, save_model(m, tmp_path_factory.mktemp("trained") / "colours.safetensors")


@pytest.fixture(scope="module")
def colour_files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("colours")
    return {c: _write_colour_video(d / f"{c}.mp4", [c]) for c in COLOURS}


def test_trained_model_recognises_its_classes_from_files(trained, colour_files):
    model, path = trained
    names = list(COLOURS)
    results = predict(list(colour_files.values()), names, model=path)
    assert [r.label for r in results] == names
    assert all(r.score > 0.6 for r in results)
    singles = [predict(p, names, model=model) for p in colour_files.values()]
    for a, b in zip(results, singles, strict=True):
        torch.testing.assert_close(a.probs, b.probs, rtol=0, atol=1e-6)


def test_windows_follow_the_action_over_time(trained, tmp_path):
    model, _ = trained
    names = list(COLOURS)
    long = _write_colour_video(tmp_path / "long.mp4", ["red", "red", "blue", "green"])
    windows = predict_windows(long, names, model=model, window=1.0, stride=1.0)
    assert [(w.start, w.end) for w in windows] == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert [w.label for w in windows] == ["red", "red", "blue", "green"]
    assert merge_windows(windows)[0] == {"start": 0, "end": 2, "label": "red",
                                         "prob": pytest.approx((windows[0].score
                                                                + windows[1].score) / 2)}
    half = predict_windows(long, names, model=model, window=1.0, stride=0.5, smooth=3)
    assert len(half) == 7 and half[1].start == 0.5
    raw = torch.stack([w.probs for w in predict_windows(long, names, model=model,
                                                        window=1.0, stride=0.5)])
    torch.testing.assert_close(torch.stack([w.probs for w in half]), smooth_probs(raw, 3))
    quiet = predict_windows(long, names, model=model, window=1.0, threshold=1.01)
    assert all(w.label == "no action" and w.background for w in quiet)


def test_window_arithmetic(tmp_path):
    assert window_spans(10, 4, 3) == [(0, 4), (3, 7), (6, 10)]
    assert window_spans(10, 4) == [(0, 4), (4, 8), (6, 10)]  # the last one ends at the end
    assert window_spans(2.5, 4, 1) == [(0, 2.5)]
    with pytest.raises(ValueError, match="> 0"):
        window_spans(10, 0)
    # frames of a window lie inside it: t = i / fps in [start, end)
    path = make_video(tmp_path / "idx.mp4", num_frames=50, size=(64, 48), fps=10)
    for start, end in window_spans(5.0, 1.2, 0.7):
        idx = window_indices(start, end, 10.0, 50, 4)
        assert all(start <= i / 10 < end + 1e-9 for i in idx), (start, end, idx)
        frames = read_video(path, indices=idx)
        assert [frame_index(f) for f in frames] == idx
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    torch.testing.assert_close(smooth_probs(p, 3)[:, 0], torch.tensor([0.5, 2 / 3, 2 / 3, 1.0]))


def test_frames_need_fps_for_windows(trained):
    frames = torch.zeros(20, 32, 32, 3, dtype=torch.uint8)
    with pytest.raises(ValueError, match="fps"):
        predict_windows(frames, list(COLOURS), model=trained[0], window=1.0)
    assert len(predict_windows(frames, list(COLOURS), model=trained[0], window=1.0,
                               fps=10)) == 2


# ------------------------------------------------------------------------------------ CLI

def test_cli_table(trained, colour_files, tmp_path, capsys):
    _, path = trained
    empty = make_empty(tmp_path / "broken.mp4")
    args = ["predict", str(colour_files["green"]), str(empty), str(colour_files["blue"]),
            "--labels", "red,green,blue", "--model", str(path), "--topk", "2"]
    assert main(args) == 1  # one bad file: reported, the rest predicted, exit 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith(f"model   {path}: claver-tiny (4 frames")
    head = lines.index(next(line for line in lines if line.startswith("video")))
    rows = [line.split() for line in lines[head + 1:]]
    assert rows[0][0] == str(colour_files["green"]) and rows[0][2] == "green"
    assert len(rows[1]) == 2 and rows[1][0].endswith("%")  # second label of the same video
    assert rows[2][:2] == [str(empty), "FAILED"] and "broken.mp4: file is empty" in lines[
        head + 3]
    assert rows[3][2] == "blue"
    assert "1 of 3 video(s) could not be read" in err


def test_cli_json_and_label_files(trained, colour_files, tmp_path, capsys):
    _, path = trained
    labels = tmp_path / "labels.txt"
    labels.write_text("# colours\nred\n\ngreen\nblue\n")
    desc = tmp_path / "desc.json"
    desc.write_text(json.dumps({"red": ["a red square"], "green": ["a green square"],
                                "blue": ["a blue square"]}))
    args = ["predict", str(colour_files["red"]), "--labels-file", str(labels), "--model",
            str(path), "--json", "--template", "a video of {}.", "--template", "{}",
            "--descriptions", str(desc)]
    assert main(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["labels"] == ["red", "green", "blue"] and data["text_rows"] == 3
    assert data["failed"] == 0 and data["preprocessing"] == {"frames": 4, "short_side": 32,
                                                             "crop": 32}
    (result,) = data["results"]
    assert result["ok"] and result["label"] == "red" and len(result["top"]) == 3
    assert sum(result["probs"].values()) == pytest.approx(1, abs=1e-5)
    # descriptions as `claver prompts` writes them (JSONL), and a named template set
    from claver.prompts.formats import Description, write_descriptions

    jsonl = write_descriptions([Description(i, c, "body", f"a {c} square moving")
                                for i, c in enumerate(COLOURS)], tmp_path / "d.jsonl")
    assert main(args[:6] + ["--json", "--template", "actionclip", "--descriptions",
                            str(jsonl)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["text_rows"] == 17 and data["results"][0]["label"] == "red"
    csv = tmp_path / "labels.csv"
    csv.write_text("id,name\n0,red\n1,green\n2,blue\n")
    assert main(args[:2] + ["--labels-file", str(csv), "--model", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["label"] == "red"


def test_cli_windows_json(trained, tmp_path, capsys):
    _, path = trained
    long = _write_colour_video(tmp_path / "long.mp4", ["blue", "red"])
    assert main(["predict", str(long), "--labels", "red,green,blue", "--model", str(path),
                 "--window", "1", "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)["results"]
    assert [(w["start"], w["end"], w["label"]) for w in result["windows"]] == [
        (0, 1, "blue"), (1, 2, "red")]
    assert [s["label"] for s in result["segments"]] == ["blue", "red"]
    assert main(["predict", str(long), "--labels", "red,green,blue", "--model", str(path),
                 "--window", "1", "--threshold", "0.999", "--plot", str(tmp_path / "plots")]) == 0
    out = capsys.readouterr().out
    assert "no action" in out and f"timeline: {tmp_path / 'plots' / 'long.timeline.png'}" in out
    from PIL import Image

    with Image.open(tmp_path / "plots" / "long.timeline.png") as im:
        assert im.format == "PNG" and im.width >= 400 and im.height >= 200
    assert main(["predict", str(long), "--labels", "red,blue", "--model", str(path),
                 "--plot", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--plot" in err and "needs --window" in err


def test_cli_usage_errors(trained, colour_files, tmp_path, capsys, monkeypatch):
    _, path = trained
    video = str(colour_files["red"])
    assert main(["predict", video, "--model", str(path)]) == 2
    assert "--labels" in capsys.readouterr().err
    assert main(["predict", video, "--labels", "a,,b", "--model", str(path)]) == 2
    assert main(["predict", video, "--labels", "a,b", "--model", str(path),
                 "--threshold", "0.5"]) == 2
    assert "--window" in capsys.readouterr().err
    # the default model offline, not downloaded: the error names the file to place where
    monkeypatch.setenv("CLAVER_OFFLINE", "1")
    monkeypatch.setenv("CLAVER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CLAVER_MODEL", raising=False)
    assert main(["predict", video, "--labels", "a,b"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "cache" / "ViT-B-32.pt") in err and "openaipublic" in err


def test_predictor_reuses_text_features(trained, colour_files):
    model, _ = trained
    pred = Predictor(model, list(COLOURS), workers=0)
    text = pred.text_features
    assert text.shape == (1, 3, 64)
    first = pred.predict(list(colour_files.values()))
    assert pred.text_features is text
    pred.set_labels(["blue", "red"])
    assert [r.label for r in pred.predict([colour_files["red"], colour_files["blue"]])] == [
        "red", "blue"]
    assert first[0].label == "red"
