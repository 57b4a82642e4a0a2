"""The entity programming model: durable entities addressed by ``EntityId(name, key)``,
function style or class style, and the pure entity executor. Imports neither Ray nor SQLite."""

from ._context import EntityContext, EntityReadContext, current_context
from ._executor import EntityExecutor, EntityState, Outgoing, run_entity
from ._ids import EntityId
from ._registry import EntitySpec, entity

__all__ = [
    "EntityContext",
    "EntityExecutor",
    "EntityId",
    "EntityReadContext",
    "EntitySpec",
    "EntityState",
    "Outgoing",
    "current_context",
    "entity",
    "run_entity",
]
