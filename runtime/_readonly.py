"""A task hub's files read without its shard hosts: every shard file opened read-only.

What the CLI reads when no hub of that name runs in a reachable Ray cluster. Each file is
opened with SQLite's ``mode=ro``, so reading never writes, never takes the shard's owner lock
and never disturbs a hub that has the files open in another process: it sees committed state
only. Reading runs no code from the files: payloads are read in the converter's ``SAFE`` mode
(JSON values as they are; a marked pickle rebuilt only when it holds plain data, else shown as
an ``Undecodable`` naming its type), or not at all with ``raw`` (``ray-durable --no-decode``). Only
:meth:`HubFiles.saved_registry`, which control commands need to run the hub, loads code.
Rows become the very records a shard host returns (``status_from_row``; entity rows as
``list_entities`` reports them), and listing pages through :func:`query_page` as ``TaskHub``
does, so both ways of reading print alike. The column lists come from ``_store``; the schema is not
repeated here.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from entities import EntityId
from orchestrations import (
    DurableValueError,
    HistoryEvent,
    InstanceNotFoundError,
    ShardFileError,
    validate_instance_id,
)
from orchestrations._ids import shard_of
from orchestrations._registry import Registry

from ._codec import RAW, SAFE, TRUSTED, RawPayload, decode, load_value
from ._codec_records import load_event, read_event
from ._entity_host import addressable, parse_holder
from ._files import read_hub_file
from ._messages import from_ts, status_from_row
from ._paging import ShardRow, StatusFilter, query_page
from ._replica_copies import ReplicaCopies
from ._schema import EntityRow, InstanceRow
from ._status import DurableOrchestrationStatus, EntityMetadata, EntityStateResponse, InstancePage
from ._store import ENTITY_COLUMNS, FORMAT_VERSION, INSTANCE_COLUMNS, _filters


@dataclass(frozen=True, slots=True)
class RawEvent:
    """A history event as stored, its payloads not decoded (the fields the CLI shows)."""

    event_type: str
    timestamp: datetime
    name: str | None
    input: RawPayload | None
    result: None = None



class HubFiles:
    """The files of hub ``name`` under ``data_dir``, read-only; the query methods answer as the
    ``TaskHub`` methods of the same names do. Files open on first use, until :meth:`close`.

    Raises ``ValueError`` if there is no hub there (no ``hub.json``) or it was written in
    another format version. With ``raw``, payloads are not decoded at all: each is a
    :class:`RawPayload`, and a history is a list of :class:`RawEvent`. With ``trusted``, they
    are read as a shard host reads them (the converter's ``TRUSTED`` mode: a user's objects are
    rebuilt, importing their modules, and a value that cannot be rebuilt raises): what
    replaying and exporting need, for files one trusts as much as the code that runs them.
    """

    def __init__(
        self, name: str, data_dir: str | os.PathLike[str], raw: bool = False, trusted: bool = False
    ) -> None:
        self.name = name
        self.raw = raw
        self._mode = RAW if raw else TRUSTED if trusted else SAFE
        self.directory = os.path.join(os.path.abspath(os.fspath(data_dir)), name)
        info = read_hub_file(self.directory)
        if info is None:
            raise DurableValueError(f"no task hub {name!r} in {os.path.dirname(self.directory)}")
        if info.get("format_version") != FORMAT_VERSION:
            upgrade = " (open it once with TaskHub to migrate it)" if info.get("format_version") == 2 else ""
            raise DurableValueError(
                f"task hub {name!r} has format version {info.get('format_version')}; "
                f"this version of ray-durable reads {FORMAT_VERSION}{upgrade}"
            )
        self.num_shards: int = info["num_shards"]
        #: a replicated hub's files are written on the nodes that host its shards: read copies
        #: restored from its replica instead (``runtime._replica_copies``)
        self.replica: str | None = info.get("replica")
        self._copies = ReplicaCopies(name, self.replica) if self.replica else None
        self._conns: dict[int, sqlite3.Connection] = {}

    def close(self) -> None:
        """Close every file opened so far."""
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()
        if self._copies is not None:
            self._copies.close()

    @contextmanager
    def _snapshot(self, shard: int) -> Iterator[sqlite3.Connection]:
        """Shard ``shard``'s file in one read transaction (the statements inside see one commit)."""
        conn = self._conns.get(shard)
        if conn is None:
            path = Path(self.directory, f"shard-{shard:02d}.sqlite")
            if self._copies is not None:
                path = self._copies.path(shard)
            if not path.exists():
                raise ShardFileError(str(path), "is missing")
            # check_same_thread=False: a reader may be used by one thread at a time, not only
            # the one that opened it (the web UI reads on its server's thread, closes on the main)
            conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
            self._conns[shard] = conn
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    @staticmethod
    def _instance_row(conn: sqlite3.Connection, instance_id: str) -> InstanceRow | None:
        sql = f"SELECT {INSTANCE_COLUMNS} FROM instances WHERE instance_id = ?"
        row = conn.execute(sql, (instance_id,)).fetchone()
        return None if row is None else InstanceRow._make(row)

    # -- orchestrations ---------------------------------------------------------------------------

    def get_status(self, instance_id: str) -> DurableOrchestrationStatus | None:
        """The committed status of an instance, or ``None`` if there is none."""
        validate_instance_id(instance_id)
        with self._snapshot(shard_of(instance_id, self.num_shards)) as conn:
            row = self._instance_row(conn, instance_id)
        return None if row is None else status_from_row(row, mode=self._mode)

    def get_history(self, instance_id: str) -> list[HistoryEvent] | list[RawEvent]:
        """The instance's committed history events, oldest first (:class:`RawEvent` with
        ``raw``). Raises for an unknown id."""
        validate_instance_id(instance_id)
        with self._snapshot(shard_of(instance_id, self.num_shards)) as conn:
            row = self._instance_row(conn, instance_id)
            if row is None:
                raise InstanceNotFoundError(instance_id)
            sql = "SELECT event_type, timestamp, name, data FROM history WHERE num = ? ORDER BY seq"
            rows = conn.execute(sql, (row.num,)).fetchall()
        if self.raw:
            return [RawEvent(kind, from_ts(at), name, RawPayload.of(data)) for kind, at, name, data in rows]
        if self._mode == TRUSTED:
            return [load_event(data) for *_, data in rows]
        return [read_event(data, SAFE) for *_, data in rows]

    def instance_names(self) -> list[tuple[str, str]]:
        """Every stored instance's id and orchestrator name, shard by shard, each shard's in
        order of creation."""
        found: list[tuple[str, str]] = []
        sql = "SELECT instance_id, name FROM instances ORDER BY created_at, instance_id"
        for shard in range(self.num_shards):
            with self._snapshot(shard) as conn:
                found += [(row[0], row[1]) for row in conn.execute(sql)]
        return found

    def list_instances(
        self,
        created_time_from: datetime | None = None,
        created_time_to: datetime | None = None,
        runtime_status: StatusFilter = None,
        page_size: int | None = 100,
        continuation_token: str | None = None,
        instance_id_prefix: str | None = None,
        name: str | None = None,
    ) -> InstancePage:
        """One page of instances ordered by creation time, as ``TaskHub.list_instances``."""

        def query_shards(
            lo: float | None, hi: float | None, statuses: list[str] | None, after: tuple[float, str] | None,
            limit: int | None, prefix: str | None, name: str | None,
        ) -> list[list[ShardRow]]:
            where, args = _filters(lo, hi, statuses, prefix, name)
            if after is not None:
                where.append("(created_at, instance_id) > (?, ?)")
                args += list(after)
            sql = f"SELECT {INSTANCE_COLUMNS} FROM instances {'WHERE ' + ' AND '.join(where) if where else ''}"
            sql += " ORDER BY created_at, instance_id LIMIT ?"  # a negative limit is no limit
            parts = []
            for shard in range(self.num_shards):
                with self._snapshot(shard) as conn:
                    rows = map(InstanceRow._make, conn.execute(sql, [*args, -1 if limit is None else limit]).fetchall())
                parts.append([(row.created_at, row.instance_id, status_from_row(row, mode=self._mode)) for row in rows])
            return parts

        return query_page(
            query_shards, created_time_from, created_time_to, runtime_status, page_size, continuation_token,
            instance_id_prefix, name,
        )

    # -- entities ---------------------------------------------------------------------------------

    def read_entity_state(self, entity_id: EntityId) -> EntityStateResponse:
        """An entity's committed state."""
        key = str(entity_id)
        with self._snapshot(shard_of(key, self.num_shards)) as conn:
            found = conn.execute(f"SELECT {ENTITY_COLUMNS} FROM entities WHERE entity_id = ?", (key,)).fetchone()
        if found is None:
            return EntityStateResponse(False, None)
        row = EntityRow._make(found)
        return EntityStateResponse(bool(row.has_state), load_value(row.state, self._mode) if row.has_state else None)

    def list_entities(self, name: str | None = None, include_deleted: bool = False) -> list[EntityMetadata]:
        """Every entity that has state (every one, with ``include_deleted``), or every one
        named ``name`` (in any case), ordered by id (see ``TaskHub.list_entities``)."""
        where, args = [] if include_deleted else ["has_state = 1"], []
        if name is not None:
            where, args = [*where, "name = ?"], [name.lower()]
        sql = f"SELECT {ENTITY_COLUMNS} FROM entities" + (" WHERE " + " AND ".join(where) if where else "")
        found = []
        for shard in range(self.num_shards):
            with self._snapshot(shard) as conn:
                rows = addressable(map(EntityRow._make, conn.execute(sql, args).fetchall()))
                found += [self._entity_metadata(row) for row in rows]
        return sorted(found, key=lambda m: str(m.entity_id).encode())

    def _entity_metadata(self, row: EntityRow) -> EntityMetadata:
        """What ``list_entities`` reports of an ``entities`` row, payloads through this
        reader's mode (raw, the queue shows as its stored text)."""
        exists = bool(row.has_state)
        queue = load_value(row.queue, self._mode) if row.queue is not None else []
        length = len(queue) if isinstance(queue, list) else queue  # a planted queue shows as what it is
        state = load_value(row.state, self._mode) if exists else None
        holder = parse_holder(row.locked_by)[0]
        return EntityMetadata(EntityId.parse(row.entity_id), exists, state, holder, length, from_ts(row.updated_at))

    # -- the hub's code ---------------------------------------------------------------------------

    def saved_registry(self) -> Registry:
        """The registry the shard hosts last installed (kept in every shard file): the code to
        open the hub with, so that opening it from a process that registered nothing (the CLI)
        does not replace the hub's code. Decoding imports the modules the code lives in and
        rebuilds its functions: this runs code from the files (control commands run the hub,
        and so its code, anyway)."""
        with self._snapshot(0) as conn:
            row = conn.execute("SELECT blob FROM registry WHERE id = 0").fetchone()
        if row is None:
            return Registry()
        orchestrators, activities, entity_specs, version = decode(row[0])
        # keyed by lower-cased name (a registry saved before names were case-insensitive was not)
        entity_specs = {name.lower(): spec for name, spec in entity_specs.items()}
        return Registry(orchestrators=orchestrators, activities=activities, entities=entity_specs, version=version)
