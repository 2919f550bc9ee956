"""The console entry points: the mask picture, ``claver info`` and ``claver models``
(``python -m claver demo`` is in test_demo.py)."""

from __future__ import annotations

import torch

import claver
from claver.cli import main
from claver.models.factory import save_model


def test_demo_mask_picture_for_kmct(capsys):
    from claver.demo import mask_picture

    assert mask_picture(2, 2, "kmct").splitlines() == [
        "  f0t0  #. ..", "  f0t1  .# ..", "  f1t0  ## #.", "  f1t1  ## .#"]


def test_info_and_models(tmp_path, capsys):
    torch.manual_seed(0)
    path = save_model(claver.create_model("claver-tiny", num_frames=4, mask="kmct"),
                      tmp_path / "m.safetensors")
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "format        claver" in out and "4 frames" in out and "mask kmct" in out
    assert main(["models"]) == 0
    assert "claver-vit-b16" in capsys.readouterr().out


def test_cli_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("claver info: error:") and "bad.pt" in err
    assert "Traceback" not in err
