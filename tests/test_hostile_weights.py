"""Hostile checkpoint files (issue 11, items 1 and 3): TorchScript archives whose code would
run under ``torch.jit.load``, pickles naming ``os.system``/``eval`` or using ``INST`` and
``BUILD`` tricks, zip bombs, zero-stride tensors, storage records that lie about their size.

Every hostile file is built here. Each attack runs in a child under a memory and a time limit
(``tests/hostile.py``) through every entry point that is cheap to reach (the
``claver.weights.safe_load`` loader, ``claver.load_model``, ``claver info``) and the tests
assert the clear error, that no marker file appeared, and the bound (peak memory, time).
In-process cases at the end only poke the restricted pickle reader directly.
"""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import struct
import sys
import types
import warnings
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from claver.weights.safe_load import (
    UnsafeCheckpointError,
    load_pickle_checkpoint,
    load_torchscript_state_dict,
)
from hostile import describe, run_limited

MiB = 2**20

# --------------------------------------------------------------------------- zip writing


@dataclass
class Member:
    """One zip member as it lies in the archive: ``payload`` is compressed for deflate."""

    name: str
    payload: bytes
    method: int
    crc: int
    size: int  # declared uncompressed size


def stored(name: str, data: bytes) -> Member:
    return Member(name, data, zipfile.ZIP_STORED, zlib.crc32(data), len(data))


def deflated(name: str, data: bytes) -> Member:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return Member(name, c.compress(data) + c.flush(), zipfile.ZIP_DEFLATED, zlib.crc32(data),
                  len(data))


_ZEROS = bytes(16 * MiB)
_c = zlib.compressobj(9, zlib.DEFLATED, -15)
_ZERO_BLOCK = _c.compress(_ZEROS) + _c.flush(zlib.Z_FULL_FLUSH)  # byte-aligned: repeatable
_FINAL_BLOCK = zlib.compressobj(9, zlib.DEFLATED, -15).flush()


def bomb(name: str, head: bytes, zeros_mib: int) -> Member:
    """A deflated member of ``head`` + ``zeros_mib`` MiB of zeros, a few KB per GiB."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    start = c.compress(head) + c.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(head)
    for _ in range(zeros_mib // 16):
        crc = zlib.crc32(_ZEROS, crc)
    payload = start + _ZERO_BLOCK * (zeros_mib // 16) + _FINAL_BLOCK
    return Member(name, payload, zipfile.ZIP_DEFLATED, crc, len(head) + zeros_mib * MiB)


def write_zip(path: Path, members: list[Member]) -> Path:
    """Write the members as they are (sizes and CRCs as declared), like any zip tool."""
    out = io.BytesIO()
    central = []
    for m in members:
        offset = out.tell()
        name = m.name.encode()
        out.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, m.method, 0, 0x21, m.crc,
                              len(m.payload), m.size, len(name), 0) + name + m.payload)
        central.append(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, m.method, 0, 0x21,
                                   m.crc, len(m.payload), m.size, len(name), 0, 0, 0, 0, 0,
                                   offset) + name)
    start = out.tell()
    out.write(b"".join(central))
    out.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members),
                          out.tell() - start, start, 0))
    path.write_bytes(out.getvalue())
    return path


def members_of(path: Path) -> list[Member]:
    with zipfile.ZipFile(path) as zf:
        return [stored(info.filename, zf.read(info)) for info in zf.infolist()]


def replace_member(path: Path, out: Path, rel: str, member_for) -> Path:
    """Copy the zip at ``path`` to ``out`` with member ``<folder>/<rel>`` replaced by
    ``member_for(name, original_bytes)``."""
    members = members_of(path)
    for i, m in enumerate(members):
        if m.name.split("/", 1)[1] == rel:
            members[i] = member_for(m.name, m.payload)
    return write_zip(out, members)


# --------------------------------------------------------------------------- TorchScript files


@contextmanager
def fake_torch_namespace(*names: str):
    """Classes ``__torch__.<name>`` that ``pickle`` can name (for hand-written data.pkl)."""
    module = types.ModuleType("__torch__")
    classes = {}
    for name in names:
        classes[name] = type(name, (), {"__module__": "__torch__", "__qualname__": name})
        setattr(module, name, classes[name])
    saved = sys.modules.get("__torch__")
    sys.modules["__torch__"] = module
    try:
        yield classes
    finally:
        if saved is None:
            del sys.modules["__torch__"]
        else:
            sys.modules["__torch__"] = saved


class Storage:
    def __init__(self, key: str, numel: int, cls=torch.FloatStorage) -> None:
        self.key, self.numel, self.cls = key, numel, cls


class TensorRef:
    """Pickles as TorchScript's ``_rebuild_tensor_v2(storage, offset, size, stride, ...)``."""

    def __init__(self, storage: Storage, size: tuple, stride: tuple, offset: int = 0) -> None:
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, self.args


