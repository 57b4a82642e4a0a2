"""A history as JSON (``hub.export_history``, ``ray-durable export``) and back (the replayer's
``--file``).

The document is ``{"instance_id", "name", "format": 1, "events": [...]}``; each event is the
record the storage converter makes of it (:func:`runtime._codec_records.event_to_record`): its
``"type"`` (the event type's name, as in the Durable Functions history table) and its fields by
name, times in ISO 8601, failure details and parent records as objects of their fields,
payloads as JSON when JSON carries them exactly and ``{"$pickle": base64}`` otherwise. One
converter for the files and the exports: an exported event is the stored record.
"""

from __future__ import annotations

import json
from typing import Any

from orchestrations import DurableValueError, ExecutionStarted, HistoryEvent
from orchestrations._errors import describe

from ._codec_records import event_from_record, event_to_record

#: the version of the document's layout
FORMAT = 1


def history_to_json(instance_id: str, events: list[HistoryEvent]) -> str:
    """The JSON document of ``instance_id``'s history ``events`` (oldest first)."""
    started = next((e for e in events if isinstance(e, ExecutionStarted)), None)
    document = {
        "instance_id": instance_id,
        "name": started.name if started is not None else None,
        "format": FORMAT,
        "events": [event_to_record(e, f"a payload in the history of {instance_id!r}") for e in events],
    }
    return json.dumps(document, ensure_ascii=False, indent=1)


def histories_from_json(text: str | bytes) -> list[tuple[str, list[HistoryEvent]]]:
    """The ``(instance_id, events)`` of a document :func:`history_to_json` wrote, or of a JSON
    list of such documents. Payloads are rebuilt (a marked pickle imports the modules of its
    classes). Raises :class:`DurableValueError` naming what is wrong."""
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
    return instance_id, [_event(instance_id, i, record) for i, record in enumerate(document["events"])]


def _event(instance_id: str, index: int, record: Any) -> HistoryEvent:
    """Event ``index`` of ``instance_id``'s document; what cannot be rebuilt is refused, naming it."""
    if not isinstance(record, dict) or not isinstance(record.get("type"), str):
        raise DurableValueError(f"event {index} of {instance_id!r} is not a record with a 'type': {describe(record)}")
    try:
        return event_from_record(record)
    except DurableValueError as exc:
        raise DurableValueError(f"event {index} of {instance_id!r}: {exc}") from None
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        what = f"event {index} ({record['type']}) of {instance_id!r}"
        raise DurableValueError(f"{what} cannot be read: {type(exc).__name__}: {exc}") from None
