"""What one turn writes, staged in memory by round (:class:`TurnWrites`), and how one round's
writes become SQL in the turn's transaction (:func:`apply_writes`). The store
(``runtime._store``) runs the transaction; the turn (``runtime._turn``) stages into it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._schema import ENTITY_COLUMNS, INSTANCE_COLUMNS, ActivityRow, EntityRow, HistoryRow, InstanceRow


@dataclass(slots=True)
class TurnWrites:
    """Everything one turn writes, committed in one transaction."""

    instances: list[InstanceRow] = field(default_factory=list)
    #: history rows are keyed by the instance's number (see ``Instance.num``)
    clear_history: list[int] = field(default_factory=list)
    truncate_history: list[tuple[int, int]] = field(default_factory=list)
    history: list[HistoryRow] = field(default_factory=list)
    add_activities: list[ActivityRow] = field(default_factory=list)
    done_activities: list[tuple[str, int]] = field(default_factory=list)
    clear_instance_work: list[str] = field(default_factory=list)
    add_timers: list[tuple[Any, ...]] = field(default_factory=list)
    done_timers: list[tuple[str, int]] = field(default_factory=list)
    add_outbox: list[tuple[str, int, bytes]] = field(default_factory=list)
    done_outbox: list[str] = field(default_factory=list)
    delivered: list[str] = field(default_factory=list)
    #: ids of ``delivered`` whose senders have deleted their outbox rows (never sent again)
    forget_delivered: list[str] = field(default_factory=list)
    entities: list[EntityRow] = field(default_factory=list)
    #: messages parked until their due time: (msg_id, due, encoded message), and those applied
    add_scheduled: list[tuple[str, float, bytes]] = field(default_factory=list)
    done_scheduled: list[str] = field(default_factory=list)

    def is_empty(self) -> bool:
        """Whether there is nothing to commit."""
        return not any(getattr(self, name) for name in self.__slots__)  # type: ignore[attr-defined]

    def mark(self) -> tuple[int, ...]:
        """A point to :meth:`rollback` to (the lists are only ever appended to)."""
        return tuple(len(getattr(self, name)) for name in self.__slots__)  # type: ignore[attr-defined]

    def rollback(self, mark: tuple[int, ...]) -> None:
        """Drop everything staged since ``mark``."""
        for name, length in zip(self.__slots__, mark):  # type: ignore[attr-defined]
            del getattr(self, name)[length:]


def apply_writes(db: Any, w: TurnWrites) -> None:
    """One round's writes: deletions before insertions, so a record cleared and written
    again in the round keeps its new rows."""
    if w.clear_history:
        db.executemany("DELETE FROM history WHERE num = ?", [(n,) for n in w.clear_history])
    if w.truncate_history:
        db.executemany("DELETE FROM history WHERE num = ? AND seq >= ?", w.truncate_history)
    if w.clear_instance_work:
        rows = [(i,) for i in w.clear_instance_work]
        db.executemany("DELETE FROM activities WHERE instance_id = ?", rows)
        db.executemany("DELETE FROM timers WHERE instance_id = ?", rows)
    if w.instances:
        db.executemany(
            f"INSERT OR REPLACE INTO instances({INSTANCE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            w.instances,
        )
    if w.history:
        db.executemany(
            "INSERT OR REPLACE INTO history(num, seq, event_type, timestamp, name, data) "
            "VALUES (?,?,?,?,?,?)",
            w.history,
        )
    if w.done_activities:
        db.executemany("DELETE FROM activities WHERE instance_id = ? AND task_id = ?", w.done_activities)
    if w.add_activities:
        db.executemany(
            "INSERT OR REPLACE INTO activities(instance_id, execution_id, task_id, name, input) "
            "VALUES (?,?,?,?,?)",
            w.add_activities,
        )
    if w.done_timers:
        db.executemany("DELETE FROM timers WHERE instance_id = ? AND timer_id = ?", w.done_timers)
    if w.add_timers:
        db.executemany(
            "INSERT OR REPLACE INTO timers(instance_id, execution_id, timer_id, fire_at) VALUES (?,?,?,?)",
            w.add_timers,
        )
    if w.done_outbox:
        db.executemany("DELETE FROM outbox WHERE msg_id = ?", [(m,) for m in w.done_outbox])
    if w.add_outbox:
        db.executemany("INSERT OR REPLACE INTO outbox(msg_id, dest, data) VALUES (?,?,?)", w.add_outbox)
    if w.entities:
        db.executemany(f"INSERT OR REPLACE INTO entities({ENTITY_COLUMNS}) VALUES (?,?,?,?,?,?,?)", w.entities)
    if w.delivered:
        db.executemany("INSERT OR IGNORE INTO delivered(msg_id) VALUES (?)", [(m,) for m in w.delivered])
    if w.forget_delivered:
        db.executemany("DELETE FROM delivered WHERE msg_id = ?", [(m,) for m in w.forget_delivered])
    if w.done_scheduled:
        db.executemany("DELETE FROM scheduled WHERE msg_id = ?", [(m,) for m in w.done_scheduled])
    if w.add_scheduled:
        db.executemany("INSERT OR REPLACE INTO scheduled(msg_id, due, data) VALUES (?,?,?)", w.add_scheduled)
