"""Which method of the orchestration executor handles each history event type.

The executor applies every event of a history through this table; it is built once per
executor class (a table of bound methods per executor cost ~9% of a busy shard turn, where
thousands of executors are made)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._history import (
    ContinueAsNew,
    EntityLockGranted,
    EntityLockRequested,
    EntityOperationCalled,
    EntityOperationCompleted,
    EntityOperationFailed,
    EntityOperationSignaled,
    EntityUnlockSent,
    EventRaised,
    EventSent,
    ExecutionCompleted,
    ExecutionResumed,
    ExecutionRewound,
    ExecutionStarted,
    ExecutionSuspended,
    ExecutionTerminated,
    HistoryEvent,
    OrchestratorCompleted,
    OrchestratorStarted,
    PatchApplied,
    SubOrchestrationInstanceCompleted,
    SubOrchestrationInstanceCreated,
    SubOrchestrationInstanceFailed,
    TaskCompleted,
    TaskFailed,
    TaskScheduled,
    TimerCreated,
    TimerFired,
)

#: The handler of each event type: the name of one small method of the executor.
HANDLER_NAMES: dict[type[HistoryEvent], str] = {
    ExecutionStarted: "_on_execution_started",
    OrchestratorStarted: "_on_orchestrator_started",
    OrchestratorCompleted: "_on_orchestrator_completed",
    TaskScheduled: "_on_scheduled",
    TimerCreated: "_on_scheduled",
    SubOrchestrationInstanceCreated: "_on_scheduled",
    EventSent: "_on_scheduled",
    EntityOperationCalled: "_on_scheduled",
    EntityOperationSignaled: "_on_scheduled",
    EntityLockRequested: "_on_scheduled",
    EntityUnlockSent: "_on_scheduled",
    EntityOperationCompleted: "_on_entity_answered",
    EntityOperationFailed: "_on_entity_answered",
    EntityLockGranted: "_on_lock_granted",
    TaskCompleted: "_on_task_completed",
    SubOrchestrationInstanceCompleted: "_on_task_completed",
    TaskFailed: "_on_task_failed",
    SubOrchestrationInstanceFailed: "_on_task_failed",
    TimerFired: "_on_timer_fired",
    EventRaised: "_on_event_raised",
    ExecutionTerminated: "_on_terminated",
    ExecutionSuspended: "_on_suspended",
    ExecutionResumed: "_on_resumed",
    ExecutionRewound: "_on_marker",
    PatchApplied: "_on_marker",
    ExecutionCompleted: "_on_final_recorded",
    ContinueAsNew: "_on_final_recorded",
}


_HANDLERS: dict[type, dict[type[HistoryEvent], Callable[[Any, Any], None]]] = {}


def handlers_of(cls: type) -> dict[type[HistoryEvent], Callable[[Any, Any], None]]:
    """Each event type's handler in executor class ``cls`` (a function taking the executor and
    the event), looked up once per class rather than bound again for every executor."""
    table = _HANDLERS.get(cls)
    if table is None:
        table = _HANDLERS[cls] = {event_type: getattr(cls, name) for event_type, name in HANDLER_NAMES.items()}
    return table
