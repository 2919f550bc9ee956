"""Hostile configs (issue 11, items 3 and 4): model configs describing giant or nonsense
models, YAML alias bombs, and the files whose errors used to be unclear.

Every hostile file is built here. Cases that could exhaust memory or time run in a child
under a memory and a time limit (``tests/hostile.py``); CLI cases assert exit code 2 and one
line naming the file, the problem and the fix.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import claver
from claver.cli import main
from claver.engine.config import ConfigError, load_config
from claver.models.config import ModelConfigError, get_config
from claver.models.factory import save_model
from claver.weights.formats import HF_CLIP_KEYS, CheckpointError, read_checkpoint
from hostile import describe, run_limited

TINY = get_config("claver-tiny").to_dict()


def claver_file(path: Path, config: object, tensors: dict | None = None) -> Path:
    """A safetensors file in our format whose 'config' metadata is ``config`` (a dict is
    written as JSON, a string as given)."""
    text = config if isinstance(config, str) else json.dumps(config)
    save_file(tensors or {"x": torch.zeros(1)}, str(path),
              metadata={"format": "claver", "config": text})
    return path


def with_fields(**changes: dict) -> dict:
    config = json.loads(json.dumps(TINY))
    for key, value in changes.items():
        if isinstance(value, dict):
            config[key].update(value)
        else:
            config[key] = value
    return config


def cli_error(capsys, argv: list[str]) -> str:
    """Run the CLI; it must exit 2 with exactly one line on stderr (no traceback)."""
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert len(lines[0]) < 1200, f"unbounded message ({len(lines[0])} chars)"
    return lines[0]


# ----------------------------------------------------------------- giant model configs

GIANT = with_fields(vision={"width": 8192, "layers": 128, "heads": 64},
                    text={"width": 8192, "layers": 128, "heads": 64})


def test_giant_model_config_is_refused_before_anything_is_built(tmp_path):
    """A ~600-byte file whose config describes a 240B-parameter model (and one describing a
    528M-parameter ViT-L it does not hold): info, convert, predict --model and load_model
    refuse it under a 2.5 GiB address-space limit, where building either model would fail."""
    giant = claver_file(tmp_path / "giant.safetensors", GIANT)
    hollow = claver_file(tmp_path / "hollow.safetensors", get_config("claver-vit-l14").to_dict())
    assert giant.stat().st_size < 1000 and hollow.stat().st_size < 1000
    out = tmp_path / "out.safetensors"
    done = run_limited(f"""
        import sys
        from claver.cli import main
        from claver.models.factory import load_model
        for argv in (["info", {str(giant)!r}], ["convert", {str(giant)!r}, {str(out)!r}],
                     ["predict", "v.mp4", "--labels", "a,b", "--model", {str(giant)!r}],
                     ["convert", {str(hollow)!r}, {str(out)!r}]):
            print("exit", main(argv), flush=True)
        try:
            load_model({str(hollow)!r})
        except ValueError as e:
            print("refused:", e)
        """, seconds=90)
    assert not getattr(done, "timed_out", False) and done.returncode == 0, describe(done)
    assert done.stdout.count("exit 2") == 4, describe(done)
    assert "refused:" in done.stdout and "does not hold the weights" in done.stdout
    errors = done.stderr.strip().splitlines()
    assert len(errors) == 4 and "Traceback" not in done.stderr, describe(done)
    for line in errors[:3]:
        assert "giant.safetensors: the model config describes a model of 240," in line, line
        assert "over the limit of 2,000,000,000" in line and "--max-params" in line
        assert "CLAVER_MAX_PARAMS" in line
    assert "hollow.safetensors" in errors[3] and "missing" in errors[3]
    assert not out.exists()


def test_parameter_limit_has_an_explicit_override(tmp_path, monkeypatch):
    with pytest.raises(ModelConfigError, match=r"model 'claver-vit-l14' describes a model of "
                                                r"528,394,497 parameters.*max_params=528394497"):
        claver.create_model("claver-vit-l14", max_params=1e8)
    monkeypatch.setenv("CLAVER_MAX_PARAMS", "3e6")
    with pytest.raises(ModelConfigError, match="over the limit of 3,000,000"):
        claver.create_model("clip-tiny")
    assert claver.create_model("clip-tiny", max_params=4e6) is not None  # argument wins
    monkeypatch.setenv("CLAVER_MAX_PARAMS", "lots")
    with pytest.raises(ModelConfigError, match="CLAVER_MAX_PARAMS must be a positive number"):
        claver.create_model("clip-tiny")
    monkeypatch.delenv("CLAVER_MAX_PARAMS")
    # the CLI flag: info refuses a file over the limit unless --max-params allows it
    path = tmp_path / "m.safetensors"
    save_model(claver.create_model("claver-tiny"), path)
    assert main(["info", str(path), "--max-params", "1e6"]) == 2
    assert main(["info", str(path), "--max-params", "1e7"]) == 0


@pytest.mark.parametrize("changes,field,value", [
    ({"vision": {"width": "768"}}, "vision.width", "'768'"),
    ({"vision": {"width": -64}}, "vision.width", "-64"),
    ({"vision": {"width": 64.5}}, "vision.width", "64.5"),
    ({"text": {"layers": True}}, "text.layers", "True"),
    ({"text": {"layers": 100000}}, "text.layers", "100000"),
    ({"vision": {"heads": 3}}, "vision.heads", "3"),
    ({"vision": {"image_size": 100, "patch_size": 8}}, "vision.image_size", "100"),
    ({"vision": {"image_size": 1024, "patch_size": 4}}, "patch_size", "256 patches"),
    ({"num_frames": 10**6}, "num_frames", "1000000"),
    ({"num_frames": None}, "num_frames", "None"),
    ({"embed_dim": [64]}, "embed_dim", "[64]"),
    ({"mean": [0.5, "x", 0.5]}, "mean", "'x'"),
    ({"std": [0.5, 0.0, 0.5]}, "std", "0.0"),
    ({"temporal_layers": -1}, "temporal_layers", "-1"),
    ({"mask": ["kmt"]}, "mask", "['kmt']"),
])
def test_bad_model_config_field_is_one_line_naming_file_field_value_fix(
        tmp_path, capsys, changes, field, value):
    path = claver_file(tmp_path / "bad.safetensors", with_fields(**changes))
    for argv in (["info", path], ["convert", path, tmp_path / "o.safetensors"]):
        line = cli_error(capsys, argv)
        assert "bad.safetensors: its 'config' metadata" in line and field in line, line
        assert value in line, line
        assert any(word in line for word in ("write", "use", "make", "must be one of")), line


@pytest.mark.parametrize("config,match", [
    ('{"vision": ', r"line 1, column 12: not valid JSON"),
    ('{"num_frames": ' + "9" * 5000 + "}", "integer of more than 4300 digits"),
    ("[" * 100000, "nested deeper than Python can read"),
    ("[1, 2]", "must be a mapping of field -> value"),
    ('{"vision": {"wdth": 64}}', r"vision has unknown field\(s\) \['wdth'\]; valid: image_size"),
    ('{"layers": 5}', r"unknown field\(s\) \['layers'\]"),
])
def test_bad_config_json_in_metadata(tmp_path, capsys, config, match):
    path = claver_file(tmp_path / "meta.safetensors", config)
    line = cli_error(capsys, ["info", path])
    assert "meta.safetensors" in line and re.search(match, line), line
    assert "corrupt safetensors" not in line


def test_bad_options_are_refused_by_create_model_before_building():
    with pytest.raises(ModelConfigError, match="vision.width must be a whole number .*'64'"):
        claver.create_model("claver-tiny", vision={"width": "64"})
    with pytest.raises(ModelConfigError, match="num_frames is out of range.*got 100000"):
        claver.create_model("claver-tiny", num_frames=100000)


def test_pretrained_file_describing_another_model_is_checked_before_building(tmp_path):
    path = claver_file(tmp_path / "hollow.safetensors", get_config("claver-vit-l14").to_dict())
    with pytest.raises(CheckpointError, match="hollow.safetensors records an architecture "
                       "that differs from 'claver-tiny'.*vision.width: 64 vs 1024"):
        claver.create_model("claver-tiny", pretrained=path)  # (a tiny model: fails fast)
    with pytest.raises(CheckpointError, match="hollow.safetensors .* does not fit"):
        claver.create_model("claver-vit-l14", pretrained=path)  # not 300M params allocated


# ------------------------------------------------------------- config.json beside weights

def hf_state_dict() -> dict[str, torch.Tensor]:
    """A tiny CLIP in Hugging Face ``CLIPModel`` key layout (the inverse of our converter)."""
    inverse = {ours: theirs for theirs, ours in HF_CLIP_KEYS.items()}
    out = {}
    for key, value in claver.create_model("clip-tiny").state_dict().items():
        qkv = re.fullmatch(r"(visual\.)?transformer\.resblocks\.(\d+)\.attn\.in_proj_(\w+)", key)
        if qkv:
            tower = "vision_model" if qkv[1] else "text_model"
            for name, part in zip("qkv", value.chunk(3), strict=True):
                out[f"{tower}.encoder.layers.{qkv[2]}.self_attn.{name}_proj.{qkv[3]}"] = part
        elif key in ("visual.proj", "text_projection"):
            name = "visual_projection" if key == "visual.proj" else "text_projection"
            out[f"{name}.weight"] = value.t().contiguous()
        else:
            template = re.sub(r"\.(\d+)(?=\.)", ".{}", key)
            out[inverse[template].format(*re.findall(r"\.(\d+)(?=\.)", key))] = value
    return out


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hf")
    save_file(hf_state_dict(), str(folder / "model.safetensors"))
    return folder


def test_hf_weights_read_with_a_good_config_json(hf_folder):
    (hf_folder / "config.json").write_text(json.dumps(
        {"vision_config": {"num_attention_heads": 2}, "text_config": {"num_attention_heads": 4}}))
    ckpt = read_checkpoint(hf_folder)
    assert ckpt.format == "hf-clip" and (ckpt.config.vision.heads, ckpt.config.text.heads) == (2, 4)


@pytest.mark.parametrize("content,match", [
    (b'{"vision_config": {', r"config.json, line 1, column \d+: not valid JSON"),
    (b'{"vision_config": {"num_attention_heads": ' + b"1" * 5000 + b"}}",
     "integer of more than 4300 digits"),
    (b'{"text_config": {"hidden_act": "gelu\xff"}}', "line 1: config.json is not UTF-8 text"),
    (b"[1, 2, 3]", "expected a JSON object, got \\[1, 2, 3\\]"),
    (b'{"vision_config": [12]}', "vision_config must be a JSON object, got \\[12\\]"),
    (b'{"vision_config": {"num_attention_heads": "twelve"}}',
     "vision_config.num_attention_heads must be a positive whole number, got 'twelve'"),
    (b'{"vision_config": {"num_attention_heads": 3}}',
     "num_attention_heads do not fit the weights in model.safetensors: .*vision.heads = 3 does "
     "not divide the width 64"),
    (b'{"text_config": {"hidden_act": "gelu"}}',
     "hidden_act \\['gelu', 'quick_gelu'\\] is not CLIP's"),
])
def test_bad_config_json_beside_safetensors_names_config_json(hf_folder, capsys, content, match):
    (hf_folder / "config.json").write_bytes(content)
    line = cli_error(capsys, ["info", hf_folder])
    assert "config.json" in line and re.search(match, line), line
    assert "corrupt safetensors" not in line
    assert "fix" in line or "supported" in line or "divisor" in line, line


# --------------------------------------------------------------------------- YAML configs

# ten levels of ten aliases: l9 stands for 10^9 strings
LAUGHS = 'l0: &l0 ["lol"]\n' + "".join(
    f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 10))


def test_billion_laughs_yaml_is_refused_in_every_yaml_read(tmp_path):
    """10 levels of 10 aliases (10^9 strings once expanded) in a few hundred bytes: the engine
    config, a BASE of it, a command-line value and a prompts file are all refused at the
    first alias, with a short message, inside a 1.5 GiB / 60 s bound."""
    assert len(LAUGHS) < 600
    (tmp_path / "laughs.yaml").write_text(LAUGHS + "TRAIN: {BETAS: *l9}\n")
    (tmp_path / "child.yaml").write_text("BASE: [laughs.yaml]\n")
    (tmp_path / "prompts.yaml").write_text(LAUGHS + "body: *l9\n")
    done = run_limited(f"""
        from claver.cli import main
        from claver.engine.config import load_config
        from claver.prompts.fewshot import load_prompt_file
        for argv in (["train", "-c", {str(tmp_path / "laughs.yaml")!r}],
                     ["data", "check", "-c", {str(tmp_path / "child.yaml")!r}]):
            print("exit", main(argv), flush=True)
        for call in (lambda: load_config(None, ["TRAIN.BETAS", "[&a [1, 2], *a, *a]"]),
                     lambda: load_prompt_file({str(tmp_path / "prompts.yaml")!r})):
            try:
                call()
            except ValueError as e:
                print("refused:", e)
        """, memory_mb=1536, seconds=60)
    assert not getattr(done, "timed_out", False) and done.returncode == 0, describe(done)
    assert done.stdout.count("exit 2") == 2 and done.stdout.count("refused:") == 2
    lines = done.stderr.strip().splitlines() + [
        line for line in done.stdout.splitlines() if line.startswith("refused:")]
    assert len(lines) == 4 and "Traceback" not in done.stderr, describe(done)
    for line, name in zip(lines, ("laughs.yaml, line 2", "laughs.yaml, line 2", "command line",
                                  "prompts.yaml, line 2"), strict=True):
        assert name in line and "YAML alias *" in line and "not allowed" in line, line
        assert len(line) < 600, line


@pytest.mark.parametrize("text,match", [
    ("BASE: 5\n", r"c.yaml: BASE must be a file name or a list of file names .*got 5; "
                  r"e.g. BASE: \[../base.yaml\]"),
    ("BASE: [[a.yaml]]\n", "BASE must be a file name"),
    ("SEED: " + "7" * 5000 + "\n", r"c.yaml, line 1: YAML holds an integer of more than 4300"),
    ("TRAIN: {LR: 1}\nOUTPUT: caf\xe9\n", r"c.yaml, line 2: config is not UTF-8 text \(byte "
                                          r"0xe9 at column 12\); save it as UTF-8"),
    ("SEED: !!python/object/apply:os.system ['touch x']\n",
     "c.yaml, line 1: invalid YAML: could not determine a constructor .*no Python objects"),
    ("TRAIN: {LR: 1\n", r"c.yaml, line 2: invalid YAML: .*fix the YAML syntax there"),
    ("DATA: {NUM_FRAMES: -3}\n", r"DATA.NUM_FRAMES must be a finite number from 1 to 256 "
                                 r"\(frames per clip\), got -3; e.g. DATA.NUM_FRAMES=8"),
    ("DATA: {INPUT_SIZE: 100000}\n", "DATA.INPUT_SIZE must be a finite number from 1 to 1024"),
    ("TRAIN: {EPOCHS: '" + "x" * 100000 + "'}\n", r"TRAIN.EPOCHS must be int, got 'xxx.*\.\.\."),
    ("[" * 100000, "YAML nested deeper than Python can read"),
])
def test_config_errors_are_one_clear_line(tmp_path, capsys, text, match):
    path = tmp_path / "c.yaml"
    path.write_bytes(text.encode("latin-1") if "\xe9" in text else text.encode())
    with pytest.raises(ConfigError, match=match):
        load_config(path)
    line = cli_error(capsys, ["train", "-c", path])
    assert "c.yaml" in line and re.search(match, line), line
    assert len(line) < 700, line


def test_base_chain_limits_keep_holding(tmp_path):
    (tmp_path / "a.yaml").write_text("BASE: [b.yaml]\n")
    (tmp_path / "b.yaml").write_text("BASE: a.yaml\n")
    with pytest.raises(ConfigError, match="BASE cycle"):
        load_config(tmp_path / "a.yaml")
    # no cycle, but a fan-out that would read 2^10 files
    for i in range(10):
        (tmp_path / f"f{i}.yaml").write_text(f"BASE: [f{i + 1}.yaml, f{i + 1}.yaml]\n")
    (tmp_path / "f10.yaml").write_text("SEED: 1\n")
    with pytest.raises(ConfigError, match="reads more than 32 files"):
        load_config(tmp_path / "f0.yaml")
    (tmp_path / "big.yaml").write_text("SEED: 1\n" + "#" * (2 << 20))
    with pytest.raises(ConfigError, match="big.yaml: config is larger than 1,048,576 bytes"):
        load_config(tmp_path / "big.yaml")


def test_command_line_values_are_read_the_same_way():
    with pytest.raises(ConfigError, match="command line 'SEED'.*more than 4300 digits"):
        load_config(None, ["SEED", "1" * 5000])
    with pytest.raises(ConfigError, match=r"TRAIN.BETAS must be float, got \[\[\[\[...\]\]\]\]"):
        load_config(None, ["TRAIN.BETAS", "[[[[[[1]]]]]]"])


# ------------------------------------------------------------------------ labels (CSV)

def test_unterminated_quote_in_labels_is_refused_naming_the_line(tmp_path, capsys):
    labels = tmp_path / "labels.csv"
    labels.write_text('id,name\n0,walking\n1,"pushing car, slowly\n2,running\n3,jumping\n')
    line = cli_error(capsys, ["predict", "v.mp4", "--labels-file", labels])
    assert "labels.csv, line 3: a quoted field runs from line 3 to line 5" in line, line
    assert "the quote opened on line 3 is not closed" in line and "Fix: close the quote" in line


def test_csv_field_over_the_csv_limit_is_one_line(tmp_path, capsys):
    labels = tmp_path / "labels.csv"
    labels.write_text('0,walking\n1,"' + "x" * (200 << 10) + '"\n')
    line = cli_error(capsys, ["predict", "v.mp4", "--labels-file", labels])
    assert "labels.csv, line 2: a field runs past 131,072 characters" in line, line
    assert "close the quote opened on line 2" in line and len(line) < 700


def test_labels_that_are_not_utf8_name_the_line(tmp_path, capsys):
    labels = tmp_path / "labels.csv"
    labels.write_bytes(b"0,walking\n1,caf\xe9\n")
    line = cli_error(capsys, ["predict", "v.mp4", "--labels-file", labels])
    assert "labels.csv, line 2: not UTF-8 text" in line and "save the file as UTF-8" in line


def test_atomic_writes_leave_no_temp_file_and_the_usual_mode(tmp_path):
    from claver.fileio import atomic_write_bytes, atomic_write_text

    old = os.umask(0o022)
    try:
        text = atomic_write_text(tmp_path / "a" / "list.txt", "x\r\ny\n")
        data = atomic_write_bytes(tmp_path / "b.npy", lambda f: f.write(b"\x00\x01"), fsync=True)
    finally:
        os.umask(old)
    assert text.read_bytes() == b"x\r\ny\n" and data.read_bytes() == b"\x00\x01"
    for path in (text, data):  # 0644 as open() gives, not mkstemp's 0600
        assert path.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b.npy", "list.txt"]
    with pytest.raises(ZeroDivisionError):
        atomic_write_bytes(tmp_path / "c.bin", lambda f: 1 / 0)
    assert not (tmp_path / "c.bin").exists() and len(list(tmp_path.iterdir())) == 2
