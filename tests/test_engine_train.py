"""Training end to end on tiny encoded videos: train/test, resume after SIGKILL, DDP, guards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from claver.data.sources import write_labels
from claver.engine import train as train_mod
from claver.engine.config import load_config
from claver.engine.train import train
from claver.models.factory import load_model
from videos import make_video

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("tinydata")
    lines = []
    for c in range(3):
        for k in range(4):
            make_video(root / f"c{c}_{k}.mp4", num_frames=12, size=(40, 36))
            lines.append(f"c{c}_{k}.mp4 {c}")
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    (root / "val.txt").write_text("\n".join(lines[::2]) + "\n")
    write_labels(["jumping", "running", "swimming"], root / "labels.csv")
    return root


def write_config(path: Path, data: Path, out: Path, extra: str = "") -> Path:
    path.write_text(textwrap.dedent(f"""
        DATA: {{ROOT: {data}, TRAIN_FILE: {data}/train.txt, VAL_FILE: {data}/val.txt,
               LABEL_LIST: {data}/labels.csv, NUM_FRAMES: 4, INPUT_SIZE: 32, NUM_WORKERS: 0,
               NORM: clip}}
        MODEL: {{ARCH: claver-tiny, PRETRAINED: ""}}
        TRAIN: {{EPOCHS: 3, BATCH_SIZE: 4, AMP: none, WARMUP_EPOCHS: 1, LR: 1.0e-3}}
        TEST: {{BATCH_SIZE: 4}}
        OUTPUT: {out}
        PRINT_FREQ: 1
        DETERMINISTIC: true
        """) + extra)
    return path


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def final_weights(out: Path) -> dict:
    return torch.load(out / "last.pth", weights_only=True)["model"]


def test_train_then_test_writes_everything(dataset, tmp_path):
    cfg = load_config(write_config(tmp_path / "c.yaml", dataset, tmp_path / "run"),
                      ["TRAIN.EPOCHS=1"])
    result = train(cfg, log=lambda *a: None)
    assert result["step"] == 3 and result["skipped_steps"] == 0
    out = tmp_path / "run"
    for name in ["config.yaml", "last.pth", "best.pth", "metrics.jsonl", "eval/epoch0.json",
                 "eval/epoch0_predictions.jsonl", "eval/epoch0_confusion.png"]:
        assert (out / name).is_file(), name
    summary = json.loads((out / "eval/epoch0.json").read_text())
    assert summary["protocol"]["videos_listed"] == 6 == summary["protocol"]["videos_scored"]
    preds = [json.loads(x) for x in (out / "eval/epoch0_predictions.jsonl").read_text().split(
        "\n") if x]
    assert [p["index"] for p in preds] == list(range(6))
    assert (out / "eval/epoch0_confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 3]  # 3 training steps, 1 validation
    assert all({"loss", "lr", "clips_per_s", "data_wait", "mem_mb"} <= set(r)
               for r in records[:3])
    assert records[3]["val_top1"] == summary["top1"] and records[3]["epoch"] == 0
    model = load_model(out / "last.pth")  # self-describing
    assert model.config.num_frames == 4
    code = subprocess.run([sys.executable, "-m", "claver", "test", "-c", str(tmp_path / "c.yaml"),
                           "--resume", str(out / "last.pth"), "TEST.NUM_CLIPS=2",
                           "TEST.NUM_CROPS=3"], capture_output=True, text=True, timeout=120)
    assert code.returncode == 0, code.stderr
    multi = json.loads((out / "eval/test.json").read_text())
    assert multi["protocol"]["views"] == 6 and "top-1" in code.stdout
    assert summary["protocol"]["views"] == 1  # validation: VAL's one view, not TEST's six
    assert f"results in {out / 'eval' / 'test.json'}" in code.stdout
    assert "[test] evaluating: 6/6 videos (100%)" in code.stdout  # plain progress, no bar


@pytest.mark.parametrize("extra", [
    "  MIXUP: 0\n  CUTMIX: 0\n",  # hard labels (the reference code crashed here)
    "  LOSS: actionclip\n",
])
def test_other_loss_settings_train(dataset, tmp_path, extra):
    path = write_config(tmp_path / "c.yaml", dataset, tmp_path / "run")
    opts = [f"TRAIN.{line.strip().replace(': ', '=')}" for line in extra.splitlines()]
    result = train(load_config(path, ["TRAIN.EPOCHS=1", *opts]), log=lambda *a: None)
    assert result["step"] == 3


def test_frozen_text_caches_features_and_keeps_text_weights(dataset, tmp_path):
    cfg = load_config(write_config(tmp_path / "c.yaml", dataset, tmp_path / "run"),
                      ["TRAIN.EPOCHS=1", "MODEL.FIX_TEXT=true", "DATA.VAL_FILE="])
    torch.manual_seed(0)
    train(cfg, log=lambda *a: None)
    w = final_weights(tmp_path / "run")
    torch.manual_seed(0)
    from claver.engine.data import build_model
    fresh = build_model(cfg).state_dict()
    assert torch.equal(w["token_embedding.weight"], fresh["token_embedding.weight"])
    assert not torch.equal(w["visual.proj"], fresh["visual.proj"])


def test_non_finite_loss_skips_the_step(dataset, tmp_path, monkeypatch):
    real = train_mod.compute_loss
    calls = {"n": 0}

    def sometimes_nan(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 2 else loss

    monkeypatch.setattr(train_mod, "compute_loss", sometimes_nan)
    messages = []
    cfg = load_config(write_config(tmp_path / "c.yaml", dataset, tmp_path / "run"),
                      ["TRAIN.EPOCHS=1", "DATA.VAL_FILE="])
    result = train(cfg, log=messages.append)
    assert result["skipped_steps"] == 1 and result["step"] == 3
    assert any("non-finite loss, step skipped" in m for m in messages)
    assert all(torch.isfinite(v).all() for v in final_weights(tmp_path / "run").values())


KILLER = """
import os, signal, sys
from claver.engine import reporting
real = reporting.MetricsLog.write
def write(self, record):
    real(self, record)
    if record["step"] == {kill_step}:
        os.kill(os.getpid(), signal.SIGKILL)
