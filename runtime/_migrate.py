"""Opening a shard file written in an older format version: version 2 (history events and
payloads as pickles of the engine's and the user's classes) is migrated in place to version 3
(records by name, payloads through the converter; see ``docs/storage-format.md``).

The file is first checked to be this shard's (a foreign file is refused untouched, as any
other), then copied next to itself (``shard-NN.sqlite.v2.bak``, through SQLite's backup, so
what its WAL holds is in the copy), then rewritten in one transaction: a crash leaves it in
version 2, migrated again at the next open. The shard host that owns the file does this, under
the file's owner lock, with the hub's code importable (version-2 pickles refer to it); a value
whose class cannot be imported is kept as its pickle, marked, rather than lost.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable
from contextlib import closing
from typing import Any

from ._codec_v2 import (
    decode_v2,
    migrate_v2_event,
    migrate_v2_failure,
    migrate_v2_parent,
    migrate_v2_queue,
    migrate_v2_value,
)
from ._files import prepare_database
from ._messages import Message
from ._shard_identity import FORMAT_VERSION, ShardIdentity, check_meta

log = logging.getLogger("ray_durable.store")

#: the one older format version a file is migrated from
MIGRATES_FROM = 2

#: per table: its key columns and the converter of each column to migrate
_COLUMNS: dict[str, tuple[tuple[str, ...], dict[str, Callable[[Any], Any]]]] = {
    "instances": (("instance_id",), {
        "input": migrate_v2_value, "output": migrate_v2_value, "custom_status": migrate_v2_value,
        "failure": migrate_v2_failure, "parent": migrate_v2_parent,
    }),
    "history": (("num", "seq"), {"data": migrate_v2_event}),
    "activities": (("instance_id", "task_id"), {"input": migrate_v2_value}),
    "entities": (("entity_id",), {"state": migrate_v2_value, "queue": migrate_v2_queue}),
}


def stored_version(path: str) -> int | None:
    """The format version a shard file records (``None``: no file, or no version recorded)."""
    if not os.path.exists(path):
        return None
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone() is None:
            return None
        row = db.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone()
    return None if row is None else int(row[0])


def migrate_if_old(path: str, identity: ShardIdentity) -> str | None:
    """Migrate the shard file at ``path`` if it is of version 2 and ``identity``'s (checked
    first: another hub's or shard's file is refused, untouched); return the backup's path, or
    ``None`` if nothing was to be done. Other versions are left to the usual checks."""
    if stored_version(path) != MIGRATES_FROM:
        return None
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    check_meta(path, identity, {**meta, "format_version": str(FORMAT_VERSION)})
    backup = _backup(path)
    _migrate(path)
    log.warning(
        "shard file %s was in format version %d: migrated to version %d; the file as it was is kept at %s",
        path, MIGRATES_FROM, FORMAT_VERSION, backup,
    )
    return backup


def _backup(path: str) -> str:
    """Copy the file (with what its WAL holds) next to itself, under a name not taken yet."""
    backup, n = f"{path}.v{MIGRATES_FROM}.bak", 0
    while os.path.lexists(backup):
        n += 1
        backup = f"{path}.v{MIGRATES_FROM}.bak.{n}"
    prepare_database(backup)  # created private (0600) before SQLite writes it
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as src, closing(sqlite3.connect(backup)) as dst:
        src.backup(dst)
    return backup


def _migrate(path: str) -> None:
    """Rewrite every stored value of the file in the version-3 form, in one transaction."""
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("BEGIN IMMEDIATE")
        try:
            for table, (keys, columns) in _COLUMNS.items():
                _migrate_table(db, table, keys, columns)
            for table in ("outbox", "scheduled"):
                rows = db.execute(f"SELECT msg_id, data FROM {table}").fetchall()
                db.executemany(
                    f"UPDATE {table} SET data = ? WHERE msg_id = ?", [(_message(data), msg_id) for msg_id, data in rows]
                )
            db.execute("UPDATE meta SET value = ? WHERE key = 'format_version'", (str(FORMAT_VERSION),))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise


def _migrate_table(
    db: sqlite3.Connection, table: str, keys: tuple[str, ...], columns: dict[str, Callable[[Any], Any]]
) -> None:
    names = list(columns)
    rows = db.execute(f"SELECT {', '.join((*keys, *names))} FROM {table}").fetchall()
    sets = ", ".join(f"{name} = ?" for name in names)
    where = " AND ".join(f"{key} = ?" for key in keys)
    db.executemany(
        f"UPDATE {table} SET {sets} WHERE {where}",
        [
            (*(convert(value) for convert, value in zip(columns.values(), row[len(keys):])), *row[: len(keys)])
            for row in rows
        ],
    )


def _message(blob: bytes) -> bytes:
    """A version-2 outbox or parked message (a pickled ``Message``, its input a pickle too) in
    the version-3 form."""
    msg: Message = decode_v2(blob)
    if isinstance(msg.input_blob, bytes):
        msg.input_blob = migrate_v2_value(msg.input_blob)
    return msg.to_bytes()
