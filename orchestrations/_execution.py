"""What an episode produces and how history events are classified. Pure.

:class:`ExecutionState` and :class:`ExecutionResult` are what the executor hands the runtime;
the classification functions say which events arrive from outside (recorded before their
episode's ``OrchestratorStarted``), which record an action, and which the executor writes
around an episode; the executor, the rewind plan and the runtime all read histories with them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from ._actions import SCHEDULING_EVENTS, Action
from ._history import (
    ContinueAsNew,
    EventRaised,
    ExecutionCompleted,
    ExecutionResumed,
    ExecutionSuspended,
    ExecutionTerminated,
    FailureDetails,
    HistoryEvent,
    OrchestratorCompleted,
    OrchestratorStarted,
    PatchApplied,
)


class ExecutionState(StrEnum):
    """Where an instance stands after an episode."""

    RUNNING = "Running"
    SUSPENDED = "Suspended"
    COMPLETED = "Completed"
    FAILED = "Failed"
    TERMINATED = "Terminated"
    CONTINUED_AS_NEW = "ContinuedAsNew"

    @property
    def is_final(self) -> bool:
        """Whether this execution is over (continue-as-new starts a new one)."""
        return self in _FINAL_STATES


#: the states :attr:`ExecutionState.is_final` names (a set: asked ~40 times per transfer)
_FINAL_STATES = frozenset(set(ExecutionState) - {ExecutionState.RUNNING, ExecutionState.SUSPENDED})


@dataclass(slots=True)
class ExecutionResult:
    """What one episode produced.

    ``new_events`` are appended to history in order; ``actions`` are carried out after the
    commit. For ``CONTINUED_AS_NEW``, ``output`` is the new input and ``carryover`` the
    external events to deliver to the new execution.
    """

    new_events: list[HistoryEvent]
    actions: list[Action]
    state: ExecutionState
    output: Any = None
    failure: FailureDetails | None = None
    custom_status: Any = None
    carryover: list[EventRaised] = field(default_factory=list)
    #: the episode called ``set_custom_status`` (``custom_status`` is then to be stored,
    #: ``None`` clearing it)
    custom_status_changed: bool = False
    #: the execution ended while waiting for the locks of a critical section: (lock set, task
    #: id of its lock request), to withdraw from the entities (an unlock each), so that a grant
    #: never reaches a later execution's turn and no entity stays locked for an execution that
    #: is gone
    withdrawn_lock: tuple[tuple[str, ...], int] | None = None
    #: for ``CONTINUED_AS_NEW``: the version the new execution runs (``None``: the latest)
    continue_version: int | None = None
    #: for ``CONTINUED_AS_NEW``: the new execution's ``ExecutionStarted.generation``
    continue_generation: int | None = None
    #: for ``FAILED``: the exception the orchestrator's code raised, if it did (the runtime
    #: keeps it as the failure's ``cause`` where it can be stored, for a parent or a client)
    raised: BaseException | None = None


def final_event(state: ExecutionState, output: Any, failure: FailureDetails | None, now: datetime) -> HistoryEvent:
    """The event that records the end of an execution in ``state`` (a final one)."""
    if state is ExecutionState.CONTINUED_AS_NEW:
        return ContinueAsNew(now, output)
    if state is ExecutionState.TERMINATED:
        return ExecutionCompleted(now, "Terminated", output)
    if state is ExecutionState.FAILED:
        return ExecutionCompleted(now, "Failed", failure.describe() if failure else None, failure)
    return ExecutionCompleted(now, "Completed", output)


#: events applied even while suspended (the rest are held until the instance resumes)
ALWAYS_APPLIED = (
    ExecutionResumed,
    ExecutionTerminated,
    ExecutionSuspended,
    OrchestratorStarted,
    OrchestratorCompleted,
    PatchApplied,
)

#: events the executor itself records around and within an episode (not actions)
_EPISODE_EVENTS = (OrchestratorStarted, OrchestratorCompleted, ExecutionCompleted, ContinueAsNew, PatchApplied)


def last_episode_start(history: Sequence[HistoryEvent]) -> int:
    """The index where the last episode's records begin (its incoming events, recorded before
    its OrchestratorStarted); ``len(history)`` if there is no episode."""
    starts = [i for i, e in enumerate(history) if isinstance(e, OrchestratorStarted)]
    if not starts:
        return len(history)
    cut = starts[-1]
    while cut > 0 and is_incoming(history[cut - 1]):
        cut -= 1
    return cut


def is_incoming(event: HistoryEvent) -> bool:
    """Events that arrive from outside (recorded before their episode's OrchestratorStarted)."""
    return not isinstance(event, _EPISODE_EVENTS) and not is_scheduling(event)


def is_scheduling(event: HistoryEvent) -> bool:
    """Events an episode records for the actions its code took."""
    return isinstance(event, SCHEDULING_EVENTS)
