"""Output-folder rules, resume-setting checks and command-line overrides of ``claver train``
(issue 12, items 1, 3, 7) on the tiny dataset of test_engine_train."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from claver.cli import build_parser, main
from claver.commands.engine import OverrideError, split_overrides
from claver.engine.train import OutputExistsError, check_output
from test_engine_train import dataset, write_config  # noqa: F401 - the fixture

FAST = ["TRAIN.EPOCHS=1", "DATA.VAL_FILE="]


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder`` with its bytes and mtime."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def claver(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture()
def finished(dataset, tmp_path, capsys):  # noqa: F811
    """A finished one-epoch run (with validation) in tmp_path/run; returns (config, run)."""
    cfg = write_config(tmp_path / "c.yaml", dataset, tmp_path / "run")
    code, _, err = claver(capsys, "train", "-c", cfg, "TRAIN.EPOCHS=1")
    assert code == 0, err
    run = tmp_path / "run"
    assert (run / "last.pth").is_file() and (run / "eval").is_dir()
    return cfg, run


def test_non_empty_output_is_refused_and_left_untouched(finished, capsys):
    cfg, run = finished
    before = snapshot(run)
    code, out, err = claver(capsys, "train", "-c", cfg, "TRAIN.EPOCHS=1")
    assert code == 2
    line = err.strip()
    assert "\n" not in line and str(run) in line
    for word in ("last.pth", "best.pth", "eval/", "config.yaml", "--auto-resume", "--resume",
                 "--overwrite", "another OUTPUT"):
        assert word in line, word
    assert snapshot(run) == before


def test_overwrite_says_what_it_replaces_and_keeps_other_files(finished, capsys):
    cfg, run = finished
    (run / "notes.txt").write_text("mine")
    code, out, err = claver(capsys, "train", "-c", cfg, *FAST, "--overwrite")
    assert code == 0, err
    said = next(x for x in out.splitlines() if x.startswith("--overwrite:"))
    assert all(w in said for w in ("last.pth", "best.pth", "eval/", "metrics.jsonl"))
    assert "left as they are: notes.txt" in said
    assert (run / "notes.txt").read_text() == "mine"
    assert not (run / "eval").exists() and not (run / "best.pth").exists()  # no VAL_FILE now
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]  # the old run's records are gone, not appended to


def test_overwrite_with_resume_is_refused(tmp_path):
    with pytest.raises(OutputExistsError, match="cannot be combined"):
        check_output(tmp_path, continuing=True, overwrite=True)


def test_failing_start_writes_nothing(finished, dataset, tmp_path, capsys):  # noqa: F811
    cfg, run = finished
    (tmp_path / "two.csv").write_text("0,jumping\n1,running\n")  # the lists use label 2 too
    before = snapshot(run)
    code, _, err = claver(capsys, "train", "-c", cfg, *FAST, "--overwrite",
                          f"DATA.LABEL_LIST={tmp_path / 'two.csv'}")
    assert code == 2 and err.strip(), err
    assert snapshot(run) == before  # config.yaml still describes the checkpoints beside it
    fresh = tmp_path / "fresh"
    code, _, err = claver(capsys, "train", "-c", cfg, *FAST, f"OUTPUT={fresh}",
                          "DATA.FEW_SHOT_K=2", f"DATA.LABEL_LIST={tmp_path / 'two.csv'}")
    assert code == 2 and not fresh.exists()  # not even the few-shot manifest


def test_resume_with_changed_batch_size_is_refused_then_allowed(dataset, tmp_path,  # noqa: F811
                                                                capsys):
    cfg = write_config(tmp_path / "c.yaml", dataset, tmp_path / "run")
    run = tmp_path / "run"
    assert claver(capsys, "train", "-c", cfg, *FAST)[0] == 0
    before = snapshot(run)
    code, _, err = claver(capsys, "train", "-c", cfg, *FAST, "--auto-resume",
                          "TRAIN.BATCH_SIZE=2")
    assert code == 2
    line = err.strip()
    assert "\n" not in line and "TRAIN.BATCH_SIZE: 4 -> 2" in line
    assert "--allow-changed-settings" in line
    assert snapshot(run) == before
    code, out, err = claver(capsys, "train", "-c", cfg, *FAST, "--auto-resume",
                            "TRAIN.BATCH_SIZE=2", "--allow-changed-settings")
    assert code == 0, err
    warning = next(x for x in out.splitlines() if x.startswith("warning: resuming"))
    assert "TRAIN.BATCH_SIZE: 4 -> 2" in warning and "steps per epoch: 3 -> 6" in warning
    state = torch.load(run / "last.pth", weights_only=True)
    assert state["step"] == 6 and state["settings"]["TRAIN.BATCH_SIZE"] == 2


def test_resume_with_same_settings_is_quiet_and_old_checkpoints_warn(dataset, tmp_path,  # noqa: F811
                                                                    capsys):
    cfg = write_config(tmp_path / "c.yaml", dataset, tmp_path / "run")
    run = tmp_path / "run"
    assert claver(capsys, "train", "-c", cfg, *FAST)[0] == 0
    code, out, err = claver(capsys, "train", "-c", cfg, *FAST, "--auto-resume")
    assert code == 0 and "resumed from" in out and "warning" not in out + err
    state = torch.load(run / "last.pth", weights_only=True)
    del state["settings"]  # as written before checkpoints recorded their settings
    torch.save(state, run / "last.pth")
    code, out, _ = claver(capsys, "train", "-c", cfg, *FAST, "--auto-resume")
    assert code == 0 and "records no run settings" in out


def test_overrides_anywhere_on_the_line(dataset, tmp_path, capsys):  # noqa: F811
    cfg = write_config(tmp_path / "c.yaml", dataset, tmp_path / "run")
    code, out, err = claver(capsys, "train", "-c", cfg, "TRAIN.EPOCHS=1", "--auto-resume",
                            "TRAIN.LR=1e-5", "--opts", "DATA.VAL_FILE", "", "SEED", "3")
    assert code == 0, err
    assert "starting from scratch" in out
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["TRAIN"]["EPOCHS"] == 1 and saved["TRAIN"]["LR"] == 1e-5
    assert saved["SEED"] == 3 and saved["DATA"]["VAL_FILE"] == ""


def test_overrides_apply_in_command_line_order():
    sub = build_parser()._actions[-1].choices["train"]
    rest, overrides = split_overrides(
        ["A.B=1", "-c", "X=1.yaml", "--opts", "A.B", "2", "C=3", "--auto-resume", "A.B=4"],
        sub)
    assert rest == ["-c", "X=1.yaml", "--auto-resume"]
    assert overrides == ["A.B=1", "A.B=2", "C=3", "A.B=4"]
    with pytest.raises(OverrideError, match="--opts A.B has no value"):
        split_overrides(["--opts", "A.B", "C=3"], sub)  # would have swallowed C=3


@pytest.mark.parametrize("command", [["train"], ["test", "--resume", "x.pth"]])
@pytest.mark.parametrize("tail", [["--opts", "TRAIN.LR", "--auto-resume"],
                                  ["--opts", "TRAIN.LR"]])
def test_opts_key_without_value_is_an_error(dataset, tmp_path, capsys, command,  # noqa: F811
                                            tail):
    cfg = write_config(tmp_path / "c.yaml", dataset, tmp_path / "run")
    if command == ["test", "--resume", "x.pth"] and "--auto-resume" in tail:
        tail = ["--opts", "TRAIN.LR", "--tag", "t"]
    code, _, err = claver(capsys, *command, "-c", cfg, *tail)
    assert code == 2
    line = err.strip()
    assert "\n" not in line and "--opts TRAIN.LR has no value" in line
    assert not (tmp_path / "run").exists()


def test_stray_argument_is_an_error(dataset, tmp_path, capsys):  # noqa: F811
    cfg = write_config(tmp_path / "c.yaml", dataset, tmp_path / "run")
    code, _, err = claver(capsys, "train", "-c", cfg, "train.lr=1")
    assert code == 2 and "unexpected argument 'train.lr=1'" in err
