"""Figures: files written at the documented pixel sizes, the data they are drawn from, and
headless drawing (Agg canvas, pyplot never imported)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from claver.engine.reporting import write_confusion
from claver.figures import (
    confusion_classes,
    confusion_figure,
    confusion_title,
    read_metrics,
    training_curves,
    window_timeline,
)
from claver.zeroshot import Prediction

SUMMARY = {"top1": 0.5, "top5": 0.875, "mean_class_acc": 0.4375,
           "protocol": {"views": 12, "clips": 4, "crops": 3, "frames": 8, "input_size": 224,
                        "text_rows": 16, "videos_scored": 8, "videos_listed": 9,
                        "list": "/data/val.csv", "model": "claver"}}


def picture(path) -> np.ndarray:
    """RGB pixels of a PNG; asserts it is not a blank canvas."""
    img = np.asarray(Image.open(path).convert("RGB"))
    assert img.std() > 10, f"{path} looks blank"
    return img


def test_confusion_png_csv_and_title(tmp_path):
    names = ["archery", 'say "cheese"', "a, b", "d"]
    counts = np.array([[5, 1, 0, 0], [2, 3, 0, 1], [0, 0, 4, 0], [0, 0, 0, 0]])
    title = confusion_title(SUMMARY)
    assert title.splitlines()[0] == "top-1 50.0%   top-5 87.5%   mean class 43.8%"
    assert "12 view(s) (4 clip x 3 crop), 8 frames, 224 px" in title and "val.csv" in title
    out = confusion_figure(torch.tensor(counts), names, title, tmp_path / "c.png",
                           tmp_path / "c.csv")
    # 6 in square + 1.2 in colour bar; + 0.25 in per extra title line; 100 dpi
    assert picture(out["png"]).shape == (650, 720, 3)
    with open(out["csv"], newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["true \\ predicted", *names]
    assert [r[0] for r in rows[1:]] == names
    assert np.array([[int(x) for x in r[1:]] for r in rows[1:]]).tolist() == counts.tolist()


def test_most_confused_classes_are_kept():
    c = np.diag(np.full(50, 10))
    c[3, 3], c[3, 17] = 5, 5  # class 3: half its videos called 17
    c[20, 20], c[20, 4] = 7, 3  # class 20: 30 % called 4
    c[8, 8], c[8, 9] = 8, 2  # class 8: 20 % called 9
    c[30, 30], c[30, 31] = 99, 1  # a small confusion that must not make the cut
    assert confusion_classes(c, 6) == [3, 4, 8, 9, 17, 20]
    assert confusion_classes(c, 4) == [3, 4, 17, 20]
    assert confusion_classes(c, 60) == list(range(50))
    assert confusion_classes(np.diag(np.ones(9)), 3) == [0, 1, 2]  # nothing confused


def test_many_classes_show_the_most_confused(tmp_path):
    rng = np.random.default_rng(0)
    c = np.diag(rng.integers(5, 20, 400)) + (rng.random((400, 400)) < 0.01)
    out = confusion_figure(c, [f"class {i}" for i in range(400)], "t", tmp_path / "c.png",
                           tmp_path / "c.csv", max_classes=30)
    side = 0.26 * 30 + 3.5
    assert picture(out["png"]).shape == (round(100 * (side + 0.25)),
                                         round(100 * (side + 1.2)), 3)
    assert len((tmp_path / "c.csv").read_text().splitlines()) == 401  # the full matrix


def test_confusion_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match=r"c\.png: 2 class names for a 3x3"):
        confusion_figure(np.eye(3), ["a", "b"], "t", tmp_path / "c.png")
    with pytest.raises(ValueError, match="square"):
        confusion_figure(np.ones((2, 3)), ["a", "b"], "t", tmp_path / "c.png")


def test_write_confusion_of_an_evaluation(tmp_path):
    write_confusion(SUMMARY, torch.eye(3, dtype=torch.long), ["x", "y", "z"], tmp_path, "ep0")
    assert picture(tmp_path / "ep0_confusion.png").shape[2] == 3
    assert (tmp_path / "ep0_confusion.csv").read_text().splitlines()[0] == \
        "true \\ predicted,x,y,z"
    # class names that do not match the matrix: indices instead of a failed evaluation
    write_confusion(SUMMARY, torch.eye(3, dtype=torch.long), ["x"], tmp_path, "ep1")
    assert (tmp_path / "ep1_confusion.csv").read_text().splitlines()[0] == \
        "true \\ predicted,0,1,2"


def write_metrics(path, lines):
    path.write_text("".join((json.dumps(r) if isinstance(r, dict) else r) + "\n"
                            for r in lines))


def test_training_curves(tmp_path):
    m = tmp_path / "run" / "metrics.jsonl"
    m.parent.mkdir()
    assert training_curves(m, tmp_path / "curves.png") is None  # no file yet
    assert not (tmp_path / "curves.png").exists()
    train = [{"step": s, "epoch": s // 10, "loss": 2 / s, "lr": 1e-5} for s in range(1, 31)]
    val = [{"step": 10, "epoch": 0, "val_top1": 0.3, "val_top5": 0.6},
           {"step": 20, "epoch": 1, "val_top1": 0.4, "val_mean_class_acc": 0.35}]
    write_metrics(m, [*train[:15], val[0], "not json", '{"epoch": 3}', "[1, 2]",
                      *train[15:], val[1], '{"step": 31, "loss": 0.'])
    t, v = read_metrics(m)
    assert t == train and v == val
    assert picture(training_curves(m, tmp_path / "curves.png")).shape == (900, 1000, 3)
    write_metrics(m, [{"step": 1, "epoch": 0}])  # records without the plotted keys
    assert picture(training_curves(m, tmp_path / "c2.png")).shape == (900, 1000, 3)


def windows() -> list[Prediction]:
    labels = ("walk", "run", "jump", "sit")
    out = []
    for k in range(6):
        p = torch.softmax(torch.tensor([3.0 - k, k - 2.0, 0.0, -5.0]), 0)
        out.append(Prediction("long.mp4", labels, p, None, 2, 2.0 * k, 2.0 * k + 4,
                              float(p.max()) < 0.6))
    return out


def test_window_timeline_takes_predictions_dicts_and_json(tmp_path):
    ws = windows()
    assert any(w.background for w in ws) and not all(w.background for w in ws)
    first = picture(window_timeline(ws, tmp_path / "a.png", threshold=0.6))
    assert first.shape == (500, 1200, 3)
    dicts = [w.to_dict() for w in ws]
    second = picture(window_timeline(dicts, tmp_path / "b.png", threshold=0.6))
    entry = {"video": "long.mp4", "ok": True, "windows": dicts, "segments": []}
    third = picture(window_timeline(json.loads(json.dumps(entry)), tmp_path / "c.png",
                                    threshold=0.6))
    assert (first == second).all() and (first == third).all()  # the same picture
    assert not (first == picture(window_timeline(ws, tmp_path / "d.png"))).all()
    with pytest.raises(ValueError, match="no readable windows"):
        window_timeline([{"video": "x", "ok": False, "error": "bad"}], tmp_path / "e.png")


def test_figures_draw_headless_without_pyplot(tmp_path):
    code = (
        "import sys, numpy as np\n"
        "from claver.figures import confusion_figure\n"
        f"confusion_figure(np.eye(3), ['a', 'b', 'c'], 't', {str(tmp_path / 'h.png')!r})\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["MPLBACKEND"] = "TkAgg"  # a GUI backend that cannot start here: must not be used
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert picture(tmp_path / "h.png").shape == (600, 720, 3)
