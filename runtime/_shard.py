"""The shard host: one async Ray actor that owns one SQLite shard and hosts the virtual actors
(orchestration instances) whose ids hash to it.

One turn: take every waiting message, run each instance's executor on its messages, commit all
of it in one transaction, and only then dispatch activities, arm timers, deliver the outbox and
answer clients. See DESIGN.md, "One turn of a shard host".

This module is the actor: its state, its start and recovery, its entry points and the loop
that takes the mailbox turn after turn. The rest is cut by concern:

- ``_shard_turn`` runs one turn (a :class:`~runtime._turn.Turn` object carries its clock,
  writes and effects), with its parts ``_shard_instances`` (orchestration instances),
  ``_shard_entities`` (entities), ``_shard_lifecycle`` (terminate and rewind across children,
  Pending instances, parked messages) and ``_shard_directory`` (the records in memory, LRU);
- ``_shard_queries`` reads committed state (on its own loop), ``_shard_clients`` serves the
  clients' connections, ``_shard_admin`` purges, cleans up, counts and injects faults.

``_shard_base`` declares what the parts share.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import ray

from orchestrations import ShardWriteError
from orchestrations._registry import OrchestratorSpec, merge_orchestrators

from . import _tracing
from ._activities import ActivityCall, ActivityDispatcher
from ._cache import InstanceCache
from ._codec import decode, encode
from ._delivery import Courier, Outbound
from ._entity_host import EntityRecord
from ._messages import Message
from ._metrics import REFRESH_SECONDS, STATUS_SQL, ShardMetrics
from ._parking import Parking
from ._shard_admin import ShardAdmin
from ._shard_base import ShardConfig
from ._shard_clients import ShardClients
from ._shard_intake import ShardIntake
from ._shard_queries import ShardQueries
from ._status import OrchestrationRuntimeStatus
from ._store import ShardStore, rows_of
from ._watchdog import EpisodeWatch
from ._wire import new_token, serve

if TYPE_CHECKING:
    from ._replication import ShardReplication

log = logging.getLogger("ray_durable.shard")

#: How often an idle host checks that its file is still there (a commit checks every time).
FILE_CHECK_SECONDS = 2.0


class ShardHost(ShardIntake, ShardQueries, ShardClients, ShardAdmin):
    """Hosts the orchestration instances of one shard. Use as a Ray async actor."""

    #: the tasks a started host runs (see ``_ensure_started``): the turn loop, the file check,
    #: the metrics' flush
    _loop_task: asyncio.Task[None] | None = None
    _file_watch: asyncio.Task[None] | None = None
    _metrics_flush: asyncio.Task[None] | None = None

    def __init__(self, config: ShardConfig) -> None:
        self.config = config
        restarted = _restarted_by_ray()
        self._replication = _replication_of(config)
        self._store = ShardStore(
            config.path if self._replication is None else self._replication.local_path, config.hub,
            config.index, config.num_shards, config.synchronous, config.hub_id,
            # a host Ray restarted had its file open before: it is never created again
            create=config.create and not restarted,
        )
        self._start_lock, self._last_num = asyncio.Lock(), 0
        self._mailbox: list[Message] = []
        self._wake = asyncio.Event()  # a message waits
        self._forget_delivered: list[str] = []  # ``delivered`` ids the next turn deletes
        #: turns in a row whose commit could not be written (the retry backs off with it)
        self._write_failures, self._cache = 0, InstanceCache()
        self._entities: OrderedDict[str, EntityRecord] = OrderedDict()
        self._entity_specs: dict[str, Any] = {}
        self._orchestrators: dict[str, OrchestratorSpec] = {}
        self._background: set[asyncio.Task[Any]] = set()
        _tracing.install_log_filter()
        _tracing.setup(config.tracing_setup)  # before this process's first span
        self._metrics = ShardMetrics(config.hub, config.index)
        self._init_intake()
        self._activity_out = ActivityDispatcher(config.hub, self._enqueue_many, self._spawn, config.tracing_setup,
                                                self._metrics)
        #: armed timers: instance -> {timer id: handle}
        self._timer_handles: dict[str, dict[int, asyncio.TimerHandle]] = {}
        self._courier = Courier(config.hub, config.index, config.num_shards, self._enqueue)
        self._waiters: dict[str, list[asyncio.Future[Any]]] = {}
        #: ``wait_for_orchestration_start`` callers, by instance
        self._start_waiters: dict[str, list[asyncio.Future[Any]]] = {}
        self._parking = Parking(self._enqueue_many)
        self._db_lock = asyncio.Lock()
        self._peer_server: asyncio.Server | None = None
        self._peer_addr: tuple[str, int] = ("", 0)
        self._peer_token = b""
        #: Ray restarted this host: a client's call its predecessor applied may come again
        self._retries_possible = False
        #: counters for ``stats()``: turns, messages applied (of them, in-turn same-shard
        #: ones), calls received (client submits and peer batches), peer batches that came
        #: through a Ray call rather than a connection
        self.turns = self.messages = self.local_messages = self.calls = self.ray_deliveries = 0
        self.failed_commits = self.early_starts = self.served_inline = 0
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
            if self._replication is not None:  # the lease, and the right file in place
                self._store.create = await self._replication.take(self.config.create)
            await self._store.open(self.config.lock_timeout)
            if self._replication is not None:
                await self._start_replication(self._replication)
            if self.config.warm_worker:  # only once the file opened: a refused open spawns nothing
                # created with the first batch it could take; until it is up, this host runs
                # small batches itself, unless Ray restarted it (an activity may have crashed it)
                self._activity_out.start_warm_worker(run_here_meanwhile=not self._retries_possible)
            self._peer_token = new_token()
            self._peer_server, self._peer_addr = await serve(self._peer_token, self._on_peer_batch)
            await self._recover()
            self._loop_task = asyncio.get_running_loop().create_task(self._run())
            self._file_watch = asyncio.get_running_loop().create_task(self._watch_file())
            if self._metrics.enabled:
                self._metrics_flush = asyncio.get_running_loop().create_task(self._flush_metrics())

    async def _start_replication(self, replication: ShardReplication) -> None:
        """Replicate the open file (what it holds is released only once a sync covers it); if
        that fails, stop Litestream, give the lease up and close the file, so a later start
        begins afresh."""
        try:
            await replication.start(before_sync=self._lose_disk_before_sync, on_fenced=_end_fenced_host)
        except BaseException:
            await replication.close()
            await self._store.close()
            raise
        assert replication.lease is not None
        self._courier.generation, self._courier.may_send = replication.lease.generation, replication.may_send

    async def _recover(self) -> None:
        """Take up what the open file holds: the instance counter, the saved registry, entities
        written before names were case-insensitive, and pending work (activities without a
        result dispatched again, timers armed again, the outbox sent again, parked messages
        held again). Nothing here needs Ray, so a host built without it (the unit suite in
        ``tests/test_shard_turns.py``) recovers the same way, then runs turns with ``_turn``."""
        self._last_num = await self._store.last_instance_num()
        saved = await self._store.load_registry()
        if saved is not None:
            self._install_registry(saved)
        with self._counted():
            await self._move_legacy_entities()
        await self._visible()  # what recovery found (and moved) is in the replica before it is sent
        activities, timers, outbox = await self._store.pending_work()
        self._activity_out.dispatch([ActivityCall(r[0], r[1], r[2], r[3], r[4]) for r in activities])
        for iid, exec_id, timer_id, fire_at in timers:
            self._arm_timer(iid, exec_id, timer_id, fire_at)
        outbound = [Outbound(m, d, Message.from_bytes(b), b) for m, d, b in outbox]
        self._release(lambda: self._courier.deliver(outbound))
        await self._load_parked()
        await self._take_up_journal()

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

    async def _flush_metrics(self) -> None:
        """Every ``REFRESH_SECONDS``, record the metrics counted since the last time and set
        the gauges again (see :meth:`ShardMetrics.flush`); when due (see
        :meth:`ShardMetrics.statuses_due`) count the file's instances by status first, on the
        read-only connection, off the turn path. A failed count is logged and tried again."""
        statuses = [s.value for s in OrchestrationRuntimeStatus]
        while True:
            turns = self.turns
            if self._metrics.statuses_due(turns):
                try:
                    counts = dict(await rows_of(self._store.reader, STATUS_SQL))
                    self._metrics.set_statuses(turns, counts, statuses)
                except Exception as exc:
                    log.warning("shard %s: instances could not be counted by status: %r", self.config.index, exc)
            self._metrics.flush()
            await asyncio.sleep(REFRESH_SECONDS)

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
            with self._counted():
                await self._store.save_registry(merged)
        await self._visible()  # in the replica before the caller goes on

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

    async def close(self) -> None:
        """Stop the loop and close the store (pending work stays on disk)."""
        for task in (self._loop_task, self._file_watch, self._metrics_flush):
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
        if self._replication is not None:  # a last sync for what waits, then the lease is given up
            await self._replication.close()
        async with self._db_lock:
            await self._store.close()
        if self._journal is not None:
            self._journal.close()
            self._release_journal_readers()

    async def _lose_disk_before_sync(self) -> None:
        """Fault injection (crash point ``lose_disk_before_sync``): a while after a commit whose
        effects wait for a sync (time for anything released too early to leave), the node dies
        with its disk, before the sync."""
        if "lose_disk_before_sync" in self.config.crash_points:
            await asyncio.sleep(0.2)
            self._crash_point("lose_disk_before_sync")

    def _release(self, effects: Callable[..., None], *args: Any) -> None:
        """Run a committed turn's ``effects(*args)`` now, or with a replica once they may leave
        (see :meth:`ShardReplication.release`)."""
        if self._replication is None:
            effects(*args)
        else:
            self._replication.release(functools.partial(effects, *args))

    def _counted(self) -> contextlib.AbstractContextManager[None]:
        """Around every write of the file: with a replica, counted for :meth:`_visible` and the
        barrier (:meth:`ShardReplication.counting`); nothing without one."""
        return contextlib.nullcontext() if self._replication is None else self._replication.counting()

    async def _visible(self) -> None:
        """With ``durability="replicated"``, wait until the replica holds every write a read
        just made (or a write just done) could have seen; nothing to wait for otherwise."""
        if self._replication is not None:
            await self._replication.visible()

    # -- client entry points -----------------------------------------------------------------------

    async def submit(
        self, messages: Sequence[Message], retried: bool = False, blobs: Sequence[bytes] | None = None
    ) -> None:
        """Apply client messages (start, raise, terminate, suspend, resume); returns once they
        are committed (fresh starts: once in the start journal, see ``runtime._shard_intake``),
        raising the error that refused any of them. ``blobs``: their encoded forms, if the
        caller has them (the journal keeps those rather than encoding the messages again).

        ``retried``: the client sent them before over a connection that dropped before the
        answer, so this host may have applied them already: from now on it looks client
        starts up under their ``start:`` keys as a restarted host does (other messages are
        always de-duplicated by their ids)."""
        if self._replication is not None and self._replication.fenced is not None:
            raise self._replication.fenced  # another owner has the shard
        await self._ensure_started()
        if retried:
            self._retries_possible = True
        self.calls += 1
        if self._takes_early(messages, retried):
            await self._accept_early(messages, blobs)
            return
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

    async def deliver(
        self, blobs: Sequence[bytes], forget: Sequence[str] = (), sender: tuple[int, int] | None = None
    ) -> None:
        """Accept messages from another shard's outbox through a Ray call (when no connection
        could be opened); returns once they are committed. ``forget``: ids of earlier messages
        the sender will never send again (their ``delivered`` records go). ``sender``: its
        shard and generation; a batch older than the newest of that shard is refused with
        :class:`LeaseLostError` (see ``runtime._delivery``)."""
        self.ray_deliveries += 1
        self._courier.senders.check(sender)
        self._forget_delivered.extend(forget)
        await self.submit(self._decode_batch(blobs))

    async def peer_address(self) -> tuple[str, int, bytes]:
        """Where other shard hosts send their outbox batches: (host, port, token)."""
        await self._ensure_started()
        return (*self._peer_addr, self._peer_token)

    async def _on_peer_batch(self, payload: tuple[Any, ...]) -> None:
        """A batch from another shard's outbox, over its connection: its messages, the ids of
        earlier ones it may forget and its sender, if it says (see :meth:`deliver`); answered
        once committed."""
        blobs, forget, *rest = payload
        sender: tuple[int, int] | None = rest[0] if rest else None
        self._courier.senders.check(sender)
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

    # -- the turn loop -----------------------------------------------------------------------------

    def _enqueue(self, msg: Message) -> None:
        if self._behind and (held := self._behind.get(msg.instance_id)) is not None:
            held.append(msg)  # behind its journaled start, which waits to be written again
            return
        self._mailbox.append(msg)
        self._wake.set()

    def _enqueue_many(self, msgs: list[Message]) -> None:
        if self._behind:
            for msg in msgs:
                self._enqueue(msg)
            return
        self._mailbox.extend(msgs)
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._mailbox = self._mailbox, []
            if not batch:
                continue
            started = time.perf_counter()
            self._metrics.turn_started(len(batch))
            try:
                await self._turn(batch)
            except Exception as exc:
                log.exception("shard %s: turn failed", self.config.index)
                for msg in batch:
                    if msg.ack is not None and not msg.ack.done():
                        msg.ack.set_exception(exc)
                if isinstance(exc, ShardWriteError):
                    self._retry_unwritten(batch)
                else:
                    self._journal_done(batch, lost=batch)
            self._metrics.turn_ended(time.perf_counter() - started, len(self._mailbox))

    def _retry_unwritten(self, batch: list[Message]) -> None:
        """The turn's commit could not be written: the callers among its messages were told so
        (their calls were not applied); the rest (activity results, fired timers, messages of
        this host's own outbox, journaled starts) have no one to tell and would be lost, so they
        are applied again later, backing off while the file cannot be written. Until then,
        whatever comes for an instance whose journaled start waits among them waits behind it
        (its caller was told the instance exists)."""
        self._write_failures += 1
        self.failed_commits += 1
        again = [msg for msg in batch if msg.ack is None]
        if again:
            for msg in again:
                if msg.journaled:
                    self._behind.setdefault(msg.instance_id, [])
            delay = min(0.25 * 2 ** min(self._write_failures, 6), 10.0)
            asyncio.get_running_loop().call_later(delay, self._enqueue_again, again)

    def _enqueue_again(self, msgs: list[Message]) -> None:
        """Queue ``msgs`` again (see :meth:`_retry_unwritten`), then what waited behind them."""
        behind = [held for msg in msgs if msg.journaled for held in self._behind.pop(msg.instance_id, [])]
        self._enqueue_many(msgs + behind)

    # -- after the commit ----------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _end_fenced_host(exc: Exception) -> None:
    """Another owner has this host's shard: end the process (after the log line is out), so
    that Ray restarts the host, which waits for the lease, and callers reach the shard's owner."""
    log.error("this shard host ends: %s", exc)
    asyncio.get_running_loop().call_later(0.5, os._exit, 3)


def _replication_of(config: ShardConfig) -> ShardReplication | None:
    """The replication of the host's file, for a hub with a replica (its local copy lives in a
    directory of this node's own)."""
    if config.replica is None:
        return None
    from ._replication import ShardReplication  # only a replicated hub's hosts pay its import

    node_id = ray.get_runtime_context().get_node_id()
    return ShardReplication(
        config.replica, config.replication, config.hub, config.index, os.path.dirname(config.path),
        config.lease_seconds, node_id,
    )


def _restarted_by_ray() -> bool:
    """Whether this actor process is a restart Ray made after the previous one died (never for
    a host built outside Ray, in a test: asking Ray's runtime context would start a Ray)."""
    if not ray.is_initialized():
        return False
    try:
        with warnings.catch_warnings():  # Ray's property reads its own deprecated `actor_id`
            warnings.simplefilter("ignore", DeprecationWarning)
            return bool(ray.get_runtime_context().was_current_actor_reconstructed)
    except Exception:  # not in an actor (a host built directly, in a test)
        return False


