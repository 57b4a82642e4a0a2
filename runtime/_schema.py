"""The tables of a shard file (format version 3; ``docs/storage-format.md`` describes them for
tools in any language) and the column lists rows are read and written with."""

from __future__ import annotations

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

ENTITY_COLUMNS = "entity_id, name, has_state, state, locked_by, queue, updated_at"

#: meta key: every entity id in the file is canonical (its name lower-cased). A file written
#: before entity names were case-insensitive lacks it until its entities are moved.
_CANONICAL_ENTITY_IDS = "canonical_entity_ids"
INSTANCE_COLUMNS = (
    "instance_id, name, execution_id, status, input, output, custom_status, failure, parent, "
    "created_at, updated_at, num"
)
