"""Read checkpoints without running code hidden in them, and without letting a small file
claim large amounts of memory.

A ``torch.save`` file is a Python pickle, and unpickling an untrusted pickle can run any code
(``os.system``, ``builtins.eval``, ...). Everything here reads checkpoints with PyTorch's
restricted ``weights_only`` unpickler plus a small, explicit allow-list of harmless extra types
(:data:`EXTRA_SAFE_GLOBALS`). A file that needs anything else is refused with
:class:`UnsafeCheckpointError` *before* any of it is executed; there is no silent fallback.
Only ``trust_remote_pickle=True``, passed knowingly, unpickles without restrictions.

Before PyTorch sees a file, its pickle is evaluated symbolically (nothing imported or called,
:mod:`claver.weights.restricted_pickle`) to list the globals and storages it references, and
the sizes the file declares are checked against what it holds
(:mod:`claver.weights.archive_checks`: zip bombs, storage records of the wrong size). After
loading, tensors that need more bytes than their storage holds (zero-stride or overlapping
views) are refused. These checks also apply with ``trust_remote_pickle=True``.

Supported containers (see :func:`detect_container`):

- ``"torch-zip"``: ``torch.save`` (PyTorch >= 1.6, a zip archive with ``data.pkl``);
- ``"torch-legacy"``: the pre-1.6 ``torch.save`` pickle stream;
- ``"torchscript"``: ``torch.jit.save`` archives such as OpenAI's CLIP weights, read with
  :func:`load_torchscript_state_dict`, which never calls ``torch.jit.load`` (that runs the
  archive's code) but reads the archive's pickle with its own restricted reader
  (:mod:`claver.weights.torchscript`);
- ``"safetensors"``: detected only; read it with ``safetensors.torch.load_file``.
"""

from __future__ import annotations

import argparse
import io
import json
import pickle
import pickletools
import struct
import threading
import types
import zipfile
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from claver.weights.archive_checks import (
    MAX_PICKLE_BYTES,
    PickleScan,
    check_loaded_tensors,
    check_storage_records,
    open_checked_zip,
    scan_legacy_file,
    scan_torch_pickle,
)
from claver.weights.errors import CheckpointError, CheckpointReadError, UnsafeCheckpointError
from claver.weights.restricted_pickle import PickleCorrupt, PickleRefused
from claver.weights.torchscript import read_torchscript_state_dict

__all__ = [
    "CheckpointError",
    "CheckpointReadError",
    "ConfigNode",
    "EXTRA_SAFE_GLOBALS",
    "UnsafeCheckpointError",
    "detect_container",
    "load_pickle_checkpoint",
    "load_torchscript_state_dict",
]

PathLike = str | Path

#: Globals, beyond PyTorch's own weights_only defaults (tensors, storages, dtypes,
#: ``collections.OrderedDict``, ``builtins.set`` ...), that a checkpoint may reference.
#: Every one of them only builds plain data; none can run code.
#:
#: - ``yacs.config.CfgNode``: the experiment config in official CLAVER / X-CLIP checkpoints
#:   (``checkpoint["config"]``). yacs need not be installed: it is rebuilt as :class:`ConfigNode`.
#: - ``argparse.Namespace``: command-line args stored by some training scripts.
#: - ``numpy.core.multiarray.scalar``, ``numpy._core.multiarray.scalar``, ``numpy.dtype``:
#:   numpy scalars such as ``max_accuracy`` (numpy 1.x and 2.x spellings); numpy's dtype
#:   classes (``numpy.dtypes.Float64DType`` ...) are allowed as the objects those build.
EXTRA_SAFE_GLOBALS: tuple[str, ...] = (
    "yacs.config.CfgNode",
    "argparse.Namespace",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.dtype",
)

# Entries of OpenAI's TorchScript CLIP archives that are model hyper-parameters, not weights.
_TORCHSCRIPT_NON_WEIGHTS = ("input_resolution", "context_length", "vocab_size")

# First pickle of a legacy torch.save stream is this number.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_YACS_MARK = "_claver_yacs_cfgnode"
_LOAD_LOCK = threading.RLock()


