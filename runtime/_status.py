"""Client-side views of instances: runtime status, status records, purge results."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from orchestrations import FailureDetails, HistoryEvent


class OrchestrationRuntimeStatus(StrEnum):
    """The lifecycle state of an orchestration instance, as in Durable Functions."""

    Pending = "Pending"
    Running = "Running"
    Completed = "Completed"
    ContinuedAsNew = "ContinuedAsNew"
    Failed = "Failed"
    Terminated = "Terminated"
    Suspended = "Suspended"

    @property
    def is_terminal(self) -> bool:
        """Completed, Failed or Terminated: the instance will not run again by itself."""
        return self in TERMINAL


TERMINAL = frozenset(
    {OrchestrationRuntimeStatus.Completed, OrchestrationRuntimeStatus.Failed, OrchestrationRuntimeStatus.Terminated}
)
ACTIVE = frozenset(
    {OrchestrationRuntimeStatus.Pending, OrchestrationRuntimeStatus.Running, OrchestrationRuntimeStatus.Suspended}
)


@dataclass(frozen=True, slots=True)
class DurableOrchestrationStatus:
    """One instance as a status query sees it (committed state only)."""

    name: str
    instance_id: str
    created_time: datetime
    last_updated_time: datetime
    input_: Any
    output: Any
    runtime_status: OrchestrationRuntimeStatus
    custom_status: Any = None
    history: list[HistoryEvent] | None = None
    failure_details: FailureDetails | None = None


@dataclass(frozen=True, slots=True)
class EntityStateResponse:
    """What ``read_entity_state`` returns: committed state only."""

    entity_exists: bool
    entity_state: Any = None


@dataclass(frozen=True, slots=True)
class EntityMetadata:
    """One entity as ``list_entities`` sees it (committed state only)."""

    entity_id: Any
    entity_exists: bool
    entity_state: Any
    locked_by: str | None
    queue_length: int
    last_modified: datetime


@dataclass(frozen=True, slots=True)
class CleanEntityStorageResult:
    """What ``clean_entity_storage`` did."""

    empty_entities_removed: int
    orphaned_locks_released: int


@dataclass(frozen=True, slots=True)
class PurgeHistoryResult:
    """How many instances a purge deleted."""

    instances_deleted: int


@dataclass(frozen=True, slots=True)
class InstancePage:
    """One page of :meth:`TaskHub.list_instances`; pass ``continuation_token`` back for the next."""

    instances: list[DurableOrchestrationStatus] = field(default_factory=list)
    continuation_token: str | None = None
