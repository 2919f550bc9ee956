"""Videos read in place from an uncompressed ``.tar``: :class:`TarSource`, its member index
and :class:`RangeFile` (a read-only view of one byte range of the archive).

Tar archives are indexed once (member name -> data offset, size) with :mod:`tarfile`; the
index is cached as JSON next to the archive (``<tar>.index.json``) keyed by the archive's size
and mtime, so a changed archive is re-indexed. Members are read through :class:`RangeFile`
over a descriptor opened lazily in each process (DataLoader workers forked after the source
was built open their own), with ``os.pread`` so that many readers can share it. Nothing is
ever extracted.

A problem with one member is a failure of that video only (``TarSource.open`` raises
:class:`TarMemberError`, a ``VideoDecodeError``, or :class:`FileNotFoundError`; both are
among the dataset's ``READ_ERRORS``): building the index records it and goes on. A compressed
archive is refused with a repack command that writes a new file and never overwrites one.
Import these names from :mod:`claver.data.sources`.
"""

from __future__ import annotations

import errno
import io
import json
import os
import posixpath
import shlex
import tempfile
import threading
import warnings
from typing import TYPE_CHECKING

from claver.data.annotations import VIDEO_EXTENSIONS, PathLike, VideoEntry, read_video_list
from claver.data.video_source import VideoDecodeError

if TYPE_CHECKING:
    from tarfile import TarInfo

INDEX_FORMAT = "claver-tar-index"
INDEX_VERSION = 2

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


class CompressedTarError(ArchiveError):
    """A compressed archive; ``command`` repacks it into ``target`` (a new file)."""

    def __init__(self, message: str, *, command: str, target: str) -> None:
        super().__init__(message)
        self.command, self.target = command, target


class TarMemberError(VideoDecodeError, ArchiveError):
    """One member of a tar archive cannot be read as a video: a per-video failure.

    It is a :class:`~claver.data.decode.VideoDecodeError` (one of the dataset's
    ``READ_ERRORS``), so ``VideoDataset(on_error="skip")`` skips and reports the video and
    ``claver data check`` lists it; ``archive``, ``member``, ``reason`` and ``hint`` (the fix)
    are attributes, and the message holds them all.
    """

    def __init__(self, archive: str, member: str, reason: str, hint: str = "") -> None:
        self.archive, self.member = archive, member
        super().__init__(f"{archive}:{member}", reason, hint)

    def __reduce__(self):  # picklable across processes despite the custom signature
        return type(self), (self.archive, self.member, self.reason, self.hint)

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
        if len(data) < n:  # the file ends inside the range: never hand out short data
            raise EOFError(
                f"{self.name}: the file ends at byte {self.offset + self._pos}, "
                f"{self.size - self._pos} bytes before the end of this range (bytes "
                f"{self.offset}-{self.offset + self.size}): it was cut off or rewritten after "
                "it was indexed. Fix: restore or re-download the archive"
            )
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

_BLOCK = 512  # tar header and data alignment
_MAX_LINK_HOPS = 16
_FIX_RECREATE = ("re-create the archive from the video files (`tar -cf NEW.tar -C video_root .`)"
                 ", or drop the video from the list")
_FIX_LINK = ("re-create the archive with the files stored in place of links (GNU tar: "
             "`tar -chf NEW.tar --hard-dereference -C video_root .`), or drop the video from "
             "the list")
_FIX_CUT = ("fetch or copy the archive again (an incomplete download or copy?) and compare its "
            "size or checksum with the original")
_SPECIAL_KINDS = (("ischr", "character device"), ("isblk", "block device"),
                  ("isfifo", "FIFO (named pipe)"))


def _member_key(name: str) -> str:
    """Normalised member name: forward slashes, no ``./`` or leading ``/``."""
    name = posixpath.normpath(name.replace("\\", "/")).lstrip("/")
    return "" if name == "." else name


def _leaves_archive(raw: str, key: str) -> str | None:
    """How the member name ``raw`` (normalised: ``key``) leaves the archive, or None."""
    name = raw.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":" and name[0].isalpha()):
        return "is an absolute path"
    if key == ".." or key.startswith("../"):
        return "climbs out of the archive with '..'"
    return None


def _quote(path: str) -> str:
    """``path`` as one shell word that no command takes for an option."""
    return shlex.quote("./" + path if path.startswith("-") else path)


