"""The read paths of a shard host: status, history, waits, queries, entity reads (purges and
entity clean-up, which write, are in ``_shard_admin``).

Queries read the store's read-only connection, so they see committed state only and never
wait for a turn: the status, history, listing and entity reads run on their own event loop
(the actor's ``reads`` concurrency group, :data:`READS`), so orchestrator code that blocks a
turn does not hold them up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from typing import Any

import ray

from orchestrations import InstanceNotFoundError

from ._codec import LENIENT, load_value
from ._codec_records import read_event
from ._entity_host import EntityRecord, addressable, unpack_state
from ._messages import status_from_row
from ._schema import InstanceRow
from ._shard_base import ShardBase
from ._status import (
    DurableOrchestrationStatus,
    EntityMetadata,
    EntityStateResponse,
    OrchestrationRuntimeStatus,
)

#: the actor's concurrency group (its own thread and event loop) of the reads that must not
#: wait for a turn
READS = "reads"


class ShardQueries(ShardBase):
    """Mixed into :class:`ShardHost`: everything that reads rather than runs a turn."""

    async def _ready_to_read(self) -> None:
        """Have the host started before a read on the ``reads`` loop: the start belongs to the
        main loop (its locks, tasks and servers live there), so ask for it through the actor."""
        if self._loop_task is None:
            await ray.get_runtime_context().current_actor.peer_address.remote()

    @ray.method(concurrency_group=READS)
    async def get_status(
        self, instance_id: str, show_history: bool = False, show_history_output: bool = False,
        show_input: bool = True,
    ) -> DurableOrchestrationStatus | None:
        """The committed status of an instance, or ``None``."""
        await self._ready_to_read()
        return await self._read_status(instance_id, show_history, show_history_output, show_input)

    async def _read_status(
        self, instance_id: str, show_history: bool = False, show_history_output: bool = False,
        show_input: bool = True,
    ) -> DurableOrchestrationStatus | None:
        await self._journal_visible((instance_id,))
        row = await self._store.get_instance(instance_id)
        status = None if row is None else await self._status(row, show_history, show_history_output, show_input)
        await self._visible()
        return status

    async def read_row(self, instance_id: str) -> InstanceRow | None:
        """The committed ``instances`` row of an instance, or ``None``: what a client builds a
        status from itself (:func:`status_from_row`), so that decoding its payloads and encoding
        the status for the wire cost the driver's CPU rather than the host's."""
        await self._journal_visible((instance_id,))
        row = await self._store.get_instance(instance_id)
        await self._visible()
        return row

    @ray.method(concurrency_group=READS)
    async def get_statuses(
        self, instance_ids: Sequence[str], show_history: bool = False, show_history_output: bool = False,
        show_input: bool = True,
    ) -> list[DurableOrchestrationStatus | None]:
        """The committed status of each instance of ``instance_ids`` (``None`` for an unknown
        one), in the same order; one read for all of them."""
        await self._ready_to_read()
        await self._journal_visible(instance_ids)
        rows = await self._store.load_instances(list(dict.fromkeys(instance_ids)), reader=True)
        found = {
            iid: await self._status(row, show_history, show_history_output, show_input) for iid, row in rows.items()
        }
        await self._visible()
        return [found.get(iid) for iid in instance_ids]

    async def _status(
        self, row: Any, show_history: bool, show_history_output: bool, show_input: bool
    ) -> DurableOrchestrationStatus:
        status = status_from_row(row, show_input)
        if show_history:
            history: list[Any] = [read_event(b) for b in await self._store.load_history(row.num, reader=True)]
            if not show_history_output:
                history = [_without_output(e) for e in history]
            status = replace(status, history=history)
        return status

    @ray.method(concurrency_group=READS)
    async def get_history(self, instance_id: str) -> list[Any] | None:
        """The committed history events of an instance, oldest first (``None`` if unknown)."""
        await self._ready_to_read()
        await self._journal_visible((instance_id,))
        row = await self._store.get_instance(instance_id)
        history = None if row is None else [read_event(b) for b in await self._store.load_history(row.num, reader=True)]
        await self._visible()
        return history

    async def wait(self, instance_id: str, timeout: float | None) -> DurableOrchestrationStatus | None:
        """Wait until the instance is Completed, Failed or Terminated; ``None`` on timeout."""
        return row_status(await self.wait_row(instance_id, timeout))

    async def wait_start(self, instance_id: str, timeout: float | None) -> DurableOrchestrationStatus | None:
        """Wait until the instance is no longer Pending (it started, or was terminated before
        it did); ``None`` on timeout."""
        return row_status(await self.wait_start_row(instance_id, timeout))

    async def wait_row(self, instance_id: str, timeout: float | None) -> InstanceRow | None:
        """:meth:`wait`, answering with the committed row (see :meth:`read_row`)."""
        return await self._wait_until(self._waiters, instance_id, timeout, _ended)

    async def wait_start_row(self, instance_id: str, timeout: float | None) -> InstanceRow | None:
        """:meth:`wait_start`, answering with the committed row (see :meth:`read_row`)."""
        return await self._wait_until(self._start_waiters, instance_id, timeout, _started)

    async def _wait_until(
        self, registry: dict[str, list[asyncio.Future[Any]]], instance_id: str, timeout: float | None,
        reached: Callable[[OrchestrationRuntimeStatus], bool],
    ) -> InstanceRow | None:
        """The instance's row once its status is ``reached``: at once if it is already, else
        when a turn commits it (the turn resolves the future ``registry`` holds with the row it
        committed); ``None`` on timeout. An instance that does not exist yet is waited for too
        (a parent may not have created the child whose id its caller knows, as DurableTask.Core
        and the durabletask clients wait); if it still does not exist at the timeout, this
        raises :class:`InstanceNotFoundError`."""
        await self._ensure_started()
        future = asyncio.get_running_loop().create_future()
        registry.setdefault(instance_id, []).append(future)
        try:
            row = await self.read_row(instance_id)
            if row is not None and reached(OrchestrationRuntimeStatus(row.status)):
                return row
            try:
                committed: InstanceRow = await asyncio.wait_for(future, timeout)
            except TimeoutError:
                if row is None and await self.read_row(instance_id) is None:
                    raise InstanceNotFoundError(instance_id) from None
                return None
            return committed  # the row the turn committed: no read
        finally:
            waiters = registry.get(instance_id, [])
            if future in waiters:
                waiters.remove(future)
            if not waiters:
                registry.pop(instance_id, None)

    async def progress(self, instance_id: str) -> tuple[int, int]:
        """(activities finished, activities scheduled) of the current execution: from memory,
        or, for an instance not held there (one that ended leaves it), counted in its committed
        history; (0, 0) for an unknown instance."""
        await self._ensure_started()
        inst = self._cache.get(instance_id)
        if inst is not None:
            return (inst.tasks_done, inst.tasks_scheduled)
        row = await self._store.get_instance(instance_id)
        return (0, 0) if row is None else await self._store.task_counts(row.num)

    @ray.method(concurrency_group=READS)
    async def query(
        self, created_from: float | None, created_to: float | None, statuses: list[str] | None,
        after: tuple[float, str] | None, limit: int | None, show_input: bool = True, prefix: str | None = None,
        name: str | None = None,
    ) -> list[tuple[float, str, DurableOrchestrationStatus]]:
        """Committed instances ordered by (created time, id), after the key ``after``; only the
        ids that start with ``prefix``, if given (a range scan of the primary key), and only the
        instances of orchestrator ``name``, if given."""
        await self._ready_to_read()
        await self._journal_visible(None)
        rows = await self._store.query_instances(created_from, created_to, statuses, after, limit, prefix, name)
        await self._visible()
        return [(row.created_at, row.instance_id, status_from_row(row, show_input)) for row in rows]

    @ray.method(concurrency_group=READS)
    async def read_entity(self, key: str) -> EntityStateResponse:
        """An entity's committed state."""
        await self._ready_to_read()
        row = await self._store.get_entity(key)
        await self._visible()
        if row is None or not row.has_state:
            return EntityStateResponse(False, None)
        state = load_value(row.state, LENIENT)
        return EntityStateResponse(True, unpack_state(state, self._entity_specs.get(row.name.lower())))

    @ray.method(concurrency_group=READS)
    async def list_entities(self, name: str | None, include_deleted: bool = False) -> list[EntityMetadata]:
        """Committed entities of this shard that have state (all, with ``include_deleted``),
        optionally of one (lower-cased) name."""
        await self._ready_to_read()
        rows = addressable(await self._store.query_entities(name, with_state_only=not include_deleted))
        await self._visible()
        return [EntityRecord.from_row(row, self._entity_specs.get(row.name.lower())).metadata() for row in rows]


def _ended(status: OrchestrationRuntimeStatus) -> bool:
    return status.is_terminal


def _started(status: OrchestrationRuntimeStatus) -> bool:
    return status is not OrchestrationRuntimeStatus.Pending


def row_status(row: Sequence[Any] | None, show_input: bool = True) -> DurableOrchestrationStatus | None:
    """The status of an ``instances`` row (``None`` stays ``None``): what the host's Ray methods
    answer, and what a client builds from a row the connection brought as a plain tuple."""
    return None if row is None else status_from_row(InstanceRow._make(row), show_input)


def _without_output(event: Any) -> Any:
    """``event`` with its input and result payloads blanked (``show_history_output=False``)."""
    names = {f.name for f in fields(event)}
    changes = {k: None for k in ("result", "input") if k in names}
    return replace(event, **changes) if changes else event
