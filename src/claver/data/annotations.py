"""Label files (``id,name`` CSV) and video lists (``relative/path.mp4 LABEL`` per line).

Formats read here, all UTF-8 (a BOM is ignored) with LF or CRLF line ends:

- label file: ``id,name`` rows, optional ``id,name`` header, names quoted when they hold
  commas or quotes; ids must be exactly ``0..C-1`` (any order), names unique.
- video list (plain text): ``path LABEL [LABEL ...]`` per line. Separators are spaces or tabs.
  A path may contain spaces: the labels are the trailing integer tokens. When a line holds a
  tab, everything before the first tab is the path (use this for paths whose last word is a
  number). Blank lines and lines starting with ``#`` are skipped.
- video list (``.csv`` extension): ``path,LABEL`` or ``path,"3,7"`` (several labels in one
  quoted field, comma or space separated) or ``path,3,7``; an optional header whose label
  column is named ``label``/``labels``/``class``/...; ``#`` rows skipped.

Every problem raises :class:`AnnotationError` naming the file, the line, the value (cut to
200 characters) and a fix: also text that is not UTF-8, a CSV field longer than Python's
``csv.field_size_limit()`` (128 KiB), and a quoted CSV field running over several lines (an
unclosed quote would otherwise merge the rows after it into one class).
"""

from __future__ import annotations

import csv
import io
import os
import posixpath
import random
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from claver.fileio import FileFormatError, atomic_write_text, read_text, short_repr

PathLike = str | os.PathLike

VIDEO_EXTENSIONS = (
    ".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".ogv", ".wmv",
)
_INT_RE = re.compile(r"[+-]?\d+")
_TRAILING_LABELS_RE = re.compile(r"^(.*?)((?:[ \t]+[+-]?\d+)+)$")
_LABEL_HEADER_IDS = {"id", "class_id", "label_id", "index"}
_CSV_LABEL_HEADERS = {"label", "labels", "class", "classes", "class_id", "label_id", "target"}


class AnnotationError(ValueError):
    """A label file or video list line that cannot be used as it is.

    Attributes ``path``, ``line`` (1-based; 0 when the problem is the whole file) and
    ``value`` hold what the message names.
    """

    def __init__(self, path: PathLike, line: int, problem: str, value: object, fix: str) -> None:
        self.path = str(path)
        self.line = line
        self.value = value
        where = f"{self.path}, line {line}" if line > 0 else self.path
        super().__init__(f"{where}: {problem}: {short_repr(value)}. Fix: {fix}")


@dataclass(frozen=True)
class VideoEntry:
    """One annotated video: its path as written in the list, its class ids, its list line."""

    path: str
    labels: tuple[int, ...]
    line: int = 0

    @property
    def label(self) -> int:
        """The single class id of a single-label entry (ValueError for multi-label ones)."""
        if len(self.labels) != 1:
            raise ValueError(
                f"{self.path} (list line {self.line}) has {len(self.labels)} labels "
                f"{list(self.labels)}; use .labels for multi-label entries"
            )
        return self.labels[0]


# --------------------------------------------------------------------------- text helpers


def read_annotation_text(path: PathLike) -> str:
    """Whole file as text: UTF-8, BOM dropped, line ends kept for csv."""
    try:
        return read_text(path)
    except FileFormatError as e:
        raise AnnotationError(path, e.line, "not UTF-8 text", e.value,
                              "save the file as UTF-8") from None


