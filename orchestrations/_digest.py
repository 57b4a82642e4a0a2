"""Input digests: a short fingerprint of a scheduled task's input, recorded in history so that
replay notices when the code now gives the same task a different input. Pure.

A digest must be the same in every process and every run for equal inputs (it is compared
with one computed later, elsewhere), so it is not Python's ``hash`` and not a pickle (a pickle
of a set follows the salted hash order). It is BLAKE2b over a canonical JSON text: dict keys
sorted, sets sorted, bytes as hex, dates as ISO text. A value that has no such canonical text
(an instance of a user class, a dataclass, a ``Decimal``, a dict with keys of mixed types) gets
no digest, and its task is not checked: a false alarm would fail a healthy instance, a missed
check only leaves the old behaviour. Equal values of different types (a list and a tuple,
``1`` and ``1.0``) may share a digest; that too only misses a check.

The digest text starts with the scheme (``"1:"``), so a future scheme can tell its own
digests from these and skip the comparison instead of reporting every old history.
"""

from __future__ import annotations

import json
from datetime import date, datetime, time
from hashlib import blake2b
from typing import Any

#: the scheme of the digests this module writes
SCHEME = "1:"


class _NoDigestError(Exception):
    """The value has no canonical text."""


def input_digest(value: Any) -> str | None:
    """The digest of ``value``, or ``None`` if it has no canonical text (see the module doc)."""
    if value is None:
        return _NONE
    try:
        text = _ENCODER.encode(value)
    except (_NoDigestError, TypeError, ValueError, RecursionError):
        return None
    return SCHEME + blake2b(text.encode("ascii"), digest_size=16).hexdigest()


def input_changed(recorded: str | None, value: Any) -> bool:
    """Whether ``value`` differs from the input whose digest history recorded (``recorded``).
    No recorded digest (history written before digests, or an input without one) or a digest
    of another scheme: ``False``, nothing to compare."""
    if recorded is None or not recorded.startswith(SCHEME):
        return False
    return input_digest(value) != recorded


def _canonical(value: Any) -> Any:
    """``json.dumps``'s hook for values JSON has no form for: a JSON-able stand-in, tagged so
    it cannot be mistaken for a plain dict."""
    if isinstance(value, (bytes, bytearray)):
        return {"$bytes": value.hex()}
    if isinstance(value, (set, frozenset)):
        items = sorted(_ENCODER.encode(v) for v in value)
        return {"$set": items}
    if isinstance(value, (datetime, date, time)):
        return {"$time": value.isoformat()}
    raise _NoDigestError(type(value).__name__)


#: one encoder for every digest (json.dumps with options builds a new one per call)
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=_canonical)
_NONE = SCHEME + blake2b(b"null", digest_size=16).hexdigest()
