"""HTTP plumbing shared by the weight downloader and the prompt client (standard library only).

- :func:`mask_url`: a URL fit to print: user-info (``user:KEY@``) and the values of query
  parameters named like credentials (``key``, ``token``, ``sig`` ...) become ``***``.
- :func:`origin`: ``(scheme, host, port)`` of a URL, the unit a credential is bound to.
- :class:`Deadline`: a wall-clock limit for one exchange (connect, TLS handshake, headers and
  body), enforced by a timer that shuts the exchange's sockets down when it passes, so a
  server sending one byte every few seconds cannot keep a read alive past it.
- :func:`guarded_opener`: a ``urllib`` opener whose connections obey a :class:`Deadline` and
  whose redirects pass a check first (it raises to refuse one).

This module imports nothing from claver, so every layer may use it.
"""

from __future__ import annotations

import http.client
import math
import re
import socket
import threading
import time
import urllib.parse
import urllib.request
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["Deadline", "guarded_opener", "is_loopback", "mask_url", "origin", "origin_text"]

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_DEFAULT_PORTS = {"http": 80, "https": 443}
_AUTHORITY_USERINFO = re.compile(r"^((?:[A-Za-z][A-Za-z0-9+.-]*:)?//)?([^/?#\s]*@)")
_SECRET_PARAM = re.compile(
    r"((?:^|[?&;])[^=&;#]*(?:key|token|secret|sig|signature|passw|auth|credential)[^=&;#]*=)"
    r"[^&;#]*", re.IGNORECASE)
_MAX_SHOWN = 300


def mask_url(url: str) -> str:
    """``url`` with its user-info and credential-like query values replaced by ``***``
    (and cut to 300 characters): the only form in which claver prints a URL."""
    text = str(url)
    # user-info is everything before the last "@" of the authority (also without a scheme)
    text = _AUTHORITY_USERINFO.sub(lambda m: (m.group(1) or "") + "***@", text, count=1)
    head, sep, query = text.partition("?")
    if sep:
        text = head + sep + _SECRET_PARAM.sub(lambda m: m.group(1) + "***", query)
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "..."


def origin(url: str) -> tuple[str, str, int | None]:
    """``(scheme, host, port)`` of ``url``, lower-cased, the port made explicit (80/443);
    ``("", "", None)`` when the URL has no usable authority."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return ("", "", None)
    scheme = parts.scheme.lower()
    return (scheme, (parts.hostname or "").lower(), port or _DEFAULT_PORTS.get(scheme))


def origin_text(url_origin: tuple[str, str, int | None]) -> str:
    """``scheme://host:port`` of an :func:`origin` tuple, for messages."""
    scheme, host, port = url_origin
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{port}" if port is not None else f"{scheme}://{host}"


def is_loopback(url: str) -> bool:
    """Whether ``url`` names this machine (then no proxy is used for it)."""
    return origin(url)[1].strip("[]") in _LOOPBACK


def _shut(sock: socket.socket) -> None:
    """Shut a socket down from another thread: a blocked read returns at once. The base
    class's method is called so that an SSL socket's state is left to its own thread."""
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except (OSError, ValueError):  # already closed or detached: nothing left to stop
        pass


class Deadline:
    """A wall-clock limit of ``seconds`` (None or inf: none) for one exchange.

    Use as a context manager around the exchange; sockets passed to :meth:`watch` (done by
    :func:`guarded_opener`'s connections) are shut down when the time is up, which makes any
    read in progress return. Callers check :attr:`expired` to tell that apart from a server
    closing the connection.
    """

    def __init__(self, seconds: float | None) -> None:
        self.seconds = math.inf if seconds is None else float(seconds)
        self._end = time.monotonic() + self.seconds
        self._fired = False
        self._lock = threading.Lock()
        self._sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._timer: threading.Timer | None = None

    def __enter__(self) -> Deadline:
        if math.isfinite(self.seconds):
            self._timer = threading.Timer(self.remaining(), self._expire)
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def remaining(self) -> float:
        """Seconds left (0 when expired; inf without a limit)."""
        return max(0.0, self._end - time.monotonic())

    @property
    def expired(self) -> bool:
        return self._fired or time.monotonic() >= self._end

    def watch(self, sock: socket.socket) -> None:
        """Shut ``sock`` down when the deadline passes (at once if it has)."""
        with self._lock:
            if not self.expired:
                self._sockets.add(sock)
                return
        _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self._fired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)


def _watched_create_connection(deadline: Deadline) -> Callable[..., socket.socket]:
    def create(address: Any, timeout: Any = socket._GLOBAL_DEFAULT_TIMEOUT,
               source_address: Any = None) -> socket.socket:
        connect_timeout = timeout
        if isinstance(timeout, (int, float)):
            connect_timeout = max(0.01, min(float(timeout), deadline.remaining()))
        sock = socket.create_connection(address, connect_timeout, source_address)
        if connect_timeout is not timeout:
            sock.settimeout(timeout)  # the per-read (stall) limit
        deadline.watch(sock)
        return sock

    return create


class _WatchedContext:
    """An SSL context whose sockets are watched by a deadline before their handshake."""

    def __init__(self, context: Any, deadline: Deadline) -> None:
        self._context = context
        self._deadline = deadline

    def wrap_socket(self, sock: socket.socket, *args: Any, **kwargs: Any) -> Any:
        kwargs["do_handshake_on_connect"] = False
        wrapped = self._context.wrap_socket(sock, *args, **kwargs)
        self._deadline.watch(wrapped)
        wrapped.do_handshake()
        return wrapped

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class _HTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, *, deadline: Deadline, **kwargs: Any) -> None:
        super().__init__(host, **kwargs)
        self._create_connection = _watched_create_connection(deadline)


class _HTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, *, deadline: Deadline, **kwargs: Any) -> None:
        super().__init__(host, **kwargs)
        self._create_connection = _watched_create_connection(deadline)
        self._context = _WatchedContext(self._context, deadline)


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def http_open(self, req: urllib.request.Request) -> Any:
        deadline = self._deadline
        return self.do_open(lambda host, **kw: _HTTPConnection(host, deadline=deadline, **kw),
                            req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def https_open(self, req: urllib.request.Request) -> Any:
        deadline = self._deadline
        return self.do_open(lambda host, **kw: _HTTPSConnection(host, deadline=deadline, **kw),
                            req, context=getattr(self, "_context", None))


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects pass ``check(old_url, new_url)`` first; it raises to refuse one."""

    def __init__(self, check: Callable[[str, str], None] | None) -> None:
        self._check = check

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                         headers: Any, newurl: str) -> Any:
        if self._check is not None:
            try:
                self._check(req.full_url, newurl)
            except BaseException:
                fp.close()
                raise
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def guarded_opener(deadline: Deadline, *,
                   check_redirect: Callable[[str, str], None] | None = None,
                   use_proxies: bool = True) -> urllib.request.OpenerDirector:
    """A ``urllib`` opener for one exchange: its sockets obey ``deadline``, every redirect
    passes ``check_redirect(old_url, new_url)`` (which raises to refuse it), and
    ``use_proxies=False`` ignores the ``*_proxy`` environment variables."""
    handlers: list[Any] = [_HTTPHandler(deadline), _HTTPSHandler(deadline),
                           _CheckedRedirects(check_redirect)]
    if not use_proxies:
        handlers.insert(0, urllib.request.ProxyHandler({}))
    return urllib.request.build_opener(*handlers)
