"""One turn of a shard host (see DESIGN.md, "One turn of a shard host"): take a batch of
messages, group them by record (dropping duplicates, parking what is due later), run each
record in rounds (messages between records of this shard are applied in the same turn), commit
every round's writes in one transaction, and only then do what the commit promised (answer
callers, arm timers, send the outbox).

A :class:`~runtime._turn.Turn` carries one turn's clock, writes and effects through all of it.
What a turn does with one record is in the parts it is made of: ``_shard_instances``
(orchestration instances), ``_shard_entities`` (entities), ``_shard_lifecycle`` (terminate and
rewind across children, Pending instances, parked messages), ``_shard_directory`` (the records
in memory).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from typing import Any

from orchestrations import ExecutionStarted, ShardWriteError, TimerFired

from ._delivery import Outbound
from ._messages import Message, from_ts, start_key
from ._shard_directory import ShardDirectory
from ._shard_entities import ShardEntities
from ._shard_instances import ShardInstances
from ._shard_lifecycle import ShardLifecycle
from ._tracing import log_ids
from ._turn import Turn
from ._turn_state import AfterCommit, due_later, utcnow

log = logging.getLogger("ray_durable.shard")

#: Most rounds of same-shard messages one turn applies (an entity signalling itself forever
#: must not starve the shard); what is left goes through the outbox to a later turn. A
#: critical section whose orchestration and entities share a shard takes a round per entity
#: its lock request passes, then one for the grant (the entities serve its calls and unlock
#: in the holder's own runs: ``ShardInstances._process``), and with sections queued on the
#: same entities one section's unlock grants the next in the following round: 1,000 transfers
#: over 10 accounts on one shard took 282 turns (and commits) at 32 rounds, 79 at 128 (before
#: calls were served in the holder's runs). A client's call does not wait behind them
#: (``CLIENT_ROUNDS``).
MAX_LOCAL_ROUNDS = 128

#: Most rounds of a turn that answers a client: a client waits for the commit, so the work its
#: call sets off (a lock request passing entities, the rest of an orchestration) goes on in
#: the next turn, through the outbox, rather than ahead of its answer.
CLIENT_ROUNDS = 4


#: Longest a round runs records without letting the event loop take calls that arrived (a
#: client's start waits for its journal append): a round of grants can run hundreds of whole
#: critical sections (``_serve_inline``).
YIELD_SECONDS = 0.002


class ShardTurns(ShardInstances, ShardEntities, ShardLifecycle, ShardDirectory):
    """Mixed into :class:`ShardHost`: running one turn, from a batch of messages to what
    happens after its commit."""

    async def _turn(self, batch: list[Message]) -> None:
        """Apply ``batch`` and commit it in one transaction.

        Messages the turn sends to records of this same shard are applied in the same turn,
        in further rounds (up to ``MAX_LOCAL_ROUNDS``, or ``CLIENT_ROUNDS`` when a client waits
        for the turn's commit), rather than through the outbox and a
        later turn with its own commit: a lock request passing two entities of one shard, or
        an entity answering an orchestration next to it, costs no extra commit. Each round
        stages its own writes and the commit applies them in round order, so the file ends up
        exactly as if every round had been a turn of its own; the messages of the last round
        that still stay local go through the outbox as before.
        """
        self.turns += 1
        turn = Turn(self.config.index)
        acked = self._courier.take_acked()
        forget, self._forget_delivered = self._forget_delivered, []
        try:
            await self._stage_rounds(batch, turn, acked, forget)
            self._crash_point("before_commit")
            self._crash_point("error_before_commit")
            await self._commit(turn)
        except BaseException as exc:
            # Nothing of the turn is in the file: nothing of it stays in memory either (an
            # instance it started, an entity it changed), whether its commit or its staging
            # failed; each record reloads from the file when next needed.
            for iid in turn.touched:
                self._evict(iid)
            # the instances it ended live on in the file: what earlier turns started for them is
            # waited for again; what it started early is not (replay schedules it again)
            for iid, keys in turn.ended.items():
                self._activity_out.restore(iid, keys)
            self._activity_out.discard(turn.dispatched)
            self._courier.give_back_acked(acked)  # their outbox rows are still there
            self._forget_delivered[:0] = forget
            if isinstance(exc, sqlite3.OperationalError):  # full disk, I/O error: nothing was written
                raise ShardWriteError(self.config.path, str(exc)) from exc
            raise
        self._write_failures = 0
        self._journal_done(batch, turn.lost_starts)
        self._crash_point("after_commit")
        for iid in turn.ended:
            self._forget_work(iid)
        after = turn.after
        started = self._settle_inside(after)
        self._release(self._after_commit, after, started, acked)

    async def _commit(self, turn: Turn) -> None:
        """Write ``turn``'s rounds in one transaction, under the file's lock (and, with a
        replica, counted: a read that sees it waits for its sync)."""
        async with self._db_lock:
            committing = time.perf_counter()
            with self._counted():
                await self._store.commit(turn.rounds)
            self._metrics.commit_took(time.perf_counter() - committing)

    async def _stage_rounds(
        self, batch: list[Message], turn: Turn, acked: list[tuple[int, str]], forget: list[str]
    ) -> None:
        """Apply ``batch``, and the same-shard messages it sends in further rounds, staging each
        round's writes in ``turn``. The first round also deletes the outbox rows of ``acked``
        messages and the ``delivered`` records of ``forget``."""
        turn.writes.done_outbox.extend(msg_id for _, msg_id in acked)
        turn.writes.forget_delivered.extend(forget)
        rounds = CLIENT_ROUNDS if any(m.client and m.ack is not None for m in batch) else MAX_LOCAL_ROUNDS
        groups = await self._group(batch, turn)
        while True:
            self.messages += sum(map(len, groups.values()))
            self._metrics.count_messages(groups, turn.now_ts)
            await self._apply(groups, turn)
            self._start_activities_early(turn)
            local, turn.after.local = turn.after.local, []
            if not local:
                return
            if len(turn.rounds) >= rounds:
                turn.send(local, keep_local=False)
                return
            groups = {}
            self.local_messages += len(local)
            for out in local:
                if out.msg.due is not None and due_later(out.msg, turn.now_ts):
                    turn.park(out.msg, out.msg.due)  # a scheduled signal to this shard
                else:
                    groups.setdefault(out.msg.instance_id, []).append(out.msg)
            turn.next_round()
            await asyncio.sleep(0)  # calls that arrived meanwhile (a start to journal) are taken now

    async def _apply(self, groups: dict[str, list[Message]], turn: Turn) -> None:
        """Run each record's messages and stage what they write in ``turn``."""
        self._readdress_legacy(groups, turn)  # the ids it takes out were not in memory
        turn.touched.update(groups)
        await self._load_missing_instances(groups)
        await self._load_missing_entities(groups)
        paused = time.perf_counter()
        turn.unrun = set(groups)
        for iid, msgs in groups.items():
            if time.perf_counter() - paused > YIELD_SECONDS:
                await asyncio.sleep(0)  # a long round lets calls that arrived be taken (a start to journal)
                paused = time.perf_counter()
            mark = turn.mark()
            turn.unrun.discard(iid)
            turn.served.clear()
            turn.traveling.clear()
            try:
                if iid.startswith("@"):
                    self._run_entity(iid, msgs, turn)
                else:
                    await self._run_instance(iid, msgs, turn)
            except Exception as exc:
                # A bug, not a user error (those fail the instance): stage nothing of this
                # record, forget its in-memory state (it reloads from the file), refuse its
                # messages; the rest of the turn commits.
                inst = self._cache.get(iid)
                ids = log_ids(inst.trace if inst is not None else None)  # the instance's trace
                log.exception("shard %s: %s failed in a turn", self.config.index, iid, extra=ids)
                turn.rollback(mark)
                self._put_back_served(turn)
                self._evict(iid)
                self._refuse_failed(iid, msgs, exc, turn)
                turn.lost_starts.extend(m for m in msgs if m.journaled)  # answered already: kept in the journal

    def _refuse_failed(
        self, key: str, msgs: list[Message], error: Exception, turn: Turn
    ) -> None:
        """The messages of a record that failed in a turn: a client is told ``error``;
        another shard's are let go (they are recorded as delivered, so sending them again
        would change nothing) and, to an entity, answered as :meth:`_refuse` does."""
        if key.startswith("@"):
            self._refuse(key, msgs, error, turn)
            return
        for msg in msgs:
            if msg.ack is not None:
                turn.after.acks[msg.ack] = error if msg.client else None

    def _start_activities_early(self, turn: Turn) -> None:
        """Dispatch the turn's activities while its commit is being written, not after it.

        Activities run at least once: one started by a turn whose commit is then lost is
        simply scheduled again when its instance replays, and its result cannot overtake the
        commit (the next turn starts after this one). So the activity's run and the fsync
        overlap instead of adding up. Instances that ended or were replaced this turn drop
        their outstanding activities first, so a new execution's are not forgotten (their
        timers go once the commit is written). The turn keeps what it dispatched and what it
        dropped, for a failed commit to undo (see :meth:`_turn`).
        """
        after = turn.after
        for iid in after.forgotten:
            turn.ended.setdefault(iid, set()).update(self._activity_out.forget(iid))
        after.forgotten.clear()
        self._activity_out.dispatch(after.activities)
        turn.dispatched.extend(after.activities)
        after.activities.clear()

    def _stage_outgoing(self, msg: Message, turn: Turn) -> None:
        """Send ``msg``: to a record of this shard in the turn's next round, otherwise through
        the outbox of this turn (sent after the commit)."""
        turn.send([self._outgoing(msg)])

    async def _group(
        self, batch: list[Message], turn: Turn
    ) -> dict[str, list[Message]]:
        """Group by instance, dropping duplicates of messages delivered before, and parking
        those due later (a start due later is parked by ``_run_instance``, which also makes its
        instance Pending).

        A client's start is de-duplicated by its execution id instead (see ``_start``), which
        keeps the ``delivered`` table, and its random-key inserts, off the start path. Only a
        host that Ray restarted can receive a start again (a call retried after its
        predecessor died); it also looks the start up under :func:`start_key`, where an
        execution is kept once the instance row no longer names it (continue-as-new, replaced,
        purged)."""
        remote = [m.msg_id for m in batch if m.msg_id is not None and not (m.from_self or m.parked or _client_start(m))]
        if self._retries_possible:
            remote += [start_key(e) for m in batch if (e := _started_execution(m)) is not None]
        seen = await self._store.seen_messages(remote) if remote else set()
        groups: dict[str, list[Message]] = {}
        now_ts = turn.now_ts
        for msg in batch:
            if msg.parked and msg.msg_id is not None:
                turn.writes.done_scheduled.append(msg.msg_id)
            elif (started := _started_execution(msg)) is not None:
                if seen and start_key(started) in seen:
                    if msg.ack is not None:
                        turn.after.acks[msg.ack] = None  # applied by this host's predecessor
                    continue
            elif msg.msg_id is not None:
                if msg.from_self:
                    turn.writes.done_outbox.append(msg.msg_id)
                elif msg.msg_id in seen:
                    if msg.ack is not None:
                        turn.after.acks[msg.ack] = None
                    continue
                else:
                    seen.add(msg.msg_id)
                    turn.writes.delivered.append(msg.msg_id)
            if msg.due is not None and due_later(msg, now_ts) and not isinstance(msg.event, ExecutionStarted):
                turn.park(msg, msg.due)
                if msg.ack is not None:
                    turn.after.acks[msg.ack] = None
                continue
            groups.setdefault(msg.instance_id, []).append(msg)
        return groups

    def _outgoing(self, msg: Message) -> Outbound:
        return self._courier.prepare(msg)

    def _forget_work(self, iid: str) -> None:
        """The instance ended or was replaced (committed): its timers and metrics are moot (its
        late activity results were, as the turn dispatched its activities)."""
        self._metrics.forget(iid)
        for handle in self._timer_handles.pop(iid, {}).values():
            handle.cancel()

    def _settle_inside(self, after: AfterCommit) -> list[tuple[asyncio.Future[Any], Any]]:
        """At once after the turn's commit, what stays inside the host: arm its timers, hold
        what it parked, let go of finished instances and bound the directory of activations
        (the next turn must find these as the commit left them). Returns the answers of
        ``wait_for_orchestration_start`` callers, taken from the records as this commit left
        them, for :meth:`_after_commit` to give."""
        started = self._start_answers(after.touched) if self._start_waiters else []
        for iid, exec_id, timer_id, fire_at in after.timers:
            self._arm_timer(iid, exec_id, timer_id, fire_at)
        if after.parked or after.unparked:
            self._parking.discard(after.unparked)
            self._parking.add(after.parked)
        for iid, _ in after.finished:
            inst = self._cache.get(iid)
            if inst is not None and inst.status.is_terminal:
                # a finished instance is rarely touched again: its input and output stay in the
                # file, not in host memory
                del self._cache[iid]
        self._bound_directory(after.touched)
        return started

    def _after_commit(
        self, after: AfterCommit, started: list[tuple[asyncio.Future[Any], Any]], acked: list[tuple[int, str]]
    ) -> None:
        """Once the turn's commit may be told (durable; with ``durability="replicated"``,
        replicated): answer its callers, send its outbox, answer waiters of what it started
        (``started``) or ended, and let receivers forget the messages whose outbox rows it
        deleted (``acked``).

        The last waits for the commit like the rest: a receiver that forgot a message whose
        deletion a node's loss then took back would apply it again when the restored outbox
        sends it once more."""
        self._courier.acked_deleted(acked)
        for future, error in after.acks.items():
            if not future.done():
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)
        self._courier.deliver(after.outbox)
        for future, row in started:
            if not future.done():
                future.set_result(row)
        for iid, row in after.finished:
            for future in self._waiters.get(iid, []):
                if not future.done():
                    future.set_result(row)  # the committed row: waiters answer without a read

    def _arm_timer(self, iid: str, exec_id: str, timer_id: int, fire_at: float) -> None:
        loop = asyncio.get_running_loop()
        delay = max(0.0, fire_at - time.time())
        handle = loop.call_later(delay, self._timer_due, iid, exec_id, timer_id, fire_at)
        self._timer_handles.setdefault(iid, {})[timer_id] = handle

    def _timer_due(self, iid: str, exec_id: str, timer_id: int, fire_at: float) -> None:
        self._enqueue(Message(iid, TimerFired(utcnow(), timer_id, from_ts(fire_at)), execution_id=exec_id))


def _started_execution(msg: Message) -> str | None:
    """The execution id of a client's start, or ``None`` for any other message."""
    return msg.event.execution_id if msg.client and isinstance(msg.event, ExecutionStarted) else None


def _client_start(msg: Message) -> bool:
    return _started_execution(msg) is not None
