"""What one turn of a shard host carries besides its writes: the side effects it does around
its commit (:class:`AfterCommit`), and the clock and due-time rules every part of the turn
shares.

Its own module so the shard host and its mixins (``_shard_instances``, ``_shard_entities``,
``_shard_lifecycle``) import it without importing each other.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

from ._activities import ActivityCall
from ._delivery import Outbound
from ._messages import Message


def utcnow() -> datetime:
    """The current UTC time."""
    return datetime.now(UTC)


def due_later(msg: Message, now_ts: float) -> bool:
    """Whether ``msg`` asks to be applied after ``now_ts`` (a parked one is due: never again)."""
    return msg.due is not None and not msg.parked and msg.due > now_ts


@dataclass(slots=True)
class AfterCommit:
    """What a turn does around its commit. ``forgotten`` (instances that ended or were
    replaced: their outstanding activities and timers no longer matter) and ``activities``
    are handled just before the commit (activities start early: they run at least once);
    everything else once the commit is durable. ``acks`` maps each message's future to the
    error that refused it (``None``: applied)."""

    acks: dict[asyncio.Future[Any], BaseException | None] = field(default_factory=dict)
    forgotten: list[str] = field(default_factory=list)
    activities: list[ActivityCall] = field(default_factory=list)
    timers: list[tuple[str, str, int, float]] = field(default_factory=list)
    outbox: list[Outbound] = field(default_factory=list)
    #: instances that reached a terminal state, with their committed ``instances`` row
    finished: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    touched: list[str] = field(default_factory=list)
    #: messages to records of this shard, applied in the turn's next round
    local: list[Outbound] = field(default_factory=list)
    #: messages parked in this turn (held once committed), and parked ones whose rows it deleted
    parked: list[Message] = field(default_factory=list)
    unparked: list[str] = field(default_factory=list)

    def mark(self) -> tuple[int, ...]:
        """A point to :meth:`rollback` to (acks are settled by the caller)."""
        return tuple(map(len, _AFTER_GETTER(self)))

    def rollback(self, mark: tuple[int, ...]) -> None:
        """Drop every side effect staged since ``mark``."""
        for name, length in zip(_AFTER_LISTS, mark):
            del getattr(self, name)[length:]


_AFTER_LISTS = ("forgotten", "activities", "timers", "outbox", "finished", "touched", "local", "parked", "unparked")
_AFTER_GETTER = attrgetter(*_AFTER_LISTS)
