"""Verified downloads against a real HTTP server on 127.0.0.1 that misbehaves on request."""

from __future__ import annotations

import hashlib
import importlib
import random
import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from claver.weights.download import (
    OPENAI_CLIP_URLS,
    DownloadError,
    download,
    openai_sha256,
    sha256_file,
)

dl = importlib.import_module("claver.weights.download")  # the module, even if re-exported
PAYLOAD = random.Random(1234).randbytes(300_000)
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _State:
    """What the server serves and how it misbehaves; every request is recorded."""

    def __init__(self) -> None:
        self.body = PAYLOAD
        self.fail_first = 0  # answer the first N requests with fail_status
        self.fail_status = 500
        self.always_status: int | None = None
        self.truncate_first = 0  # close the first N responses after half their body
        self.ignore_range = False
        self.requests: list[dict] = []
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # silence the default stderr log
        pass

    def _status_only(self, status: int, record: dict, extra: dict | None = None) -> None:
        record["status"] = status
        self.send_response(status)
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):  # http.server API
        state: _State = self.server.state  # type: ignore[attr-defined]
        record = {"path": self.path, "range": self.headers.get("Range"), "status": None,
                  "sent": 0}
        with state.lock:
            index = len(state.requests)
            state.requests.append(record)
        if state.always_status is not None:
            return self._status_only(state.always_status, record)
        if index < state.fail_first:
            return self._status_only(state.fail_status, record)

        body = state.body
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", record["range"] or "")
        if match and not state.ignore_range:
            start = int(match.group(1))
            if start >= len(body):
                return self._status_only(416, record, {"Content-Range": f"bytes */{len(body)}"})
            record["status"] = 206
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            record["status"] = 200
            self.send_response(200)
        chunk = body[start:]
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(chunk)))
        self.end_headers()
        if index < state.truncate_first:
            chunk = chunk[: len(chunk) // 2]
            self.close_connection = True
        record["sent"] = len(chunk)  # recorded first: the client may finish before we return
        self.wfile.write(chunk)
        self.wfile.flush()


@pytest.fixture
def server() -> Iterator[tuple[str, _State]]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.state = _State()  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    host, port = httpd.server_address[:2]
    try:
        yield f"http://{host}:{port}/models/{PAYLOAD_SHA}/weights.bin", httpd.state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch) -> list[float]:
    waits: list[float] = []
    monkeypatch.setattr(dl, "_sleep", waits.append)
    for key in ("CLAVER_OFFLINE", "HF_HUB_OFFLINE", "CLAVER_CACHE"):
        monkeypatch.delenv(key, raising=False)
    return waits


@pytest.fixture
def closed_port_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/models/{PAYLOAD_SHA}/weights.bin"


def _part(path: Path) -> Path:
    return path.with_name(path.name + ".part")


# ---------------------------------------------------------------------------- happy paths


def test_fresh_download_verified_and_atomic(server, tmp_path: Path, capsys):
    url, state = server
    path = download(url, PAYLOAD_SHA, cache_dir=tmp_path, progress=True)
    assert path == tmp_path / "weights.bin"
    assert path.read_bytes() == PAYLOAD
    assert not _part(path).exists()
    assert path.with_name("weights.bin.sha256").is_file()
    assert len(state.requests) == 1 and state.requests[0]["range"] is None
    assert state.requests[0]["sent"] == len(PAYLOAD)
    capsys.readouterr()  # progress bar went to stderr


def test_cached_file_needs_no_network_and_no_rehash(server, tmp_path: Path, closed_port_url,
                                                    monkeypatch):
    url, state = server
    path = download(url, PAYLOAD_SHA, cache_dir=tmp_path, progress=False)
    assert len(state.requests) == 1

    def no_hashing(*args, **kwargs):
        raise AssertionError("a verified cached file must not be re-hashed")

    monkeypatch.setattr(dl, "sha256_file", no_hashing)
    assert download(url, PAYLOAD_SHA, cache_dir=tmp_path) == path
    assert download(closed_port_url, PAYLOAD_SHA, cache_dir=tmp_path, filename="weights.bin",
                    offline=True) == path
    assert download(closed_port_url, PAYLOAD_SHA, cache_dir=tmp_path) == path
    assert len(state.requests) == 1  # never touched the network again


