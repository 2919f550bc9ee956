"""Hostile servers on 127.0.0.1 against the prompt client and the weight downloader.

Each case is one attack: a redirect that would carry the API key to another host, a key in the
URL's user-info or in an environment variable that would end up in a message, an endless body
that would fill memory or the disk, a server that trickles bytes so a read never times out.
The cases that could exhaust memory, disk or time run the client in a child process under a
memory and a time limit (``tests/hostile.py``); the servers run here, in threads.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from claver.cli import main
from claver.network import mask_url, origin
from claver.prompts.backends import (
    BackendError,
    FatalBackendError,
    OpenAIBackend,
    Request,
    SamplingParams,
)
from claver.weights import download as dl
from claver.weights.download import DownloadError, download
from hostile import describe, run_limited

KEY = "sk-S3CRET-key-0123456789"
PARAMS = SamplingParams(max_tokens=20, seed=None)
REQUEST = Request("Action: bowling\nAnswer:", ({"role": "user", "content": "Action: bowling"},))
PAYLOAD = bytes(range(256)) * 400
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
CHILD_MEMORY_MB = 768  # the clients import no torch: a buffering bug would hit this at once
BOUND_S = 5.0  # generous upper bound for every limit-driven failure below


def chat_answer(text: str) -> dict:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}]}


# ------------------------------------------------------------------------------- servers


class Recorder:
    """An HTTP server on 127.0.0.1 that records every request and answers through
    ``respond(handler, path) -> (status, headers, body)`` (default: a chat answer)."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.respond: Callable[[BaseHTTPRequestHandler], tuple[int, dict, bytes]] = (
            lambda h: (200, {}, json.dumps(chat_answer("Arms swing.")).encode()))
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                recorder.requests.append({"method": self.command, "path": self.path,
                                          "headers": dict(self.headers), "body": body})
                status, headers, data = recorder.respond(self)
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)
                self.close_connection = True

            do_GET = do_POST = _any

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.origin = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,),
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def recorders() -> Iterator[Callable[[], Recorder]]:
    made: list[Recorder] = []

    def make() -> Recorder:
        made.append(Recorder())
        return made[-1]

    yield make
    for r in made:
        r.close()


class RawServer:
    """A socket server on 127.0.0.1: for each connection it reads the request head, then runs
    ``behaviour(send, stopped)`` where ``send(bytes)`` raises once the client is gone."""

    def __init__(self, behaviour: Callable[[Callable[[bytes], None], threading.Event], None],
                 tls: ssl.SSLContext | None = None, read_head: bool = True) -> None:
        self.behaviour = behaviour
        self.tls = tls
        self.read_head = read_head
        self.stop = threading.Event()
        self.connections = 0
        self.sent = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        def send(data: bytes) -> None:
            conn.sendall(data)
            self.sent += len(data)

        try:
            conn.settimeout(5)
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
        except OSError:
            conn.close()
            return
        with conn:
            try:
                head = b"" if self.read_head else b"\r\n\r\n"
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    piece = conn.recv(4096)
                    if not piece:
                        return
                    head += piece
                conn.settimeout(None)
                self.behaviour(send, self.stop)
            except OSError:  # the client went away: that is the point
                pass

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        self.thread.join(5)


@pytest.fixture
def raw_server() -> Iterator[Callable]:
    made: list[RawServer] = []

    def make(behaviour, **options) -> RawServer:
        made.append(RawServer(behaviour, **options))
        return made[-1]

    yield make
    for s in made:
        s.close()


def endless_body(send, stopped) -> None:
    """No length, no end: 64 KiB blocks until the client hangs up."""
    send(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
         b"Connection: close\r\n\r\n")
    block = b"\0" * 65536
    while not stopped.is_set():
        send(block)


def endless_chunked_json(send, stopped) -> None:
    send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
         b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    block = b" " * 65536
    chunk = f"{len(block):x}\r\n".encode() + block + b"\r\n"
    send(b'c\r\n{"choices": \r\n')
    while not stopped.is_set():
        send(chunk)


