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
from ._messages import Message


@dataclass(slots=True)
class EntityRecord:
    """A shard host's in-memory copy of one entity (the virtual actor's state)."""

    entity_id: EntityId
    state: EntityState
    updated_at: float = 0.0

    @staticmethod
    def from_row(row: Any) -> EntityRecord:
        """Build from an ``entities`` row (see ``ENTITY_COLUMNS``)."""
        queue = decode(row[5]) if row[5] is not None else []
        st = EntityState(bool(row[2]), decode(row[3]) if row[2] else None, row[4], queue)
        return EntityRecord(EntityId.parse(row[0]), st, row[6])

    def to_row(self) -> tuple[Any, ...]:
        """The ``entities`` row (state and queue encoded)."""
        st, key = self.state, str(self.entity_id)
        state_blob = encode(st.state, f"state of entity {key}") if st.exists else None
        queue_blob = encode(st.queue, f"queue of entity {key}") if st.queue else None
        return (key, self.entity_id.name, int(st.exists), state_blob, st.locked_by, queue_blob, self.updated_at)


def entity_action_message(action: Action, instance_id: str, execution_id: str, now: datetime) -> Message | None:
    """The message an orchestration's entity action sends, or ``None`` for other actions."""
    sender = ParentInfo(instance_id, action.task_id, execution_id)
    if isinstance(action, CallEntity):
        return Message(action.entity_id, EntityRequest(now, action.name, action.input, sender, False))
    if isinstance(action, SignalEntity):
        return Message(action.entity_id, EntityRequest(now, action.name, action.input, None, True))
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
