"""History events: the closed set of small typed facts an orchestration is rebuilt from.

Names follow the history table of Durable Functions. Each event is a frozen, slotted
dataclass. Every event has a ``timestamp`` (UTC); the uniform read-only properties
``event_type``, ``name``, ``input`` and ``result`` give the columns of the history table.

Scheduling events carry ``event_id``, the per-execution sequence number the orchestrator gave
the action; completion events carry ``task_scheduled_id`` pointing back to it. Replay matches
the two, so the numbering is what makes replay deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ._compat import tolerate_new_fields

#: field metadata: a stored record has this field only when it is not ``None`` (a field added
#: for observability leaves the records written without it byte for byte as they were)
STORED_WHEN_SET = {"stored_when_set": True}


@dataclass(frozen=True, slots=True)
class FailureDetails:
    """Why something failed: the exception's type name, message, traceback and, where it
    could be pickled, the exception itself (``cause``)."""

    error_type: str
    message: str
    details: str | None = None
    cause: BaseException | None = None

    def describe(self) -> str:
        """``"Type: message"``, the one-line form used in status queries."""
        return f"{self.error_type}: {self.message}" if self.error_type else self.message


@dataclass(frozen=True, slots=True)
class HistoryEvent:
    """Base of all history events.

    ``name``, ``input`` and ``result`` are the columns of the history table; an event type
    that has such a fact declares it as a field, which shadows the ``None`` default here.
    """

    timestamp: datetime

    @property
    def event_type(self) -> str:
        """The event's type name, as in the Durable Functions history table."""
        return type(self).__name__

    @property
    def name(self) -> str | None:
        """The function or event name, if the event has one."""
        return None

    @property
    def input(self) -> Any:
        """The event's input payload, if any."""
        return None

    @property
    def result(self) -> Any:
        """The event's result payload; for a failure, ``"Type: message"``."""
        failure = getattr(self, "failure", None)
        return failure.describe() if failure is not None else None


@dataclass(frozen=True, slots=True)
class ParentInfo:
    """Who started a sub-orchestration, so that its end can be reported back."""

    instance_id: str
    task_scheduled_id: int
    execution_id: str


#: the checks on an orchestrator's calls that can change what an execution does, by the level
#: that added them; a new execution records the newest level in ``ExecutionStarted.rules`` and
#: an execution recorded before a check replays without it.
#: 1: ``call_sub_orchestrator`` refuses an instance id a child of the same execution still runs under
RULES_CHILD_IDS = 1
#: the level a new execution runs under
RULES = RULES_CHILD_IDS


@dataclass(frozen=True, slots=True)
class ExecutionStarted(HistoryEvent):
    """The orchestration's first event: its name, input and (for children) parent."""

    name: str = field()  # field(): the base class has a `name` property
    input: Any = None
    instance_id: str = ""
    execution_id: str = ""
    parent: ParentInfo | None = None
    #: the version of the orchestrator this execution runs (``@orchestrator(version=...)``);
    #: replay uses exactly this version. ``None``: an unversioned orchestrator, or (in a start
    #: not yet recorded) "the latest": the executor records the version it chose
    version: int | None = None
    #: the W3C ``traceparent`` of the span this execution's episodes are children of (the
    #: client's start, the parent's episode, or a root the shard host made); ``None`` when
    #: tracing was off. Observability only: replay ignores it, and it is stored only when set
    trace: str | None = field(default=None, compare=False, metadata=STORED_WHEN_SET)
    #: how many times the instance continued as new before this execution (``None``: the
    #: first execution, or one recorded before generations were); an execution's default
    #: child ids and ``new_uuid`` values depend on it, so that no two generations repeat them
    generation: int | None = field(default=None, metadata=STORED_WHEN_SET)
    #: the checks on the orchestrator's calls this execution runs under (see
    #: ``RULES``; ``None``: an execution recorded before the marker, which replays with the
    #: checks it had then, so that no instance in flight takes another path after an upgrade)
    rules: int | None = field(default=None, compare=False, metadata=STORED_WHEN_SET)


@dataclass(frozen=True, slots=True)
class OrchestratorStarted(HistoryEvent):
    """An episode began; its timestamp is ``current_utc_datetime`` during that episode."""


@dataclass(frozen=True, slots=True)
class OrchestratorCompleted(HistoryEvent):
    """An episode ended (the orchestrator yielded or returned)."""


