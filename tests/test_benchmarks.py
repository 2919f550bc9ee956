"""The benchmark scripts run (quick mode) and check equality before they time anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from claver.runtime.select import choose_runtime

ROOT = Path(__file__).resolve().parents[1]


def test_kronecker_attention_benchmark_quick():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "kronecker_attention.py"),
                          "--quick"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    diffs = [float(line.split("max|out diff| ")[1].split()[0])
             for line in out.stdout.splitlines() if line.startswith("check ")]
    assert len(diffs) == 2 and max(diffs) <= 1e-4  # our block equals the naive reference
    rows = [line for line in out.stdout.splitlines() if line.strip().endswith("x")
            and line.split()[0].isdigit()]
    assert len(rows) == 2  # one row per (T, L) in quick mode


def test_data_throughput_benchmark_quick():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "data_throughput.py"),
                          "--quick"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    row = next(line.split() for line in out.stdout.splitlines() if line.startswith("  4 "))
    assert float(row[1]) > 0 and float(row[2]) > 0 and row[3].endswith("x")


def test_train_step_benchmark_quick():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_step.py"), "--quick"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [line.split() for line in out.stdout.splitlines() if line.startswith(("off", "on"))]
    assert len(rows) == 2 and all(float(r[1]) > 0 for r in rows)


def test_predict_benchmark_quick(tmp_path):
    env = {**os.environ, "CLAVER_CACHE": str(tmp_path)}  # the ONNX exports
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "predict.py"), "--quick",
                          "--labels", "409"], capture_output=True, text=True, timeout=300,
                         env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "gives claver's ids: yes" in out.stdout  # both sides tokenize identically
    assert " 409 labels," in out.stdout  # every generated label is distinct
    rows = {" ".join(t[:-8]): t[-8:] for t in (line.split() for line in out.stdout.splitlines()
                                                if line.startswith(("ours ", "HF X-CLIP ")))}
    # the default row (what claver predict runs on this CPU) is always measured and marked
    default = " ".join(choose_runtime("auto", torch.nn.Module(), torch.device("cpu"), "auto"))
    modes = {"torch fp32", "onnx fp32", "onnx int8", default}
    assert set(rows) == {f"ours {arch} tiny {mode}" + (" (default)" if mode == default else "")
                         for arch in ("actionclip meanP", "claver") for mode in modes
                         } | {"HF X-CLIP tiny fp32"}
    for name, (rate, ratio, quartiles, prep_ms, model_ms, top1, max_dp, agrees) in rows.items():
        assert float(rate) > 0 and ratio.endswith("x") and float(prep_ms) > 0
        assert float(model_ms) > 0 and len(quartiles.split("-")) == 2
        if name.startswith("ours"):
            kept, checked = map(int, top1.split("/"))
            assert agrees == ("yes" if kept == checked and float(max_dp) <= 0.01 else "NO")
        if "onnx fp32" in name or "torch fp32" in name:  # ONNX Runtime fp32 equals eager
            assert float(max_dp) <= 1e-4 and agrees == "yes"
    assert rows["HF X-CLIP tiny fp32"][1] == "1.00x"


def test_search_recall_benchmark_on_a_quick_demo(tmp_path):
    demo = subprocess.run([sys.executable, "-m", "claver", "demo", "--quick", "--out",
                           str(tmp_path / "demo"), "--data", str(tmp_path / "data")],
                          capture_output=True, text=True, timeout=300)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "search_recall.py"),
                          str(tmp_path / "demo" / "claver-tiny-kmt.safetensors"),
                          "--data", str(tmp_path / "data")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [line.split() for line in out.stdout.splitlines()
            if line.startswith("claver-tiny-kmt")]
    # the quick dataset: 12 val classes x 2 videos, 6 zero-shot classes x 2 videos
    assert [(r[1], r[2], r[3]) for r in rows] == [("val", "12", "24"), ("zero_shot", "6", "12")]
    assert all(0 <= float(x) <= 1 for r in rows for x in r[4:])
