"""Actions: what an episode asks the runtime to do once its history is committed.

Each action carries the task id the orchestrator gave it, and maps to exactly one scheduling
history event; replay matches the two to detect non-determinism.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ._history import (
    EventSent,
    HistoryEvent,
    SubOrchestrationInstanceCreated,
    TaskScheduled,
    TimerCreated,
)


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
        return TaskScheduled(now, self.task_id, self.name, self.input)

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
        return SubOrchestrationInstanceCreated(now, self.task_id, self.name, self.instance_id, self.input)

    def describe(self) -> str:
        return f"call_sub_orchestrator {self.name!r} (task {self.task_id})"


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


def describe_event(event: HistoryEvent) -> str:
    """A short description of a scheduling event, in the words of :meth:`Action.describe`."""
    if isinstance(event, TaskScheduled):
        return f"call_activity {event.name!r} (task {event.event_id})"
    if isinstance(event, TimerCreated):
        return f"create_timer (task {event.event_id})"
    if isinstance(event, SubOrchestrationInstanceCreated):
        return f"call_sub_orchestrator {event.name!r} (task {event.event_id})"
    if isinstance(event, EventSent):
        return f"send_event {event.name!r} to {event.instance_id!r} (task {event.event_id})"
    return event.event_type


def matches(action: Action, event: HistoryEvent) -> bool:
    """Whether ``event`` is the record of ``action`` (same kind and same target)."""
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
    if isinstance(event, EventSent):
        return isinstance(action, SendEvent) and action.name == event.name
    return False
