"""The task hub client's entity operations: signals, reads, queries and orphaned-lock release."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from entities import EntityId
from entities._registry import check_entity_name
from orchestrations import DurableTypeError, DurableValueError, EntityRequest, EntityUnlockMessage, Registry
from orchestrations._ids import check_encodable

from ._client_args import utc_now, utc_timestamp
from ._client_base import ClientParts
from ._codec import encode
from ._messages import Message
from ._status import CleanEntityStorageResult, DurableOrchestrationStatus, EntityMetadata, EntityStateResponse
from ._tracing import current_traceparent, enabled


class EntityClient(ClientParts):
    """Mixed into :class:`TaskHub`: what a driver does with durable entities."""

    _registry: Registry
    _hub_entities: frozenset[str] | None

    def signal_entity(
        self, entity_id: EntityId, operation_name: str, operation_input: Any = None, *,
        scheduled_time: datetime | None = None,
    ) -> None:
        """Run ``operation_name`` on an entity, one-way; returns once the signal is committed.

        The entity is created on first use. Signals from one client run in the order sent.
        With ``scheduled_time`` (a UTC ``datetime``; naive is taken as UTC) the operation runs
        at that time, not before, even across a restart of the entity's shard host (the signal
        is kept in its shard file meanwhile); a time that has passed runs it now.
        """
        self._submit([self._signal_message(entity_id, operation_name, operation_input, scheduled_time)])

    def _signal_message(
        self, entity_id: EntityId, operation_name: str, operation_input: Any, scheduled_time: datetime | None
    ) -> Message:
        key = _entity_key(entity_id)
        if not isinstance(operation_name, str) or not operation_name:
            raise DurableValueError(f"operation name must be a non-empty string, got {operation_name!r}")
        check_encodable(operation_name, "operation name")
        due = utc_timestamp(scheduled_time, "scheduled_time") if scheduled_time is not None else None
        encode(operation_input, "operation_input")
        self._sync_registry()
        self._check_entity_name(entity_id.name)
        # the operation's span joins the caller's current span, if it is tracing
        trace = current_traceparent() if enabled(fresh=True) else None
        request = EntityRequest(utc_now(), operation_name, operation_input, None, True, trace)
        return Message(key, request, due=due)

    def _check_entity_name(self, name: str) -> None:
        """Raise ``ValueError`` (nothing written) unless an entity named ``name`` is registered
        in this driver or on the hub. The hub's names are asked for once and cached; a name
        not in the cache asks again (another driver may have registered it since)."""
        if name in self._registry.entities:
            return
        if self._hub_entities is None or name not in self._hub_entities:
            self._hub_entities = frozenset(self._call(lambda: self._shards[0].entity_names.remote()))
        check_entity_name(name, self._hub_entities | self._registry.entities.keys())

    def read_entity_state(self, entity_id: EntityId) -> EntityStateResponse:
        """An entity's committed state (never a state an operation is still changing).

        An entity that does not exist, including one of a name nobody registered, reads as
        ``entity_exists=False`` (as Durable Functions' ``ReadEntityStateAsync`` and
        durabletask's ``get_entity``): reading cannot create or change anything.
        """
        key = _entity_key(entity_id)
        return self._call(lambda: self._shard(key).read_entity.remote(key))

    def list_entities(self, name: str | None = None, include_deleted: bool = False) -> list[EntityMetadata]:
        """Every entity that has state (or every one named ``name``, in any case), ordered by id.

        Entities without state (deleted ones, and ones that only hold a lock or have messages
        waiting) are listed too with ``include_deleted=True`` (Durable Functions'
        ``IncludeDeleted``), until ``clean_entity_storage`` removes the empty ones.
        """
        name = _entity_name_filter(name)
        parts = self._call(lambda: [s.list_entities.remote(name, include_deleted) for s in self._shards])
        return sorted((m for part in parts for m in part), key=lambda m: str(m.entity_id).encode())

    def clean_entity_storage(self) -> CleanEntityStorageResult:
        """Release every lock whose holder is no longer running (finished, purged or unknown),
        then forget entities with no state, no lock and nothing queued.

        Each unlock names the lock it releases exactly (holder instance, execution and lock
        request), so it cannot race the holder's own unlock still in flight: whichever comes
        second is ignored, and neither releases a lock taken since (by anyone, including a
        later execution of the same instance)."""
        parts = self._call(lambda: [s.locked_entities.remote() for s in self._shards])
        locked = [lock for part in parts for lock in part]
        holders = {holder for _, holder, _, _ in locked}
        orphaned = {h for h in holders if not _holds_locks(self.get_status(h))}
        unlocks = [
            Message(key, EntityUnlockMessage(utc_now(), holder, execution_id, section_id))
            for key, holder, execution_id, section_id in locked
            if holder in orphaned
        ]
        if unlocks:
            self._submit(unlocks)
        removed = self._call(lambda: [s.remove_empty_entities.remote() for s in self._shards])
        return CleanEntityStorageResult(sum(removed), len(unlocks))


def _entity_key(entity_id: object) -> str:
    if not isinstance(entity_id, EntityId):
        raise DurableTypeError(f"expected an EntityId, got {entity_id!r}")
    return str(entity_id)


def _entity_name_filter(name: object) -> str | None:
    """The ``name`` filter of an entity query, lower-cased (entity names are case-insensitive)."""
    if name is None:
        return None
    if not isinstance(name, str) or not name:
        raise DurableValueError(f"entity name must be a non-empty str, got {name!r}")
    return name.lower()


def _holds_locks(status: DurableOrchestrationStatus | None) -> bool:
    """Whether an instance with this status may still hold (or be granted) locks."""
    return status is not None and not status.runtime_status.is_terminal
