"""Stored records that outlive their code: new fields may be appended to a persisted dataclass.

History events, failure details and messages are stored as pickles of slotted dataclasses.
Unpickling a record written before a field was appended leaves that field unset
(``AttributeError`` on first use). Every class passed to :func:`tolerate_new_fields` fills
such fields with their defaults instead, so a field may be appended, with a default, without
making older files unreadable. Renaming, removing or reordering fields is still a format change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, fields
from typing import Any, TypeVar

C = TypeVar("C", bound=type)


def tolerate_new_fields(cls: C) -> C:
    """Make ``cls`` (a slotted dataclass, frozen or not) unpickle records that lack some of its
    fields, giving those their defaults."""
    original: Callable[[Any, Any], None] | None = getattr(cls, "__setstate__", None)
    defaults = [f for f in fields(cls) if f.default is not MISSING or f.default_factory is not MISSING]

    def __setstate__(self: Any, state: Any) -> None:  # noqa: N807 (pickle's name)
        if original is not None:
            original(self, state)  # a frozen dataclass: the list of field values
        else:
            # the default protocol for __slots__ objects: (instance dict, slot values)
            dict_state, slot_state = state if isinstance(state, tuple) and len(state) == 2 else (state, None)
            for name, value in {**(dict_state or {}), **(slot_state or {})}.items():
                object.__setattr__(self, name, value)
        for f in defaults:
            if not hasattr(self, f.name):
                value = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[operator]
                object.__setattr__(self, f.name, value)

    cls.__setstate__ = __setstate__  # type: ignore[attr-defined]
    return cls