def test_hand_placed_file_is_verified_once_offline(tmp_path: Path, closed_port_url):
    target = tmp_path / "weights.bin"
    target.write_bytes(PAYLOAD)
    assert download(closed_port_url, PAYLOAD_SHA, cache_dir=tmp_path, offline=True) == target
    assert target.with_name("weights.bin.sha256").is_file()


def test_modified_cached_file_is_fetched_again(server, tmp_path: Path):
    url, state = server
    path = download(url, PAYLOAD_SHA, cache_dir=tmp_path, progress=False)
    path.write_bytes(b"x" * len(PAYLOAD))  # same size, different content and mtime
    assert download(url, PAYLOAD_SHA, cache_dir=tmp_path, progress=False) == path
    assert path.read_bytes() == PAYLOAD
    assert len(state.requests) == 2


def test_cache_dir_from_environment(server, tmp_path: Path, monkeypatch):
    url, _ = server
    monkeypatch.setenv("CLAVER_CACHE", str(tmp_path / "env-cache"))
    path = download(url, PAYLOAD_SHA, filename="renamed.pt", progress=False)
    assert path == tmp_path / "env-cache" / "renamed.pt"
    assert sha256_file(path) == PAYLOAD_SHA


# ---------------------------------------------------------------------------- offline


@pytest.mark.parametrize("how", ["argument", "CLAVER_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_missing_file_names_path_and_url(server, tmp_path: Path, monkeypatch, how):
    url, state = server
    offline = True if how == "argument" else None
    if how != "argument":
        monkeypatch.setenv(how, "1")
    with pytest.raises(DownloadError) as info:
        download(url, PAYLOAD_SHA, cache_dir=tmp_path, offline=offline)
    message = str(info.value)
    assert str(tmp_path / "weights.bin") in message
    assert url in message
    assert state.requests == []


def test_offline_wrong_file_reports_hash(tmp_path: Path, closed_port_url):
    (tmp_path / "weights.bin").write_bytes(b"not the weights")
    with pytest.raises(DownloadError, match=hashlib.sha256(b"not the weights").hexdigest()):
        download(closed_port_url, PAYLOAD_SHA, cache_dir=tmp_path, offline=True)


# ---------------------------------------------------------------------------- misbehaviour


def test_hash_mismatch_deletes_part(server, tmp_path: Path):
    url, state = server
    state.body = PAYLOAD[:-1] + bytes([PAYLOAD[-1] ^ 0xFF])
    actual = hashlib.sha256(state.body).hexdigest()
    with pytest.raises(DownloadError) as info:
        download(url, PAYLOAD_SHA, cache_dir=tmp_path, progress=False)
    message = str(info.value)
    assert url in message and PAYLOAD_SHA in message and actual in message
    assert not (tmp_path / "weights.bin").exists()
    assert not _part(tmp_path / "weights.bin").exists()


def test_truncated_transfer_resumes_with_range(server, tmp_path: Path, no_backoff):
    url, state = server
    state.truncate_first = 1
    path = download(url, PAYLOAD_SHA, cache_dir=tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD
    first, second = state.requests
    half = len(PAYLOAD) // 2
    assert first["range"] is None and first["sent"] == half
    assert second["range"] == f"bytes={half}-"
    assert second["status"] == 206 and second["sent"] == len(PAYLOAD) - half
    assert len(no_backoff) == 1


def test_truncation_exhausting_retries_keeps_part_then_rerun_resumes(server, tmp_path: Path):
    url, state = server
    state.truncate_first = 10**6
    with pytest.raises(DownloadError) as info:
        download(url, PAYLOAD_SHA, cache_dir=tmp_path, progress=False, retries=2)
    part = _part(tmp_path / "weights.bin")
    assert part.is_file() and 0 < part.stat().st_size < len(PAYLOAD)
    assert str(part) in str(info.value) and "resume" in str(info.value)
    assert len(state.requests) == 3
    kept = part.stat().st_size

    state.truncate_first = 0
    path = download(url, PAYLOAD_SHA, cache_dir=tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert state.requests[-1]["range"] == f"bytes={kept}-"
    assert state.requests[-1]["sent"] == len(PAYLOAD) - kept


def test_server_errors_are_retried(server, tmp_path: Path, no_backoff):
    url, state = server
    state.fail_first = 2
    path = download(url, PAYLOAD_SHA, cache_dir=tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert [r["status"] for r in state.requests] == [500, 500, 200]
    assert len(no_backoff) == 2


def test_persistent_server_error(server, tmp_path: Path):
    url, state = server
    state.always_status = 503
    with pytest.raises(DownloadError, match="503") as info:
        download(url, PAYLOAD_SHA, cache_dir=tmp_path, progress=False, retries=3)
    assert url in str(info.value)
    assert len(state.requests) == 4
    assert not (tmp_path / "weights.bin").exists()


def test_not_found_is_not_retried(server, tmp_path: Path, no_backoff):
    url, state = server
    state.always_status = 404
    with pytest.raises(DownloadError, match="404"):
        download(url, PAYLOAD_SHA, cache_dir=tmp_path, progress=False)
    assert len(state.requests) == 1 and no_backoff == []


def test_server_ignoring_range_restarts_from_zero(server, tmp_path: Path):
    url, state = server
    state.ignore_range = True
    target = tmp_path / "weights.bin"
    _part(target).write_bytes(b"stale bytes that are not a prefix" * 10)
    assert download(url, PAYLOAD_SHA, cache_dir=tmp_path, progress=False) == target
    assert target.read_bytes() == PAYLOAD
    (request,) = state.requests
    assert request["range"] == "bytes=330-" and request["status"] == 200
    assert request["sent"] == len(PAYLOAD)


def test_stale_part_from_another_file_is_replaced(server, tmp_path: Path):
    url, state = server
    target = tmp_path / "weights.bin"
    _part(target).write_bytes(b"\0" * 1000)  # not a prefix of the payload
    assert download(url, PAYLOAD_SHA, cache_dir=tmp_path, progress=False) == target
    assert target.read_bytes() == PAYLOAD
    assert [(r["range"], r["status"]) for r in state.requests] == [
        ("bytes=1000-", 206), (None, 200)
    ]


def test_range_not_satisfiable_means_part_is_complete(server, tmp_path: Path):
    url, state = server
    target = tmp_path / "weights.bin"
    _part(target).write_bytes(PAYLOAD)
    assert download(url, PAYLOAD_SHA, cache_dir=tmp_path, progress=False) == target
    assert target.read_bytes() == PAYLOAD
    assert [(r["range"], r["status"]) for r in state.requests] == [
        (f"bytes={len(PAYLOAD)}-", 416)
    ]


def test_unreachable_server_raises_after_retries(tmp_path: Path, closed_port_url, no_backoff):
    with pytest.raises(DownloadError, match="cannot connect"):
        download(closed_port_url, PAYLOAD_SHA, cache_dir=tmp_path, retries=1)
    assert len(no_backoff) == 1


# ---------------------------------------------------------------------------- helpers


def test_openai_table_and_hashes():
    assert set(OPENAI_CLIP_URLS) == {"ViT-B/32", "ViT-B/16", "ViT-L/14", "ViT-L/14@336px"}
    prefixes = {"ViT-B/32": "40d36571", "ViT-B/16": "5806e77c", "ViT-L/14": "b8cca3fd",
                "ViT-L/14@336px": "3035c92b"}
    suffixes = {"ViT-B/32": "950af", "ViT-B/16": "416f", "ViT-L/14": "03836",
                "ViT-L/14@336px": "41f02"}
    for name, url in OPENAI_CLIP_URLS.items():
        assert url.startswith("https://openaipublic.azureedge.net/clip/models/")
        digest = openai_sha256(url)
        assert len(digest) == 64
        assert digest.startswith(prefixes[name]) and digest.endswith(suffixes[name])
        assert url.endswith(f"/{digest}/{name.replace('/', '-').replace('@', '-')}.pt")
    with pytest.raises(ValueError):
        openai_sha256("https://example.com/models/ViT-B-16.pt")


def test_argument_validation(tmp_path: Path):
    with pytest.raises(ValueError, match="sha256"):
        download("http://127.0.0.1:9/x.pt", "abc", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="filename"):
        download("http://127.0.0.1:9/", PAYLOAD_SHA, cache_dir=tmp_path)


def test_sha256_file(tmp_path: Path):
    path = tmp_path / "blob"
    path.write_bytes(PAYLOAD)
    assert sha256_file(path) == PAYLOAD_SHA
    assert sha256_file(path, chunk_size=1000) == PAYLOAD_SHA


# ---------------------------------------------------------------------------- bounds


def test_bounds_from_arguments_environment_and_defaults(monkeypatch):
    for key in (dl.MAX_BYTES_ENV, dl.STALL_TIMEOUT_ENV, dl.DEADLINE_ENV):
        monkeypatch.delenv(key, raising=False)
    limits = dl._Limits(None, None, None, None)
    assert (limits.stall, limits.deadline, limits.max_bytes, limits.cap) == (
        30.0, 7200.0, 4 << 30, 4 << 30)
    monkeypatch.setenv(dl.MAX_BYTES_ENV, "1000")
    monkeypatch.setenv(dl.STALL_TIMEOUT_ENV, "2.5")
    monkeypatch.setenv(dl.DEADLINE_ENV, "60")
    limits = dl._Limits(None, None, None, None)
    assert (limits.stall, limits.deadline, limits.max_bytes) == (2.5, 60.0, 1000)
    limits = dl._Limits(1, 2, 3, 500)  # arguments win; a known size is the cap
    assert (limits.stall, limits.deadline, limits.max_bytes, limits.cap) == (1, 2, 3, 500)


@pytest.mark.parametrize("env, value", [("CLAVER_MAX_DOWNLOAD_BYTES", "lots"),
                                        ("CLAVER_DOWNLOAD_DEADLINE", "-5"),
                                        ("CLAVER_DOWNLOAD_STALL_TIMEOUT", "inf")])
def test_bad_bound_settings_name_the_variable(server, tmp_path: Path, monkeypatch, env, value):
    url, state = server
    monkeypatch.setenv(env, value)
    with pytest.raises(ValueError, match=f"{env}=.*unset it"):
        download(url, PAYLOAD_SHA, cache_dir=tmp_path, progress=False)
    monkeypatch.delenv(env)
    with pytest.raises(ValueError, match="size"):
        download(url, PAYLOAD_SHA, cache_dir=tmp_path, size=-1)
    assert state.requests == []


def test_a_known_size_still_downloads_and_resumes(server, tmp_path: Path):
    url, state = server
    state.truncate_first = 1
    path = download(url, PAYLOAD_SHA, cache_dir=tmp_path, progress=False, size=len(PAYLOAD),
                    max_bytes=len(PAYLOAD), deadline=30, timeout=5)
    assert path.read_bytes() == PAYLOAD
    assert [r["status"] for r in state.requests] == [200, 206]


def test_oversized_partial_file_is_discarded(server, tmp_path: Path):
    url, state = server
    target = tmp_path / "weights.bin"
    _part(target).write_bytes(b"\0" * (len(PAYLOAD) + 10))  # longer than the file can be
    assert download(url, PAYLOAD_SHA, cache_dir=tmp_path, progress=False,
                    size=len(PAYLOAD)) == target
    assert [r["range"] for r in state.requests] == [None]
