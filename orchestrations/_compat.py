"""Stored records that outlive their code: new fields may be appended to a persisted dataclass.

History events, failure details and messages are stored as pickles of slotted dataclasses,
whose state is the list of field values in field order. Unpickling a record written before a
field was appended leaves that field unset (``AttributeError`` on first use). Every class
passed to :func:`tolerate_new_fields` fills such trailing fields with their defaults instead,
so a field may be appended, with a default, without making older files unreadable. Renaming,
removing or reordering fields is still a format change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, fields
from typing import Any, TypeVar

C = TypeVar("C", bound=type)


def tolerate_new_fields(cls: C) -> C:
    """Make ``cls`` (a slotted dataclass) unpickle records that lack its trailing fields."""
    # A frozen slotted dataclass has its own __setstate__ (a list of field values); a mutable
    # one (``Message``) has none on Python 3.11 and is restored from ``(None, {slot: value})``.
    original: Callable[[Any, Any], None] = getattr(cls, "__setstate__", None) or _set_slots
    all_fields = fields(cls)

    def __setstate__(self: Any, state: Any) -> None:  # noqa: N807 (pickle's name)
        original(self, state)
        for f in all_fields:
            if hasattr(self, f.name):
                continue
            if f.default is not MISSING:
                object.__setattr__(self, f.name, f.default)
            elif f.default_factory is not MISSING:
                object.__setattr__(self, f.name, f.default_factory())

    cls.__setstate__ = __setstate__  # type: ignore[attr-defined]
    return cls


def _set_slots(obj: Any, state: Any) -> None:
    """What pickle does without a ``__setstate__``: ``state`` is a dict, or a pair of the
    ``__dict__`` (or ``None``) and a dict of slot values."""
    parts = state if isinstance(state, tuple) else (state, None)
    for part in parts:
        for name, value in (part or {}).items():
            object.__setattr__(obj, name, value)
