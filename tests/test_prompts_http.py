"""The OpenAI-compatible HTTP backend against a real scripted server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from claver.cli import main
from claver.prompts.backends import (
    BackendError,
    FatalBackendError,
    Generation,
    OpenAIBackend,
    Request,
    SamplingParams,
)
from claver.prompts.formats import read_descriptions

PARAMS = SamplingParams(temperature=0.7, top_p=0.9, max_tokens=40, seed=None)
REQUEST = Request("Action: bowling\nAnswer:", ({"role": "user", "content": "Action: bowling"},),
                  seed=123)


def chat_answer(text: str, finish: str = "stop") -> dict:
    return {"id": "x", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": finish}]}


def completion_answer(text: str, finish: str = "stop") -> dict:
    return {"id": "x", "object": "text_completion",
            "choices": [{"index": 0, "text": text, "finish_reason": finish}]}


def described(body: dict) -> dict:
    """Default answer: a description that depends on the class, the prompt kind and the seed."""
    if "messages" in body:
        action = body["messages"][-1]["content"].removeprefix("Action: ")
        kind = hashlib.sha256(body["messages"][0]["content"].encode()).hexdigest()[:6]
    else:
        action = body["prompt"].rsplit("Action: ", 1)[1].split("\n")[0]
        kind = hashlib.sha256(body["prompt"][:60].encode()).hexdigest()[:6]
    text = (f"A person is {action} with steady movements, variant {kind} number "
            f"{body.get('seed')}.")
    return chat_answer(text) if "messages" in body else completion_answer(text)


class Server:
    """A ThreadingHTTPServer answering from per-path scripts (then ``described``)."""

    def __init__(self) -> None:
        self.scripts: dict[str, list[tuple]] = {}
        self.requests: list[dict] = []
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.barrier: threading.Barrier | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                self._handle(None)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                self._handle(json.loads(self.rfile.read(length)))

            def _handle(self, body: dict | None) -> None:
                with server.lock:
                    server.requests.append({"path": self.path, "body": body,
                                            "headers": dict(self.headers)})
                    script = server.scripts.get(self.path, [])
                    action = script.pop(0) if script else ("json", 200, described(body or {}))
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    if server.barrier is not None:
                        server.barrier.wait()
                    self.close_connection = True
                    server.act(self, action)
                except (BrokenPipeError, ConnectionResetError, threading.BrokenBarrierError):
                    pass
                finally:
                    with server.lock:
                        server.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,),
                                       daemon=True)
        self.thread.start()

    def act(self, handler: BaseHTTPRequestHandler, action: tuple) -> None:
        kind = action[0]
        if kind == "hang":  # never answer (until the test ends)
            self.release.wait(10)
            return
        if kind in ("json", "raw"):
            status, payload = action[1], action[2]
            headers = action[3] if len(action) > 3 else {}
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            handler.send_response(status)
            for key, value in {"Content-Type": "application/json", **headers}.items():
                handler.send_header(key, value)
            handler.send_header("Content-Length", str(len(data)))
            handler.send_header("Connection", "close")
            handler.end_headers()
            handler.wfile.write(data)
            return
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.send_header("Connection", "close")
        handler.end_headers()

        def chunk(data: bytes) -> None:
            handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            handler.wfile.flush()

        if kind == "chunked":  # a complete body, delivered slowly in pieces
            for piece in action[1]:
                chunk(piece)
                time.sleep(0.02)
            handler.wfile.write(b"0\r\n\r\n")
        elif kind == "trickle":  # a body that never ends: one space at a time
            chunk(b'{"choices": ')
            while not self.release.wait(0.02):
                chunk(b" ")

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def backend(server: Server, **kwargs) -> OpenAIBackend:
    options = {"model": "tiny", "retries": 3, "timeout": 5.0, "sleep": Sleeps()}
    options.update(kwargs)
    return OpenAIBackend(server.url, **options)


def test_chat_request_and_answer(server):
    server.scripts["/v1/chat/completions"] = [("json", 200, chat_answer("Arms swing."))]
    client = backend(server, api_key="sekret")
    assert client.generate([REQUEST], PARAMS) == [Generation("Arms swing.", False)]
    sent = server.requests[0]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["Authorization"] == "Bearer sekret"
    body = sent["body"]
    assert body["model"] == "tiny" and body["messages"] == list(REQUEST.messages)
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.7, 0.9, 40)
    assert body["seed"] == 123 and body["stream"] is False


def test_completions_request_and_truncation_flag(server):
    server.scripts["/v1/completions"] = [
        ("json", 200, completion_answer(" Legs bend and", finish="length"))]
    client = backend(server, endpoint="completions")
    assert client.generate([REQUEST], PARAMS) == [Generation(" Legs bend and", True)]
    body = server.requests[0]["body"]
    assert body["prompt"] == REQUEST.prompt and "\n\n" in body["stop"]


def test_base_url_without_path_gets_v1_and_model_is_discovered(server):
    server.scripts["/v1/models"] = [("json", 200, {"data": [{"id": "llama3:8b"}]})]
    client = OpenAIBackend(server.url.removesuffix("/v1"))
    assert client.base_url == server.url and client.model_name == "llama3:8b"
    server.scripts["/v1/models"] = [("json", 200, {"data": [{"id": "a"}, {"id": "b"}]})]
    with pytest.raises(FatalBackendError, match="--model"):
        OpenAIBackend(server.url)


def test_server_errors_are_retried_with_exponential_backoff(server):
    server.scripts["/v1/chat/completions"] = [
        ("json", 500, {"error": "boom"}), ("json", 503, {"error": "busy"}),
        ("json", 502, b"<html>bad gateway</html>"), ("json", 200, chat_answer("Done."))]
    client = backend(server, backoff=0.5)
    assert client.generate([REQUEST], PARAMS) == [Generation("Done.", False)]
    assert client.sleep == [0.5, 1.0, 2.0]
    assert len(server.requests) == 4


def test_429_honours_retry_after(server):
    server.scripts["/v1/chat/completions"] = [
        ("json", 429, {"error": "slow down"}, {"Retry-After": "7"}),
        ("json", 200, chat_answer("Ok then."))]
    client = backend(server)
    assert client.generate([REQUEST], PARAMS)[0].text == "Ok then."
    assert client.sleep == [7.0]


def test_hanging_server_times_out_and_is_retried(server):
    server.scripts["/v1/chat/completions"] = [("hang",), ("json", 200, chat_answer("Late."))]
    client = backend(server, timeout=0.3)
    assert client.generate([REQUEST], PARAMS)[0].text == "Late."
    assert len(client.sleep) == 1


def test_malformed_json_is_retried_then_reported_per_request(server):
    server.scripts["/v1/chat/completions"] = [
        ("raw", 200, b'{"choices": [{"message": '), ("json", 200, {"choices": []}),
        ("json", 200, chat_answer("Fine."))]
    client = backend(server)
    assert client.generate([REQUEST], PARAMS)[0].text == "Fine."
    server.scripts["/v1/chat/completions"] = [("raw", 200, b"not json")] * 2
    result = backend(server, retries=1).generate([REQUEST], PARAMS)[0]
    assert isinstance(result, BackendError) and "malformed JSON" in str(result)


def test_slow_chunked_body_is_read_completely(server):
    data = json.dumps(chat_answer("Slowly but surely.")).encode()
    pieces = [data[i : i + 40] for i in range(0, len(data), 40)]
    server.scripts["/v1/chat/completions"] = [("chunked", pieces)]
    client = backend(server)
    assert client.generate([REQUEST], PARAMS)[0].text == "Slowly but surely."
    assert client.sleep == []


def test_endless_trickle_hits_the_whole_request_deadline(server):
    server.scripts["/v1/chat/completions"] = [("trickle",), ("json", 200, chat_answer("Next."))]
    client = backend(server, timeout=0.4)
    assert client.generate([REQUEST], PARAMS)[0].text == "Next."
    assert len(client.sleep) == 1


def test_server_sent_events_body(server):
    events = b"".join(
        b"data: " + json.dumps({"choices": [{"delta": {"content": part},
                                             "finish_reason": None}]}).encode() + b"\n\n"
        for part in ["Hands ", "clap."]) + b"data: [DONE]\n\n"
    server.scripts["/v1/chat/completions"] = [("raw", 200, events)]
    assert backend(server).generate([REQUEST], PARAMS)[0].text == "Hands clap."


def test_client_errors_stop_the_run(server):
    server.scripts["/v1/chat/completions"] = [("json", 404, {"error": "no such model"})]
    with pytest.raises(FatalBackendError, match=r"404.*--base-url"):
        backend(server).generate([REQUEST], PARAMS)
    server.scripts["/v1/chat/completions"] = [("json", 401, {"error": "bad key"})]
    with pytest.raises(FatalBackendError, match="api-key-env"):
        backend(server).generate([REQUEST], PARAMS)


def test_connection_refused_is_retried_then_reported():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = OpenAIBackend(f"http://127.0.0.1:{port}/v1", model="m", retries=2, sleep=Sleeps())
    result = client.generate([REQUEST], PARAMS)[0]
    assert isinstance(result, BackendError) and "failed 3 times" in str(result)
    assert client.sleep == [1.0, 2.0]


def test_concurrency_is_bounded_and_used(server, tmp_path):
    from claver.prompts.generate import generate_descriptions

    server.barrier = threading.Barrier(3, timeout=10)  # passes only with 3 requests at once
    client = backend(server, concurrency=3)
    report = generate_descriptions(["a", "b", "c"], tmp_path / "d.jsonl", client,
                                   kinds=["body"], samples=3, progress=False)
    server.barrier = None
    assert report.ok and report.written == 9
    assert server.max_in_flight == 3


def test_cli_generate_check_and_resume(server, tmp_path, monkeypatch, capsys):
    labels = tmp_path / "labels.csv"
    labels.write_text("id,name\n0,abseiling\n1,air drumming\n2,bowling\n")
    out = tmp_path / "descriptions.jsonl"
    monkeypatch.setenv("MY_LLM_KEY", "k123")
    argv = ["prompts", "generate", "--labels", str(labels), "--out", str(out),
            "--kinds", "body,synonyms", "--samples", "2", "--base-url", server.url,
            "--model", "tiny", "--api-key-env", "MY_LLM_KEY", "--concurrency", "2",
            "--no-progress"]
    assert main(argv) == 0
    records = read_descriptions(out)
    assert len(records) == 3 * 2 * 2
    assert [(r.class_id, r.kind, r.sample) for r in records] == [
        (c, k, s) for c in range(3) for k in ("body", "synonyms") for s in range(2)]
    assert {r.model for r in records} == {"tiny"}
    assert all(rq["headers"]["Authorization"] == "Bearer k123" for rq in server.requests)
    seeds = [rq["body"]["seed"] for rq in server.requests]
    assert len(set(seeds)) == len(seeds)  # one derived seed per request
    first = out.read_bytes()
    sent = len(server.requests)
    assert main(argv) == 0  # everything comes from the cache
    assert len(server.requests) == sent and out.read_bytes() == first
    assert "reused from the cache: 12" in capsys.readouterr().out
    assert main(["prompts", "check", str(out), "--labels", str(labels),
                 "--kinds", "body,synonyms", "--min-per-class", "4"]) == 0
    assert main(["prompts", "check", str(out), "--labels", str(labels),
                 "--min-per-class", "5"]) == 1
    monkeypatch.delenv("MY_LLM_KEY")
    assert main(argv) == 2
    assert "MY_LLM_KEY" in capsys.readouterr().err
