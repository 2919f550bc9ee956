"""Result files that say what they scored (issue 12 item 5) and predict with a training
checkpoint's own classes and templates (item 11)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from claver.cli import main
from claver.data.sources import write_labels
from claver.engine.checkpoint import load_checkpoint, save_checkpoint
from claver.engine.config import load_config
from claver.engine.evaluate import EvalResult
from claver.engine.reporting import write_eval_outputs
from claver.engine.train import train
from claver.models.factory import load_model
from test_engine_train import dataset, write_config  # noqa: F401  (dataset: a fixture)

CLASSES = ["jumping", "running", "swimming"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def run(dataset, tmp_path_factory):  # noqa: F811
    """A tiny run trained for one epoch: (config path, output folder)."""
    tmp = tmp_path_factory.mktemp("evalrun")
    cfg_path = write_config(tmp / "c.yaml", dataset, tmp / "run")
    train(load_config(cfg_path, ["TRAIN.EPOCHS=1"]), log=lambda *a: None)
    return cfg_path, tmp / "run"


def read_eval(out: Path, tag: str) -> tuple[dict, list[dict]]:
    summary = json.loads((out / "eval" / f"{tag}.json").read_text())
    lines = (out / "eval" / f"{tag}_predictions.jsonl").read_text().splitlines()
    return summary, [json.loads(x) for x in lines if x]


def test_test_with_list_names_the_list_labels_rows_and_videos(dataset, run, capsys):  # noqa: F811
    cfg, out = run
    other = dataset / "other.txt"
    other.write_text("c2_1.mp4 2\nc0_3.mp4 0\n")
    assert main(["test", "-c", str(cfg), "--resume", str(out / "last.pth"), "--list",
                 str(other), "--tag", "other"]) == 0
    summary, preds = read_eval(out, "other")
    p = summary["protocol"]
    assert p["list"] == str(other) and p["list_sha256"] == sha256(other)
    assert p["labels"] == {"path": str(dataset / "labels.csv"),
                           "sha256": sha256(dataset / "labels.csv")}
    assert p["views"] == p["clips"] * p["crops"]
    assert p["text"]["rows"] == p["text_rows"] == len(p["text"]["templates"])
    assert p["text"]["template_set"] == "claver" and p["text"]["descriptions"] == []
    assert "a video of {}." in p["text"]["templates"] or "{}" in p["text"]["templates"]
    assert [(x["index"], x["video"]) for x in preds] == [
        (0, str(dataset / "c2_1.mp4")), (1, str(dataset / "c0_3.mp4"))]
    assert [x["label_name"] for x in preds] == ["swimming", "jumping"]
    # the per-epoch validation of training names DATA.VAL_FILE and its videos
    summary, preds = read_eval(out, "epoch0")
    assert summary["protocol"]["list"] == str(dataset / "val.txt")
    assert summary["protocol"]["checkpoint"] is None  # the model in memory, not a file
    assert preds[1]["video"] == str(dataset / "c0_2.mp4")


def test_test_splits_name_each_split_list_and_label_file(dataset, run, tmp_path):  # noqa: F811
    cfg, out = run
    write_labels(["a", "b"], tmp_path / "two.csv")
    (tmp_path / "two.txt").write_text(f"{dataset}/c1_0.mp4 1\n")
    (tmp_path / "three.txt").write_text(f"{dataset}/c0_0.mp4 0\n{dataset}/c2_0.mp4 2\n")
    splits = f"[{tmp_path}/two.txt|{tmp_path}/two.csv,{tmp_path}/three.txt|{dataset}/labels.csv]"
    assert main(["test", "-c", str(cfg), "--resume", str(out / "last.pth"), "--tag", "zs",
                 f"TEST.SPLITS={splits}", "DATA.ROOT=/"]) == 0
    first, preds0 = read_eval(out, "zs_split0")
    second, preds1 = read_eval(out, "zs_split1")
    assert first["protocol"]["list"] == str(tmp_path / "two.txt")
    assert first["protocol"]["labels"]["path"] == str(tmp_path / "two.csv")
    assert first["protocol"]["labels"]["sha256"] == sha256(tmp_path / "two.csv")
    assert first["protocol"]["classes"] == 2 and preds0[0]["label_name"] == "b"
    assert second["protocol"]["list"] == str(tmp_path / "three.txt")
    assert second["protocol"]["labels"]["path"] == str(dataset / "labels.csv")
    assert [x["video"] for x in preds0] == [f"{dataset}/c1_0.mp4"]
    assert [x["video"] for x in preds1] == [f"{dataset}/c0_0.mp4", f"{dataset}/c2_0.mp4"]


def test_eval_json_records_the_checkpoint_sha256(run, tmp_path):
    cfg_path, out = run
    cfg = load_config(cfg_path, [f"OUTPUT={tmp_path}"])
    result = EvalResult(0.5, 1.0, 0.5, 2, 2, [], [], None, list_file="x.txt")
    summary = write_eval_outputs(cfg, result, CLASSES, 16, "t", checkpoint=out / "last.pth")
    assert summary["protocol"]["checkpoint"] == {"path": str(out / "last.pth"),
                                                 "sha256": sha256(out / "last.pth")}
    assert json.loads((tmp_path / "eval" / "t.json").read_text()) == summary
    assert summary["protocol"]["list"] == "x.txt"


def _probs(capsys, args: list[str]) -> tuple[dict, str]:
    assert main(["predict", *args, "--json", "--no-progress"]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    return data, captured.err


def test_predict_uses_the_training_classes_and_templates(dataset, run, capsys):  # noqa: F811
    _, out = run
    video, ckpt = str(dataset / "c1_2.mp4"), str(out / "last.pth")
    data, err = _probs(capsys, [video, "--model", ckpt])
    assert data["labels"] == CLASSES and data["text_rows"] == 16
    assert "using the training class names, templates of" in err
    assert "recorded in the checkpoint" in err  # (older checkpoints: from DATA.LABEL_LIST)
    explicit, _ = _probs(capsys, [video, "--model", ckpt, "--labels", ",".join(CLASSES),
                                  "--template", "claver"])
    assert explicit["text_rows"] == 16
    for name in CLASSES:
        assert data["results"][0]["probs"][name] == pytest.approx(
            explicit["results"][0]["probs"][name], abs=1e-6)
    # labels given, templates not: still the training templates
    assert _probs(capsys, [video, "--model", ckpt, "--labels", "a,b"])[0]["text_rows"] == 16
    # table output says so on its second line
    assert main(["predict", video, "--model", ckpt, "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith(f"using the training class names, templates of {ckpt}")


def test_predict_reads_classes_and_text_recorded_in_the_checkpoint(dataset, run, tmp_path,  # noqa: F811
                                                                   capsys):
    _, out = run
    state = load_checkpoint(out / "last.pth")
    model = load_model(out / "last.pth")
    names = ["hop", "sprint", "swim"]
    recorded = save_checkpoint(
        tmp_path / "rec.pth", model=model, optimizer=None, scaler=None, epoch=0, step=3,
        run_config={**state["config"], "DATA": {**state["config"]["DATA"], "LABEL_LIST": ""}},
        extra={"classes": names, "templates": ["a video of {}.", "{}"],
               "descriptions": [["hopping up"], ["running fast"], ["in water"]]})
    video = str(dataset / "c2_2.mp4")
    data, err = _probs(capsys, [video, "--model", str(recorded)])
    assert data["labels"] == names and data["text_rows"] == 3
    assert "class names, templates, descriptions" in err and "recorded in the checkpoint" in err
    # other labels: the recorded templates, not the descriptions of other classes
    assert _probs(capsys, [video, "--model", str(recorded), "--labels", "x,y"])[0][
        "text_rows"] == 2
    # a checkpoint that records nothing: --labels stays required, one line naming the fix
    bare = save_checkpoint(tmp_path / "bare.pth", model=model, optimizer=None, scaler=None,
                           epoch=0, step=3, run_config={}, extra={})
    assert main(["predict", video, "--model", str(bare)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not record its class names" in err[0]
    assert "--labels" in err[0] and str(bare) in err[0]


def test_training_checkpoints_record_their_classes_and_claver_test_names_the_checkpoint(
        dataset, run):  # noqa: F811
    cfg, out = run
    for name in ("last.pth", "best.pth"):
        extra = load_checkpoint(out / name)["extra"]
        assert extra["classes"] == CLASSES and "a video of {}." in extra["templates"]
    assert main(["test", "-c", str(cfg), "--resume", str(out / "last.pth"),
                 "--tag", "named"]) == 0
    summary, _ = read_eval(out, "named")
    assert summary["protocol"]["checkpoint"] == {"path": str(out / "last.pth"),
                                                 "sha256": sha256(out / "last.pth")}
