"""A shard host's replication (``TaskHub(replica=..., durability=...)``; see
``docs/replication-design.md``): the lease that fences its owner, the Litestream child that ships
its file to the replica, and the barrier that holds a turn's effects until a replica sync started
after that turn's commit has returned.

- **Taking the shard** (:meth:`ShardReplication.take`, before the store opens): the lease in the
  replica store is taken at the next generation, waiting for a dead owner's lease to lapse. The
  local file (``<hub dir>/node-<node id>/shard-NN.sqlite``) is reused only if this node wrote it
  under the previous generation; otherwise it is rebuilt from the replica of the newest
  generation that holds data, or, if no generation ever replicated anything, begun afresh
  (nobody was ever told anything of it).
- **The barrier** (``durability="replicated"``): each commit is counted; a turn's effects wait in
  order, tagged with its count; one task syncs the replica for everything committed so far and
  then releases every effect up to it, so one sync covers the turns that committed meanwhile.
  Reads (status, history, entities) wait the same way for the commits they saw. The first sync of
  a generation is recorded in the lease (``data_generation``) before anything it covers leaves.
- **Fencing**: the lease is renewed every third of its time; effects leave only while more than a
  third of it is left. A lease another owner took stops the host for good (:attr:`fenced`).
- ``durability="async"``: the same lease and Litestream child, no barrier (the replica trails by
  Litestream's own interval, about a second).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from orchestrations import LeaseHeldError, LeaseLostError, ReplicaError

from ._hub_file import shard_file
from ._lease import Lease, local_file_reusable, open_lease_store, write_sidecar
from ._litestream import Replicator, restore
from ._replica_target import ReplicaTarget

log = logging.getLogger("ray_durable.replication")

#: ``TaskHub(durability=...)`` modes that replicate (``"local"`` does not)
REPLICATED, ASYNC = "replicated", "async"
#: how long a failed sync waits before it is tried again (doubling up to the lease's third)
SYNC_RETRY_SECONDS = 0.05


def node_directory(hub_directory: str, node_id: str) -> str:
    """Where a node keeps its local copies of a replicated hub's shards."""
    return os.path.join(hub_directory, f"node-{node_id[:16]}")


