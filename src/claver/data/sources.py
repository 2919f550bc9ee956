"""Where videos come from: a folder + video list, or an uncompressed ``.tar`` read in place.

A source holds ``entries`` (:class:`VideoEntry`: path, labels, list line) and opens entry
``i`` as something :class:`claver.data.decode.VideoReader` accepts: a path, bytes, or a
seekable binary file object. Missing videos are never dropped: they stay in ``entries``,
``missing()`` lists them, and ``open`` raises :class:`FileNotFoundError` naming them.

Tar archives are indexed once (member name -> data offset, size) with :mod:`tarfile`; the
index is cached as JSON next to the archive (``<tar>.index.json``) keyed by the archive's size
and mtime, so a changed archive is re-indexed. Members are read through :class:`RangeFile`,
a read-only view of one byte range of the archive over a descriptor opened lazily in each
process (DataLoader workers forked after the source was built open their own), with
``os.pread`` so that many readers can share it. Nothing is ever extracted.
"""

from __future__ import annotations

import errno
import io
import json
import os
import posixpath
import tempfile
import threading
import warnings
from typing import BinaryIO, Protocol, runtime_checkable

from claver.data.annotations import (
    VIDEO_EXTENSIONS,
    AnnotationError,
    ConvertedDataset,
    PathLike,
    VideoEntry,
    convert_folder_tree,
    convert_hmdb51,
    convert_kinetics,
    convert_ucf101,
    find_missing,
    read_labels,
    read_video_list,
    write_labels,
    write_video_list,
)

__all__ = [  # annotation helpers are re-exported: claver.data.sources is the public module
    "VIDEO_EXTENSIONS", "AnnotationError", "ArchiveError", "ConvertedDataset", "FolderSource",
    "RangeFile", "TarSource", "VideoEntry", "VideoSource", "check_uncompressed_tar",
    "convert_folder_tree", "convert_hmdb51", "convert_kinetics", "convert_ucf101",
    "find_missing", "load_tar_index", "read_labels", "read_video_list", "write_labels",
    "write_video_list",
]

INDEX_FORMAT = "claver-tar-index"
INDEX_VERSION = 1

# (magic bytes, compressor name, decompress command)
_COMPRESSED_MAGIC = (
    (b"\x1f\x8b", "gzip", "gzip -dc"),
    (b"BZh", "bzip2", "bzip2 -dc"),
    (b"\xfd7zXZ\x00", "xz", "xz -dc"),
    (b"\x28\xb5\x2f\xfd", "zstd", "zstd -dc"),
    (b"\x04\x22\x4d\x18", "lz4", "lz4 -dc"),
)
_COMPRESSED_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar.zst",
                        ".tar.lz4")
_OPEN_LOCK = threading.Lock()


def _reset_open_lock() -> None:
    """A forked child must not inherit a lock that a parent thread was holding."""
    global _OPEN_LOCK
    _OPEN_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_open_lock)


class ArchiveError(ValueError):
    """A tar archive (or one of its members) that cannot be read by offset."""


@runtime_checkable
class VideoSource(Protocol):
    """What datasets need from a source of annotated videos."""

    entries: list[VideoEntry]

    def __len__(self) -> int: ...

    def open(self, i: int) -> str | bytes | BinaryIO:
        """Entry ``i`` as a path, bytes or seekable binary file (FileNotFoundError if absent)."""
        ...

    def describe(self, i: int) -> str:
        """Where entry ``i`` lives, for messages (a full path, ``archive.tar:member``)."""
        ...


# --------------------------------------------------------------------------- folder


