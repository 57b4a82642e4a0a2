"""``@entity``: register a function-style or class-style entity by name."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from orchestrations import DurableTypeError, DurableValueError, default_registry
from orchestrations._registry import did_you_mean

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
    operations and take zero or one argument (the operation's input); called without input,
    a parameter with a default keeps its default. Entity names are case-insensitive
    (``EntityId("counter", k)`` addresses ``Counter``); two names differing only in case are
    one name, registered twice. Operations are plain functions: an ``async def`` or generator
    entity function is refused here.
    """

    def register(t: Any) -> Any:
        if not (inspect.isclass(t) or callable(t)):
            raise DurableTypeError(f"an entity must be a function or a class, got {t!r}")
        if inspect.iscoroutinefunction(t) or inspect.isasyncgenfunction(t) or inspect.isgeneratorfunction(t):
            raise DurableTypeError(
                f"entity {getattr(t, '__name__', t)!r} must be a plain function, not async or a generator: "
                "its operations run to completion inside the entity's turn"
            )
        spec = EntitySpec(name or t.__name__, t, inspect.isclass(t))
        default_registry.add_entity(spec.name, spec)
        t.__durable_name__ = spec.name
        return t

    return register(target) if target is not None else register


def unknown_entity_error(name: str, known: Collection[str]) -> DurableValueError:
    """The error for an operation on entity ``name`` that no registered entity has, naming
    the closest registered names (or all of them, if few and none is close)."""
    hint = did_you_mean(name, known, fold_case=True).replace("nothing is registered", "no entity is registered")
    return DurableValueError(
        f"no entity named {name!r} is registered ({hint}); register it with @entity "
        "in the driver or the hub (entity names are case-insensitive)"
    )


def check_entity_name(name: str, known: Collection[str]) -> None:
    """Raise :func:`unknown_entity_error` unless ``name`` (in any case) is one of ``known``
    (lower-cased registered names)."""
    if name.lower() not in known:
        raise unknown_entity_error(name, known)
