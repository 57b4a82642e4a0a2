"""Shard leases in the replica store: who may write a replicated shard (issue 14).

One lease object per shard, ``<shard_key>/lease`` (JSON), changed only by compare-and-swap:
on S3 a create carries ``If-None-Match: *`` and every change ``If-Match: <etag>``; in a file
target the swap happens under an ``fcntl`` lock with a version counter as the token. A host
takes a shard at generation G+1 when the previous lease was released, has expired, or belongs
to a dead process of the same node; each generation replicates under its own ``gen-G`` prefix,
so a cut-off owner's late writes are never read. Calls block: the shard host runs them in
``asyncio.to_thread``.

The local file may be reused after a takeover only when its sidecar (``<shard file>.lease``)
says it was written by the previous generation on this node (:func:`local_file_reusable`);
otherwise the caller restores from the replica.
"""

from __future__ import annotations

import json
import os

from ._lease_cas import Lease, LeaseStore
from ._lease_file import FileLeaseStore
from ._lease_s3 import S3LeaseStore
from ._replica_target import ReplicaTarget

__all__ = ["Lease", "LeaseStore", "local_file_reusable", "open_lease_store", "sidecar_path", "write_sidecar"]


def open_lease_store(target: ReplicaTarget) -> LeaseStore:
    """The lease store of ``target``: S3 objects (boto3, conditional writes) or files under a
    ``file://`` directory. ReplicaError if boto3 (the ``replica`` extra) is missing."""
    if target.scheme == "file":
        return FileLeaseStore(target)
    return S3LeaseStore(target)


# -- the local file's sidecar: which generation on which node last wrote it -----------------------


def sidecar_path(path: str) -> str:
    """The sidecar of shard file ``path``."""
    return f"{path}.lease"


def write_sidecar(path: str, lease: Lease) -> None:
    """Record next to shard file ``path`` that ``lease``'s owner and generation write it
    (atomically: written to a temporary file, fsync'd, renamed)."""
    blob = json.dumps({"owner": lease.owner, "generation": lease.generation}).encode()
    tmp = f"{sidecar_path(path)}.tmp"
    with open(tmp, "wb") as f:
        f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, sidecar_path(path))


def local_file_reusable(path: str, owner: str, previous: Lease | None) -> bool:
    """Whether shard file ``path`` may be used as is by ``owner`` after taking the lease over
    from ``previous``: only if the file and its sidecar exist, the previous lease was this
    node's, and the sidecar says this node wrote the file under that very generation (so the
    file holds everything that generation committed). False means: restore from the replica
    (or, with no previous lease, create a new shard)."""
    if previous is None or previous.owner != owner or not os.path.exists(path):
        return False
    try:
        with open(sidecar_path(path), "rb") as f:
            recorded = json.loads(f.read())
    except (OSError, ValueError):
        return False
    return (
        isinstance(recorded, dict)
        and recorded.get("owner") == owner
        and recorded.get("generation") == previous.generation
    )
