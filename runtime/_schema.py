"""The tables of a shard file (format version 3; ``docs/storage-format.md`` describes them for
tools in any language) and the column lists rows are read and written with."""

from __future__ import annotations

from typing import NamedTuple

#: A page cache and memory map large enough that a hub holding 100,000 instances does not read
#: its B-trees from disk on every turn (SQLite's default cache is 2 MB).
_PERFORMANCE_PRAGMAS = ("PRAGMA cache_size=-65536", "PRAGMA mmap_size=268435456", "PRAGMA temp_store=MEMORY")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS instances(
    instance_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    status TEXT NOT NULL,
    input BLOB,
    output BLOB,
    custom_status BLOB,
    failure BLOB,
    parent BLOB,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    num INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS instances_by_created ON instances(created_at, instance_id);
CREATE INDEX IF NOT EXISTS instances_by_status ON instances(status);
CREATE TABLE IF NOT EXISTS history(
    num INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    timestamp REAL NOT NULL,
    name TEXT,
    data BLOB NOT NULL,
    PRIMARY KEY(num, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS activities(
    instance_id TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    task_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    input BLOB,
    PRIMARY KEY(instance_id, task_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS timers(
    instance_id TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    timer_id INTEGER NOT NULL,
    fire_at REAL NOT NULL,
    PRIMARY KEY(instance_id, timer_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entities(
    entity_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    has_state INTEGER NOT NULL,
    state BLOB,
    locked_by TEXT,
    queue BLOB,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS entities_by_name ON entities(name);
CREATE TABLE IF NOT EXISTS outbox(msg_id TEXT PRIMARY KEY, dest INTEGER NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS registry(id INTEGER PRIMARY KEY CHECK (id = 0), blob BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS delivered(msg_id TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS scheduled(msg_id TEXT PRIMARY KEY, due REAL NOT NULL, data BLOB NOT NULL);
"""


#: meta key: every entity id in the file is canonical (its name lower-cased). A file written
#: before entity names were case-insensitive lacks it until its entities are moved.
_CANONICAL_ENTITY_IDS = "canonical_entity_ids"


class InstanceRow(NamedTuple):
    """A row of ``instances``: an orchestration instance's current execution. Payload columns
    hold the converter's JSON text (``failure`` and ``parent`` are records); times are epoch
    seconds; ``num`` keys its history rows."""

    instance_id: str
    name: str
    execution_id: str
    status: str
    input: str | None
    output: str | None
    custom_status: str | None
    failure: str | None
    parent: str | None
    created_at: float
    updated_at: float
    num: int


class EntityRow(NamedTuple):
    """A row of ``entities``: an entity's state (JSON text), lock holder and queue (a JSON
    array of event records)."""

    entity_id: str
    name: str
    has_state: int
    state: str | None
    locked_by: str | None
    queue: str | None
    updated_at: float


class HistoryRow(NamedTuple):
    """A row of ``history``: one event (``data``, its record as JSON) of the instance numbered
    ``num``; ``event_type``, ``timestamp`` and ``name`` repeat the record's for queries."""

    num: int
    seq: int
    event_type: str
    timestamp: float
    name: str | None
    data: str


class ActivityRow(NamedTuple):
    """A row of ``activities``: an activity scheduled and not answered yet."""

    instance_id: str
    execution_id: str
    task_id: int
    name: str
    input: str


#: the columns of each row type, in order (``SELECT {INSTANCE_COLUMNS} FROM instances``)
INSTANCE_COLUMNS = ", ".join(InstanceRow._fields)
ENTITY_COLUMNS = ", ".join(EntityRow._fields)
ACTIVITY_COLUMNS = ", ".join(ActivityRow._fields)
