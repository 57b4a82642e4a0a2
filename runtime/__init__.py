"""The runtime: the task hub client, shard host actors, the SQLite store, activity workers.

Everything that moves or stores lives here; the semantics live in ``orchestrations`` and
``entities``.
"""

from orchestrations import HistoryEvent

from ._client import TaskHub
from ._status import (
    CleanEntityStorageResult,
    DurableOrchestrationStatus,
    EntityMetadata,
    EntityStateResponse,
    InstancePage,
    OrchestrationRuntimeStatus,
    PurgeHistoryResult,
)

__all__ = [
    "CleanEntityStorageResult",
    "DurableOrchestrationStatus",
    "EntityMetadata",
    "EntityStateResponse",
    "HistoryEvent",
    "InstancePage",
    "OrchestrationRuntimeStatus",
    "PurgeHistoryResult",
    "TaskHub",
]
