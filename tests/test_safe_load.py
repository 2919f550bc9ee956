"""Safe checkpoint loading: malicious pickles are refused unexecuted, real formats load."""

from __future__ import annotations

import argparse
import builtins
import os
import struct
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from claver.weights.safe_load import (
    CheckpointReadError,
    ConfigNode,
    UnsafeCheckpointError,
    detect_container,
    load_pickle_checkpoint,
    load_torchscript_state_dict,
)


class _SystemPayload:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _EvalPayload:
    def __init__(self, source: str) -> None:
        self.source = source

    def __reduce__(self):
        return (builtins.eval, (self.source,))


class _ExecPayload:
    def __init__(self, source: str) -> None:
        self.source = source

    def __reduce__(self):
        return (builtins.exec, (self.source,))


def _save(obj, path: Path, legacy: bool = False, **kwargs) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy, **kwargs)
    return path


# ---------------------------------------------------------------------------- malicious files


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_os_system_payload_is_refused_and_not_executed(tmp_path: Path, legacy: bool):
    marker = tmp_path / "pwned"
    path = _save({"model": {"w": torch.ones(2)}, "x": _SystemPayload(f"touch {marker}")},
                 tmp_path / "evil.pt", legacy=legacy)
    with pytest.raises(UnsafeCheckpointError) as info:
        load_pickle_checkpoint(path)
    message = str(info.value)
    assert str(path) in message
    assert "system" in message and "os.system" in message
    assert "NOT executed" in message
    assert "trust_remote_pickle=True" in message
    assert isinstance(info.value, ValueError)
    assert any(g.endswith(".system") for g in info.value.globals)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("payload_cls", "global_name"),
    [(_EvalPayload, "builtins.eval"), (_ExecPayload, "builtins.exec")],
)
def test_eval_exec_payloads_are_refused(tmp_path: Path, payload_cls, global_name: str):
    marker = tmp_path / "pwned"
    source = f"open({str(marker)!r}, 'w').close()"
    path = _save([payload_cls(source)], tmp_path / "evil.pt")
    with pytest.raises(UnsafeCheckpointError, match=global_name.replace(".", r"\.")) as info:
        load_pickle_checkpoint(path)
    assert str(path) in str(info.value)
    assert info.value.globals == [global_name]
    assert not marker.exists()


def test_protocol4_stack_global_payload_is_named(tmp_path: Path):
    marker = tmp_path / "pwned"
    path = _save({"x": _SystemPayload(f"touch {marker}")}, tmp_path / "evil4.pt",
                 pickle_protocol=4)
    with pytest.raises(UnsafeCheckpointError, match="system"):
        load_pickle_checkpoint(path)
    assert not marker.exists()


def test_trust_remote_pickle_runs_code_when_asked(tmp_path: Path):
    marker = tmp_path / "ran"
    path = _save({"x": _SystemPayload(f"touch {marker}")}, tmp_path / "trusted.pt")
    out = load_pickle_checkpoint(path, trust_remote_pickle=True)
    assert out["x"] == 0  # os.system's return value
    assert marker.exists()


# ---------------------------------------------------------------------------- CLAVER-style files


def _fake_yacs_module():
    yacs = types.ModuleType("yacs")
    config = types.ModuleType("yacs.config")

    class CfgNode(dict):  # mimics yacs: flags live in __dict__, keys as attributes
        IMMUTABLE = "__immutable__"

        def __init__(self, init_dict=None, key_list=None, new_allowed=False):
            super().__init__(init_dict or {})
            self.__dict__["__immutable__"] = False
            self.__dict__["__deprecated_keys__"] = set()
            self.__dict__["__renamed_keys__"] = {}
            self.__dict__["__new_allowed__"] = new_allowed

        def __getattr__(self, name):
            if name in self:
                return self[name]
            raise AttributeError(name)

    CfgNode.__module__ = "yacs.config"
    CfgNode.__qualname__ = "CfgNode"
    config.CfgNode = CfgNode
    yacs.config = config
    return yacs, config


