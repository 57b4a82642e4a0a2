"""What entity code sees: the operation, the state, and one-way messages it may send.

:class:`EntityContext` can change state; :class:`EntityReadContext` (read paths) cannot.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from orchestrations import DurableValueError, validate_instance_id
from orchestrations._ids import new_instance_id

from ._ids import EntityId

_current: contextvars.ContextVar[EntityContext | None] = contextvars.ContextVar("entity_context", default=None)


@dataclass(frozen=True, slots=True)
class SignalOut:
    """A signal an operation sends to another entity (sent after the commit)."""

    entity_id: str
    operation_name: str
    operation_input: Any


@dataclass(frozen=True, slots=True)
class StartOut:
    """An orchestration an operation starts (started after the commit)."""

    name: str
    input: Any
    instance_id: str


class EntityReadContext:
    """Read-only view of an entity: its id and committed state."""

    def __init__(self, entity_id: EntityId, state: Any, exists: bool) -> None:
        self._entity_id = entity_id
        self._state = state
        self._exists = exists

    @property
    def entity_id(self) -> EntityId:
        """This entity's id."""
        return self._entity_id

    @property
    def entity_name(self) -> str:
        """The entity's registered name."""
        return self._entity_id.name

    @property
    def entity_key(self) -> str:
        """The entity's key."""
        return self._entity_id.key

    @property
    def has_state(self) -> bool:
        """Whether the entity has state (it was used and not deleted)."""
        return self._exists


class EntityContext(EntityReadContext):
    """The context of one operation. Changes are kept only if the operation returns."""

    def __init__(self, entity_id: EntityId, operation_name: str, operation_input: Any,
                 state: Any, exists: bool, entity_check: Callable[[str], None] | None = None) -> None:
        super().__init__(entity_id, state, exists)
        self._entity_check = entity_check
        self._operation_name = operation_name
        self._input = operation_input
        self._result: Any = None
        self._deleted = False
        self.outbox: list[SignalOut | StartOut] = []

    @property
    def operation_name(self) -> str:
        """The operation being run."""
        return self._operation_name

    def get_input(self) -> Any:
        """The operation's input."""
        return self._input

    def get_state(self, initializer: Callable[[], Any] | None = None) -> Any:
        """The state, or ``initializer()`` (else ``None``) if the entity has none yet."""
        if not self._exists:
            return initializer() if initializer is not None else None
        return self._state

    def set_state(self, value: Any) -> None:
        """Replace the state (the entity now exists)."""
        self._state, self._exists, self._deleted = value, True, False

    def delete_state(self) -> None:
        """Delete the state (the entity no longer exists)."""
        self._state, self._exists, self._deleted = None, False, True

    def set_result(self, value: Any) -> None:
        """The value returned to a caller of this operation."""
        self._result = value

    def signal_entity(self, entity_id: EntityId, operation_name: str, operation_input: Any = None) -> None:
        """Send a one-way operation to another entity (after this operation commits, and not
        at all if it fails). An entity name no registered entity has raises
        ``ValueError`` here, failing the operation."""
        if not isinstance(entity_id, EntityId):
            raise DurableValueError(f"signal_entity takes an EntityId, got {entity_id!r}")
        if not isinstance(operation_name, str) or not operation_name:
            raise DurableValueError(f"operation name must be a non-empty str, got {operation_name!r}")
        if self._entity_check is not None:
            self._entity_check(entity_id.name)
        self.outbox.append(SignalOut(str(entity_id), operation_name, operation_input))

    def start_new_orchestration(self, name: str, input_: Any = None, instance_id: str | None = None) -> str:
        """Start an orchestration (after this operation commits); returns its instance id."""
        if not isinstance(name, str) or not name:
            raise DurableValueError(f"orchestration name must be a non-empty str, got {name!r}")
        iid = new_instance_id() if instance_id is None else validate_instance_id(instance_id)
        self.outbox.append(StartOut(name, input_, iid))
        return iid


def current_context() -> EntityContext:
    """The context of the operation running now (for class-style entities)."""
    ctx = _current.get()
    if ctx is None:
        raise DurableValueError("current_context() is only available inside an entity operation")
    return ctx
