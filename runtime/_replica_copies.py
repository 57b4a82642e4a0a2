"""Read-only copies of a replicated hub's shards, restored from its replica: what the CLI and
anything else that only reads opens instead of the files the hub's nodes write (another node's
file may be half-written, or its node gone)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import tempfile
from pathlib import Path

from orchestrations import ShardFileError

from ._hub_file import shard_file
from ._lease import open_lease_store
from ._litestream import restore
from ._replica_target import ReplicaTarget


class ReplicaCopies:
    """Copies of hub ``hub``'s shards, each restored on first use from the newest generation of
    ``replica`` that holds data, into a private temporary directory :meth:`close` removes. A
    copy is what the replica held when it was restored: a long-lived reader (the web UI over a
    closed hub) sees it as of then."""

    def __init__(self, hub: str, replica: str) -> None:
        self.hub = hub
        self.target = ReplicaTarget.parse(replica)
        self._dir: str | None = None

    def path(self, index: int) -> Path:
        """The copy of shard ``index`` (restored now if not yet). Raises :class:`ShardFileError`
        if the replica holds none."""
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="durable-copy-")
        path = os.path.join(self._dir, shard_file(index))
        if not os.path.exists(path):
            where = f"{self.target.describe()} (shard {index} of hub {self.hub!r})"
            try:
                lease = open_lease_store(self.target).read(self.hub, index)
            except Exception as exc:  # no credentials, no such bucket, unreachable
                raise ShardFileError(where, f"its replica cannot be read: {type(exc).__name__}: {exc}") from exc
            if lease is None or lease.data_generation == 0:
                raise ShardFileError(where, "has no copy in the replica yet")
            coro = restore(self.target, self.hub, index, lease.data_generation, path)
            with concurrent.futures.ThreadPoolExecutor(1) as pool:  # whether or not a loop runs here
                pool.submit(asyncio.run, coro).result()
        return Path(path)

    def close(self) -> None:
        """Remove the copies."""
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