@pytest.fixture
def claver_checkpoint(tmp_path: Path, request) -> Path:
    yacs, config = _fake_yacs_module()
    sys.modules["yacs"], sys.modules["yacs.config"] = yacs, config
    try:
        node = config.CfgNode
        cfg = node({
            "MODEL": node({"ARCH": "ViT-B/16", "DROP_PATH_RATE": 0.1}),
            "DATA": node({"NUM_FRAMES": 8, "INPUT_SIZE": 224, "MEAN": [123.675, 116.28]}),
            "TRAIN": node({"LR": 8e-6, "BETAS": (0.9, 0.98)}),
        })
        linear = nn.Linear(3, 2)
        optimizer = torch.optim.AdamW(linear.parameters(), lr=1e-3, betas=(0.9, 0.98))
        linear(torch.ones(1, 3)).sum().backward()
        optimizer.step()
        checkpoint = {
            "model": linear.state_dict(),
            "config": cfg,
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": {"t_initial": 30, "lr_min": 1e-8, "base_values": [8e-6]},
            "max_accuracy": np.float64(81.25),
            "epoch": 29,
            "args": argparse.Namespace(config="configs/k400.yaml", local_rank=0),
        }
        path = _save(checkpoint, tmp_path / "claver.pth", legacy=request.param)
    finally:
        del sys.modules["yacs"], sys.modules["yacs.config"]
    return path


@pytest.mark.parametrize("claver_checkpoint", [False, True], ids=["zip", "legacy"],
                         indirect=True)
def test_fake_claver_checkpoint_loads_without_yacs(claver_checkpoint: Path):
    assert "yacs" not in sys.modules
    ckpt = load_pickle_checkpoint(claver_checkpoint)
    cfg = ckpt["config"]
    assert isinstance(cfg, ConfigNode) and isinstance(cfg.MODEL, ConfigNode)
    assert cfg.MODEL.ARCH == "ViT-B/16"
    assert cfg["DATA"]["NUM_FRAMES"] == 8
    assert cfg.DATA.MEAN == [123.675, 116.28]
    assert cfg.TRAIN.BETAS == (0.9, 0.98)
    assert cfg.__dict__["__immutable__"] is False
    assert cfg.to_dict()["MODEL"] == {"ARCH": "ViT-B/16", "DROP_PATH_RATE": 0.1}
    with pytest.raises(AttributeError):
        _ = cfg.NOT_A_KEY
    assert set(ckpt["model"]) == {"weight", "bias"}
    assert ckpt["model"]["weight"].shape == (2, 3)
    assert float(ckpt["max_accuracy"]) == 81.25
    assert ckpt["epoch"] == 29
    assert ckpt["args"].config == "configs/k400.yaml"
    assert ckpt["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.98)
    assert "yacs" not in sys.modules


@pytest.mark.parametrize("claver_checkpoint", [False], indirect=True)
def test_fake_claver_checkpoint_trusted_path_also_gives_config_node(claver_checkpoint: Path):
    ckpt = load_pickle_checkpoint(claver_checkpoint, trust_remote_pickle=True)
    assert isinstance(ckpt["config"], ConfigNode)
    assert ckpt["config"].MODEL.ARCH == "ViT-B/16"


def test_allow_list_is_not_left_registered(tmp_path: Path):
    before = set(torch.serialization.get_safe_globals())
    load_pickle_checkpoint(_save({"a": argparse.Namespace(x=1)}, tmp_path / "ns.pt"))
    assert set(torch.serialization.get_safe_globals()) == before


def test_plain_state_dict_round_trip_and_map_location(tmp_path: Path):
    state = {"a": torch.randn(4, 5), "b": torch.arange(3)}
    path = _save(state, tmp_path / "sd.pt")
    loaded = load_pickle_checkpoint(path, map_location=torch.device("cpu"))
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)


# ---------------------------------------------------------------------------- TorchScript


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 3)
        self.scale = nn.Parameter(torch.tensor(2.5))
        self.register_buffer("running", torch.arange(5.0))
        self.register_buffer("input_resolution", torch.tensor(224))
        self.register_buffer("context_length", torch.tensor(77))
        self.register_buffer("vocab_size", torch.tensor(49408))
        self.note: int = 7  # plain TorchScript attribute, not part of the state dict

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x) * self.scale + self.note


@pytest.fixture
def torchscript_file(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    module = _Tiny()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script deprecation
        scripted = torch.jit.script(module)
    path = tmp_path / "ViT-tiny.pt"
    scripted.save(str(path))
    return path, module.state_dict()


def test_torchscript_state_dict_matches_module(torchscript_file):
    path, expected = torchscript_file
    state = load_torchscript_state_dict(path)
    dropped = {"input_resolution", "context_length", "vocab_size"}
    assert set(state) == set(expected) - dropped
    for key, value in state.items():
        assert torch.equal(value, expected[key]), key


# ------------------------------------------------ TorchScript: parity with torch.jit.load


class _Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, 2)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(),
                                 nn.Linear(2 * width, width, bias=False))
        self.register_buffer("scratch", torch.ones(3), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x, x, x, need_weights=False)[0]
        return x + self.mlp(self.ln_1(x))


