"""What one turn writes, staged in memory by round (:class:`TurnWrites`), and how one round's
writes become SQL in the turn's transaction (:func:`apply_writes`). The store
(``runtime._store``) runs the transaction; the turn (``runtime._turn``) stages into it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from operator import attrgetter
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
    #: (instance id, task id, execution id) of activities whose result came for an execution
    #: that ended (or another that replaced it): struck off only if that execution's
    struck_activities: list[tuple[str, int, str]] = field(default_factory=list)
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
        return tuple(map(len, _WRITE_LISTS(self)))

    def rollback(self, mark: tuple[int, ...]) -> None:
        """Drop everything staged since ``mark``."""
        for name, length in zip(self.__slots__, mark):  # type: ignore[attr-defined]
            del getattr(self, name)[length:]


#: every list of a :class:`TurnWrites`, read at once
_WRITE_LISTS = attrgetter(*TurnWrites.__slots__)  # type: ignore[attr-defined]


#: One round's statements, in the order they run: (the :class:`TurnWrites` list, the
#: statement, whether its items are single values rather than rows). Deletions come before
#: the insertions that follow them, so a record cleared and written again in the round keeps
#: its new rows.
_STATEMENTS: tuple[tuple[str, str, bool], ...] = (
    ("clear_history", "DELETE FROM history WHERE num = ?", True),
    ("truncate_history", "DELETE FROM history WHERE num = ? AND seq >= ?", False),
    ("clear_instance_work", "DELETE FROM activities WHERE instance_id = ?", True),
    ("clear_instance_work", "DELETE FROM timers WHERE instance_id = ?", True),
    ("instances", f"INSERT OR REPLACE INTO instances({INSTANCE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", False),
    ("history", "INSERT OR REPLACE INTO history(num, seq, event_type, timestamp, name, data) VALUES (?,?,?,?,?,?)",
     False),
    ("done_activities", "DELETE FROM activities WHERE instance_id = ? AND task_id = ?", False),
    ("struck_activities", "DELETE FROM activities WHERE instance_id = ? AND task_id = ? AND execution_id = ?", False),
    ("add_activities",
     "INSERT OR REPLACE INTO activities(instance_id, execution_id, task_id, name, input) VALUES (?,?,?,?,?)", False),
    ("done_timers", "DELETE FROM timers WHERE instance_id = ? AND timer_id = ?", False),
    ("add_timers", "INSERT OR REPLACE INTO timers(instance_id, execution_id, timer_id, fire_at) VALUES (?,?,?,?)",
     False),
    ("done_outbox", "DELETE FROM outbox WHERE msg_id = ?", True),
    ("add_outbox", "INSERT OR REPLACE INTO outbox(msg_id, dest, data) VALUES (?,?,?)", False),
    ("entities", f"INSERT OR REPLACE INTO entities({ENTITY_COLUMNS}) VALUES (?,?,?,?,?,?,?)", False),
    ("delivered", "INSERT OR IGNORE INTO delivered(msg_id) VALUES (?)", True),
    ("forget_delivered", "DELETE FROM delivered WHERE msg_id = ?", True),
    ("done_scheduled", "DELETE FROM scheduled WHERE msg_id = ?", True),
    ("add_scheduled", "INSERT OR REPLACE INTO scheduled(msg_id, due, data) VALUES (?,?,?)", False),
)


def apply_writes(db: Any, w: TurnWrites) -> None:
    """One round's writes, as :data:`_STATEMENTS` orders them."""
    for name, sql, single in _STATEMENTS:
        items = getattr(w, name)
        if items:
            db.executemany(sql, [(item,) for item in items] if single else items)


def without_superseded(rounds: Sequence[TurnWrites]) -> list[TurnWrites]:
    """``rounds`` (one turn's, in order) without the ``instances`` and ``entities`` rows that a
    later write of the same turn replaces.

    Both are written whole (``INSERT OR REPLACE`` by id) and nothing in a turn's transaction
    reads them, so only each record's last row can be seen once the turn commits. An entity
    that many rounds of a turn touch (a contended account: lock, calls, unlock, the next
    lock, each in its own round) is written once instead of once a round, and its row carries
    its whole queue of waiting requests."""
    if len(rounds) == 1:  # the common turn: nothing later to replace its rows
        return list(rounds)
    seen_instances: set[str] = set()
    seen_entities: set[str] = set()
    out: list[TurnWrites] = []
    for w in reversed(rounds):
        instances = _last_of_each(w.instances, seen_instances)
        entities = _last_of_each(w.entities, seen_entities)
        if len(instances) != len(w.instances) or len(entities) != len(w.entities):
            w = replace(w, instances=instances, entities=entities)
        out.append(w)
    out.reverse()
    return out


def _last_of_each(rows: list[Any], seen: set[str]) -> list[Any]:
    """The rows whose id (first field) ``seen`` does not hold, each id's last one only, in
    their order; their ids are added to ``seen``."""
    kept = []
    for row in reversed(rows):
        if row[0] not in seen:
            seen.add(row[0])
            kept.append(row)
    kept.reverse()
    return kept