class ShardReplication:
    """The replication of one shard host's file. Built in the host's ``__init__``; :meth:`take`
    before the store opens, :meth:`start` after, :meth:`close` when the host closes."""

    def __init__(
        self, replica: str, mode: str, hub: str, index: int, hub_directory: str, lease_seconds: float,
        node_id: str,
    ) -> None:
        self.target = ReplicaTarget.parse(replica)
        self.mode, self.hub, self.index, self.ttl = mode, hub, index, lease_seconds
        self.node_id, self.hostname, self.pid = node_id, socket.gethostname(), os.getpid()
        self.local_path = os.path.join(node_directory(hub_directory, node_id), shard_file(index))
        self.lease: Lease | None = None
        self.fenced: Exception | None = None
        self._leases = open_lease_store(self.target)
        self._replicator: Replicator | None = None
        self._before_sync: Callable[[], Awaitable[None]] | None = None
        self._on_fenced: Callable[[Exception], None] | None = None
        #: writes begun (see :meth:`counting`); the barrier stopped for good (:meth:`close`)
        self._begun, self._closed = 0, False
        #: syncs made and the seconds they took (``status()``)
        self.syncs, self.sync_seconds = 0, 0.0
        self._tasks: list[asyncio.Task[None]] = []
        #: commits finished (each turn's, whether it wrote or failed) and commits a sync covers
        self._done = self._synced = 0
        self._effects: deque[tuple[int, Callable[[], None]]] = deque()
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: reads waiting for a sync: (commit count they saw, their loop, their future)
        self._readers: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._readers_lock = threading.Lock()

    # -- taking the shard -------------------------------------------------------------------------

    async def take(self, may_create: bool, wait: float | None = None) -> bool:
        """Take the shard's lease and put the right file at :attr:`local_path`; returns whether
        the store may create it (a shard no generation ever replicated). Waits up to ``wait``
        seconds (default: twice the lease) for a lease whose owner is gone to lapse; raises
        :class:`LeaseHeldError` naming the owner if it is still held then."""
        deadline = time.time() + (2 * self.ttl + 5 if wait is None else wait)
        while True:
            try:
                lease, previous = await asyncio.to_thread(
                    self._leases.acquire, self.hub, self.index, self.node_id, self.hostname, self.pid, self.ttl
                )
                break
            except LeaseHeldError as exc:
                if time.time() >= deadline:
                    raise
                await asyncio.sleep(min(max(0.05, exc.expires_at - time.time() + 0.05), self.ttl / 3, 1.0))
            except Exception as exc:  # no credentials, no such bucket, the store unreachable, ...
                if time.time() >= deadline or _permanent(exc):
                    raise ReplicaError(
                        f"shard {self.index} of hub {self.hub!r}",
                        f"its lease in {self.target.describe()} could not be taken: {type(exc).__name__}: {exc}",
                    ) from exc
                log.warning("shard %s: the lease could not be taken yet (%s); trying again", self.index, exc)
                await asyncio.sleep(min(1.0, self.ttl / 3))
        self.lease = lease
        try:
            create = await self._put_file(previous, may_create)
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._leases.release, lease)
            raise
        write_sidecar(self.local_path, lease)
        log.info(
            "shard %s: lease generation %s taken on node %s (%s)", self.index, lease.generation, self.node_id[:12],
            "new shard" if create else "restored" if previous is not None else "reused",
        )
        return create

    async def _put_file(self, previous: Lease | None, may_create: bool) -> bool:
        """Reuse, restore or begin the local file (see :meth:`take`)."""
        os.makedirs(os.path.dirname(self.local_path), mode=0o700, exist_ok=True)
        if local_file_reusable(self.local_path, self.node_id, previous):
            return False
        _remove_file(self.local_path)
        if previous is None or previous.data_generation == 0:
            if previous is None and not may_create:
                raise ReplicaError(
                    f"shard {self.index} of hub {self.hub!r}",
                    f"the replica {self.target.describe()} has no copy of it, yet hub.json says it exists: "
                    "is this the replica the hub was created with?",
                )
            return True
        await restore(self.target, self.hub, self.index, previous.data_generation, self.local_path)
        return False

    async def start(
        self, before_sync: Callable[[], Awaitable[None]] | None = None,
        on_fenced: Callable[[Exception], None] | None = None,
    ) -> None:
        """Start replicating the open file under this generation, and the lease's renewal and
        the barrier. ``before_sync`` (fault injection for tests) runs before each sync that
        effects wait for; ``on_fenced`` is called once another owner has the shard (a host ends
        its process there, so that Ray restarts it and its callers go to the owner)."""
        assert self.lease is not None
        self._before_sync, self._on_fenced = before_sync, on_fenced
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        self._replicator = Replicator(self.local_path, self.target, self.hub, self.index, self.lease.generation)
        await self._replicator.start()
        await self._sync()  # the file as taken is in this generation's replica, and the lease says so
        self._synced = self._done
        self._tasks = [self._loop.create_task(self._renew()), self._loop.create_task(self._barrier())]

    async def close(self) -> None:
        """A last sync (in either mode) and release what waits for it, then stop Litestream and
        give the lease up (the next owner need not wait for it to lapse). Waiting readers fail."""
        if self._replicator is not None and self._replicator.alive() and self.fenced is None:
            try:
                await asyncio.wait_for(self._sync_and_release(final=True), self.ttl / 3)
            except Exception as exc:
                log.warning("shard %s: the last replica sync failed (%s)", self.index, exc)
        for task in self._tasks:
            task.cancel()
        self._closed = True
        self._fail_readers()
        if self._replicator is not None:
            await self._replicator.stop()
        if self.lease is not None and self.fenced is None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._leases.release, self.lease)

    # -- the barrier ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        """Around one write of the file (under the writer's lock): counted as begun before it,
        so a read that may see it waits for a sync that covers it (:meth:`visible`), and as
        done after it, written or not, so later syncs cover it."""
        self._begun += 1
        try:
            yield
        finally:
            self._done += 1
            if self._readers:
                self._poke()

    def release(self, effects: Callable[[], None]) -> None:
        """Run ``effects`` (a committed turn's replies, sends, acknowledgements) once they may
        leave: in ``replicated`` mode once a sync covers the turn's commit, in ``async`` mode at
        once while the lease is sound; always in commit order, never while fenced."""
        if self.fenced is not None:
            return  # another owner has the shard: nothing of this host leaves any more
        if self.mode == ASYNC and not self._effects and self._lease_sound():
            _run(effects, self.index)
            return
        self._effects.append((self._done, effects))
        self._poke()

    async def visible(self) -> None:
        """Wait (on any loop) until a sync covers every commit a read just made could have seen
        (every commit begun by now): a client is never shown what a node's loss could take back.
        Nothing to wait for in ``async`` mode."""
        self._check_fenced()
        seen = self._begun
        if self.mode == ASYNC or seen <= self._synced:
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._readers_lock:
            if self.fenced is not None or self._closed:  # the barrier has stopped: nobody would answer
                raise self.fenced or _stopped(self)
            self._readers.append((seen, loop, future))
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._poke)
        await future

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _ready(self) -> bool:
        """Whether the barrier has something to do: effects wait, or a reader waits for commits
        that have all finished (one still being written pokes the barrier when it does)."""
        return bool(self._effects) or any(seen <= self._done for seen, _, _ in self._readers)

    async def _barrier(self) -> None:
        """Sync and release, for as long as the host runs."""
        assert self._wake is not None
        retry = SYNC_RETRY_SECONDS
        while self.fenced is None:
            await self._wake.wait()
            self._wake.clear()
            while self.fenced is None and self._ready():
                try:
                    await self._sync_and_release()
                    retry = SYNC_RETRY_SECONDS
                except Exception as exc:
                    if self.fenced is not None:
                        break
                    log.warning("shard %s: replica sync failed (%s); trying again", self.index, exc)
                    await asyncio.sleep(retry)
                    retry = min(retry * 2, self.ttl / 3)
        self._fail_readers()

    async def _sync_and_release(self, final: bool = False) -> None:
        """One sync covering every commit finished so far (``replicated``; ``final``: in either
        mode), then release what it covers, if the lease is still sound once the sync returned
        (a sync that outlived it covers nothing: the next owner may have restored without it);
        in ``async`` mode release what waited for the lease to be sound again."""
        await self._until_sound()
        if self.mode == REPLICATED or final:
            upto = self._done
            if upto > self._synced or final:
                if self._before_sync is not None and self._effects:
                    await self._before_sync()
                assert self.lease is not None
                await self._sync(timeout=max(0.1, self.lease.expires_at - self.ttl / 3 - time.time()))
                if not self._lease_sound():
                    return  # held again until a renewal: the barrier tries once more
                self._synced = max(self._synced, upto)
        while self._effects and (self.mode == ASYNC or self._effects[0][0] <= self._synced):
            _run(self._effects.popleft()[1], self.index)
        self._answer_readers()

    async def _until_sound(self) -> None:
        """Hold everything while the lease has less than a third of its time left (a renewal is
        late); raise the fencing error once another owner has the shard."""
        while not self._lease_sound():
            self._check_fenced()
            await asyncio.sleep(0.02)

    async def _sync(self, timeout: float = 60.0) -> None:
        """Sync the replica; the first sync of a generation is recorded in the lease
        (``data_generation``: restore from here) before anything it covers leaves."""
        assert self._replicator is not None and self.lease is not None
        began = time.perf_counter()
        await self._replicator.sync(timeout=timeout)
        self.syncs += 1
        self.sync_seconds += time.perf_counter() - began
        if self.lease.data_generation != self.lease.generation:
            self.lease = await self._renewed(self.lease, self.lease.generation)

    def _answer_readers(self, error: Exception | None = None) -> None:
        with self._readers_lock:
            ready = [r for r in self._readers if error is not None or r[0] <= self._synced]
            self._readers = [r for r in self._readers if r not in ready]
        for _, loop, future in ready:
            loop.call_soon_threadsafe(_settle, future, error)

    def _fail_readers(self) -> None:
        self._answer_readers(self.fenced or _stopped(self))

    # -- the lease --------------------------------------------------------------------------------

    def may_send(self) -> bool:
        """Whether what was released may leave the host now: while the lease is sound (a
        batch held through a late renewal, or a pause past the lease, must not reach a
        receiver once another owner may have the shard)."""
        return self._lease_sound()

    def _lease_sound(self) -> bool:
        """Whether effects may leave: more than a third of the lease is left."""
        return self.lease is not None and self.fenced is None and time.time() < self.lease.expires_at - self.ttl / 3

    def _check_fenced(self) -> None:
        if self.fenced is not None:
            raise self.fenced

    async def _renew(self) -> None:
        """Renew the lease every third of its time. One another owner took ends this host's
        ownership for good: nothing more leaves it (:attr:`fenced`)."""
        while self.fenced is None:
            await asyncio.sleep(self.ttl / 3)
            lease = self.lease
            assert lease is not None
            try:
                renewed = await self._renewed(lease)
            except LeaseLostError:
                return
            except Exception as exc:  # the store is unreachable: try again while the lease lasts
                log.warning("shard %s: the lease could not be renewed (%s)", self.index, exc)
                continue
            if self.lease is lease:  # not replaced by a renewal of the barrier's meanwhile
                self.lease = renewed
            self._poke()

    async def _renewed(self, lease: Lease, data_generation: int | None = None) -> Lease:
        """``lease`` renewed (with ``data_generation``, if given). A refused renewal whose
        lease the store still holds as this host's (a write that went through but whose answer
        was lost, then retried with the old token) is renewed from what the store holds; one
        another owner took fences this host and raises :class:`LeaseLostError`."""
        try:
            return await asyncio.to_thread(self._leases.renew, lease, self.ttl, data_generation)
        except LeaseLostError as exc:
            stored = await asyncio.to_thread(self._leases.read, self.hub, self.index)
            if stored is not None and not stored.released and (stored.generation, stored.owner, stored.pid) == (
                lease.generation, lease.owner, lease.pid
            ):
                return await asyncio.to_thread(self._leases.renew, stored, self.ttl, data_generation)
            self._fence(exc)
            raise

    def _fence(self, exc: Exception) -> None:
        """Another owner has the shard: release nothing more, stop Litestream, fail waiters,
        and tell the host (``on_fenced``)."""
        if self.fenced is not None:
            return
        log.error("shard %s: %s; this host releases nothing more", self.index, exc)
        self.fenced = exc
        self._effects.clear()
        self._fail_readers()
        self._poke()
        if self._replicator is not None and self._loop is not None:
            self._loop.create_task(self._replicator.stop())
        if self._on_fenced is not None:
            self._on_fenced(exc)

    def status(self) -> dict[str, Any]:
        """What ``stats()`` shows of it."""
        lease = self.lease
        return {
            "mode": self.mode, "replica": self.target.describe(), "node": self.node_id, "pid": self.pid,
            "generation": lease and lease.generation,
            "data_generation": lease and lease.data_generation, "synced_commits": self._synced,
            "waiting_effects": len(self._effects), "syncs": self.syncs,
            "sync_seconds": round(self.sync_seconds, 3), "fenced": str(self.fenced) if self.fenced else None,
        }


#: errors of the replica store that waiting does not mend (botocore's names and S3's codes)
PERMANENT = frozenset({
    "NoCredentialsError", "PartialCredentialsError", "NoSuchBucket", "AccessDenied", "InvalidAccessKeyId",
    "SignatureDoesNotMatch", "InvalidBucketName", "NoRegionError",
})


def _permanent(exc: Exception) -> bool:
    """Whether ``exc`` says the replica store is misconfigured rather than briefly away."""
    code = getattr(exc, "response", {}).get("Error", {}).get("Code") if hasattr(exc, "response") else None
    return type(exc).__name__ in PERMANENT or code in PERMANENT


def _run(effects: Callable[[], None], index: int) -> None:
    """Run one turn's effects; one that raises is logged, and those after it still run."""
    try:
        effects()
    except Exception:
        log.exception("shard %s: a committed turn's effects failed", index)


def _stopped(rep: ShardReplication) -> ReplicaError:
    return ReplicaError(f"shard {rep.index} of hub {rep.hub!r}", "its host stopped replicating")


def _settle(future: asyncio.Future[None], error: Exception | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def _remove_file(path: str) -> None:
    """Delete a shard file with its WAL, shared-memory index, lock and sidecar."""
    for suffix in ("", "-wal", "-shm", ".lock", ".lease"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path + suffix)
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path + ".litestream")  # Litestream's own state beside the file