def _repack_target(path: str) -> str:
    """A new, not yet existing file name for the uncompressed copy of ``path``."""
    lower = path.lower()
    suffix = next((s for s in (*_COMPRESSED_SUFFIXES, ".tar") if lower.endswith(s)), None)
    stem = path[: -len(suffix)] if suffix else os.path.splitext(path)[0]
    names = [stem + ".tar", stem + ".uncompressed.tar"]
    names += [f"{stem}.uncompressed-{k}.tar" for k in range(2, 100)]
    # the input itself, or any existing file (case-insensitive file systems included), is
    # never the target: `> existing` would truncate it before the decompressor reads it
    return next((n for n in names if n != path and not os.path.lexists(n)),
                f"{stem}.uncompressed-{os.getpid()}.tar")  # noclobber still guards it


def check_uncompressed_tar(tar_path: PathLike) -> None:
    """ArchiveError with a repack command when ``tar_path`` is compressed (FileNotFoundError
    when it is missing). The command writes a new file and never overwrites one."""
    path = os.fspath(tar_path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "tar archive not found", path) from None
    for magic, tool, command in _COMPRESSED_MAGIC:
        if head.startswith(magic):
            target = _repack_target(path)
            repack = f"(set -o noclobber; {command} {_quote(path)} > {_quote(target)})"
            raise CompressedTarError(
                f"{path} is {tool}-compressed: reading videos by member offset (random "
                "access, no extraction) needs an uncompressed tar. Repack it once into a new "
                f"file with `{repack}` (the original is kept; noclobber refuses to overwrite "
                f"an existing file) and pass {target} (videos are already compressed, so the "
                "tar is barely larger)", command=repack, target=target)


def _index_stamp(tar_path: str) -> dict:
    st = os.stat(tar_path)
    return {"tar_size": st.st_size, "tar_mtime_ns": st.st_mtime_ns}


def _end_problem(tar_path: str, offset: int, last: str | None) -> str | None:
    """What ends the member headers at ``offset``: None for an end-of-archive marker."""
    with open(tar_path, "rb") as f:
        f.seek(offset)
        block = f.read(_BLOCK)
    after = f"after member {last!r}" if last else "at its start"
    if block == bytes(len(block)) and len(block) == _BLOCK:
        return None
    if not block:
        return (f"the archive stops {after} without an end-of-archive marker; it may be cut "
                "off (an incomplete download or copy?)")
    if len(block) < _BLOCK:
        return f"the archive is cut off inside the member header at byte {offset}, {after}"
    return f"invalid member header at byte {offset} (corrupted data), {after}"


def _scan_member(info: TarInfo, key: str, tar_size: int, members: dict, bad: dict,
                 symlinks: dict) -> None:
    """Record one member: a byte range (``members``), a problem (``bad``: [reason, fix]) or
    a symbolic link to resolve once every member is known (``symlinks``)."""
    outside = _leaves_archive(info.name, key)
    if outside:
        bad[key] = [f"member name {info.name!r} {outside}; it is not read (extracting it "
                    "would write outside the target folder)",
                    "re-create the archive with relative names (`tar -cf NEW.tar -C video_root "
                    ".`) and list the videos by those names"]
    elif info.issparse():
        bad[key] = ["sparse member (stored as data blocks and holes, not as one byte range)",
                    "re-create the archive without GNU tar's --sparse (-S): `tar -cf NEW.tar "
                    "-C video_root .`, or drop the video from the list"]
    elif info.isreg():
        end = info.offset_data + info.size
        if info.size < 0:
            bad[key] = [f"corrupted header: negative size {info.size}", _FIX_RECREATE]
        elif end > tar_size:
            bad[key] = [f"truncated member: it declares {info.size} bytes (to byte {end}) but "
                        f"the archive ends at byte {tar_size}, {end - tar_size} bytes short",
                        _FIX_CUT]
        else:
            members[key] = [info.offset_data, info.size]
    elif info.islnk():  # a hard link names an earlier member of the archive
        target = _member_key(info.linkname)
        if _leaves_archive(info.linkname, target):
            bad[key] = [f"hard link to {info.linkname!r}, outside the archive", _FIX_LINK]
        elif target in members:
            members[key] = members[target]
        elif target in symlinks:
            symlinks[key] = target
        elif target in bad:
            bad[key] = [f"hard link to {target!r}, which is unreadable: {bad[target][0]}",
                        bad[target][1]]
        else:
            bad[key] = [f"hard link to {target!r}, which is not an earlier file of the archive",
                        _FIX_LINK]
    elif info.issym():  # relative to the link's own folder
        target = _member_key(posixpath.join(posixpath.dirname(key), info.linkname))
        if _leaves_archive(info.linkname, target):
            bad[key] = [f"symbolic link to {info.linkname!r}, outside the archive", _FIX_LINK]
        else:
            symlinks[key] = target
    elif not info.isdir():
        kind = next((k for test, k in _SPECIAL_KINDS if getattr(info, test)()),
                    f"member of type {info.type!r}")
        bad[key] = [f"{kind}, not a regular file", _FIX_RECREATE]


