"""The shard host: one async Ray actor that owns one SQLite shard and hosts the virtual actors
(orchestration instances) whose ids hash to it.

One turn: take every waiting message, run each instance's executor on its messages, commit all
of it in one transaction, and only then dispatch activities, arm timers, deliver the outbox and
answer clients. See DESIGN.md, "One turn of a shard host".

This module is the actor: its start and recovery, its entry points, the turn loop and what
happens around the commit. What a turn does with one record is in its parts:
``_shard_instances`` (orchestration instances), ``_shard_entities`` (entities),
``_shard_lifecycle`` (terminate and rewind across children, Pending instances, parked messages);
the read paths are in ``_shard_queries``. ``_shard_base`` declares what the parts share.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import ray

from orchestrations import ExecutionStarted, ShardWriteError, TimerFired
from orchestrations._registry import OrchestratorSpec, merge_orchestrators

from ._activities import ActivityCall, ActivityDispatcher
from ._cache import InstanceCache
from ._codec import decode, encode
from ._delivery import Courier, Outbound
from ._entity_host import EntityRecord
from ._messages import Message, from_ts, start_key, to_ts
from ._parking import Parking
from ._shard_base import ShardConfig
from ._shard_clients import ShardClients
from ._shard_entities import ShardEntities
from ._shard_instances import ShardInstances
from ._shard_lifecycle import ShardLifecycle
from ._shard_queries import ShardQueries
from ._store import ShardStore, TurnWrites
from ._turn_state import AfterCommit, due_later, utcnow
from ._watchdog import EpisodeWatch
from ._wire import new_token, serve

log = logging.getLogger("ray_durable.shard")

#: Most rounds of same-shard messages one turn applies (an entity signalling itself forever
#: must not starve the shard); what is left goes through the outbox to a later turn. A
#: critical section whose orchestration and entities share a shard takes about a dozen rounds
#: (lock, pass the lock on, grant, then a request and its answer per call, unlock): at 8 it
#: needed a second turn and commit, while everyone queued behind its locks waited.
MAX_LOCAL_ROUNDS = 32

#: How often an idle host checks that its file is still there (a commit checks every time).
FILE_CHECK_SECONDS = 2.0


class ShardHost(ShardInstances, ShardEntities, ShardLifecycle, ShardQueries, ShardClients):
    """Hosts the orchestration instances of one shard. Use as a Ray async actor."""

    def __init__(self, config: ShardConfig) -> None:
        self.config = config
        restarted = _restarted_by_ray()
        self._store = ShardStore(
            config.path, config.hub, config.index, config.num_shards, config.synchronous, config.hub_id,
            # a host Ray restarted had its file open before: it is never created again
            create=config.create and not restarted,
        )
        self._start_lock = asyncio.Lock()
        self._last_num = 0
        self._mailbox: list[Message] = []
        self._wake = asyncio.Event()
        #: ids of ``delivered`` records the next turn deletes (their senders cannot resend them)
        self._forget_delivered: list[str] = []
        #: turns in a row whose commit could not be written (the retry backs off with it)
        self._write_failures = 0
        self._cache = InstanceCache()
        self._entities: OrderedDict[str, EntityRecord] = OrderedDict()
        self._entity_specs: dict[str, Any] = {}
        self._orchestrators: dict[str, OrchestratorSpec] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._activity_out = ActivityDispatcher(config.hub, self._enqueue_many, self._spawn)
        #: armed timers: instance -> {timer id: handle}
        self._timer_handles: dict[str, dict[int, asyncio.TimerHandle]] = {}
        self._courier = Courier(config.hub, config.index, config.num_shards, self._enqueue)
        self._waiters: dict[str, list[asyncio.Future[Any]]] = {}
        #: ``wait_for_orchestration_start`` callers, by instance
        self._start_waiters: dict[str, list[asyncio.Future[Any]]] = {}
        self._parking = Parking(self._enqueue_many)
        #: the writes of the turn being run, by round (see ``_current_history``)
        self._rounds: list[TurnWrites] = []
        self._db_lock = asyncio.Lock()
        self._peer_server: asyncio.Server | None = None
        self._peer_addr: tuple[str, int] = ("", 0)
        self._peer_token = b""
        self._loop_task: asyncio.Task[None] | None = None
        self._file_watch: asyncio.Task[None] | None = None
        #: Ray restarted this host: a client's call its predecessor applied may come again
        self._retries_possible = False
        #: counters for ``stats()``: turns, messages applied (of them, in-turn same-shard
        #: ones), calls received (client submits and peer batches), peer batches that came
        #: through a Ray call rather than a connection
        self.turns = self.messages = self.local_messages = self.calls = self.ray_deliveries = 0
        self.failed_commits = 0
        seconds = config.slow_episode_seconds
        self._watch = EpisodeWatch(seconds) if seconds is not None else None
        if restarted:
            # Nobody may call this host for a long time (its instances wait on timers, its
            # outbox holds answers others wait for): it recovers at once, by itself.
            ray.get_runtime_context().current_actor.recover.remote()

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self, registry_blob: bytes) -> int:
        """Open the store, install and keep the registry, recover pending work and start the
        turn loop. Returns the shard index. (A host Ray restarted starts by itself.)"""
        await self._ensure_started()
        await self.set_registry(registry_blob)
        return self.config.index

    async def recover(self) -> None:
        """Open the store and resume pending work; a host Ray restarted calls this on itself
        as soon as it is up. A failure is logged (it is raised again to every later caller)."""
        try:
            await self._ensure_started()
        except Exception:
            log.exception("shard %s: the restarted host could not recover", self.config.index)

    async def _ensure_started(self) -> None:
        """Open the store and recover, once: activities without a result are dispatched again,
        timers armed again, the outbox sent again, parked messages held again; instances are
        replayed when next needed."""
        if self._loop_task is not None:
            return
        async with self._start_lock:
            if self._loop_task is not None:
                return
            self._retries_possible = _restarted_by_ray()
            self._activity_out.parallelism = max(1, int(ray.cluster_resources().get("CPU", 1)))
            await self._store.open(self.config.lock_timeout)
            if self.config.warm_worker:  # only once the file opened: a refused open spawns nothing
                # created with the first batch it could take; until it is up, this host runs
                # small batches itself, unless Ray restarted it (an activity may have crashed it)
                self._activity_out.start_warm_worker(run_here_meanwhile=not self._retries_possible)
            self._peer_token = new_token()
            self._peer_server, self._peer_addr = await serve(self._peer_token, self._on_peer_batch)
            self._last_num = await self._store.last_instance_num()
            saved = await self._store.load_registry()
            if saved is not None:
                self._install_registry(saved)
            await self._move_legacy_entities()
            activities, timers, outbox = await self._store.pending_work()
            self._activity_out.dispatch([ActivityCall(r[0], r[1], r[2], r[3], r[4]) for r in activities])
            for iid, exec_id, timer_id, fire_at in timers:
                self._arm_timer(iid, exec_id, timer_id, fire_at)
            self._courier.deliver([Outbound(m, d, Message.from_bytes(b), b) for m, d, b in outbox])
            await self._load_parked()
            self._loop_task = asyncio.get_running_loop().create_task(self._run())
            self._file_watch = asyncio.get_running_loop().create_task(self._watch_file())

    async def _watch_file(self) -> None:
        """Check every ``FILE_CHECK_SECONDS`` that the shard file is still the one opened (each
        commit checks too): an idle host whose file was deleted or replaced stops serving reads
        from it, and says so, without waiting for its next commit."""
        while True:
            await asyncio.sleep(FILE_CHECK_SECONDS)
            try:
                self._store.check_file()
            except Exception as exc:
                log.error("shard %s: %s", self.config.index, exc)
                return

    async def set_registry(self, registry_blob: bytes) -> None:
        """Add the orchestrators, activities and entities of a cloudpickled registry snapshot
        to what this host runs, and keep the result in the shard file for a restart.

        Registries merge by name (a name registered again takes the new code); nothing is
        removed, so a driver that registers only part of the code, or none (a monitor, the
        CLI), cannot take away what running instances need.
        """
        await self._ensure_started()
        merged = self._install_registry(registry_blob, merge=True)
        async with self._db_lock:
            await self._store.save_registry(merged)

    def _install_registry(self, registry_blob: bytes, merge: bool = False) -> bytes:
        """Install a registry snapshot (merged into the current one if ``merge``); returns
        the snapshot now installed, encoded."""
        orchestrators, activities, entity_specs, version = decode(registry_blob)
        # entity names are case-insensitive; a registry saved before that was keyed as written
        entity_specs = {name.lower(): spec for name, spec in entity_specs.items()}
        if merge:
            orchestrators = merge_orchestrators(self._orchestrators, orchestrators)  # by name and version
            activities = {**self._activity_out.specs, **activities}
            entity_specs = {**self._entity_specs, **entity_specs}
            registry_blob = encode((orchestrators, activities, entity_specs, version), "registry")
        self._orchestrators, self._entity_specs = orchestrators, entity_specs
        self._activity_out.set_registry(activities, version)
        return registry_blob

    def _crash_point(self, point: str) -> None:
        """Fault injection for tests: die here, once per shard and point (a marker file); at a
        point named ``error_...``, raise instead (a turn that fails, in a host that lives on)."""
        if point in self.config.crash_points and self.config.crash_marker_dir:
            marker = os.path.join(self.config.crash_marker_dir, f"{point}-{self.config.index}")
            if not os.path.exists(marker):
                with open(marker, "w") as f:
                    f.write(str(os.getpid()))
                if point.startswith("error_"):
                    raise RuntimeError(f"fault injected at {point} (shard {self.config.index})")
                os._exit(17)

    async def close(self) -> None:
        """Stop the loop and close the store (pending work stays on disk)."""
        for task in (self._loop_task, self._file_watch):
            if task is not None:
                task.cancel()
        if self._peer_server is not None:
            self._peer_server.close()
        self._close_client_servers()
        self._courier.close()
        self._parking.close()
        for handles in self._timer_handles.values():
            for handle in handles.values():
                handle.cancel()
        async with self._db_lock:
            await self._store.close()

    # -- client entry points -----------------------------------------------------------------------

    async def submit(self, messages: Sequence[Message], retried: bool = False) -> None:
        """Apply client messages (start, raise, terminate, suspend, resume); returns once they
        are committed, raising the error that refused any of them.

        ``retried``: the client sent them before over a connection that dropped before the
        answer, so this host may have applied them already: from now on it looks client
        starts up under their ``start:`` keys as a restarted host does (other messages are
        always de-duplicated by their ids)."""
        await self._ensure_started()
        if retried:
            self._retries_possible = True
        self.calls += 1
        loop = asyncio.get_running_loop()
        futures = []
        for msg in messages:
            msg.ack = loop.create_future()
            futures.append(msg.ack)
            self._enqueue(msg)
        results = await asyncio.gather(*futures, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def deliver(self, blobs: Sequence[bytes], forget: Sequence[str] = ()) -> None:
        """Accept messages from another shard's outbox through a Ray call (when no connection
        could be opened); returns once they are committed. ``forget``: ids of earlier messages
        the sender will never send again (their ``delivered`` records go)."""
        self.ray_deliveries += 1
        self._forget_delivered.extend(forget)
        await self.submit(self._decode_batch(blobs))

    async def peer_address(self) -> tuple[str, int, bytes]:
        """Where other shard hosts send their outbox batches: (host, port, token)."""
        await self._ensure_started()
        return (*self._peer_addr, self._peer_token)

    async def _on_peer_batch(self, payload: tuple[Sequence[bytes], Sequence[str]]) -> None:
        """A batch from another shard's outbox, over its connection: its messages and the ids
        of earlier ones it may forget (see :meth:`deliver`); answered once committed."""
        blobs, forget = payload
        self._forget_delivered.extend(forget)
        await self.submit(self._decode_batch(blobs))

    def _decode_batch(self, blobs: Sequence[bytes]) -> list[Message]:
        """The messages of a batch from another shard. One that cannot be decoded (a class its
        code no longer has, a corrupt row) is dropped with an error in the log, not refused:
        refused, it would come back for ever ahead of everything its sender sends after it."""
        msgs = []
        for blob in blobs:
            try:
                msgs.append(Message.from_bytes(blob))
            except Exception as exc:
                log.error("shard %s: a message from another shard cannot be decoded; dropped: %r",
                          self.config.index, exc)
        return msgs

    def fail_next_commits(self, count: int) -> None:
        """Fault injection for tests: the next ``count`` commits fail as on a full disk."""
        self._store.failing_commits = count

    def pid(self) -> int:
        """This host's process id (for fault-injection tests)."""
        return os.getpid()

    def get_config(self) -> ShardConfig:
        """This shard's settings (used by ``TaskHub.connect``)."""
        return self.config

    async def stats(self) -> dict[str, int]:
        """Counters for tests and benchmarks."""
        return {
            "turns": self.turns,
            "messages": self.messages,
            "local_messages": self.local_messages,
            "calls": self.calls,
            "ray_deliveries": self.ray_deliveries,
            "cached": len(self._cache),
            "entities_cached": len(self._entities),
            "outstanding": self._activity_out.count(),
            "slow_episodes": self._watch.slow_episodes if self._watch is not None else 0,
            "warm_worker_connected": int(self._activity_out.warm_worker_connected),
            "parked": len(self._parking),
            "failed_commits": self.failed_commits,
        }

    # -- the turn loop -----------------------------------------------------------------------------

    def _enqueue(self, msg: Message) -> None:
        self._mailbox.append(msg)
        self._wake.set()

    def _enqueue_many(self, msgs: list[Message]) -> None:
        self._mailbox.extend(msgs)
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._mailbox = self._mailbox, []
            if not batch:
                continue
            try:
                await self._turn(batch)
            except Exception as exc:
                log.exception("shard %s: turn failed", self.config.index)
                for msg in batch:
                    if msg.ack is not None and not msg.ack.done():
                        msg.ack.set_exception(exc)
                if isinstance(exc, ShardWriteError):
                    self._retry_unwritten(batch)

    def _retry_unwritten(self, batch: list[Message]) -> None:
        """The turn's commit could not be written: the callers among its messages were told so
        (their calls were not applied); the rest (activity results, fired timers, messages of
        this host's own outbox) have no one to tell and would be lost, so they are applied
        again later, backing off while the file cannot be written."""
        self._write_failures += 1
        self.failed_commits += 1
        again = [msg for msg in batch if msg.ack is None]
        if again:
            delay = min(0.25 * 2 ** min(self._write_failures, 6), 10.0)
            asyncio.get_running_loop().call_later(delay, self._enqueue_many, again)

    async def _turn(self, batch: list[Message]) -> None:
        """Apply ``batch`` and commit it in one transaction.

        Messages the turn sends to records of this same shard are applied in the same turn,
        in further rounds (up to ``MAX_LOCAL_ROUNDS``), rather than through the outbox and a
        later turn with its own commit: a lock request passing two entities of one shard, or
        an entity answering an orchestration next to it, costs no extra commit. Each round
        stages its own writes and the commit applies them in round order, so the file ends up
        exactly as if every round had been a turn of its own; the messages of the last round
        that still stay local go through the outbox as before.
        """
        self.turns += 1
        now = utcnow()
        after = AfterCommit()
        rounds: list[TurnWrites] = []
        self._rounds = rounds
        touched: set[str] = set()
        acked = self._courier.take_acked()
        forget, self._forget_delivered = self._forget_delivered, []
        try:
            await self._stage_rounds(batch, now, rounds, touched, after, acked, forget)
            self._crash_point("before_commit")
            self._crash_point("error_before_commit")
            async with self._db_lock:
                await self._store.commit(rounds)
        except BaseException as exc:
            # Nothing of the turn is in the file: nothing of it stays in memory either (an
            # instance it started, an entity it changed), whether its commit or its staging
            # failed; each record reloads from the file when next needed.
            for iid in touched:
                self._evict(iid)
                self._activity_out.forget(iid)  # started early; replay schedules them again
            self._courier.give_back_acked(acked)  # their outbox rows are still there
            self._forget_delivered[:0] = forget
            if isinstance(exc, sqlite3.OperationalError):  # full disk, I/O error: nothing was written
                raise ShardWriteError(self.config.path, str(exc)) from exc
            raise
        self._write_failures = 0
        self._courier.acked_deleted(acked)
        self._crash_point("after_commit")
        self._after_commit(after)

    async def _stage_rounds(
        self, batch: list[Message], now: datetime, rounds: list[TurnWrites], touched: set[str], after: AfterCommit,
        acked: list[tuple[int, str]], forget: list[str],
    ) -> None:
        """Apply ``batch``, and the same-shard messages it sends in further rounds, staging each
        round's writes in ``rounds``; every record the turn runs is added to ``touched``. The
        first round also deletes the outbox rows of ``acked`` messages and the ``delivered``
        records of ``forget``."""
        groups: dict[str, list[Message]] = {}
        while True:
            w = TurnWrites()
            if not rounds:
                w.done_outbox.extend(msg_id for _, msg_id in acked)
                w.forget_delivered.extend(forget)
                groups = await self._group(batch, now, w, after)
            rounds.append(w)
            self.messages += sum(map(len, groups.values()))
            await self._apply(groups, now, w, after, touched)
            self._start_activities_early(after)
            local, after.local = after.local, []
            if not local:
                return
            if len(rounds) >= MAX_LOCAL_ROUNDS:
                self._stage_outs(local, w, after, keep_local=False)
                return
            groups = {}
            self.local_messages += len(local)
            for out in local:
                if out.msg.due is not None and due_later(out.msg, to_ts(now)):
                    self._park(out.msg, out.msg.due, w, after)  # a scheduled signal to this shard
                else:
                    groups.setdefault(out.msg.instance_id, []).append(out.msg)

    async def _apply(
        self, groups: dict[str, list[Message]], now: datetime, w: TurnWrites, after: AfterCommit, touched: set[str]
    ) -> None:
        """Run each record's messages and stage what they write in ``w``."""
        self._readdress_legacy(groups, now, w, after)  # the ids it takes out were not in memory
        touched.update(groups)
        await self._load_missing_instances(groups)
        await self._load_missing_entities(groups)
        for iid, msgs in groups.items():
            w_mark, after_mark = w.mark(), after.mark()
            try:
                if iid.startswith("@"):
                    self._run_entity(iid, msgs, now, w, after)
                else:
                    await self._run_instance(iid, msgs, now, w, after)
            except Exception as exc:
                # A bug, not a user error (those fail the instance): stage nothing of this
                # record, forget its in-memory state (it reloads from the file), refuse its
                # messages; the rest of the turn commits.
                log.exception("shard %s: %s failed in a turn", self.config.index, iid)
                w.rollback(w_mark)
                after.rollback(after_mark)
                self._evict(iid)
                self._refuse_failed(iid, msgs, exc, now, w, after)

    def _refuse_failed(
        self, key: str, msgs: list[Message], error: Exception, now: datetime, w: TurnWrites, after: AfterCommit
    ) -> None:
        """The messages of a record that failed in a turn: a client is told ``error``;
        another shard's are let go (they are recorded as delivered, so sending them again
        would change nothing) and, to an entity, answered as :meth:`_refuse` does."""
        if key.startswith("@"):
            self._refuse(key, msgs, error, now, w, after)
            return
        for msg in msgs:
            if msg.ack is not None:
                after.acks[msg.ack] = error if msg.client else None

    def _start_activities_early(self, after: AfterCommit) -> None:
        """Dispatch the turn's activities while its commit is being written, not after it.

        Activities run at least once: one started by a turn whose commit is then lost is
        simply scheduled again when its instance replays, and its result cannot overtake the
        commit (the next turn starts after this one). So the activity's run and the fsync
        overlap instead of adding up. Instances that ended or were replaced this turn drop
        their outstanding work first, so a new execution's activities are not forgotten.
        """
        for iid in after.forgotten:
            self._forget_work(iid)
        after.forgotten.clear()
        self._activity_out.dispatch(after.activities)
        after.activities.clear()

    def _stage_outgoing(self, msg: Message, w: TurnWrites, after: AfterCommit) -> None:
        """Send ``msg``: to a record of this shard in the turn's next round, otherwise through
        the outbox of this turn (sent after the commit)."""
        self._stage_outs([self._outgoing(msg)], w, after)

    def _stage_outs(self, outs: list[Outbound], w: TurnWrites, after: AfterCommit, keep_local: bool = True) -> None:
        for out in outs:
            if keep_local and out.dest == self.config.index:
                after.local.append(out)
            else:
                w.add_outbox.append((out.msg_id, out.dest, out.blob))
                after.outbox.append(out)

    async def _group(
        self, batch: list[Message], now: datetime, w: TurnWrites, after: AfterCommit
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
        now_ts = to_ts(now)
        for msg in batch:
            if msg.parked and msg.msg_id is not None:
                w.done_scheduled.append(msg.msg_id)
            elif (started := _started_execution(msg)) is not None:
                if seen and start_key(started) in seen:
                    if msg.ack is not None:
                        after.acks[msg.ack] = None  # applied by this host's predecessor
                    continue
            elif msg.msg_id is not None:
                if msg.from_self:
                    w.done_outbox.append(msg.msg_id)
                elif msg.msg_id in seen:
                    if msg.ack is not None:
                        after.acks[msg.ack] = None
                    continue
                else:
                    seen.add(msg.msg_id)
                    w.delivered.append(msg.msg_id)
            if msg.due is not None and due_later(msg, now_ts) and not isinstance(msg.event, ExecutionStarted):
                self._park(msg, msg.due, w, after)
                if msg.ack is not None:
                    after.acks[msg.ack] = None
                continue
            groups.setdefault(msg.instance_id, []).append(msg)
        return groups

    def _outgoing(self, msg: Message) -> Outbound:
        return self._courier.prepare(msg)

    def _forget_work(self, iid: str) -> None:
        """The instance ended or was replaced: late activity results and timers are moot."""
        self._activity_out.forget(iid)
        for handle in self._timer_handles.pop(iid, {}).values():
            handle.cancel()

    def _evict(self, key: str) -> None:
        """Forget an instance's or entity's in-memory state; it reloads from the file."""
        self._entities.pop(key, None)
        inst = self._cache.pop(key, None)
        if inst is not None and inst.executor is not None:
            inst.executor.close()

    # -- after the commit ----------------------------------------------------------------------------

    def _after_commit(self, after: AfterCommit) -> None:
        for future, error in after.acks.items():
            if not future.done():
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)
        for iid, exec_id, timer_id, fire_at in after.timers:
            self._arm_timer(iid, exec_id, timer_id, fire_at)
        self._courier.deliver(after.outbox)
        if after.parked or after.unparked:
            self._parking.discard(after.unparked)
            self._parking.add(after.parked)
        if self._start_waiters:
            self._answer_start_waiters(after.touched)
        for iid, row in after.finished:
            for future in self._waiters.get(iid, []):
                if not future.done():
                    future.set_result(row)  # the committed row: waiters answer without a read
            inst = self._cache.get(iid)
            if inst is not None and inst.status.is_terminal:
                # a finished instance is rarely touched again: its input and output stay in the
                # file, not in host memory
                del self._cache[iid]
        if self.config.always_replay:
            for iid in after.touched:
                inst = self._cache.get(iid)
                if inst is not None and inst.executor is not None:
                    inst.executor.close()
                    inst.executor = None
        while self._cache.over(self.config.cache_size, self.config.cache_bytes):
            _, inst = self._cache.popitem(last=False)
            if inst.executor is not None:
                inst.executor.close()
        while len(self._entities) > self.config.cache_size:
            self._entities.popitem(last=False)

    def _arm_timer(self, iid: str, exec_id: str, timer_id: int, fire_at: float) -> None:
        loop = asyncio.get_running_loop()
        delay = max(0.0, fire_at - time.time())
        handle = loop.call_later(delay, self._timer_due, iid, exec_id, timer_id, fire_at)
        self._timer_handles.setdefault(iid, {})[timer_id] = handle

    def _timer_due(self, iid: str, exec_id: str, timer_id: int, fire_at: float) -> None:
        self._enqueue(Message(iid, TimerFired(utcnow(), timer_id, from_ts(fire_at)), execution_id=exec_id))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _restarted_by_ray() -> bool:
    """Whether this actor process is a restart Ray made after the previous one died."""
    try:
        return bool(ray.get_runtime_context().was_current_actor_reconstructed)
    except Exception:  # not in an actor (a host built directly, in a test)
        return False


def _started_execution(msg: Message) -> str | None:
    """The execution id of a client's start, or ``None`` for any other message."""
    return msg.event.execution_id if msg.client and isinstance(msg.event, ExecutionStarted) else None


def _client_start(msg: Message) -> bool:
    return _started_execution(msg) is not None
