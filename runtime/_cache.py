"""The shard host's instances in memory: least recently used first, bounded by count and by
the bytes of their inputs (an instance's input is kept encoded, and usually dominates)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from ._messages import Instance

#: what an instance costs in memory besides its input (the record, a small history, a generator)
_OVERHEAD = 1024


def _size(inst: Instance) -> int:
    return _OVERHEAD + len(inst.input_blob or "")


class InstanceCache(OrderedDict[str, Instance]):
    """An ``OrderedDict`` of instances that keeps :attr:`bytes`, the estimated memory of what it
    holds, up to date through every way an entry comes or goes."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __setitem__(self, key: str, inst: Instance) -> None:
        old = super().get(key)
        if old is not None:
            self.bytes -= _size(old)
        super().__setitem__(key, inst)
        self.bytes += _size(inst)

    def __delitem__(self, key: str) -> None:
        self.bytes -= _size(self[key])
        super().__delitem__(key)

    def pop(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        """Remove and return ``key``'s instance, or ``default``."""
        inst = super().pop(key, None)
        if inst is None:
            return default
        self.bytes -= _size(inst)
        return inst

    def popitem(self, last: bool = True) -> tuple[str, Instance]:
        """Remove and return the newest (``last``) or the oldest entry."""
        key, inst = super().popitem(last)
        self.bytes -= _size(inst)
        return key, inst

    def over(self, max_count: int, max_bytes: int) -> bool:
        """Whether more than ``max_count`` instances, or more than ``max_bytes`` in more than
        one instance, are held."""
        return len(self) > max_count or (self.bytes > max_bytes and len(self) > 1)
