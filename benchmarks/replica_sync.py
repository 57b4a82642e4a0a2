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
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

from runtime._litestream import Replicator
from runtime._replica_target import ReplicaTarget


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


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
    return {f"p{int(p * 100)}_ms": round(_percentile(times, p), 2) for p in (0.5, 0.9, 0.99)}


@contextmanager
def _moto(work: str) -> Iterator[tuple[str, str]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    binary = os.path.join(os.path.dirname(sys.executable), "moto_server")
    with open(os.path.join(work, "moto.log"), "wb") as log:
        proc = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.05)
        import boto3

        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="bench")
        yield endpoint, "bench"
    finally:
        proc.terminate()
        proc.wait()


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
            with _moto(work) if args.endpoint is None else _given(args.endpoint, args.bucket) as (endpoint, bucket):
                target = ReplicaTarget.parse(f"s3://{bucket}/bench?endpoint={endpoint}")
                result["s3"] = asyncio.run(_measure(target, work, args.syncs))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))


@contextmanager
def _given(endpoint: str, bucket: str) -> Iterator[tuple[str, str]]:
    yield endpoint, bucket


if __name__ == "__main__":
    main()
