"""The rewind plan of a Failed execution: what to keep, what to deliver again, which children
to ask again. Pure.

A rewind cuts the failing episode (the last one) from history and runs it again: its incoming
events are delivered anew except the failures, so the code waits where it failed instead of
failing again. A failure can arrive before the episode that fails: ``task_all`` waits for every
child before it raises, so a child's failure may sit in an earlier episode in which the code
scheduled nothing. The cut then reaches back to the earliest such quiet episode holding a
failure (running a quiet episode again dispatches nothing twice).

An activity without an answer is dispatched again (the runtime does that from the kept
history); a sub-orchestration without an answer is asked again: a Failed child is
rewound in turn (recursively), a purged one is started again with its recorded input, a
finished one answers with its result (its first answer may have been dropped while the parent
was Failed), and a running one answers when it ends. This is DurableTask.Core's recursive
rewind (``TaskOrchestrationDispatcher.ProcessRewindOrchestrationDecision``), on this engine's
episode records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ._children import unanswered_children
from ._errors import DurableValueError
from ._executor import is_incoming, is_scheduling
from ._history import (
    EntityLockRequested,
    EntityUnlockSent,
    HistoryEvent,
    OrchestratorStarted,
    SubOrchestrationInstanceCreated,
    SubOrchestrationInstanceFailed,
    TaskFailed,
)
from ._ids import entity_key

#: incoming events a rewind does not deliver again: the failures it undoes
_UNDONE = (TaskFailed, SubOrchestrationInstanceFailed)


@dataclass(frozen=True, slots=True)
class RewindPlan:
    """How to rewind one Failed execution.

    ``cut``: history from this index on is deleted (the failing episode, and the quiet
    episodes before it back to the earliest failure among them); ``redeliver``: the
    incoming events of the cut episodes to deliver again, in order (every one but the failures);
    ``children``: the sub-orchestrations started and unanswered in what is kept plus what is
    delivered again, each to be asked again for its result.
    """

    cut: int
    redeliver: list[HistoryEvent]
    children: list[SubOrchestrationInstanceCreated]
    #: the entities the execution had asked to lock, and not released, where the cut falls:
    #: it failed inside a critical section (or waiting for one), whose locks its failure gave
    #: up; run again from there, it would go on without them (see :func:`rewind_locks_refusal`)
    locked: tuple[str, ...] = ()


def plan_rewind(history: Sequence[HistoryEvent]) -> RewindPlan:
    """The :class:`RewindPlan` of a Failed execution's ``history``."""
    starts = _episode_starts(history)
    cut = starts[-1] if starts else len(history)
    for start, end in zip(reversed(starts[:-1]), reversed(starts[1:]), strict=True):
        episode = history[start:end]
        if any(is_scheduling(e) for e in episode):
            break
        if any(isinstance(e, _UNDONE) for e in episode):
            cut = start
    redeliver = [e for e in history[cut:] if is_incoming(e) and not isinstance(e, _UNDONE)]
    return RewindPlan(cut, redeliver, unanswered_children([*history[:cut], *redeliver]), _still_locked(history[:cut]))


def _still_locked(history: Sequence[HistoryEvent]) -> tuple[str, ...]:
    """The entities of the last lock request of ``history`` not unlocked after it (an
    orchestration holds one critical section at a time), in their canonical form: a history
    written before entity names were case-insensitive has them as they were, and its replayed
    unlocks in the canonical form."""
    locked: list[str] = []
    for event in history:
        if isinstance(event, EntityLockRequested):
            locked = [entity_key(e) for e in event.lock_set]
        elif isinstance(event, EntityUnlockSent) and (key := entity_key(event.instance_id)) in locked:
            locked.remove(key)
    return tuple(locked)


def rewind_locks_refusal(instance_id: str, plan: RewindPlan) -> Exception | None:
    """Why ``instance_id`` may not be rewound as ``plan`` says (``None``: it may): it failed
    holding the locks of a critical section, or waiting for them. Its failure released them,
    and another orchestration may have changed those entities since; run from where it failed,
    it would go on inside its section without holding them. Durable Functions does not rewind
    locks either; such an instance is started again instead."""
    if not plan.locked:
        return None
    return DurableValueError(
        f"{instance_id!r} failed inside a critical section on {list(plan.locked)}: its locks were released "
        "when it failed, and a rewind would go on without them; start it again instead (TaskHub.restart)"
    )


def _episode_starts(history: Sequence[HistoryEvent]) -> list[int]:
    """The index where each episode's records begin (its incoming events come before its
    ``OrchestratorStarted``), in order."""
    starts = []
    for i, event in enumerate(history):
        if isinstance(event, OrchestratorStarted):
            begin = i
            while begin > 0 and is_incoming(history[begin - 1]):
                begin -= 1
            starts.append(begin)
    return starts
