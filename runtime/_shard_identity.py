"""Whose a shard file is: the identity a shard file records in its ``meta`` table (format
version, hub name, hub id, shard index, shard count), and the checks that refuse, by name and
before anything is written, a file that is not this shard's.

The hub id is the one in the hub's ``hub.json`` (see ``runtime._hub_file``): two hubs of the same
name in two data directories are told apart by it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import aiosqlite

from orchestrations import ShardFileError, ShardMismatchError

#: 2: history is keyed by a per-shard increasing instance number (appends, not random inserts);
#: 3: events and payloads stored by name through the converter (JSON; marked pickles), not as
#: pickles of classes (a version-2 file is migrated when opened: ``runtime._migrate``)
FORMAT_VERSION = 3

_NOTHING_CHANGED = "nothing was changed"
_NEVER_EMPTY = "it is never recreated empty"


@dataclass(frozen=True, slots=True)
class ShardIdentity:
    """The shard a store is opened for. ``hub_id`` is ``""`` when not known (not checked)."""

    hub: str
    hub_id: str
    shard: int
    num_shards: int

    def meta_rows(self) -> list[tuple[str, str]]:
        """What a new file records about itself."""
        return [
            ("format_version", str(FORMAT_VERSION)),
            ("hub", self.hub),
            ("hub_id", self.hub_id),
            ("shard", str(self.shard)),
            ("num_shards", str(self.num_shards)),
        ]


async def check_file(path: str, identity: ShardIdentity, create: bool) -> tuple[bool, bool]:
    """Check that the file at ``path`` is ``identity``'s, reading it on a read-only connection
    (so a refused file, even one in WAL mode, is not checkpointed or otherwise changed).

    Returns ``(fresh, adopt)``: whether the file is new (absent, or without a table yet: the
    caller creates it, which ``create`` must allow), and whether it lacks its hub's id (a file
    written before files recorded it: the caller records it). Raises :class:`ShardFileError`
    naming the file for a missing or empty file when ``create`` is false, another
    application's SQLite database, a file of another format version, hub or shard, and
    :class:`ShardMismatchError` for another shard count."""
    if not os.path.exists(path):
        if not create:
            raise ShardFileError(
                path,
                f"is missing: hub {identity.hub!r} has it (see its hub.json) but the file is gone. Put it back "
                f"(from a backup); {_NEVER_EMPTY}. To start the hub afresh, remove its directory",
            )
        return True, False
    async with aiosqlite.connect(f"file:{path}?mode=ro", uri=True) as db:
        async with db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name") as cur:
            tables = [row[0] for row in await cur.fetchall()]
        meta: dict[str, str] = {}
        if "meta" in tables:
            async with db.execute("SELECT key, value FROM meta") as cur:
                meta = {row[0]: row[1] for row in await cur.fetchall()}
    if not meta and tables not in ([], ["meta"]):
        shown = ", ".join(tables[:8]) + (", ..." if len(tables) > 8 else "")
        raise ShardFileError(
            path, f"is a SQLite database but not a shard file (tables: {shown}); refusing to open or change it"
        )
    if not meta:
        if not create:
            raise ShardFileError(
                path,
                f"is empty, but hub {identity.hub!r} has it (see its hub.json): the shard's data is gone. "
                f"Put the file back (from a backup); {_NEVER_EMPTY}",
            )
        return True, False
    check_meta(path, identity, meta)
    return False, bool(identity.hub_id) and not meta.get("hub_id")


def check_meta(path: str, identity: ShardIdentity, meta: dict[str, str]) -> None:
    """Refuse, by name, a shard file of another format version, hub, shard or shard count."""
    version = int(meta.get("format_version", "0"))
    if version < FORMAT_VERSION:
        raise ShardFileError(
            path,
            f"has format version {meta.get('format_version')}, older than this runtime's {FORMAT_VERSION} "
            "(a pre-release layout with no migration: only version 2 is migrated); open it with the release "
            "that wrote it",
        )
    if version > FORMAT_VERSION:
        raise ShardFileError(
            path,
            f"has format version {version}, newer than this runtime's {FORMAT_VERSION}: it was written by a "
            f"later release of ray-durable; open it with that release (or a later one); {_NOTHING_CHANGED}",
        )
    hub, shard, hub_id = meta.get("hub"), meta.get("shard"), meta.get("hub_id")
    if hub != identity.hub:
        raise ShardFileError(
            path,
            f"belongs to hub {hub!r}, not to {identity.hub!r}: a file of another hub was put here. "
            f"Put this hub's own file back; {_NOTHING_CHANGED}",
        )
    if hub_id and identity.hub_id and hub_id != identity.hub_id:
        raise ShardFileError(
            path,
            f"belongs to another hub named {hub!r} (hub id {hub_id}; this one's is {identity.hub_id}, see its "
            f"hub.json): a file was copied from another data directory. Put this hub's own file back; "
            f"{_NOTHING_CHANGED}",
        )
    if shard != str(identity.shard):
        raise ShardFileError(
            path,
            f"is the file of shard {shard} of hub {hub!r}, not of shard {identity.shard}: shard files were "
            f"swapped or copied. Put each file back at its own path (shard-NN.sqlite); {_NOTHING_CHANGED}",
        )
    recorded = int(meta.get("num_shards", "0"))
    if recorded != identity.num_shards:
        raise ShardMismatchError(identity.hub, recorded, identity.num_shards)


def lost_file(path: str, file_id: tuple[int, int]) -> ShardFileError | None:
    """The error to raise if the file at ``path`` is no longer the one opened (``file_id``: its
    device and inode then), else ``None``. One ``stat``."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        reason = "was deleted while its hub was running"
    else:
        if (st.st_dev, st.st_ino) == file_id:
            return None
        reason = "was replaced by another file while its hub was running"
    return ShardFileError(
        path,
        f"{reason}; this shard host stops using it (its last commits went to the file it had open). "
        f"Put the file back (from a backup) and restart the hub; {_NEVER_EMPTY}",
    )
