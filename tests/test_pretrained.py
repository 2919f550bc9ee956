"""Named weights: the table, verified and unverified downloads (a local HTTP server), loading
by name, and ``claver models`` / ``info`` / ``convert``. Nothing touches the network."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

import claver
from claver import pretrained
from claver.cli import main
from claver.models.factory import load_model, save_model
from claver.pretrained import PRETRAINED, fetch, get_pretrained, load_pretrained
from claver.weights.download import DownloadError, openai_sha256
from claver.weights.formats import read_checkpoint


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No downloads into the real cache, no offline setting leaking in, no waiting."""
    monkeypatch.setenv("CLAVER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CLAVER_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("claver.weights.download._sleep", lambda s: None)


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture()
def server(tmp_path) -> Iterator[tuple[str, Path, list[str]]]:
    """(base URL, served folder, requested paths) of a static server on 127.0.0.1."""
    root = tmp_path / "www"
    root.mkdir()
    seen: list[str] = []

    class Handler(_Quiet):
        def do_GET(self):
            seen.append(urllib.parse.unquote(self.path))
            super().do_GET()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler,
                                                                     directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root, seen
    httpd.shutdown()
    httpd.server_close()


def _tiny_mmaction2(path: Path) -> torch.nn.Module:
    """A tiny ActionCLIP Transf model saved in mmaction2's layout (clip. / adapter.)."""
    torch.manual_seed(0)
    m = claver.create_model("actionclip-tiny", fusion="Transf", num_frames=4).eval()
    sd = {("adapter." + k[7:] if k.startswith("fusion.") else "clip." + k): v
          for k, v in m.state_dict().items()}
    torch.save({"meta": {"epoch": 3}, "state_dict": sd}, path)
    return m


def _entry(name: str, base: str, files: list[str], sha256: str | None, **kw):
    return pretrained.PretrainedWeights(
        name=name, architecture=kw.pop("architecture", "actionclip-tiny"),
        options=kw.pop("options", (("fusion", "Transf"), ("num_frames", 4))),
        urls=tuple(f"{base}/{f}" for f in files), sha256=sha256, filename=f"{name}.pth",
        short_side=kw.pop("short_side", 40), license="test", source="test", **kw)


# ---------------------------------------------------------------------------------- table

def test_table_entries_are_complete_and_consistent():
    names = [w.name for w in pretrained.list_pretrained()]
    assert names[:4] == ["openai-vit-b32", "openai-vit-b16", "openai-vit-l14",
                         "openai-vit-l14-336"]
    assert sum(n.startswith("actionclip-") for n in names) == 6
    for w in PRETRAINED.values():
        cfg = w.config  # builds: names and options are valid
        assert all(u.startswith("https://") for u in w.urls) and w.license and w.source
        assert w.short_side >= cfg.vision.image_size
        if w.name.startswith("openai-"):
            assert w.verified and all(openai_sha256(u) == w.sha256 for u in w.urls)
            assert cfg.fusion == "meanP" and w.urls[1].startswith(
                "https://openaipublic.blob.core.windows.net/clip/models/")
        else:
            assert w.sha256 is None and not w.verified and w.short_side == 256
            assert w.urls[0].startswith("https://download.openmmlab.com/mmaction/v1.0/"
                                        "projects/actionclip/")
            assert cfg.fusion == "Transf" and f"{cfg.num_frames}f" in w.name
            if w.sha256_prefix:
                assert w.urls[0].endswith(f"-{w.sha256_prefix}.pth")
    assert PRETRAINED["openai-vit-l14-336"].config.vision.image_size == 336
    with pytest.raises(ValueError, match="openai-vit-b32"):
        get_pretrained("vit-b32")


def test_models_list_prints_every_field(capsys):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    for w in PRETRAINED.values():
        assert w.name in out and w.urls[0] in out and w.license in out
    assert "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af" in out
    assert "none published: downloads need --allow-unverified" in out
    assert "short side 256, centre crop 224, CLIP mean" in out
    assert "claver-vit-b16" in out  # architecture names follow
    assert main(["models", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {w["name"] for w in data["weights"]} == set(PRETRAINED)
    assert "actionclip-tiny" in data["architectures"]


# ------------------------------------------------------------------------------ downloads

def test_verified_download_falls_back_to_the_mirror(server, tmp_path):
    base, root, seen = server
    payload = b"weights" * 1000
    (root / "mirror").mkdir()
    (root / "mirror" / "w.pth").write_bytes(payload)
    entry = _entry("w", base, ["missing/w.pth", "mirror/w.pth"],
                   hashlib.sha256(payload).hexdigest())
    path = fetch(entry, progress=False)
    assert path == tmp_path / "cache" / "w.pth" and path.read_bytes() == payload
    assert seen == ["/missing/w.pth", "/mirror/w.pth"]
    assert fetch(entry, progress=False) == path and len(seen) == 2  # cached: no request
    assert pretrained.cache_status(entry) == "cached (verified)"


def test_verified_download_refuses_wrong_bytes(server):
    base, root, _ = server
    (root / "w.pth").write_bytes(b"tampered")
    entry = _entry("w", base, ["w.pth"], "0" * 64)
    with pytest.raises(DownloadError, match="sha256") as info:
        fetch(entry, progress=False)
    assert "place the file at exactly" in str(info.value)
    assert not entry.path().exists()


def test_offline_error_names_the_file_and_where_to_put_it(monkeypatch, tmp_path):
    monkeypatch.setenv("CLAVER_OFFLINE", "1")
    entry = PRETRAINED["openai-vit-b16"]
    with pytest.raises(DownloadError) as info:
        fetch(entry)
    msg = str(info.value)
    assert str(tmp_path / "cache" / "ViT-B-16.pt") in msg and entry.urls[0] in msg
    assert entry.urls[1] in msg  # the mirror is named too
    with pytest.raises(DownloadError, match="vit-b-32-8f.pth"):
        fetch("actionclip-vit-b32-8f-k400")


def test_unverified_download_needs_permission_and_checks_the_prefix(server, tmp_path):
    base, root, seen = server
    payload = b"mmaction2 weights" * 500
    digest = hashlib.sha256(payload).hexdigest()
    (root / "a.pth").write_bytes(payload)
    entry = _entry("a", base, ["a.pth"], None)
    with pytest.raises(DownloadError, match="allow-unverified") as info:
        fetch(entry, progress=False)
    assert str(entry.path()) in str(info.value) and seen == []
    with pytest.warns(UserWarning, match=digest):
        path = fetch(entry, allow_unverified=True, progress=False)
    assert path.read_bytes() == payload and seen == ["/a.pth"]
    assert fetch(entry, progress=False) == path  # present: used without asking again
    wrong = dataclasses.replace(entry, name="b", filename="b.pth", sha256_prefix="ffffffff")
    with pytest.raises(DownloadError, match="does not start with the published ffffffff"):
        fetch(wrong, allow_unverified=True, progress=False)
    assert not wrong.path().exists() and not (tmp_path / "cache" / "b.pth.part").exists()
    right = dataclasses.replace(wrong, name="c", filename="c.pth", sha256_prefix=digest[:8])
    with pytest.warns(UserWarning):
        assert fetch(right, allow_unverified=True, progress=False).is_file()


# -------------------------------------------------------------------------------- loading

def test_load_pretrained_by_name_sets_the_preprocessing(server, monkeypatch, tmp_path):
    base, root, _ = server
    model = _tiny_mmaction2(root / "tiny.pth")
    entry = _entry("tiny-k400", base, ["tiny.pth"], None)
    monkeypatch.setitem(PRETRAINED, "tiny-k400", entry)
    with pytest.raises(DownloadError, match="allow_unverified=True"):
        claver.predict(torch.zeros(4, 48, 64, 3, dtype=torch.uint8), ["a", "b"],
                       model="tiny-k400")
    with pytest.warns(UserWarning, match="without a published checksum"):
        loaded = load_pretrained("tiny-k400", allow_unverified=True, progress=False)
    assert loaded.config.fusion == "Transf" and not loaded.training
    assert loaded.preprocess.short_side == 40 and loaded.preprocess.image_size == 32
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    video = torch.randint(0, 256, (6, 48, 64, 3), dtype=torch.uint8)
    by_name = claver.predict(video, ["a", "b"], model="tiny-k400")  # now cached on disk
    by_object = claver.predict(video, ["a", "b"], model=loaded)
    torch.testing.assert_close(by_name.probs, by_object.probs, rtol=0, atol=0)
    # the named preprocessing (short side 40) differs from the config's (32)
    plain = claver.predict(video, ["a", "b"], model=model)
    assert not torch.allclose(plain.probs, by_object.probs)


def test_openai_style_entry_is_zero_shot_clip(server, monkeypatch):
    base, root, _ = server
    torch.manual_seed(0)
    clip = claver.create_model("clip-tiny").eval()
    torch.save(clip.state_dict(), root / "clip.pt")
    digest = hashlib.sha256((root / "clip.pt").read_bytes()).hexdigest()
    entry = _entry("tiny-clip", base, ["clip.pt"], digest,
                   options=(("fusion", "meanP"), ("num_frames", 4)), short_side=32)
    monkeypatch.setitem(PRETRAINED, "tiny-clip", entry)
    model = load_pretrained("tiny-clip", progress=False)
    assert type(model).__name__ == "ActionCLIP" and model.config.fusion == "meanP"
    video = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8)
    torch.testing.assert_close(claver.predict(video, ["a", "b"], model=model).probs,
                               claver.predict(video, ["a", "b"], model=clip).probs,
                               rtol=0, atol=1e-6)


# ------------------------------------------------------------------------- info / convert

def test_info_describes_architecture_frames_mask_keys(tmp_path, capsys):
    torch.manual_seed(0)
    path = save_model(claver.create_model("claver-tiny", num_frames=4, mask="kmct"),
                      tmp_path / "m.safetensors")
    assert main(["info", str(path), "--keys"]) == 0
    out = capsys.readouterr().out
    fields = dict(line.split(None, 1) for line in out.splitlines()
                  if line and not line.startswith(" "))
    assert fields["format"] == "claver" and fields["frames"] == "4" and fields["mask"] == "kmct"
    assert fields["vision"].startswith("image 32, patch 8, width 64, 3 layers")
    n = sum(v.numel() for v in read_checkpoint(path).state_dict.values())
    assert f"({n:,} values)" in fields["parameters"]
    assert "visual.temporal_embedding" in out and "(1, 4, 64)" in out
    assert main(["info", "actionclip-vit-b16-16f-k400"]) == 0
    out = capsys.readouterr().out
    assert "16 frames" in out and "short side 256" in out


def test_convert_any_format_to_ours(tmp_path, capsys):
    src = tmp_path / "mm.pth"
    model = _tiny_mmaction2(src)
    out = tmp_path / "ours.safetensors"
    assert main(["convert", str(src), str(out)]) == 0
    assert "read back identical" in capsys.readouterr().out
    ckpt = read_checkpoint(out)
    assert ckpt.format == "claver" and ckpt.config == model.config
    loaded = load_model(out)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    assert main(["convert", str(src), str(tmp_path / "x.pt")]) == 2
    assert ".safetensors" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="interpolating"):
        assert main(["convert", str(out), str(tmp_path / "f8.safetensors"),
                     "--num-frames", "8"]) == 0
    assert read_checkpoint(tmp_path / "f8.safetensors").config.num_frames == 8
