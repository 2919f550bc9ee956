"""A pickle machine that never imports, calls or builds anything it was not handed.

Python's own unpickler turns a ``GLOBAL`` opcode into an import and ``REDUCE``/``BUILD``
into calls, which is how a pickle runs code. :func:`run_pickle` instead walks the opcodes
(parsed by :mod:`pickletools`, which only parses) with its own stack and memo:

- a ``GLOBAL``/``STACK_GLOBAL`` name is handed to ``resolve_global``, which returns a
  :class:`Global` (or raises :class:`PickleRefused`); nothing is imported;
- ``REDUCE``/``NEWOBJ`` only ever call :meth:`Global.call`/:meth:`Global.new` of such an
  object, ``BUILD``/``SETITEMS``/``APPENDS`` on anything but a plain dict/list only reach
  :class:`Inert` objects the resolver made; anything else is refused;
- ``INST``, ``OBJ``, the copyreg ``EXT`` opcodes and out-of-band buffers are refused;
- dict keys and set members are restricted to types whose hash an attacker cannot make
  collide (no integers beyond 2**61, no nested tuples): a pickle cannot make dict
  insertion quadratic or hashing recurse without bound.

``symbolic=True`` evaluates a pickle without refusing anything: every global becomes a
:class:`Symbol`, calls produce :class:`SymbolicObject`. Callers use it to list the globals
and storages a ``torch.save`` pickle references before handing the file to PyTorch.
Memory is linear in the size of the pickle (every opcode adds at most a reference).
"""

from __future__ import annotations

import _compat_pickle
import pickletools
import struct
from collections.abc import Callable
from typing import IO, Any

__all__ = ["Global", "Inert", "PickleCorrupt", "PickleRefused", "Symbol", "SymbolicObject",
           "canonical_name", "run_pickle"]

_HASH_SAFE_INT = 2**61 - 1  # CPython hashes ints modulo this prime: smaller ints never collide
_SCALAR_KEYS = (str, bytes, bool, float, type(None))
_OPAQUE_KEYS = (*_SCALAR_KEYS, int)


class PickleRefused(Exception):
    """The pickle needs something outside the allow-list; ``what`` names it."""

    def __init__(self, what: str, reason: str = "") -> None:
        super().__init__(f"{what} ({reason})" if reason else what)
        self.what = what
        self.reason = reason


class PickleCorrupt(Exception):
    """The pickle stream is malformed (truncated, unknown opcode, inconsistent stack)."""


class Inert:
    """Base of objects the machine may ``BUILD`` or fill; by default each of those is refused."""

    __slots__ = ()

    def build(self, state: Any) -> None:
        raise PickleRefused(type(self).__name__, "BUILD is not allowed on it")

    def setitem(self, key: Any, value: Any) -> None:
        raise PickleRefused(type(self).__name__, "SETITEM is not allowed on it")

    def append(self, value: Any) -> None:
        raise PickleRefused(type(self).__name__, "APPEND is not allowed on it")


class Global:
    """What a resolved global stands for. Calling (``REDUCE``) or instantiating (``NEWOBJ``)
    it is refused unless a subclass says what that means."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def call(self, args: tuple) -> Any:
        raise PickleRefused(self.name, "calling it is not allowed")

    def new(self, args: tuple) -> Any:
        raise PickleRefused(self.name, "instantiating it is not allowed")

    def __repr__(self) -> str:
        return f"<global {self.name}>"


class SymbolicObject(Inert):
    """Result of calling a :class:`Symbol`: accepts and discards any state or items."""

    __slots__ = ("origin",)

    def __init__(self, origin: str) -> None:
        self.origin = origin

    def build(self, state: Any) -> None:
        pass

    def setitem(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass


class Symbol(Global, Inert):
    """A global in symbolic evaluation: named, never imported; calls give SymbolicObject."""

    __slots__ = ()

    def call(self, args: tuple) -> Any:
        return SymbolicObject(self.name)

    new = call

    def build(self, state: Any) -> None:
        pass


def canonical_name(module: str, name: str) -> str:
    """``module.name`` with Python 2 names mapped as the unpickler maps them."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{name}"