reporting.MetricsLog.write = write
from claver.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigkill_then_auto_resume_gives_identical_weights(dataset, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", dataset, tmp_path / "a")
    base = [sys.executable, "-m", "claver", "train", "-c", str(cfg), "DATA.VAL_FILE="]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    ok = subprocess.run([*base, "OUTPUT=" + str(tmp_path / "a")], capture_output=True,
                        text=True, timeout=300, env=env)
    assert ok.returncode == 0, ok.stderr
    killer = tmp_path / "killer.py"
    killer.write_text(KILLER.format(kill_step=5))  # mid epoch 1 (3 steps per epoch)
    run_b = [sys.executable, str(killer), "train", "-c", str(cfg), "DATA.VAL_FILE=",
             "OUTPUT=" + str(tmp_path / "b")]
    killed = subprocess.run(run_b, capture_output=True, text=True, timeout=300, env=env)
    assert killed.returncode == -9  # SIGKILL
    assert torch.load(tmp_path / "b" / "last.pth", weights_only=True)["step"] == 3
    resumed = subprocess.run([*base, "OUTPUT=" + str(tmp_path / "b"), "--auto-resume"],
                             capture_output=True, text=True, timeout=300, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout + resumed.stderr
    steps = [json.loads(x)["step"] for x in (tmp_path / "b" / "metrics.jsonl").read_text()
             .splitlines()]
    assert steps == list(range(1, 10))  # steps 4-5 of the killed run are not there twice
    a, b = final_weights(tmp_path / "a"), final_weights(tmp_path / "b")
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("per_device, loss", [
    (2, "claver"), (1, "claver"),  # 1: two accumulation steps under no_sync
    (2, "actionclip"),  # the in-batch loss over both ranks' videos, as one process sees them
])
def test_two_process_ddp_matches_one_process(dataset, tmp_path, per_device, loss):
    cfg = write_config(tmp_path / "c.yaml", dataset, tmp_path / "one")
    # per_step text rows: one draw per optimizer step shared by micro-batches and ranks (the
    # official draw is per micro-batch and rank, so DDP could not equal one process)
    common = ["DATA.VAL_FILE=", "TRAIN.MIXUP=0", "TRAIN.CUTMIX=0", "TRAIN.EPOCHS=1",
              "TRAIN.TEXT_ROW_DRAW=per_step", f"TRAIN.LOSS={loss}"]
    one = subprocess.run([sys.executable, "-m", "claver", "train", "-c", str(cfg), *common,
                          "OUTPUT=" + str(tmp_path / "one")], capture_output=True, text=True,
                         timeout=300)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          f"--master_port={free_port()}", "-m", "claver", "train", "-c", str(cfg),
                          *common, f"TRAIN.BATCH_SIZE={per_device}", "TRAIN.EFFECTIVE_BATCH_SIZE=4",
                          "OUTPUT=" + str(tmp_path / "two")], capture_output=True, text=True,
                         timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("done: ") == 1 and two.stdout.count("training videos") == 1
    a, b = final_weights(tmp_path / "one"), final_weights(tmp_path / "two")
    for k in a:
        x, y = a[k], b[k]
        if k.endswith("in_proj_bias"):
            # the key bias has an exactly-zero gradient (softmax ignores a per-query shift);
            # AdamW turns its float-noise gradient into lr-sized steps, so it is noise in
            # both runs: compare the query and value biases only
            w = x.shape[0] // 3
            x, y = torch.cat([x[:w], x[2 * w:]]), torch.cat([y[:w], y[2 * w:]])
        torch.testing.assert_close(x, y, atol=2e-5, rtol=1e-4, msg=k)


def test_few_shot_manifest_is_seeded(dataset, tmp_path):
    from claver.data.sources import read_video_list
    from claver.engine.data import few_shot_list

    a = few_shot_list(str(dataset / "train.txt"), 2, seed=1, out_dir=tmp_path / "a")
    b = few_shot_list(str(dataset / "train.txt"), 2, seed=1, out_dir=tmp_path / "b")
    entries = read_video_list(a)
    assert a.name == "few_shot_k2_seed1.txt" and a.read_text() == b.read_text()
    assert sorted(e.labels[0] for e in entries) == [0, 0, 1, 1, 2, 2]
    cfg = load_config(write_config(tmp_path / "c.yaml", dataset, tmp_path / "run"),
                      ["TRAIN.EPOCHS=1", "DATA.FEW_SHOT_K=2", "TRAIN.BATCH_SIZE=2",
                       "DATA.VAL_FILE="])
    assert train(cfg, log=lambda *a: None)["step"] == 3  # 6 videos / batch 2
    assert (tmp_path / "run" / "few_shot_k2_seed0.txt").is_file()


def test_zero_shot_splits_report_mean_and_std(dataset, tmp_path):
    import claver
    from claver.data.sources import write_labels
    from claver.models.factory import save_model

    torch.manual_seed(0)
    ckpt = save_model(claver.create_model("claver-tiny", num_frames=4), tmp_path / "m.st")
    (tmp_path / "s1.txt").write_text("c0_0.mp4 0\nc1_0.mp4 1\n")
    (tmp_path / "s2.txt").write_text("c2_1.mp4 0\nc0_1.mp4 1\nc1_1.mp4 1\n")
    write_labels(["hopping", "sprinting"], tmp_path / "novel.csv")
    cfg = write_config(tmp_path / "c.yaml", dataset, tmp_path / "run",
                       f"TEST:\n  SPLITS: ['{tmp_path}/s1.txt|{tmp_path}/novel.csv', "
                       f"'{tmp_path}/s2.txt|{tmp_path}/novel.csv']\n")
    out = subprocess.run([sys.executable, "-m", "claver", "test", "-c", str(cfg), "--resume",
                          str(ckpt), "--tag", "zs"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    summary = json.loads((tmp_path / "run" / "eval" / "zs_splits.json").read_text())
    top1 = [s["top1"] for s in summary["splits"]]
    assert len(top1) == 2 and summary["top1_mean"] == pytest.approx(sum(top1) / 2)
    assert "2 split(s): top-1" in out.stdout
    listed = [json.loads((tmp_path / "run" / "eval" / f"zs_split{i}.json").read_text())
              ["protocol"]["videos_scored"] for i in range(2)]
    assert listed == [2, 3]
