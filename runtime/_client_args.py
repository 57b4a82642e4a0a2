"""Checks of the task hub client's arguments: each names the bad value and raises before
anything is sent (``DurableTypeError``/``DurableValueError``, also ``TypeError``/``ValueError``)."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

from orchestrations import DurableTypeError, DurableValueError, validate_instance_id

from ._replica_target import ReplicaTarget

_HUB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_hub_name(name: object) -> str:
    """``name`` if it can name a hub: its directory and its actors' names."""
    if not isinstance(name, str) or not _HUB_NAME.match(name):
        raise DurableValueError(
            f"hub name must be 1-64 letters, digits, '_', '.' or '-' (no path separator), got {name!r}"
        )
    return name


def synchronous_mode(durability: object) -> str:
    """SQLite's ``synchronous`` setting for a hub's local ``durability`` ("full" or "normal")."""
    sync = {"full": "FULL", "normal": "NORMAL"}.get(durability) if isinstance(durability, str) else None
    if sync is None:
        raise DurableValueError(f"durability must be 'full' or 'normal', got {durability!r}")
    return sync


#: ``durability`` values that need a replica, and those that keep the shard on its node only
REPLICA_MODES = ("replicated", "async")
LOCAL_MODES = ("local", "full", "normal")


def replication_settings(replica: object, durability: object, lease_seconds: object) -> tuple[str, str]:
    """``(SQLite synchronous setting, replication mode)`` for ``TaskHub(replica=..., durability=...)``:
    ``durability`` defaults to ``"replicated"`` with a replica and ``"local"`` (``"full"``)
    without; ``"replicated"`` and ``"async"`` need a replica, and a replica needs one of them.
    Raises :class:`DurableValueError` naming the value that does not fit."""
    if replica is not None and not isinstance(replica, str):
        raise DurableValueError(f"replica must be 's3://bucket/prefix' or 'file:///path', got {replica!r}")
    if durability is None:
        durability = "local" if replica is None else "replicated"
    if durability in REPLICA_MODES:
        if replica is None:
            raise DurableValueError(f"durability={durability!r} needs a replica (replica='s3://...' or 'file:///...')")
    elif durability in LOCAL_MODES:
        if replica is not None:
            raise DurableValueError(
                f"durability={durability!r} keeps every shard on its node only, yet replica={replica!r} was "
                "given: use durability='replicated' or 'async' with a replica"
            )
    else:
        raise DurableValueError(
            f"durability must be one of {', '.join(map(repr, LOCAL_MODES + REPLICA_MODES))}, got {durability!r}"
        )
    if isinstance(lease_seconds, bool) or not isinstance(lease_seconds, (int, float)) or not 1 <= lease_seconds <= 600:
        raise DurableValueError(f"lease_seconds must be a number of seconds from 1 to 600, got {lease_seconds!r}")
    if replica is not None:
        ReplicaTarget.parse(replica)  # a malformed one is refused here, not in every shard host
    sync = "FULL" if durability in ("local", *REPLICA_MODES) else synchronous_mode(durability)
    return sync, ("local" if durability in LOCAL_MODES else str(durability))


def utc_now() -> datetime:
    """The current UTC time (the timestamp of the events a client sends)."""
    return datetime.now(UTC)


def utc_timestamp(value: object, name: str) -> float:
    """A point in time as epoch seconds: a ``datetime``, naive taken as UTC."""
    if not isinstance(value, datetime):
        raise DurableTypeError(f"{name} must be a datetime (UTC; naive is taken as UTC), got {value!r}")
    return (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).timestamp()


def check_bool(value: object, name: str) -> bool:
    """``value`` if it is a bool (an int or a string is a mistake, not a flag)."""
    if not isinstance(value, bool):
        raise DurableTypeError(f"{name} must be True or False, got {value!r}")
    return value


def check_timeout(timeout: object) -> float | None:
    """``timeout`` if it is ``None`` or a number of seconds >= 0."""
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0):
        raise DurableValueError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
    return timeout


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DurableValueError(f"{name} must be a number, got {value!r}")
    return value


def check_settings(
    *, num_shards: object, cache_size: object, lock_timeout: object, slow_episode_warning: object,
    always_replay: object, detached: object, warm_worker: object, cache_bytes: object = 1,
    tracing_setup: object = None,
) -> None:
    """The numeric and boolean settings of ``TaskHub(...)``: each bad one is refused naming the
    setting (a bool is not a number; NaN, infinity and negatives are not a time). ``num_shards``
    may be ``None`` (the hub's recorded count, or the default for the cluster's CPUs)."""
    shards_ok = isinstance(num_shards, int) and not isinstance(num_shards, bool) and 1 <= num_shards <= 256
    if num_shards is not None and not shards_ok:
        raise DurableValueError(f"num_shards must be an int from 1 to 256 or None, got {num_shards!r}")
    if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 1:
        raise DurableValueError(f"cache_size must be a positive int, got {cache_size!r}")
    if isinstance(cache_bytes, bool) or not isinstance(cache_bytes, int) or cache_bytes < 1:
        raise DurableValueError(f"cache_bytes must be a positive int, got {cache_bytes!r}")
    if not math.isfinite(_number(lock_timeout, "lock_timeout")) or not lock_timeout >= 0:  # type: ignore[operator]
        raise DurableValueError(f"lock_timeout must be a finite number of seconds >= 0, got {lock_timeout!r}")
    if slow_episode_warning is not None and not _number(slow_episode_warning, "slow_episode_warning") > 0:
        raise DurableValueError(
            f"slow_episode_warning must be a positive number of seconds or None, got {slow_episode_warning!r}"
        )
    check_bool(always_replay, "always_replay")
    check_bool(detached, "detached")
    check_bool(warm_worker, "warm_worker")
    check_tracing_setup(tracing_setup)


def check_prefix(prefix: object) -> str | None:
    """An instance-id prefix: ``None`` (every id), or the start of a valid instance id."""
    if prefix is None:
        return None
    if not isinstance(prefix, str):
        raise DurableTypeError(f"instance_id_prefix must be a str or None, got {prefix!r}")
    if not prefix:
        raise DurableValueError("instance_id_prefix must not be empty (pass None for every instance)")
    try:
        return validate_instance_id(prefix)  # a prefix of a valid id is a valid id
    except ValueError as exc:
        raise DurableValueError(f"instance_id_prefix {prefix!r} matches no instance id: {exc}") from None


def instance_ids(value: object) -> list[str] | None:
    """The ids of a list or tuple of instance ids, each checked; ``None`` if ``value`` is one
    id (a ``str``). Any other type is refused: a set or a generator has no order to answer in."""
    if isinstance(value, str):
        return None
    if not isinstance(value, (list, tuple)):
        raise DurableTypeError(f"expected an instance id or a list of them, got {value!r}")
    return [validate_instance_id(item) for item in value]



def check_tracing_setup(value: object) -> None:
    """``TaskHub(tracing_setup=...)``: ``None``, an import path ``"package.module:function"``
    (resolved in each process that hosts durable work, not here: the module may exist only
    there), or a callable (it travels to those processes by value)."""
    if value is None or callable(value):
        return
    if not isinstance(value, str):
        raise DurableTypeError(f"tracing_setup must be 'package.module:function', a callable or None, got {value!r}")
    module_name, sep, attr = value.partition(":")
    if not sep:
        module_name, _, attr = value.rpartition(".")
    if not module_name or not attr:
        raise DurableValueError(f"tracing_setup must be 'package.module:function', got {value!r}")