@dataclass(frozen=True, slots=True)
class TaskScheduled(HistoryEvent):
    """An activity was scheduled. ``input_digest`` fingerprints ``input`` (see
    ``_digest.input_digest``); replay compares it with the input the code gives now."""

    event_id: int
    name: str = field()  # field(): the base class has a `name` property
    input: Any = None
    input_digest: str | None = field(default=None, compare=False)  # derived from input


@dataclass(frozen=True, slots=True)
class TaskCompleted(HistoryEvent):
    """An activity returned ``result``."""

    task_scheduled_id: int
    result: Any = None


@dataclass(frozen=True, slots=True)
class TaskFailed(HistoryEvent):
    """An activity raised."""

    task_scheduled_id: int
    failure: FailureDetails


@dataclass(frozen=True, slots=True)
class TimerCreated(HistoryEvent):
    """A durable timer was created to fire at ``fire_at``."""

    event_id: int
    fire_at: datetime


@dataclass(frozen=True, slots=True)
class TimerFired(HistoryEvent):
    """A durable timer fired."""

    timer_id: int
    fire_at: datetime


@dataclass(frozen=True, slots=True)
class EventRaised(HistoryEvent):
    """An external event arrived."""

    name: str = field()  # field(): the base class has a `name` property
    input: Any = None


@dataclass(frozen=True, slots=True)
class EventSent(HistoryEvent):
    """This orchestration sent an event to another instance."""

    event_id: int
    instance_id: str
    name: str = field()  # field(): the base class has a `name` property
    input: Any = None


@dataclass(frozen=True, slots=True)
class SubOrchestrationInstanceCreated(HistoryEvent):
    """A sub-orchestration was started (``input_digest`` as in :class:`TaskScheduled`)."""

    event_id: int
    name: str = field()  # field(): the base class has a `name` property
    instance_id: str
    input: Any = None
    input_digest: str | None = field(default=None, compare=False)  # derived from input


@dataclass(frozen=True, slots=True)
class SubOrchestrationInstanceCompleted(HistoryEvent):
    """A sub-orchestration completed with ``result``."""

    task_scheduled_id: int
    result: Any = None


@dataclass(frozen=True, slots=True)
class SubOrchestrationInstanceFailed(HistoryEvent):
    """A sub-orchestration failed."""

    task_scheduled_id: int
    failure: FailureDetails


@dataclass(frozen=True, slots=True)
class ContinueAsNew(HistoryEvent):
    """The orchestration restarts with ``input`` and fresh history."""

    input: Any = None


@dataclass(frozen=True, slots=True)
class ExecutionCompleted(HistoryEvent):
    """The orchestration finished: ``status`` is ``"Completed"`` or ``"Failed"``."""

    status: str
    result: Any = None
    failure: FailureDetails | None = None


@dataclass(frozen=True, slots=True)
class ExecutionTerminated(HistoryEvent):
    """A client terminated the instance."""

    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ExecutionSuspended(HistoryEvent):
    """A client suspended the instance: events are held until it resumes."""

    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ExecutionResumed(HistoryEvent):
    """A client resumed a suspended instance."""

    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ExecutionRewound(HistoryEvent):
    """A client rewound the failed instance: its failing episode was cut from history and runs
    again, with failed activities dispatched anew."""

    reason: str | None = None

    @property
    def input(self) -> Any:
        return self.reason


@dataclass(frozen=True, slots=True)
class PatchApplied(HistoryEvent):
    """The code took the new branch of ``context.is_patched(patch_id)`` in this execution (a
    marker: replay answers ``True`` for it, and ``False`` for a patch an execution replaying
    its history never recorded). A marker the code no longer asks about is ignored."""

    patch_id: str

    @property
    def name(self) -> str | None:
        return self.patch_id


# -- entities: what an orchestration records ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EntityOperationCalled(HistoryEvent):
    """The orchestration called operation ``name`` of entity ``instance_id`` (``@name@key``);
    ``input_digest`` as in :class:`TaskScheduled`."""

    event_id: int
    instance_id: str
    name: str = field()  # field(): the base class has a `name` property
    input: Any = None
    input_digest: str | None = field(default=None, compare=False)  # derived from input


