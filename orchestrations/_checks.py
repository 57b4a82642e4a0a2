"""Checks of the arguments orchestrator code passes to the context: each raises
``DurableTypeError``/``DurableValueError`` naming the bad value (which fails the orchestration
unless caught). Pure."""

from __future__ import annotations

from datetime import timedelta

from ._errors import DurableTypeError, DurableValueError, describe
from ._ids import check_encodable
from ._ids import entity_key as canonical_entity_key
from ._retry import RetryOptions
from ._task import Task


def checked_entity_key(entity_id: object) -> str:
    """The canonical ``@name@key`` of an ``EntityId`` (or its string form); refuses anything else."""
    key = str(entity_id)
    if not key.startswith("@") or key.count("@") < 2 or isinstance(entity_id, (bytes, int)):
        raise DurableTypeError(f"expected an EntityId, got {entity_id!r}")
    return canonical_entity_key(key)  # names are case-insensitive: one canonical string per entity


def timeout_delta(timeout: object) -> timedelta:
    """A wait's timeout (a ``timedelta`` or seconds, not negative, not NaN) as a ``timedelta``."""
    if isinstance(timeout, bool) or not isinstance(timeout, (timedelta, int, float)):
        raise DurableTypeError(f"timeout must be a timedelta or a number of seconds, got {timeout!r}")
    if not isinstance(timeout, timedelta) and not timeout >= 0:  # refuses NaN too
        raise DurableValueError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
    delta = timeout if isinstance(timeout, timedelta) else timedelta(seconds=timeout)
    if delta < timedelta(0):
        raise DurableValueError(f"timeout must not be negative, got {timeout!r}")
    return delta


def task_list(tasks: object, what: str) -> list[Task]:
    """``tasks`` as a list of Tasks, or a TypeError that says what was passed instead."""
    if isinstance(tasks, (Task, str, bytes, dict)) or not hasattr(tasks, "__iter__"):
        raise DurableTypeError(f"{what} takes a list of tasks, got {describe(tasks)}")
    items = list(tasks)  # type: ignore[call-overload]
    for item in items:
        if not isinstance(item, Task):
            raise DurableTypeError(
                f"{what} takes a list of tasks, and {describe(item)} is not a Task "
                "(pass the tasks themselves: no yield inside the list)"
            )
    return items


def check_operation(name: object) -> None:
    """An entity operation name: a non-empty ``str`` (valid UTF-8)."""
    if not isinstance(name, str) or not name:
        raise DurableValueError(f"operation name must be a non-empty str, got {name!r}")
    check_encodable(name, "operation name")


def check_retry(retry_options: object) -> None:
    """A ``RetryOptions``, not something else."""
    if not isinstance(retry_options, RetryOptions):
        raise DurableTypeError(f"retry_options must be a RetryOptions, got {retry_options!r}")
