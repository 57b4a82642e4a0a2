"""History events and the records nested in them, in their stored form (``docs/storage-format.md``).

An event is stored as a JSON record named by its event-type name (the keys of
``orchestrations._history.EVENT_TYPES``, never a module path), with its fields written by the
writer of each field's annotation: payloads as ``runtime._codec.to_json_value`` trees, times as
ISO 8601, failures and parents as nested records. The payloads inside are the codec's
(``runtime._codec``, the one place payloads are encoded); this module is the record format
around them.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from orchestrations import DurableTypeError, DurableValueError, FailureDetails, HistoryEvent, ParentInfo, PayloadError
from orchestrations._errors import describe
from orchestrations._history import EVENT_TYPES

from ._codec import (
    _COMPACT,
    LENIENT,
    PICKLE_KEY,
    RAW,
    TRUSTED,
    RawPayload,
    Undecodable,
    dump_json,
    from_json_value,
    is_exact_json,
    to_json_value,
)

# -- records: history events and their nested records by name --------------------------------------


#: the last time :func:`_time_out` wrote, with its text: the events of one turn carry the
#: turn's one clock (the same object), so each turn formats it about once, not per event
_last_time: tuple[datetime | None, str] = (None, "")


def _time_out(value: datetime | None) -> str | None:
    global _last_time
    if value is None:
        return None
    last = _last_time  # one read: another thread may replace it meanwhile
    if last[0] is value:
        return last[1]
    text = value.isoformat()
    _last_time = (value, text)
    return text


def _time_in(value: str | None, mode: str) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _plain_out(value: Any) -> Any:
    """A ``str``/``int``/``bool`` field as it is (another JSON value too, as before); what JSON
    cannot carry raises :class:`PayloadError` (``json`` raised ``TypeError``, or wrote ``NaN``)
    rather than reach orjson, which would write it its own way (see :func:`dump_json`)."""
    if value is None or isinstance(value, (str, int)) or is_exact_json(value):
        return value
    why = "a float that is not finite" if type(value) is float else f"a {type(value).__qualname__}, not JSON"
    raise PayloadError("a record field", describe(value), f"{why} (a str is expected)")


def _plain_in(value: Any, mode: str) -> Any:
    return value


def _strs_in(value: list[str] | None, mode: str) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)


def _failure_out(failure: FailureDetails | None) -> dict[str, Any] | None:
    if failure is None:
        return None
    cause = None if failure.cause is None else to_json_value(failure.cause, "the cause of a failure")
    return {"error_type": _plain_out(failure.error_type), "message": _plain_out(failure.message),
            "details": _plain_out(failure.details), "cause": cause}


def _failure_in(record: dict[str, Any] | None, mode: str) -> FailureDetails | None:
    if record is None:
        return None
    if PICKLE_KEY in record:  # kept by a migration that could not read it
        failure = from_json_value(record, mode)
        if not isinstance(failure, FailureDetails):
            raise DurableValueError(f"a kept failure pickle holds {failure!r}")
        return failure
    cause = from_json_value(record.get("cause"), mode)
    if not isinstance(cause, BaseException):
        cause = None  # a cause that cannot be rebuilt: the type, message and details stay
    return FailureDetails(record["error_type"], record["message"], record.get("details"), cause)


def _parent_out(parent: ParentInfo | None) -> dict[str, Any] | None:
    if parent is None:
        return None
    return {"instance_id": _plain_out(parent.instance_id), "task_scheduled_id": _plain_out(parent.task_scheduled_id),
            "execution_id": _plain_out(parent.execution_id)}


def _parent_in(record: dict[str, Any] | None, mode: str) -> ParentInfo | None:
    return None if record is None else ParentInfo(record["instance_id"], record["task_scheduled_id"],
                                                  record["execution_id"])


def _value_out(value: Any) -> Any:
    return to_json_value(value, "an event's payload")


def _values_out(value: tuple[Any, ...]) -> Any:
    return to_json_value(list(value), "an event's payload")


def _values_in(value: Any, mode: str) -> tuple[Any, ...]:
    return tuple(from_json_value(value, mode))


#: how a field of each annotation is stored and read back; a field of another annotation
#: (a new event with a new kind of field) fails at import, loudly, not when first written
_FIELD_KINDS: dict[str, tuple[Callable[[Any], Any], Callable[[Any, str], Any]]] = {
    "Any": (_value_out, from_json_value),
    "datetime": (_time_out, _time_in),
    "datetime | None": (_time_out, _time_in),
    "FailureDetails": (_failure_out, _failure_in),
    "FailureDetails | None": (_failure_out, _failure_in),
    "ParentInfo": (_parent_out, _parent_in),
    "ParentInfo | None": (_parent_out, _parent_in),
    "tuple[str, ...]": (list, _strs_in),
    "tuple[Any, ...]": (_values_out, _values_in),
    **{plain: (_plain_out, _plain_in) for plain in ("str", "str | None", "int", "int | None", "bool")},
}


@dataclasses.dataclass(frozen=True, slots=True)
class _RecordShape:
    """How one event type becomes a record and back."""

    cls: type[HistoryEvent]
    name: str
    #: every field with its writer, in the class's order
    out: tuple[tuple[str, Callable[[Any], Any]], ...]
    #: the fields written only when they are not ``None`` (``STORED_WHEN_SET``)
    when_set: frozenset[str]
    into: dict[str, Callable[[Any, str], Any]]
    #: the fields stored as they are (str, int, bool) and the others with their readers: a
    #: record is rebuilt with one dict comprehension and a call per field that needs one
    plain: frozenset[str]
    special: tuple[tuple[str, Callable[[Any, str], Any]], ...]


def _shape(name: str, cls: type[HistoryEvent]) -> _RecordShape:
    out, into, when_set = [], {}, set()
    for f in dataclasses.fields(cls):
        if f.metadata.get("stored_when_set"):
            when_set.add(f.name)
        annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", repr(f.type))
        if annotation not in _FIELD_KINDS:
            raise TypeError(f"{cls.__name__}.{f.name}: no stored form for a field of type {annotation!r}")
        writer, reader = _FIELD_KINDS[annotation]
        out.append((f.name, writer))
        into[f.name] = reader
    plain = frozenset(n for n, reader in into.items() if reader is _plain_in)
    special = tuple((n, reader) for n, reader in into.items() if reader is not _plain_in)
    return _RecordShape(cls, name, tuple(out), frozenset(when_set), into, plain, special)


#: the stored event types by their stored name: the keys of ``EVENT_TYPES`` (the names of the
#: Durable Functions history table), never a module path; a name once stored is never reused
_SHAPES_BY_NAME: dict[str, _RecordShape] = {name: _shape(name, cls) for name, cls in EVENT_TYPES.items()}
_SHAPES_BY_CLASS: dict[type, _RecordShape] = {shape.cls: shape for shape in _SHAPES_BY_NAME.values()}


def register_runtime_event(name: str, cls: type[HistoryEvent]) -> None:
    """Store ``cls``, a runtime message that is never in a history (it travels in outboxes),
    under ``name``; a name of the history's events cannot be taken."""
    if name in _SHAPES_BY_NAME and _SHAPES_BY_NAME[name].cls is not cls:
        raise DurableValueError(f"stored event name {name!r} is taken by {_SHAPES_BY_NAME[name].cls.__qualname__}")
    shape = _shape(name, cls)
    _SHAPES_BY_NAME[name] = shape
    _SHAPES_BY_CLASS[cls] = shape


