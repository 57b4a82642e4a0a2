"""One turn of a shard host as an object: :class:`Turn` owns the turn's clock, the writes of
each of its rounds (committed together, in round order, in one transaction), the side effects
it does around that commit (:class:`~runtime._turn_state.AfterCommit`) and the records it ran.

Every part of a turn (an instance's episode, an entity's operations, a rewind, a park) takes
the one ``Turn`` and stages into it; nothing is written or sent until the host commits
``rounds`` and then does ``after``. See DESIGN.md, "One turn of a shard host".
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime

from ._activities import ActivityCall
from ._delivery import Outbound
from ._entity_host import EntityCheckpoint
from ._messages import Message, to_ts
from ._schema import ActivityRow
from ._turn_state import AfterCommit, utcnow
from ._turn_writes import TurnWrites

#: a staged timer: (instance id, execution id, timer id, when it fires as a timestamp)
TimerRow = tuple[str, str, int, float]


class Turn:
    """What one turn of shard ``shard_index`` has staged so far.

    ``now`` is the turn's one clock (every event it records carries it); ``writes`` are the
    writes of the round being run (a turn applies the messages its records send each other
    on this shard in further rounds, each staging its own :class:`TurnWrites`); ``after`` is
    what happens around the commit; ``touched`` the ids of every record the turn ran (on a
    failed commit each of them is forgotten in memory and reloads from the file).
    """

    __slots__ = (
        "after", "dispatched", "ended", "lost_starts", "now", "now_ts", "rounds", "served", "shard_index", "touched",
        "traveling", "unrun", "writes",
    )

    def __init__(self, shard_index: int, now: datetime | None = None) -> None:
        self.shard_index = shard_index
        self.now = now if now is not None else utcnow()
        self.now_ts = to_ts(self.now)
        self.after = AfterCommit()
        self.rounds: list[TurnWrites] = []
        self.touched: set[str] = set()
        #: the activities the turn started before its commit, and the instances it ended or
        #: replaced with the activities they no longer wait for: what a failed commit undoes
        self.dispatched: list[ActivityCall] = []
        self.ended: dict[str, set[tuple[str, int]]] = {}
        #: journaled starts of records that failed in this turn (see ``ShardTurns._apply``)
        self.lost_starts: list[Message] = []
        #: the entities the record being run had serve its calls at once (see
        #: ``ShardEntities._serve_inline``), each as it was before: put back if the record fails
        self.served: dict[str, EntityCheckpoint] = {}
        #: the records the record being run sent a message to in this round (a later message
        #: of it to one of them travels too: it must not overtake the earlier one)
        self.traveling: set[str] = set()
        #: the records of the round being run whose messages have not run yet
        self.unrun: set[str] = set()
        self.writes = self.next_round()

    def next_round(self) -> TurnWrites:
        """Start a new round: its writes are committed after those of every earlier round."""
        self.writes = TurnWrites()
        self.rounds.append(self.writes)
        return self.writes

    def mark(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """A point to :meth:`rollback` to, in the current round (acks are settled by the caller)."""
        return self.writes.mark(), self.after.mark()

    def rollback(self, mark: tuple[tuple[int, ...], tuple[int, ...]]) -> None:
        """Drop every write and side effect staged since ``mark``."""
        self.writes.rollback(mark[0])
        self.after.rollback(mark[1])

    def send(self, outs: list[Outbound], keep_local: bool = True) -> None:
        """Send ``outs``: those to a record of this shard in the next round (if
        ``keep_local``), the rest through this turn's outbox (sent after the commit)."""
        for out in outs:
            if keep_local and out.dest == self.shard_index:
                self.after.local.append(out)
            else:
                self.writes.add_outbox.append((out.msg_id, out.dest, out.blob))
                self.after.outbox.append(out)

    def stage_work(self, activities: list[ActivityCall], timers: list[TimerRow]) -> None:
        """Record activities and timers in this turn's commit; dispatch and arm them after it."""
        self.writes.add_activities.extend(
            ActivityRow(c.instance_id, c.execution_id, c.task_id, c.name, c.input_blob) for c in activities
        )
        self.writes.add_timers.extend(timers)
        self.after.activities.extend(activities)
        self.after.timers.extend(timers)

    def park(self, msg: Message, due: float) -> None:
        """Keep ``msg`` in this turn's commit until ``due`` (a ``scheduled`` row), then apply it
        (its id is set here if it has none)."""
        if msg.msg_id is None:
            msg.msg_id = uuid.uuid4().hex
        msg.due = due
        self.writes.add_scheduled.append((msg.msg_id, due, msg.to_bytes()))
        self.after.parked.append(replace(msg, ack=None))
