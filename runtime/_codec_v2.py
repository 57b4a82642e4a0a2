"""Reading format version 2 (pickles of the engine's classes) for the migration to version 3
(part of the codec; see ``runtime._codec`` and ``docs/storage-format.md``)."""

from __future__ import annotations

import base64
import dataclasses
import io
import pickle
from typing import Any

from ._codec import PICKLE_KEY, dump_json, dump_value
from ._codec_records import dump_event, dump_failure, dump_parent


@dataclasses.dataclass(frozen=True, slots=True)
class _V2ObjectState:
    """How version 2 stored a class entity's state (``runtime._entity_host.ObjectState``, a
    class that is gone): its attributes are what version 3 stores."""

    type_name: str
    attributes: dict[str, Any]


class _V2Unpickler(pickle.Unpickler):
    """Reads version-2 pickles: the classes version 2 stored that are gone map to stand-ins."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("runtime._entity_host", "ObjectState"):
            return _V2ObjectState
        return super().find_class(module, name)


def decode_v2(blob: bytes) -> Any:
    """A version-2 pickle's value (runs it: the shard host migrating its own file has its code)."""
    return _V2Unpickler(io.BytesIO(blob)).load()


def _kept_pickle(blob: bytes) -> str:
    """A version-2 pickle that cannot be read here, kept as it is under the marker."""
    return dump_json({PICKLE_KEY: base64.b64encode(blob).decode("ascii")})


def migrate_v2_value(blob: bytes | None) -> str | None:
    """A version-2 payload (a pickle) in the stored form: JSON when it carries the value, else
    the marker. A pickle that cannot be read here (its class not importable) is kept as it is,
    marked, so it stays readable wherever its class comes back."""
    if blob is None:
        return None
    try:
        value = decode_v2(blob)
    except Exception:
        return _kept_pickle(blob)
    if isinstance(value, _V2ObjectState):
        value = value.attributes  # a class entity's state: its attributes (see pack_state)
    return dump_value(value)


def migrate_v2_event(blob: bytes) -> str:
    """A version-2 history event (a pickle of the engine's class) as an event record; one whose
    payload cannot be read here is kept whole under the marker (see :func:`load_event`)."""
    try:
        return dump_event(decode_v2(blob))
    except Exception:
        return _kept_pickle(blob)


def migrate_v2_failure(blob: bytes | None) -> str | None:
    """A version-2 ``failure`` column (a pickled :class:`FailureDetails`) as a failure record."""
    if blob is None:
        return None
    try:
        return dump_failure(decode_v2(blob))
    except Exception:
        return _kept_pickle(blob)


def migrate_v2_parent(blob: bytes | None) -> str | None:
    """A version-2 ``parent`` column (a pickled :class:`ParentInfo`) as a parent record."""
    return None if blob is None else dump_parent(decode_v2(blob))


def migrate_v2_queue(blob: bytes | None) -> str | None:
    """A version-2 entity queue (a pickled list of messages, or of their pickles) as the JSON
    array of their records."""
    if blob is None:
        return None
    items = [decode_v2(item) if isinstance(item, bytes) else item for item in decode_v2(blob)]
    return f"[{','.join(dump_event(item) for item in items)}]"