@dataclasses.dataclass(frozen=True, slots=True)
class UnknownEvent(HistoryEvent):
    """What a reader shows for a stored event that could not be rebuilt (its type unknown to
    this code, or a field unreadable): its stored type name, time and name; ``input`` says why.
    Never stored, never given to the engine."""

    kind: str = "?"
    name: str | None = dataclasses.field(default=None)  # field(): the base class has a `name` property
    input: Any = None

    @property
    def event_type(self) -> str:
        return self.kind


def event_to_record(event: HistoryEvent, what: str = "an event's payload") -> dict[str, Any]:
    """``event`` as a JSON-ready record: ``{"type": <event-type name>, <field>: <value>, ...}``,
    payloads as :func:`to_json_value` trees, times as ISO 8601, nested records as objects.
    Raises :class:`PayloadError` naming ``what`` for a payload that cannot be stored."""
    shape = _SHAPES_BY_CLASS.get(type(event))
    if shape is None:
        raise DurableTypeError(f"{type(event).__qualname__} is not a stored history event type")
    record: dict[str, Any] = {"type": shape.name}
    when_set = shape.when_set
    try:
        for name, writer in shape.out:
            value = getattr(event, name)
            if value is None and name in when_set:
                continue
            record[name] = writer(value)
    except PayloadError as exc:
        raise PayloadError(what, exc.value_repr, exc.reason) from None
    return record


