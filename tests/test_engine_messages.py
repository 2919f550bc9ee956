"""What a run says and writes (issue 12, items 4, 6, 8, 9, 10): validation settings, bad
videos, one-line errors for bad setups, the architecture a checkpoint records, logs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import claver
from claver.data.dataset import VideoLoadError
from claver.engine import train as train_mod
from claver.engine.config import load_config, origin
from claver.engine.runlog import Progress, RunLog
from claver.engine.train import train
from claver.models.factory import CheckpointError, config_differences, save_model
from test_engine_runs import claver as run_cli
from test_engine_train import dataset, write_config  # noqa: F401 - the fixture

QUIET = ["DATA.VAL_FILE=", "TRAIN.EPOCHS=1"]


def one_line_error(capsys, *args) -> str:
    """Run ``claver ARGS``; assert exit 2 and a single stderr line (no traceback)."""
    code, out, err = run_cli(capsys, *args)
    assert code == 2, (out, err)
    line = err.strip()
    assert "\n" not in line and "Traceback" not in err, err
    return line


# --------------------------------------------------------------------------- item 8


@pytest.fixture()
def lists(dataset, tmp_path):  # noqa: F811
    (tmp_path / "empty.txt").write_text("# nothing yet\n\n")
    lines = (dataset / "train.txt").read_text()
    (tmp_path / "with_missing.txt").write_text(lines + "gone.mp4 1\n")
    return tmp_path


@pytest.mark.parametrize("extra, words", [
    (["DATA.TRAIN_FILE={lists}/empty.txt"], ["DATA.TRAIN_FILE", "empty.txt", "lists no videos"]),
    (["DATA.ROOT={lists}"], ["none of the 12 videos", "DATA.ROOT", "set DATA.ROOT"]),
    (["TRAIN.EFFECTIVE_BATCH_SIZE=256"],
     ["TRAIN.EFFECTIVE_BATCH_SIZE=256 (from the command line)", "64 batches of 4",
      "an epoch has 3 batch(es)", "TRAIN.EFFECTIVE_BATCH_SIZE=0"]),
    (["MODEL.PRETRAINED=openai"], ["MODEL.PRETRAINED=openai", "claver-tiny",
                                   "MODEL.PRETRAINED= (empty"]),
    (["DATA.FEW_SHOT_K=10"], ["DATA.FEW_SHOT_K=10", "3 class(es)", "class 0: 4",
                              "DATA.FEW_SHOT_K to 4"]),
    (["DATA.TRAIN_FILE={lists}/with_missing.txt", "DATA.ON_ERROR=raise", "DATA.NUM_WORKERS=2",
      "TRAIN.BATCH_SIZE=13"], ["gone.mp4", "video not found", "line 13", "DATA.ON_ERROR=skip"]),
])
def test_bad_setups_are_one_line_errors(dataset, lists, tmp_path, capsys, extra,  # noqa: F811
                                        words):
    cfg = write_config(tmp_path / "c.yaml", dataset, tmp_path / "run")
    line = one_line_error(capsys, "train", "-c", cfg, *QUIET,
                          *[e.format(lists=lists) for e in extra])
    for word in words:
        assert word in line, (word, line)
    assert not (tmp_path / "run").exists() or "DATA.ON_ERROR=raise" in line


def test_origin_names_the_file_that_set_a_key(dataset, tmp_path):  # noqa: F811
    base = tmp_path / "base.yaml"
    base.write_text("TRAIN: {EFFECTIVE_BATCH_SIZE: 256}\n")
    cfg_file = write_config(tmp_path / "c.yaml", dataset, tmp_path / "run",
                            extra="BASE: [base.yaml]\n")
    cfg = load_config(cfg_file)
    assert origin(cfg, "TRAIN.EFFECTIVE_BATCH_SIZE") == str(base.resolve())
    assert origin(cfg, "TRAIN.LR") == str(cfg_file.resolve())
    assert origin(cfg, "TRAIN.CLIP_GRAD") == "the default"
    assert origin(load_config(cfg_file, ["TRAIN.LR=1"]), "TRAIN.LR") == "the command line"


@pytest.fixture(scope="module")
def finished(dataset, tmp_path_factory):  # noqa: F811
    """A finished 2-epoch run with validation: (config, run folder, stdout lines)."""
    root = tmp_path_factory.mktemp("finished")
    cfg = write_config(root / "c.yaml", dataset, root / "run")
    said: list[str] = []
    train(load_config(cfg, ["TRAIN.EPOCHS=2", "TEST.NUM_CLIPS=2", "TEST.NUM_CROPS=3",
                            "LOG_INTERVAL=0"]), log=said.append)
    return cfg, root / "run", said


def test_resuming_from_best_or_another_model_is_one_line(finished, capsys):
    cfg, run, _ = finished
    line = one_line_error(capsys, "train", "-c", cfg, "TRAIN.EPOCHS=2", "--resume",
                          run / "best.pth")
    assert f"{run / 'best.pth'} holds model weights only" in line
    assert "--auto-resume" in line and f"MODEL.PRETRAINED={run / 'best.pth'}" in line
    line = one_line_error(capsys, "train", "-c", cfg, "TRAIN.EPOCHS=2", "--resume",
                          run / "last.pth", "MODEL.MASK=kmct")
    assert "trained with another model" in line and "mask: kmct vs kmt" in line
    assert str(run / "config.yaml") in line


def test_data_check_of_an_empty_list_exits_2(lists, dataset, capsys):  # noqa: F811
    line = one_line_error(capsys, "data", "check", lists / "empty.txt", "--labels",
                          dataset / "labels.csv")
    assert "empty.txt lists no videos" in line


# --------------------------------------------------------------------------- item 9


def test_a_checkpoint_built_as_recorded_or_refused(tmp_path):
    heads4 = claver.create_model("claver-tiny", vision={"heads": 4}, text={"heads": 4})
    path = save_model(heads4, tmp_path / "h4.safetensors")
    with pytest.raises(CheckpointError) as e:
        claver.create_model("claver-tiny", pretrained=path)
    msg = str(e.value)
    assert "vision.heads: 1 vs 4" in msg and "text.heads: 1 vs 4" in msg
    assert "claver.load_model" in msg  # no preset has 4 heads at this width
    assert claver.load_model(path).config.vision.heads == 4
    # what a run may change on top of the recorded architecture is not a difference
    ok = claver.create_model("claver-tiny", pretrained=path, vision={"heads": 4},
                             text={"heads": 4}, num_frames=8, mask="kmct")
    assert ok.config.num_frames == 8 and ok.config.mask == "kmct"
    assert config_differences(heads4.config, ok.config) == []


def test_training_from_a_disagreeing_checkpoint_is_refused(dataset, tmp_path,  # noqa: F811
                                                           capsys):
    heads4 = claver.create_model("claver-tiny", vision={"heads": 4}, text={"heads": 4})
    path = save_model(heads4, tmp_path / "h4.safetensors")
    cfg = write_config(tmp_path / "c.yaml", dataset, tmp_path / "run")
    line = one_line_error(capsys, "train", "-c", cfg, *QUIET, f"MODEL.PRETRAINED={path}")
    assert "vision.heads: 1 vs 4" in line and not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- items 4, 10


def test_validation_uses_val_views_and_every(finished, dataset, tmp_path):  # noqa: F811
    _, run, said = finished
    assert sorted(p.name for p in (run / "eval").glob("*.json")) == ["epoch0.json",
                                                                    "epoch1.json"]
    protocol = json.loads((run / "eval" / "epoch1.json").read_text())["protocol"]
    assert protocol["views"] == 1  # VAL, not the 6 views TEST asks for
    cfg = load_config(write_config(tmp_path / "c.yaml", dataset, tmp_path / "r"),
                      ["TRAIN.EPOCHS=3", "VAL.EVERY=2", "VAL.NUM_CROPS=3"])
    train(cfg, log=lambda *_: None)
    assert sorted(p.name for p in (tmp_path / "r" / "eval").glob("*.json")) == \
        ["epoch1.json", "epoch2.json"]  # every 2nd epoch, and always the last
    assert json.loads((tmp_path / "r" / "eval" / "epoch2.json").read_text())[
        "protocol"]["views"] == 3


def test_run_log_and_final_line(finished):
    _, run, said = finished
    log = (run / "train.log").read_text()
    for line in said:  # everything said is in train.log, time-stamped
        assert line.splitlines()[0] in log
    assert any(x.startswith("epoch 0: 1/3 steps (33%)") for x in said)  # LOG_INTERVAL=0
    assert any(x.startswith("epoch 1: steps 4-6 of 6, mean loss") for x in said)
    assert any(x.startswith("[epoch1] evaluating: 6/6 videos") for x in said)
    final = said[-1]
    assert final.startswith("done: 6 steps, best top-1") and str(run / "best.pth") in final
    assert str(run / "last.pth") in final and str(run / "train.log") in final
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if "val_top1" in r]
    assert [(r["step"], r["epoch"]) for r in val] == [(3, 0), (6, 1)]
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_plain_progress_lines_off_a_terminal(tmp_path):
    said: list[str] = []
    log = RunLog(said.append)
    bar = Progress(4, "epoch 0", log=log, interval=3600, terminal=False)
    for _ in range(4):
        bar.update(1, loss="0.5")
    bar.close()
    # a line at the first update (the job is alive), then none for an hour, then the last
    assert len(said) == 2 and said[0].startswith("epoch 0: 1/4 steps (25%)")
    assert said[1].startswith("epoch 0: 4/4 steps (100%)") and "loss 0.5" in said[1]
    log.attach(tmp_path / "train.log")
    log("after")
    text = (tmp_path / "train.log").read_text()
    assert text.count("\n") == 3 and "epoch 0: 4/4" in text and text.endswith("after\n")
    quiet: list[str] = []
    Progress(2, "x", log=RunLog(quiet.append, enabled=False), interval=0).update(2)
    assert quiet == []  # rank > 0


def test_resume_drops_metrics_after_the_checkpoint_and_the_table(dataset, tmp_path):  # noqa: F811
    cfg_file = write_config(tmp_path / "c.yaml", dataset, tmp_path / "run")
    cfg = load_config(cfg_file, ["DATA.VAL_FILE=", "TRAIN.EPOCHS=2"])
    first: list[str] = []
    train(cfg, log=first.append)
    run = tmp_path / "run"
    # as if the process had been killed after writing step 6's record but with last.pth
    # still at step 3: roll last.pth back to the epoch-0 checkpoint
    state = torch.load(run / "last.pth", weights_only=True)
    assert state["step"] == 6
    cfg1 = load_config(cfg_file, ["DATA.VAL_FILE=", "TRAIN.EPOCHS=2", "TRAIN.MAX_STEPS=3",
                                  f"OUTPUT={tmp_path / 'three'}"])
    train(cfg1, log=lambda *_: None)
    three = torch.load(tmp_path / "three" / "last.pth", weights_only=True)
    three["settings"] = state["settings"]
    torch.save(three, run / "last.pth")
    again: list[str] = []
    train(cfg, auto_resume=True, log=again.append)
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert any("module" in x and "trainable" in x for x in first)
    assert not any("module" in x and "trainable" in x for x in again)
    assert "resumed from" in (run / "train.log").read_text()


# --------------------------------------------------------------------------- item 6


def test_bad_videos_are_listed_as_they_happen(dataset, lists, tmp_path):  # noqa: F811
    cfg = load_config(write_config(tmp_path / "c.yaml", dataset, tmp_path / "run"),
                      [f"DATA.TRAIN_FILE={lists}/with_missing.txt", "TRAIN.EPOCHS=2",
                       "TRAIN.BATCH_SIZE=13", f"DATA.VAL_FILE={lists}/with_missing.txt"])
    said: list[str] = []
    result = train(cfg, log=said.append)
    lines = [json.loads(x) for x in
             (tmp_path / "run" / "bad_videos.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["count"]) for r in lines] == [(0, 1), (1, 2)]
    assert all(r["video"] == str(dataset / "gone.mp4") and "video not found" in r["reason"]
               for r in lines)
    assert result["bad_videos"] == 2
    assert any(x.startswith("epoch 1: ") and "1 bad video load(s) (replaced; see" in x
               for x in said)
    skipped = json.loads((tmp_path / "run" / "eval" / "epoch1.json").read_text())["skipped"]
    assert len(skipped) == 1 and "gone.mp4" in skipped[0] and "video not found" in skipped[0]


def test_worker_errors_lose_their_traceback():
    wrapped = ("Caught VideoLoadError in DataLoader worker process 1.\nOriginal Traceback "
               "(most recent call last):\n  File \"x.py\", line 1\nclaver.data.dataset."
               "VideoLoadError: a.mp4: VideoDecodeError: broken\n")
    assert str(VideoLoadError(wrapped)) == "a.mp4: VideoDecodeError: broken"


# --------------------------------------------------------------------------- saving


def test_save_every_minutes_and_no_leftover_micro_batches(dataset, tmp_path,  # noqa: F811
                                                          monkeypatch):
    saves, losses = [], []
    real_save, real_loss = train_mod.save_checkpoint, train_mod.compute_loss

    def save(path, **kw):
        saves.append((Path(path).name, kw["step"], kw["saved_because"]))
        return real_save(path, **kw)

    def loss(cfg, module, batch, tokens, n, step, micro, *a):
        losses.append((step, micro))
        return real_loss(cfg, module, batch, tokens, n, step, micro, *a)

    monkeypatch.setattr(train_mod, "save_checkpoint", save)
    monkeypatch.setattr(train_mod, "compute_loss", loss)
    cfg = load_config(write_config(tmp_path / "c.yaml", dataset, tmp_path / "run"),
                      ["DATA.VAL_FILE=", "TRAIN.EPOCHS=2", "TRAIN.BATCH_SIZE=2",
                       "TRAIN.EFFECTIVE_BATCH_SIZE=4", "TRAIN.SAVE_EVERY_MINUTES=1e-9"])
    train(cfg, log=lambda *_: None)
    # 6 batches of 2 per epoch, 2 per step: 3 steps/epoch; every step not at an epoch end
    # is a time-due mid-epoch save (the clock always says "due" at 1e-9 minutes)
    assert [s[1] for s in saves if "minutes" in s[2]] == [1, 2, 4, 5]
    assert losses == [(s, m) for s in range(6) for m in range(2)]
    cfg = load_config(write_config(tmp_path / "d.yaml", dataset, tmp_path / "odd"),
                      ["DATA.VAL_FILE=", "TRAIN.EPOCHS=2", "TRAIN.BATCH_SIZE=4",
                       "TRAIN.EFFECTIVE_BATCH_SIZE=8"])
    losses.clear()
    train(cfg, log=lambda *_: None)
    # 3 batches per epoch make 1 step of 2: the third micro-batch is not run, so its
    # gradient cannot leak into the next epoch's first step
    assert losses == [(0, 0), (0, 1), (1, 0), (1, 1)]
