"""Instance-id rules and the stable hash that places ids on shards."""

from __future__ import annotations

import hashlib
import uuid

from ._errors import DurableTypeError, DurableValueError

_FORBIDDEN = frozenset("/\\#?")

#: Most characters of an entity's name and key together (``EntityId`` enforces it too): every
#: id that travels between shards is one a receiving shard can hold.
MAX_ENTITY_ID_CHARS = 512


def validate_instance_id(instance_id: object) -> str:
    """Return ``instance_id`` if it follows the Durable Functions rules, else raise.

    1-256 characters, not starting with ``@``, no ``/ \\ # ?`` and no control characters.
    """
    if not isinstance(instance_id, str):
        raise DurableTypeError(f"instance id must be a str, got {instance_id!r}")
    if not 1 <= len(instance_id) <= 256:
        raise DurableValueError(
            f"instance id must have 1 to 256 characters, got {len(instance_id)}: {instance_id[:40]!r}"
        )
    if instance_id.startswith("@"):
        raise DurableValueError(f"instance id must not start with '@': {instance_id!r}")
    for ch in instance_id:
        if ch in _FORBIDDEN or ord(ch) < 32 or 127 <= ord(ch) < 160:
            raise DurableValueError(f"instance id must not contain {ch!r}: {instance_id!r}")
    return instance_id


def new_instance_id() -> str:
    """A random instance id (uuid4 hex)."""
    return uuid.uuid4().hex


def stable_hash(key: str) -> int:
    """A hash of ``key`` that is the same in every process and on every run.

    Python's ``hash`` is salted per process, so it cannot place ids on shards.
    """
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big")


def shard_of(key: str, num_shards: int) -> int:
    """The shard that owns ``key``."""
    return stable_hash(key) % num_shards


def parse_entity_key(text: object) -> tuple[str, str]:
    """The (name, key) of an entity id string ``@name@key``; the name is lower-cased.

    Entity names are case-insensitive, as in Durable Functions (``@Counter@a`` and ``@counter@a``
    are one entity); keys are not. Raises :class:`DurableValueError` naming ``text`` unless it is
    ``@``, a non-empty name without ``@``, ``@`` and a non-empty key (which may contain ``@``),
    with at most ``MAX_ENTITY_ID_CHARS`` characters of name and key, all encodable as UTF-8.
    An orchestration's ``call_entity``, ``signal_entity`` and ``lock_entities`` go through here
    (and ``EntityId`` applies the same length limit), so an id a shard cannot hold is refused
    where it is made, never on its way to another shard.
    """
    if not isinstance(text, str) or not text.startswith("@"):
        raise DurableValueError(f"not an entity id: expected '@name@key', got {text!r}")
    name, sep, key = text[1:].partition("@")
    if not sep or not name or not key:
        raise DurableValueError(f"not an entity id: expected '@name@key' with a non-empty name and key, got {text!r}")
    if len(name) + len(key) > MAX_ENTITY_ID_CHARS:
        raise DurableValueError(
            f"entity id is too long: name and key have {len(name) + len(key)} characters, at most "
            f"{MAX_ENTITY_ID_CHARS} allowed: {text[:60]!r}..."
        )
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise DurableValueError(f"entity id must be valid Unicode text (no lone surrogates): {text!r}") from None
    return name.lower(), key


def entity_key(text: object) -> str:
    """The canonical form of an entity id string (see :func:`parse_entity_key`): the string
    every entity is addressed, stored, hashed to its shard and lock-ordered by."""
    name, key = parse_entity_key(text)
    return f"@{name}@{key}"