def _resolve_symlinks(symlinks: dict, members: dict, bad: dict) -> None:
    """Point every symbolic link at the bytes of the regular member it ends at, or record
    why it cannot be read (dangling, a loop, to an unreadable member or a folder)."""
    for key, target in symlinks.items():
        for _ in range(_MAX_LINK_HOPS):
            if target not in symlinks:
                break
            target = symlinks[target]
        if target in symlinks:
            bad[key] = [f"symbolic link chain longer than {_MAX_LINK_HOPS} links (a loop?)",
                        _FIX_LINK]
        elif target in members:
            members[key] = members[target]
        elif target in bad:
            bad[key] = [f"link to {target!r}, which is unreadable: {bad[target][0]}",
                        bad[target][1]]
        else:
            bad[key] = [f"symbolic link to {target!r}, which is not a file of the archive",
                        _FIX_LINK]


def _build_tar_index(tar_path: str) -> dict:
    """Scan the archive's headers. Damage never stops the scan early: a bad member is
    recorded in ``unreadable`` ({name: [reason, fix]}), damaged headers end it and are
    described in ``damage`` (members before them stay indexed)."""
    import tarfile

    tar_size = os.path.getsize(tar_path)
    members: dict[str, list[int]] = {}
    bad: dict[str, list[str]] = {}
    symlinks: dict[str, str] = {}
    damage = None
    header_errors = (tarfile.TarError, ValueError, OverflowError, EOFError)
    try:
        tf = tarfile.open(tar_path, mode="r:")
    except header_errors as err:
        raise ArchiveError(
            f"{tar_path} is not a readable tar archive ({err}); create it with "
            "`tar -cf archive.tar -C video_root .`"
        ) from None
    with tf:
        last, last_offset = None, -1
        while True:
            try:
                info = tf.next()
            except header_errors as err:
                after = f"after member {last!r}" if last else "at its start"
                damage = f"archive is damaged or truncated {after} ({err})"
                break
            if info is None:  # tarfile stops silently at a cut-off or invalid header
                damage = _end_problem(tar_path, tf.offset, last)
                break
            if info.offset <= last_offset:  # a negative size sent the scan backwards
                damage = (f"member header at byte {info.offset} is read again after member "
                          f"{last!r}: a corrupted size field")
                break
            last_offset = info.offset
            tf.members.clear()  # headers are consumed as we go; keep memory flat
            key = _member_key(info.name)
            if not key:
                continue
            last = info.name
            # duplicated names: the last member wins, as when tar extracts the archive
            members.pop(key, None)
            bad.pop(key, None)
            symlinks.pop(key, None)
            _scan_member(info, key, tar_size, members, bad, symlinks)
    _resolve_symlinks(symlinks, members, bad)
    return {"members": members, "unreadable": bad, "damage": damage}


def _valid_index(index: object, stamp: dict) -> bool:
    """Whether a cached index is ours, for this archive, and well-formed."""
    if not (isinstance(index, dict) and index.get("format") == INDEX_FORMAT
            and index.get("version") == INDEX_VERSION
            and all(index.get(k) == v for k, v in stamp.items())):
        return False
    members, bad, damage = index.get("members"), index.get("unreadable"), index.get("damage")
    return (isinstance(members, dict) and isinstance(bad, dict)
            and (damage is None or isinstance(damage, str))
            and all(isinstance(v, list) and len(v) == 2 and all(type(x) is int for x in v)
                    and v[0] >= 0 and v[1] >= 0 and v[0] + v[1] <= stamp["tar_size"]
                    for v in members.values())
            and all(isinstance(v, list) and len(v) == 2 and all(isinstance(x, str) for x in v)
                    for v in bad.values()))


