"""Verified, resumable downloads of named weights (standard library HTTP only).

:func:`download` keeps files in a cache directory (``$CLAVER_CACHE`` or ``~/.cache/claver``).
A file whose sha256 was verified once is returned later without network access and without
re-hashing (a ``<file>.sha256`` sidecar records hash, size and mtime). A download goes to
``<file>.part``, resumes with an HTTP ``Range`` request after an interruption, is hashed while
written, checked against the expected sha256 and only then moved into place atomically.
Offline mode (``offline=True``, ``CLAVER_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``) never touches the
network and says where to put the file by hand.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
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


class DownloadError(RuntimeError):
    """A file could not be obtained or failed verification (message says what to do)."""


class _RetryableError(Exception):
    """A transient failure (connection dropped, 5xx): retry, resuming the .part file."""


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


def _copy_body(response: Any, out: BinaryIO, digest: Any, bar: Any) -> int:
    received = 0
    while True:
        try:
            block = response.read(_CHUNK)
        except (OSError, http.client.HTTPException) as exc:  # reset, timeout, IncompleteRead
            raise _RetryableError(f"connection lost after {received} bytes ({exc})") from exc
        if not block:
            return received
        out.write(block)
        digest.update(block)
        received += len(block)
        if bar is not None:
            bar.update(len(block))


def _fetch_once(url: str, part: Path, *, timeout: float, progress: bool) -> Any:
    """One HTTP attempt that extends ``part``; returns the sha256 object of the whole part."""
    digest, have = _hash_prefix(part)
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and have:  # nothing left to send: the part is complete
            return digest
        reason = f"HTTP {exc.code} {exc.reason}"
        if exc.code >= 500 or exc.code in _RETRY_STATUS:
            raise _RetryableError(reason) from exc
        raise DownloadError(f"Download of {url} failed: {reason}.") from exc
    except (OSError, http.client.HTTPException) as exc:  # URLError, refused, timeout, reset
        reason = getattr(exc, "reason", exc)
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
        total = None if length is None else have + length
        bar = _progress_bar(total, have, part.name.removesuffix(".part"), progress)
        try:
            with open(part, mode) as out:
                received = _copy_body(response, out, digest, bar)
                out.flush()
                os.fsync(out.fileno())
        finally:
            if bar is not None:
                bar.close()
    if length is not None and received < length:
        raise _RetryableError(f"connection closed after {received} of {length} bytes")
    return digest


def _target_path(url: str, cache_dir: str | Path | None, filename: str | None) -> Path:
    name = filename or urllib.parse.unquote(urllib.parse.urlparse(url).path.rsplit("/", 1)[-1])
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ValueError(f"Cannot derive a file name from {url!r}; pass filename=...")
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
    timeout: float = 30,
    retries: int = 3,
) -> Path:
    """Path of the verified file for ``url`` in the cache, downloading it if needed.

    The file is ``<cache_dir>/<filename>`` (default name: the URL's last path segment). A file
    already verified is returned without network access. Transient failures (dropped
    connection, HTTP 5xx/429) are retried ``retries`` times with back-off, resuming the
    ``.part`` file. Raises :class:`DownloadError` on HTTP errors, a sha256 mismatch, exhausted
    retries, or when offline and the file is missing.
    """
    expected = sha256.strip().lower()
    if not _HEX64.match(expected):
        raise ValueError(f"sha256 must be 64 hex characters, got {sha256!r}")
    target = _target_path(url, cache_dir, filename)
    part = target.with_name(target.name + ".part")
    offline = _offline_from_env() if offline is None else offline

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
        _download_verified(url, target, part, expected, timeout=timeout, progress=progress,
                           retries=retries)
    return target


def download_unverified(
    url: str,
    *,
    sha256_prefix: str | None = None,
    cache_dir: str | Path | None = None,
    filename: str | None = None,
    progress: bool = True,
    timeout: float = 30,
    retries: int = 3,
) -> tuple[Path, str]:
    """(path, sha256) of a file with no published checksum, downloading it if missing.

    The same transfer as :func:`download` (resume, retries, lock, atomic rename), but the
    content can only be checked against ``sha256_prefix`` (e.g. the 8 hex digits some
    projects put in file names); callers decide whether unverified files are acceptable and
    whether the network may be used. The computed sha256 is recorded in the sidecar.
    """
    target = _target_path(url, cache_dir, filename)
    if target.is_file():
        return target, _sidecar_sha256(target) or sha256_file(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    with _file_lock(target.with_name(target.name + ".lock")):
        if target.is_file():  # another process finished it
            return target, _sidecar_sha256(target) or sha256_file(target)
        digest = _transfer_with_retries(url, part, timeout=timeout, progress=progress,
                                        retries=retries).hexdigest()
        prefix = (sha256_prefix or "").lower()
        if prefix and not digest.startswith(prefix):
            part.unlink(missing_ok=True)
            raise DownloadError(f"Download of {url} is corrupt: sha256 {digest} does not start "
                                f"with the published {prefix}; the partial file was deleted, "
                                "retry")
        os.replace(part, target)
        _write_sidecar(target, digest)
    return target, digest


def _transfer_with_retries(url: str, part: Path, *, timeout: float, progress: bool,
                           retries: int) -> Any:
    attempt = 0
    while True:
        try:
            return _fetch_once(url, part, timeout=timeout, progress=progress)
        except _RetryableError as exc:
            attempt += 1
            if attempt > retries:
                kept = part.is_file() and part.stat().st_size > 0
                note = (f" The partial file {part} ({part.stat().st_size} bytes) was kept; "
                        "running the same call again resumes it." if kept else "")
                raise DownloadError(
                    f"Download of {url} failed after {attempt} attempt(s): {exc}.{note}"
                ) from exc
            _sleep(min(2.0 ** (attempt - 1), 30.0))


def _download_verified(url: str, target: Path, part: Path, expected: str, *, timeout: float,
                       progress: bool, retries: int) -> None:
    stale_part_possible = part.is_file() and part.stat().st_size > 0
    options = {"timeout": timeout, "progress": progress, "retries": retries}
    actual = _transfer_with_retries(url, part, **options).hexdigest()
    if actual != expected and stale_part_possible:
        # A .part left by an earlier run may belong to another file version: one clean retry.
        part.unlink(missing_ok=True)
        actual = _transfer_with_retries(url, part, **options).hexdigest()
    if actual != expected:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"Download of {url} is corrupt: sha256 {actual} != expected {expected}. "
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
        f"{found} Fetch {url} on a machine with internet access and place it at exactly {target} "
        f"(sha256 {expected}), or allow downloads."
    )