class _TorchScriptPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", obj.cls, obj.key, "cpu", obj.numel)
        return None


def script_object(cls: type, **state) -> object:
    obj = cls.__new__(cls)
    obj.__dict__.update(state)
    return obj


def ts_pickle(root) -> bytes:
    buf = io.BytesIO()
    _TorchScriptPickler(buf, protocol=2).dump(root)
    return buf.getvalue()


TINY_CODE = """class Tiny(Module):
  __parameters__ = ["weight", ]
  __buffers__ = ["big", ]
  weight : Tensor
  big : Tensor
  training : bool
  def forward(self: __torch__.Tiny,
    x: Tensor) -> Tensor:
    return x
"""


def ts_archive(path: Path, data_pkl: bytes | Member, storages: dict[str, bytes | Member],
               code: str = TINY_CODE) -> Path:
    """A TorchScript archive written by hand, laid out like torch.jit.save's."""
    folder = path.stem
    members = [data_pkl if isinstance(data_pkl, Member) else stored(f"{folder}/data.pkl",
                                                                      data_pkl)]
    members += [v if isinstance(v, Member) else stored(f"{folder}/data/{k}", v)
                for k, v in storages.items()]
    members += [deflated(f"{folder}/code/__torch__.py", code.encode()),
                stored(f"{folder}/constants.pkl", b"\x80\x02).")]
    members += [stored(f"{folder}/version", b"3\n"), stored(f"{folder}/byteorder", b"little")]
    return write_zip(path, members)


def tiny_root(weight: TensorRef, big: TensorRef | None = None) -> bytes:
    with fake_torch_namespace("Tiny") as ns:
        return ts_pickle(script_object(ns["Tiny"], weight=weight,
                                       big=big if big is not None else weight, training=False))


# --------------------------------------------------------------------------- child runs

ENTRY_POINTS = """
import json, resource, sys, time
from pathlib import Path
from claver.cli import main
from claver.models.factory import load_model
from claver.weights import safe_load

def attempt(fn, *args):
    start = time.perf_counter()
    try:
        fn(*args)
        outcome = "loaded"
    except ValueError as exc:
        outcome = f"{type(exc).__name__}: {exc}"
    return {"outcome": outcome, "seconds": round(time.perf_counter() - start, 2)}

def through_all(path, loader):
    out = {"load_model": attempt(load_model, path)}
    if loader:
        out["loader"] = attempt(getattr(safe_load, loader), path)
    start = time.perf_counter()
    out["cli"] = {"exit": main(["info", str(path)]),
                  "seconds": round(time.perf_counter() - start, 2)}
    return out

def report(results):
    from hostile import peak_rss_mib
    results["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(results))
"""


def run_entry_points(cases: dict[str, tuple[Path, str | None]], *, memory_mb: int = 2560,
                     seconds: float = 60.0) -> dict:
    """Load each file through the loader, ``load_model`` and ``claver info`` in one child."""
    calls = ", ".join(f"{name!r}: through_all({str(path)!r}, {loader!r})"
                      for name, (path, loader) in cases.items())
    done = run_limited(ENTRY_POINTS + f"report({{{calls}}})\n", memory_mb=memory_mb,
                       seconds=seconds)
    assert not getattr(done, "timed_out", False) and done.returncode == 0, describe(done)
    results = json.loads(done.stdout.strip().splitlines()[-1])
    errors = [line for line in done.stderr.splitlines() if line.startswith("claver info")]
    assert "Traceback" not in done.stderr and len(errors) == len(cases), describe(done)
    assert all(len(line) < 1500 for line in errors), errors
    return results


