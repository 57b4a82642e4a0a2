"""A shard host's replication (``runtime._replication.ShardReplication``) without Ray: a real
Litestream child replicating a real SQLite file to a ``file://`` replica, and its lease.

- effects leave only once a sync after their commit returned, in commit order, and reads wait
  the same way;
- a second owner is refused while the lease is held (another node, or the same node while the
  holder lives), and the error names the holder;
- an owner whose lease lapsed and was taken over releases nothing more;
- a local file is reused only by the node that wrote it under the previous generation: a stale
  one is replaced by the replica's copy.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from orchestrations import LeaseHeldError, LeaseLostError
from runtime._replication import ShardReplication

from .helpers import has_litestream, until

if not has_litestream():  # the replica extra is missing: say so rather than fail every test
    pytest.skip("litestream is not installed (the replica extra)", allow_module_level=True)

TTL = 1.0


def _replication(tmp_path: Path, node: str, ttl: float = TTL, mode: str = "replicated") -> ShardReplication:
    return ShardReplication(f"file://{tmp_path}/replica", mode, "hub", 0, str(tmp_path / "hub"), ttl, node)


def _write(path: str, *values: int) -> None:
    """Commit ``values`` as rows of table ``t`` (created if new), in WAL mode as the store does."""
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
        conn.executemany("INSERT INTO t VALUES (?)", [(v,) for v in values])
    conn.close()


def _rows(path: str) -> list[int]:
    conn = sqlite3.connect(path)
    try:
        return [x for (x,) in conn.execute("SELECT x FROM t ORDER BY x")]
    finally:
        conn.close()


def _counted(rep: ShardReplication) -> None:
    """Count a commit as the host does around each one it writes."""
    with rep.counting():
        pass


async def _owner(tmp_path: Path, node: str, *values: int, ttl: float = TTL) -> ShardReplication:
    """An owner that took the shard, replicates it, and committed ``values``."""
    rep = _replication(tmp_path, node, ttl)
    await rep.take(may_create=True)
    _write(rep.local_path, *values)
    await rep.start()
    return rep


def test_effects_leave_in_order_only_once_a_sync_covers_their_commit(tmp_path: Path) -> None:
    async def run() -> None:
        rep = await _owner(tmp_path, "node-a", 1)
        released: list[int] = []
        syncs: list[int] = []

        async def before_sync() -> None:  # what had left when each sync began
            syncs.append(len(released))

        rep._before_sync = before_sync
        for value in (2, 3):
            _write(rep.local_path, value)
            _counted(rep)
            rep.release(lambda value=value: released.append(value))  # type: ignore[misc]
        assert released == []  # nothing leaves in the turn that committed it
        await until(lambda: released == [2, 3])
        assert syncs and syncs[0] == 0  # the sync began before anything was released
        _write(rep.local_path, 4)
        _counted(rep)
        await asyncio.wait_for(rep.visible(), 10)  # a read that saw row 4 waits for its sync
        assert rep.status()["synced_commits"] >= 3
        await rep.close()
        restored = _replication(tmp_path, "node-b")
        assert not await restored.take(may_create=False)  # the replica has it: restored, not created
        assert _rows(restored.local_path) == [1, 2, 3, 4]
        await restored.close()

    asyncio.run(run())


def test_a_second_owner_is_refused_while_the_lease_is_held(tmp_path: Path) -> None:
    async def run() -> None:
        rep = await _owner(tmp_path, "node-a", 1, ttl=5.0)
        for node in ("node-b", "node-a"):  # another node; the same node while the holder lives
            with pytest.raises(LeaseHeldError) as refused:
                await _replication(tmp_path, node, ttl=5.0).take(may_create=True, wait=0.3)
            assert "node-a" in str(refused.value) and str(rep.pid) in str(refused.value)
        await rep.close()
        taken = _replication(tmp_path, "node-b", ttl=5.0)  # released on close: taken at once
        await taken.take(may_create=True, wait=0)
        assert taken.lease is not None and taken.lease.generation == 2
        await taken.close()

    asyncio.run(run())


def test_an_owner_whose_lease_lapsed_releases_nothing_more(tmp_path: Path) -> None:
    async def run() -> None:
        rep = await _owner(tmp_path, "node-a", 1)
        renew = rep._leases.renew

        def unreachable(*args: object, **kwargs: object) -> object:
            raise OSError("the replica store cannot be reached (a partition)")

        rep._leases.renew = unreachable  # type: ignore[method-assign]
        newcomer = _replication(tmp_path, "node-b")
        await newcomer.take(may_create=False)  # waits for the cut-off owner's lease to lapse
        released: list[int] = []
        _write(rep.local_path, 2)
        _counted(rep)
        rep.release(lambda: released.append(2))
        rep._leases.renew = renew  # type: ignore[method-assign]  # the partition heals
        await until(lambda: rep.fenced is not None)
        await asyncio.sleep(0.2)
        assert released == [] and isinstance(rep.fenced, LeaseLostError)
        with pytest.raises(LeaseLostError):
            await rep.visible()
        assert _rows(newcomer.local_path) == [1]  # the cut-off owner's last commit never counted
        await rep.close()
        await newcomer.close()

    asyncio.run(run())


def test_a_stale_local_file_is_not_reused(tmp_path: Path) -> None:
    async def run() -> None:
        first = await _owner(tmp_path, "node-a", 1)  # generation 1 on node a
        await first.close()
        _write(first.local_path, 99)  # written on node a after its generation ended: never replicated
        second = _replication(tmp_path, "node-b")  # generation 2 on node b, from the replica
        await second.take(may_create=False)
        await second.start()
        _write(second.local_path, 2)
        _counted(second)
        await asyncio.wait_for(second.visible(), 10)
        await second.close()
        third = _replication(tmp_path, "node-a")  # back on node a: its file is a generation old
        await third.take(may_create=False)
        assert _rows(third.local_path) == [1, 2]
        await third.start()
        await third.close()
        _write(third.local_path, 3)  # written after Litestream stopped: only in the local file
        fourth = _replication(tmp_path, "node-a")  # node a held the last generation: reused as is
        await fourth.take(may_create=False)
        assert _rows(fourth.local_path) == [1, 2, 3]
        await fourth.close()

    asyncio.run(run())