def _split_lines(text: str) -> list[str]:
    """Lines split at LF, CRLF or CR only (``str.splitlines`` also splits at form feeds...)."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")




def _line_of(text: str, line: int) -> str:
    return text.split("\n", line)[line - 1][:80] if line > 0 else ""


def _check_last_record(text: str, path: PathLike) -> None:
    """A file ending inside a quoted field (no line end after the quote was opened): the
    lenient reader keeps the field; refuse it like any other unclosed quote."""
    if not text or text.endswith(("\n", "\r")):
        return  # an unclosed quote before a line end is caught as a field spanning lines
    start = text.count("\n") + 1  # the last line: the record that reached the end
    tail = text[text.rfind("\n") + 1:]
    try:
        list(csv.reader([tail], skipinitialspace=True, strict=True))
    except csv.Error as e:
        if "end of data" not in str(e):
            return  # other strict-mode complaints are not ours to raise
        raise AnnotationError(path, start, "the file ends inside a quoted field: the quote "
                              f"opened on line {start} is never closed", tail[:80],
                              "close the quote on that line") from None


def _csv_rows(text: str, path: PathLike) -> Iterable[tuple[int, list[str]]]:
    """``(first line number, fields)`` for every CSV record (blank records included).

    A record is one line: a quoted field that runs into the next line (an unclosed quote,
    which would silently merge the following rows) and a field longer than
    ``csv.field_size_limit()`` are AnnotationErrors naming the line where the record began.
    """
    reader = csv.reader(io.StringIO(text), skipinitialspace=True)
    previous = 0
    while True:
        start = previous + 1
        try:
            row = next(reader)
        except StopIteration:
            _check_last_record(text, path)
            return
        except csv.Error as e:
            if "field limit" not in str(e):
                raise AnnotationError(path, start, f"unreadable CSV record ({e})",
                                      _line_of(text, start),
                                      "fix the quoting on that line") from None
            raise AnnotationError(
                path, start, f"a field runs past {csv.field_size_limit():,} characters "
                f"(read up to line {reader.line_num})", _line_of(text, start),
                f"close the quote opened on line {start} (an unclosed quote swallows the lines "
                "after it), or shorten the field") from None
        if any("\n" in field or "\r" in field for field in row):
            raise AnnotationError(
                path, start, f"a quoted field runs from line {start} to line {reader.line_num}: "
                f"the quote opened on line {start} is not closed on that line",
                _line_of(text, start), 'close the quote on the same line (write "" for a quote '
                "inside a quoted field); a field cannot span lines")
        yield start, row
        previous = reader.line_num


def _is_skipped(row: list[str]) -> bool:
    return not any(field.strip() for field in row) or row[0].lstrip().startswith("#")


# --------------------------------------------------------------------------- label files


def read_labels(path: PathLike) -> list[str]:
    """Class names of an ``id,name`` label CSV, indexed by id (ids must be ``0..C-1``)."""
    names: dict[int, tuple[str, int]] = {}
    lines_of_names: dict[str, int] = {}
    first = True
    for line, row in _csv_rows(read_annotation_text(path), path):
        if _is_skipped(row):
            continue
        fields = [field.strip() for field in row]
        if first and len(fields) == 2 and fields[0].lower() in _LABEL_HEADER_IDS:
            first = False
            continue
        first = False
        if len(fields) != 2:
            raise AnnotationError(
                path, line, f"expected 2 fields 'id,name', found {len(fields)}", ",".join(row),
                'write one "id,name" row per class and quote names that contain commas, '
                'e.g. 3,"pushing car, slowly"',
            )
        raw_id, name = fields
        if not _INT_RE.fullmatch(raw_id):
            raise AnnotationError(path, line, "class id is not an integer", raw_id,
                                  "the first column must be the class id 0..C-1")
        class_id = int(raw_id)
        if class_id < 0:
            raise AnnotationError(path, line, "negative class id", class_id,
                                  "number the classes 0..C-1")
        if not name:
            raise AnnotationError(path, line, f"empty name for class id {class_id}", name,
                                  "give every class a non-empty name")
        if class_id in names:
            raise AnnotationError(path, line, f"class id already used on line "
                                  f"{names[class_id][1]}", class_id, "give every class its own id")
        if name in lines_of_names:
            raise AnnotationError(
                path, line, f"class name already used on line {lines_of_names[name]}", name,
                "class names must be unique (videos are matched to names)",
            )
        names[class_id] = (name, line)
        lines_of_names[name] = line
    if not names:
        raise AnnotationError(path, 0, "no classes in label file", "",
                              "write one 'id,name' row per class")
    expected = set(range(len(names)))
    if set(names) != expected:
        absent = sorted(expected - set(names))
        beyond = min(i for i in names if i > absent[0])
        shown = ", ".join(map(str, absent[:10])) + (" ..." if len(absent) > 10 else "")
        raise AnnotationError(
            path, names[beyond][1],
            f"class ids are not contiguous (ids must be 0..{len(names) - 1}; missing {shown})",
            beyond, "renumber the classes 0..C-1 without gaps (and the video lists to match)",
        )
    return [names[i][0] for i in range(len(names))]


def write_labels(names: Sequence[str], path: PathLike) -> Path:
    """Write an ``id,name`` label CSV (with header) for class names in id order."""
    seen: dict[str, int] = {}
    for class_id, name in enumerate(names):
        if not name.strip() or name.strip() != name or "\n" in name or "\r" in name:
            raise ValueError(f"class {class_id} name {short_repr(name)} is empty or has "
                             "surrounding whitespace or a line break; give it a clean, "
                             "non-empty name")
        if name in seen:
            raise ValueError(
                f"class name {short_repr(name)} is used by ids {seen[name]} and {class_id}; "
                "class names must be unique"
            )
        seen[name] = class_id
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "name"])
    writer.writerows([i, name] for i, name in enumerate(names))
    return atomic_write_text(path, buffer.getvalue())


# --------------------------------------------------------------------------- video lists


def _parse_label_tokens(
    path: PathLike, line: int, tokens: Sequence[str], num_classes: int | None
) -> tuple[int, ...]:
    labels: list[int] = []
    for token in tokens:
        if not _INT_RE.fullmatch(token):
            raise AnnotationError(path, line, "label is not an integer class id", token,
                                  "labels are integer ids from the label file")
        label = int(token)
        if label < 0 or (num_classes is not None and label >= num_classes):
            size = "" if num_classes is None else f" (the label file has {num_classes} classes)"
            valid = "0..C-1" if num_classes is None else f"0..{num_classes - 1}"
            raise AnnotationError(
                path, line, f"label outside the label file{size}", label,
                f"use ids {valid}, or pass the label file this list was made for",
            )
        if label in labels:
            raise AnnotationError(path, line, "label repeated on one line", label,
                                  "list each label of a video once")
        labels.append(label)
    return tuple(labels)


def _parse_plain_line(path: PathLike, line: int, text: str) -> tuple[str, list[str]]:
    if "\t" in text:
        video, _, rest = text.partition("\t")
        video, tokens = video.strip(), rest.split()
    else:
        match = _TRAILING_LABELS_RE.match(text)
        video, tokens = (match.group(1).strip(), match.group(2).split()) if match else ("", [])
    if not video or not tokens:
        raise AnnotationError(
            path, line, "expected 'relative/path.mp4 LABEL' (labels: trailing integers)", text,
            "end the line with the integer class id(s), separated from the path by a space "
            "or a tab",
        )
    return video, tokens


def _parse_csv_list(text: str, path: PathLike) -> Iterable[tuple[int, str, list[str]]]:
    first = True
    for line, row in _csv_rows(text, path):
        if _is_skipped(row):
            continue
        fields = [field.strip() for field in row]
        label_tokens = [t for field in fields[1:] for t in re.split(r"[,\s]+", field) if t]
        if first and len(fields) >= 2 and fields[1].lower() in _CSV_LABEL_HEADERS:
            first = False
            continue
        first = False
        if len(fields) < 2 or not fields[0] or not label_tokens:
            raise AnnotationError(
                path, line, "expected 'path,LABEL' or 'path,\"3,7\"'", ",".join(row),
                "give the video path, then its integer class id(s)",
            )
        yield line, fields[0], label_tokens


def read_video_list(
    path: PathLike, *, num_classes: int | None = None, root: PathLike | None = None
) -> list[VideoEntry]:
    """Entries of a video list (plain text, or CSV when the name ends in ``.csv``).

    ``num_classes``: labels must lie in ``[0, num_classes)``. ``root``: when given, entry
    paths are joined onto it (absolute paths stay as they are); otherwise they are returned
    as written.
    """
    text = read_annotation_text(path)
    if str(path).lower().endswith(".csv"):
        rows = list(_parse_csv_list(text, path))
    else:
        rows = []
        for line, raw in enumerate(_split_lines(text), start=1):
            stripped = raw.strip()
            if stripped and not stripped.startswith("#"):
                rows.append((line, *_parse_plain_line(path, line, stripped)))
    entries = []
    for line, video, tokens in rows:
        labels = _parse_label_tokens(path, line, tokens, num_classes)
        if root is not None:
            video = os.path.join(os.fspath(root), video)
        entries.append(VideoEntry(video, labels, line))
    return entries


def _list_line(entry: VideoEntry, path: PathLike, as_csv: bool) -> str:
    video = entry.path
    if not entry.labels:
        raise ValueError(f"{video} has no label; every entry written to {path} needs one")
    bad_chars = "\r\n" if as_csv else "\r\n\t"
    if not video.strip() or video.strip() != video or any(c in video for c in bad_chars):
        raise ValueError(f"cannot write path {short_repr(video)} to {path}: empty, surrounding "
                         "whitespace, a tab or a line break; rename the file")
    if video.startswith("#"):
        raise ValueError(f"cannot write path {short_repr(video)} to {path}: it would read as a "
                         "comment; "
                         "rename the file or prefix it with './'")
    labels = [str(int(label)) for label in entry.labels]
    if as_csv:
        buffer = io.StringIO()
        field = labels[0] if len(labels) == 1 else ",".join(labels)
        csv.writer(buffer, lineterminator="").writerow([video, field])
        return buffer.getvalue()
    separator = "\t" if any(c.isspace() for c in video) else " "
    return f"{video}{separator}{' '.join(labels)}"


def write_video_list(entries: Iterable[VideoEntry], path: PathLike) -> Path:
    """Write entries as a video list (CSV when the name ends in ``.csv``, else plain text).

    Plain text uses ``path LABEL...``; a path containing spaces is followed by a tab, so the
    file reads back exactly.
    """
    as_csv = str(path).lower().endswith(".csv")
    lines = [_list_line(entry, path, as_csv) for entry in entries]
    if as_csv:
        lines.insert(0, "path,label")
    return atomic_write_text(path, "".join(line + "\n" for line in lines))


def find_missing(root: PathLike, paths: Iterable[str]) -> set[str]:
    """Those of ``paths`` (relative to ``root``, or absolute) that are not regular files.

    One directory listing per distinct parent directory, so a whole dataset is checked in
    a single pass without a ``stat`` per file on network file systems.
    """
    by_dir: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for rel in paths:
        full = os.path.join(os.fspath(root), rel)
        by_dir[os.path.dirname(full)].append((full, rel))
    missing: set[str] = set()
    for directory, items in by_dir.items():
        try:
            with os.scandir(directory or ".") as it:
                files = {e.name for e in it if e.is_file()}
        except OSError:
            files = set()
        # A name absent from the listing gets one stat (case-insensitive file systems).
        missing.update(
            rel for full, rel in items
            if os.path.basename(full) not in files and not os.path.isfile(full)
        )
    return missing


# --------------------------------------------------------------------------- converters


@dataclass(frozen=True)
class ConvertedDataset:
    """What a converter wrote: ``labels.csv``, one list per split, and the videos not found.

    ``lists`` maps split names (``train``, ``val``, ``test``) to list files; ``missing``
    holds the listed paths absent under ``video_root`` (empty when no root was given).
    """

    labels: Path
    lists: dict[str, Path]
    num_classes: int
    missing: list[str]


def _with_ext(path: str, ext: str | None) -> str:
    if not ext:
        return path
    return posixpath.splitext(path)[0] + (ext if ext.startswith(".") else "." + ext)


def _write_dataset(
    out_dir: PathLike, classes: Sequence[str], splits: dict[str, list[VideoEntry]],
    video_root: PathLike | None, keep_missing: bool,
) -> ConvertedDataset:
    missing: set[str] = set()
    if video_root is not None:
        missing = find_missing(video_root, {e.path for es in splits.values() for e in es})
    out = Path(out_dir)
    lists = {}
    for split, entries in splits.items():
        kept = entries if keep_missing else [e for e in entries if e.path not in missing]
        lists[split] = write_video_list(kept, out / f"{split}.txt")
    labels = write_labels(classes, out / "labels.csv")
    return ConvertedDataset(labels, lists, len(classes), sorted(missing))


_KINETICS_SPLITS = {"train": "train", "training": "train", "val": "val", "valid": "val",
                    "validate": "val", "validation": "val", "test": "test", "testing": "test"}
_KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end", "split")


def _kinetics_time(path: PathLike, line: int, value: str) -> int:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if seconds < 0 or not seconds.is_integer():
        raise AnnotationError(path, line, "time is not a whole number of seconds", value,
                              "time_start/time_end must be non-negative integers")
    return int(seconds)


def convert_kinetics(
    csv_files: PathLike | Sequence[PathLike], out_dir: PathLike, *,
    video_root: PathLike | None = None, ext: str = ".mp4", class_subdir: bool = False,
    keep_missing: bool = False,
) -> ConvertedDataset:
    """Kinetics CSVs (``label,youtube_id,time_start,time_end,split[,is_cc]``) -> our files.

    Classes are the labels of all given CSVs sorted alphabetically (the K400/K600 id
    convention). Videos are named ``{youtube_id}_{time_start:06d}_{time_end:06d}{ext}``
    (the name the usual download scripts give), inside ``label/`` when ``class_subdir``.
    The ``split`` column picks ``train.txt``/``val.txt``/``test.txt``. With ``video_root``,
    videos not found are returned in ``missing`` and left out unless ``keep_missing``.
    """
    files = [csv_files] if isinstance(csv_files, (str, os.PathLike)) else list(csv_files)
    rows: list[tuple[str, str, str, int]] = []  # split, label, name, line
    for path in files:
        columns: dict[str, int] | None = None
        for line, row in _csv_rows(read_annotation_text(path), path):
            if _is_skipped(row):
                continue
            fields = [field.strip() for field in row]
            if columns is None:
                columns = {name.lower(): i for i, name in enumerate(fields)}
                absent = [c for c in _KINETICS_COLUMNS if c not in columns]
                if absent:
                    raise AnnotationError(
                        path, line, f"Kinetics CSV header lacks columns {absent}", ",".join(row),
                        "the header must be label,youtube_id,time_start,time_end,split "
                        "(test CSVs without labels cannot make a labelled list)",
                    )
                continue
            if len(fields) < len(columns):
                raise AnnotationError(path, line, f"expected {len(columns)} fields",
                                      ",".join(row), "fill in every column of the header")
            get = {c: fields[columns[c]] for c in _KINETICS_COLUMNS}
            split = _KINETICS_SPLITS.get(get["split"].lower())
            if split is None:
                raise AnnotationError(path, line, "unknown split", get["split"],
                                      "use train, val (validate) or test")
            if not get["label"] or not get["youtube_id"]:
                raise AnnotationError(path, line, "empty label or youtube_id", ",".join(row),
                                      "every row needs a label and a youtube_id")
            start = _kinetics_time(path, line, get["time_start"])
            end = _kinetics_time(path, line, get["time_end"])
            name = _with_ext(f"{get['youtube_id']}_{start:06d}_{end:06d}", ext)
            if class_subdir:
                name = f"{get['label']}/{name}"
            rows.append((split, get["label"], name, line))
    classes = sorted({label for _, label, _, _ in rows})
    ids = {name: i for i, name in enumerate(classes)}
    splits: dict[str, list[VideoEntry]] = {}
    for split, label, name, line in rows:
        splits.setdefault(split, []).append(VideoEntry(name, (ids[label],), line))
    return _write_dataset(out_dir, classes, splits, video_root, keep_missing)


def _numbered_classes(path: PathLike) -> list[str]:
    """UCF-101 ``classInd.txt``: ``1 ApplyEyeMakeup`` per line, ids 1..C."""
    by_id: dict[int, tuple[str, int]] = {}
    for line, raw in enumerate(_split_lines(read_annotation_text(path)), start=1):
        parts = raw.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[0].isdigit():
            raise AnnotationError(path, line, "expected 'ID ClassName'", raw.strip(),
                                  "write one '1 ApplyEyeMakeup' line per class, ids from 1")
        class_id = int(parts[0])
        if class_id in by_id:
            raise AnnotationError(path, line, f"id already used on line {by_id[class_id][1]}",
                                  class_id, "give every class its own id 1..C")
        by_id[class_id] = (parts[1], line)
    if sorted(by_id) != list(range(1, len(by_id) + 1)) or not by_id:
        bad = min((i for i in by_id if i > len(by_id) or i < 1), default=0)
        raise AnnotationError(path, by_id[bad][1] if bad in by_id else 0,
                              "class ids are not 1..C without gaps", bad,
                              "number the classes 1..C (UCF-101: 1..101)")
    names = [by_id[i][0] for i in range(1, len(by_id) + 1)]
    if len(set(names)) != len(names):
        raise AnnotationError(path, 0, "class names repeat", names, "make class names unique")
    return names


def convert_ucf101(
    class_ind: PathLike, train_list: PathLike | None, test_list: PathLike | None,
    out_dir: PathLike, *, video_root: PathLike | None = None, ext: str | None = None,
    keep_missing: bool = False,
) -> ConvertedDataset:
    """UCF-101 ``classInd.txt`` + ``trainlist0N.txt`` + ``testlist0N.txt`` -> our files.

    Ids become 0-based (``classInd`` id - 1). Test lines carry no label: the class is the
    video's folder (matched case-insensitively if needed). The test list becomes
    ``val.txt``. ``ext`` (e.g. ``".mp4"`` for transcoded copies) replaces ``.avi``; None
    keeps the listed names.
    """
    classes = _numbered_classes(class_ind)
    ids = {name: i for i, name in enumerate(classes)}
    folded = {name.lower(): i for i, name in enumerate(classes)}
    splits: dict[str, list[VideoEntry]] = {}
    for split, path in (("train", train_list), ("val", test_list)):
        if path is None:
            continue
        entries = splits.setdefault(split, [])
        for line, raw in enumerate(_split_lines(read_annotation_text(path)), start=1):
            parts = raw.split()
            if not parts:
                continue
            video = parts[0].replace("\\", "/")
            folder = video.split("/")[0] if "/" in video else ""
            from_folder = ids.get(folder, folded.get(folder.lower()))
            if len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
                raise AnnotationError(path, line, "expected 'Class/video.avi [ID]'",
                                      raw.strip(), "one video per line, then its 1-based id")
            if len(parts) == 2:
                label = int(parts[1]) - 1
                if not 0 <= label < len(classes):
                    raise AnnotationError(path, line, f"id outside classInd's 1..{len(classes)}",
                                          parts[1], "use ids from classInd.txt")
                if from_folder is not None and from_folder != label:
                    raise AnnotationError(
                        path, line, f"id {parts[1]} is {short_repr(classes[label])} but the "
                        "folder is",
                        folder, "fix the id or the folder so they name the same class",
                    )
            elif from_folder is None:
                raise AnnotationError(path, line, "folder is not a class of classInd.txt",
                                      folder, "write 'Class/video.avi' with a listed class")
            else:
                label = from_folder
            entries.append(VideoEntry(_with_ext(video, ext), (label,), line))
    return _write_dataset(out_dir, classes, splits, video_root, keep_missing)


_HMDB_SPLIT_RE = re.compile(r"^(?P<cls>.+)_test_split(?P<n>\d+)\.txt$")


def convert_hmdb51(
    split_files: PathLike | Sequence[PathLike], out_dir: PathLike, *, split: int = 1,
    video_root: PathLike | None = None, ext: str | None = None, keep_missing: bool = False,
) -> ConvertedDataset:
    """HMDB-51 split files (``<class>_test_split<N>.txt``: ``video.avi 0|1|2``) -> our files.

    ``split_files`` is the folder holding them or the files themselves; those of split
    ``split`` are used. Classes are the file-name prefixes sorted; paths ``class/video.avi``;
    1 -> ``train.txt``, 2 -> ``val.txt``, 0 (unused by the split) is skipped.
    """
    if isinstance(split_files, (str, os.PathLike)) and os.path.isdir(split_files):
        files = sorted(Path(split_files).iterdir())
    elif isinstance(split_files, (str, os.PathLike)):
        files = [Path(split_files)]
    else:
        files = [Path(f) for f in split_files]
    chosen = {}
    for file in files:
        match = _HMDB_SPLIT_RE.match(file.name)
        if match and int(match["n"]) == split:
            chosen[match["cls"]] = file
    if not chosen:
        raise AnnotationError(split_files, 0, f"no '<class>_test_split{split}.txt' files among",
                              [f.name for f in files][:5], "pass the HMDB-51 splits folder")
    classes = sorted(chosen)
    splits: dict[str, list[VideoEntry]] = {"train": [], "val": []}
    for class_id, name in enumerate(classes):
        path = chosen[name]
        for line, raw in enumerate(_split_lines(read_annotation_text(path)), start=1):
            parts = raw.split()
            if not parts:
                continue
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise AnnotationError(path, line, "expected 'video.avi 0|1|2'", raw.strip(),
                                      "1 = train, 2 = test, 0 = unused")
            if parts[1] != "0":
                video = _with_ext(f"{name}/{parts[0]}", ext)
                target = splits["train" if parts[1] == "1" else "val"]
                target.append(VideoEntry(video, (class_id,), line))
    return _write_dataset(out_dir, classes, splits, video_root, keep_missing)


def convert_folder_tree(
    root: PathLike, out_dir: PathLike, *, val_fraction: float = 0.0, seed: int = 0,
    extensions: Sequence[str] = VIDEO_EXTENSIONS,
) -> ConvertedDataset:
    """``root/class_name/**/video.ext`` -> ``labels.csv`` (sorted folder names) + lists.

    With ``val_fraction`` > 0, each class sends ``round(fraction * n)`` of its videos to
    ``val.txt``, drawn with a generator seeded by ``(seed, class name)``: the split is
    deterministic and does not change when other classes are added. Hidden entries skipped.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    suffixes = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
    base = Path(root)
    classes = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"{root} has no class folders; expected root/class_name/video.mp4")
    splits: dict[str, list[VideoEntry]] = {"train": []}
    if val_fraction > 0:
        splits["val"] = []
    for class_id, name in enumerate(classes):
        videos = []
        for folder, dirs, names in os.walk(base / name, followlinks=True):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            rel = Path(folder).relative_to(base).as_posix()
            videos += [f"{rel}/{n}" for n in names
                       if not n.startswith(".") and n.lower().endswith(suffixes)]
        videos.sort()
        val = set(random.Random(f"{seed}/{name}").sample(videos, round(val_fraction * len(videos))))
        for video in videos:
            splits["val" if video in val else "train"].append(VideoEntry(video, (class_id,), 0))
    return _write_dataset(out_dir, classes, splits, None, False)