def assert_refused(results: dict, name: str, *needles: str, kind: str = "Unsafe") -> None:
    """Refused with ``kind``CheckpointError naming every needle, by the loader (when called)
    and load_model; ``claver info`` exits 2 with one line."""
    case = results[name]
    for entry in ("loader", "load_model"):
        if entry not in case:
            continue
        outcome = case[entry]["outcome"]
        assert outcome.startswith(f"{kind}CheckpointError"), (name, entry, outcome)
        for needle in needles:
            assert needle in outcome, (name, entry, needle, outcome)
    assert case["cli"]["exit"] == 2, (name, case)


# --------------------------------------------------------------------------- 1. TorchScript code

PAYLOADS = {
    # writes "AAAA" into the marker through a shared memory map: any file the user can write
    "marker": "t = torch.from_file(self.path, shared=True, size=4, dtype=torch.uint8)\n"
              "        self.flag = int(t.fill_(65).sum())",
    "endless": "for i in range(1 << 62):\n            self.flag += 1",
    "gigabytes": "self.flag = int(torch.ones(1 << 36, dtype=torch.uint8).sum())",
}


def setstate_archive(tmp_path: Path, payload: str, marker: Path) -> Path:
    """A scripted module whose TorchScript __setstate__ (run by torch.jit.load) is hostile."""
    source = f'''
import torch
from torch import nn
from typing import Tuple

class Evil(nn.Module):
    def __init__(self, path: str):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(3))
        self.path = path
        self.flag: int = 0

    def forward(self, x):
        return x * self.weight

    @torch.jit.export
    def __getstate__(self) -> Tuple[torch.Tensor, str, bool]:
        return (self.weight, self.path, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[torch.Tensor, str, bool]) -> None:
        self.weight = state[0]
        self.path = state[1]
        self.training = state[2]
        {PAYLOADS[payload]}
'''
    import importlib.util

    name = f"_claver_hostile_{payload}"
    module_file = tmp_path / f"{name}.py"  # TorchScript compiles classes from their source
    module_file.write_text(source)
    spec = importlib.util.spec_from_file_location(name, module_file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        outer = nn.Sequential(nn.Linear(3, 3), module.Evil(str(marker)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scripted = torch.jit.script(outer)
    finally:
        del sys.modules[name]
    path = tmp_path / f"setstate_{payload}.pt"
    scripted.save(str(path))
    return path


def test_torchscript_setstate_payloads_never_run(tmp_path):
    """torch.jit.load runs a module's __setstate__ from the archive's code/ (writing a file,
    looping forever, allocating 64 GiB); claver reads the same archives without running
    anything: they are refused, naming the module class, through every entry point, including
    a Hugging-Face-looking folder whose pytorch_model.bin is such an archive."""
    marker = tmp_path / "marker"
    files = {name: setstate_archive(tmp_path, name, marker) for name in PAYLOADS}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.load(str(files["marker"]))  # the oracle: the archive IS hostile
    assert marker.read_bytes() == b"AAAA"
    marker.unlink()
    folder = tmp_path / "hf-looking"
    folder.mkdir()
    (folder / "pytorch_model.bin").write_bytes(files["marker"].read_bytes())
    cases: dict = {name: (path, "load_torchscript_state_dict") for name, path in files.items()}
    cases["folder"] = (folder, None)
    results = run_entry_points(cases, seconds=60)
    for name in cases:
        assert_refused(results, name, "__torch__.", "Evil", "__setstate__",
                       "Nothing was executed")
    assert not marker.exists()
    assert results["peak_rss_mib"] < 600, results["peak_rss_mib"]


def _marker_payload_archives(tmp_path: Path, marker: Path) -> dict[str, Path]:
    class SystemCall:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    class EvalCall:
        def __reduce__(self):
            return eval, (f"open({str(marker)!r}, 'w')",)

    weight = TensorRef(Storage("0", 3), (3,), (1,))
    data = struct.pack("<3f", 1, 2, 3)
    with fake_torch_namespace("Tiny") as ns:
        system_pkl = ts_pickle(script_object(ns["Tiny"], weight=SystemCall(), big=weight,
                                             training=False))
        eval_pkl = ts_pickle(script_object(ns["Tiny"], weight=weight, big=weight,
                                           training=EvalCall()))
    inst_pkl = b"(S'touch " + str(marker).encode() + b"'\nios\nsystem\n."
    files = {
        "os.system": ts_archive(tmp_path / "ts_system.pt", system_pkl, {"0": data}),
        "builtins.eval": ts_archive(tmp_path / "ts_eval.pt", eval_pkl, {"0": data}),
        "INST os.system": ts_archive(tmp_path / "ts_inst.pt", inst_pkl, {"0": data}),
    }
    torch.save({"x": SystemCall()}, tmp_path / "zip_system.pt")
    files["torch.save os.system"] = tmp_path / "zip_system.pt"
    return files


def test_torchscript_pickle_payloads_are_refused_by_name(tmp_path):
    """data.pkl of a TorchScript archive calling os.system (REDUCE), eval, or os.system via
    the INST opcode: refused, naming the global, nothing run."""
    marker = tmp_path / "marker"
    files = _marker_payload_archives(tmp_path, marker)
    loaders = {name: "load_pickle_checkpoint" if name.startswith("torch.save") else
               "load_torchscript_state_dict" for name in files}
    results = run_entry_points({n: (p, loaders[n]) for n, p in files.items()})
    assert_refused(results, "os.system", "os.system", "Nothing in the file was executed")
    assert_refused(results, "builtins.eval", "builtins.eval")
    assert_refused(results, "INST os.system", "os.system")
    assert_refused(results, "torch.save os.system", "os.system", "NOT executed")
    assert not marker.exists()


# --------------------------------------------------------------------------- 3a. zip bombs


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> dict[str, Path]:
    """Each a few MB, inflating to 1 GiB: data.pkl and a storage record, in a torch.save zip
    and in a TorchScript archive."""
    tmp = tmp_path_factory.mktemp("bombs")
    plain = tmp / "plain.pt"
    torch.save({"visual.conv1.weight": torch.ones(3)}, plain)
    files = {
        "torch-zip data.pkl": replace_member(plain, tmp / "pkl_bomb.pt", "data.pkl",
                                             lambda n, b: bomb(n, b, 1024)),
        "torch-zip storage": replace_member(
            plain, tmp / "storage_bomb.pt", "data.pkl",
            lambda n, b: stored(n, b.replace(b"K\x03t", b"J" + struct.pack("<i", 2**28)
                                                           + b"t", 1))),
    }
    files["torch-zip storage"] = replace_member(
        files["torch-zip storage"], tmp / "storage_bomb2.pt", "data/0",
        lambda n, b: bomb(n, b"", 1024))
    pkl = tiny_root(TensorRef(Storage("0", 3), (3,), (1,)))
    folder = "ts_pkl_bomb"
    files["TorchScript data.pkl"] = ts_archive(
        tmp / f"{folder}.pt", bomb(f"{folder}/data.pkl", pkl, 1024),
        {"0": struct.pack("<3f", 1, 2, 3)})
    big = Storage("0", 2**28)
    files["TorchScript storage"] = ts_archive(
        tmp / "ts_storage_bomb.pt", tiny_root(TensorRef(big, (2**28,), (1,))),
        {"0": bomb("ts_storage_bomb/data/0", b"", 1024)})
    return files


def test_zip_bombs_are_refused_before_inflating(bombs):
    """A 2 MB file whose compressed data.pkl or storage record inflates to 1 GiB: refused from
    the declared sizes, before anything is inflated; peak memory stays near the interpreter's
    own and each entry point answers in well under a second."""
    for path in bombs.values():
        assert path.stat().st_size < 3 * MiB
    loaders = {name: "load_pickle_checkpoint" if name.startswith("torch-zip") else
               "load_torchscript_state_dict" for name in bombs}
    results = run_entry_points({n: (p, loaders[n]) for n, p in bombs.items()}, memory_mb=2048)
    for name in bombs:
        assert_refused(results, name, "zip bomb", "1,024 MiB")
        assert results[name]["loader"]["seconds"] < 5, results[name]
    assert results["peak_rss_mib"] < 600, results["peak_rss_mib"]


def test_member_inflating_past_its_declared_size_is_read_only_as_declared(tmp_path):
    """A header declaring the real data.pkl size over a stream that goes on for 1 GiB: only
    the declared bytes are ever inflated (the archive loads; nothing more is read)."""
    pkl = tiny_root(TensorRef(Storage("0", 3), (3,), (1,)))
    lying = bomb("liar/data.pkl", pkl, 1024)
    lying.size, lying.crc = len(pkl), zlib.crc32(pkl)
    path = ts_archive(tmp_path / "liar.pt", lying, {"0": struct.pack("<3f", 1, 2, 3)})
    done = run_limited(f"""
        from claver.weights.safe_load import load_torchscript_state_dict
        from hostile import peak_rss_mib
        state = load_torchscript_state_dict({str(path)!r})
        print(sorted(state), state["weight"].tolist(), peak_rss_mib())
        """, memory_mb=2048, seconds=30)
    assert done.returncode == 0, describe(done)
    assert "['big', 'weight'] [1.0, 2.0, 3.0]" in done.stdout, describe(done)
    assert int(done.stdout.split()[-1]) < 600, describe(done)


# --------------------------------------------------------------------------- 3b. tensor views


def test_zero_stride_tensors_are_refused_on_every_path(tmp_path):
    """A <2 KB file describing a 30000 x 30000 fp16 tensor over one element (stride 0), which
    the conversion to float32 would materialise as 3.6 GB: as a torch.save zip, a legacy
    torch.save stream and a TorchScript buffer; and a tensor whose overlapping strides make
    it larger than its storage. Each refused naming the key, the shape and the storage size,
    with nothing allocated (under a 2 GiB limit, materialising any would fail)."""
    huge = torch.ones(1, dtype=torch.float16).expand(30000, 30000)  # .float() -> 3.6 GB
    torch.save({"visual.conv1.weight": huge}, tmp_path / "zip.pt")
    torch.save({"visual.conv1.weight": huge}, tmp_path / "legacy.pt",
               _use_new_zipfile_serialization=False)
    overlap = torch.arange(100.0).as_strided((50, 50), (1, 1))
    torch.save({"model": {"visual.proj": overlap}}, tmp_path / "overlap.pt")

    class Expanded(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(2, 2)
            self.register_buffer("mask", torch.zeros(1).expand(30000, 30000))

        def forward(self, x):
            return self.proj(x)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(Expanded()).save(str(tmp_path / "script.pt"))
    files = {"zip": "load_pickle_checkpoint", "legacy": "load_pickle_checkpoint",
             "overlap": "load_pickle_checkpoint", "script": "load_torchscript_state_dict"}
    for name in ("zip", "legacy"):
        assert (tmp_path / f"{name}.pt").stat().st_size < 2000
    results = run_entry_points({n: (tmp_path / f"{n}.pt", f) for n, f in files.items()},
                               memory_mb=2048)
    for name in ("zip", "legacy"):
        assert_refused(results, name, "visual.conv1.weight", "(30000, 30000)", "2 bytes",
                       "strides (0, 0)")
    assert_refused(results, "overlap", "model.visual.proj", "(50, 50)", "400 bytes")
    assert_refused(results, "script", "tensor mask", "(30000, 30000)", "4 bytes")
    assert results["peak_rss_mib"] < 600, results["peak_rss_mib"]


def test_storage_records_that_lie_about_their_size(tmp_path):
    """The pickle declares more elements than the storage record holds (PyTorch would read
    past the record), or a legacy stream declares 2**40 elements (PyTorch would allocate
    them before reading): refused before PyTorch sees the file."""
    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.ones(64)}, plain)
    short = replace_member(plain, tmp_path / "short.pt", "data/0", lambda n, b: stored(n, b[:8]))

    class LegacyWriter(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Storage):
                return ("storage", torch.FloatStorage, "k", "cpu", 2**40, None)
            return None

    buf = io.BytesIO()
    for item in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001,
                                               "little_endian": True}):
        pickle.dump(item, buf, protocol=2)
    LegacyWriter(buf, protocol=2).dump({"w": TensorRef(Storage("k", 2**40), (2**40,), (1,))})
    pickle.dump(["k"], buf, protocol=2)
    buf.write(struct.pack("<q", 2**40) + bytes(16))
    (tmp_path / "legacy.pt").write_bytes(buf.getvalue())
    ts = ts_archive(tmp_path / "ts_short.pt", tiny_root(TensorRef(Storage("0", 2**20),
                                                                  (2**20,), (1,))),
                    {"0": bytes(16)})
    done = run_limited(f"""
        from claver.weights.safe_load import load_pickle_checkpoint, load_torchscript_state_dict
        for fn, path in ((load_pickle_checkpoint, {str(short)!r}),
                         (load_pickle_checkpoint, {str(tmp_path / 'legacy.pt')!r}),
                         (load_torchscript_state_dict, {str(ts)!r})):
            try:
                fn(path)
                print("loaded")
            except ValueError as e:
                print(type(e).__name__, e)
        """, memory_mb=2048, seconds=30)
    assert done.returncode == 0, describe(done)
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 3, describe(done)
    assert lines[0].startswith("CheckpointReadError") and "holds 8 bytes" in lines[0]
    assert "256 bytes" in lines[0]
    assert lines[1].startswith("CheckpointReadError") and "declares" in lines[1]
    assert lines[2].startswith("CheckpointReadError") and "holds 16 bytes" in lines[2]


