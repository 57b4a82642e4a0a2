"""The orchestration context's entity methods: calls, signals and critical sections (locks
taken in one global order, released when the section ends and when the execution does).

A mixin of :class:`~orchestrations._context.OrchestrationContext`, which holds the state it
uses (declared here for the type checker).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from ._actions import Action, CallEntity, LockEntities, SignalEntity, UnlockEntity
from ._checks import check_operation, checked_entity_key
from ._critical import CriticalSection, SectionState, canonical_lock_set
from ._errors import DurableTypeError
from ._guards import check_input
from ._task import CompletableTask, Task


class EntityMethods:
    """Mixed into the orchestration context: entity calls, signals and critical sections."""

    _section: CriticalSection
    _sequence: int
    _is_replaying: bool
    _pending_actions: dict[int, Action]
    _entity_calls: dict[int, tuple[str, str]]
    _entity_check: Callable[[str], None] | None
    _granted: dict[str, int]
    _withdrawn_lock: tuple[tuple[str, ...], int] | None

    def _next_id(self) -> int:
        raise NotImplementedError

    def _schedule(self, action: Action, task: CompletableTask, checked: bool = False) -> CompletableTask:
        raise NotImplementedError

    def call_entity(self, entity_id: object, operation_name: str, operation_input: Any = None) -> Task:
        """Run ``operation_name`` on entity ``entity_id`` (an ``EntityId``); the task's result is
        the operation's result, and a failure raises :class:`TaskFailedError` at the ``yield``.

        Inside a critical section only locked entities may be called, one call at a time each.
        """
        key = self._known_entity(entity_id)
        check_operation(operation_name)
        check_input(operation_input, f"the input of call_entity {key!r} {operation_name!r}")  # before the
        self._section.check_call(key)  # section counts the call as in flight (a refused call takes no
        task_id = self._next_id()  # task number: histories of calls refused by the locking rules)
        self._entity_calls[task_id] = (key, operation_name)
        action = CallEntity(task_id, key, operation_name, operation_input)
        return self._schedule(action, CompletableTask(task_id), checked=True)

    def signal_entity(
        self, entity_id: object, operation_name: str, operation_input: Any = None, *,
        scheduled_time: datetime | None = None,
    ) -> None:
        """Run ``operation_name`` on entity ``entity_id`` one-way (no yield needed).

        With ``scheduled_time`` (a UTC ``datetime``; naive is taken as UTC) the operation runs at
        that time, not before; a time that has passed runs it at once. The time is recorded in
        history with the signal, so replay neither sends it again nor changes it; compute it
        from :attr:`current_utc_datetime`, not the wall clock.

        Inside a critical section, only entities that are not locked may be signalled.
        """
        key = self._known_entity(entity_id)
        check_operation(operation_name)
        if scheduled_time is not None:
            if not isinstance(scheduled_time, datetime):
                raise DurableTypeError(
                    f"scheduled_time must be a datetime (UTC; naive is taken as UTC), got {scheduled_time!r}"
                )
            if scheduled_time.tzinfo is None:
                scheduled_time = scheduled_time.replace(tzinfo=UTC)
        self._section.check_signal(key)
        check_input(operation_input, f"the input of signal_entity {key!r} {operation_name!r}")
        task_id = self._next_id()
        self._pending_actions[task_id] = SignalEntity(task_id, key, operation_name, operation_input, scheduled_time)

    def lock_entities(self, entity_ids: Sequence[object]) -> Task:
        """Lock every entity of ``entity_ids``; the task's result is a lock handle, so
        ``with (yield context.lock_entities([a, b])):`` is a critical section.

        Locks are taken one after the other in one global order (``@name@key`` as bytes), which
        makes deadlock impossible; they are released when the ``with`` block ends, and when the
        orchestration completes, fails, continues as new or is terminated. Sections cannot be
        nested.
        """
        lock_set = canonical_lock_set(entity_ids)
        for key in lock_set:
            self._known_entity(key)
        self._section.begin(lock_set, self._sequence + 1)
        task_id = self._next_id()
        return self._schedule(LockEntities(task_id, lock_set), CompletableTask(task_id))

    def _known_entity(self, entity_id: object) -> str:
        """The canonical id of ``entity_id``; raises ``ValueError`` at the call if no entity
        of its name is registered. Replay checks too, so code that catches the error replays
        the same way (registries only grow, so a name known once stays known)."""
        key = checked_entity_key(entity_id)
        if self._entity_check is not None:
            self._entity_check(key[1:].partition("@")[0])
        return key

    @property
    def is_locked(self) -> bool:
        """Whether this orchestration holds the locks of a critical section."""
        return self._section.state is SectionState.HELD

    def _release_locks(self) -> None:
        """End the critical section: one unlock message per locked entity."""
        section_id = self._section.section_id
        self._unlock(self._section.end(), section_id)

    def _release_all_locks(self) -> None:
        """The execution ends: end the critical section, and release every other lock its
        history says it holds (after a nondeterminism failure the code's section state may
        never have seen a lock that was granted)."""
        section = self._section
        if section.state is SectionState.ACQUIRING and not self._is_replaying:  # replay: withdrawn then
            self._withdrawn_lock = (section.locked, section.section_id)
        self._release_locks()
        for key in sorted(self._granted, key=lambda k: k.encode("utf-8")):
            self._unlock([key], self._granted[key])

    def _unlock(self, keys: Sequence[str], section_id: int) -> None:
        """One unlock action per entity of ``keys``, for the section ``section_id`` (its lock
        request's task id): the entity releases only that exact lock."""
        for key in keys:
            self._granted.pop(key, None)
            task_id = self._next_id()
            self._pending_actions[task_id] = UnlockEntity(task_id, key, section_id)
