"""The one place payloads are encoded.

Two forms. What moves between processes (Ray calls, registries, replies) is cloudpickle bytes
(:func:`encode`, :func:`decode`): users define functions and classes in ``__main__`` or a
notebook, which must travel by value. What is stored is the converter's form
(:func:`dump_value`, see ``docs/storage-format.md``): JSON text (:func:`dump_json`), with a
value JSON cannot carry exactly as a marked cloudpickle (``{"$pickle": "<base64>"}``). History
events are stored as records named by their event-type name and fields, around such payloads
(``runtime._codec_records``), so a stored file does not depend on the module paths of the
engine's classes and a tool in any language reads it.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import math
import pickle
import types
from collections import ChainMap
from collections.abc import Callable
from typing import Any

import cloudpickle
import orjson

from orchestrations import FailureDetails, PayloadError
from orchestrations._errors import describe
from orchestrations._failures import failure_of

from ._codec_safe import Undecoded, _UndecodedType, safe_decode

PROTOCOL = 5
#: compact JSON text, made once: ``json.dumps`` with ``separators`` builds an encoder per call
_COMPACT = json.JSONEncoder(separators=(",", ":"))
#: what orjson must not encode its own way (it would where ``json`` raises or writes another
#: type): those trees go to ``_COMPACT``, which then decides
_STRICT = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS


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
        out = io.BytesIO()
        _Pickler(out, protocol=PROTOCOL).dump(value)
        return out.getvalue()
    except Exception as exc:
        raise PayloadError(what, describe(value), f"{type(exc).__name__}: {exc}") from None


def _code_keeping_filename(code: types.CodeType) -> Any:
    """cloudpickle's reduction of a code object, with its file name kept: cloudpickle writes
    ``"<dynamic-code>"`` instead, and a function of the user's script (sent by value) then
    named no file in its tracebacks and non-determinism errors."""
    assert _CODE_REDUCE is not None  # only installed with it
    rebuild, args = _CODE_REDUCE(code)
    return rebuild, tuple(code.co_filename if arg == _DYNAMIC else arg for arg in args)


_DYNAMIC = "<dynamic-code>"
#: ``None`` if this cloudpickle has no such function: its own reduction is used as it is
_CODE_REDUCE: Callable[[types.CodeType], Any] | None = getattr(
    getattr(cloudpickle, "cloudpickle", None), "_code_reduce", None
)


class _Pickler(cloudpickle.Pickler):  # type: ignore[misc]
    """cloudpickle's pickler, keeping the file names of code sent by value."""

    if _CODE_REDUCE is not None:
        dispatch_table = ChainMap({types.CodeType: _code_keeping_filename}, cloudpickle.Pickler.dispatch_table)


def decode(blob: bytes | None) -> Any:
    """The value encoded in ``blob`` (``None`` stays ``None``)."""
    if blob is None:
        return None
    return pickle.loads(blob)


@dataclasses.dataclass(frozen=True, slots=True)
class RawPayload:
    """A stored payload shown as it is, not decoded (``ray-durable --no-decode``): its size and
    its beginning (the stored JSON text; the first bytes in hex for bytes)."""

    size: int
    head: str
    kind: str = "pickle"

    @staticmethod
    def of(blob: bytes | str | None) -> RawPayload | None:
        """``blob`` as a :class:`RawPayload` (``None`` stays ``None``)."""
        if blob is None:
            return None
        if isinstance(blob, str):
            return RawPayload(len(blob), blob[:48], "json")
        return RawPayload(len(blob), bytes(blob[:24]).hex())

    def __repr__(self) -> str:
        json_text = self.kind == "json"
        cut = len(self.head) < self.size if json_text else self.size > 24
        unit = "chars" if json_text else "bytes"
        return f"<{self.kind}, {self.size} {unit}: {self.head}{'...' if cut else ''}>"

    __str__ = __repr__


def failure_from_exception(exc: BaseException) -> FailureDetails:
    """FailureDetails of ``exc``, carrying ``exc`` itself as ``cause`` when it pickles."""
    failure = with_cause(failure_of(exc), exc)
    assert failure is not None
    return failure


def with_cause(failure: FailureDetails | None, exc: BaseException | None) -> FailureDetails | None:
    """``failure`` carrying a copy of ``exc`` as its ``cause`` if it has none and ``exc``
    pickles (an orchestration's failure keeps what its code raised, as an activity's does).
    The copy is what a reader of the stored failure gets back (no traceback, no chained
    exceptions): a parent on the same shard, served from memory, sees what a replay sees."""
    if failure is None or exc is None or failure.cause is not None:
        return failure
    try:
        copy = decode(encode(exc, "the cause of a failure"))
    except Exception:
        return failure
    return FailureDetails(failure.error_type, failure.message, failure.details, copy)


# -- the converter: stored values and records ------------------------------------------------------

#: the one key of the JSON object that marks a value JSON cannot carry (base64 cloudpickle)
PICKLE_KEY = "$pickle"


@dataclasses.dataclass(frozen=True, slots=True)
class Undecodable:
    """A stored value that could not be decoded: the type it was (as far as the stored bytes
    say) and why it could not be rebuilt (its class no longer exists, say). Shown in its place
    wherever a value is shown, so one such value never hides the rest."""

    type_name: str
    reason: str

    def __repr__(self) -> str:
        return f"<undecodable {self.type_name}: {self.reason}>"

    __str__ = __repr__