def colliding_dict(n: int) -> bytes:
    """Pickle opcodes building a dict of ``n`` integer keys that all hash alike (written
    directly: building it in Python would itself take minutes)."""
    items = []
    for i in range(1, n + 1):
        key = (2**61 - 1) * i
        raw = key.to_bytes((key.bit_length() + 8) // 8, "little", signed=True)
        items.append(b"\x8a" + bytes([len(raw)]) + raw + b"K\x00")
    return b"}(" + b"".join(items) + b"u"


def test_colliding_dict_keys_cannot_make_loading_quadratic(tmp_path):
    """100,000 integer keys that all hash alike would take many minutes to insert into a
    dict; such keys are refused at once, in a torch.save zip and in a TorchScript archive."""
    table = colliding_dict(100_000)
    plain = tmp_path / "plain.pt"
    torch.save({}, plain)
    path = replace_member(plain, tmp_path / "collide.pt", "data.pkl",
                          lambda n, b: stored(n, b"\x80\x02" + table + b"."))
    sentinel = "SENTINEL-TABLE"
    with fake_torch_namespace("Tiny") as ns:
        pkl = ts_pickle(script_object(ns["Tiny"], weight=TensorRef(Storage("0", 3), (3,),
                                                                   (1,)),
                                      big=None, training=False, table=sentinel))
    spliced = pkl.replace(b"X" + struct.pack("<I", len(sentinel)) + sentinel.encode(), table)
    assert spliced != pkl
    ts = ts_archive(tmp_path / "ts_collide.pt", spliced, {"0": bytes(12)})
    done = run_limited(f"""
        import time
        from claver.weights.safe_load import load_pickle_checkpoint, load_torchscript_state_dict
        for fn, path in ((load_pickle_checkpoint, {str(path)!r}),
                         (load_torchscript_state_dict, {str(ts)!r})):
            start = time.perf_counter()
            try:
                fn(path)
                print("loaded")
            except ValueError as e:
                print(type(e).__name__, round(time.perf_counter() - start, 1), e)
        """, seconds=30)
    assert not getattr(done, "timed_out", False), describe(done)
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2 and all(ln.startswith("UnsafeCheckpointError") for ln in lines), (
        describe(done))
    assert all("beyond 2**61" in ln and float(ln.split()[1]) < 5 for ln in lines), lines


# --------------------------------------------------------------------------- in-process checks


class SetTrick(TensorRef):
    """A tensor followed by BUILD with (storage, 0, (30000, 30000), (0, 0)): PyTorch's own
    weights_only unpickler answers that with tensor.set_(...), a 3.4 GiB zero-stride view."""

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, self.args,
                (self.args[0], 0, (30000, 30000), (0, 0)))


