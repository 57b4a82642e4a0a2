"""Entity ids: ``EntityId(name, key)``, written ``@name@key``."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrations import DurableTypeError, DurableValueError


@dataclass(frozen=True, slots=True, order=False)
class EntityId:
    """The address of one entity: its registered ``name`` and a ``key``.

    ``str(EntityId("Account", "alice")) == "@Account@alice"``; that string is also the one
    global lock order (compared as UTF-8 bytes).
    """

    name: str
    key: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or "@" in self.name:
            raise DurableValueError(f"entity name must be a non-empty str without '@', got {self.name!r}")
        if not isinstance(self.key, str):
            raise DurableTypeError(f"entity key must be a str, got {self.key!r}")
        if len(self.name) + len(self.key) > 512:
            raise DurableValueError(f"entity id is too long: {self.name!r}, {self.key[:40]!r}...")

    def __str__(self) -> str:
        return f"@{self.name}@{self.key}"

    @staticmethod
    def parse(text: str) -> EntityId:
        """The inverse of ``str()``."""
        if not isinstance(text, str) or not text.startswith("@") or text.count("@") < 2:
            raise DurableValueError(f"not an entity id string: {text!r}")
        name, key = text[1:].split("@", 1)
        return EntityId(name, key)
