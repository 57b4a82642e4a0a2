"""Fresh client starts made durable in the shard host's start journal, then run by the turn loop.

A client's start waits for its commit (the guarantee of every ``TaskHub`` call). Through the
turn loop, a start waits for the turn running now, then for a turn of its own: staging it,
running the orchestrator's first episode, committing. A program that starts its instances one
at a time in a loop (``for x in xs: hub.start_new(...)``) paid that for every start, while the
hub was busy running the instances it had started before.

So a *fresh* start (a client's start of an id the client made up, which no record in the file
can have; see ``Message.fresh``) is made durable in the host's start journal instead
(``runtime._start_journal``: one append and one sync, shared by the starts that arrive
together), its caller is answered, and the start joins the turn loop's queue as any message
does. The next turn starts the instance and commits it to the shard file. Nothing is lost in
between: a host that opens the file again takes up the journal's starts that are not in it.

What a caller sees is unchanged. Every read of an instance (its status, history, a wait for it,
a query) first waits until the journaled start of it, if any, is committed (a turn at most), so
the instance exists once ``start_new`` returns, whatever is asked next and on whichever of the
host's loops it is asked.

A start that may not be fresh (a retried call, a host Ray restarted, a start of a given id, a
scheduled one), of an orchestrator nobody registered, or on a replicated hub (whose commits
must reach the replica first) goes through the turn loop, as does every start while the journal
is full (see ``runtime._start_journal.LIMIT``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Collection, Iterable, Sequence

from orchestrations import ExecutionStarted, ShardWriteError

from ._messages import Message, start_key
from ._shard_turn import ShardTurns
from ._start_journal import StartJournal

log = logging.getLogger("ray_durable.shard")


class ShardIntake(ShardTurns):
    """Mixed into :class:`ShardHost`: fresh client starts made durable in the start journal."""

    #: the journal (``None`` with a replica: starts go through the turn loop)
    _journal: StartJournal | None
    #: journaled starts no turn has committed yet, by instance id (read from any loop: changed
    #: under ``_journal_lock`` only)
    _journaled: dict[str, Message]
    #: readers waiting for journaled starts to be committed: (ids, their loop, their future)
    _journal_readers: list[tuple[set[str], asyncio.AbstractEventLoop, asyncio.Future[None]]]
    _journal_lock: threading.Lock
    #: messages held behind a journaled start whose turn could not be written, by instance
    #: (see ``ShardHost._retry_unwritten``)
    _behind: dict[str, list[Message]]
    #: the execution ids of every start a host opening the file would read in the journal
    #: (committed or not, until the first append after it started over): a purge of one of
    #: their instances keeps its ``start:`` key, which tells that host the start was applied
    _journal_executions: set[str]
    #: the starts waiting for the next append (with their encoded forms, if known), and the
    #: future their callers wait on
    _journal_batch: list[tuple[Message, bytes | None]]
    _journal_flush: asyncio.Future[None] | None
    #: a journaled start was lost from memory by a turn that failed: the journal keeps its
    #: records (the next host to open the file runs it) and never starts over in this host
    _journal_kept: bool = False
    #: an append failed while starts waited for their commit: what it may have left on disk
    #: could be read as records after them, so the journal takes no start until it starts over
    _journal_stale: bool = False

    def _init_intake(self) -> None:
        """Set up the intake's state (from ``ShardHost.__init__``)."""
        config = self.config
        sync = config.synchronous.upper() in ("FULL", "EXTRA", "2", "3")
        self._journal = StartJournal(config.path + "-starts", sync) if self._replication is None else None
        self._journaled, self._journal_readers, self._behind = {}, [], {}
        self._journal_executions = set()
        self._journal_lock = threading.Lock()
        self._journal_batch, self._journal_flush = [], None

    def _takes_early(self, messages: Sequence[Message], retried: bool) -> bool:
        """Whether ``messages`` (one client submit) are all fresh starts of registered
        orchestrators that go to the journal. Only a client marks a start ``fresh``, and only
        its own start of an id it made up."""
        journal = self._journal
        if journal is None or journal.full or self._journal_stale or not messages or retried or self._retries_possible:
            return False
        return all(
            m.fresh and m.due is None and isinstance(m.event, ExecutionStarted) and m.event.name in self._orchestrators
            for m in messages
        )

    async def _accept_early(self, messages: Sequence[Message], blobs: Sequence[bytes] | None = None) -> None:
        """Journal ``messages`` (see :meth:`_takes_early`; ``blobs``: their ``to_bytes``, if
        known) with the other starts that arrive in this pass of the event loop, then queue
        them for the turn loop; returns once they are on disk, raising
        :class:`ShardWriteError` if they could not be written."""
        if self._journal_flush is None:
            loop = asyncio.get_running_loop()
            self._journal_flush = loop.create_future()
            loop.call_soon(self._flush_journal)
        flush = self._journal_flush
        encoded: Sequence[bytes | None] = blobs if blobs is not None else [None] * len(messages)
        self._journal_batch.extend(zip(messages, encoded, strict=True))
        await asyncio.shield(flush)  # a caller that goes away does not fail the others

    def _flush_journal(self) -> None:
        """One append of the waiting starts; their callers are answered, the starts queued."""
        pairs, self._journal_batch = self._journal_batch, []
        flush, self._journal_flush = self._journal_flush, None
        assert flush is not None and self._journal is not None
        batch = [msg for msg, _ in pairs]
        first = self._journal.at_start
        try:
            self._journal.append([blob if blob is not None else msg.to_bytes() for msg, blob in pairs])
        except Exception as exc:  # full disk, I/O error, a closed host: nothing was taken
            if self._journaled:
                self._journal_stale = True
            else:  # what the failed append may have left is never read
                self._start_journal_over()
            error = ShardWriteError(self._journal.path, str(exc)) if isinstance(exc, OSError) else exc
            flush.set_exception(error)
            flush.exception()  # retrieved: callers that went away leave no warning
            return
        if first:  # the records before this generation's are never read again
            self._journal_executions.clear()
        self._crash_point("after_journal")  # on disk, its callers not answered yet
        with self._journal_lock:
            for msg in batch:
                msg.ack, msg.journaled = None, True
                self._journaled[msg.instance_id] = msg
        self._journal_executions.update(_execution(m) for m in batch)
        self.early_starts += len(batch)
        self._enqueue_many(batch)
        flush.set_result(None)

    def _journal_done(self, batch: Iterable[Message], lost: Collection[Message] = ()) -> None:
        """A turn committed ``batch``: its journaled starts are no longer waited for, and a
        journal whose every start is committed starts over. Those of ``lost`` (their records
        failed in the turn, or the whole turn did) were let go without being committed: the
        journal keeps them, for the next host that opens the file, and never starts over in
        this one."""
        done = [m.instance_id for m in batch if m.journaled]
        if not done:
            return
        with self._journal_lock:
            for iid in done:
                self._journaled.pop(iid, None)
            self._journal_readers = [r for r in self._journal_readers if not _wake_if_done(r, done)]
            empty = not self._journaled
        if dropped := [m for m in lost if m.journaled]:
            self._journal_kept = True
            log.error("shard %s: a failed turn let go of %d journaled starts; they run when the host opens the file "
                      "again", self.config.index, len(dropped))
        elif empty and not self._journal_kept:
            self._start_journal_over()

    def _start_journal_over(self) -> None:
        """The journal holds no start that is not committed: it starts over. Until its next
        append, its records are still the first the file holds, so their execution ids stay
        where a purge looks for them (``_journal_executions``)."""
        assert self._journal is not None
        self._journal.start_over()
        self._journal_stale = False

    def _release_journal_readers(self) -> None:
        """The host closes: readers still waiting for a journaled start are told so."""
        with self._journal_lock:
            readers, self._journal_readers = self._journal_readers, []
        for _, loop, future in readers:
            with contextlib.suppress(RuntimeError):  # its loop has closed
                loop.call_soon_threadsafe(_fail_closed, future)

    async def _journal_visible(self, ids: Iterable[str] | None) -> None:
        """Wait (on any loop) until the journaled starts of ``ids`` (of every instance with
        ``None``) are committed to the shard file: a read never misses an instance whose start
        its caller was told is committed. Nothing to wait for in the usual case."""
        if not self._journaled:
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._journal_lock:
            wanted = set(self._journaled) if ids is None else {i for i in ids if i in self._journaled}
            if not wanted:
                return
            self._journal_readers.append((wanted, loop, future))
        await future

    async def _take_up_journal(self) -> None:
        """At recovery: open the journal and queue again the starts it holds that the shard
        file does not (see the module docstring of ``runtime._start_journal``)."""
        if self._journal is None:
            return
        starts = []
        for payload in self._journal.open():
            try:
                starts.append(Message.from_bytes(payload))
            except Exception as exc:  # a class its code no longer has: as a peer's message
                log.error("shard %s: a journaled start cannot be decoded; dropped: %r", self.config.index, exc)
        self._journal_executions.update(_execution(m) for m in starts)
        rows = await self._store.load_instances([m.instance_id for m in starts]) if starts else {}
        keys = await self._store.seen_messages([start_key(_execution(m)) for m in starts]) if starts else set()
        left = [
            m for m in starts
            if not ((row := rows.get(m.instance_id)) is not None and row.execution_id == _execution(m))
            and start_key(_execution(m)) not in keys
        ]
        if not left:
            self._start_journal_over()
            return
        with self._journal_lock:
            for msg in left:
                msg.fresh, msg.journaled = False, True  # looked up: a turn may have applied it after all
                self._journaled[msg.instance_id] = msg
        log.info("shard %s: %d journaled starts not yet in the file run now", self.config.index, len(left))
        self._enqueue_many(left)


def _execution(msg: Message) -> str:
    assert isinstance(msg.event, ExecutionStarted)
    return msg.event.execution_id


def _wake_if_done(
    reader: tuple[set[str], asyncio.AbstractEventLoop, asyncio.Future[None]], done: list[str]
) -> bool:
    """Strike ``done`` from what ``reader`` waits for; wake it (and say so) if nothing is left."""
    ids, loop, future = reader
    ids.difference_update(done)
    if ids:
        return False
    with contextlib.suppress(RuntimeError):  # its loop has closed: nobody waits any more
        loop.call_soon_threadsafe(_answer, future)
    return True


def _answer(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _fail_closed(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(RuntimeError("the shard host closed before the start was committed"))
