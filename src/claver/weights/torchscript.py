"""Read the weights of a TorchScript archive without running any of its code.

``torch.jit.load`` compiles the archive's ``code/`` and runs it (a module's ``__setstate__``
can write files, loop forever or allocate gigabytes). This reader never does. A
``torch.jit.save`` archive is a zip with, under one folder:

- ``data.pkl``: the module tree, pickled: each TorchScript object is ``GLOBAL
  __torch__.<class>``, ``NEWOBJ`` and ``BUILD`` with a dict of its attributes; tensors are
  ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)``
  with the storage a persistent id ``('storage', torch.<T>Storage, key, location, numel)``;
- ``data/<key>``: the raw bytes of each storage;
- ``code/**.py``: the classes in TorchScript's Python syntax. Only their declarations are
  read here, as text (``class X(Module):``, ``__parameters__ = [...]``,
  ``__buffers__ = [...]``), to know which attributes are parameters and buffers.

``data.pkl`` is evaluated by :func:`claver.weights.restricted_pickle.run_pickle` with this
allow-list and nothing else: ``__torch__.*`` classes (become inert :class:`ScriptObject`
records of their attributes), ``torch._utils._rebuild_tensor_v2``,
``torch._utils._rebuild_parameter``, ``collections.OrderedDict`` (empty, for tensor hooks),
the twelve ``torch.<T>Storage`` types (only inside storage ids), ``torch.jit._pickle``'s
list/type tags, ``torch.device`` and ``builtins.complex``. ``constants.pkl`` (used only by
the code) is not read. The state dict is then assembled like ``torch.jit.load(f).state_dict()``:
for each module, its parameters then its buffers in attribute order, then its submodules.
A module whose class defines ``__setstate__`` (or whose state is not an attribute dict)
restores itself with its own code and is refused.
"""

from __future__ import annotations

import ast
import io
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from claver.weights.archive_checks import (
    MAX_PICKLE_BYTES,
    VIEW_ALIAS_FACTOR,
    VIEW_ALIAS_SLACK,
    CheckedZip,
    MiB,
    open_checked_zip,
    oversized_view_error,
    storage_dtype,
)
from claver.weights.errors import CheckpointReadError, UnsafeCheckpointError
from claver.weights.restricted_pickle import (
    Global,
    Inert,
    PickleCorrupt,
    PickleRefused,
    run_pickle,
)

__all__ = ["ScriptObject", "read_torchscript_state_dict"]

MAX_CODE_BYTES = 32 * MiB
MAX_MODULES = 100_000
MAX_MODULE_DEPTH = 200
MAX_DIMS = 64

_CLASS_LINE = re.compile(r"class ([A-Za-z_][A-Za-z0-9_]*)(?:\((.*)\))?:\s*$")
_TORCHSCRIPT_CLASSES = ("__torch__.",)
_CPP_CLASSES = "__torch__.torch.classes."


# ----------------------------------------------------------------------------- declarations


@dataclass
class ClassDecl:
    """What ``code/`` declares about a TorchScript class (read as text, never run)."""

    qualname: str
    is_module: bool
    parameters: list[str] = field(default_factory=list)
    buffers: list[str] = field(default_factory=list)
    restores_itself: bool = False  # defines __setstate__: torch.jit.load would run it


def _name_list(text: str, where: str) -> list[str]:
    if len(text) > MiB:
        raise PickleCorrupt(f"{where}: declaration line too long")
    try:
        names = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError) as exc:
        raise PickleCorrupt(f"{where}: unreadable declaration ({str(exc)[:100]})") from None
    if type(names) is not list or not all(type(n) is str for n in names):
        raise PickleCorrupt(f"{where}: declaration is not a list of names")
    return names


def parse_class_declarations(text: str, module: str, decls: dict[str, ClassDecl]) -> None:
    """Add the classes declared in one ``code/`` file (``module`` = its dotted path)."""
    current: ClassDecl | None = None
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line.startswith(" "):
            current = None
            match = _CLASS_LINE.match(line)
            if match:
                qualname = f"{module}.{match[1]}"
                if qualname in decls:
                    raise PickleCorrupt(f"class {qualname} is defined twice")
                current = decls[qualname] = ClassDecl(qualname, (match[2] or "") == "Module")
            continue
        if current is None or line.startswith("   "):  # deeper lines: method bodies
            continue
        stmt = line[2:]
        if stmt.startswith("__parameters__ ="):
            current.parameters = _name_list(stmt.split("=", 1)[1], current.qualname)
        elif stmt.startswith("__buffers__ ="):
            current.buffers = _name_list(stmt.split("=", 1)[1], current.qualname)
        elif stmt.startswith("def __setstate__("):
            current.restores_itself = True


