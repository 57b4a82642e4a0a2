"""Starts a shard host accepts while a turn runs: committed at once, Pending, run by the next turn.

A client's start waits for its commit (the guarantee of every ``TaskHub`` call). Through the
turn loop, a start that arrives while a turn runs waits for the rest of that turn, then for a
turn of its own: staging it, running the orchestrator's first episode, committing. A program
that starts its instances one at a time in a loop (``for x in xs: hub.start_new(...)``) pays
that for every start, while the hub is busy running the instances it started before.

So a *fresh* start (a client's start of an id the client made up, which no record in the file
can have; see ``Message.fresh``) that arrives while a turn runs is accepted here instead, as a
scheduled start due now is: in one small transaction of its own, the instance's row, Pending,
and its start, parked (a ``scheduled`` row). The caller is answered once that is committed;
the parked start is released at once, and the next turn starts the instance as it starts any
Pending instance whose time has come (deleting the ``scheduled`` row in its commit). Nothing
is lost in between: a host that restarts loads the parked start again, and the instance runs.

Starts that arrive while such a transaction commits go through the turn loop: many starts at
once (``asyncio.gather`` of ``start_new_async``) share the next turn's commit rather than add
one of their own (in that shape the intake's extra commits cost ~15%). A start that may not be
fresh (a retried call, a host Ray restarted, a start of a given id, a scheduled one) or that
cannot be accepted (an orchestrator nobody registered, a replicated hub, whose commits must
reach the replica first) goes through the turn loop as before; so does every start while no
turn runs, which the next turn takes at once.

What a caller sees: the instance exists once ``start_new`` returns, Pending until the next turn
runs it (Durable Functions' meaning of Pending: scheduled, not yet running).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence

from orchestrations import ExecutionStarted, ShardWriteError

from ._messages import Message
from ._shard_turn import ShardTurns
from ._turn import Turn


class ShardIntake(ShardTurns):
    """Mixed into :class:`ShardHost`: fresh client starts accepted while a turn runs."""

    #: whether the turn loop is inside a turn (set by ``ShardHost._run``)
    _turning: bool = False
    #: the intake's transaction being committed, if any
    _intake_task: asyncio.Task[None] | None

    def _takes_early(self, messages: Sequence[Message], retried: bool) -> bool:
        """Whether ``messages`` (one client submit) are all fresh starts of registered
        orchestrators that this host accepts now, outside the turn loop: a turn is running and
        no intake transaction is. (While one commits, more starts are arriving at once, as
        under ``asyncio.gather``: they share the next turn's commit rather than add one.)
        Only a client marks a start ``fresh``, and only its own start of an id it made up."""
        if not (self._turning and messages) or retried or self._retries_possible or self._replication is not None:
            return False
        if self._intake_task is not None and not self._intake_task.done():
            return False  # starts arriving in a burst: the turn loop commits them together
        return all(
            m.fresh and m.due is None and isinstance(m.event, ExecutionStarted) and m.event.name in self._orchestrators
            for m in messages
        )

    async def _accept_early(self, messages: Sequence[Message]) -> None:
        """Commit ``messages`` (see :meth:`_takes_early`) as Pending instances with their starts
        parked, due now; returns once committed, raising what refused any of them. The
        transaction is a task of its own: a caller that goes away does not cut it short
        between its commit and what must follow it."""
        loop = asyncio.get_running_loop()
        futures = []
        for msg in messages:
            msg.ack = loop.create_future()
            futures.append(msg.ack)
        self._intake_task = loop.create_task(self._commit_early(list(messages)))
        for result in await asyncio.gather(*futures, return_exceptions=True):
            if isinstance(result, BaseException):
                raise result

    async def _commit_early(self, batch: list[Message]) -> None:
        """One intake transaction: each start's instance Pending, its start parked, due now
        (the writes and the after-commit steps of a turn that holds a scheduled start). If it
        fails, nothing of it stays in memory and its callers are told why."""
        turn = Turn(self.config.index)
        for msg in batch:
            assert msg.ack is not None
            inst = self._start(None, msg, turn, held=True)
            if inst is None:  # refused: its ack carries why
                continue
            msg.fresh = False  # its row is in the file from now on: a turn loads it if evicted
            msg.due = turn.now_ts
            self._hold_start(inst, msg, turn)
            turn.after.acks[msg.ack] = None
            turn.touched.add(msg.instance_id)
            turn.after.touched.append(msg.instance_id)
        try:
            await self._commit(turn)
        except BaseException as exc:
            for iid in turn.touched:
                self._parking.forget_start(iid)
                self._evict(iid)
            error: Exception = exc if isinstance(exc, Exception) else RuntimeError(f"the shard host stopped: {exc!r}")
            if isinstance(exc, sqlite3.OperationalError):  # full disk, I/O error: nothing was written
                error = ShardWriteError(self.config.path, str(exc))
            for msg in batch:
                if msg.ack is not None and not msg.ack.done():
                    msg.ack.set_exception(error)
            if not isinstance(exc, Exception):
                raise
            return
        self.early_starts += len(turn.touched)
        started = self._settle_inside(turn.after)
        self._release(self._after_commit, turn.after, started)
