"""File helpers shared by every layer: bounded text, JSON and YAML reading with one-line
errors, bounded reprs for messages, atomic text writes.

- :func:`read_text`: a file as UTF-8 text (BOM dropped, line ends kept), optionally refused
  past ``max_bytes`` without reading further; invalid UTF-8 is an error naming the line.
- :func:`parse_json` / :func:`read_json`: JSON whose errors name the source, the line and
  the fix (also Python's 4300-digit integer limit and nesting too deep to read).
- :func:`parse_yaml` / :func:`read_yaml`: YAML read with the safe loader and **no aliases**
  (``*name``: a few hundred bytes of nested aliases expand to billions of values), so what
  is built is bounded by the file's size; ``!!python/...`` tags are refused.
- :func:`short_repr`: ``repr`` cut to a bounded length without rendering the whole value
  (use it for every value an error message quotes).
- :func:`atomic_write_bytes` / :func:`atomic_write_text`: write through a temporary file
  and a rename (no half files), with the usual file mode.

Every reading problem raises :class:`FileFormatError` (a ``ValueError``), whose message names
the file, the problem and the fix on one line. This module imports nothing from claver.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import reprlib
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["MAX_CONFIG_BYTES", "FileFormatError", "atomic_write_bytes", "atomic_write_text",
           "parse_json",
           "parse_yaml", "read_json", "read_text", "read_yaml", "short_repr"]

# Config files (YAML experiments, JSON model configs, config.json beside weights) are a few
# KB; this bound keeps a wrong or hostile file from costing minutes of parsing.
MAX_CONFIG_BYTES = 1 << 20
MAX_SHOWN = 200  # characters of a value quoted in an error message

PathLike = str | os.PathLike


class FileFormatError(ValueError):
    """A file (or text) that cannot be read as what it should be; the message says which,
    what is wrong and how to fix it, on one line. ``line`` (1-based, 0: unknown) and
    ``value`` (the offending bytes or text, when known) are kept for callers that re-word it.
    """

    def __init__(self, message: str, *, line: int = 0, value: object = None) -> None:
        super().__init__(message)
        self.line = line
        self.value = value


_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxstring = _REPR.maxother = MAX_SHOWN
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = 8
_REPR.maxlong = 60


def short_repr(value: object, limit: int = MAX_SHOWN) -> str:
    """``repr(value)`` of at most ``limit`` characters, computed without rendering more than a
    bounded part of ``value`` (nested containers, long strings, huge ints are elided)."""
    try:
        text = _REPR.repr(value)
    except Exception:  # a broken __repr__ must not hide the error being reported
        text = f"<{type(value).__name__}>"
    text = " ".join(text.split()) if ("\n" in text or "\r" in text) else text
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _one_line(text: object, limit: int = 2 * MAX_SHOWN) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def read_text(path: PathLike, *, max_bytes: int | None = None, what: str = "file") -> str:
    """The whole file as text: UTF-8 (a BOM is dropped), line ends kept as written.

    ``max_bytes``: refuse a larger file (checked before and while reading, so a growing file
    or a device never reads past it). ``what`` names the file's role in messages.
    """
    path = Path(path)
    with open(path, "rb") as f:
        if max_bytes is not None:
            size = os.fstat(f.fileno()).st_size
            data = f.read(max_bytes + 1)
            if size > max_bytes or len(data) > max_bytes:
                raise FileFormatError(
                    f"{path}: {what} is larger than {max_bytes:,} bytes "
                    f"({max(size, len(data)):,}+), more than such a file ever holds; "
                    "check that this is the right file")
        else:
            data = f.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        offset = e.start + (3 if data.startswith(b"\xef\xbb\xbf") else 0)
        line = data.count(b"\n", 0, offset) + 1
        begins = data.rfind(b"\n", 0, offset) + 1
        raise FileFormatError(
            f"{path}, line {line}: {what} is not UTF-8 text (byte 0x{data[offset]:02x} at "
            f"column {offset - begins + 1}); save it as UTF-8", line=line,
            value=data[begins:begins + 80].split(b"\n")[0]) from None


def _digits_limit(text: str, source: str, kind: str) -> FileFormatError:
    limit = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 4300
    found = re.search(rf"\d{{{limit + 1},}}", text)
    where = f"{source}, line {text.count(chr(10), 0, found.start()) + 1}" if found else source
    return FileFormatError(
        f"{where}: {kind} holds an integer of more than {limit} digits, which Python refuses "
        "to read; write a real value there")


def parse_json(text: str, source: str) -> Any:
    """``json.loads(text)``; errors name ``source`` (file and role), the line and the fix."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise FileFormatError(f"{source}, line {e.lineno}, column {e.colno}: not valid JSON "
                              f"({e.msg}); fix the JSON syntax there") from None
    except RecursionError:
        raise FileFormatError(f"{source}: JSON nested deeper than Python can read; "
                              "a real config is only a few levels deep") from None
    except ValueError as e:
        if "digits" in str(e):
            raise _digits_limit(text, source, "JSON") from None
        raise FileFormatError(f"{source}: not valid JSON ({_one_line(e)})") from None


