"""Leases under a ``file://`` replica target: ``<dir>/<hub>/shard-NN/lease`` (JSON with a version
counter), swapped under an ``fcntl`` lock on the sibling ``lease.lock``. The lock serialises
every host on this machine (and on a shared mount whose locks work, such as NFSv4)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator

from ._lease_cas import CasLeaseStore, _ConflictError
from ._replica_target import ReplicaTarget


class FileLeaseStore(CasLeaseStore):
    """The lease store of a file target; the token is the version counter stored beside the lease."""

    def __init__(self, target: ReplicaTarget) -> None:
        self.target = target

    def _dir(self, hub: str, index: int) -> str:
        return self.target.local_dir(self.target.shard_key(hub, index))

    @contextlib.contextmanager
    def _locked(self, hub: str, index: int) -> Iterator[str]:
        directory = self._dir(hub, index)
        os.makedirs(directory, exist_ok=True)
        fd = os.open(os.path.join(directory, "lease.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield os.path.join(directory, "lease")
        finally:
            os.close(fd)  # closing drops the lock

    def _get(self, hub: str, index: int) -> tuple[bytes, str] | None:
        with self._locked(hub, index) as path:
            return _load(path)

    def _put(self, hub: str, index: int, blob: bytes, expected: str | None) -> str:
        with self._locked(hub, index) as path:
            found = _load(path)
            if (found[1] if found else None) != expected:
                raise _ConflictError
            version = str(int(expected or "0") + 1)
            record = {"version": version, "lease": json.loads(blob)}
            tmp = f"{path}.tmp"
            with open(tmp, "w") as f:
                json.dump(record, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            return version


def _load(path: str) -> tuple[bytes, str] | None:
    try:
        with open(path) as f:
            record = json.load(f)
    except FileNotFoundError:
        return None
    return json.dumps(record["lease"]).encode(), str(record["version"])