def load_tar_index(tar_path: PathLike, index_path: PathLike | None = None) -> dict:
    """Index of ``tar_path`` (``{"members": {name: [offset, size]}, "unreadable": {name:
    [reason, fix]}, "damage": str | None}``), cached as JSON.

    The cache at ``index_path`` (default ``<tar>.index.json``) is reused while the archive
    keeps its size and mtime (and the cache is well-formed), and rebuilt otherwise. An
    unwritable cache location only warns.
    """
    tar_path = os.fspath(tar_path)
    index_path = os.fspath(index_path) if index_path is not None else tar_path + ".index.json"
    stamp = _index_stamp(tar_path)
    try:
        with open(index_path, encoding="utf-8") as f:
            cached = json.load(f)
        if _valid_index(cached, stamp):
            return cached
    except (OSError, ValueError, RecursionError):
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

    Every problem of one member is a failure of that video only, raised by :meth:`open`:
    :class:`FileNotFoundError` for a listed name the archive lacks, :class:`TarMemberError`
    (a ``VideoDecodeError``) for a member that cannot be read: truncated (the archive ends
    before its declared size), sparse, a device or FIFO, a name that leaves the archive
    (absolute or ``..``), or a link that does not end at a regular member of the archive.
    Links that do (hard links to an earlier member, relative symbolic links inside the
    archive) read that member's bytes. A duplicated name means its last member, as when tar
    extracts (``tar -rf`` appends newer versions). Damaged headers end the index: members
    before them are read, later ones are missing (a warning says where).
    """

    def __init__(self, tar_path: PathLike, list_file: PathLike | None = None, *,
                 num_classes: int | None = None, index_path: PathLike | None = None) -> None:
        self.tar_path = os.fspath(tar_path)
        check_uncompressed_tar(self.tar_path)
        index = load_tar_index(self.tar_path, index_path)
        self.members: dict[str, tuple[int, int]] = {
            k: (int(v[0]), int(v[1])) for k, v in index["members"].items()
        }
        self.unreadable: dict[str, tuple[str, str]] = {
            k: (v[0], v[1]) for k, v in index["unreadable"].items()
        }
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
        names, classless = [], []
        for name in sorted(n for n in {*self.members, *self.unreadable}
                           if n.lower().endswith(VIDEO_EXTENSIONS)):
            if posixpath.basename(posixpath.dirname(name)) not in ("", ".."):
                names.append(name)
            elif name in self.members:
                raise ArchiveError(
                    f"{self.tar_path}:{name} is not inside a class folder, so its class cannot "
                    "be inferred; store videos as class_name/video.mp4 or pass list_file="
                )
            else:
                classless.append(name)
        if classless:
            warnings.warn(
                f"{self.tar_path}: {len(classless)} unreadable video member(s) outside any "
                f"class folder are left out: {', '.join(map(repr, classless[:5]))}"
                f"{' ...' if len(classless) > 5 else ''} (reasons: `claver data check` with a "
                "list_file)", stacklevel=3)
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
        """A :class:`RangeFile` over entry ``i``'s bytes. FileNotFoundError when the archive
        lacks it, :class:`TarMemberError` when its member cannot be read (both name it)."""
        entry = self.entries[i]
        key = _member_key(entry.path)
        listed = f"listed in {self.list_file}, line {entry.line}; " if self.list_file else ""
        location = self.members.get(key)
        if location is not None:
            offset, size = location
            now = os.fstat(self._file.fileno()).st_size
            if offset + size > now:
                raise TarMemberError(
                    self.tar_path, entry.path,
                    f"{listed}the archive is now {now} bytes, which ends before this member "
                    f"(bytes {offset}-{offset + size}): it was cut off after it was indexed",
                    "restore or re-download the archive (a changed archive is re-indexed)")
            return RangeFile(self._file, offset, size, name=self.describe(i))
        if key in self.unreadable:
            reason, fix = self.unreadable[key]
            raise TarMemberError(self.tar_path, entry.path, listed + reason, fix)
        hint = f"the archive has {len(self.members)} readable members"
        if self.members:
            hint += f", e.g. {next(iter(self.members))!r}; fix the list paths to match"
        if self.damage:
            hint += f"; {self.damage}, so later members are missing"
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