def read_json(path: PathLike, *, max_bytes: int | None = MAX_CONFIG_BYTES,
              what: str = "JSON file") -> Any:
    """A JSON file, bounded by ``max_bytes`` (default :data:`MAX_CONFIG_BYTES`)."""
    return parse_json(read_text(path, max_bytes=max_bytes, what=what), str(path))


def _config_loader() -> type:
    import yaml

    class ConfigLoader(yaml.SafeLoader):
        """The safe loader with aliases refused (anchors alone are harmless)."""

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise yaml.composer.ComposerError(
                    None, None,
                    f"YAML alias *{event.anchor} is not allowed in claver files (aliases let a "
                    "few hundred bytes expand to billions of values); write the value out, or "
                    "share settings with BASE: [other.yaml]", event.start_mark)
            return super().compose_node(parent, index)

    return ConfigLoader


_LOADER: type | None = None


def parse_yaml(text: str, source: str) -> Any:
    """YAML ``text`` as plain Python values (safe loader, aliases refused); errors name
    ``source``, the line and the fix. An empty document is ``None``."""
    import yaml

    global _LOADER
    if _LOADER is None:
        _LOADER = _config_loader()
    try:
        return yaml.load(text, Loader=_LOADER)  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{source}, line {mark.line + 1}" if mark is not None else source
        problem = _one_line(e.problem or e.context or "invalid YAML")
        if "could not determine a constructor" in problem:
            problem += "; claver files hold plain values only, no Python objects: remove the tag"
        elif "alias" not in problem:
            problem += "; fix the YAML syntax there"
        raise FileFormatError(f"{where}: invalid YAML: {problem}") from None
    except yaml.YAMLError as e:
        raise FileFormatError(f"{source}: invalid YAML: {_one_line(e)}") from None
    except RecursionError:
        raise FileFormatError(f"{source}: YAML nested deeper than Python can read; "
                              "a real config is only a few levels deep") from None
    except ValueError as e:  # e.g. int() past Python's digit limit, an impossible date
        if "digits" in str(e):
            raise _digits_limit(text, source, "YAML") from None
        raise FileFormatError(f"{source}: a YAML value cannot be read ({_one_line(e)}); "
                              "quote it to keep it as text") from None


def read_yaml(path: PathLike, *, max_bytes: int | None = MAX_CONFIG_BYTES,
              what: str = "YAML file") -> Any:
    """A YAML file (see :func:`parse_yaml`), bounded by ``max_bytes``."""
    return parse_yaml(read_text(path, max_bytes=max_bytes, what=what), str(path))


def _file_mode() -> int:
    """The mode ``open()`` gives a new file: 0666 less the umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: PathLike, data: bytes | Callable[[BinaryIO], Any], *,
                       fsync: bool = False) -> Path:
    """Write ``data`` (bytes, or a function writing to a binary file) to ``path`` through a
    temporary file in the same folder and a rename: readers see the old file or the new one,
    never half. The file gets the mode a plain ``open()`` would give (not ``mkstemp``'s
    0600: results are read by other people and servers); ``fsync`` flushes it to disk
    before the rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        with contextlib.suppress(OSError):
            os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: PathLike, text: str) -> Path:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8 (line ends as given)."""
    return atomic_write_bytes(path, text.encode("utf-8"))