class ConfigNode(dict):
    """Harmless stand-in for ``yacs.config.CfgNode``: a dict whose keys read as attributes.

    ``cfg.MODEL.ARCH`` and ``cfg["MODEL"]["ARCH"]`` are the same value. yacs' own flags
    (``__immutable__``, ``__new_allowed__``, ...) are kept as instance attributes. Keys that
    shadow dict methods (``items``, ``keys``, ...) are only reachable with ``cfg[key]``.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"ConfigNode has no key {name!r}") from None

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            self.__dict__.update(state)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | {k for k in self if isinstance(k, str)})

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dicts (and lists) without ConfigNode."""

        def plain(value: Any) -> Any:
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            if isinstance(value, list | tuple):
                return type(value)(plain(v) for v in value)
            return value

        return plain(self)


class _YacsCfgNodeSurrogate:
    """What ``yacs.config.CfgNode`` resolves to inside the weights_only unpickler.

    That unpickler only fills ``dict``/``OrderedDict``/``Counter`` objects with items, so the
    pickled CfgNode is built as a marked OrderedDict and turned into a :class:`ConfigNode`
    after loading (see ``_restore_config_nodes``).
    """

    def __new__(cls, *args: Any) -> Any:  # called by the unpickler (NEWOBJ)
        node: OrderedDict = OrderedDict()
        node.__dict__[_YACS_MARK] = True
        return node


# --------------------------------------------------------------------------------------------
# container detection


def _describe(size: int, head: bytes) -> str:
    if size == 0:
        return "0 bytes (empty file)"
    return f"{size} bytes, starting with {head[:16]!r}"


def _legacy_magic_ok(head: bytes) -> bool:
    """Whether ``head`` starts with the pickled legacy torch.save magic number (no unpickling)."""
    try:
        for opcode, arg, _ in pickletools.genops(io.BytesIO(head)):
            if opcode.name in ("PROTO", "FRAME"):
                continue
            return isinstance(arg, int) and arg == _LEGACY_MAGIC and opcode.name.startswith("LONG")
    except (ValueError, EOFError, struct.error, UnicodeDecodeError):
        return False
    return False


def _zip_kind(path: Path) -> tuple[str, str]:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        return "unknown", f"a truncated or corrupt zip archive ({exc})"
    # PyTorch reads the records under the folder of the first member only
    folder = names[0].split("/", 1)[0] + "/" if names and "/" in names[0] else None
    rel = {name[len(folder):] for name in names if folder and name.startswith(folder)}
    if "constants.pkl" in rel or any(r.startswith("code/") for r in rel):
        return "torchscript", "a TorchScript archive (torch.jit.save)"
    if "data.pkl" in rel:
        return "torch-zip", "a torch.save zip archive"
    shown = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
    return "unknown", f"a zip archive without data.pkl (entries: {shown or 'none'})"


def _sniff(path: Path) -> tuple[str, str]:
    """(kind, human description) of the file at ``path``; reads only its first bytes."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(64)
    desc = _describe(size, head)
    if size == 0:
        return "unknown", desc
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        kind, what = _zip_kind(path)
        return kind, f"{desc}: {what}"
    if head.startswith(b"\x80") and _legacy_magic_ok(head):
        return "torch-legacy", f"{desc}: a legacy torch.save pickle"
    if size >= 10:
        (header_len,) = struct.unpack("<Q", head[:8])
        if 2 <= header_len <= min(size - 8, 100 * 2**20) and head[8:9] == b"{":
            with open(path, "rb") as f:
                f.seek(8)
                raw = f.read(header_len)
            try:
                header = json.loads(raw)
            except (UnicodeDecodeError, ValueError):
                header = None
            if isinstance(header, dict):
                return "safetensors", f"{desc}: a safetensors file"
    if head.startswith(b"version https://git-lfs"):
        return "unknown", f"{desc}: a Git LFS pointer, not the file itself (run `git lfs pull`)"
    if head.lstrip().lower().startswith((b"<!doctype html", b"<html", b"<?xml")):
        return "unknown", f"{desc}: an HTML/XML page (an error page saved instead of the file?)"
    if head.startswith(b"\x80") and len(head) > 1 and 2 <= head[1] <= 5:
        return "unknown", f"{desc}: a plain Python pickle (not written by torch.save)"
    return "unknown", f"{desc}: not a recognised checkpoint format"


def detect_container(path: PathLike) -> str:
    """Container format of a checkpoint file, from its bytes (never its name).

    Returns one of ``"torchscript"``, ``"torch-zip"``, ``"torch-legacy"``, ``"safetensors"``,
    ``"unknown"`` (also for empty, truncated-zip or random files). Raises FileNotFoundError.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint file at {str(path)!r}")
    return _sniff(path)[0]