def event_from_record(record: dict[str, Any]) -> HistoryEvent:
    """The event of an :func:`event_to_record` record; raises if it cannot be rebuilt. Fields
    missing from the record take their defaults; fields this code does not know are ignored.
    A record that is a marked pickle is an event a migration could not read (see
    :func:`migrate_v2_event`): it is unpickled whole."""
    if PICKLE_KEY in record:
        event: HistoryEvent = from_json_value(record)
        return event
    shape = _SHAPES_BY_NAME.get(record.get("type"))  # type: ignore[arg-type]
    if shape is None:
        raise DurableValueError(f"unknown history event type {record.get('type')!r} in a stored record")
    plain = shape.plain
    fields = {name: value for name, value in record.items() if name in plain}
    for name, reader in shape.special:
        if name in record:
            fields[name] = reader(record[name], TRUSTED)
    return shape.cls(**fields)


def read_event_record(record: Any, mode: str = LENIENT) -> HistoryEvent | UnknownEvent:
    """:func:`event_from_record` for a reader: a record that cannot be rebuilt is an
    :class:`UnknownEvent`, and payloads are read in ``mode`` (never raises)."""
    try:
        if PICKLE_KEY in record:
            event = from_json_value(record, mode)
            if not isinstance(event, HistoryEvent):
                raise DurableValueError(f"a kept event pickle holds {event!r}")
            return event
        shape = _SHAPES_BY_NAME[record["type"]]
        into = shape.into
        return shape.cls(**{name: into[name](value, mode) for name, value in record.items() if name in into})
    except Exception as exc:
        return _unknown_event(record, exc)


def _unknown_event(record: Any, exc: Exception) -> UnknownEvent:
    """What is left to show of a record that could not be rebuilt."""
    record = record if isinstance(record, dict) else {}
    kind = record.get("type")
    try:
        at = datetime.fromisoformat(record["timestamp"])
    except Exception:
        at = datetime.fromtimestamp(0, tz=UTC)
    name = record.get("name") if isinstance(record.get("name"), str) else None
    known = isinstance(kind, str) and kind in _SHAPES_BY_NAME
    reason = f"{type(exc).__name__}: {exc}" if known else f"unknown event type {kind!r}"
    return UnknownEvent(at, str(kind or "?"), name, Undecodable(str(kind or "event"), reason))


def dump_event(event: HistoryEvent, what: str = "an event's payload") -> str:
    """The stored form of a history event: the JSON text of :func:`event_to_record`."""
    return dump_json(event_to_record(event, what))


def load_event(text: str | bytes) -> HistoryEvent:
    """The history event stored as ``text`` by :func:`dump_event`; raises if it cannot be."""
    return event_from_record(json.loads(text))


def read_event(text: str | bytes | None, mode: str = LENIENT) -> HistoryEvent | UnknownEvent:
    """:func:`load_event` for a reader (see :func:`read_event_record`; never raises)."""
    try:
        record = json.loads(text)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        return _unknown_event({}, exc)
    return read_event_record(record, mode)


# -- nested records stored in their own columns ---------------------------------------------------


def split_records(text: str | bytes) -> list[str]:
    """The compact JSON text of each item of a JSON array (a stored list of records, such as an
    entity's queue, whose items are kept encoded one by one)."""
    return [_COMPACT.encode(item) for item in json.loads(text)]  # what was read: any writer's JSON


def dump_failure(failure: FailureDetails | None) -> str | None:
    """The stored form of a :class:`FailureDetails` (``None`` stays ``None``)."""
    return None if failure is None else dump_json(_failure_out(failure))


def load_failure(text: str | bytes | None, mode: str = TRUSTED) -> FailureDetails | Undecodable | None:
    """The inverse of :func:`dump_failure`; in a non-trusted mode, an :class:`Undecodable` for
    text that is not a failure record."""
    if text is None:
        return None
    if mode == RAW:
        return RawPayload.of(text)  # type: ignore[return-value]
    try:
        return _failure_in(json.loads(text), mode)
    except Exception as exc:
        if mode == TRUSTED:
            raise
        return Undecodable("FailureDetails", f"{type(exc).__name__}: {exc}")


def dump_parent(parent: ParentInfo | None) -> str | None:
    """The stored form of a :class:`ParentInfo` (``None`` stays ``None``)."""
    return None if parent is None else dump_json(_parent_out(parent))


def load_parent(text: str | bytes | None) -> ParentInfo | None:
    """The inverse of :func:`dump_parent`."""
    return None if text is None else _parent_in(json.loads(text), TRUSTED)
