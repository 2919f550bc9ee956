"""Description files: our JSONL, and CLAVER-style CSVs (``id,description`` rows).

**JSONL** (what ``claver prompts generate`` writes): one object per description, keys in
this order::

    {"class_id": 0, "class_name": "abseiling", "kind": "body", "text": "...", "sample": 0,
     "model": "llama3.1:8b", "prompt_hash": "3f2a...", "attempt": 0, "shortened": false,
     "source": "generated"}

``class_id``, ``class_name``, ``kind`` and ``text`` are required when reading; the others
default. Classes may have any number of descriptions (zero included).

**CLAVER CSV**: ``id,name`` rows where ``name`` is a description, several rows per class id.
The official generator wrote ``,``-separated files with ``\\``-escapes (``\\,`` ``\\"``
``\\\\`` and escaped line breaks) that its own loader read with ``sep=';'``. Read here:
``,``, ``;`` or tab after the id (decided per row), optional header, quoted fields
(``""`` or ``\\"`` inside), backslash escapes outside quotes, unescaped separators inside
an unquoted description (everything after the id's separator is the description), UTF-8
with or without BOM, LF/CRLF, blank lines and ``#`` comment lines. Descriptions longer than
77 CLIP tokens are shortened (with a warning).
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import NoReturn

from claver.data.annotations import AnnotationError, read_annotation_text
from claver.fileio import atomic_write_text
from claver.prompts.postprocess import fit_to_context
from claver.text.tokenizer import DEFAULT_CONTEXT_LENGTH

__all__ = [
    "Description",
    "ImportResult",
    "descriptions_by_class",
    "infer_kind",
    "load_descriptions",
    "read_claver_csv",
    "read_descriptions",
    "write_descriptions",
]

PathLike = str | os.PathLike


@dataclass(frozen=True)
class Description:
    """One description of one class (a JSONL record)."""

    class_id: int
    class_name: str
    kind: str
    text: str
    sample: int = 0
    model: str = ""
    prompt_hash: str = ""
    attempt: int = 0
    shortened: bool = False
    source: str = ""

    def to_json(self) -> str:
        """One JSONL line (no newline), keys in the documented order, UTF-8 kept as is."""
        return json.dumps(asdict(self), ensure_ascii=False)


_REQUIRED = {"class_id": int, "class_name": str, "kind": str, "text": str}
_OPTIONAL = {"sample": int, "model": str, "prompt_hash": str, "attempt": int, "shortened": bool,
             "source": str}


def _record(path: PathLike, line: int, raw: str) -> Description:
    fix = ('write one JSON object per line with class_id (int), class_name, kind and text, '
           'e.g. {"class_id": 0, "class_name": "abseiling", "kind": "body", "text": "..."}')
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as e:
        raise AnnotationError(path, line, f"not valid JSON ({e.msg})", raw[:80], fix) from e
    if not isinstance(obj, dict):
        raise AnnotationError(path, line, "not a JSON object", raw[:80], fix)
    values = {}
    for key, kind in {**_REQUIRED, **_OPTIONAL}.items():
        if key not in obj:
            if key in _REQUIRED:
                raise AnnotationError(path, line, f"missing key {key!r}", raw[:80], fix)
            continue
        value = obj[key]
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise AnnotationError(path, line, f"{key} is not an integer", value, fix)
        if kind is not int and not isinstance(value, kind):
            raise AnnotationError(path, line, f"{key} is not a {kind.__name__}", value, fix)
        values[key] = value
    if values["class_id"] < 0:
        raise AnnotationError(path, line, "negative class_id", values["class_id"],
                              "class ids are 0..C-1 as in the label file")
    if not values["text"].strip():
        raise AnnotationError(path, line, "empty text", values["text"],
                              "remove the line or give it a description")
    return Description(**values)


def read_descriptions(path: PathLike) -> list[Description]:
    """Records of a description JSONL file (blank lines skipped), in file order."""
    records = []
    text = read_annotation_text(path).replace("\r\n", "\n")
    for line, raw in enumerate(text.split("\n"), start=1):
        if raw.strip():
            records.append(_record(path, line, raw))
    return records


def write_descriptions(descriptions: Iterable[Description], path: PathLike) -> Path:
    """Write records as JSONL, in the given order, atomically (temp file + rename)."""
    return atomic_write_text(path, "".join(d.to_json() + "\n" for d in descriptions))


# --------------------------------------------------------------------------- CLAVER CSV

_ID_RE = re.compile(r"[ \t]*\"?[ \t]*([+-]?\d+)[ \t]*\"?[ \t]*([,;\t])[ \t]*")
_ESCAPABLE = ',;"\\\t\n'
_KIND_HINTS = (("decomposition", "decomposition"), ("descriptions", "decomposition"),
               ("body", "body"), ("synonym", "synonyms"), ("scene", "scene"))


@dataclass
class ImportResult:
    """Descriptions read from a CLAVER CSV, with warnings for what was changed or skipped,
    the header line (None without one) and the label ids without any description."""

    descriptions: list[Description]
    warnings: list[str] = field(default_factory=list)
    header: str | None = None
    missing_classes: list[int] = field(default_factory=list)


def infer_kind(path: PathLike) -> str:
    """Kind from a file name (``kinetics_400_body.csv`` -> ``body``), else ``imported``."""
    stem = Path(path).stem.lower()
    return next((kind for hint, kind in _KIND_HINTS if hint in stem), "imported")


def _quoted(text: str, start: int, path: PathLike, line: int) -> tuple[str, int, int] | None:
    """Field opening at ``text[start] == '"'``: (value, index after it, lines crossed).

    Returns None when the closing quote is followed by more text on the same line (then the
    field was not really quoted).
    """
    out: list[str] = []
    k, crossed, n = start + 1, 0, len(text)
    while k < n:
        c = text[k]
        if c == "\\" and k + 1 < n and text[k + 1] in '"\\':
            out.append(text[k + 1])
            k += 2
        elif c == '"' and text[k + 1 : k + 2] == '"':
            out.append('"')
            k += 2
        elif c == '"':
            end = text.find("\n", k + 1)
            end = n if end < 0 else end
            if text[k + 1 : end].strip():
                if crossed:
                    _unclosed(path, line, text, start, "text after")
                return None
            return "".join(out), end, crossed
        else:
            crossed += c == "\n"
            out.append(c)
            k += 1
    return _unclosed(path, line, text, start, "no closing quote for")


def _unclosed(path: PathLike, line: int, text: str, start: int, what: str) -> NoReturn:
    raise AnnotationError(
        path, line, f"{what} the quoted description starting here", text[start : start + 60],
        'close the quote; write a quote inside a quoted field as "" or \\"',
    )


def _unquoted(text: str, start: int) -> tuple[str, int, int]:
    """Field up to the end of the line; ``\\`` escapes separators, quotes and line breaks."""
    out: list[str] = []
    k, crossed, n = start, 0, len(text)
    while k < n:
        c = text[k]
        if c == "\\" and k + 1 < n and text[k + 1] in _ESCAPABLE:
            crossed += text[k + 1] == "\n"
            out.append(text[k + 1])
            k += 2
        elif c == "\n":
            break
        else:
            out.append(c)
            k += 1
    return "".join(out), k, crossed


def _csv_records(text: str, path: PathLike) -> Iterator[tuple[int, int | None, str]]:
    """``(line, class id or None for a header, description)`` for every non-blank record."""
    text = text.replace("\r\n", "\n")
    # A lone CR ends lines only in CR-only files; elsewhere it is text (csv writers with
    # lineterminator="\n" leave it unescaped inside a field).
    text = text.replace("\r", "\n" if "\n" not in text else " ")
    k, line, n, first = 0, 1, len(text), True
    while k < n:
        end = text.find("\n", k)
        end = n if end < 0 else end
        physical = text[k:end]
        if not physical.strip() or physical.lstrip().startswith("#"):
            k, line = end + 1, line + 1
            continue
        match = _ID_RE.match(text, k)
        if match is None or match.end() > end + 1:
            if first:
                yield line, None, physical.strip()
                first = False
                k, line = end + 1, line + 1
                continue
            raise AnnotationError(
                path, line, "expected 'id,description' (an integer class id, then ',' or ';')",
                physical[:80], "start every row with its class id; join a description that "
                "was split over lines, or quote it",
            )
        first = False
        start = match.end()
        parsed = _quoted(text, start, path, line) if text[start : start + 1] == '"' else None
        if parsed is None:
            parsed = _unquoted(text, start)
        value, k, crossed = parsed
        yield line, int(match.group(1)), value
        line += crossed + 1
        k += 1


def read_claver_csv(
    path: PathLike, class_names: Sequence[str] | None = None, *, kind: str | None = None,
    model: str = "imported", context_length: int = DEFAULT_CONTEXT_LENGTH, shorten: bool = True,
) -> ImportResult:
    """Descriptions of a CLAVER-style CSV (see the module docstring).

    ``class_names``: the label file's names (ids must lie in ``0..C-1``; names are copied
    into the records). ``kind``: the records' kind (default: from the file name, see
    :func:`infer_kind`). Descriptions are whitespace-collapsed; empty ones are skipped and
    too-long ones shortened (``shorten=False`` keeps them, for checking), with a warning each.
    """
    kind = kind or infer_kind(path)
    result = ImportResult([])
    counts: dict[int, int] = {}
    for line, class_id, value in _csv_records(read_annotation_text(path), path):
        if class_id is None:
            result.header = value
            continue
        if class_id < 0 or (class_names is not None and class_id >= len(class_names)):
            size = "" if class_names is None else f" (the label file has {len(class_names)})"
            raise AnnotationError(path, line, f"class id outside 0..C-1{size}", class_id,
                                  "use the ids of the label file the descriptions were made for")
        text = " ".join(value.split())
        if not text:
            result.warnings.append(f"{path}, line {line}: empty description for class "
                                   f"{class_id} skipped")
            continue
        shortened = False
        if shorten:
            fitted, shortened = fit_to_context(text, context_length)
            if shortened:
                result.warnings.append(
                    f"{path}, line {line}: class {class_id} description was longer than "
                    f"{context_length} CLIP tokens; shortened to {fitted!r:.60}")
                text = fitted
        sample = counts.get(class_id, 0)
        counts[class_id] = sample + 1
        name = class_names[class_id] if class_names is not None else ""
        result.descriptions.append(Description(
            class_id, name, kind, text, sample=sample, model=model, shortened=shortened,
            source=f"{Path(path).name}:{line}"))
    if not result.descriptions:
        raise AnnotationError(path, 0, "no descriptions found", result.header or "",
                              "write one 'id,description' row per description")
    if class_names is not None:
        result.missing_classes = [i for i in range(len(class_names)) if i not in counts]
    return result


# --------------------------------------------------------------------------- loading


def _check_against_labels(path: PathLike, records: list[Description],
                          class_names: Sequence[str]) -> None:
    for number, record in enumerate(records, start=1):
        if record.class_id >= len(class_names):
            raise AnnotationError(
                path, number, f"class_id outside the label file's 0..{len(class_names) - 1}",
                record.class_id, "use the label file the descriptions were generated for")
        expected = class_names[record.class_id]
        if record.class_name and record.class_name != expected:
            raise AnnotationError(
                path, number, f"class {record.class_id} is {expected!r} in the label file but",
                record.class_name, "use the label file the descriptions were generated for "
                "(or regenerate them for this one)")


def load_descriptions(
    paths: PathLike | Sequence[PathLike], class_names: Sequence[str], *,
    context_length: int = DEFAULT_CONTEXT_LENGTH,
) -> list[Description]:
    """All descriptions of ``paths`` (JSONL, or CLAVER CSV for ``.csv``/``.txt``), checked
    against the label names; any description longer than ``context_length`` tokens is
    shortened with a warning, so the result always tokenizes."""
    files = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    records: list[Description] = []
    for path in files:
        if str(path).lower().endswith((".csv", ".txt", ".tsv")):
            result = read_claver_csv(path, class_names, context_length=context_length)
            for message in result.warnings:
                warnings.warn(message, stacklevel=2)
            records += result.descriptions
            continue
        found = read_descriptions(path)
        _check_against_labels(path, found, class_names)
        for number, record in enumerate(found, start=1):
            fitted, shortened = fit_to_context(record.text, context_length)
            if shortened:
                warnings.warn(f"{path}, line {number}: description longer than "
                              f"{context_length} CLIP tokens shortened", stacklevel=2)
                record = replace(record, text=fitted, shortened=True)
            records.append(record)
    return records


def descriptions_by_class(descriptions: Iterable[Description], num_classes: int) -> list[list[str]]:
    """Texts grouped by class id, in input order: ``result[c]`` lists class ``c``'s texts."""
    grouped: list[list[str]] = [[] for _ in range(num_classes)]
    for record in descriptions:
        if not 0 <= record.class_id < num_classes:
            raise ValueError(f"description of class {record.class_id} ({record.class_name!r}) "
                             f"is outside 0..{num_classes - 1}; use the matching label file")
        grouped[record.class_id].append(record.text)
    return grouped
