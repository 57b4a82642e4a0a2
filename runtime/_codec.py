"""The one place payloads are encoded: cloudpickle bytes in, Python values out.

cloudpickle (not plain pickle) because users define functions and classes in ``__main__`` or a
notebook, which must travel by value to shard hosts and workers. Everything durable (inputs,
outputs, history events, messages) goes through :func:`encode` and :func:`decode`.
"""

from __future__ import annotations

import pickle
from typing import Any

import cloudpickle

from orchestrations import FailureDetails, PayloadError
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


def failure_from_exception(exc: BaseException) -> FailureDetails:
    """FailureDetails of ``exc``, carrying ``exc`` itself as ``cause`` when it pickles."""
    failure = failure_of(exc)
    try:
        pickle.loads(cloudpickle.dumps(exc, protocol=PROTOCOL))
    except Exception:
        return failure
    return FailureDetails(failure.error_type, failure.message, failure.details, exc)