class _Visual(nn.Module):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 2, stride=2, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(width))
        self.ln_pre = nn.LayerNorm(width)
        self.resblocks = nn.ModuleList([_Block(width) for _ in range(2)])
        self.proj = nn.Parameter(torch.randn(width, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x).flatten(2).permute(2, 0, 1) + self.class_embedding
        x = self.ln_pre(x)
        for block in self.resblocks:
            x = block(x)
        return x[0] @ self.proj


class _ClipLike(nn.Module):
    """Nested submodules, parameters, buffers (one non-persistent, one transposed, one int),
    a tensor shared by two modules, a parameter of another dtype and scalar attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.visual = _Visual()
        self.heads = nn.ModuleDict({"a": nn.Linear(5, 4), "b": nn.Linear(5, 4)})
        self.heads["b"].weight = self.heads["a"].weight
        self.logit_scale = nn.Parameter(torch.tensor(4.6).half())
        self.register_buffer("table", torch.arange(12.0).view(3, 4).t())
        self.register_buffer("input_resolution", torch.tensor(4))
        self.scale: float = 2.0
        self.context_length: int = 77

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.visual(x)
        return (self.heads["a"](y) + self.heads["b"](y)) * self.scale + self.table[0, 0]


def _assert_same_state(ours: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> None:
    assert list(ours) == list(ref)
    for key, expected in ref.items():
        got = ours[key]
        assert type(got) is torch.Tensor and not got.requires_grad, key
        assert (got.dtype, got.shape, got.stride(), got.storage_offset()) == (
            expected.dtype, expected.shape, expected.stride(), expected.storage_offset()), key
        assert torch.equal(got, expected), key
    for a in ref:  # the same tensors share memory
        for b in ref:
            assert (ref[a].data_ptr() == ref[b].data_ptr()) == (
                ours[a].data_ptr() == ours[b].data_ptr()), (a, b)


@pytest.mark.parametrize("how", ["script", "trace"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_torchscript_reader_matches_jit_load(tmp_path: Path, how: str, dtype):
    from claver.weights.torchscript import read_torchscript_state_dict

    torch.manual_seed(0)
    module = _ClipLike().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation and tracer warnings of torch.jit
        if how == "script":
            compiled = torch.jit.script(module)
        else:
            compiled = torch.jit.trace(module, torch.randn(1, 3, 4, 4))
        if dtype == torch.float16:
            compiled.visual.half()
        path = tmp_path / f"{how}.pt"
        compiled.save(str(path))
        ref = torch.jit.load(str(path)).state_dict()  # the oracle, on a file made here
    assert "visual.resblocks.1.scratch" in ref and "heads.b.weight" in ref
    assert {v.dtype for v in ref.values()} >= {torch.float16, torch.float32, torch.int64}
    _assert_same_state(read_torchscript_state_dict(path), ref)
    state = load_torchscript_state_dict(path)  # the public loader drops OpenAI's extras
    assert "input_resolution" not in state and list(state) == [
        k for k in ref if k != "input_resolution"]


def test_torchscript_reader_matches_jit_load_on_openai_layout(oracle_clip_model, tmp_path):
    """OpenAI's own model code, traced the way their archives were made (fp16 weights, the
    three int entries as buffers)."""
    from claver.weights.torchscript import read_torchscript_state_dict

    torch.manual_seed(1)
    ref_model = oracle_clip_model.CLIP(64, 32, 2, 64, 8, 77, 49408, 64, 1, 2).eval()
    for name, value in [("input_resolution", 32), ("context_length", 77),
                        ("vocab_size", 49408)]:
        ref_model.__dict__.pop(name, None)
        ref_model.register_buffer(name, torch.tensor(value))
    text = torch.randint(0, 49408, (1, 77))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(ref_model, (torch.randn(1, 3, 32, 32), text))
        traced.visual.half()  # OpenAI's archives hold fp16 weights (convert_weights)
        traced.transformer.half()
        path = tmp_path / "ViT-tiny.pt"
        traced.save(str(path))
        ref = torch.jit.load(str(path)).state_dict()
    assert ref["visual.conv1.weight"].dtype == torch.float16
    assert "visual.transformer.resblocks.1.attn.in_proj_weight" in ref
    _assert_same_state(read_torchscript_state_dict(path), ref)


def test_pickle_loader_points_torchscript_to_its_loader(torchscript_file):
    path, _ = torchscript_file
    with pytest.raises(CheckpointReadError, match="load_torchscript_state_dict"):
        load_pickle_checkpoint(path)


def test_torchscript_loader_rejects_pickle_checkpoint(tmp_path: Path):
    path = _save({"w": torch.ones(1)}, tmp_path / "sd.pt")
    with pytest.raises(CheckpointReadError, match="load_pickle_checkpoint"):
        load_torchscript_state_dict(path)


# ---------------------------------------------------------------------------- detection


def _write_safetensors(path: Path) -> Path:
    from safetensors.torch import save_file

    save_file({"w": torch.ones(2, 2)}, str(path))
    return path


def test_detect_container_kinds(tmp_path: Path, torchscript_file):
    ts_path, _ = torchscript_file
    assert detect_container(ts_path) == "torchscript"
    assert detect_container(_save({"w": torch.ones(1)}, tmp_path / "z.pt")) == "torch-zip"
    assert detect_container(_save({"w": torch.ones(1)}, tmp_path / "l.pt", legacy=True)) == (
        "torch-legacy"
    )
    assert detect_container(_write_safetensors(tmp_path / "w.safetensors")) == "safetensors"
    rnd = tmp_path / "random.bin"
    rnd.write_bytes(np.random.default_rng(0).bytes(4096))
    assert detect_container(rnd) == "unknown"
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    assert detect_container(empty) == "unknown"
    with pytest.raises(FileNotFoundError):
        detect_container(tmp_path / "missing.pt")


def test_detection_uses_content_not_extension(tmp_path: Path):
    path = _write_safetensors(tmp_path / "weights.pt")
    assert detect_container(path) == "safetensors"
    with pytest.raises(CheckpointReadError, match="safetensors"):
        load_pickle_checkpoint(path)


# ---------------------------------------------------------------------------- broken files


def _broken_files(tmp_path: Path) -> dict[str, Path]:
    full_zip = _save({"w": torch.randn(64, 64)}, tmp_path / "full.pt").read_bytes()
    full_legacy = _save({"w": torch.randn(64, 64)}, tmp_path / "full_l.pt", legacy=True)
    legacy_bytes = full_legacy.read_bytes()
    files = {
        "zero-byte": b"",
        "random": np.random.default_rng(1).bytes(1000),
        "text": b"<html>404 Not Found</html>\n",
        "truncated-zip": full_zip[: len(full_zip) // 2],
        "truncated-legacy": legacy_bytes[:40],
        "truncated-legacy-data": legacy_bytes[: len(legacy_bytes) * 9 // 10],
        "git-lfs-pointer": b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\n",
        "plain-pickle": b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01.",
        "fake-safetensors-header": struct.pack("<Q", 10**9) + b"{}",
    }
    out = {}
    for name, data in files.items():
        path = tmp_path / f"{name}.pt"
        path.write_bytes(data)
        out[name] = path
    return out


def test_broken_files_raise_checkpoint_read_error(tmp_path: Path):
    for name, path in _broken_files(tmp_path).items():
        with pytest.raises(CheckpointReadError) as info:
            load_pickle_checkpoint(path)
        message = str(info.value)
        assert str(path) in message, name
        assert "bytes" in message, name
        assert info.value.path == path
        assert isinstance(info.value, ValueError)
        with pytest.raises(CheckpointReadError, match="Cannot read"):
            load_torchscript_state_dict(path)


def test_zero_byte_message_says_empty(tmp_path: Path):
    path = tmp_path / "empty.pth"
    path.write_bytes(b"")
    with pytest.raises(CheckpointReadError, match="0 bytes"):
        load_pickle_checkpoint(path)


def test_corrupt_data_inside_valid_zip(tmp_path: Path):
    import zipfile

    good = _save({"w": torch.ones(3)}, tmp_path / "good.pt")
    bad = tmp_path / "bad.pt"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("/data.pkl"):
                data = data[: len(data) // 2]
            dst.writestr(item, data)
    with pytest.raises(CheckpointReadError, match="bad.pt"):
        load_pickle_checkpoint(bad)


def test_missing_file(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        load_pickle_checkpoint(tmp_path / "nope.pt")
