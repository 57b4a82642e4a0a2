"""Event factories for tests that read like histories.

Each factory builds one history event with a deterministic default timestamp, so a test can
write a past history inline::

    history = [started("hello", input=None), orchestrator_started(), task_scheduled(1, "say_hello"),
               orchestrator_completed(), task_completed(1, "Hello Tokyo!")]

:class:`Replayer` replays stored histories (from a hub's files, exported JSON or
``hub.get_history``: see ``runtime.replay``) through the current code and reports every
instance that would fail, without Ray: run it in CI before deploying changed orchestrators.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from ._history import (
    EventRaised,
    ExecutionResumed,
    ExecutionStarted,
    ExecutionSuspended,
    ExecutionTerminated,
    FailureDetails,
    OrchestratorCompleted,
    OrchestratorStarted,
    ParentInfo,
    SubOrchestrationInstanceCompleted,
    SubOrchestrationInstanceCreated,
    SubOrchestrationInstanceFailed,
    TaskCompleted,
    TaskFailed,
    TaskScheduled,
    TimerCreated,
    TimerFired,
)
from ._replayer import Replayer, ReplayResult

__all__ = [
    "T0", "Replayer", "ReplayResult", "at", "event_raised", "failure", "orchestrator_completed",
    "orchestrator_started", "resumed", "started", "sub_completed", "sub_created", "sub_failed", "suspended",
    "task_completed", "task_failed", "task_scheduled", "terminated", "timer_created", "timer_fired",
]

#: The timestamp factories use when none is given.
T0 = datetime(2017, 5, 5, 18, 45, 28, tzinfo=UTC)


def at(seconds: float = 0.0) -> datetime:
    """``T0`` plus ``seconds``."""
    return T0 + timedelta(seconds=seconds)


def started(name: str, input: Any = None, *, instance_id: str = "test", ts: datetime = T0,
            parent: ParentInfo | None = None) -> ExecutionStarted:
    """An ExecutionStarted event."""
    return ExecutionStarted(ts, name, input, instance_id, "exec-0", parent)


def orchestrator_started(ts: datetime = T0) -> OrchestratorStarted:
    """An OrchestratorStarted event (sets ``current_utc_datetime``)."""
    return OrchestratorStarted(ts)


def orchestrator_completed(ts: datetime = T0) -> OrchestratorCompleted:
    """An OrchestratorCompleted event."""
    return OrchestratorCompleted(ts)


def task_scheduled(task_id: int, name: str, input: Any = None, ts: datetime = T0) -> TaskScheduled:
    """A TaskScheduled event."""
    return TaskScheduled(ts, task_id, name, input)


def task_completed(task_id: int, result: Any = None, ts: datetime = T0) -> TaskCompleted:
    """A TaskCompleted event."""
    return TaskCompleted(ts, task_id, result)


def failure(message: str = "boom", error_type: str = "ValueError") -> FailureDetails:
    """A FailureDetails."""
    return FailureDetails(error_type, message, None, None)


def task_failed(task_id: int, message: str = "boom", error_type: str = "ValueError",
                ts: datetime = T0) -> TaskFailed:
    """A TaskFailed event."""
    return TaskFailed(ts, task_id, failure(message, error_type))


def timer_created(task_id: int, fire_at: datetime, ts: datetime = T0) -> TimerCreated:
    """A TimerCreated event."""
    return TimerCreated(ts, task_id, fire_at)


def timer_fired(task_id: int, fire_at: datetime, ts: datetime | None = None) -> TimerFired:
    """A TimerFired event."""
    return TimerFired(ts or fire_at, task_id, fire_at)


def event_raised(name: str, input: Any = None, ts: datetime = T0) -> EventRaised:
    """An EventRaised event."""
    return EventRaised(ts, name, input)


def sub_created(task_id: int, name: str, instance_id: str, input: Any = None,
                ts: datetime = T0) -> SubOrchestrationInstanceCreated:
    """A SubOrchestrationInstanceCreated event."""
    return SubOrchestrationInstanceCreated(ts, task_id, name, instance_id, input)


def sub_completed(task_id: int, result: Any = None, ts: datetime = T0) -> SubOrchestrationInstanceCompleted:
    """A SubOrchestrationInstanceCompleted event."""
    return SubOrchestrationInstanceCompleted(ts, task_id, result)


def sub_failed(task_id: int, message: str = "boom", error_type: str = "ValueError",
               ts: datetime = T0) -> SubOrchestrationInstanceFailed:
    """A SubOrchestrationInstanceFailed event."""
    return SubOrchestrationInstanceFailed(ts, task_id, failure(message, error_type))


def terminated(reason: str | None = None, ts: datetime = T0) -> ExecutionTerminated:
    """An ExecutionTerminated event."""
    return ExecutionTerminated(ts, reason)


def suspended(reason: str | None = None, ts: datetime = T0) -> ExecutionSuspended:
    """An ExecutionSuspended event."""
    return ExecutionSuspended(ts, reason)


def resumed(reason: str | None = None, ts: datetime = T0) -> ExecutionResumed:
    """An ExecutionResumed event."""
    return ExecutionResumed(ts, reason)
