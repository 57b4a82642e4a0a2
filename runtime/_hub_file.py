"""``hub.json``: what a hub's directory says about the hub, read and written by the client.

It records the hub's name, shard count, format version, its identity (``hub_id``, a random id
also recorded in every shard file of the hub) and, once every shard file has been created, the
list of those files (``shards``). From then on a shard file that is missing is refused, never
recreated empty; until then (a hub being created, or whose creation was interrupted) the shard
hosts create the files that do not exist yet.

A ``hub.json`` written before hubs had an identity was written after all of its shard files
existed: it is given an identity and its list of files at once, and each shard file records the
identity the first time it is opened (see ``ShardStore``).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import Any

from orchestrations import DurableValueError, ShardMismatchError

from ._files import HUB_FILE, private_dir, read_hub_file, write_hub_file
from ._shard_identity import FORMAT_VERSION


@dataclass(frozen=True, slots=True)
class HubRecord:
    """A hub's identity, and whether its shard hosts may create shard files that are missing."""

    hub_id: str
    create: bool


#: The most shard hosts a hub gets by default, whatever the CPU count: beyond this a hub is
#: better sized on purpose (each host is a process of ~90 MiB, plus its warm worker).
MAX_DEFAULT_SHARDS = 16


def default_num_shards(cpus: float) -> int:
    """The shard count a new hub gets when ``num_shards`` is not given: one per two CPUs of
    the cluster (``cpus``, Ray's ``cluster_resources()["CPU"]``), at least 1 and at most
    ``MAX_DEFAULT_SHARDS``.

    A busy shard host keeps about one core busy (its event loop, and its SQLite thread while
    the loop waits for a commit); the other half of the cores run the activities, Ray's own
    processes and the driver. More hosts only add processes that compete for the cores, and
    turn messages between records of one shard (applied in the same turn) into messages
    between shards (a commit on each side): on 2 cores, 1,000 transfer orchestrations over 10
    accounts ran 2-4x faster on one shard than on two. What one shard loses is orchestration
    work spread over cores: 1,000 concurrent hello sequences took 1.01 s on one, 0.77 s on two."""
    if isinstance(cpus, bool) or not isinstance(cpus, (int, float)) or not cpus >= 2:  # NaN, 0, 1, a fraction
        return 1
    return int(min(cpus // 2, MAX_DEFAULT_SHARDS))


def recorded_num_shards(directory: str) -> int | None:
    """The shard count ``hub.json`` in ``directory`` records, or ``None`` for a hub not created
    yet. Raises :class:`DurableValueError` naming ``hub.json`` if it cannot be read."""
    info = read_hub_file(directory)
    return None if info is None else int(info["num_shards"])


def shard_file(index: int) -> str:
    """The file name of shard ``index``."""
    return f"shard-{index:02d}.sqlite"


def open_hub_file(directory: str, name: str, num_shards: int, replica: str | None = None) -> HubRecord:
    """Read the hub's ``hub.json``, or start one for a new hub, so that the hub has an identity
    on disk before any shard file is opened. Raises :class:`ShardMismatchError` for another
    shard count and :class:`DurableValueError` naming ``hub.json`` if it cannot be read, or if
    ``replica`` is not the replica the hub was created with (``None``: none)."""
    path = os.path.join(directory, HUB_FILE)
    info = _read(path)
    if info is None:  # a new hub (or one whose creation stopped before writing this file)
        new_id = uuid.uuid4().hex
        _write(path, _record(name, num_shards, new_id, None, replica))
        return HubRecord(new_id, create=True)
    info = _upgraded(path, info)
    if info.get("replica") != replica:
        recorded_replica = info.get("replica")
        raise DurableValueError(
            f"task hub {name!r} was created "
            + (f"with replica={recorded_replica!r}" if recorded_replica else "without a replica")
            + f" ({path}); it opens only so, not with replica={replica!r}"
        )
    recorded = info.get("num_shards")
    if not isinstance(recorded, int) or isinstance(recorded, bool):
        raise _bad(path, f"has no valid shard count (num_shards: {recorded!r})")
    if recorded != num_shards:
        raise ShardMismatchError(name, recorded, num_shards)
    hub_id = info.get("hub_id")
    if not hub_id:  # written before hubs had an identity, after every shard file existed
        new_id = uuid.uuid4().hex
        _write(path, {**info, **_record(name, num_shards, new_id, num_shards)})
        return HubRecord(new_id, create=False)
    if not isinstance(hub_id, str):
        raise _bad(path, f"has an invalid hub_id {hub_id!r}")
    shards = info.get("shards")
    if shards is None:  # the hub's creation was interrupted: its shard files may be made
        return HubRecord(hub_id, create=True)
    expected = [shard_file(i) for i in range(num_shards)]
    if shards != expected:
        raise _bad(path, f"lists the shard files {shards!r}; a hub of {num_shards} shards has {expected}")
    return HubRecord(hub_id, create=False)


def record_shards(directory: str, name: str, num_shards: int, hub_id: str, replica: str | None = None) -> None:
    """Every shard file of the hub exists now: list them in ``hub.json`` (from now on one that
    is missing is refused)."""
    _write(os.path.join(directory, HUB_FILE), _record(name, num_shards, hub_id, num_shards, replica))


def _record(name: str, num_shards: int, hub_id: str, created: int | None, replica: str | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {
        "name": name, "num_shards": num_shards, "format_version": FORMAT_VERSION, "hub_id": hub_id,
    }
    if replica is not None:
        record["replica"] = replica
    if created is not None:
        record["shards"] = [shard_file(i) for i in range(created)]
    return record


def _upgraded(path: str, info: dict[str, Any]) -> dict[str, Any]:
    """``hub.json`` of a hub written in format version 2 says version 3 from now on (its shard
    hosts migrate their files as they open them); one newer than this code is refused."""
    version = info.get("format_version")
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise _bad(path, f"says format version {version}, newer than this ray-durable's {FORMAT_VERSION}: "
                         "open the hub with the release that wrote it (or a later one)")
    if version == 2:
        info = {**info, "format_version": FORMAT_VERSION}
        _write(path, info)
    return info


def _read(path: str) -> dict[str, Any] | None:
    return read_hub_file(os.path.dirname(path))


def _bad(path: str, what: str) -> DurableValueError:
    return DurableValueError(f"hub file {path} {what}: it is not a valid hub record; fix or restore it")


def _write(path: str, info: dict[str, Any]) -> None:
    """Replace ``hub.json`` (owner-only, atomically: a crash leaves the old file or the new one)."""
    private_dir(os.path.dirname(path))
    write_hub_file(os.path.dirname(path), info)