def _set_trick_pickle() -> bytes:
    return tiny_root(SetTrick(Storage("0", 3), (3,), (1,)))


@pytest.mark.parametrize(("pkl", "named"), [
    (_set_trick_pickle, "BUILD on Tensor"),
    (lambda: b"\x80\x02c__torch__\nTiny\n)\x81)R.", "<call of a ScriptObject>"),
    (lambda: b"\x80\x02U\x06moduleQ.", "<persistent id>"),
    (lambda: b"\x80\x02\x82\x01.", "<copyreg extension code 1>"),
    (lambda: b"\x80\x02ctorch._utils\n_rebuild_qtensor\n.", "_rebuild_qtensor"),
    (lambda: b"\x80\x02cbuiltins\ngetattr\n.", "builtins.getattr"),
], ids=["build-set_", "reduce-on-record", "persistent-id", "ext", "qtensor", "getattr"])
def test_torchscript_pickle_tricks_are_refused(tmp_path, pkl, named):
    """Tricks inside a TorchScript data.pkl beyond naming a forbidden global: each refused
    with UnsafeCheckpointError naming it (nothing but the reader's own records is built)."""
    path = ts_archive(tmp_path / "trick.pt", pkl(), {"0": bytes(12)})
    with pytest.raises(UnsafeCheckpointError) as info:
        load_torchscript_state_dict(path)
    assert named in str(info.value) and "Nothing in the file was executed" in str(info.value)


