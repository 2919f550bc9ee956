"""LLM backends: any OpenAI-compatible HTTP server, or a local Hugging Face causal LM.

Both implement the :class:`Backend` protocol: ``generate(requests, params)`` returns one
:class:`Generation` (or a :class:`BackendError` for a request that failed after its retries)
per request; a :class:`FatalBackendError` (bad URL, model or key) aborts the whole run.
``batch_size`` requests go into one call and ``concurrency`` calls run at once (HTTP: 1 and
``--concurrency``; HF: ``--batch-size`` and 1).

The HTTP backend needs only the standard library (``urllib``). It speaks the request and
response shapes that vLLM, llama.cpp's server, Ollama and OpenAI share: ``POST
{base}/chat/completions`` (``messages``) or ``{base}/completions`` (``prompt``) with
``model``, ``max_tokens``, ``temperature``, ``top_p``, ``seed``, ``stop``; answers in
``choices[0].message.content`` / ``choices[0].text`` (a server-sent-events body is read too).

Credentials go only where they were given for: requests (with the ``Authorization`` header)
are sent to the scheme, host and port of ``base_url`` and nowhere else. A redirect to the same
scheme, host and port is followed; a redirect to any other (another host or port, or http <->
https) is refused with an error naming both and saying to point ``--base-url`` at the final
host. A key in the URL's user-info (``https://user:KEY@host/v1``) is sent as HTTP Basic
authentication and never printed: URLs are shown through :func:`claver.network.mask_url`, and
any echo of a key in a server's answer is replaced by ``***`` in messages.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from claver.network import Deadline, guarded_opener, is_loopback, mask_url, origin, origin_text

__all__ = [
    "Backend",
    "BackendError",
    "FatalBackendError",
    "Generation",
    "OpenAIBackend",
    "Request",
    "SamplingParams",
    "request_seed",
]

_MAX_BODY = 16 << 20
_HIDDEN = "***"


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings shared by all requests of a run.

    ``seed`` is the base seed: each request is sent its own seed derived from it and the
    request's identity (:func:`request_seed`); None sends no seed.
    """

    temperature: float = 0.8
    top_p: float = 0.95
    max_tokens: int = 128
    seed: int | None = 0

    def __post_init__(self) -> None:
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.max_tokens < 1:
            raise ValueError(f"invalid sampling settings {self}: need temperature >= 0, "
                             "0 < top_p <= 1 and max_tokens >= 1")


