"""Instance-id rules and the stable hash that places ids on shards."""

from __future__ import annotations

import hashlib
import uuid

from ._errors import DurableTypeError, DurableValueError

_FORBIDDEN = frozenset("/\\#?")

#: The longest entity id (name and key together), wherever one is made or parsed.
MAX_ENTITY_ID_CHARS = 512


def check_encodable(text: str, what: str) -> None:
    """Raise :class:`DurableValueError` naming ``text`` if it holds a lone surrogate (a string
    no file or connection can carry as UTF-8)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DurableValueError(
            f"{what} must not contain the surrogate character {text[exc.start]!r} (not valid UTF-8): {text[:80]!r}"
        ) from None


def validate_instance_id(instance_id: object) -> str:
    """Return ``instance_id`` if it follows the Durable Functions rules, else raise.

    1-256 characters, not starting with ``@``, no ``/ \\ # ?``, no control characters and no
    lone surrogates.
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
    check_encodable(instance_id, "instance id")
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
    """The shard that owns ``key`` (``0`` of one shard, without hashing: the default here)."""
    return 0 if num_shards == 1 else stable_hash(key) % num_shards


def parse_entity_key(text: object) -> tuple[str, str]:
    """The (name, key) of an entity id string ``@name@key``; the name is lower-cased.

    Entity names are case-insensitive, as in Durable Functions (``@Counter@a`` and ``@counter@a``
    are one entity); keys are not. Raises :class:`DurableValueError` naming ``text`` unless it is
    ``@``, a non-empty name without ``@``, ``@`` and a non-empty key (which may contain ``@``),
    of at most :data:`MAX_ENTITY_ID_CHARS` characters (name and key) and valid UTF-8.
    """
    if not isinstance(text, str) or not text.startswith("@"):
        raise DurableValueError(f"not an entity id: expected '@name@key', got {text!r}")
    name, sep, key = text[1:].partition("@")
    if not sep or not name or not key:
        raise DurableValueError(f"not an entity id: expected '@name@key' with a non-empty name and key, got {text!r}")
    check_entity_size(name, key)
    return name.lower(), key


def check_entity_size(name: str, key: str) -> None:
    """The limits every entity id obeys, however it is made: at most
    :data:`MAX_ENTITY_ID_CHARS` characters (name and key together), valid UTF-8."""
    if len(name) + len(key) > MAX_ENTITY_ID_CHARS:
        raise DurableValueError(
            f"entity id is too long: {len(name) + len(key)} characters in name and key, at most "
            f"{MAX_ENTITY_ID_CHARS} allowed (@{name[:40]}@{key[:40]}...)"
        )
    check_encodable(name, "entity name")
    check_encodable(key, "entity key")


def entity_key(text: object) -> str:
    """The canonical form of an entity id string (see :func:`parse_entity_key`): the string
    every entity is addressed, stored, hashed to its shard and lock-ordered by."""
    name, key = parse_entity_key(text)
    return f"@{name}@{key}"