def _check_key(key: Any) -> None:
    """Refuse hash keys whose hash an attacker can make collide, or that hash recursively."""
    if isinstance(key, int) and not isinstance(key, bool):
        if -_HASH_SAFE_INT < key < _HASH_SAFE_INT:
            return
        raise PickleRefused("<integer dict key or set member beyond 2**61>",
                            "such keys can be chosen to collide and make loading quadratic")
    if isinstance(key, _SCALAR_KEYS) or isinstance(key, Inert | Global):
        return
    if type(key) is tuple and len(key) <= 64:
        for item in key:
            if type(item) is tuple or not isinstance(item, (*_OPAQUE_KEYS, Inert, Global)):
                break
            _check_key(item)
        else:
            return
    raise PickleRefused(f"<dict key or set member of type {type(key).__name__}>",
                        "only strings, numbers and flat tuples of them are accepted")


class _Machine:
    def __init__(self, resolve_global: Callable[[str], Any],
                 persistent_load: Callable[[Any], Any], symbolic: bool) -> None:
        self.resolve = resolve_global
        self.persistent_load = persistent_load
        self.symbolic = symbolic
        self.stack: list[Any] = []
        self.metastack: list[list[Any]] = []
        self.memo: dict[int, Any] = {}

    # -- helpers
    def pop_mark(self) -> list[Any]:
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    def refuse(self, what: str, reason: str) -> None:
        if not self.symbolic:
            raise PickleRefused(what, reason)

    def set_items(self, target: Any, items: list[Any]) -> None:
        if len(items) % 2:
            raise PickleCorrupt("SETITEMS with an odd number of items")
        for i in range(0, len(items), 2):
            _check_key(items[i])
        if type(target) is dict:
            for i in range(0, len(items), 2):
                target[items[i]] = items[i + 1]
        elif isinstance(target, Inert):
            for i in range(0, len(items), 2):
                target.setitem(items[i], items[i + 1])
        else:
            self.refuse(f"<SETITEM on {type(target).__name__}>", "only dicts take items")

    def append_items(self, target: Any, items: list[Any]) -> None:
        if type(target) is list:
            target.extend(items)
        elif isinstance(target, Inert):
            for item in items:
                target.append(item)
        else:
            self.refuse(f"<APPEND on {type(target).__name__}>", "only lists take items")

    def call(self, func: Any, args: Any, how: str) -> Any:
        if isinstance(func, Global) and type(args) is tuple:
            return func.call(args) if how == "call" else func.new(args)
        what = func.name if isinstance(func, Global) else f"<{how} of a {type(func).__name__}>"
        self.refuse(what, f"{'REDUCE' if how == 'call' else 'NEWOBJ'} is only allowed on an "
                          "allow-listed global with a tuple of arguments")
        return SymbolicObject(what)

    # -- the main loop
    def run(self, stream: IO[bytes]) -> Any:
        ops = pickletools.genops(stream)
        handlers = _HANDLERS
        while True:
            try:
                opcode, arg, pos = next(ops)
            except StopIteration:
                raise PickleCorrupt("the pickle ends without a STOP opcode") from None
            except (ValueError, EOFError, UnicodeDecodeError, OverflowError, struct.error,
                    MemoryError) as exc:
                raise PickleCorrupt(f"unreadable pickle data: {str(exc)[:200]}") from None
            name = opcode.name
            try:
                if name == "STOP":
                    if self.metastack or len(self.stack) != 1:
                        raise PickleCorrupt("the pickle stops with an unbalanced stack")
                    return self.stack.pop()
                handler = handlers.get(name)
                if handler is None:  # NEXT_BUFFER, READONLY_BUFFER, anything newer
                    raise PickleRefused(f"<{name} opcode>", "not supported")
                handler(self, arg)
            except IndexError:
                raise PickleCorrupt(f"{name} at byte {pos} finds an empty stack") from None
            except KeyError:
                raise PickleCorrupt(f"{name} at byte {pos} reads an unset memo slot") from None
            except TypeError as exc:
                raise PickleCorrupt(f"{name} at byte {pos}: {str(exc)[:200]}") from None

    # -- one method per opcode (or family); see _HANDLERS
    def op_value(self, arg: Any) -> None:
        self.stack.append(arg)

    def op_get(self, arg: int) -> None:
        self.stack.append(self.memo[arg])

    def op_put(self, arg: int) -> None:
        if arg < 0:
            raise PickleCorrupt("negative memo index")
        self.memo[arg] = self.stack[-1]

    def op_memoize(self, arg: None) -> None:
        self.memo[len(self.memo)] = self.stack[-1]

    def op_mark(self, arg: None) -> None:
        self.metastack.append(self.stack)
        self.stack = []

    def op_none(self, arg: None) -> None:
        self.stack.append(None)

    def op_true(self, arg: None) -> None:
        self.stack.append(True)

    def op_false(self, arg: None) -> None:
        self.stack.append(False)

    def op_empty_tuple(self, arg: None) -> None:
        self.stack.append(())

    def op_empty_list(self, arg: None) -> None:
        self.stack.append([])

    def op_empty_dict(self, arg: None) -> None:
        self.stack.append({})

    def op_empty_set(self, arg: None) -> None:
        self.stack.append(set())

    def op_bytearray(self, arg: bytes) -> None:
        self.stack.append(bytearray(arg))

    def op_tuple(self, arg: None) -> None:
        items = self.pop_mark()
        self.stack.append(tuple(items))

    def op_tuple1(self, arg: None) -> None:
        self.stack[-1] = (self.stack[-1],)

    def op_tuple2(self, arg: None) -> None:
        stack = self.stack
        if len(stack) < 2:
            raise IndexError
        stack[-2:] = [(stack[-2], stack[-1])]

    def op_tuple3(self, arg: None) -> None:
        stack = self.stack
        if len(stack) < 3:
            raise IndexError
        stack[-3:] = [(stack[-3], stack[-2], stack[-1])]

    def op_list(self, arg: None) -> None:
        items = self.pop_mark()
        self.stack.append(items)

    def op_dict(self, arg: None) -> None:
        items = self.pop_mark()
        result: dict[Any, Any] = {}
        self.set_items(result, items)
        self.stack.append(result)

    def op_frozenset(self, arg: None) -> None:
        items = self.pop_mark()
        for item in items:
            _check_key(item)
        self.stack.append(frozenset(items))

    def op_append(self, arg: None) -> None:
        item = self.stack.pop()
        self.append_items(self.stack[-1], [item])

    def op_appends(self, arg: None) -> None:
        items = self.pop_mark()
        self.append_items(self.stack[-1], items)

    def op_setitem(self, arg: None) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        self.set_items(self.stack[-1], [key, value])

    def op_setitems(self, arg: None) -> None:
        items = self.pop_mark()
        self.set_items(self.stack[-1], items)

    def op_additems(self, arg: None) -> None:
        items = self.pop_mark()
        target = self.stack[-1]
        for item in items:
            _check_key(item)
        if type(target) is not set:
            raise PickleCorrupt("ADDITEMS on something that is not a set")
        target.update(items)

    def op_pop(self, arg: None) -> None:
        if self.stack:
            self.stack.pop()
        else:
            self.pop_mark()

    def op_pop_mark(self, arg: None) -> None:
        self.pop_mark()

    def op_dup(self, arg: None) -> None:
        self.stack.append(self.stack[-1])

    def op_global(self, arg: str) -> None:
        module, _, qualname = str(arg).partition(" ")
        self.stack.append(self.resolve(canonical_name(module, qualname)))

    def op_stack_global(self, arg: None) -> None:
        qualname = self.stack.pop()
        module = self.stack.pop()
        if type(module) is not str or type(qualname) is not str:
            raise PickleCorrupt("STACK_GLOBAL needs two strings")
        self.stack.append(self.resolve(canonical_name(module, qualname)))

    def op_reduce(self, arg: None) -> None:
        args = self.stack.pop()
        self.stack[-1] = self.call(self.stack[-1], args, "call")

    def op_newobj(self, arg: None) -> None:
        args = self.stack.pop()
        self.stack[-1] = self.call(self.stack[-1], args, "new")

    def op_newobj_ex(self, arg: None) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        if kwargs:
            self.refuse("<NEWOBJ_EX with keyword arguments>", "not supported")
        self.stack[-1] = self.call(self.stack[-1], args, "new")

    def op_build(self, arg: None) -> None:
        state = self.stack.pop()
        target = self.stack[-1]
        if isinstance(target, Inert):
            target.build(state)
        else:
            self.refuse(f"<BUILD on {type(target).__name__}>",
                        "only allow-listed objects may be given state")

    def op_persid(self, arg: str) -> None:
        self.stack.append(self.persistent_load(arg))

    def op_binpersid(self, arg: None) -> None:
        pid = self.stack.pop()
        self.stack.append(self.persistent_load(pid))

    def op_ext(self, arg: int) -> None:
        what = f"<copyreg extension code {arg}>"
        self.refuse(what, "copyreg extension codes are not allowed")
        self.stack.append(self.resolve(what))

    def op_inst(self, arg: str) -> None:
        self.pop_mark()
        module, _, qualname = str(arg).partition(" ")
        cls = self.resolve(canonical_name(module, qualname))  # a refused name is named
        self.refuse(cls.name, "the INST opcode instantiates classes by name")
        self.stack.append(SymbolicObject(cls.name))

    def op_obj(self, arg: None) -> None:
        items = self.pop_mark()
        if not items:
            raise PickleCorrupt("OBJ without a class")
        cls = items[0]
        what = cls.name if isinstance(cls, Global) else f"<OBJ of a {type(cls).__name__}>"
        self.refuse(what, "the OBJ opcode instantiates classes")
        self.stack.append(SymbolicObject(what))

    def op_nothing(self, arg: Any) -> None:  # PROTO, FRAME
        pass