# --------------------------------------------------------------------------------------------
# allow-list


def _numpy_safe_globals() -> list[Any]:
    import numpy as np

    core = getattr(np, "_core", None)
    multiarray = getattr(core, "multiarray", None) or np.core.multiarray
    scalar = multiarray.scalar
    dtype_classes = {type(np.dtype(code)) for code in "?bhilqBHILQefdgFDG"}
    return [
        (scalar, "numpy.core.multiarray.scalar"),
        (scalar, "numpy._core.multiarray.scalar"),
        np.dtype,
        *sorted(dtype_classes, key=lambda c: c.__name__),
    ]


def _extra_safe_globals() -> list[Any]:
    return [
        (_YacsCfgNodeSurrogate, "yacs.config.CfgNode"),
        argparse.Namespace,
        *_numpy_safe_globals(),
    ]


def _global_name(entry: Any) -> str:
    if isinstance(entry, tuple):
        return entry[1]
    return f"{entry.__module__}.{entry.__qualname__}"


def _allowed_global_names() -> set[str]:
    names = {_global_name(g) for g in _extra_safe_globals()}
    names |= {_global_name(g) for g in torch.serialization.get_safe_globals()}
    try:  # PyTorch's built-in weights_only allow-list (tensors, storages, dtypes, ...)
        from torch._weights_only_unpickler import _get_allowed_globals

        names |= set(_get_allowed_globals())
    except (ImportError, AttributeError):  # pragma: no cover - other torch versions
        names |= {"collections.OrderedDict", "collections.Counter", "_codecs.encode",
                  "builtins.set", "builtins.bytearray", "builtins.complex", "torch.Size",
                  "torch.device", "torch.Tensor", "torch.nn.parameter.Parameter"}
        names |= {"torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter"}
    return names


# --------------------------------------------------------------------------------------------
# checks before PyTorch reads the file


def _precheck(path: Path, kind: str, desc: str) -> PickleScan:
    """Globals and storages the file's pickle references (nothing executed), after checking
    the zip directory / legacy storage records against what the file holds."""
    try:
        if kind == "torch-zip":
            with open_checked_zip(path) as archive:
                raw = archive.read("data.pkl", MAX_PICKLE_BYTES, "pickle")
                scan = scan_torch_pickle(io.BytesIO(raw))
                check_storage_records(archive, scan)
            return scan
        return scan_legacy_file(path)
    except PickleRefused as exc:
        raise UnsafeCheckpointError(
            f"Refusing to load {str(path)!r}: its pickle contains {exc.what} ({exc.reason}). "
            "Nothing in the file was executed.", path, [exc.what]) from None
    except PickleCorrupt as exc:
        raise CheckpointReadError(
            f"Cannot read checkpoint {str(path)!r} ({desc}): its pickle data is truncated or "
            f"corrupt ({exc})", path) from None
    except (OSError, EOFError, struct.error) as exc:
        raise CheckpointReadError(
            f"Cannot read checkpoint {str(path)!r} ({desc}): {type(exc).__name__}: {exc}",
            path) from exc


# --------------------------------------------------------------------------------------------
# loading


def _friendly(name: str) -> str:
    module, _, attr = name.partition(".")
    if module in ("posix", "nt"):
        return f"{name} (= os.{attr})"
    return name


