"""Reading stored pickles without running code from them: the restricted unpickler a reader of
a hub's files uses (part of the codec; see ``runtime._codec``)."""

from __future__ import annotations

import builtins
import dataclasses
import enum
import io
import pickle
import sys
from typing import Any

#: what a reader rebuilds besides the classes of this product's own records
_SAFE_GLOBALS = frozenset({
    ("builtins", name) for name in (
        "list", "dict", "set", "frozenset", "tuple", "bytes", "bytearray", "str", "int", "float", "complex",
        "bool", "range", "slice", "object",
    )
} | {
    ("datetime", "datetime"), ("datetime", "date"), ("datetime", "time"), ("datetime", "timedelta"),
    ("datetime", "timezone"), ("decimal", "Decimal"), ("fractions", "Fraction"), ("uuid", "UUID"),
    ("collections", "OrderedDict"), ("collections", "deque"), ("collections", "Counter"),
    ("copyreg", "_reconstructor"),  # builds an object of a class that itself passed these checks
})
_OWN_PACKAGES = ("orchestrations", "entities", "runtime")


def _ignore(*args: Any) -> None:
    """What an :class:`Undecoded` does with whatever a pickle does to it."""


class _UndecodedType(type):
    """The stand-ins' type: calling a stand-in (a pickle's REDUCE) makes another stand-in
    class, so a later NEWOBJ on it, which needs a class, works too."""

    type_name: str

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls.type_name.endswith("._make_skeleton_class") and len(args) > 1 and isinstance(args[1], str):
            return _stand_in(f"{args[1]} (a class carried by value)")  # cloudpickle's class of __main__
        return _stand_in(cls.type_name)

    def __repr__(cls) -> str:
        return f"<{cls.type_name}: not decoded>"

    __setitem__ = _ignore


class Undecoded(metaclass=_UndecodedType):
    """Stands for a stored object that :func:`safe_decode` does not rebuild (its type is not
    one a reader may create: user classes, functions, anything carried by value). Its ``repr``
    names the type it stands for; whatever the pickle does to it is ignored."""

    type_name = "value"

    def __new__(cls, *args: Any, **kwargs: Any) -> Undecoded:
        return object.__new__(cls)

    __setstate__ = staticmethod(_ignore)
    append = staticmethod(_ignore)
    extend = staticmethod(_ignore)
    __setitem__ = _ignore

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _stand_in(self.type_name)

    def __repr__(self) -> str:
        return f"<{self.type_name}: not decoded>"


def _stand_in(type_name: str) -> Any:
    return _UndecodedType("Undecoded", (Undecoded,), {"type_name": type_name})


def _own_record_class(module: str, name: str) -> Any:
    """The class ``module.name`` if it is one of this product's records (a dataclass, an enum
    or an error) in a module already imported; else ``None``. Nothing is imported."""
    if module.split(".", 1)[0] not in _OWN_PACKAGES or module not in sys.modules or "." in name:
        return None
    found = getattr(sys.modules[module], name, None)
    if isinstance(found, type) and (
        dataclasses.is_dataclass(found) or issubclass(found, (enum.Enum, BaseException))
    ):
        return found
    return None


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        if module == "builtins" and isinstance(getattr(builtins, name, None), type):
            found = super().find_class(module, name)
            if issubclass(found, BaseException):
                return found
        return _own_record_class(module, name) or _stand_in(f"{module}.{name}")


def safe_decode(blob: bytes | None) -> Any:
    """The value encoded in ``blob``, rebuilt without running code from it: only plain data
    (containers, numbers, strings, times), this product's own records and built-in errors
    are rebuilt, anything else (a user's class, a function) is an :class:`Undecoded` naming
    its type, and no module is imported. What a reader of a hub's files uses (the CLI): a
    file planted in a hub cannot make it run code. A blob that cannot be read at all is an
    :class:`Undecoded` too."""
    if blob is None:
        return None
    try:
        return _RestrictedUnpickler(io.BytesIO(blob)).load()
    except Exception:
        return _stand_in(f"unreadable value of {len(blob)} bytes")