@dataclass(frozen=True)
class Request:
    """One generation: the prompt in completion form and in chat form, and its seed."""

    prompt: str
    messages: tuple[dict[str, str], ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class Generation:
    """What the model wrote; ``truncated`` when it stopped at the token limit."""

    text: str
    truncated: bool = False


class BackendError(RuntimeError):
    """A request failed (after its retries); the run goes on without it."""


class FatalBackendError(BackendError):
    """The backend cannot work at all (wrong URL, model or key): the run stops."""


class Backend(Protocol):
    """What :func:`claver.prompts.generate.generate_descriptions` needs from a backend."""

    model_name: str
    style: str  # "chat" or "completions": which prompt form is sent
    batch_size: int
    concurrency: int

    def generate(self, requests: Sequence[Request],
                 params: SamplingParams) -> list[Generation | BackendError]: ...


def request_seed(base: int | None, *parts: object) -> int | None:
    """A per-request seed derived from the base seed and the request's identity (or None)."""
    if base is None:
        return None
    digest = hashlib.sha256(json.dumps([base, *parts]).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _content_text(content: Any) -> str:
    """Chat ``content``: a string, null, or a list of ``{"type": "text", "text": ...}`` parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    raise _Retryable(f"unexpected message content {content!r:.80}")


def _parse_answer(body: bytes, chat: bool) -> Generation:
    """Text and finish reason of a (non-streamed or server-sent-events) response body."""
    text = body.decode("utf-8", errors="replace").strip()
    if text.startswith("data:"):
        pieces, finish = [], None
        for line in text.splitlines():
            line = line.strip()
            if not line.startswith("data:") or line[5:].strip() == "[DONE]":
                continue
            chunk = _json_object(line[5:].strip().encode())
            choice = _first_choice(chunk)
            delta = choice.get("delta") or choice.get("message") or {}
            pieces.append(_content_text(delta.get("content")) if chat
                          else str(choice.get("text") or ""))
            finish = choice.get("finish_reason") or finish
        return Generation("".join(pieces), finish == "length")
    obj = _json_object(body)
    choice = _first_choice(obj)
    if chat:
        message = choice.get("message")
        if not isinstance(message, dict):
            raise _Retryable(f"response has no choices[0].message: {text[:120]!r}")
        answer = _content_text(message.get("content"))
    else:
        answer = choice.get("text")
        if not isinstance(answer, str):
            raise _Retryable(f"response has no choices[0].text: {text[:120]!r}")
    return Generation(answer, choice.get("finish_reason") == "length")


def _json_object(body: bytes) -> dict:
    try:
        obj = json.loads(body)
    except ValueError as e:
        raise _Retryable(f"malformed JSON in response ({e}): {body[:120]!r}") from e
    if not isinstance(obj, dict):
        raise _Retryable(f"response is not a JSON object: {body[:120]!r}")
    if "error" in obj and "choices" not in obj:
        raise _Retryable(f"server reported an error: {str(obj['error'])[:200]}")
    return obj


def _first_choice(obj: dict) -> dict:
    choices = obj.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _Retryable(f"response has no choices: {json.dumps(obj)[:120]}")
    return choices[0]


@dataclass
class OpenAIBackend:
    """Client of an OpenAI-compatible server (vLLM, llama.cpp server, Ollama, OpenAI ...).

    Args:
        base_url: e.g. ``http://localhost:8000/v1``; a URL without a path gets ``/v1``.
            User-info (``https://user:password@host/v1``) is removed from it and sent as
            HTTP Basic authentication (not together with ``api_key``); ``base_url`` and
            ``repr`` never show it.
        model: the served model name; None asks ``GET {base}/models`` and takes the only one.
        api_key: sent as ``Authorization: Bearer ...`` when given, only to the scheme, host
            and port of ``base_url`` (redirects elsewhere are refused, see the module doc).
        endpoint: ``chat`` (``/chat/completions``) or ``completions`` (``/completions``).
        concurrency: requests in flight at once.
        timeout: seconds for a whole request, connecting to the last byte of the body
            (headers included: a server trickling bytes is cut off when it passes); bodies
            over 16 MiB are refused.
        retries: further tries after a failure that may pass (429, 5xx, 408, timeouts,
            connection errors, malformed or incomplete JSON), waiting ``backoff * 2**n``
            seconds (at most ``max_backoff``; longer when the server sends ``Retry-After``).
        sleep: waits between tries (tests pass a recorder); None waits on ``stop_event``,
            so setting it (Ctrl-C) ends the waits at once.
    """

    base_url: str
    model: str | None = None
    api_key: str | None = field(default=None, repr=False)
    endpoint: str = "chat"
    concurrency: int = 4
    timeout: float = 120.0
    retries: int = 4
    backoff: float = 1.0
    max_backoff: float = 30.0
    sleep: Callable[[float], None] | None = None
    stop_event: threading.Event = field(default_factory=threading.Event)
    clock: Callable[[], float] = time.monotonic
    batch_size: int = 1

    def __post_init__(self) -> None:
        if self.endpoint not in ("chat", "completions"):
            raise ValueError(f"endpoint must be 'chat' or 'completions', got {self.endpoint!r}")
        if self.concurrency < 1 or self.retries < 0 or self.timeout <= 0:
            raise ValueError("need concurrency >= 1, retries >= 0 and timeout > 0")
        given = str(self.base_url).strip()
        self.base_url = mask_url(given)  # nothing below may show the user-info
        try:
            parts = urllib.parse.urlsplit(given)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"--base-url {self.base_url!r} is not an http(s) URL; use e.g. "
                             "http://localhost:8000/v1 (vLLM), http://localhost:8080/v1 "
                             "(llama.cpp) or http://localhost:11434/v1 (Ollama)")
        # what counts as a credential: the key, the password (or a lone user name: a token)
        self._secrets = [s for s in (self.api_key, parts.password) if s]
        self._authorization = f"Bearer {self.api_key}" if self.api_key else None
        if parts.username is not None or parts.password is not None:
            if self.api_key:
                raise ValueError(f"--base-url {self.base_url} carries credentials (user-info) "
                                 "and an API key is given too; use one of them")
            user = urllib.parse.unquote(parts.username or "")
            password = urllib.parse.unquote(parts.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            self._authorization = f"Basic {token}"
            self._secrets += [password or user, urllib.parse.quote(password or user), token]
        self._secrets = sorted({s for s in self._secrets if len(s) >= 3}, key=len, reverse=True)
        netloc = parts.netloc.rpartition("@")[2]
        path = parts.path.rstrip("/") or "/v1"
        self.base_url = urllib.parse.urlunsplit((parts.scheme, netloc, path, "", ""))
        self._origin = origin(self.base_url)
        self._direct = is_loopback(self.base_url)  # no proxy for this machine
        self.style = self.endpoint
        if self.model is None:
            self.model = self._only_model()
        self.model_name = self.model

    # ------------------------------------------------------------------ HTTP plumbing

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._authorization:
            headers["Authorization"] = self._authorization
        return headers

    def _scrub(self, text: str) -> str:
        """``text`` (which may quote a server's answer) with every credential replaced."""
        for secret in self._secrets:
            text = text.replace(secret, _HIDDEN)
        return text

    def _check_redirect(self, old_url: str, new_url: str) -> None:
        """Follow a redirect only to the scheme, host and port of ``base_url``."""
        target = origin(new_url)
        if target == self._origin and "@" not in urllib.parse.urlsplit(new_url).netloc:
            return
        suffix = old_url[len(self.base_url):] if old_url.startswith(self.base_url) else ""
        shown = mask_url(new_url)
        suggestion = (shown[: -len(suffix)] if suffix and shown.endswith(suffix)
                      else origin_text(target) + "/v1")
        raise FatalBackendError(self._scrub(
            f"{old_url} redirected to {shown} on another host ({origin_text(self._origin)} -> "
            f"{origin_text(target)}); claver sends requests and the API key only to the host of "
            f"--base-url and does not follow. Point --base-url at the final host, e.g. "
            f"--base-url {suggestion}"))

    def _once(self, url: str, payload: bytes | None) -> bytes:
        """One HTTP exchange; raises _Retryable or FatalBackendError on failure."""
        request = urllib.request.Request(url, data=payload, headers=self._headers(),
                                         method="POST" if payload is not None else "GET")
        late = f"response not complete after {self.timeout:g} s (--timeout)"
        with Deadline(self.timeout) as deadline:
            opener = guarded_opener(deadline, check_redirect=self._check_redirect,
                                    use_proxies=not self._direct)
            try:
                return self._exchange(opener, request, deadline, late)
            except urllib.error.HTTPError as e:
                if deadline.expired:
                    raise _Retryable(late) from e
                raise self._http_error(request, url, e) from e
            except (ConnectionError, http.client.HTTPException, OSError, ValueError) as e:
                # ValueError: an SSL socket read after the deadline shut it down
                if deadline.expired or isinstance(e, TimeoutError) or isinstance(
                        getattr(e, "reason", None), TimeoutError):
                    raise _Retryable(late) from e
                if isinstance(e, urllib.error.URLError):
                    raise _Retryable(f"cannot reach {url}: {e.reason}") from e
                raise _Retryable(f"connection failed: {type(e).__name__}: {e}") from e

    def _exchange(self, opener: urllib.request.OpenerDirector, request: urllib.request.Request,
                  deadline: Deadline, late: str) -> bytes:
        end = self.clock() + self.timeout
        with opener.open(request, timeout=self.timeout) as response:
            chunks, size = [], 0
            while True:
                if deadline.expired or self.clock() > end:
                    raise _Retryable(late)
                data = response.read1(65536)
                if not data:
                    break
                size += len(data)
                if size > _MAX_BODY:
                    raise _Retryable(f"response larger than {_MAX_BODY >> 20} MiB")
                chunks.append(data)
        if deadline.expired:  # the end of the body may be the deadline cutting it off
            raise _Retryable(late)
        return b"".join(chunks)

    def _http_error(self, request: urllib.request.Request, url: str,
                    e: urllib.error.HTTPError) -> Exception:
        try:
            detail = self._scrub(e.read(2000).decode("utf-8", errors="replace").strip())
        except (OSError, ValueError, http.client.HTTPException):
            detail = ""
        if e.code in (408, 409, 425, 429) or e.code >= 500:
            return _Retryable(f"HTTP {e.code}: {detail[:200]}", _retry_after(e.headers))
        key = ("check the credentials in the user-info of --base-url"
               if self._authorization and self._authorization.startswith("Basic ")
               else "check the key in --api-key-env")
        hint = {401: key, 403: key,
                404: "check --base-url (it usually ends in /v1), --endpoint and --model"}
        if 300 <= e.code < 400:
            location = mask_url(str((e.headers or {}).get("Location", "?")))
            hint[e.code] = (f"the server redirects to {location}; point --base-url at the "
                            "final URL")
        return FatalBackendError(self._scrub(
            f"{request.method} {url} returned HTTP {e.code}: {detail[:300]}; "
            f"{hint.get(e.code, 'check the request settings (model, endpoint, max tokens)')}"))

    def _wait(self, seconds: float) -> None:
        if self.sleep is not None:
            self.sleep(seconds)
        elif self.stop_event.wait(seconds):
            raise BackendError("stopped while waiting to retry")

    def _call(self, url: str, payload: bytes | None, parse: Callable[[bytes], Any]) -> Any:
        """``parse(body)`` of the first successful try; retries as documented."""
        errors: list[str] = []
        for attempt in range(self.retries + 1):
            if self.stop_event.is_set():
                raise BackendError("stopped")
            try:
                return parse(self._once(url, payload))
            except _Retryable as e:
                errors.append(self._scrub(str(e)))
                if attempt == self.retries:
                    break
                delay = min(self.max_backoff, self.backoff * 2**attempt)
                if e.retry_after is not None:
                    delay = max(delay, min(e.retry_after, self.max_backoff))
                self._wait(delay)
        method = "POST" if payload is not None else "GET"
        raise BackendError(f"{method} {url} failed {len(errors)} times; last error: {errors[-1]}")

    def _only_model(self) -> str:
        def parse(body: bytes) -> list[str]:
            data = _json_object(body).get("data")
            if not isinstance(data, list):
                raise _Retryable(f"GET /models returned no 'data' list: {body[:120]!r}")
            return [str(m.get("id")) for m in data if isinstance(m, dict) and m.get("id")]

        names = self._call(f"{self.base_url}/models", None, parse)
        if len(names) != 1:
            raise FatalBackendError(f"{self.base_url} serves {len(names)} models {names[:10]}; "
                                    "choose one with --model")
        return names[0]

    # ------------------------------------------------------------------ generation

    def payload(self, request: Request, params: SamplingParams) -> dict[str, Any]:
        """The JSON body sent for ``request``."""
        body: dict[str, Any] = {"model": self.model, "max_tokens": params.max_tokens,
                                "temperature": params.temperature, "top_p": params.top_p,
                                "stream": False}
        if self.style == "chat":
            body["messages"] = list(request.messages)
            body["stop"] = ["\nAction:"]
        else:
            body["prompt"] = request.prompt
            body["stop"] = ["\n\n", "\nAction:"]
        if request.seed is not None:
            body["seed"] = request.seed
        return body

    def generate(self, requests: Sequence[Request],
                 params: SamplingParams) -> list[Generation | BackendError]:
        """One generation (or the error that stopped it) per request, in order."""
        url = f"{self.base_url}/{'chat/completions' if self.style == 'chat' else 'completions'}"
        results: list[Generation | BackendError] = []
        for request in requests:
            payload = json.dumps(self.payload(request, params)).encode("utf-8")
            try:
                results.append(self._call(url, payload,
                                          lambda b: _parse_answer(b, self.style == "chat")))
            except FatalBackendError:
                raise
            except BackendError as e:
                results.append(e)
        return results
