"""Where videos come from: a folder + video list, or an uncompressed ``.tar`` read in place.

A source holds ``entries`` (:class:`VideoEntry`: path, labels, list line) and opens entry
``i`` as something :class:`claver.data.decode.VideoReader` accepts: a path, bytes, or a
seekable binary file object. Missing videos are never dropped: they stay in ``entries``,
``missing()`` lists them, and ``open`` raises :class:`FileNotFoundError` naming them.

This module holds :class:`FolderSource` and re-exports the annotation helpers
(:mod:`claver.data.annotations`) and the tar pieces (:mod:`claver.data.tar_source`:
:class:`TarSource`, :class:`RangeFile`, the index and the archive errors).
"""

from __future__ import annotations

import errno
import os
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
from claver.data.tar_source import (
    INDEX_FORMAT,
    INDEX_VERSION,
    ArchiveError,
    CompressedTarError,
    RangeFile,
    TarMemberError,
    TarSource,
    check_uncompressed_tar,
    load_tar_index,
)

__all__ = [  # annotation helpers are re-exported: claver.data.sources is the public module
    "VIDEO_EXTENSIONS", "AnnotationError", "ArchiveError", "CompressedTarError",
    "ConvertedDataset", "FolderSource", "RangeFile", "TarMemberError", "TarSource",
    "VideoEntry", "VideoSource", "check_uncompressed_tar",
    "convert_folder_tree", "convert_hmdb51", "convert_kinetics", "convert_ucf101",
    "find_missing", "load_tar_index", "read_labels", "read_video_list", "write_labels",
    "write_video_list", "INDEX_FORMAT", "INDEX_VERSION",
]


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