def trickle_body(send, stopped) -> None:
    """A plausible header, then one byte every 50 ms of a body that claims 1 MB."""
    send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\nConnection: close\r\n\r\n")
    while not stopped.wait(0.05):
        send(b"x")


def trickle_headers(send, stopped) -> None:
    """The status line, then a header line one byte every 50 ms that never ends."""
    send(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    while not stopped.wait(0.05):
        send(b"a")


def trickle_tls_handshake(send, stopped) -> None:
    """Answer a TLS ClientHello with a record header announcing 16 KiB, then one byte every
    50 ms: the handshake never completes and never stalls."""
    send(b"\x16\x03\x03\x40\x00")
    while not stopped.wait(0.05):
        send(b"\x00")


def silent(send, stopped) -> None:
    """Reads the request and never answers."""
    stopped.wait(30)


def run_client(code: str, seconds: float = 30) -> dict:
    """Run ``code`` (which prints one JSON line last) in a limited child; its result."""
    done = run_limited(code, memory_mb=CHILD_MEMORY_MB, seconds=seconds)
    assert done.returncode == 0, describe(done)
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------ the API key stays with its host


@pytest.mark.parametrize("other", ["localhost", "127.0.0.1"])  # another name / another port
@pytest.mark.parametrize("status", [302, 307, 308])
def test_redirect_to_another_host_is_refused_and_the_key_never_leaves(recorders, other, status):
    first, second = recorders(), recorders()
    target = f"http://{other}:{second.port}/v1/chat/completions"
    first.respond = lambda h: (status, {"Location": target}, b"")
    client = OpenAIBackend(first.origin + "/v1", model="m", api_key=KEY, retries=2,
                           sleep=lambda s: None)
    with pytest.raises(FatalBackendError) as info:
        client.generate([REQUEST], PARAMS)
    message = str(info.value)
    assert f"http://127.0.0.1:{first.port}" in message
    assert f"http://{other}:{second.port}" in message
    assert f"--base-url http://{other}:{second.port}/v1" in message
    assert KEY not in message and "\n" not in message
    assert len(first.requests) == 1  # refused, not retried
    assert first.requests[0]["headers"]["Authorization"] == f"Bearer {KEY}"
    assert second.requests == []  # the other host saw nothing, no Authorization header at all


def test_model_discovery_redirect_to_another_host_is_refused(recorders):
    first, second = recorders(), recorders()
    first.respond = lambda h: (301, {"Location": f"http://localhost:{second.port}/v1/models"},
                               b"")
    with pytest.raises(FatalBackendError, match="--base-url"):
        OpenAIBackend(first.origin + "/v1", api_key=KEY, retries=0)
    assert second.requests == []


def test_same_host_redirect_is_followed_with_the_key(recorders):
    server = recorders()

    def respond(h):
        if h.path == "/v1/models":
            return 308, {"Location": "/v2/models"}, b""
        return 200, {}, json.dumps({"data": [{"id": "tiny"}]}).encode()

    server.respond = respond
    client = OpenAIBackend(server.origin + "/v1", api_key=KEY, retries=0)
    assert client.model_name == "tiny"
    assert [r["path"] for r in server.requests] == ["/v1/models", "/v2/models"]
    assert all(r["headers"]["Authorization"] == f"Bearer {KEY}" for r in server.requests)


def test_origin_counts_scheme_host_and_port():
    base = origin("https://api.example.com/v1")
    assert base == ("https", "api.example.com", 443)
    assert origin("https://API.example.com:443/x") == base
    assert origin("http://api.example.com/v1") != base  # https -> http is another origin
    assert origin("https://api.example.com:8443/v1") != base
    assert origin("https://api.example.com.evil.test/v1") != base
    assert origin("https://api.example.com@evil.test/v1")[1] == "evil.test"


# ------------------------------------------------------- keys never appear in messages


def test_userinfo_key_is_sent_as_basic_auth_and_never_shown(recorders, caplog):
    caplog.set_level(logging.DEBUG)
    server = recorders()
    url = f"http://alice:{KEY}@127.0.0.1:{server.port}/v1"
    token = base64.b64encode(f"alice:{KEY}".encode()).decode()
    client = OpenAIBackend(url, model="m", retries=0)
    assert client.generate([REQUEST], PARAMS)[0].text == "Arms swing."
    assert server.requests[0]["headers"]["Authorization"] == f"Basic {token}"
    shown = [repr(client), str(client.base_url), str(vars(client).get("base_url"))]

    # a hostile (or careless) server echoes the credentials back in its errors
    def echo(status):
        return lambda h: (status, {}, json.dumps(
            {"error": f"bad {h.headers.get('Authorization')} for {KEY}"}).encode())

    server.respond = echo(401)
    with pytest.raises(FatalBackendError) as fatal:
        client.generate([REQUEST], PARAMS)
    server.respond = echo(500)
    failed = client.generate([REQUEST], PARAMS)[0]
    assert isinstance(failed, BackendError)
    shown += [str(fatal.value), str(failed)]

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    unreachable = OpenAIBackend(f"http://alice:{KEY}@127.0.0.1:{port}/v1", model="m",
                                retries=0).generate([REQUEST], PARAMS)[0]
    shown.append(str(unreachable))
    with pytest.raises(ValueError) as bad:
        OpenAIBackend(f"ftp://alice:{KEY}@127.0.0.1/v1")
    shown.append(str(bad.value))
    text = "\n".join(shown + [r.getMessage() for r in caplog.records])
    assert "bad Basic *** for ***" in str(fatal.value)  # the message is kept, not the secret
    assert "user-info of --base-url" in str(fatal.value)
    assert KEY not in text and token not in text
    assert f"http://***@127.0.0.1:{port}/v1" not in text  # base_url drops user-info entirely
    assert "***@" in str(bad.value)


def test_cli_never_prints_a_userinfo_or_environment_key(recorders, tmp_path, monkeypatch,
                                                       capsys, caplog):
    caplog.set_level(logging.DEBUG)
    server = recorders()
    server.respond = lambda h: (403, {}, json.dumps(
        {"error": f"key {h.headers.get('Authorization')} is revoked"}).encode())
    labels = tmp_path / "labels.csv"
    labels.write_text("id,name\n0,bowling\n")
    common = ["prompts", "generate", "--labels", str(labels), "--kinds", "body",
              "--samples", "1", "--model", "tiny", "--retries", "0", "--no-progress"]
    monkeypatch.setenv("MY_LLM_KEY", KEY)
    assert main(common + ["--out", str(tmp_path / "a.jsonl"), "--base-url",
                          server.origin + "/v1", "--api-key-env", "MY_LLM_KEY"]) == 2
    assert server.requests[-1]["headers"]["Authorization"] == f"Bearer {KEY}"
    assert main(common + ["--out", str(tmp_path / "b.jsonl"), "--base-url",
                          f"http://bob:{KEY}@127.0.0.1:{server.port}/v1"]) == 2
    out = capsys.readouterr()
    text = out.out + out.err + "\n".join(r.getMessage() for r in caplog.records)
    assert text.count("HTTP 403") >= 2  # both runs reported the server's answer ...
    assert KEY not in text  # ... without the key it echoed
    assert base64.b64encode(f"bob:{KEY}".encode()).decode() not in text


def test_mask_url_hides_userinfo_and_credential_parameters():
    assert mask_url(f"https://user:{KEY}@host:8443/v1") == "https://***@host:8443/v1"
    assert mask_url(f"https://{KEY}@host/v1") == "https://***@host/v1"
    assert mask_url(f"user:{KEY}@host/v1") == "***@host/v1"  # no scheme: still hidden
    assert mask_url(f"https://h/f.pt?sv=1&sig={KEY}&api_key={KEY}&x=2") == \
        "https://h/f.pt?sv=1&sig=***&api_key=***&x=2"
    assert mask_url("https://h/a@b/c") == "https://h/a@b/c"  # an @ in the path is not user-info
    assert len(mask_url("https://h/" + "a" * 5000)) < 400


def test_download_url_with_userinfo_is_refused_without_showing_it(recorders, tmp_path):
    server = recorders()
    url = f"http://u:{KEY}@127.0.0.1:{server.port}/m/{PAYLOAD_SHA}/w.bin"
    with pytest.raises(DownloadError) as info:
        download(url, PAYLOAD_SHA, cache_dir=tmp_path, progress=False, retries=0)
    assert "user-info" in str(info.value) and KEY not in str(info.value)
    assert server.requests == []
    with pytest.raises(DownloadError) as offline:
        download(url, PAYLOAD_SHA, cache_dir=tmp_path, offline=True)
    assert KEY not in str(offline.value) and "***@" in str(offline.value)


# ------------------------------------------------------------- downloads: redirects


def test_download_follows_a_redirect_to_another_host_and_verifies(recorders, tmp_path):
    mirror, front = recorders(), recorders()
    mirror.respond = lambda h: (200, {"Content-Type": "application/octet-stream"}, PAYLOAD)
    front.respond = lambda h: (302, {"Location": f"http://localhost:{mirror.port}/w.bin"}, b"")
    path = download(f"{front.origin}/m/w.bin", PAYLOAD_SHA, cache_dir=tmp_path,
                    progress=False)
    assert path.read_bytes() == PAYLOAD
    assert "Authorization" not in mirror.requests[0]["headers"]


def test_download_refuses_redirects_off_http_and_https_downgrades(recorders, tmp_path):
    server = recorders()
    server.respond = lambda h: (302, {"Location": "ftp://127.0.0.1/w.bin"}, b"")
    with pytest.raises(DownloadError, match="only http"):
        download(f"{server.origin}/w.bin", PAYLOAD_SHA, cache_dir=tmp_path, progress=False)
    with pytest.raises(DownloadError, match="https to plain http"):
        dl._check_redirect("https://h/w.bin", "http://h/w.bin")
    dl._check_redirect("http://h/w.bin", "https://mirror/w.bin")  # upgrades are fine


# ------------------------------------------------- downloads: size, stall and deadline

_CHILD_DOWNLOAD = """
import json, pathlib, time
from claver.weights.download import DownloadError, download

largest = [0]
unlink = pathlib.Path.unlink
def watched(self, missing_ok=False):  # how big was the partial file when it was deleted?
    if self.name.endswith(".part") and self.exists():
        largest[0] = max(largest[0], self.stat().st_size)
    return unlink(self, missing_ok=missing_ok)
pathlib.Path.unlink = watched

start = time.monotonic()
try:
    download({url!r}, {sha!r}, cache_dir={cache!r}, progress=False, **{options!r})
    result = {{"error": None}}
except DownloadError as e:
    result = {{"error": str(e)}}
part = pathlib.Path({cache!r}) / "w.bin.part"
result.update(seconds=time.monotonic() - start, largest=largest[0],
              part=part.stat().st_size if part.exists() else None,
              target=(pathlib.Path({cache!r}) / "w.bin").exists())
print(json.dumps(result))
"""


def child_download(url: str, cache: Path, seconds: float = 30, env: dict | None = None,
                   **options) -> dict:
    code = _CHILD_DOWNLOAD.format(url=url + "/m/w.bin", sha=PAYLOAD_SHA, cache=str(cache),
                                  options=options)
    done = run_limited(code, memory_mb=CHILD_MEMORY_MB, seconds=seconds, env=env)
    assert done.returncode == 0, describe(done)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_endless_body_stops_at_the_configured_maximum(raw_server, tmp_path):
    server = raw_server(endless_body)
    cap = 1 << 20
    result = child_download(server.url, tmp_path, retries=0,
                            env={"CLAVER_MAX_DOWNLOAD_BYTES": str(cap)})
    assert "CLAVER_MAX_DOWNLOAD_BYTES" in result["error"] and str(cap) in result["error"]
    assert result["largest"] <= cap  # never more than the cap on disk
    assert result["part"] is None and not result["target"]  # and nothing left behind
    assert server.sent > cap  # the server really offered more
    assert result["seconds"] < BOUND_S


def test_endless_body_stops_at_the_expected_size(raw_server, tmp_path):
    server = raw_server(endless_body)
    result = child_download(server.url, tmp_path, retries=0, size=len(PAYLOAD))
    assert "expected size" in result["error"] and str(len(PAYLOAD)) in result["error"]
    assert result["largest"] <= len(PAYLOAD)
    assert result["part"] is None and not result["target"]


def test_announced_length_over_the_bound_is_refused_before_writing(recorders, tmp_path):
    server = recorders()
    server.respond = lambda h: (200, {}, PAYLOAD)
    with pytest.raises(DownloadError, match="announces 102400 bytes.*CLAVER_MAX_DOWNLOAD"):
        download(f"{server.origin}/w.bin", PAYLOAD_SHA, cache_dir=tmp_path, progress=False,
                 max_bytes=1000)
    with pytest.raises(DownloadError, match="expected size of 1000"):
        download(f"{server.origin}/w.bin", PAYLOAD_SHA, cache_dir=tmp_path, progress=False,
                 size=1000)
    assert not (tmp_path / "w.bin.part").exists() and not (tmp_path / "w.bin").exists()
    assert download(f"{server.origin}/w.bin", PAYLOAD_SHA, cache_dir=tmp_path,
                    progress=False, size=len(PAYLOAD)).read_bytes() == PAYLOAD


@pytest.mark.parametrize("behaviour", [trickle_body, trickle_headers],
                         ids=["trickled body", "trickled headers"])
def test_trickling_server_hits_the_overall_deadline(raw_server, tmp_path, behaviour):
    server = raw_server(behaviour)
    result = child_download(server.url, tmp_path, timeout=3.0, deadline=1.0, retries=5)
    error = result["error"]
    assert error and "1 s deadline" in error and "CLAVER_DOWNLOAD_DEADLINE" in error
    assert 0.9 < result["seconds"] < BOUND_S
    assert server.connections == 1  # a deadline is not retried
    if behaviour is trickle_body:  # what arrived is kept for the next call to resume
        assert result["part"] and str(tmp_path / "w.bin.part") in error


def test_deadline_from_the_environment(raw_server, tmp_path):
    server = raw_server(trickle_body)
    result = child_download(server.url, tmp_path, retries=0,
                            env={"CLAVER_DOWNLOAD_DEADLINE": "0.5"})
    assert "0.5 s deadline" in result["error"] and result["seconds"] < BOUND_S


def test_silent_server_hits_the_stall_timeout_and_is_retried(raw_server, tmp_path):
    server = raw_server(silent)
    result = child_download(server.url, tmp_path, retries=1, deadline=20,
                            env={"CLAVER_DOWNLOAD_STALL_TIMEOUT": "0.3"})
    error = result["error"]
    assert "failed after 2 attempt(s)" in error and "no data for 0.3 s" in error
    assert "CLAVER_DOWNLOAD_STALL_TIMEOUT" in error
    assert server.connections == 2 and result["seconds"] < BOUND_S


# ------------------------------------------------- the prompt client: same bounds

_CHILD_PROMPT = """
import json, time
from claver.prompts.backends import BackendError, OpenAIBackend, Request, SamplingParams
client = OpenAIBackend({url!r}, model="m", retries=0, timeout={timeout!r})
start = time.monotonic()
result = client.generate([Request("x", ({{"role": "user", "content": "x"}},))],
                         SamplingParams(seed=None))[0]
print(json.dumps({{"error": str(result) if isinstance(result, BackendError) else None,
                  "seconds": time.monotonic() - start}}))
"""


def test_prompt_client_caps_an_endless_body(raw_server):
    server = raw_server(endless_chunked_json)
    result = run_client(_CHILD_PROMPT.format(url=server.url + "/v1", timeout=60.0))
    assert "larger than 16 MiB" in result["error"]
    assert server.sent < 64 << 20 and result["seconds"] < 20


@pytest.mark.parametrize("behaviour", [trickle_body, trickle_headers],
                         ids=["trickled body", "trickled headers"])
def test_prompt_client_trickle_hits_the_request_timeout(raw_server, behaviour):
    server = raw_server(behaviour)
    result = run_client(_CHILD_PROMPT.format(url=server.url + "/v1", timeout=0.5))
    assert "not complete after 0.5 s" in result["error"] and "--timeout" in result["error"]
    assert result["seconds"] < BOUND_S


def test_deadline_shuts_a_blocked_read_down():
    """The mechanism itself: a read blocked on a silent socket returns when time is up."""
    from claver.network import Deadline

    left, right = socket.socketpair()
    with left, right, Deadline(0.2) as deadline:
        left.settimeout(10)
        deadline.watch(left)
        start = time.monotonic()
        assert left.recv(10) == b""
        assert deadline.expired and time.monotonic() - start < BOUND_S


# ------------------------------------------------------------------------------ https


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (made with the openssl command)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=127.0.0.1", "-addext",
                    "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


@pytest.fixture
def tls(certificate, monkeypatch) -> ssl.SSLContext:
    """A server context, with this process (and its children) trusting the certificate."""
    cert, key = certificate
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def test_https_download_works_and_a_slow_handshake_hits_the_deadline(raw_server, tls,
                                                                          tmp_path):
    def whole_file(send, stopped) -> None:
        send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
             % len(PAYLOAD) + PAYLOAD)

    good = raw_server(whole_file, tls=tls)
    result = child_download(good.url, tmp_path / "good", retries=0, deadline=10)
    assert result["error"] is None and result["target"]

    slow = raw_server(trickle_tls_handshake, read_head=False)  # plain TCP, TLS-looking bytes
    result = child_download(slow.url.replace("http:", "https:"), tmp_path / "slow",
                            timeout=3.0, deadline=1.0, retries=3)
    assert "1 s deadline" in result["error"] and result["seconds"] < BOUND_S


def test_https_trickled_body_hits_the_deadline(raw_server, tls, tmp_path):
    server = raw_server(trickle_body, tls=tls)
    result = child_download(server.url, tmp_path, timeout=3.0, deadline=1.0, retries=3)
    assert "1 s deadline" in result["error"] and result["seconds"] < BOUND_S
    assert result["part"]  # kept for resuming


def test_https_to_http_redirect_never_carries_the_key(recorders, tls):
    secure, plain = recorders(), recorders()
    secure.httpd.socket = tls.wrap_socket(secure.httpd.socket, server_side=True)
    secure.origin = secure.origin.replace("http:", "https:")
    downgrade = f"http://127.0.0.1:{plain.port}/v1/chat/completions"
    secure.respond = lambda h: (302, {"Location": downgrade}, b"")
    client = OpenAIBackend(secure.origin + "/v1", model="m", api_key=KEY, retries=0)
    with pytest.raises(FatalBackendError) as info:
        client.generate([REQUEST], PARAMS)
    assert f"{secure.origin} -> http://127.0.0.1:{plain.port}" in str(info.value)
    assert secure.requests[0]["headers"]["Authorization"] == f"Bearer {KEY}"
    assert plain.requests == []
