"""The Litestream child of a replicated shard (issue 14), against a real Litestream and real
stores (a ``file://`` directory and a moto S3 server): what is synced can be restored, a
restore of nothing fails plainly, a dead child makes sync fail with its log, and the child dies
with its parent even when the parent is SIGKILLed. SQLite's own checkpoints (the store keeps the
default ``wal_autocheckpoint``) do not lose replicated data."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from orchestrations import ReplicaError
from runtime._litestream import Replicator, litestream_binary, restore
from runtime._replica_target import ReplicaTarget
from tests.helpers import running, wait_until
from tests.s3_server import s3_server  # noqa: F401  (the session's moto server)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["file", "s3"])
def target(request, tmp_path) -> ReplicaTarget:
    """A fresh replica location on each backend."""
    if request.param == "file":
        return ReplicaTarget.parse(f"file://{tmp_path}/replicas")
    server = request.getfixturevalue("s3_server")
    return ReplicaTarget.parse(server.url(f"ls-{uuid.uuid4().hex[:8]}"))


def _shard(path: Path) -> sqlite3.Connection:
    """A WAL-mode SQLite file with one table, as the store opens shard files (autocommit)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE IF NOT EXISTS t(i INTEGER PRIMARY KEY, v BLOB)")
    return db


def _rows(path: Path) -> list[int]:
    db = sqlite3.connect(path)
    try:
        return [i for (i,) in db.execute("SELECT i FROM t ORDER BY i")]
    finally:
        db.close()


def _insert(db: sqlite3.Connection, ids: range, size: int = 10) -> None:
    for i in ids:
        db.execute("INSERT INTO t(i, v) VALUES (?, ?)", (i, os.urandom(size)))


#: a CA bundle in the environment breaks Litestream's S3 client when an endpoint is set: the
#: replicator leaves it out of the child's environment
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def test_synced_commits_are_restored(target, tmp_path, monkeypatch):
    if target.scheme == "s3" and os.path.exists(CA_BUNDLE):
        monkeypatch.setenv("AWS_CA_BUNDLE", CA_BUNDLE)
    db = _shard(tmp_path / "shard-00.sqlite")

    async def scenario() -> None:
        replicator = Replicator(str(tmp_path / "shard-00.sqlite"), target, "hub", 0, 1)
        await replicator.start()
        try:
            assert replicator.alive()
            _insert(db, range(0, 20))
            first = await replicator.sync()
            await restore(target, "hub", 0, 1, str(tmp_path / "first.sqlite"))
            _insert(db, range(20, 25))  # a commit after a sync: the next sync covers it
            second = await replicator.sync()
            assert second > first
            await restore(target, "hub", 0, 1, str(tmp_path / "second.sqlite"))
        finally:
            await replicator.stop()
        assert not replicator.alive()

    asyncio.run(scenario())
    assert _rows(tmp_path / "first.sqlite") == list(range(20))
    assert _rows(tmp_path / "second.sqlite") == list(range(25))


def test_concurrent_syncs_all_answer(tmp_path):
    target = ReplicaTarget.parse(f"file://{tmp_path}/replicas")
    db = _shard(tmp_path / "shard-00.sqlite")

    async def scenario() -> list[int]:
        replicator = Replicator(str(tmp_path / "shard-00.sqlite"), target, "hub", 0, 1)
        await replicator.start()
        try:
            _insert(db, range(5))
            return await asyncio.gather(*(replicator.sync() for _ in range(8)))
        finally:
            await replicator.stop()

    txids = asyncio.run(scenario())
    assert len(txids) == 8 and all(isinstance(t, int) and t > 0 for t in txids)
    assert txids == sorted(txids)  # serialised: each answer covers the ones before it


