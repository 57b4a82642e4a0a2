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
    original: Callable[[Any, Any], None] = cls.__setstate__  # type: ignore[attr-defined]
    all_fields = fields(cls)

    def __setstate__(self: Any, state: Any) -> None:  # noqa: N807 (pickle's name)
        original(self, state)
        if isinstance(state, (list, tuple)) and len(state) < len(all_fields):
            for f in all_fields[len(state) :]:
                if f.default is not MISSING:
                    object.__setattr__(self, f.name, f.default)
                elif f.default_factory is not MISSING:
                    object.__setattr__(self, f.name, f.default_factory())

    cls.__setstate__ = __setstate__  # type: ignore[attr-defined]
    return cls
