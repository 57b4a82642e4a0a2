"""Stored records written before a field was appended still load (orchestrations._compat)."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field

from orchestrations._compat import tolerate_new_fields
from orchestrations.testing import at, task_scheduled


@dataclass(frozen=True, slots=True)
class _Old:
    a: int


@tolerate_new_fields
@dataclass(frozen=True, slots=True)
class _New:
    a: int
    b: int = 7
    c: list[int] = field(default_factory=list)


def test_a_record_written_before_fields_were_appended_gets_their_defaults():
    blob = pickle.dumps(_Old(1))
    # the same class name and module, one version later
    blob = blob.replace(b"_Old", b"_New")
    record = pickle.loads(blob)
    assert (record.a, record.b, record.c) == (1, 7, [])


def test_history_events_round_trip_unchanged():
    event = task_scheduled(3, "say_hello", {"x": 1}, ts=at(5))
    assert pickle.loads(pickle.dumps(event)) == event


@dataclass(slots=True)
class _OldMutable:
    a: int


@tolerate_new_fields
@dataclass(slots=True)
class _NewMutable:
    a: int
    b: int = 7


def test_a_mutable_slotted_record_also_gets_the_appended_defaults():
    # runtime Message is a mutable slotted dataclass: no __setstate__ of its own on 3.11
    blob = pickle.dumps(_OldMutable(1)).replace(b"_OldMutable", b"_NewMutable")
    record = pickle.loads(blob)
    assert (record.a, record.b) == (1, 7)
    assert pickle.loads(pickle.dumps(_NewMutable(2, 3))) == _NewMutable(2, 3)