def test_generations_replicate_apart_and_sqlite_checkpoints_lose_nothing(tmp_path):
    """Generation 2 starts from a full snapshot of the file generation 1 left (under its own
    prefix), and SQLite's passive checkpoints between syncs (automatic ones, as the store keeps
    ``wal_autocheckpoint`` on; here every 100 pages instead of 1000 to keep the test small, and
    an explicit one) do not lose replicated data."""
    target = ReplicaTarget.parse(f"file://{tmp_path}/replicas")
    path = tmp_path / "shard-00.sqlite"
    db = _shard(path)
    db.execute("PRAGMA wal_autocheckpoint=100")

    async def generation(g: int, ids: range) -> None:
        replicator = Replicator(str(path), target, "hub", 0, g)
        await replicator.start()
        try:
            _insert(db, ids[: len(ids) // 2], size=3000)  # ~1 page a row: autocheckpoints run
            await replicator.sync()
            db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            _insert(db, ids[len(ids) // 2 :], size=3000)
            await replicator.sync()
        finally:
            await replicator.stop()

    asyncio.run(generation(1, range(0, 400)))
    asyncio.run(generation(2, range(400, 500)))
    asyncio.run(restore(target, "hub", 0, 1, str(tmp_path / "gen1.sqlite")))
    asyncio.run(restore(target, "hub", 0, 2, str(tmp_path / "gen2.sqlite")))
    assert _rows(tmp_path / "gen1.sqlite") == list(range(400))
    assert _rows(tmp_path / "gen2.sqlite") == list(range(500))


def test_restoring_a_generation_with_no_replica_fails_plainly(target, tmp_path):
    with pytest.raises(ReplicaError, match="holds no copy"):
        asyncio.run(restore(target, "hub", 0, 5, str(tmp_path / "out.sqlite")))
    assert not (tmp_path / "out.sqlite").exists()


@pytest.mark.parametrize("existing", ["out.sqlite", "out.sqlite-wal"])
def test_restore_never_overwrites_a_file(tmp_path, existing):
    target = ReplicaTarget.parse(f"file://{tmp_path}/replicas")
    (tmp_path / existing).write_bytes(b"precious")
    with pytest.raises(ReplicaError, match="already exists"):
        asyncio.run(restore(target, "hub", 0, 1, str(tmp_path / "out.sqlite")))
    assert (tmp_path / existing).read_bytes() == b"precious"


def test_a_sync_to_a_missing_bucket_fails_naming_the_cause(s3_server, tmp_path):  # noqa: F811
    target = ReplicaTarget.parse(f"s3://no-such-bucket/p?endpoint={s3_server.endpoint}")
    db = _shard(tmp_path / "shard-00.sqlite")

    async def scenario() -> None:
        replicator = Replicator(str(tmp_path / "shard-00.sqlite"), target, "hub", 0, 1)
        await replicator.start()
        try:
            _insert(db, range(3))
            await replicator.sync()
        finally:
            await replicator.stop()

    with pytest.raises(ReplicaError, match="NoSuchBucket"):
        asyncio.run(scenario())


def test_a_dead_child_makes_sync_fail_with_its_log(tmp_path):
    target = ReplicaTarget.parse(f"file://{tmp_path}/replicas")
    db = _shard(tmp_path / "shard-00.sqlite")

    async def scenario() -> None:
        replicator = Replicator(str(tmp_path / "shard-00.sqlite"), target, "hub", 0, 1)
        await replicator.start()
        try:
            assert replicator.pid is not None
            os.kill(replicator.pid, signal.SIGKILL)
            _insert(db, range(3))
            with pytest.raises(ReplicaError) as info:
                await replicator.sync()
            assert "litestream for shard 0 of 'hub' (generation 1)" in str(info.value)
            assert "control socket listening" in str(info.value)  # the tail of its log
        finally:
            await replicator.stop()

    asyncio.run(scenario())


_PARENT = """
import asyncio, sys
from runtime._litestream import Replicator
from runtime._replica_target import ReplicaTarget

async def main():
    replicator = Replicator(sys.argv[1], ReplicaTarget.parse(sys.argv[2]), "hub", 0, 1)
    await replicator.start()
    print(replicator.pid, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def test_litestream_dies_with_its_parent_on_sigkill(tmp_path):
    _shard(tmp_path / "shard-00.sqlite").close()
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, str(tmp_path / "shard-00.sqlite"), f"file://{tmp_path}/replicas"],
        stdout=subprocess.PIPE, cwd=ROOT, text=True,
    )  # fmt: skip
    child = 0
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert running(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        wait_until(lambda: not running(child), timeout=10)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if child and running(child):  # the test failed: leave no orphan behind
            os.kill(child, signal.SIGKILL)


def test_a_missing_litestream_names_the_replica_extra(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ReplicaError, match=r"ray-durable\[replica\]"):
        litestream_binary()
