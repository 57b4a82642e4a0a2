"""The one place payloads are encoded: cloudpickle bytes in, Python values out.

cloudpickle (not plain pickle) because users define functions and classes in ``__main__`` or a
notebook, which must travel by value to shard hosts and workers. Everything durable (inputs,
outputs, history events, messages) goes through :func:`encode` and :func:`decode`.
"""

from __future__ import annotations

import base64
import builtins
import dataclasses
import enum
import io
import math
import pickle
import sys
from typing import Any

import cloudpickle

from orchestrations import DurableValueError, FailureDetails, PayloadError
from orchestrations._errors import describe
from orchestrations._failures import failure_of

PROTOCOL = 5


def encode(value: Any, what: str = "value") -> bytes:
    """``value`` as bytes; raises :class:`PayloadError` naming ``what`` if it cannot be.

    Plain ``pickle`` first (several times faster); cloudpickle when that fails or when the
    result refers to ``__main__``, whose classes and functions must travel by value.
    """
    try:
        blob = pickle.dumps(value, protocol=PROTOCOL)
        if b"__main__" not in blob:
            return blob
    except Exception:
        pass
    try:
        return cloudpickle.dumps(value, protocol=PROTOCOL)
    except Exception as exc:
        raise PayloadError(what, describe(value), f"{type(exc).__name__}: {exc}") from None


def decode(blob: bytes | None) -> Any:
    """The value encoded in ``blob`` (``None`` stays ``None``)."""
    if blob is None:
        return None
    return pickle.loads(blob)


# -- reading a hub's files without running code from them ----------------------------------------

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


@dataclasses.dataclass(frozen=True, slots=True)
class RawPayload:
    """A stored payload shown as it is, not decoded (``ray-durable --no-decode``): its size and
    its first bytes in hex."""

    size: int
    head: str

    @staticmethod
    def of(blob: bytes | None) -> RawPayload | None:
        """``blob`` as a :class:`RawPayload` (``None`` stays ``None``)."""
        return None if blob is None else RawPayload(len(blob), bytes(blob[:24]).hex())

    def __repr__(self) -> str:
        return f"<pickle, {self.size} bytes: {self.head}{'...' if self.size > 24 else ''}>"

    __str__ = __repr__


def failure_from_exception(exc: BaseException) -> FailureDetails:
    """FailureDetails of ``exc``, carrying ``exc`` itself as ``cause`` when it pickles."""
    failure = failure_of(exc)
    try:
        pickle.loads(cloudpickle.dumps(exc, protocol=PROTOCOL))
    except Exception:
        return failure
    return FailureDetails(failure.error_type, failure.message, failure.details, exc)


# -- values as JSON (exported histories) -----------------------------------------------------------

#: the key of the one-key object that carries a value JSON cannot hold: base64 of its pickle
PICKLE_MARK = "$pickle"


def to_json_value(value: Any, what: str = "value") -> Any:
    """``value`` as JSON data if JSON carries it exactly (``None``, ``bool``, ``int``, finite
    ``float``, ``str``, and lists and string-keyed dicts of those: it loads back equal and of
    the same types), else ``{"$pickle": base64 of its pickle}``. A tuple, a set or a user's
    object is pickled, and so is a dict with a ``"$pickle"`` key (it would read as a marked
    value). Raises :class:`PayloadError` naming ``what`` if it cannot be pickled either."""
    try:
        exact = _json_exact(value)
    except RecursionError:
        exact = False
    if exact:
        return value
    return {PICKLE_MARK: base64.b64encode(encode(value, what)).decode("ascii")}


def from_json_value(data: Any) -> Any:
    """The value :func:`to_json_value` turned into ``data``: a marked pickle is decoded (this
    rebuilds its objects, importing the modules of their classes), other JSON is the value."""
    if isinstance(data, dict) and PICKLE_MARK in data:
        blob = data[PICKLE_MARK]
        if len(data) != 1 or not isinstance(blob, str):
            raise DurableValueError(f"a marked value must be {{{PICKLE_MARK!r}: base64 string}}, got {describe(data)}")
        try:
            raw = base64.b64decode(blob, validate=True)
        except ValueError as exc:
            raise DurableValueError(f"a marked value is not base64 ({exc}): {describe(blob)}") from None
        return decode(raw)
    return data


def _json_exact(value: Any) -> bool:
    kind = type(value)
    if value is None or kind in (bool, int, str):
        return True
    if kind is float:
        return math.isfinite(value)
    if kind is list:
        return all(_json_exact(v) for v in value)
    if kind is dict:
        return PICKLE_MARK not in value and all(type(k) is str and _json_exact(v) for k, v in value.items())
    return False