def is_exact_json(value: Any) -> bool:
    """Whether JSON carries ``value`` exactly: ``None``, ``bool``, ``int``, finite ``float``,
    ``str``, and ``list``/``dict`` (``str`` keys) of such, of exactly these types (a tuple, an
    ``IntEnum`` or a ``str`` subclass would come back as something else)."""
    try:
        return _exact(value)
    except RecursionError:
        return False


def _exact(value: Any) -> bool:
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return True
    if kind is float:
        return math.isfinite(value)
    if kind is list:
        return all(_exact(item) for item in value)
    if kind is dict:
        return all(type(key) is str and _exact(item) for key, item in value.items())
    return False


def to_json_value(value: Any, what: str = "value") -> Any:
    """``value`` as a JSON tree: itself when JSON carries it exactly (see :func:`is_exact_json`),
    else ``{"$pickle": "<base64 cloudpickle>"}``. A dict whose keys include ``"$pickle"`` is
    pickled too, so a marker is never ambiguous. Raises :class:`PayloadError` naming ``what``."""
    if is_exact_json(value) and not (type(value) is dict and PICKLE_KEY in value):
        return value
    return {PICKLE_KEY: base64.b64encode(encode(value, what)).decode("ascii")}


#: how stored pickles are read: ``TRUSTED`` runs them (and raises if they fail), ``LENIENT``
#: runs them but gives an :class:`Undecodable` for one that fails, ``SAFE`` runs no code from
#: them (see :func:`safe_decode`) and gives an :class:`Undecodable` for what it cannot read
TRUSTED, LENIENT, SAFE = "trusted", "lenient", "safe"
#: not decoded at all: each stored value is a :class:`RawPayload` (``ray-durable --no-decode``)
RAW = "raw"


def from_json_value(tree: Any, mode: str = TRUSTED) -> Any:
    """The value a :func:`to_json_value` tree stands for (see the modes above)."""
    if type(tree) is not dict or len(tree) != 1 or PICKLE_KEY not in tree:
        return tree
    try:
        blob = base64.b64decode(tree[PICKLE_KEY], validate=True)
    except (TypeError, ValueError) as exc:
        if mode == TRUSTED:
            raise
        return Undecodable("value", f"not base64 ({exc})")
    return unpickle(blob, mode)


def unpickle(blob: bytes, mode: str = TRUSTED) -> Any:
    """A stored pickle's value (see the modes above)."""
    if mode == SAFE:
        value = safe_decode(blob)
        if isinstance(value, (Undecoded, _UndecodedType)):
            return Undecodable(value.type_name, "not rebuilt by a reader (it would run code from the file)")
        return value
    if mode == TRUSTED:
        return pickle.loads(blob)
    try:
        return pickle.loads(blob)
    except Exception as exc:
        return Undecodable(pickled_type_name(blob), f"{type(exc).__name__}: {exc}")


def pickled_type_name(blob: bytes) -> str:
    """The type a pickle holds, read without running it (``"value"`` if it cannot be told)."""
    value = safe_decode(blob)
    if isinstance(value, (Undecoded, _UndecodedType)):
        return value.type_name
    return type(value).__qualname__


def dump_value(value: Any, what: str = "value") -> str:
    """The stored form of a payload: the JSON text of :func:`to_json_value`."""
    return dump_json(to_json_value(value, what))


def load_value(text: str | bytes | None, mode: str = TRUSTED) -> Any:
    """The payload stored as ``text`` by :func:`dump_value` (``None`` stays ``None``). In a
    non-trusted mode, text that is not JSON is an :class:`Undecodable`."""
    if text is None:
        return None
    if mode == RAW:
        return RawPayload.of(text)
    try:
        tree = json.loads(text)
    except ValueError as exc:
        if mode == TRUSTED:
            raise
        return Undecodable("value", f"not JSON ({exc})")
    return from_json_value(tree, mode)


# -- JSON text -------------------------------------------------------------------------------------


def dump_json(tree: Any) -> str:
    """``tree``'s compact JSON text (no spaces between tokens), as ``json`` reads it back.

    ``tree`` is made of the codec's output (payloads as :func:`to_json_value` trees, records
    through the writers of ``runtime._codec_records``; a message's record is such a tree), so
    it holds only what JSON carries exactly (``str``, ``int``, ``bool``, ``None``, finite
    ``float``, ``list``, ``dict`` with ``str`` keys, and subclasses of ``str`` and ``int``).
    orjson writes it (~5x faster than ``json``: a turn encodes ~30 records per transfer). It
    would write some values ``json`` refuses or writes otherwise (an ``Enum`` as its value, a
    ``UUID``, a non-finite float as ``null``), which is why a tree from anywhere else (read
    from a file, say) goes to ``_COMPACT`` instead. A tree orjson refuses (an int past 64 bits,
    a lone surrogate, a subclass) goes to ``json`` too, which writes it as it always did. Text
    is UTF-8 rather than ``\\u`` escapes, and a float's shortest form may differ in its
    exponent (``1e16`` for ``1e+16``): both read back the same."""
    try:
        return orjson.dumps(tree, option=_STRICT).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return _COMPACT.encode(tree)


def load_json(text: str | bytes) -> Any:
    """The JSON tree of ``text`` (the inverse of :func:`dump_json`)."""
    return json.loads(text)
