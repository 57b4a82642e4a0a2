"""Entity ids: ``EntityId(name, key)``, written ``@name@key``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrations import DurableTypeError, DurableValueError
from orchestrations._ids import MAX_ENTITY_ID_CHARS, parse_entity_key


@dataclass(frozen=True, slots=True, order=False)
class EntityId:
    """The address of one entity: its registered ``name`` and a non-empty ``key``.

    Entity names are case-insensitive, as in Durable Functions: the name is kept lower-cased,
    so ``EntityId("Account", "alice") == EntityId("account", "alice")`` (same hash, same shard)
    and ``str(EntityId("Account", "alice")) == "@account@alice"``. Keys keep their case. That
    string is also the one global lock order (compared as UTF-8 bytes).
    """

    name: str
    key: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or "@" in self.name:
            raise DurableValueError(f"entity name must be a non-empty str without '@', got {self.name!r}")
        if not isinstance(self.key, str):
            raise DurableTypeError(f"entity key must be a str, got {self.key!r}")
        if not self.key:
            raise DurableValueError(f"entity key must not be empty (entity {self.name!r})")
        if len(self.name) + len(self.key) > MAX_ENTITY_ID_CHARS:
            raise DurableValueError(f"entity id is too long: {self.name!r}, {self.key[:40]!r}...")
        object.__setattr__(self, "name", self.name.lower())

    def __str__(self) -> str:
        return f"@{self.name}@{self.key}"

    def __getstate__(self) -> list[Any]:
        return [self.name, self.key]

    def __setstate__(self, state: list[Any]) -> None:
        # an id pickled before names were case-insensitive (inside an input, say) loads canonical
        name, key = state
        object.__setattr__(self, "name", name.lower())
        object.__setattr__(self, "key", key)

    @staticmethod
    def parse(text: str) -> EntityId:
        """The inverse of ``str()``: ``@name@key`` (the key may contain ``@``).

        Raises ``ValueError`` (:class:`DurableValueError`) naming ``text`` if it is not of that
        form or its name or key is empty.
        """
        name, key = parse_entity_key(text)
        return EntityId(name, key)
