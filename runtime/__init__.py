"""The runtime: the task hub client, shard host actors, the SQLite store, activity workers.

Everything that moves or stores lives here; the semantics live in ``orchestrations`` and
``entities``.

The public names are imported when first used (PEP 562): a Ray worker that runs activities
or a warm worker imports only the modules it needs (``runtime._activities``, ...), not the
client, the shard host and the store. ``from runtime import TaskHub`` works as before.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from ._tracing import TraceIdsFilter

#: each public name and the module it comes from
_SOURCES = {
    "CleanEntityStorageResult": "runtime._status",
    "DurableOrchestrationStatus": "runtime._status",
    "EntityMetadata": "runtime._status",
    "EntityStateResponse": "runtime._status",
    "HistoryEvent": "orchestrations",
    "InstancePage": "runtime._status",
    "OrchestrationRuntimeStatus": "runtime._status",
    "PurgeHistoryResult": "runtime._status",
    "TaskHub": "runtime._client",
    "TraceIdsFilter": "runtime._tracing",
}

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
    "TraceIdsFilter",
]


def __getattr__(name: str) -> Any:
    """Import a public name on first use (and keep it, so this runs once per name)."""
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module 'runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(source), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
