"""The SQLite store of one shard: one file, written only by its shard host.

One writer connection commits each turn in one transaction; a second, read-only connection
serves queries, so a status query sees committed state only and never waits for a turn.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from typing import Any

import aiosqlite

from orchestrations import ShardFileError

from ._files import open_private, prepare_database, private_dir, refuse_links
from ._instance_filters import _filters as _filters  # the read-only reader shares it
from ._instance_filters import prefix_bounds as prefix_bounds  # where callers look for it
from ._migrate import migrate_if_old
from ._schema import (
    _CANONICAL_ENTITY_IDS,
    _PERFORMANCE_PRAGMAS,
    _SCHEMA,
    ACTIVITY_COLUMNS,
    ActivityRow,
    EntityRow,
    InstanceRow,
)
from ._schema import ENTITY_COLUMNS as ENTITY_COLUMNS  # where readers look for them
from ._schema import INSTANCE_COLUMNS as INSTANCE_COLUMNS
from ._shard_identity import FORMAT_VERSION as FORMAT_VERSION  # where the CLI's reader looks for it
from ._shard_identity import ShardIdentity, check_file, lost_file
from ._turn_writes import TurnWrites, apply_writes, without_superseded


async def rows_of(conn: aiosqlite.Connection, sql: str, args: Sequence[Any] = ()) -> list[Any]:
    """Every row of ``sql``, fetched in the same call on the connection's thread that runs it.

    Every read of the store goes through here. A statement left open between two calls (run
    in one, fetched in the next) keeps its connection's read transaction, a WAL snapshot,
    open; with many reads interleaved on one connection one is nearly always open, and the
    connection stops seeing later commits. That happened: under 1,000 concurrent
    ``start_new_async`` + ``wait_for_completion_async``, a wait read its instance from such a
    snapshot and answered "no orchestration instance" for a start committed and acknowledged
    before it (tests/test_store_reads.py)."""
    return list(await conn.execute_fetchall(sql, args))


class ShardStore:
    """The SQLite file of one shard.

    The file knows whose it is: its ``meta`` table records its hub's name and identity
    (``hub_id``, also in the hub's ``hub.json``), its shard index and the shard count. Opening
    refuses, by name and untouched, a file of another hub or another shard, a SQLite file of
    another application, and (unless ``create``) a missing or empty one; a file written before
    identities were recorded is given this hub's when it is otherwise a shard file of this hub.
    While open, each commit checks that the file at ``path`` is still the one it opened (same
    device and inode: one ``stat``): a file deleted or replaced under a running hub fails the
    commit and every later use of the store, loudly, instead of writing to a file nobody sees.
    """

    def __init__(
        self, path: str, hub: str, shard: int, num_shards: int, synchronous: str = "FULL",
        hub_id: str = "", create: bool = True,
    ) -> None:
        self.path = path
        self.hub = hub
        self.shard = shard
        self.num_shards = num_shards
        self.synchronous = synchronous
        self.hub_id = hub_id
        self.create = create
        self._identity = ShardIdentity(hub, hub_id, shard, num_shards)
        self._db: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._lock_fd: int | None = None
        #: fault injection for tests: this many next commits fail as on a full disk
        self.failing_commits = 0
        #: (device, inode) of the file opened, and the error once it is no longer at ``path``
        self._file_id: tuple[int, int] | None = None
        self._lost: ShardFileError | None = None

    @property
    def db(self) -> aiosqlite.Connection:
        """The writer connection."""
        if self._lost is not None:
            raise self._lost
        assert self._db is not None, "store is not open"
        return self._db

    @property
    def reader(self) -> aiosqlite.Connection:
        """The read-only connection (committed state only)."""
        if self._lost is not None:
            raise self._lost
        assert self._reader is not None, "store is not open"
        return self._reader

    def check_file(self) -> None:
        """Raise :class:`ShardFileError` (now and on every later use) if the file at ``path`` is
        no longer the one this store opened: deleted, or replaced by another file."""
        if self._lost is not None:
            raise self._lost
        if self._file_id is None:
            return
        self._lost = lost_file(self.path, self._file_id)
        if self._lost is not None:
            raise self._lost

    async def open(self, lock_timeout: float = 10.0) -> None:
        """Take the file's owner lock, then open (creating it if ``create``) and check the file.

        Refuses, naming the file, a file another process owns, a missing or empty file (unless
        ``create``), a file that is not a SQLite database (corrupt or truncated), a SQLite
        database that is not a shard file, one from another format version, one of another hub,
        shard or shard count. A refused file is left as it is: nothing is reset or written. A file
        of this shard in format version 2 is migrated first (a backup kept beside it; see
        ``runtime._migrate``).
        """
        private_dir(os.path.dirname(self.path))
        await self._lock(lock_timeout)
        try:
            # read-only first: a file that is not this shard's (or a planted link) is refused
            # untouched; then it is made private before SQLite opens it for writing
            refuse_links(self.path)
            await asyncio.to_thread(migrate_if_old, self.path, self._identity)
            fresh, adopt = await check_file(self.path, self._identity, self.create)
            prepare_database(self.path)
            self._db = await aiosqlite.connect(self.path, isolation_level=None)
            st = os.stat(self.path)
            self._file_id = (st.st_dev, st.st_ino)
            await self._db.execute("PRAGMA journal_mode=WAL")
            await self._db.execute(f"PRAGMA synchronous={self.synchronous}")
            for pragma in _PERFORMANCE_PRAGMAS:
                await self._db.execute(pragma)
            verdict = [row[0] for row in await rows_of(self._db, "PRAGMA quick_check")]
            if verdict != ["ok"]:
                raise ShardFileError(self.path, f"failed its integrity check: {'; '.join(verdict[:3])}")
            if fresh:  # the identity first: a file with tables but no identity is refused as foreign
                await self._write_identity()
            elif adopt:  # a file of this hub written before files recorded their hub's identity
                await self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('hub_id', ?)", (self.hub_id,))
            await self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            await self.close()
            raise ShardFileError(self.path, f"is not a usable SQLite database ({exc}); refusing to open it") from None
        except BaseException:
            await self.close()
            raise
        self._reader = await aiosqlite.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None)
        for pragma in _PERFORMANCE_PRAGMAS:
            await self._reader.execute(pragma)

    async def _write_identity(self) -> None:
        """A new file: record its format, hub, shard and shard count (one transaction)."""
        await self.db.execute("BEGIN IMMEDIATE")
        await self.db.execute("CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        await self.db.executemany(
            "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
            [*self._identity.meta_rows(), (_CANONICAL_ENTITY_IDS, "1")],
        )
        await self.db.execute("COMMIT")

    async def _lock(self, timeout: float) -> None:
        """Become the file's one owner (an OS lock on ``<file>.lock``, freed when the process
        dies), waiting up to ``timeout`` seconds for a previous owner that is shutting down."""
        fd = open_private(self.path + ".lock", os.O_RDWR | os.O_CREAT)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    owner = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                    os.close(fd)
                    raise ShardFileError(
                        self.path, f"is in use by another process (pid {owner}); one owner per shard at a time"
                    ) from None
                await asyncio.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    async def close(self) -> None:
        """Close both connections and give up ownership of the file."""
        for conn in (self._reader, self._db):
            if conn is not None:
                await conn.close()
        self._db = self._reader = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the lock
            self._lock_fd = None

    async def commit(self, rounds: Sequence[TurnWrites]) -> None:
        """Write one turn in one transaction (one fsync): its rounds' writes in order, each
        round's as :meth:`_apply` orders them.

        The whole transaction runs in one call on aiosqlite's connection thread (its
        ``_execute``), not one thread hop per statement: a turn's commit is on the latency
        path of every step of every orchestration.
        """
        rounds = [w for w in without_superseded(rounds) if not w.is_empty()]
        if rounds:
            await self.db._execute(self._commit_on_thread, rounds)

    def _commit_on_thread(self, rounds: list[TurnWrites]) -> None:
        db = self.db._conn
        db.execute("BEGIN IMMEDIATE")
        try:
            for w in rounds:
                apply_writes(db, w)
            if self.failing_commits:
                self.failing_commits -= 1
                raise sqlite3.OperationalError("database or disk is full (injected)")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # SQLite may have rolled back already (a full disk does)
                db.execute("ROLLBACK")
            raise
        # after the commit: a turn is acknowledged only if it went to the file at ``path``
        self.check_file()

    # -- reads used by the shard host (writer connection: sees its own last commit) -----------

    async def _rows_with_ids(self, select: str, ids: Sequence[str], reader: bool = False) -> list[Any]:
        """``select ... WHERE <key> IN (ids)`` in chunks of 500 (SQLite's parameter limit)."""
        conn = self.reader if reader else self.db
        rows: list[Any] = []
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            rows.extend(await rows_of(conn, f"{select} IN ({','.join('?' * len(chunk))})", chunk))
        return rows

    async def load_instances(self, ids: Sequence[str], reader: bool = False) -> dict[str, InstanceRow]:
        """The instance rows of ``ids`` that exist (committed ones only, with ``reader``)."""
        rows = await self._rows_with_ids(f"SELECT {INSTANCE_COLUMNS} FROM instances WHERE instance_id", ids, reader)
        return {row[0]: InstanceRow._make(row) for row in rows}

    async def load_entities(self, ids: Sequence[str]) -> dict[str, EntityRow]:
        """The entity rows of ``ids`` that exist."""
        rows = await self._rows_with_ids(f"SELECT {ENTITY_COLUMNS} FROM entities WHERE entity_id", ids)
        return {row[0]: EntityRow._make(row) for row in rows}

    async def query_entities(
        self, name: str | None, locked_only: bool = False, with_state_only: bool = False
    ) -> list[EntityRow]:
        """Committed entity rows, optionally of one entity name, only the locked ones, or only
        the ones with state."""
        where, args = [], []
        if name is not None:
            where.append("name = ?")
            args.append(name)
        if locked_only:
            where.append("locked_by IS NOT NULL")
        if with_state_only:
            where.append("has_state = 1")
        sql = f"SELECT {ENTITY_COLUMNS} FROM entities"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [EntityRow._make(row) for row in await rows_of(self.reader, sql + " ORDER BY entity_id", args)]

    async def legacy_entity_rows(self) -> list[EntityRow] | None:
        """The entity rows a file written before entity names were case-insensitive may hold
        under a name that is not lower-cased; ``None`` once the file is marked canonical.
        SQLite's ``lower()`` folds ASCII only, so names with other characters come too: the
        caller checks."""
        if await rows_of(self.db, "SELECT value FROM meta WHERE key = ?", (_CANONICAL_ENTITY_IDS,)):
            return None
        sql = f"SELECT {ENTITY_COLUMNS} FROM entities WHERE name <> lower(name) OR name GLOB '*[^ -~]*'"
        return [EntityRow._make(row) for row in await rows_of(self.db, sql)]

    async def move_legacy_entities(
        self, old_ids: Sequence[str], rows: Sequence[tuple[Any, ...]], outbox: Sequence[tuple[str, int, bytes]]
    ) -> None:
        """In one transaction: delete the rows of ``old_ids``, insert ``rows`` (their canonical
        form, kept on this shard) unless a row has that id already, add ``outbox`` (the rows
        sent to the shards that own their canonical ids), and mark the file canonical."""

        def move(db: Any) -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("DELETE FROM entities WHERE entity_id = ?", [(i,) for i in old_ids])
                db.executemany(f"INSERT OR IGNORE INTO entities({ENTITY_COLUMNS}) VALUES (?,?,?,?,?,?,?)", rows)
                db.executemany("INSERT OR REPLACE INTO outbox(msg_id, dest, data) VALUES (?,?,?)", outbox)
                db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, '1')", (_CANONICAL_ENTITY_IDS,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

        await self.db._execute(move, self.db._conn)

    async def delete_entities(self, ids: Sequence[str]) -> int:
        """Delete entity rows that are still empty (no state, no lock, no queue)."""
        count = 0
        for entity_id in ids:
            cur = await self.db.execute(
                "DELETE FROM entities WHERE entity_id = ? AND has_state = 0 AND locked_by IS NULL "
                "AND (queue IS NULL)",
                (entity_id,),
            )
            count += cur.rowcount
        return count

    async def load_history(self, num: int, reader: bool = False) -> list[str]:
        """The stored history events (JSON records) of the instance numbered ``num``, oldest first."""
        conn = self.reader if reader else self.db
        return [row[0] for row in await rows_of(conn, "SELECT data FROM history WHERE num = ? ORDER BY seq", (num,))]

    async def load_events(self, num: int, event_types: Sequence[str]) -> list[tuple[int, str]]:
        """(seq, encoded event) of the history events of the instance numbered ``num`` whose type
        is one of ``event_types``, oldest first (a scan of that instance's rows only)."""
        marks = ",".join("?" * len(event_types))
        sql = f"SELECT seq, data FROM history WHERE num = ? AND event_type IN ({marks}) ORDER BY seq"
        return [(row[0], row[1]) for row in await rows_of(self.db, sql, (num, *event_types))]

    async def task_counts(self, num: int) -> tuple[int, int]:
        """(activity results, activities scheduled) in the committed history of the instance
        numbered ``num`` (a scan of that instance's rows only)."""
        sql = "SELECT event_type, COUNT(*) FROM history WHERE num = ? AND event_type IN (?, ?, ?) GROUP BY event_type"
        counts = dict(await rows_of(self.reader, sql, (num, "TaskScheduled", "TaskCompleted", "TaskFailed")))
        return counts.get("TaskCompleted", 0) + counts.get("TaskFailed", 0), counts.get("TaskScheduled", 0)

    async def seen_messages(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` were delivered before (duplicates to drop)."""
        return {row[0] for row in await self._rows_with_ids("SELECT msg_id FROM delivered WHERE msg_id", ids)}

    async def last_instance_num(self) -> int:
        """The highest instance number in use (numbers grow; history is keyed by them)."""
        rows = await rows_of(self.db, "SELECT COALESCE(MAX(num), 0) FROM instances")
        return int(rows[0][0]) if rows else 0

    async def save_registry(self, blob: bytes) -> None:
        """Keep the registry snapshot, so a restarted shard host can run what it hosts."""
        await self.db.execute("INSERT OR REPLACE INTO registry(id, blob) VALUES (0, ?)", (blob,))

    async def load_registry(self) -> bytes | None:
        """The last registry snapshot saved, if any."""
        rows = await rows_of(self.db, "SELECT blob FROM registry WHERE id = 0")
        return rows[0][0] if rows else None

    async def pending_work(self) -> tuple[list[ActivityRow], list[Any], list[Any]]:
        """Activities without a result, armed timers and undelivered outbox messages."""
        rows = await rows_of(self.db, f"SELECT {ACTIVITY_COLUMNS} FROM activities")
        activities = [ActivityRow._make(row) for row in rows]
        timers = await rows_of(self.db, "SELECT instance_id, execution_id, timer_id, fire_at FROM timers")
        outbox = await rows_of(self.db, "SELECT msg_id, dest, data FROM outbox")
        return activities, timers, outbox

    async def load_scheduled(self) -> list[tuple[str, float, bytes]]:
        """The parked messages (msg_id, due, encoded message), by due time, then in the order
        they were parked."""
        rows = await rows_of(self.db, "SELECT msg_id, due, data FROM scheduled ORDER BY due, rowid")
        return [(row[0], row[1], row[2]) for row in rows]

    # -- queries (reader connection: committed state only) ------------------------------------

    async def get_instance(self, instance_id: str) -> InstanceRow | None:
        """The committed row of ``instance_id`` or ``None``."""
        sql = f"SELECT {INSTANCE_COLUMNS} FROM instances WHERE instance_id = ?"
        rows = await rows_of(self.reader, sql, (instance_id,))
        return InstanceRow._make(rows[0]) if rows else None

    async def get_entity(self, key: str) -> EntityRow | None:
        """The committed row of entity ``key`` or ``None``."""
        rows = await rows_of(self.reader, f"SELECT {ENTITY_COLUMNS} FROM entities WHERE entity_id = ?", (key,))
        return EntityRow._make(rows[0]) if rows else None

    async def query_instances(
        self,
        created_from: float | None,
        created_to: float | None,
        statuses: Iterable[str] | None,
        after: tuple[float, str] | None,
        limit: int | None,
        prefix: str | None = None,
        name: str | None = None,
    ) -> list[InstanceRow]:
        """Rows by (created_at, instance_id), filtered, after the ``after`` key."""
        where, args = _filters(created_from, created_to, statuses, prefix, name)
        if after is not None:
            where.append("(created_at > ? OR (created_at = ? AND instance_id > ?))")
            args += [after[0], after[0], after[1]]
        sql = f"SELECT {INSTANCE_COLUMNS} FROM instances"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at, instance_id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [InstanceRow._make(row) for row in await rows_of(self.reader, sql, args)]

    async def purge(self, ids: Sequence[str], delivered: Sequence[str] = ()) -> int:
        """Delete the instances ``ids`` and everything they own, and note ``delivered`` message
        ids in the same transaction; return how many instances existed."""
        if not ids:
            return 0
        db = self.db
        await db.execute("BEGIN IMMEDIATE")
        try:
            rows = [(i,) for i in ids]
            await db.executemany(
                "DELETE FROM history WHERE num IN (SELECT num FROM instances WHERE instance_id = ?)", rows
            )
            count = 0
            for row in rows:
                cur = await db.execute("DELETE FROM instances WHERE instance_id = ?", row)
                count += cur.rowcount
            for table in ("activities", "timers"):
                await db.executemany(f"DELETE FROM {table} WHERE instance_id = ?", rows)
            await db.executemany("INSERT OR IGNORE INTO delivered(msg_id) VALUES (?)", [(m,) for m in delivered])
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        return count