def _read_declarations(archive: CheckedZip) -> dict[str, ClassDecl]:
    decls: dict[str, ClassDecl] = {}
    total = 0
    for rel in sorted(archive.names()):
        if not (rel.startswith("code/") and rel.endswith(".py")):
            continue
        info = archive.member(rel)
        assert info is not None
        total += info.file_size
        if total > MAX_CODE_BYTES:
            raise UnsafeCheckpointError(
                f"Refusing to load {str(archive.path)!r}: its code/ declares more than "
                f"{MAX_CODE_BYTES // MiB} MiB of TorchScript source.", archive.path)
        raw = archive.read(rel, MAX_CODE_BYTES, "TorchScript source")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise PickleCorrupt(f"{rel} is not UTF-8 text") from None
        parse_class_declarations(text, rel[len("code/"):-len(".py")].replace("/", "."), decls)
    return decls


# ----------------------------------------------------------------------------- unpickling


class ScriptObject(Inert):
    """Inert record of a pickled TorchScript object: its class name and its state."""

    __slots__ = ("qualname", "state", "args", "built")

    def __init__(self, qualname: str, args: tuple = ()) -> None:
        self.qualname = qualname
        self.args = args
        self.state: Any = None
        self.built = False

    def build(self, state: Any) -> None:
        if self.built:
            raise PickleCorrupt(f"{self.qualname} object given state twice")
        self.state, self.built = state, True


@dataclass(eq=False)
class _StorageRef(Inert):
    key: str
    dtype: torch.dtype
    data: torch.Tensor  # uint8, exactly numel * itemsize bytes


@dataclass(eq=False)
class _OversizedView(Inert):
    """A tensor that would need more bytes than its storage holds: refused if it is used."""

    shape: tuple
    stride: tuple
    dtype: torch.dtype
    storage_nbytes: int


class _ScriptClass(Global):
    def new(self, args: tuple) -> ScriptObject:
        return ScriptObject(self.name, args)

    call = new  # enums and the like: the record keeps the arguments


class _StorageType(Global):
    def __init__(self, name: str, dtype: torch.dtype) -> None:
        super().__init__(name)
        self.dtype = dtype


def _is_index(value: Any) -> bool:
    """A non-negative int64 (no arbitrary-precision arithmetic on pickled numbers)."""
    return type(value) is int and 0 <= value < 2**63


def _is_empty(hooks: Any) -> bool:
    return hooks is None or (type(hooks) is dict and not hooks)


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if type(value) is not tuple or len(value) > MAX_DIMS or not all(map(_is_index, value)):
        raise PickleCorrupt(f"tensor {what} must be a tuple of at most {MAX_DIMS} "
                            "non-negative int64 values")
    return value


class _RebuildTensor(Global):
    """``torch._utils._rebuild_tensor_v2``, re-implemented with bounds checks."""

    def call(self, args: tuple) -> torch.Tensor | _OversizedView:
        if len(args) not in (6, 7):
            raise PickleCorrupt(f"{self.name} takes 6 or 7 arguments, got {len(args)}")
        storage, offset, size, stride, requires_grad, hooks, *metadata = args
        if not isinstance(storage, _StorageRef):
            raise PickleCorrupt(f"{self.name} needs a storage")
        if not _is_index(offset) or type(requires_grad) is not bool:
            raise PickleCorrupt(f"{self.name}: bad storage offset or requires_grad")
        size, stride = _ints(size, "size"), _ints(stride, "stride")
        if len(size) != len(stride):
            raise PickleCorrupt(f"{self.name}: size and stride differ in length")
        if not _is_empty(hooks) or not all(map(_is_empty, metadata)):
            raise PickleRefused(self.name, "tensors with backward hooks or Python metadata "
                                           "are not accepted")
        itemsize = storage.dtype.itemsize
        nbytes = storage.data.numel()
        numel = 1
        for n in size:
            numel *= n
        extent = offset if numel == 0 else offset + sum(
            (n - 1) * s for n, s in zip(size, stride, strict=True)) + 1
        if extent * itemsize > nbytes:
            raise PickleCorrupt(
                f"a tensor of shape {size} (strides {stride}, offset {offset}) reaches past "
                f"the end of storage {storage.key!r} ({nbytes} bytes)")
        if numel * itemsize > nbytes:
            return _OversizedView(size, stride, storage.dtype, nbytes)
        tensor = torch.empty(0, dtype=storage.dtype)
        return tensor.set_(storage.data.untyped_storage(), offset, size, stride)


