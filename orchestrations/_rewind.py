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
from ._executor import is_incoming, is_scheduling
from ._history import (
    HistoryEvent,
    OrchestratorStarted,
    SubOrchestrationInstanceCreated,
    SubOrchestrationInstanceFailed,
    TaskFailed,
)

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
    return RewindPlan(cut, redeliver, unanswered_children([*history[:cut], *redeliver]))


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
