"""Verified, resumable downloads of named weights (standard library HTTP only).

:func:`download` keeps files in a cache directory (``$CLAVER_CACHE`` or ``~/.cache/claver``).
A file whose sha256 was verified once is returned later without network access and without
re-hashing (a ``<file>.sha256`` sidecar records hash, size and mtime). A download goes to
``<file>.part``, resumes with an HTTP ``Range`` request after an interruption, is hashed while
written, checked against the expected sha256 and only then moved into place atomically.
Offline mode (``offline=True``, ``CLAVER_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``) never touches the
network and says where to put the file by hand.

Bounds (argument, else environment variable, else default):

- size: never more bytes on disk than the expected ``size`` when the caller knows it, else than
  the ``Content-Length`` the server announced, and never more than ``max_bytes``
  (``CLAVER_MAX_DOWNLOAD_BYTES``, default 4 GiB); a body that goes past its bound is refused
  and its partial file deleted, so an endless body cannot fill the disk;
- stall: ``timeout`` (``CLAVER_DOWNLOAD_STALL_TIMEOUT``, default 30 s) without a byte (connect,
  headers or body) fails the attempt; it is retried, resuming;
- time: ``deadline`` (``CLAVER_DOWNLOAD_DEADLINE``, default 7200 s) for the whole call, all
  attempts and waits included; a server that trickles bytes is cut off when it passes (the
  partial file is kept: the same call resumes it).

Redirects are followed to http(s) URLs only, never from https down to plain http. No
credentials are sent; a URL with user-info (``user:password@``) is refused. URLs in messages go
through :func:`claver.network.mask_url`.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import math
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from claver.network import Deadline, guarded_opener, is_loopback, mask_url

__all__ = [
    "DownloadError",
    "OPENAI_CLIP_URLS",
    "default_cache_dir",
    "download",
    "download_unverified",
    "openai_sha256",
    "sha256_file",
]

_BASE = "https://openaipublic.azureedge.net/clip/models"

#: OpenAI's CLIP ViT weights (TorchScript archives); the sha256 of each file is the path
#: segment before its name (see :func:`openai_sha256`).
OPENAI_CLIP_URLS: dict[str, str] = {
    "ViT-B/32": f"{_BASE}/40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/"
    "ViT-B-32.pt",
    "ViT-B/16": f"{_BASE}/5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/"
    "ViT-B-16.pt",
    "ViT-L/14": f"{_BASE}/b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/"
    "ViT-L-14.pt",
    "ViT-L/14@336px": f"{_BASE}/3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02/"
    "ViT-L-14-336px.pt",
}

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_CHUNK = 1 << 20
_TRUTHY = {"1", "true", "yes", "on"}
_RETRY_STATUS = {408, 425, 429}
_USER_AGENT = "claver-downloader/1 (+python-urllib)"
_sleep = time.sleep  # tests replace this to avoid real back-off waits

#: Defaults of the bounds (see the module docstring) and the variables that override them.
DEFAULT_MAX_BYTES = 4 << 30
DEFAULT_STALL_TIMEOUT = 30.0
DEFAULT_DEADLINE = 7200.0
MAX_BYTES_ENV = "CLAVER_MAX_DOWNLOAD_BYTES"
STALL_TIMEOUT_ENV = "CLAVER_DOWNLOAD_STALL_TIMEOUT"
DEADLINE_ENV = "CLAVER_DOWNLOAD_DEADLINE"


class DownloadError(RuntimeError):
    """A file could not be obtained or failed verification (message says what to do)."""


class _RetryableError(Exception):
    """A transient failure (connection dropped, 5xx): retry, resuming the .part file."""


class _DeadlinePassed(Exception):
    """The overall deadline cut the transfer off."""


class _Limits:
    """The bounds of one :func:`download` call (arguments, else environment, else defaults)."""

    def __init__(self, timeout: float | None, deadline: float | None, max_bytes: int | None,
                 size: int | None) -> None:
        self.stall = _setting(timeout, STALL_TIMEOUT_ENV, DEFAULT_STALL_TIMEOUT, "timeout")
        self.deadline = _setting(deadline, DEADLINE_ENV, DEFAULT_DEADLINE, "deadline")
        self.max_bytes = max(1, int(_setting(max_bytes, MAX_BYTES_ENV, DEFAULT_MAX_BYTES,
                                             "max_bytes")))
        if size is not None and (isinstance(size, bool) or not isinstance(size, int)
                                 or size < 0):
            raise ValueError(f"size must be a byte count >= 0, got {size!r}")
        self.size = size

    @property
    def cap(self) -> int:
        """Most bytes the whole file may have."""
        return self.size if self.size is not None else self.max_bytes


def _setting(value: float | None, env: str, default: float, name: str) -> float:
    if value is None:
        text = os.environ.get(env, "").strip()
        if not text:
            return default
        source = f"{env}={text[:40]!r}"
        try:
            value = float(text)
        except ValueError:
            value = None
        fix = "; fix it or unset it"
    else:
        source, fix = f"{name}={value!r}", ""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"{source}: need a positive finite number{fix}")
    return float(value)


def sha256_file(path: str | Path, *, chunk_size: int = _CHUNK) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def openai_sha256(url: str) -> str:
    """The sha256 encoded in an OpenAI CLIP URL: the path segment before the file name."""
    parts = [p for p in urllib.parse.urlparse(url).path.split("/") if p]
    if len(parts) < 2 or not _HEX64.match(parts[-2]):
        raise ValueError(f"No sha256 path segment before the file name in {url!r}")
    return parts[-2].lower()


def default_cache_dir() -> Path:
    """``$CLAVER_CACHE`` if set, else ``~/.cache/claver``."""
    env = os.environ.get("CLAVER_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "claver"


def _offline_from_env() -> bool:
    return any(os.environ.get(k, "").strip().lower() in _TRUTHY
               for k in ("CLAVER_OFFLINE", "HF_HUB_OFFLINE"))


# -------------------------------------------------------------------------------- sidecar


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _write_sidecar(path: Path, sha256: str) -> None:
    st = path.stat()
    record = {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    side = _sidecar(path)
    tmp = side.with_name(side.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record) + "\n")
    os.replace(tmp, side)


def _sidecar_sha256(path: Path) -> str | None:
    """The sha256 the sidecar records for ``path``, if it still describes the file (same size
    and mtime)."""
    try:
        record = json.loads(_sidecar(path).read_text())
        st = path.stat()
    except (OSError, ValueError):
        return None
    if (not isinstance(record, dict) or record.get("size") != st.st_size
            or record.get("mtime_ns") != st.st_mtime_ns):
        return None
    return str(record.get("sha256", "")).lower() or None


def _known_verified(path: Path, sha256: str) -> bool:
    """Whether the sidecar vouches for ``path`` having ``sha256`` (same size and mtime)."""
    return _sidecar_sha256(path) == sha256


def _verify_existing(path: Path, sha256: str) -> tuple[bool, str | None]:
    """(ok, actual hash or None if not hashed). Hashes only when the sidecar cannot vouch."""
    if not path.is_file():
        return False, None
    if _known_verified(path, sha256):
        return True, sha256
    actual = sha256_file(path)
    if actual == sha256:
        _write_sidecar(path, sha256)
        return True, actual
    return False, actual


# -------------------------------------------------------------------------------- locking


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive inter-process lock (POSIX flock; a no-op elsewhere), e.g. for DDP ranks."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# -------------------------------------------------------------------------------- transfer


def _progress_bar(total: int | None, initial: int, name: str, enabled: bool) -> Any:
    if not enabled or total is None:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
                desc=name, file=sys.stderr, leave=False)


def _content_range_start(value: str | None) -> int | None:
    match = re.match(r"^\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*$", value or "")
    return int(match.group(1)) if match else None


def _hash_prefix(part: Path) -> tuple[Any, int]:
    digest = hashlib.sha256()
    size = 0
    if part.is_file():
        with open(part, "rb") as f:
            while block := f.read(_CHUNK):
                digest.update(block)
                size += len(block)
    return digest, size


def _copy_body(response: Any, out: BinaryIO, digest: Any, bar: Any, allowed: int,
               limits: _Limits, url: str, part: Path) -> int:
    """Copy the body to ``out``; at most ``allowed`` bytes are written (more is refused)."""
    received = 0
    while True:
        try:
            block = response.read(min(_CHUNK, allowed - received + 1))
        except (OSError, ValueError, http.client.HTTPException) as exc:  # reset, timeout ...
            if isinstance(exc, TimeoutError):
                raise _RetryableError(_stall_message(limits, received)) from exc
            raise _RetryableError(f"connection lost after {received} bytes ({exc})") from exc
        if not block:
            return received
        if received + len(block) > allowed:
            out.close()
            part.unlink(missing_ok=True)
            raise DownloadError(_too_big_message(url, limits, "sent"))
        out.write(block)
        digest.update(block)
        received += len(block)
        if bar is not None:
            bar.update(len(block))


def _stall_message(limits: _Limits, received: int) -> str:
    return (f"no data for {limits.stall:g} s after {received} bytes (stall timeout: set "
            f"{STALL_TIMEOUT_ENV}=SECONDS or timeout=... for a slow server)")


def _too_big_message(url: str, limits: _Limits, how: str, announced: int | None = None) -> str:
    what = f"announces {announced} bytes" if announced is not None else f"{how} more bytes"
    if limits.size is not None:
        return (f"Download of {mask_url(url)} refused: the server {what} than the expected "
                f"size of {limits.size} bytes; the partial file was deleted. Check the URL.")
    return (f"Download of {mask_url(url)} refused: the server {what} than the limit of "
            f"{limits.max_bytes} bytes; the partial file was deleted. If the file is really "
            f"that large, set {MAX_BYTES_ENV}=BYTES (or max_bytes=...).")


def _check_redirect(old_url: str, new_url: str) -> None:
    old = urllib.parse.urlsplit(old_url).scheme.lower()
    new = urllib.parse.urlsplit(new_url).scheme.lower()
    if new not in ("http", "https") or (old == "https" and new == "http"):
        raise DownloadError(f"Download of {mask_url(old_url)} refused: redirected to "
                            f"{mask_url(new_url)} ({old} -> {new or 'no scheme'}); only http(s) "
                            "redirects are followed, never https to plain http. Use a URL "
                            "served over https end to end.")


def _fetch_once(url: str, part: Path, *, limits: _Limits, deadline: Deadline,
                progress: bool) -> Any:
    """One HTTP attempt that extends ``part``; returns the sha256 object of the whole part."""
    if part.is_file() and part.stat().st_size > limits.cap:
        part.unlink()  # cannot be a prefix of the file we want
    digest, have = _hash_prefix(part)
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    opener = guarded_opener(deadline, check_redirect=_check_redirect,
                            use_proxies=not is_loopback(url))
    try:
        response = opener.open(request, timeout=max(0.01, min(limits.stall,
                                                              deadline.remaining())))
    except urllib.error.HTTPError as exc:
        exc.close()
        if deadline.expired:
            raise _DeadlinePassed() from exc
        if exc.code == 416 and have:  # nothing left to send: the part is complete
            return digest
        reason = f"HTTP {exc.code} {exc.reason}"
        if exc.code >= 500 or exc.code in _RETRY_STATUS:
            raise _RetryableError(reason) from exc
        raise DownloadError(f"Download of {mask_url(url)} failed: {reason}.") from exc
    except (OSError, ValueError, http.client.HTTPException) as exc:  # refused, timeout, reset
        if deadline.expired:
            raise _DeadlinePassed() from exc
        reason = getattr(exc, "reason", exc)
        if isinstance(exc, TimeoutError) or isinstance(reason, TimeoutError):
            raise _RetryableError(_stall_message(limits, 0)) from exc
        raise _RetryableError(f"cannot connect ({reason})") from exc

    with response:
        status = response.status
        length_header = response.headers.get("Content-Length")
        length = int(length_header) if length_header and length_header.isdigit() else None
        mode = "ab"
        if status == 206:
            if _content_range_start(response.headers.get("Content-Range")) != have:
                part.unlink(missing_ok=True)  # cannot splice it: start again from byte 0
                raise _RetryableError("server answered the range request with another range")
        else:  # 200: a full body (the server ignored or did not get a range request)
            mode, have = "wb", 0
            digest = hashlib.sha256()
        if length is not None and have + length > limits.cap:
            if mode == "wb":
                part.unlink(missing_ok=True)
            raise DownloadError(_too_big_message(url, limits, "", announced=have + length))
        allowed = limits.cap - have if length is None else length
        total = None if length is None else have + length
        bar = _progress_bar(total, have, part.name.removesuffix(".part"), progress)
        try:
            with open(part, mode) as out:
                received = _copy_body(response, out, digest, bar, allowed, limits, url, part)
                out.flush()
                os.fsync(out.fileno())
        finally:
            if bar is not None:
                bar.close()
    if deadline.expired and (length is None or received < length):
        raise _DeadlinePassed()  # the end of the body may be the deadline cutting it off
    if length is not None and received < length:
        raise _RetryableError(f"connection closed after {received} of {length} bytes")
    return digest


def _target_path(url: str, cache_dir: str | Path | None, filename: str | None) -> Path:
    name = filename or urllib.parse.unquote(urllib.parse.urlparse(url).path.rsplit("/", 1)[-1])
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ValueError(f"Cannot derive a file name from {mask_url(url)!r}; pass filename=...")
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / name


def download(
    url: str,
    sha256: str,
    *,
    cache_dir: str | Path | None = None,
    filename: str | None = None,
    offline: bool | None = None,
    progress: bool = True,
    timeout: float | None = None,
    retries: int = 3,
    size: int | None = None,
    max_bytes: int | None = None,
    deadline: float | None = None,
) -> Path:
    """Path of the verified file for ``url`` in the cache, downloading it if needed.

    The file is ``<cache_dir>/<filename>`` (default name: the URL's last path segment). A file
    already verified is returned without network access. Transient failures (dropped
    connection, stall, HTTP 5xx/429) are retried ``retries`` times with back-off, resuming the
    ``.part`` file. ``size`` (bytes, when known), ``max_bytes``, ``timeout`` (stall seconds)
    and ``deadline`` (seconds for the whole call) bound the transfer (see the module
    docstring for their environment variables and defaults). Raises :class:`DownloadError`
    on HTTP errors, a sha256 mismatch, a body over its bound, the deadline, exhausted
    retries, or when offline and the file is missing.
    """
    expected = sha256.strip().lower()
    if not _HEX64.match(expected):
        raise ValueError(f"sha256 must be 64 hex characters, got {sha256!r}")
    target = _target_path(url, cache_dir, filename)
    part = target.with_name(target.name + ".part")
    offline = _offline_from_env() if offline is None else offline
    limits = _Limits(timeout, deadline, max_bytes, size)

    ok, actual = _verify_existing(target, expected)
    if ok:
        return target
    if offline:
        raise DownloadError(_offline_message(url, target, expected, actual))

    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.with_name(target.name + ".lock")):
        ok, _ = _verify_existing(target, expected)  # another process may have finished it
        if ok:
            return target
        _download_verified(url, target, part, expected, limits=limits, progress=progress,
                           retries=retries)
    return target


def download_unverified(
    url: str,
    *,
    sha256_prefix: str | None = None,
    cache_dir: str | Path | None = None,
    filename: str | None = None,
    progress: bool = True,
    timeout: float | None = None,
    retries: int = 3,
    size: int | None = None,
    max_bytes: int | None = None,
    deadline: float | None = None,
) -> tuple[Path, str]:
    """(path, sha256) of a file with no published checksum, downloading it if missing.

    The same transfer and bounds as :func:`download` (resume, retries, lock, atomic rename),
    but the content can only be checked against ``sha256_prefix`` (e.g. the 8 hex digits some
    projects put in file names); callers decide whether unverified files are acceptable and
    whether the network may be used. The computed sha256 is recorded in the sidecar.
    """
    target = _target_path(url, cache_dir, filename)
    limits = _Limits(timeout, deadline, max_bytes, size)
    if target.is_file():
        return target, _sidecar_sha256(target) or sha256_file(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    with _file_lock(target.with_name(target.name + ".lock")):
        if target.is_file():  # another process finished it
            return target, _sidecar_sha256(target) or sha256_file(target)
        with Deadline(limits.deadline) as clock:
            digest = _transfer_with_retries(url, part, limits=limits, deadline=clock,
                                            progress=progress, retries=retries).hexdigest()
        prefix = (sha256_prefix or "").lower()
        if prefix and not digest.startswith(prefix):
            part.unlink(missing_ok=True)
            raise DownloadError(f"Download of {mask_url(url)} is corrupt: sha256 {digest} does "
                                f"not start with the published {prefix}; the partial file was "
                                "deleted, retry")
        os.replace(part, target)
        _write_sidecar(target, digest)
    return target, digest


def _deadline_message(url: str, part: Path, limits: _Limits) -> str:
    kept = part.stat().st_size if part.is_file() else 0
    note = (f" The partial file {part} ({kept} bytes) was kept; running the same call again "
            "resumes it." if kept else "")
    return (f"Download of {mask_url(url)} did not finish within the {limits.deadline:g} s "
            f"deadline. On a slow connection set {DEADLINE_ENV}=SECONDS (or deadline=...)."
            + note)


def _transfer_with_retries(url: str, part: Path, *, limits: _Limits, deadline: Deadline,
                           progress: bool, retries: int) -> Any:
    shown = mask_url(url)
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:
        raise DownloadError(f"Download of {shown} refused: not a valid URL ({exc})") from None
    if parts.username is not None or parts.password is not None:
        raise DownloadError(f"Download of {shown} refused: the URL carries credentials "
                            "(user-info), which the downloader never sends; use a URL without "
                            "them.")
    attempt = 0
    while True:
        try:
            return _fetch_once(url, part, limits=limits, deadline=deadline, progress=progress)
        except _DeadlinePassed:
            raise DownloadError(_deadline_message(url, part, limits)) from None
        except _RetryableError as exc:
            if deadline.expired:
                raise DownloadError(_deadline_message(url, part, limits)) from exc
            attempt += 1
            if attempt > retries:
                kept = part.is_file() and part.stat().st_size > 0
                note = (f" The partial file {part} ({part.stat().st_size} bytes) was kept; "
                        "running the same call again resumes it." if kept else "")
                raise DownloadError(
                    f"Download of {shown} failed after {attempt} attempt(s): {exc}.{note}"
                ) from exc
            _sleep(min(2.0 ** (attempt - 1), 30.0, deadline.remaining()))
            if deadline.expired:
                raise DownloadError(_deadline_message(url, part, limits)) from exc


def _download_verified(url: str, target: Path, part: Path, expected: str, *, limits: _Limits,
                       progress: bool, retries: int) -> None:
    stale_part_possible = part.is_file() and part.stat().st_size > 0
    with Deadline(limits.deadline) as clock:
        options = {"limits": limits, "deadline": clock, "progress": progress,
                   "retries": retries}
        actual = _transfer_with_retries(url, part, **options).hexdigest()
        if actual != expected and stale_part_possible:
            # A .part left by an earlier run may belong to another file version: a clean retry.
            part.unlink(missing_ok=True)
            actual = _transfer_with_retries(url, part, **options).hexdigest()
    if actual != expected:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"Download of {mask_url(url)} is corrupt: sha256 {actual} != expected {expected}. "
            "The partial file was deleted; check the URL and hash, then retry."
        )
    os.replace(part, target)
    _write_sidecar(target, expected)


def _offline_message(url: str, target: Path, expected: str, actual: str | None) -> str:
    if actual is not None:
        found = f"The file at {target} has sha256 {actual}, expected {expected}."
    else:
        found = f"{target} does not exist."
    return (
        f"Offline mode (offline=True, CLAVER_OFFLINE or HF_HUB_OFFLINE) forbids downloading. "
        f"{found} Fetch {mask_url(url)} on a machine with internet access and place it at "
        f"exactly {target} (sha256 {expected}), or allow downloads."
    )
