"""A history as JSON (``hub.export_history``, ``ray-durable export``) and back (the replayer's
``--file``).

The document is ``{"instance_id", "name", "format": 1, "events": [...]}``; each event is an
object with its ``"type"`` (the event type's name, as in the Durable Functions history table)
and its fields by name. Times (``timestamp``, ``fire_at``, ...) are ISO 8601 strings; failure
details and parent records are objects of their fields; payloads go through
:func:`runtime._codec.to_json_value` (JSON when JSON carries the value exactly, else a marked
pickle). Loading checks every name and type and refuses what it does not know, naming it.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from datetime import datetime
from typing import Any

from orchestrations import DurableValueError, ExecutionStarted, HistoryEvent
from orchestrations._errors import describe
from orchestrations._history import EVENT_TYPES

from ._codec import from_json_value, to_json_value

#: the version of the document's layout
FORMAT = 1
_PLAIN = (str, int, bool, float)


def history_to_json(instance_id: str, events: list[HistoryEvent]) -> str:
    """The JSON document of ``instance_id``'s history ``events`` (oldest first)."""
    started = next((e for e in events if isinstance(e, ExecutionStarted)), None)
    document = {
        "instance_id": instance_id,
        "name": started.name if started is not None else None,
        "format": FORMAT,
        "events": [event_to_json(e) for e in events],
    }
    return json.dumps(document, ensure_ascii=False, indent=1)


def histories_from_json(text: str | bytes) -> list[tuple[str, list[HistoryEvent]]]:
    """The ``(instance_id, events)`` of a document :func:`history_to_json` wrote, or of a JSON
    list of such documents. Raises :class:`DurableValueError` naming what is wrong."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise DurableValueError(f"not a JSON history: {exc}") from None
    documents = data if isinstance(data, list) else [data]
    return [_history_from_document(d) for d in documents]


def _history_from_document(document: Any) -> tuple[str, list[HistoryEvent]]:
    if not isinstance(document, dict) or not isinstance(document.get("events"), list):
        raise DurableValueError(f"a JSON history is an object with a list of 'events', got {describe(document)}")
    if document.get("format") != FORMAT:
        raise DurableValueError(f"a JSON history of format {document.get('format')!r}; this version reads {FORMAT}")
    instance_id = document.get("instance_id")
    if not isinstance(instance_id, str):
        raise DurableValueError(f"a JSON history needs its 'instance_id' (a string), got {describe(instance_id)}")
    return instance_id, [event_from_json(e) for e in document["events"]]


def event_to_json(event: HistoryEvent) -> dict[str, Any]:
    """``event`` as ``{"type": its type name, field: value, ...}``."""
    return {"type": event.event_type, **_record_to_json(event)}


def event_from_json(data: Any) -> HistoryEvent:
    """The event :func:`event_to_json` made ``data`` of."""
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise DurableValueError(f"a history event is an object with its 'type', got {describe(data)}")
    fields = {k: v for k, v in data.items() if k != "type"}
    cls = EVENT_TYPES.get(data["type"])
    if cls is None:
        raise DurableValueError(f"unknown history event type {data['type']!r}")
    event: HistoryEvent = _record_from_json(cls, fields)
    return event


def _record_to_json(record: Any) -> dict[str, Any]:
    hints = _hints(type(record))
    what = type(record).__name__
    return {
        f.name: _to_json(getattr(record, f.name), hints[f.name], f"{what}.{f.name}")
        for f in dataclasses.fields(record)
    }


def _to_json(value: Any, hint: Any, what: str) -> Any:
    if value is None:
        return None
    kinds = _kinds(hint)
    if datetime in kinds and isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple) and tuple in kinds:
        return [_to_json(v, Any, what) for v in value]
    if dataclasses.is_dataclass(value) and type(value) in kinds:
        return _record_to_json(value)
    return to_json_value(value, what)


def _record_from_json(cls: type, data: dict[str, Any]) -> Any:
    hints = _hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise DurableValueError(f"{cls.__name__} has no field(s) {unknown}")
    values = {}
    for name, f in known.items():
        if name in data:
            values[name] = _from_json(data[name], hints[name], f"{cls.__name__}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise DurableValueError(f"{cls.__name__} needs its field {name!r}")
    return cls(**values)


def _from_json(data: Any, hint: Any, what: str) -> Any:
    if data is None:
        return None
    kinds = _kinds(hint)
    if datetime in kinds:
        try:
            return datetime.fromisoformat(data)
        except (TypeError, ValueError):
            raise DurableValueError(f"{what} must be an ISO 8601 time, got {describe(data)}") from None
    records = [k for k in kinds if isinstance(k, type) and dataclasses.is_dataclass(k)]
    if records and isinstance(data, dict):
        return _record_from_json(records[0], data)
    if tuple in kinds and isinstance(data, list):
        return tuple(from_json_value(v) for v in data)
    value = from_json_value(data)
    plain = tuple(k for k in kinds if k in _PLAIN)
    if plain and len(plain) == len(kinds - {type(None)}) and not isinstance(value, plain):
        raise DurableValueError(f"{what} must be {' or '.join(k.__name__ for k in plain)}, got {describe(value)}")
    return value


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """``cls``'s field annotations, resolved (once per class)."""
    found = _HINTS.get(cls)
    if found is None:
        found = _HINTS[cls] = typing.get_type_hints(cls)
    return found


def _kinds(hint: Any) -> frozenset[Any]:
    """The classes a field's annotation admits (``X | None`` gives ``{X, NoneType}``;
    ``tuple[str, ...]`` gives ``{tuple}``; ``Any`` gives ``{Any}``)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return frozenset(k for arg in typing.get_args(hint) for k in _kinds(arg))
    origin = typing.get_origin(hint)
    return frozenset({origin if origin is not None else hint})