_VALUE_OPS = frozenset({
    "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT",
    "STRING", "BINSTRING", "SHORT_BINSTRING", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8",
    "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8",
})
_MEMO_GET = frozenset({"GET", "BINGET", "LONG_BINGET"})
_MEMO_PUT = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})

_HANDLERS: dict[str, Callable[[_Machine, Any], None]] = {
    **dict.fromkeys(_VALUE_OPS, _Machine.op_value),
    **dict.fromkeys(_MEMO_GET, _Machine.op_get),
    **dict.fromkeys(_MEMO_PUT, _Machine.op_put),
    **dict.fromkeys(("EXT1", "EXT2", "EXT4"), _Machine.op_ext),
    **dict.fromkeys(("PROTO", "FRAME"), _Machine.op_nothing),
    "MEMOIZE": _Machine.op_memoize, "MARK": _Machine.op_mark, "NONE": _Machine.op_none,
    "NEWTRUE": _Machine.op_true, "NEWFALSE": _Machine.op_false,
    "EMPTY_TUPLE": _Machine.op_empty_tuple, "EMPTY_LIST": _Machine.op_empty_list,
    "EMPTY_DICT": _Machine.op_empty_dict, "EMPTY_SET": _Machine.op_empty_set,
    "BYTEARRAY8": _Machine.op_bytearray, "TUPLE": _Machine.op_tuple,
    "TUPLE1": _Machine.op_tuple1, "TUPLE2": _Machine.op_tuple2, "TUPLE3": _Machine.op_tuple3,
    "LIST": _Machine.op_list, "DICT": _Machine.op_dict, "FROZENSET": _Machine.op_frozenset,
    "APPEND": _Machine.op_append, "APPENDS": _Machine.op_appends,
    "SETITEM": _Machine.op_setitem, "SETITEMS": _Machine.op_setitems,
    "ADDITEMS": _Machine.op_additems, "POP": _Machine.op_pop,
    "POP_MARK": _Machine.op_pop_mark, "DUP": _Machine.op_dup, "GLOBAL": _Machine.op_global,
    "STACK_GLOBAL": _Machine.op_stack_global, "REDUCE": _Machine.op_reduce,
    "NEWOBJ": _Machine.op_newobj, "NEWOBJ_EX": _Machine.op_newobj_ex,
    "BUILD": _Machine.op_build, "PERSID": _Machine.op_persid,
    "BINPERSID": _Machine.op_binpersid, "INST": _Machine.op_inst, "OBJ": _Machine.op_obj,
}


def run_pickle(stream: IO[bytes], *, resolve_global: Callable[[str], Any],
               persistent_load: Callable[[Any], Any], symbolic: bool = False) -> Any:
    """Evaluate the next pickle in ``stream`` (which is left just after its STOP opcode).

    ``resolve_global(name)`` gets each referenced global as ``"module.qualname"`` and returns
    a :class:`Global` or raises :class:`PickleRefused`; ``persistent_load(pid)`` gets each
    persistent id. Raises :class:`PickleRefused` (nothing outside the resolver's objects was
    touched) or :class:`PickleCorrupt`.
    """
    return _Machine(resolve_global, persistent_load, symbolic).run(stream)