class _RebuildParameter(Global):
    def call(self, args: tuple) -> Any:
        if len(args) != 3 or not isinstance(args[0], torch.Tensor | _OversizedView):
            raise PickleCorrupt(f"{self.name} needs (tensor, requires_grad, hooks)")
        if not _is_empty(args[2]):
            raise PickleRefused(self.name, "parameters with backward hooks are not accepted")
        return args[0]


class _EmptyDict(Global):  # collections.OrderedDict(): the (empty) backward hooks of a tensor
    def call(self, args: tuple) -> dict:
        if args:
            raise PickleRefused(self.name, "only an empty OrderedDict() is accepted")
        return {}


class _Tag(Global):  # torch.jit._pickle.build_*list / restore_type_tag: identity on data
    def call(self, args: tuple) -> Any:
        if not args or len(args) > 2 or (len(args) == 2 and type(args[1]) is not str):
            raise PickleCorrupt(f"{self.name}: unexpected arguments")
        return args[0]


class _Literal(Global):  # torch.device("cpu"), complex(re, im): kept as plain values
    def call(self, args: tuple) -> Any:
        if self.name == "builtins.complex":
            if len(args) == 2 and all(type(a) in (int, float) for a in args):
                return complex(*args)
        elif len(args) in (1, 2) and type(args[0]) is str:
            return args[0]
        raise PickleCorrupt(f"{self.name}: unexpected arguments")


_ALLOWED = {
    "torch._utils._rebuild_tensor_v2": _RebuildTensor,
    "torch._utils._rebuild_parameter": _RebuildParameter,
    "collections.OrderedDict": _EmptyDict,
    "torch.jit._pickle.build_intlist": _Tag,
    "torch.jit._pickle.build_tensorlist": _Tag,
    "torch.jit._pickle.build_doublelist": _Tag,
    "torch.jit._pickle.build_boollist": _Tag,
    "torch.jit._pickle.restore_type_tag": _Tag,
    "torch.device": _Literal,
    "builtins.complex": _Literal,
}


def _resolve(name: str) -> Global:
    if name.startswith(_TORCHSCRIPT_CLASSES):
        return _ScriptClass(name)
    if name in _ALLOWED:
        return _ALLOWED[name](name)
    dtype = storage_dtype(name, quantized=False)
    if dtype is not None:
        return _StorageType(name, dtype)
    raise PickleRefused(name, "not on the TorchScript allow-list")


def _unpickle_module_tree(archive: CheckedZip) -> tuple[Any, int]:
    """The root ScriptObject of ``data.pkl`` and the number of storage bytes read."""
    storages: dict[str, _StorageRef] = {}

    def persistent_load(pid: Any) -> _StorageRef:
        if type(pid) is not tuple or len(pid) != 5 or pid[0] != "storage":
            raise PickleRefused("<persistent id>", "only ('storage', ...) ids are accepted")
        _, cls, key, location, numel = pid
        if not isinstance(cls, _StorageType) or type(key) is not str or type(
                location) is not str or not _is_index(numel):
            raise PickleCorrupt("malformed storage reference")
        if key in storages:
            ref = storages[key]
            if ref.dtype != cls.dtype or ref.data.numel() != numel * cls.dtype.itemsize:
                raise PickleCorrupt(f"storage {key!r} is declared twice differently")
            return ref
        data = archive.read_storage(f"data/{key}", numel * cls.dtype.itemsize)
        storages[key] = ref = _StorageRef(key, cls.dtype, data)
        return ref

    raw = archive.read("data.pkl", MAX_PICKLE_BYTES, "pickle")
    root = run_pickle(io.BytesIO(raw), resolve_global=_resolve,
                      persistent_load=persistent_load)
    return root, sum(ref.data.numel() for ref in storages.values())


# ----------------------------------------------------------------------------- state dict


def _refuse_module(path: Path, qualname: str, why: str) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(
        f"Refusing to load {str(path)!r}: TorchScript module class {qualname} {why}; "
        "torch.jit.load would run that code and claver never runs code from a file. Nothing "
        "was executed. If you trust the archive, export its weights with "
        "torch.jit.load(path).state_dict() in an isolated environment and save them as "
        "safetensors.", path, [qualname])


