"""What the web UI shows, computed from what a hub returns: no Ray, no SQLite, no HTML.

Everything here works on the records both ways of reading a hub return (a running
``TaskHub`` or :class:`runtime._readonly.HubFiles`): statuses, history events and entity
metadata. :func:`waiting_for` tells what an instance waits for now from its history alone
(activities in flight, timers with their fire time, sub-orchestrations, entity calls and lock
requests), plus, when the orchestrator's code is at hand, the external events its code awaits
(found by replaying the history, as a shard host would, without running any activity).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from orchestrations import HistoryEvent, OrchestratorStarted
from orchestrations._executor import OrchestrationExecutor
from orchestrations._registry import Registry

from ._render import cell, timestamp
from ._times import duration

#: what scheduling events open and which event closes them, by the id field they share
_OPENERS = {
    "TaskScheduled": "activity",
    "TimerCreated": "timer",
    "SubOrchestrationInstanceCreated": "sub-orchestration",
    "EntityOperationCalled": "entity operation",
    "EntityLockRequested": "locks",
}
_CLOSERS = {
    "TaskCompleted", "TaskFailed", "TimerFired", "SubOrchestrationInstanceCompleted",
    "SubOrchestrationInstanceFailed", "EntityOperationCompleted", "EntityOperationFailed", "EntityLockGranted",
}
#: events that end an execution: nothing is awaited after them
_FINAL = {"ExecutionCompleted", "ContinueAsNew", "ExecutionTerminated"}


@dataclass(frozen=True, slots=True)
class Waiting:
    """One thing an instance waits for: ``kind`` (activity, timer, sub-orchestration, entity
    operation, locks, event), what (a name, an instance id, entity ids), since when, and for a
    timer when it fires."""

    kind: str
    what: str
    since: datetime | None = None
    fires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class TimelineRow:
    """One history event as the timeline shows it: offset from the first event, time since
    the previous one, and for a closing event how long its task took."""

    event_type: str
    at: str
    offset: str
    gap: str
    name: str
    input: str
    result: str
    took: str


def waiting_for(history: Sequence[Any], registry: Registry | None = None, instance_id: str = "") -> list[Waiting]:
    """What an instance with ``history`` waits for now: every task its history opened and did
    not close (in order), and, when ``registry`` holds its orchestrator, the external events
    its code awaits. A finished history waits for nothing."""
    if any(e.event_type in _FINAL for e in history):
        return []
    open_tasks: dict[int, Waiting] = {}
    lock_sets: dict[int, tuple[str, ...]] = {}
    held: dict[str, datetime] = {}
    for event in history:
        kind = _OPENERS.get(event.event_type)
        if kind is not None and hasattr(event, "event_id"):
            open_tasks[event.event_id] = _opened(kind, event)
            if kind == "locks":
                lock_sets[event.event_id] = tuple(event.lock_set)
        elif event.event_type in _CLOSERS:
            task_id = _closed_id(event)
            open_tasks.pop(task_id if task_id is not None else -1, None)
            if event.event_type == "EntityLockGranted":
                held.update(dict.fromkeys(lock_sets.get(task_id or -1, ()), event.timestamp))
        elif event.event_type == "EntityUnlockSent":
            held.pop(event.instance_id, None)
    found = [Waiting("holds lock", entity, since) for entity, since in held.items()]
    found += open_tasks.values()
    found += [Waiting("event", name) for name in awaited_events(history, registry, instance_id)]
    return found


def _opened(kind: str, event: Any) -> Waiting:
    if kind == "timer":
        return Waiting(kind, f"#{event.event_id}", event.timestamp, getattr(event, "fire_at", None))
    if kind == "locks":
        return Waiting(kind, ", ".join(event.lock_set), event.timestamp)
    if kind in ("sub-orchestration", "entity operation"):
        return Waiting(kind, f"{event.name} on {event.instance_id}", event.timestamp)
    return Waiting(kind, f"{event.name} (task #{event.event_id})", event.timestamp)


def _closed_id(event: Any) -> int | None:
    for field_name in ("task_scheduled_id", "timer_id"):
        value = getattr(event, field_name, None)
        if value is not None:
            return int(value)
    return None


def awaited_events(history: Sequence[Any], registry: Registry | None, instance_id: str = "") -> list[str]:
    """The names of the external events the orchestrator's code awaits after ``history``,
    found by replaying it with ``registry``'s code; ``[]`` without the code, for a history
    that is not made of decoded events, or when replaying fails (the instance page shows its
    failure elsewhere)."""
    if registry is None or not history or not all(isinstance(e, HistoryEvent) for e in history):
        return []
    executor = OrchestrationExecutor(registry.orchestrators, instance_id or "ui")
    try:
        executor.replay(history)
        names = [tasks[0].name for tasks in executor.context._event_waiters.values() if tasks]
    except Exception:  # code that no longer replays: nothing is known to be awaited
        names = []
    finally:
        executor.close()
    return names


def timeline(history: Sequence[Any]) -> list[TimelineRow]:
    """The history as timeline rows: offsets from the first event, gaps between events, and
    each closing event's duration since the event that opened its task."""
    if not history:
        return []
    start = history[0].timestamp
    opened: dict[int, datetime] = {}
    rows: list[TimelineRow] = []
    previous = start
    for event in history:
        took = ""
        if event.event_type in _OPENERS and hasattr(event, "event_id"):
            opened[event.event_id] = event.timestamp
        elif event.event_type in _CLOSERS:
            began = opened.pop(_closed_id(event) or -1, None)
            took = duration(event.timestamp - began) if began is not None else ""
        rows.append(TimelineRow(
            event.event_type, timestamp(event.timestamp), duration(event.timestamp - start),
            duration(event.timestamp - previous) if event is not history[0] else "", event.name or "",
            cell(event.input, 120), cell(event.result, 120), took,
        ))
        previous = event.timestamp
    return rows


def episodes(history: Sequence[Any]) -> int:
    """How many episodes (``OrchestratorStarted`` events) the history holds."""
    return sum(1 for e in history if isinstance(e, OrchestratorStarted) or e.event_type == "OrchestratorStarted")


def show(value: Any, limit: int | None = 80) -> str:
    """``value`` as the UI shows it: JSON, where an object (an entity's state, a user's class)
    shows as its class name with its fields rather than as ``<object at 0x...>``."""
    return cell(_plain(value), limit)


def _plain(value: Any, depth: int = 0) -> Any:
    if depth > 4 or value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in value]
    fields = getattr(value, "__dict__", None)
    if isinstance(fields, dict) and not callable(value):
        return {type(value).__name__: {k: _plain(v, depth + 1) for k, v in fields.items() if not k.startswith("_")}}
    return value
