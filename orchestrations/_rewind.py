"""The rewind plan of a Failed execution: what to keep, what to deliver again, which children
to ask again. Pure.

A rewind cuts the failing episode (the last one) from history and runs it again: its incoming
events are delivered anew except the failures, so the code waits where it failed instead of
failing again. An activity without an answer is dispatched again (the runtime does that from
the kept history); a sub-orchestration without an answer is asked again: a Failed child is
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
from ._executor import is_incoming, last_episode_start
from ._history import HistoryEvent, SubOrchestrationInstanceCreated, SubOrchestrationInstanceFailed, TaskFailed

#: incoming events a rewind does not deliver again: the failures it undoes
_UNDONE = (TaskFailed, SubOrchestrationInstanceFailed)


@dataclass(frozen=True, slots=True)
class RewindPlan:
    """How to rewind one Failed execution.

    ``cut``: history from this index on is deleted (the failing episode); ``redeliver``: the
    incoming events of that episode to deliver again, in order (every one but the failures);
    ``children``: the sub-orchestrations started and unanswered in what is kept plus what is
    delivered again, each to be asked again for its result.
    """

    cut: int
    redeliver: list[HistoryEvent]
    children: list[SubOrchestrationInstanceCreated]


def plan_rewind(history: Sequence[HistoryEvent]) -> RewindPlan:
    """The :class:`RewindPlan` of a Failed execution's ``history``."""
    cut = last_episode_start(history)
    redeliver = [e for e in history[cut:] if is_incoming(e) and not isinstance(e, _UNDONE)]
    return RewindPlan(cut, redeliver, unanswered_children([*history[:cut], *redeliver]))
