"""The critical-section rules of an orchestration, as one small state machine.

States: ``free`` -> (lock_entities) -> ``acquiring`` -> (lock granted) -> ``held`` -> (leave
the ``with`` block, or the orchestration ends) -> ``free``. Each check raises
:class:`LockingRulesViolationError` naming the rule; the rules are those of Durable Functions:
no nesting; inside, only locked entities may be called, never two calls in flight to one
entity, no sub-orchestrations, and signals only to entities that are not locked. A call waits
for the grant: one made while the locks are still being acquired is refused (as in
durabletask), since it would reach an entity the lock has not reached yet and be served
outside the section (a read another section's write then makes stale: a lost update).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum

from ._errors import DurableTypeError, DurableValueError, LockingRulesViolationError
from ._ids import entity_key


class SectionState(Enum):
    """Where the orchestration stands with respect to a critical section."""

    FREE = "free"
    ACQUIRING = "acquiring"
    HELD = "held"


def canonical_lock_set(entity_ids: Iterable[object]) -> tuple[str, ...]:
    """The de-duplicated entity ids in the one global lock order: ``@name@key`` (the name
    lower-cased, see :func:`entity_key`) as UTF-8 bytes."""
    if not isinstance(entity_ids, Iterable):
        hint = f": write lock_entities([{entity_ids!r}])" if str(entity_ids).startswith("@") else ""
        raise DurableTypeError(f"lock_entities takes a list of EntityId, got {entity_ids!r}{hint}")
    ids = list(entity_ids) if not isinstance(entity_ids, (str, bytes)) else None
    if not ids:
        raise DurableValueError(f"lock_entities needs a non-empty list of EntityId, got {entity_ids!r}")
    keys = []
    for entity_id in ids:
        text = str(entity_id)
        if not text.startswith("@") or text.count("@") < 2:
            raise DurableTypeError(f"lock_entities takes EntityId values, got {entity_id!r}")
        keys.append(entity_key(text))
    return tuple(sorted(set(keys), key=lambda k: k.encode("utf-8")))


class CriticalSection:
    """The critical-section state of one orchestration execution."""

    __slots__ = ("in_flight", "locked", "section_id", "state")

    def __init__(self) -> None:
        self.state = SectionState.FREE
        self.locked: tuple[str, ...] = ()
        self.in_flight: set[str] = set()
        #: the task id of the lock request that opened the current section (its identity)
        self.section_id = 0

    @property
    def active(self) -> bool:
        """Whether a section is being acquired or is held."""
        return self.state is not SectionState.FREE

    def begin(self, lock_set: tuple[str, ...], section_id: int) -> None:
        """``lock_entities`` was called: refuse nesting, then start acquiring."""
        if self.active:
            raise LockingRulesViolationError(
                f"lock_entities({list(lock_set)}) inside a critical section on {list(self.locked)}: "
                "critical sections cannot be nested"
            )
        self.state, self.locked, self.section_id = SectionState.ACQUIRING, lock_set, section_id

    def granted(self) -> None:
        """Every lock is held."""
        self.state = SectionState.HELD

    def end(self) -> tuple[str, ...]:
        """Leave the section; returns the entities to unlock (none if nothing was held)."""
        held = self.locked if self.state is SectionState.HELD else ()
        self.state, self.locked = SectionState.FREE, ()
        self.in_flight.clear()
        return held

    def check_call(self, entity_id: str) -> None:
        """A call to ``entity_id`` is about to be scheduled."""
        if not self.active:
            return
        if self.state is SectionState.ACQUIRING:
            raise LockingRulesViolationError(
                f"call_entity({entity_id!r}) before the lock on {list(self.locked)} was granted: yield the "
                "lock_entities task first (with (yield ctx.lock_entities([...])):), then call inside the section"
            )
        if entity_id not in self.locked:
            raise LockingRulesViolationError(
                f"call_entity({entity_id!r}) inside a critical section that locks only {list(self.locked)}"
            )
        if entity_id in self.in_flight:
            raise LockingRulesViolationError(
                f"call_entity({entity_id!r}) while another call to it is in flight inside a critical section"
            )
        self.in_flight.add(entity_id)

    def call_done(self, entity_id: str) -> None:
        """A call's answer arrived."""
        self.in_flight.discard(entity_id)

    def check_signal(self, entity_id: str) -> None:
        """A signal to ``entity_id`` is about to be sent."""
        if self.active and entity_id in self.locked:
            raise LockingRulesViolationError(
                f"signal_entity({entity_id!r}) inside a critical section that locks it: call it instead"
            )

    def check_sub_orchestration(self, name: str) -> None:
        """A sub-orchestration is about to be started."""
        if self.active:
            raise LockingRulesViolationError(
                f"call_sub_orchestrator({name!r}) inside a critical section on {list(self.locked)}"
            )
