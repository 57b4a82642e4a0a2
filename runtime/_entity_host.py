"""How a shard host keeps entities: their records, rows, and the messages they send."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, TypeGuard

from entities import EntityId, EntityState, Outgoing
from entities._executor import StateKeeper
from orchestrations import (
    Action,
    CallEntity,
    DurableValueError,
    EntityLockMessage,
    EntityRequest,
    EntityUnlockMessage,
    ExecutionStarted,
    HistoryEvent,
    LockEntities,
    ParentInfo,
    PayloadError,
    SignalEntity,
    UnlockEntity,
)
from orchestrations._ids import parse_entity_key

from ._codec import dump_value, load_value
from ._codec_records import dump_event, load_event, register_runtime_event, split_records
from ._messages import Message, from_ts
from ._schema import EntityRow
from ._status import EntityMetadata

log = logging.getLogger("ray_durable.entities")


@dataclass(slots=True)
class EntityRecord:
    """A shard host's in-memory copy of one entity (the virtual actor's state).

    ``sealed`` is ``(exists, stored state)`` for the current state when it is known (the row's
    blob after a load, the last operation's after a turn): the next operation's rollback copy
    and the next row, so a state is encoded once per operation that changes it, never twice.

    ``queued`` keeps the stored record (JSON text) of each message waiting in the queue (by
    ``id()``, with the message itself, so the id cannot be reused while it is kept). The row
    stores the queue as the JSON array of those records: a message is encoded once while it
    waits, not again with the
    whole queue at every write of the entity (a queue of hundreds of lock requests behind a
    contended account made every row write cost milliseconds).
    """

    entity_id: EntityId
    state: EntityState
    updated_at: float = 0.0
    sealed: tuple[bool, str | None] | None = None
    queued: dict[int, tuple[HistoryEvent, str]] = field(default_factory=dict)

    @staticmethod
    def from_row(row: EntityRow | tuple[Any, ...], spec: Any = None) -> EntityRecord:
        """Build from an ``entities`` row (a plain tuple, as one travels in a message, is read
        as one); ``spec`` (the entity's ``EntitySpec``, if registered) rebuilds a class
        entity's object."""
        row = EntityRow._make(row)
        queue, queued = decode_queue(row.queue)
        exists = bool(row.has_state)
        locked_by, lock = parse_holder(row.locked_by)
        state = unpack_state(load_value(row.state), spec) if exists else None
        st = EntityState(exists, state, locked_by, queue, lock)
        return EntityRecord(EntityId.parse(row.entity_id), st, row.updated_at, (exists, row.state if exists else None),
                            queued)

    def metadata(self) -> EntityMetadata:
        """What ``list_entities`` reports about this entity (``locked_by``: the holder's
        instance id)."""
        st = self.state
        updated = from_ts(self.updated_at)
        return EntityMetadata(self.entity_id, st.exists, st.state, st.locked_by, len(st.queue), updated)

    def to_row(self, spec: Any = None) -> EntityRow:
        """The ``entities`` row (state and queue encoded; see :func:`pack_state`)."""
        st, key = self.state, str(self.entity_id)
        sealed = self.sealed
        if sealed is None or sealed[0] != st.exists:
            sealed = self.sealed = seal_state(st.exists, st.state, spec, key)
        queue_blob = self._queue_blob(key) if st.queue else None
        if not st.queue:
            self.queued = {}
        holder = holder_text(st)
        return EntityRow(key, self.entity_id.name, int(st.exists), sealed[1], holder, queue_blob, self.updated_at)

    def checkpoint(self, spec: Any = None) -> EntityCheckpoint:
        """What :meth:`restore` needs to put this record back as it is now (its state sealed
        first if it is not: :class:`PayloadError` if it cannot be stored)."""
        st, sealed = self.state, self.sealed
        if sealed is None or sealed[0] != st.exists:
            sealed = self.sealed = seal_state(st.exists, st.state, spec, str(self.entity_id))
        return EntityCheckpoint(sealed, st.locked_by, st.lock, list(st.queue), dict(self.queued), self.updated_at)

    def restore(self, checkpoint: EntityCheckpoint, spec: Any = None) -> None:
        """Put this record back as it was at ``checkpoint`` (the state rebuilt from its sealed
        copy, as an operation's rollback does)."""
        exists, blob = checkpoint.sealed
        state = unpack_state(load_value(blob), spec) if exists else None
        self.state = EntityState(exists, state, checkpoint.locked_by, checkpoint.queue, checkpoint.lock)
        self.sealed, self.queued, self.updated_at = checkpoint.sealed, checkpoint.queued, checkpoint.updated_at

    def _queue_blob(self, key: str) -> str:
        """The ``queue`` column: the JSON array of the queued messages' records, each encoded
        the first time it is written (see ``queued``); what left the queue is forgotten."""
        kept, texts = {}, []
        for event in self.state.queue:
            hit = self.queued.get(id(event))
            if hit is None or hit[0] is not event:
                hit = (event, dump_event(event, f"a message queued at entity {key}"))
            kept[id(event)] = hit
            texts.append(hit[1])
        self.queued = kept
        return f"[{','.join(texts)}]"


@dataclass(frozen=True, slots=True)
class EntityCheckpoint:
    """An :class:`EntityRecord` as it was at one point of a turn (see ``EntityRecord.checkpoint``)."""

    sealed: tuple[bool, str | None]
    locked_by: str | None
    lock: ParentInfo | None
    queue: list[HistoryEvent]
    queued: dict[int, tuple[HistoryEvent, str]]
    updated_at: float


@dataclass(frozen=True, slots=True)
class EntityMoved(HistoryEvent):
    """A runtime message, never in a history: the ``entities`` row of an entity found under
    its id's old case (written before entity names were case-insensitive) on a shard that
    does not own its canonical id; the owner adopts it (see ``ShardHost._adopt_moved``)."""

    row: tuple[Any, ...] = ()


register_runtime_event("EntityMoved", EntityMoved)


def decode_queue(text: str | None) -> tuple[list[HistoryEvent], dict[int, tuple[HistoryEvent, str]]]:
    """The queue of an ``entities`` row, and the records it was stored with (see
    ``EntityRecord.queued``)."""
    if text is None:
        return [], {}
    queue, queued = [], {}
    for item in split_records(text):
        event = load_event(item)
        queued[id(event)] = (event, item)
        queue.append(event)
    return queue, queued


def addressable(rows: Iterable[EntityRow]) -> list[EntityRow]:
    """The ``entities`` rows whose id is a valid entity id. The previous version allowed an
    empty key (``@counter@``), which no ``EntityId`` can address now: such a row is left in
    the file, out of every listing, rather than failing the query."""
    found = []
    for row in rows:
        try:
            parse_entity_key(row.entity_id)
        except DurableValueError:
            log.warning("entity row %r has an id no EntityId can address (empty key?); skipped", row.entity_id)
            continue
        found.append(row)
    return found


def canonical_row(row: EntityRow) -> EntityRow:
    """An ``entities`` row under its canonical id (the name lower-cased)."""
    entity_id = EntityId.parse(row.entity_id)
    return row._replace(entity_id=str(entity_id), name=entity_id.name)


def seal_state(exists: bool, state: Any, spec: Any, key: str) -> tuple[bool, str | None]:
    """``(exists, stored state)`` of an entity's state; raises :class:`PayloadError` naming the
    entity if the state cannot be encoded."""
    return exists, dump_value(pack_state(state, spec), f"state of entity {key}") if exists else None


class RowKeeper(StateKeeper):
    """The runtime's :class:`StateKeeper`: after each operation, encodes the new state and
    prepares (encodes) the messages it sends, so that one that cannot be stored fails that
    operation alone (rolled back, its caller told) instead of the shard's turn; the blobs
    are the rollback copy, the row and the outbox rows, so nothing is encoded twice."""

    def __init__(self, record: EntityRecord, spec: Any, prepare: Callable[[Outgoing], Any]) -> None:
        self.record, self.spec, self.prepare = record, spec, prepare
        #: what was prepared for each message sealed so far, by ``id()`` of its ``Outgoing``
        self.prepared: dict[int, Any] = {}

    def snapshot(self, exists: bool, state: Any) -> Any:
        if self.record.sealed is None or self.record.sealed[0] != exists:
            self.record.sealed = seal_state(exists, state, self.spec, str(self.record.entity_id))
        return self.record.sealed

    def restore(self, snapshot: Any) -> tuple[bool, Any]:
        exists, blob = snapshot
        self.record.sealed = snapshot
        return exists, unpack_state(load_value(blob), self.spec) if exists else None

    def seal(self, exists: bool, state: Any, outgoing: list[Outgoing]) -> Any:
        key = str(self.record.entity_id)
        sealed = seal_state(exists, state, self.spec, key)
        prepared = []
        for out in outgoing:
            try:
                prepared.append((id(out), self.prepare(out)))
            except PayloadError as exc:
                raise PayloadError(_payload_of(out, key), exc.value_repr, exc.reason) from None
        self.prepared.update(prepared)
        self.record.sealed = sealed
        return sealed


def _payload_of(out: Outgoing, key: str) -> str:
    """What an entity's message carries, for an error message."""
    event = out.event
    if isinstance(event, EntityRequest):
        return f"input of signal {event.name!r} to {out.target} from entity {key}"
    if isinstance(event, ExecutionStarted):
        return f"input of orchestration {event.name!r} started by entity {key}"
    return f"result of an operation of entity {key}"


def holder_text(st: EntityState) -> str | None:
    """The ``locked_by`` column: the holder's instance id, followed by ``#execution#request``
    when its full identity is known (``#`` cannot occur in an instance id)."""
    lock = st.lock
    if lock is None:
        return st.locked_by
    return f"{lock.instance_id}#{lock.execution_id}#{lock.task_scheduled_id}"


def parse_holder(text: str | None) -> tuple[str | None, ParentInfo | None]:
    """The inverse of :func:`holder_text`: (instance id, full identity or ``None``). A row
    written before identities were recorded has the instance id alone."""
    if text is None or "#" not in text:
        return text, None
    instance_id, execution_id, request = text.rsplit("#", 2)
    return instance_id, ParentInfo(instance_id, int(request), execution_id)


_plain_classes: dict[type, bool] = {}


def _is_plain(cls: type) -> bool:
    """Whether ``cls`` pickles as "a new instance plus its ``__dict__``" (no ``__slots__``,
    no custom ``__reduce__`` / ``__getstate__`` / ``__setstate__``)."""
    plain = _plain_classes.get(cls)
    if plain is None:
        plain = _plain_classes[cls] = (
            cls.__reduce_ex__ is object.__reduce_ex__  # type: ignore[comparison-overlap]
            and cls.__reduce__ is object.__reduce__  # type: ignore[comparison-overlap]
            and cls.__getstate__ is object.__getstate__  # type: ignore[comparison-overlap]
            and getattr(cls, "__setstate__", None) is None
            and all("__slots__" not in vars(k) for k in cls.__mro__)
        )
    return plain


def pack_state(state: Any, spec: Any) -> Any:
    """What to store for an entity's state: for a plain object of the registered class of a
    class entity, its attributes (a dict: JSON when they are JSON values, readable by any
    tool); ``state`` itself otherwise.

    Encoding the object itself would carry its class every time, by value when the class
    lives in ``__main__`` (a script or notebook): about 70 us and 1 KB per write instead of
    about 1 us. The shard host has the class (it is registered), so it rebuilds the object
    on load; a reader without the code sees the attributes."""
    if spec is not None and spec.is_class and type(state) is spec.target and _is_plain(spec.target):
        return dict(vars(state))
    return state


def unpack_state(value: Any, spec: Any) -> Any:
    """The inverse of :func:`pack_state` (the attributes stay a dict when the entity's class
    is not registered here)."""
    if type(value) is dict and spec is not None and spec.is_class and _is_plain(spec.target):
        obj = spec.target.__new__(spec.target)
        obj.__dict__.update(value)
        return obj
    return value


def entity_action_message(
    action: Action, instance_id: str, execution_id: str, now: datetime, trace: str | None = None
) -> Message | None:
    """The message an orchestration's entity action sends, or ``None`` for other actions; a
    call or signal carries ``trace`` (the asking episode span's ``traceparent``)."""
    sender = ParentInfo(instance_id, action.task_id, execution_id)
    if isinstance(action, CallEntity):
        return Message(action.entity_id, EntityRequest(now, action.name, action.input, sender, False, trace))
    if isinstance(action, SignalEntity):
        due = action.scheduled_time.timestamp() if action.scheduled_time is not None else None
        return Message(action.entity_id, EntityRequest(now, action.name, action.input, None, True, trace), due=due)
    if isinstance(action, LockEntities):
        return Message(action.lock_set[0], EntityLockMessage(now, sender, action.lock_set, 0))
    if isinstance(action, UnlockEntity):
        return Message(action.entity_id, EntityUnlockMessage(now, instance_id, execution_id, action.section_id))
    return None


def outgoing_message(out: Outgoing) -> Message:
    """The message for something an entity sends (a start gets its execution id here)."""
    event = out.event
    if isinstance(event, ExecutionStarted) and not event.execution_id:
        event = replace(event, execution_id=uuid.uuid4().hex)
    return Message(out.target, event, execution_id=out.execution_id)


def held_by(st: EntityState, event: HistoryEvent, instance_id: str, execution_id: str) -> bool:
    """Whether ``event``, from execution ``execution_id`` of ``instance_id``, is a call to an
    entity this execution holds locked, or the unlock that releases that lock: a message the
    entity serves at once, ahead of everything it holds, whenever it arrives (the caller also
    makes sure nothing sent before it to the entity is still on its way)."""
    lock = st.lock
    if lock is None or st.locked_by != instance_id or lock.execution_id != execution_id:
        return False
    if type(event) is EntityUnlockMessage:
        return event.section_id == lock.task_scheduled_id
    return is_call(event)


def is_call(event: HistoryEvent) -> TypeGuard[EntityRequest]:
    """Whether ``event`` is an entity call: a request that expects an answer (its sender's)."""
    return isinstance(event, EntityRequest) and not event.is_signal and event.sender is not None


def unlock_all(
    lock_set: tuple[str, ...], instance_id: str, execution_id: str | None, section_id: int, now: datetime
) -> list[Message]:
    """Unlock messages for a lock set granted to (or still requested by) a holder that can no
    longer use it (the lock request of task ``section_id`` of that execution): they release
    that lock, no later one, and withdraw the request where it still waits."""
    unlock = EntityUnlockMessage(now, instance_id, execution_id, section_id)
    return [Message(key, unlock) for key in lock_set]
