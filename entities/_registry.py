"""``@entity``: register a function-style or class-style entity by name."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from orchestrations import DurableTypeError, default_registry

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class EntitySpec:
    """A registered entity: a function taking an ``EntityContext``, or a class whose public
    methods are its operations (an instance is the state)."""

    name: str
    target: Any
    is_class: bool

    def operation(self, obj: Any, name: str) -> Callable[..., Any] | None:
        """The bound method for operation ``name`` of a class entity, or ``None``."""
        if name.startswith("_"):
            return None
        method = getattr(obj, name, None)
        return method if callable(method) else None


@overload
def entity(target: T, /) -> T: ...
@overload
def entity(*, name: str | None = None) -> Callable[[T], T]: ...
def entity(target: Any = None, /, *, name: str | None = None) -> Any:
    """Register an entity (``@entity`` or ``@entity(name=...)``) in the default registry.

    Function style: ``def Counter(context: EntityContext)`` reads ``context.operation_name``.
    Class style: ``__init__`` runs when the entity is first used; public methods are the
    operations and take zero or one argument (the operation's input).
    """

    def register(t: Any) -> Any:
        if not (inspect.isclass(t) or callable(t)):
            raise DurableTypeError(f"an entity must be a function or a class, got {t!r}")
        spec = EntitySpec(name or t.__name__, t, inspect.isclass(t))
        default_registry.add_entity(spec.name, spec)
        t.__durable_name__ = spec.name
        return t

    return register(target) if target is not None else register