class FolderSource:
    """Videos in a folder, listed (relative to ``root``) by a video list file."""

    def __init__(self, root: PathLike, list_file: PathLike, *, num_classes: int | None = None):
        self.root = os.fspath(root)
        self.list_file = os.fspath(list_file)
        self.entries: list[VideoEntry] = read_video_list(list_file, num_classes=num_classes)
        self._missing: list[VideoEntry] | None = None

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"FolderSource(root={self.root!r}, list_file={self.list_file!r}, n={len(self)})"

    def describe(self, i: int) -> str:
        """Full path of entry ``i``."""
        return os.path.join(self.root, self.entries[i].path)

    def open(self, i: int) -> str:
        """Full path of entry ``i``; FileNotFoundError (naming it) when it is not a file."""
        path = self.describe(i)
        if not os.path.isfile(path):
            entry = self.entries[i]
            raise FileNotFoundError(
                errno.ENOENT,
                f"video not found (listed in {self.list_file}, line {entry.line}); "
                "fix the path in the list or the root folder",
                path,
            )
        return path

    def missing(self) -> list[VideoEntry]:
        """Entries whose file does not exist (one listing pass, cached after the first call)."""
        if self._missing is None:
            absent = find_missing(self.root, (e.path for e in self.entries))
            self._missing = [e for e in self.entries if e.path in absent]
        return list(self._missing)


# --------------------------------------------------------------------------- byte ranges


class _ProcessLocalFile:
    """A read-only descriptor opened lazily, and again in every process that uses it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None
        self._pid: int | None = None
        self._seek_lock = threading.Lock()

    def fileno(self) -> int:
        pid = os.getpid()
        if self._fd is None or self._pid != pid:
            with _OPEN_LOCK:
                if self._fd is None or self._pid != pid:
                    # A copy inherited through fork is left open: its number may be reused.
                    self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
                    self._pid = pid
                    self._seek_lock = threading.Lock()
        return self._fd

    def pread(self, size: int, offset: int) -> bytes:
        """Up to ``size`` bytes at ``offset`` (fewer only at the end of the file)."""
        fd = self.fileno()
        chunks: list[bytes] = []
        while size > 0:
            if hasattr(os, "pread"):
                chunk = os.pread(fd, size, offset)
            else:  # no pread (Windows): seek + read under a lock
                with self._seek_lock:
                    os.lseek(fd, offset, os.SEEK_SET)
                    chunk = os.read(fd, size)
            if not chunk:
                break
            chunks.append(chunk)
            size -= len(chunk)
            offset += len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = self._pid = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing useful to do
            pass

    def __getstate__(self) -> dict:
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"])


class RangeFile(io.RawIOBase):
    """Seekable read-only file over ``size`` bytes of ``file`` starting at ``offset``.

    ``file`` is a path or a shared per-process handle (as held by :class:`TarSource`).
    Reading past the range returns EOF; seeking past it is allowed (as for files).
    """

    def __init__(self, file: PathLike | _ProcessLocalFile, offset: int, size: int,
                 *, name: str | None = None) -> None:
        super().__init__()
        if offset < 0 or size < 0:
            raise ValueError(f"byte range must be non-negative, got offset {offset} size {size}")
        self._owned = not isinstance(file, _ProcessLocalFile)
        self._file = _ProcessLocalFile(os.fspath(file)) if self._owned else file
        self.offset, self.size = offset, size
        self.name = name if name is not None else f"{self._file.path}[{offset}:{offset + size}]"
        self._pos = 0

    def __repr__(self) -> str:
        return f"RangeFile({self.name!r}, offset={self.offset}, size={self.size})"

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        self._check_closed()
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check_closed()
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}.get(whence)
        if base is None:
            raise ValueError(f"invalid whence {whence!r} (use 0, 1 or 2)")
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        self._check_closed()
        remaining = max(0, self.size - self._pos)
        n = remaining if size is None or size < 0 else min(size, remaining)
        if n == 0:
            return b""
        data = self._file.pread(n, self.offset + self._pos)
        self._pos += len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer) -> int:
        data = self.read(len(memoryview(buffer)))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed and self._owned:
            self._file.close()
        super().close()

    def _check_closed(self) -> None:
        if self.closed:
            raise ValueError(f"I/O operation on closed file {self.name}")


# --------------------------------------------------------------------------- tar index


def _member_key(name: str) -> str:
    """Normalised member name: forward slashes, no ``./`` or leading ``/``."""
    name = posixpath.normpath(name.replace("\\", "/")).lstrip("/")
    return "" if name == "." else name


def check_uncompressed_tar(tar_path: PathLike) -> None:
    """ArchiveError with the repack command when ``tar_path`` is compressed (or missing)."""
    path = os.fspath(tar_path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "tar archive not found", path) from None
    lower = path.lower()
    for magic, tool, command in _COMPRESSED_MAGIC:
        if head.startswith(magic):
            stem = next((path[: -len(s)] for s in _COMPRESSED_SUFFIXES if lower.endswith(s)),
                        os.path.splitext(path)[0])
            target = stem if stem.lower().endswith(".tar") else stem + ".tar"
            raise ArchiveError(
                f"{path} is {tool}-compressed: reading videos by member offset (random "
                "access, no extraction) needs an uncompressed tar. Repack it once with "
                f"`{command} {path} > {target}` and pass {target} (videos are already "
                "compressed, so the tar is barely larger)"
            )


def _index_stamp(tar_path: str) -> dict:
    st = os.stat(tar_path)
    return {"tar_size": st.st_size, "tar_mtime_ns": st.st_mtime_ns}


def _build_tar_index(tar_path: str) -> dict:
    """Scan the archive's headers: regular members, links resolved, damage recorded."""
    import tarfile

    tar_size = os.path.getsize(tar_path)
    members: dict[str, list[int]] = {}
    unreadable: dict[str, str] = {}
    links: dict[str, str] = {}
    damage = None
    try:
        tf = tarfile.open(tar_path, mode="r:")
    except tarfile.TarError as err:
        raise ArchiveError(
            f"{tar_path} is not a readable tar archive ({err}); create it with "
            "`tar -cf archive.tar -C video_root .`"
        ) from None
    with tf:
        last = None
        while True:
            try:
                info = tf.next()
            except tarfile.TarError as err:
                after = f"after member {last!r}" if last else "at its start"
                damage = f"archive is damaged or truncated {after} ({err})"
                break
            if info is None:
                break
            tf.members.clear()  # headers are consumed as we go; keep memory flat
            key = last = _member_key(info.name)
            members.pop(key, None)
            unreadable.pop(key, None)
            links.pop(key, None)
            if info.issparse():
                unreadable[key] = "sparse member (not stored contiguously); re-create the tar"
            elif info.isreg():
                end = info.offset_data + info.size
                if end > tar_size:
                    unreadable[key] = f"truncated: data ends at byte {end} > archive size " \
                                      f"{tar_size}; re-create the tar"
                else:
                    members[key] = [info.offset_data, info.size]
            elif info.islnk():
                links[key] = _member_key(info.linkname)
            elif info.issym():
                links[key] = _member_key(posixpath.join(posixpath.dirname(key), info.linkname))
    for key, target in links.items():
        for _ in range(16):  # follow link chains, bounded
            if target not in links:
                break
            target = links[target]
        if target in members:
            members[key] = members[target]
        else:
            unreadable[key] = f"link to {target!r}, which is not a regular member"
    return {"members": members, "unreadable": unreadable, "damage": damage}


