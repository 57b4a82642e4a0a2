"""The read paths of a shard host: status, history, waits, queries, purges, entity reads.

Queries read the store's read-only connection, so they see committed state only and never
wait for a turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import fields, replace
from typing import TYPE_CHECKING, Any

from orchestrations import InstanceNotFoundError

from ._codec import decode
from ._entity_host import EntityRecord, addressable, parse_holder, unpack_state
from ._messages import status_from_row
from ._status import (
    TERMINAL,
    DurableOrchestrationStatus,
    EntityMetadata,
    EntityStateResponse,
    OrchestrationRuntimeStatus,
)

if TYPE_CHECKING:
    from ._store import ShardStore


class ShardQueries:
    """Mixed into :class:`ShardHost`: everything that reads rather than runs a turn."""

    _store: ShardStore
    _db_lock: asyncio.Lock
    _cache: Any
    _entities: Any
    _entity_specs: dict[str, Any]
    _waiters: dict[str, list[asyncio.Future[Any]]]

    def _evict(self, iid: str) -> None:
        raise NotImplementedError

    async def _ensure_started(self) -> None:
        raise NotImplementedError

    async def get_status(
        self, instance_id: str, show_history: bool = False, show_history_output: bool = False,
        show_input: bool = True,
    ) -> DurableOrchestrationStatus | None:
        """The committed status of an instance, or ``None``."""
        await self._ensure_started()
        row = await self._store.get_instance(instance_id)
        if row is None:
            return None
        status = status_from_row(row, show_input)
        if show_history:
            history = [decode(b) for b in await self._store.load_history(row[11], reader=True)]
            if not show_history_output:
                history = [_without_output(e) for e in history]
            status = replace(status, history=history)
        return status

    async def get_history(self, instance_id: str) -> list[Any] | None:
        """The committed history events of an instance, oldest first (``None`` if unknown)."""
        await self._ensure_started()
        row = await self._store.get_instance(instance_id)
        if row is None:
            return None
        return [decode(b) for b in await self._store.load_history(row[11], reader=True)]

    async def wait(self, instance_id: str, timeout: float | None) -> DurableOrchestrationStatus | None:
        """Wait until the instance is Completed, Failed or Terminated; ``None`` on timeout."""
        await self._ensure_started()
        future = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(instance_id, []).append(future)
        try:
            status = await self.get_status(instance_id)
            if status is None:
                raise InstanceNotFoundError(instance_id)
            if status.runtime_status.is_terminal:
                return status
            try:
                row = await asyncio.wait_for(future, timeout)
            except TimeoutError:
                return None
            return status_from_row(row, True)  # the row the finishing turn committed: no read
        finally:
            waiters = self._waiters.get(instance_id, [])
            if future in waiters:
                waiters.remove(future)
            if not waiters:
                self._waiters.pop(instance_id, None)

    async def progress(self, instance_id: str) -> tuple[int, int]:
        """(activities finished, activities scheduled) of the current execution, from memory."""
        await self._ensure_started()
        inst = self._cache.get(instance_id)
        return (inst.tasks_done, inst.tasks_scheduled) if inst is not None else (0, 0)

    async def query(
        self, created_from: float | None, created_to: float | None, statuses: list[str] | None,
        after: tuple[float, str] | None, limit: int | None, show_input: bool = True,
    ) -> list[tuple[float, str, DurableOrchestrationStatus]]:
        """Committed instances ordered by (created time, id), after the key ``after``."""
        await self._ensure_started()
        rows = await self._store.query_instances(created_from, created_to, statuses, after, limit)
        return [(row[9], row[0], status_from_row(row, show_input)) for row in rows]

    async def purge(self, instance_ids: Sequence[str]) -> int:
        """Delete terminal instances and their history; active ones are left alone."""
        await self._ensure_started()
        async with self._db_lock:
            rows = await self._store.load_instances(list(instance_ids))
            ids = [i for i, r in rows.items() if OrchestrationRuntimeStatus(r[3]) in TERMINAL]
            count = await self._store.purge(ids)
        for iid in ids:
            self._evict(iid)
        return count

    async def purge_by(
        self, created_from: float | None, created_to: float | None, statuses: list[str] | None
    ) -> int:
        """Purge the terminal instances that match the filters."""
        await self._ensure_started()
        allowed = [s.value for s in TERMINAL]
        statuses = [s for s in statuses if s in allowed] if statuses is not None else allowed
        rows = await self._store.query_instances(created_from, created_to, statuses, None, None)
        return await self.purge([r[0] for r in rows])

    async def read_entity(self, key: str) -> EntityStateResponse:
        """An entity's committed state."""
        await self._ensure_started()
        row = await self._store.get_entity(key)
        if row is None or not row[2]:
            return EntityStateResponse(False, None)
        return EntityStateResponse(True, unpack_state(decode(row[3]), self._entity_specs.get(row[1].lower())))

    async def list_entities(self, name: str | None, include_deleted: bool = False) -> list[EntityMetadata]:
        """Committed entities of this shard that have state (all, with ``include_deleted``),
        optionally of one (lower-cased) name."""
        await self._ensure_started()
        rows = addressable(await self._store.query_entities(name, with_state_only=not include_deleted))
        return [EntityRecord.from_row(row, self._entity_specs.get(row[1].lower())).metadata() for row in rows]

    async def entity_names(self) -> list[str]:
        """The (lower-cased) names of the entities registered here: the union of every
        registry installed on this hub."""
        await self._ensure_started()
        return sorted(self._entity_specs)

    async def locked_entities(self) -> list[tuple[str, str, str | None, int | None]]:
        """The committed locks of this shard: (entity id, holder instance id, its execution
        id, the task id of its lock request); the last two are ``None`` for a lock recorded
        before holders were identified."""
        await self._ensure_started()
        locks = []
        for row in addressable(await self._store.query_entities(None, locked_only=True)):
            holder, lock = parse_holder(row[4])
            assert holder is not None
            locks.append((row[0], holder, *((lock.execution_id, lock.task_scheduled_id) if lock else (None, None))))
        return locks

    async def remove_empty_entities(self) -> int:
        """Forget entities with no state, no lock and nothing queued."""
        await self._ensure_started()
        rows = await self._store.query_entities(None)
        keys = [r[0] for r in rows if not r[2] and r[4] is None and r[5] is None]
        keys = [k for k in keys if k not in self._entities or self._entities[k].state.is_empty]
        async with self._db_lock:
            count = await self._store.delete_entities(keys)
        for key in keys:
            self._entities.pop(key, None)
        return count


def _without_output(event: Any) -> Any:
    """``event`` with its input and result payloads blanked (``show_history_output=False``)."""
    names = {f.name for f in fields(event)}
    changes = {k: None for k in ("result", "input") if k in names}
    return replace(event, **changes) if changes else event