def _unsafe_error(path: Path, names: Iterable[str]) -> UnsafeCheckpointError:
    names = sorted(set(names))
    listed = ", ".join(_friendly(n) for n in names)
    message = (
        f"Refusing to load {str(path)!r}: its pickle references {listed}, which "
        f"{'is' if len(names) == 1 else 'are'} not on claver's allow-list of plain-data types. "
        "The file was NOT executed: nothing in it has run. Unpickling it without restrictions "
        "could run arbitrary code on this machine. If you trust the file and where it came "
        "from, load it with load_pickle_checkpoint(path, trust_remote_pickle=True) - this RUNS "
        "any code the file contains - ideally once, in an isolated environment, re-saving the "
        "tensors as safetensors."
    )
    return UnsafeCheckpointError(message, path, names)


def _core_message(exc: BaseException) -> str:
    """The informative line(s) of a torch weights_only error, without the generic preamble."""
    text = str(exc)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    skip = ("Weights only load failed", "Please file an issue", "Check the documentation")
    useful = [ln for ln in lines if not ln.startswith(skip)]
    return " ".join(useful) if useful else text


def _restore_config_nodes(obj: Any, memo: dict[int, Any]) -> Any:
    """Replace the marked OrderedDicts built for yacs CfgNodes by ConfigNode (in place)."""
    key = id(obj)
    if key in memo:
        return memo[key]
    if isinstance(obj, torch.Tensor | str | bytes | int | float | type(None)):
        return obj
    if type(obj) is OrderedDict and obj.__dict__.get(_YACS_MARK):
        node = ConfigNode()
        memo[key] = node
        node.__setstate__({k: v for k, v in obj.__dict__.items() if k != _YACS_MARK})
        for k, v in obj.items():
            node[k] = _restore_config_nodes(v, memo)
        return node
    memo[key] = obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            obj[k] = _restore_config_nodes(v, memo)
    elif type(obj) is list:
        obj[:] = [_restore_config_nodes(v, memo) for v in obj]
    elif type(obj) is tuple:
        restored = tuple(_restore_config_nodes(v, memo) for v in obj)
        if any(a is not b for a, b in zip(restored, obj, strict=True)):
            memo[key] = restored
            return restored
    elif isinstance(obj, argparse.Namespace):
        for k, v in vars(obj).items():
            setattr(obj, k, _restore_config_nodes(v, memo))
    return obj


class _TrustedUnpickler(pickle.Unpickler):
    """Unrestricted unpickler that still maps yacs' CfgNode to ConfigNode (yacs not needed)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("yacs.config", "CfgNode"):
            return ConfigNode
        return super().find_class(module, name)


def _trusted_pickle_module() -> types.ModuleType:
    module = types.ModuleType("claver_trusted_pickle")
    module.Unpickler = _TrustedUnpickler  # type: ignore[attr-defined]
    module.load = lambda f, **kw: _TrustedUnpickler(f, **kw).load()  # type: ignore[attr-defined]
    return module


def _wrong_kind_error(path: Path, kind: str, desc: str) -> CheckpointReadError:
    hints = {
        "torchscript": "load it with load_torchscript_state_dict()",
        "safetensors": "load it with safetensors.torch.load_file()",
    }
    hint = hints.get(kind, "expected a file written by torch.save")
    return CheckpointReadError(
        f"Cannot read {str(path)!r} as a pickle checkpoint: found {desc}; {hint}.", path
    )


def load_pickle_checkpoint(
    path: PathLike,
    *,
    map_location: Any = "cpu",
    trust_remote_pickle: bool = False,
) -> Any:
    """Load a ``torch.save`` file without executing code from it.

    Uses ``torch.load(..., weights_only=True)`` with :data:`EXTRA_SAFE_GLOBALS` allowed.
    A pickled ``yacs.config.CfgNode`` (official CLAVER ``checkpoint["config"]``) comes back as
    :class:`ConfigNode`. Raises :class:`UnsafeCheckpointError` if the file references any other
    global (nothing is executed), :class:`CheckpointReadError` if the file is empty, truncated,
    corrupt or not a torch.save file, FileNotFoundError if it does not exist.

    ``trust_remote_pickle=True`` switches to ordinary unpickling, which RUNS ANY CODE the
    file contains: pass it only for files whose origin you trust.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint file at {str(path)!r}")
    kind, desc = _sniff(path)
    if kind not in ("torch-zip", "torch-legacy"):
        raise _wrong_kind_error(path, kind, desc)

    scan = _precheck(path, kind, desc)
    if trust_remote_pickle:
        try:
            obj = torch.load(path, map_location=map_location, weights_only=False,
                             pickle_module=_trusted_pickle_module())
        except (RuntimeError, EOFError, pickle.UnpicklingError, struct.error) as exc:
            raise CheckpointReadError(
                f"Cannot read checkpoint {str(path)!r} ({desc}): {exc}", path) from exc
        check_loaded_tensors(obj, path)
        return obj

    disallowed = scan.globals - _allowed_global_names()
    if disallowed:
        raise _unsafe_error(path, disallowed)

    with _LOAD_LOCK:
        registered = set(torch.serialization.get_safe_globals())
        extra = [g for g in _extra_safe_globals() if g not in registered]
        try:
            with torch.serialization.safe_globals(extra):
                obj = torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as exc:
            core = _core_message(exc)
            if "GLOBAL" in core:
                name = core.split("GLOBAL", 1)[1].split()[0]
                raise _unsafe_error(path, [name]) from None
            if "Unsupported operand" in core:
                raise CheckpointReadError(
                    f"Cannot read checkpoint {str(path)!r} ({desc}) with the restricted "
                    f"loader: {core}. The pickle is corrupt or was written with a pickle "
                    "protocol other than torch.save's default 2; re-save it with the default "
                    "protocol, or pass trust_remote_pickle=True if you trust it.", path
                ) from None
            raise _unsafe_error(path, [f"<structure refused by the restricted loader: {core}>"]
                                ) from None
        except (RuntimeError, EOFError, ValueError, KeyError, IndexError, struct.error,
                zipfile.BadZipFile, UnicodeDecodeError) as exc:
            raise CheckpointReadError(
                f"Cannot read checkpoint {str(path)!r} ({desc}): {type(exc).__name__}: "
                f"{_core_message(exc)}", path) from exc
    check_loaded_tensors(obj, path)
    return _restore_config_nodes(obj, {})