def test_torchscript_cyclic_module_tree_is_refused(tmp_path):
    with fake_torch_namespace("Tiny") as ns:
        root = script_object(ns["Tiny"], weight=TensorRef(Storage("0", 3), (3,), (1,)),
                             big=None, training=False)
        root.__dict__["child"] = root
        pkl = ts_pickle(root)
    path = ts_archive(tmp_path / "cycle.pt", pkl, {"0": bytes(12)})
    with pytest.raises(UnsafeCheckpointError, match="cyclic"):
        load_torchscript_state_dict(path)


def test_compressed_but_reasonable_archives_still_load(tmp_path):
    """A torch.save zip re-packed with deflate (as a zip tool would) loads as before."""
    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.arange(6.0)}, plain)
    repacked = write_zip(tmp_path / "repacked.pt",
                         [deflated(m.name, m.payload) for m in members_of(plain)])
    assert torch.equal(load_pickle_checkpoint(repacked)["w"], torch.arange(6.0))


def test_views_within_their_storage_still_load(tmp_path):
    """Expanded, transposed and sliced tensors that need no more bytes than their storage
    holds (Hugging Face's ``position_ids`` is ``arange(77).expand(1, -1)``) load unchanged."""
    base = torch.arange(12.0).view(3, 4)
    state = {"position_ids": torch.arange(77).expand(1, -1), "t": base.t(),
             "row": base[1], "every_other": base.view(-1)[::2]}
    torch.save(state, tmp_path / "views.pt")
    loaded = load_pickle_checkpoint(tmp_path / "views.pt")
    for key, value in state.items():
        assert torch.equal(loaded[key], value) and loaded[key].stride() == value.stride(), key