def load_tar_index(tar_path: PathLike, index_path: PathLike | None = None) -> dict:
    """Index of ``tar_path`` (``{"members": {name: [offset, size]}, ...}``), cached as JSON.

    The cache at ``index_path`` (default ``<tar>.index.json``) is reused while the archive
    keeps its size and mtime, and rebuilt otherwise. An unwritable cache location only warns.
    """
    tar_path = os.fspath(tar_path)
    index_path = os.fspath(index_path) if index_path is not None else tar_path + ".index.json"
    stamp = _index_stamp(tar_path)
    try:
        with open(index_path, encoding="utf-8") as f:
            cached = json.load(f)
        if (isinstance(cached, dict) and cached.get("format") == INDEX_FORMAT
                and cached.get("version") == INDEX_VERSION
                and all(cached.get(k) == v for k, v in stamp.items())):
            return cached
    except (OSError, ValueError):
        pass
    index = {"format": INDEX_FORMAT, "version": INDEX_VERSION, **stamp,
             **_build_tar_index(tar_path)}
    directory = os.path.dirname(os.path.abspath(index_path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tar-index.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(index, f, separators=(",", ":"))
            os.replace(tmp, index_path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as err:
        warnings.warn(
            f"could not cache the index of {tar_path} at {index_path} ({err}); it will be "
            "rebuilt next time. Pass index_path= to a writable location",
            stacklevel=2,
        )
    return index


# --------------------------------------------------------------------------- tar source


class TarSource:
    """Videos stored as members of an uncompressed tar archive, read in place by offset.

    Labels come from ``list_file`` (member names as paths). Without it the layout is taken
    as folder-per-class: the directory that directly holds each video member is its class,
    classes sorted by name give the ids (``self.classes``); other members are ignored.
    """

    def __init__(self, tar_path: PathLike, list_file: PathLike | None = None, *,
                 num_classes: int | None = None, index_path: PathLike | None = None) -> None:
        self.tar_path = os.fspath(tar_path)
        check_uncompressed_tar(self.tar_path)
        index = load_tar_index(self.tar_path, index_path)
        self.members: dict[str, tuple[int, int]] = {
            k: (int(v[0]), int(v[1])) for k, v in index["members"].items()
        }
        self.unreadable: dict[str, str] = dict(index["unreadable"])
        self.damage: str | None = index["damage"]
        if self.damage:
            warnings.warn(f"{self.tar_path}: {self.damage}; later members are unreadable",
                          stacklevel=2)
        self.list_file = None if list_file is None else os.fspath(list_file)
        self.classes: list[str] | None = None
        if list_file is not None:
            self.entries: list[VideoEntry] = read_video_list(list_file, num_classes=num_classes)
        else:
            self.classes, self.entries = self._infer_classes(num_classes)
        self._file = _ProcessLocalFile(self.tar_path)
        self._missing: list[VideoEntry] | None = None

    def _infer_classes(self, num_classes: int | None) -> tuple[list[str], list[VideoEntry]]:
        names = sorted(n for n in {*self.members, *self.unreadable}
                       if n.lower().endswith(VIDEO_EXTENSIONS))
        for name in names:
            if "/" not in name:
                raise ArchiveError(
                    f"{self.tar_path}:{name} is not inside a class folder, so its class cannot "
                    "be inferred; store videos as class_name/video.mp4 or pass list_file="
                )
        classes = sorted({posixpath.basename(posixpath.dirname(n)) for n in names})
        if num_classes is not None and len(classes) != num_classes:
            raise ArchiveError(
                f"{self.tar_path} has {len(classes)} class folders but num_classes is "
                f"{num_classes}; pass the matching label file or a list_file"
            )
        ids = {c: i for i, c in enumerate(classes)}
        entries = [VideoEntry(n, (ids[posixpath.basename(posixpath.dirname(n))],), 0)
                   for n in names]
        return classes, entries

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"TarSource({self.tar_path!r}, n={len(self)}, members={len(self.members)})"

    def describe(self, i: int) -> str:
        """``archive.tar:member`` of entry ``i``."""
        return f"{self.tar_path}:{self.entries[i].path}"

    def open(self, i: int) -> RangeFile:
        """A :class:`RangeFile` over entry ``i``'s bytes (FileNotFoundError if absent)."""
        entry = self.entries[i]
        key = _member_key(entry.path)
        location = self.members.get(key)
        if location is not None:
            return RangeFile(self._file, *location, name=self.describe(i))
        listed = f"listed in {self.list_file}, line {entry.line}; " if self.list_file else ""
        if key in self.unreadable:
            raise ArchiveError(f"{self.describe(i)}: unreadable member ({listed}"
                               f"{self.unreadable[key]})")
        hint = f"the archive has {len(self.members)} members"
        if self.members:
            hint += f", e.g. {next(iter(self.members))!r}; fix the list paths to match"
        if self.damage:
            hint += f"; {self.damage}"
        raise FileNotFoundError(errno.ENOENT, f"member not in the archive ({listed}{hint})",
                                self.describe(i))

    def missing(self) -> list[VideoEntry]:
        """Entries that cannot be opened: absent from the archive or unreadable (cached)."""
        if self._missing is None:
            self._missing = [e for e in self.entries if _member_key(e.path) not in self.members]
        return list(self._missing)

    def close(self) -> None:
        """Close this process's descriptor of the archive (reopened on next use)."""
        self._file.close()