def load_torchscript_state_dict(path: PathLike) -> dict[str, torch.Tensor]:
    """State dict of a TorchScript archive (e.g. OpenAI's CLIP ``ViT-B-16.pt``), on CPU.

    The same keys, dtypes, values and strides as ``torch.jit.load(path).state_dict()``, but
    nothing from the archive is compiled or run: its pickle is read by a restricted reader
    (:mod:`claver.weights.torchscript`) that rebuilds tensors from the archive's storages and
    refuses anything else. The non-weight entries ``input_resolution``, ``context_length``
    and ``vocab_size`` are dropped. Raises :class:`UnsafeCheckpointError` (naming the global,
    the module class or the tensor) for archives that would need their code run or would
    expand beyond what they hold, :class:`CheckpointReadError` for broken or other files.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint file at {str(path)!r}")
    kind, desc = _sniff(path)
    if kind != "torchscript":
        hint = ("load it with load_pickle_checkpoint()"
                if kind in ("torch-zip", "torch-legacy") else "expected torch.jit.save output")
        raise CheckpointReadError(
            f"Cannot read {str(path)!r} as TorchScript: found {desc}; {hint}.", path)
    try:
        state = read_torchscript_state_dict(path)
    except PickleRefused as exc:
        reason = f" ({exc.reason})" if exc.reason else ""
        verb = "contains" if exc.what.startswith("<") else "references"
        raise UnsafeCheckpointError(
            f"Refusing to load TorchScript archive {str(path)!r}: its data.pkl {verb} "
            f"{_friendly(exc.what)}{reason}, which a TorchScript archive of weights does not "
            "need. Nothing in the file was executed: claver reads TorchScript archives "
            "without running their code.", path, [exc.what]) from None
    except PickleCorrupt as exc:
        raise CheckpointReadError(
            f"Cannot read TorchScript archive {str(path)!r} ({desc}): {exc}", path) from None
    except (OSError, EOFError) as exc:
        raise CheckpointReadError(
            f"Cannot read TorchScript archive {str(path)!r} ({desc}): {exc}", path) from exc
    for key in _TORCHSCRIPT_NON_WEIGHTS:
        state.pop(key, None)
    return state
