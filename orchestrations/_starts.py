"""What a start does to the instance id it names, and what a rewind may do: the rules, as pure
functions of the instance's current status. The shard host asks them and then writes what they
decide; tests ask them directly, without Ray.

Statuses are the names of the runtime's ``OrchestrationRuntimeStatus`` (``"Running"``,
``"Completed"``, ...); ``None`` means there is no instance with that id (never started, or
purged).
"""

from __future__ import annotations

from enum import StrEnum

from ._errors import DurableValueError, InstanceNotFoundError

#: the statuses of an instance that will not run again by itself (its id may be started anew)
FINISHED = frozenset({"Completed", "Failed", "Terminated"})
CONTINUED_AS_NEW = "ContinuedAsNew"


class StartRule(StrEnum):
    """What a start message does."""

    #: no instance has the id: a new one is created
    CREATE = "create"
    #: the id's instance is finished: a new execution replaces it (its history goes)
    REPLACE = "replace"
    #: the instance continued as new and this is its restart: its next execution
    CONTINUE = "continue"
    #: a client started a name no registry installed on the hub has: refused
    UNKNOWN_ORCHESTRATOR = "unknown orchestrator"
    #: a client's start that was applied already (a call retried): acknowledged, nothing changes
    ALREADY_APPLIED = "already applied"
    #: a continue-as-new restart of an instance terminated or replaced while it was on the way:
    #: dropped
    STALE_RESTART = "stale restart"
    #: the id's instance is Pending, Running or Suspended: refused (its parent, if any, is told)
    ALREADY_EXISTS = "already exists"

    @property
    def creates(self) -> bool:
        """Whether the start makes a new execution (else it changes nothing)."""
        return self in (StartRule.CREATE, StartRule.REPLACE, StartRule.CONTINUE)


def start_rule(
    *, registered: bool, from_client: bool, continue_as_new: bool, status: str | None,
    current_execution_id: str | None, execution_id: str,
) -> StartRule:
    """The rule for a start of execution ``execution_id`` of an orchestrator (``registered``:
    its name is known here) sent by a client (``from_client``) or by the runtime (a parent, a
    scheduled start, or ``continue_as_new``), to an id whose instance has ``status`` and runs
    ``current_execution_id`` (both ``None`` when there is none).

    Only a client's start is refused for an unknown name: a driver may start by name code it
    does not have itself, but not code nobody registered; the runtime's own starts were
    checked when they were made. A Completed, Failed or Terminated id is replaced, as in
    Durable Functions; an active one is refused.
    """
    if from_client and not registered:
        return StartRule.UNKNOWN_ORCHESTRATOR
    if status is None:
        return StartRule.CREATE
    if from_client and current_execution_id == execution_id:
        return StartRule.ALREADY_APPLIED
    if continue_as_new:
        return StartRule.CONTINUE if status == CONTINUED_AS_NEW else StartRule.STALE_RESTART
    if status not in FINISHED:
        return StartRule.ALREADY_EXISTS
    return StartRule.REPLACE


class ChildRewind(StrEnum):
    """What a child does when its rewinding parent asks it for its result again."""

    #: the child was purged: it is started again with its recorded input
    START_AGAIN = "start again"
    #: the child Failed: it is rewound in turn (and so on down)
    REWIND = "rewind"
    #: the child Completed: it answers with its output again
    ANSWER_OUTPUT = "answer output"
    #: the child was Terminated: it answers with that failure again
    ANSWER_TERMINATED = "answer terminated"
    #: the child is still active: it answers when it ends
    WAIT = "wait"


def child_rewind(status: str | None) -> ChildRewind:
    """The rule for a child whose rewinding parent asks again (see ``orchestrations._rewind``)."""
    if status is None:
        return ChildRewind.START_AGAIN
    return {
        "Failed": ChildRewind.REWIND,
        "Completed": ChildRewind.ANSWER_OUTPUT,
        "Terminated": ChildRewind.ANSWER_TERMINATED,
    }.get(status, ChildRewind.WAIT)


def rewind_refusal(instance_id: str, status: str | None) -> Exception | None:
    """Why a client may not rewind ``instance_id`` (``None``: it may; only a Failed instance
    can be rewound)."""
    if status is None:
        return InstanceNotFoundError(instance_id)
    if status != "Failed":
        return DurableValueError(f"only a Failed instance can be rewound; {instance_id!r} is {status}")
    return None
