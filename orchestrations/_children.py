"""Which sub-orchestrations an execution started, read from its history. Pure.

The runtime asks these questions when an instance's life reaches its children: a recursive
terminate stops the children still open, a recursive purge deletes every child the history
names, a rewind re-asks the children whose answer the parent has not kept. History is the
one record of them (a child id is recorded in ``SubOrchestrationInstanceCreated``), so the
answer is the same on every shard host and after every restart.
"""

from __future__ import annotations

from collections.abc import Iterable

from ._history import (
    HistoryEvent,
    SubOrchestrationInstanceCompleted,
    SubOrchestrationInstanceCreated,
    SubOrchestrationInstanceFailed,
)

#: the only event types these functions read (a runtime may load just these rows)
CHILD_EVENT_TYPES = (
    SubOrchestrationInstanceCreated.__name__,
    SubOrchestrationInstanceCompleted.__name__,
    SubOrchestrationInstanceFailed.__name__,
)


def children_of(history: Iterable[HistoryEvent]) -> list[str]:
    """Every sub-orchestration id ``history`` started, in the order first started, once each
    (a child retried under the same id is listed once)."""
    return list(dict.fromkeys(e.instance_id for e in history if isinstance(e, SubOrchestrationInstanceCreated)))


def unanswered_children(history: Iterable[HistoryEvent]) -> list[SubOrchestrationInstanceCreated]:
    """The ``SubOrchestrationInstanceCreated`` events of ``history`` that no completion or
    failure answers (matched by task id), in history order."""
    created: dict[int, SubOrchestrationInstanceCreated] = {}
    for event in history:
        if isinstance(event, SubOrchestrationInstanceCreated):
            created[event.event_id] = event
        elif isinstance(event, (SubOrchestrationInstanceCompleted, SubOrchestrationInstanceFailed)):
            created.pop(event.task_scheduled_id, None)
    return list(created.values())


def open_children(history: Iterable[HistoryEvent]) -> list[str]:
    """The ids of the sub-orchestrations ``history`` started and has no answer from: the
    children that may still be running (those a recursive terminate stops), once each."""
    return list(dict.fromkeys(e.instance_id for e in unanswered_children(history)))