@dataclass(frozen=True, slots=True)
class EntityOperationSignaled(HistoryEvent):
    """The orchestration signalled (one-way) operation ``name`` of entity ``instance_id``, to
    run at ``scheduled_time`` (UTC) if given; ``input_digest`` as in :class:`TaskScheduled`."""

    event_id: int
    instance_id: str
    name: str = field()  # field(): the base class has a `name` property
    input: Any = None
    scheduled_time: datetime | None = None
    input_digest: str | None = field(default=None, compare=False)  # derived from input


@dataclass(frozen=True, slots=True)
class EntityLockRequested(HistoryEvent):
    """The orchestration asked for the locks of ``lock_set`` (canonical order)."""

    event_id: int
    lock_set: tuple[str, ...]

    @property
    def input(self) -> Any:
        return list(self.lock_set)


@dataclass(frozen=True, slots=True)
class EntityUnlockSent(HistoryEvent):
    """The orchestration released its lock on entity ``instance_id``."""

    event_id: int
    instance_id: str

    @property
    def name(self) -> str | None:
        return self.instance_id


@dataclass(frozen=True, slots=True)
class EntityOperationCompleted(HistoryEvent):
    """An entity operation the orchestration called returned ``result``."""

    task_scheduled_id: int
    result: Any = None


@dataclass(frozen=True, slots=True)
class EntityOperationFailed(HistoryEvent):
    """An entity operation the orchestration called raised."""

    task_scheduled_id: int
    failure: FailureDetails


@dataclass(frozen=True, slots=True)
class EntityLockGranted(HistoryEvent):
    """Every entity of ``lock_set`` is now locked for the orchestration."""

    task_scheduled_id: int
    lock_set: tuple[str, ...] = ()


# -- entities: messages an entity receives ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EntityRequest(HistoryEvent):
    """Run operation ``name`` with ``input``. ``sender`` (an orchestration, or ``None`` for a
    client or an entity) is answered unless ``is_signal``; an entity locked by an
    orchestration serves only requests whose sender is that orchestration."""

    name: str = field()  # field(): the base class has a `name` property
    input: Any = None
    sender: ParentInfo | None = None
    is_signal: bool = True
    #: the ``traceparent`` of the span that asked (an orchestration's episode); the operation's
    #: span is its child. Stored only when set
    trace: str | None = field(default=None, compare=False, metadata=STORED_WHEN_SET)


@dataclass(frozen=True, slots=True)
class EntityLockMessage(HistoryEvent):
    """Lock this entity (``lock_set[position]``) for ``holder``, then pass the request on to
    the next entity of ``lock_set``, or grant the lock to ``holder`` after the last one."""

    holder: ParentInfo
    lock_set: tuple[str, ...]
    position: int


@dataclass(frozen=True, slots=True)
class EntityUnlockMessage(HistoryEvent):
    """Release this entity's lock if ``holder_id`` holds it, and, when they are given, with
    the lock request of task ``section_id`` of execution ``execution_id``: a stale or duplicate
    unlock (one whose lock was released already, or in flight while the entity was locked
    again) then never releases a later lock. An unlock without them (written before they
    existed) matches by instance id alone."""

    holder_id: str
    execution_id: str | None = None
    section_id: int | None = None


EVENT_TYPES: dict[str, type[HistoryEvent]] = {
    cls.__name__: cls
    for cls in (
        ExecutionStarted,
        OrchestratorStarted,
        OrchestratorCompleted,
        TaskScheduled,
        TaskCompleted,
        TaskFailed,
        TimerCreated,
        TimerFired,
        EventRaised,
        EventSent,
        SubOrchestrationInstanceCreated,
        SubOrchestrationInstanceCompleted,
        SubOrchestrationInstanceFailed,
        ContinueAsNew,
        ExecutionCompleted,
        ExecutionTerminated,
        ExecutionSuspended,
        ExecutionResumed,
        ExecutionRewound,
        PatchApplied,
        EntityOperationCalled,
        EntityOperationSignaled,
        EntityLockRequested,
        EntityUnlockSent,
        EntityOperationCompleted,
        EntityOperationFailed,
        EntityLockGranted,
        EntityRequest,
        EntityLockMessage,
        EntityUnlockMessage,
    )
}

# A field appended (with a default) to any of these keeps older shard files readable.
for _cls in (FailureDetails, ParentInfo, *EVENT_TYPES.values()):
    tolerate_new_fields(_cls)
