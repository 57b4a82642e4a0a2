"""Actions: what an episode asks the runtime to do once its history is committed.

Each action carries the task id the orchestrator gave it, and maps to exactly one scheduling
history event; replay matches the two to detect non-determinism.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ._critical import canonical_lock_set
from ._digest import input_changed, input_digest
from ._history import (
    EntityLockRequested,
    EntityOperationCalled,
    EntityOperationSignaled,
    EntityUnlockSent,
    EventSent,
    HistoryEvent,
    SubOrchestrationInstanceCreated,
    TaskScheduled,
    TimerCreated,
)
from ._ids import entity_key


@dataclass(frozen=True, slots=True)
class Action:
    """Base of all actions; ``task_id`` is the orchestrator's sequence number for it."""

    task_id: int

    def to_event(self, now: datetime) -> HistoryEvent:
        """The history event that records this action."""
        raise NotImplementedError

    def describe(self) -> str:
        """A short description for non-determinism messages."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class ScheduleTask(Action):
    """Run activity ``name`` with ``input``."""

    name: str
    input: Any = None

    def to_event(self, now: datetime) -> HistoryEvent:
        return TaskScheduled(now, self.task_id, self.name, self.input, input_digest(self.input))

    def describe(self) -> str:
        return f"call_activity {self.name!r} (task {self.task_id})"


@dataclass(frozen=True, slots=True)
class CreateTimer(Action):
    """Fire timer ``task_id`` at ``fire_at``."""

    fire_at: datetime

    def to_event(self, now: datetime) -> HistoryEvent:
        return TimerCreated(now, self.task_id, self.fire_at)

    def describe(self) -> str:
        return f"create_timer (task {self.task_id})"


@dataclass(frozen=True, slots=True)
class CreateSubOrchestration(Action):
    """Start orchestrator ``name`` as instance ``instance_id`` with ``input``."""

    name: str
    instance_id: str
    input: Any = None

    def to_event(self, now: datetime) -> HistoryEvent:
        return SubOrchestrationInstanceCreated(
            now, self.task_id, self.name, self.instance_id, self.input, input_digest(self.input)
        )

    def describe(self) -> str:
        return f"call_sub_orchestrator {self.name!r} as {self.instance_id!r} (task {self.task_id})"


@dataclass(frozen=True, slots=True)
class SendEvent(Action):
    """Raise event ``name`` with ``input`` on instance ``instance_id``."""

    instance_id: str
    name: str
    input: Any = None

    def to_event(self, now: datetime) -> HistoryEvent:
        return EventSent(now, self.task_id, self.instance_id, self.name, self.input)

    def describe(self) -> str:
        return f"send_event {self.name!r} to {self.instance_id!r} (task {self.task_id})"


@dataclass(frozen=True, slots=True)
class CallEntity(Action):
    """Run operation ``name`` of entity ``entity_id`` and answer with its result."""

    entity_id: str
    name: str
    input: Any = None

    def to_event(self, now: datetime) -> HistoryEvent:
        return EntityOperationCalled(
            now, self.task_id, self.entity_id, self.name, self.input, input_digest(self.input)
        )

    def describe(self) -> str:
        return f"call_entity {self.entity_id!r} {self.name!r} (task {self.task_id})"


@dataclass(frozen=True, slots=True)
class SignalEntity(Action):
    """Run operation ``name`` of entity ``entity_id``, one-way; at ``scheduled_time`` (UTC, not
    before) if given."""

    entity_id: str
    name: str
    input: Any = None
    scheduled_time: datetime | None = None

    def to_event(self, now: datetime) -> HistoryEvent:
        return EntityOperationSignaled(
            now, self.task_id, self.entity_id, self.name, self.input, self.scheduled_time, input_digest(self.input)
        )

    def describe(self) -> str:
        return f"signal_entity {self.entity_id!r} {self.name!r} (task {self.task_id})"


@dataclass(frozen=True, slots=True)
class LockEntities(Action):
    """Lock every entity of ``lock_set`` (canonical order), one after the other."""

    lock_set: tuple[str, ...]

    def to_event(self, now: datetime) -> HistoryEvent:
        return EntityLockRequested(now, self.task_id, self.lock_set)

    def describe(self) -> str:
        return f"lock_entities {list(self.lock_set)} (task {self.task_id})"


@dataclass(frozen=True, slots=True)
class UnlockEntity(Action):
    """Release this orchestration's lock on ``entity_id``, taken by the lock request of task
    ``section_id`` (the critical section's id: the unlock names exactly that lock)."""

    entity_id: str
    section_id: int = 0

    def to_event(self, now: datetime) -> HistoryEvent:
        return EntityUnlockSent(now, self.task_id, self.entity_id)

    def describe(self) -> str:
        return f"unlock {self.entity_id!r} (task {self.task_id})"


_RECORDS: dict[type[Action], type[HistoryEvent]] = {
    ScheduleTask: TaskScheduled,
    CreateTimer: TimerCreated,
    CreateSubOrchestration: SubOrchestrationInstanceCreated,
    SendEvent: EventSent,
    CallEntity: EntityOperationCalled,
    SignalEntity: EntityOperationSignaled,
    LockEntities: EntityLockRequested,
    UnlockEntity: EntityUnlockSent,
}

#: the history events that record an action
SCHEDULING_EVENTS = tuple(_RECORDS.values())


def describe_event(event: HistoryEvent) -> str:
    """A short description of a scheduling event, in the words of :meth:`Action.describe`."""
    if isinstance(event, TaskScheduled):
        return f"call_activity {event.name!r} (task {event.event_id})"
    if isinstance(event, TimerCreated):
        return f"create_timer (task {event.event_id})"
    if isinstance(event, SubOrchestrationInstanceCreated):
        return f"call_sub_orchestrator {event.name!r} as {event.instance_id!r} (task {event.event_id})"
    if isinstance(event, EventSent):
        return f"send_event {event.name!r} to {event.instance_id!r} (task {event.event_id})"
    if isinstance(event, EntityOperationCalled):
        return f"call_entity {event.instance_id!r} {event.name!r} (task {event.event_id})"
    if isinstance(event, EntityOperationSignaled):
        return f"signal_entity {event.instance_id!r} {event.name!r} (task {event.event_id})"
    if isinstance(event, EntityLockRequested):
        return f"lock_entities {list(event.lock_set)} (task {event.event_id})"
    if isinstance(event, EntityUnlockSent):
        return f"unlock {event.instance_id!r} (task {event.event_id})"
    return event.event_type


def matches(action: Action, event: HistoryEvent) -> bool:
    """Whether ``event`` is the record of ``action`` (same kind and same target)."""
    if _RECORDS.get(type(action)) is not type(event):
        return False
    if isinstance(action, (CallEntity, SignalEntity)):
        return _same_entity(action.entity_id, event.instance_id) and action.name == event.name  # type: ignore[attr-defined]
    if isinstance(action, LockEntities):
        # a history written before entity names were case-insensitive has them as they were
        recorded = event.lock_set  # type: ignore[attr-defined]
        return action.lock_set == recorded or action.lock_set == canonical_lock_set(recorded)
    if isinstance(action, UnlockEntity):
        return _same_entity(action.entity_id, event.instance_id)  # type: ignore[attr-defined]
    if isinstance(event, TaskScheduled):
        return isinstance(action, ScheduleTask) and action.name == event.name
    if isinstance(event, TimerCreated):
        return isinstance(action, CreateTimer)
    if isinstance(event, SubOrchestrationInstanceCreated):
        return (
            isinstance(action, CreateSubOrchestration)
            and action.name == event.name
            and action.instance_id == event.instance_id
        )
    if isinstance(event, EventSent):  # event names are case-insensitive; the target must match
        return (
            isinstance(action, SendEvent)
            and action.name.casefold() == event.name.casefold()
            and action.instance_id == event.instance_id
        )
    return False


def input_differs(action: Action, event: HistoryEvent) -> bool:
    """Whether ``action`` (which :func:`matches` ``event``) gives its task another input than
    the one ``event`` recorded a digest of. Events without a digest are not checked."""
    recorded = getattr(event, "input_digest", None)
    return recorded is not None and input_changed(recorded, getattr(action, "input", None))


def _same_entity(canonical: str, recorded: str) -> bool:
    """Whether an action's (canonical) entity id is the one a history event recorded, also
    when the history was written before entity names were case-insensitive."""
    return canonical == recorded or canonical == entity_key(recorded)
