"""Checks of the Ray options an activity is registered with (``@activity(num_cpus=...)``).

Each option is checked at decoration, where a mistake is made, rather than when the first
call reaches Ray. The options are kept hashable (a shard host groups an activity's calls by
them): a dict such as ``resources={"x": 1}`` or ``runtime_env={...}`` is kept as a
:class:`FrozenDict`, a list as a :class:`FrozenList`; both are still a ``dict`` and a ``list``
to Ray. Pure.
"""

from __future__ import annotations

import math
from typing import Any

from ._errors import DurableTypeError, DurableValueError

#: options that are an amount of a resource: a finite number >= 0
_AMOUNTS = frozenset({"num_cpus", "num_gpus", "memory"})


class FrozenDict(dict[Any, Any]):
    """A dict that hashes by its items (its values frozen too); not to be changed."""

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(frozenset(self.items()))


class FrozenList(list[Any]):
    """A list that hashes by its items (frozen too); not to be changed."""

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(self))


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return FrozenDict({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return FrozenList(_freeze(v) for v in value)
    return value


def _amount(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DurableTypeError(f"activity option {name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise DurableValueError(f"activity option {name} must be a finite number >= 0, got {value!r}")


def _check(name: str, value: Any) -> None:
    if name in _AMOUNTS:
        _amount(name, value)
    elif name == "resources":
        if not isinstance(value, dict):
            raise DurableTypeError(f"activity option resources must be a dict of name to amount, got {value!r}")
        for key, amount in value.items():
            if not isinstance(key, str) or not key:
                raise DurableTypeError(f"activity option resources: a name must be a non-empty str, got {key!r}")
            _amount(f"resources[{key!r}]", amount)
    elif name == "max_retries" and (isinstance(value, bool) or not isinstance(value, int) or value < -1):
        raise DurableValueError(f"activity option max_retries must be an int >= -1 (-1: for ever), got {value!r}")


def activity_options(options: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """``options`` checked and frozen, as sorted ``(name, value)`` pairs; raises
    ``DurableTypeError``/``DurableValueError`` naming the option and its bad value."""
    frozen = []
    for name, value in sorted(options.items()):
        _check(name, value)
        value = _freeze(value)
        try:
            hash(value)
        except TypeError:
            raise DurableTypeError(
                f"activity option {name} must be a plain value, dict or list, got {value!r}"
            ) from None
        frozen.append((name, value))
    return tuple(frozen)
