"""How a shard host keeps entities: their records, rows, and the messages they send."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from entities import EntityId, EntityState, Outgoing
from orchestrations import (
    Action,
    CallEntity,
    EntityLockMessage,
    EntityRequest,
    EntityUnlockMessage,
    ExecutionStarted,
    LockEntities,
    ParentInfo,
    SignalEntity,
    UnlockEntity,
)

from ._codec import decode, encode
from ._messages import Message, from_ts
from ._status import EntityMetadata


@dataclass(slots=True)
class EntityRecord:
    """A shard host's in-memory copy of one entity (the virtual actor's state)."""

    entity_id: EntityId
    state: EntityState
    updated_at: float = 0.0

    @staticmethod
    def from_row(row: Any, spec: Any = None) -> EntityRecord:
        """Build from an ``entities`` row (see ``ENTITY_COLUMNS``); ``spec`` (the entity's
        ``EntitySpec``, if registered) rebuilds a class entity's object."""
        queue = decode(row[5]) if row[5] is not None else []
        st = EntityState(bool(row[2]), unpack_state(decode(row[3]), spec) if row[2] else None, row[4], queue)
        return EntityRecord(EntityId.parse(row[0]), st, row[6])

    def metadata(self) -> EntityMetadata:
        """What ``list_entities`` reports about this entity."""
        st = self.state
        updated = from_ts(self.updated_at)
        return EntityMetadata(self.entity_id, st.exists, st.state, st.locked_by, len(st.queue), updated)

    def to_row(self, spec: Any = None) -> tuple[Any, ...]:
        """The ``entities`` row (state and queue encoded; see :func:`pack_state`)."""
        st, key = self.state, str(self.entity_id)
        state_blob = encode(pack_state(st.state, spec), f"state of entity {key}") if st.exists else None
        queue_blob = encode(st.queue, f"queue of entity {key}") if st.queue else None
        return (key, self.entity_id.name, int(st.exists), state_blob, st.locked_by, queue_blob, self.updated_at)


@dataclass(frozen=True, slots=True)
class ObjectState:
    """A class entity's state as stored: the object's attributes, without the object.

    Encoding the object itself would carry its class every time, by value when the class
    lives in ``__main__`` (a script or notebook): about 70 us and 1 KB per write instead of
    about 1 us. The shard host has the class (it is registered), so it rebuilds the object
    on load; a reader without the code sees the attributes.
    """

    type_name: str
    attributes: dict[str, Any]

    def __repr__(self) -> str:
        return f"{self.type_name}({', '.join(f'{k}={v!r}' for k, v in self.attributes.items())})"


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
    """What to encode for an entity's state: an :class:`ObjectState` for a plain object of
    the registered class of a class entity, ``state`` itself otherwise."""
    if spec is not None and spec.is_class and type(state) is spec.target and _is_plain(spec.target):
        return ObjectState(spec.target.__qualname__, dict(vars(state)))
    return state


def unpack_state(value: Any, spec: Any) -> Any:
    """The inverse of :func:`pack_state` (an :class:`ObjectState` stays as it is when the
    entity's class is not registered here)."""
    if isinstance(value, ObjectState) and spec is not None and spec.is_class:
        obj = spec.target.__new__(spec.target)
        obj.__dict__.update(value.attributes)
        return obj
    return value


def entity_action_message(action: Action, instance_id: str, execution_id: str, now: datetime) -> Message | None:
    """The message an orchestration's entity action sends, or ``None`` for other actions."""
    sender = ParentInfo(instance_id, action.task_id, execution_id)
    if isinstance(action, CallEntity):
        return Message(action.entity_id, EntityRequest(now, action.name, action.input, sender, False))
    if isinstance(action, SignalEntity):
        due = action.scheduled_time.timestamp() if action.scheduled_time is not None else None
        return Message(action.entity_id, EntityRequest(now, action.name, action.input, None, True), due=due)
    if isinstance(action, LockEntities):
        return Message(action.lock_set[0], EntityLockMessage(now, sender, action.lock_set, 0))
    if isinstance(action, UnlockEntity):
        return Message(action.entity_id, EntityUnlockMessage(now, instance_id))
    return None


def outgoing_message(out: Outgoing) -> Message:
    """The message for something an entity sends (a start gets its execution id here)."""
    event = out.event
    if isinstance(event, ExecutionStarted) and not event.execution_id:
        event = replace(event, execution_id=uuid.uuid4().hex)
    return Message(out.target, event, execution_id=out.execution_id)


def unlock_all(lock_set: tuple[str, ...], holder_id: str, now: datetime) -> list[Message]:
    """Unlock messages for a lock set whose holder can no longer use it."""
    return [Message(key, EntityUnlockMessage(now, holder_id)) for key in lock_set]
