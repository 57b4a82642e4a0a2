"""Replication micro-benchmark (issue 14): what ``Replicator.sync()`` costs after a one-row commit,
the wait a ``durability="replicated"`` turn adds before its effects are released. No Ray.

For each target (``file``: a temp directory; ``s3``: a moto server this script starts on
127.0.0.1, or ``--endpoint`` of one already running with ``--bucket``), a WAL-mode SQLite file
gets ``--syncs`` one-row commits (default 200), each followed by a timed sync over Litestream's
control socket. Output: one JSON line, p50/p90/p99 in milliseconds per target.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sqlite3
import tempfile
import time

import _common as common  # benchmarks/ is on sys.path

from runtime._litestream import Replicator
from runtime._replica_target import ReplicaTarget


async def _measure(target: ReplicaTarget, work: str, syncs: int) -> dict[str, float]:
    path = os.path.join(work, f"bench-{target.scheme}.sqlite")
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE t(i INTEGER PRIMARY KEY, v TEXT)")
    replicator = Replicator(path, target, "bench", 0, 1)
    await replicator.start()
    try:
        await replicator.sync()  # the first sync uploads the snapshot: not a steady-state figure
        times = []
        for i in range(syncs):
            db.execute("INSERT INTO t(i, v) VALUES (?, 'a small row, like a turn')", (i,))
            start = time.perf_counter()
            await replicator.sync()
            times.append((time.perf_counter() - start) * 1e3)
    finally:
        await replicator.stop()
        db.close()
    return {f"p{int(p * 100)}_ms": round(common.percentile(times, int(p * 100)), 2) for p in (0.5, 0.9, 0.99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--syncs", type=int, default=200)
    parser.add_argument("--targets", default="file,s3")
    parser.add_argument("--endpoint", help="an S3 endpoint already running (else moto is started)")
    parser.add_argument("--bucket", default="bench")
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    work = tempfile.mkdtemp(prefix="replica-sync-")
    result: dict[str, object] = {"benchmark": "replica_sync", "syncs": args.syncs}
    try:
        if "file" in args.targets:
            target = ReplicaTarget.parse(f"file://{work}/replica")
            result["file"] = asyncio.run(_measure(target, work, args.syncs))
        if "s3" in args.targets:
            given = contextlib.nullcontext(args.endpoint)
            s3 = common.moto_server(work, args.bucket) if args.endpoint is None else given
            with s3 as endpoint:
                target = ReplicaTarget.parse(f"s3://{args.bucket}/bench?endpoint={endpoint}")
                result["s3"] = asyncio.run(_measure(target, work, args.syncs))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