def _collect(path: Path, root: Any, decls: dict[str, ClassDecl]) -> dict[str, Any]:
    """``torch.jit.load(path).state_dict()``, from the inert records."""
    if not isinstance(root, ScriptObject):
        raise PickleCorrupt("data.pkl does not hold a TorchScript module")
    out: dict[str, Any] = {}
    visits = 0
    stack: list[tuple[str, ScriptObject, tuple[int, ...]]] = [("", root, ())]
    while stack:
        prefix, obj, ancestors = stack.pop()
        visits += 1
        if visits > MAX_MODULES or len(ancestors) > MAX_MODULE_DEPTH or id(obj) in ancestors:
            raise UnsafeCheckpointError(
                f"Refusing to load {str(path)!r}: its module tree is cyclic, deeper than "
                f"{MAX_MODULE_DEPTH} or larger than {MAX_MODULES:,} modules.", path)
        decl = decls.get(obj.qualname)
        if decl is None or not decl.is_module:
            what = "is not defined in the archive's code/" if decl is None else (
                "is not a module")
            raise PickleCorrupt(f"class {obj.qualname} {what}")
        if decl.restores_itself:
            raise _refuse_module(path, obj.qualname, "restores its state with its own "
                                                     "TorchScript __setstate__")
        state = obj.state
        if type(state) is not dict or not all(type(k) is str for k in state):
            raise _refuse_module(path, obj.qualname, "was saved with a custom __getstate__, "
                                                     "so only its own code can restore it")
        for group in (decl.parameters, decl.buffers):
            wanted = set(group)
            missing = wanted - state.keys()
            if missing:
                raise PickleCorrupt(f"{obj.qualname} object lacks {sorted(missing)[0]!r}")
            for name, value in state.items():
                if name not in wanted or value is None:
                    continue
                if not isinstance(value, torch.Tensor | _OversizedView):
                    raise PickleCorrupt(f"{prefix}{name} is declared a tensor but is not one")
                out[prefix + name] = value
        children = []
        for name, value in state.items():
            if not isinstance(value, ScriptObject) or value.qualname.startswith(_CPP_CLASSES):
                continue
            child = decls.get(value.qualname)
            if child is None:
                raise PickleCorrupt(f"class {value.qualname} is not defined in the archive's "
                                    "code/")
            if child.is_module:
                children.append((f"{prefix}{name}.", value, (*ancestors, id(obj))))
        stack.extend(reversed(children))
    return out


def _check_byteorder(archive: CheckedZip) -> None:
    if archive.member("byteorder") is None:
        return
    order = archive.read("byteorder", 16, "byte order record").decode("ascii", "replace")
    if order != sys.byteorder:
        raise CheckpointReadError(
            f"Cannot read {str(archive.path)!r}: it was saved on a {order}-endian machine; "
            f"this one is {sys.byteorder}-endian.", archive.path)


def read_torchscript_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """State dict of a TorchScript archive, as ``torch.jit.load(path).state_dict()`` gives it,
    without running anything from the archive.

    Raises :class:`PickleRefused` / :class:`PickleCorrupt` for the pickle (the caller names
    the file), :class:`UnsafeCheckpointError` for modules that need their own code, oversized
    tensor views and size limits, :class:`CheckpointReadError` for broken archives.
    """
    with open_checked_zip(path) as archive:
        _check_byteorder(archive)
        if archive.member("data.pkl") is None:
            raise CheckpointReadError(
                f"Cannot read {str(path)!r}: the TorchScript archive has no data.pkl (a "
                "format older than PyTorch 1.4, or not a module archive).", path)
        decls = _read_declarations(archive)
        root, stored = _unpickle_module_tree(archive)
    state = _collect(path, root, decls)
    logical = 0
    for key, value in state.items():
        if isinstance(value, _OversizedView):
            raise oversized_view_error(path, key, value.shape, value.stride, value.dtype,
                                       value.storage_nbytes)
        logical += value.numel() * value.element_size()
    if logical > VIEW_ALIAS_FACTOR * stored + VIEW_ALIAS_SLACK:
        raise UnsafeCheckpointError(
            f"Refusing to load {str(path)!r}: its tensors describe {logical:,} bytes but its "
            f"storages hold only {stored:,}: many tensors view the same data.", path)
    return state
