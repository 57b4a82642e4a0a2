"""Shard leases (issue 14) on both backends, a ``file://`` directory and S3 (a real moto server,
conditional writes and all): who may take a shard, when a takeover is allowed, that a host
which lost its lease finds out, and that a race has exactly one winner. Then the local file's
sidecar rules: when a new generation may reuse the file on disk instead of restoring it."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid

import pytest

from orchestrations import LeaseHeldError, LeaseLostError
from runtime._lease import Lease, local_file_reusable, open_lease_store, write_sidecar
from runtime._replica_target import ReplicaTarget
from tests.s3_server import s3_server  # noqa: F401  (the session's moto server)

TTL = 30.0


@pytest.fixture(params=["file", "s3"])
def store(request, tmp_path):
    """A lease store on a fresh prefix of each backend."""
    if request.param == "file":
        return open_lease_store(ReplicaTarget.parse(f"file://{tmp_path}/replicas"))
    server = request.getfixturevalue("s3_server")
    return open_lease_store(ReplicaTarget.parse(server.url(f"leases-{uuid.uuid4().hex[:8]}")))


@pytest.fixture(scope="module")
def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_first_acquire_is_generation_one(store):
    lease, previous = store.acquire("hub", 0, "node-a", "host-a", 111, TTL)
    assert previous is None
    assert (lease.generation, lease.data_generation, lease.released) == (1, 0, False)
    assert (lease.owner, lease.host, lease.pid) == ("node-a", "host-a", 111)
    assert lease.token
    assert store.read("hub", 0) == lease
    assert store.read("hub", 1) is None  # shards are separate


def test_a_held_lease_refuses_another_owner_and_names_the_holder(store):
    held, _ = store.acquire("hub", 0, "node-a", "host-a", 111, TTL)
    with pytest.raises(LeaseHeldError) as info:
        store.acquire("hub", 0, "node-b", "host-b", 222, TTL)
    error = info.value
    assert (error.owner, error.host, error.pid, error.generation) == ("node-a", "host-a", 111, 1)
    assert error.expires_at == held.expires_at
    assert "node-a" in str(error) and "host-a" in str(error) and "111" in str(error)
    assert store.read("hub", 0) == held  # unchanged


def test_the_same_node_with_a_live_pid_is_refused_too(store):
    import os

    store.acquire("hub", 0, "node-a", "host-a", os.getpid(), TTL)  # this process: alive
    with pytest.raises(LeaseHeldError):
        store.acquire("hub", 0, "node-a", "host-a", 999, TTL)


def test_same_node_and_host_with_a_dead_pid_takes_over_at_the_next_generation(store, dead_pid):
    first, _ = store.acquire("hub", 0, "node-a", "host-a", dead_pid, TTL)
    first = store.renew(first, TTL, data_generation=1)
    with pytest.raises(LeaseHeldError):  # another host name: its pid means nothing here
        store.acquire("hub", 0, "node-a", "host-other", 222, TTL)
    with pytest.raises(LeaseHeldError):  # another node on this host
        store.acquire("hub", 0, "node-other", "host-a", 222, TTL)
    second, previous = store.acquire("hub", 0, "node-a", "host-a", 222, TTL)
    assert previous == first
    assert (second.generation, second.data_generation, second.pid) == (2, 1, 222)


def test_an_expired_lease_is_taken_over_by_anyone(store):
    past = time.time() - 100
    first, _ = store.acquire("hub", 0, "node-a", "host-a", 111, TTL, now=past)
    assert first.expires_at < time.time()
    second, previous = store.acquire("hub", 0, "node-b", "host-b", 222, TTL)
    assert previous == first
    assert (second.owner, second.generation) == ("node-b", 2)


def test_renew_extends_and_records_the_data_generation(store):
    lease, _ = store.acquire("hub", 0, "node-a", "host-a", 111, 5.0)
    renewed = store.renew(lease, 60.0, data_generation=1)
    assert renewed.expires_at > lease.expires_at
    assert renewed.data_generation == 1 and renewed.token != lease.token
    again = store.renew(renewed, 60.0)  # no data_generation: kept
    assert again.data_generation == 1
    assert store.read("hub", 0) == again


def test_renew_after_a_takeover_raises_lease_lost(store):
    stale, _ = store.acquire("hub", 0, "node-a", "host-a", 111, TTL, now=time.time() - 100)
    store.acquire("hub", 0, "node-b", "host-b", 222, TTL)
    with pytest.raises(LeaseLostError) as info:
        store.renew(stale, TTL)
    assert info.value.generation == 1
    assert "generation 2" in str(info.value) and "node-b" in str(info.value)


def test_renew_with_a_stale_token_raises_lease_lost(store):
    lease, _ = store.acquire("hub", 0, "node-a", "host-a", 111, TTL)
    store.renew(lease, TTL)  # the stored token moves on
    with pytest.raises(LeaseLostError):
        store.renew(lease, TTL)


def test_release_lets_the_next_owner_in_at_once(store):
    lease, _ = store.acquire("hub", 0, "node-a", "host-a", 111, TTL)
    store.release(lease)
    assert store.read("hub", 0).released
    nxt, previous = store.acquire("hub", 0, "node-b", "host-b", 222, TTL)
    assert previous is not None and previous.released
    assert (nxt.generation, nxt.released) == (2, False)


def test_a_release_after_losing_the_lease_changes_nothing(store):
    stale, _ = store.acquire("hub", 0, "node-a", "host-a", 111, TTL, now=time.time() - 100)
    winner, _ = store.acquire("hub", 0, "node-b", "host-b", 222, TTL)
    store.release(stale)  # best effort: the lost swap is ignored
    assert store.read("hub", 0) == winner


def test_concurrent_acquires_have_exactly_one_winner(store):
    contenders = 6
    start = threading.Barrier(contenders)
    won: list[Lease] = []
    refused: list[LeaseHeldError] = []

    def contend(i: int) -> None:
        start.wait()
        try:
            won.append(store.acquire("hub", 0, f"node-{i}", f"host-{i}", 1000 + i, TTL)[0])
        except LeaseHeldError as exc:
            refused.append(exc)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(contenders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(refused) == contenders - 1
    assert store.read("hub", 0) == won[0]
    assert all(e.owner == won[0].owner for e in refused)  # each refusal names the winner


def test_a_lease_from_a_later_version_reads_and_garbage_is_refused():
    from orchestrations import ReplicaError
    from runtime._lease_cas import Lease as StoredLease

    blob = b'{"hub": "h", "index": 0, "owner": "n", "host": "h", "pid": 1, "generation": 4, "expires_at": 1.0, '
    lease = StoredLease.from_json(blob + b'"released": false, "data_generation": 3, "new_field": 1}', "7")
    assert (lease.generation, lease.data_generation, lease.token) == (4, 3, "7")
    with pytest.raises(ReplicaError, match="is not a lease"):
        StoredLease.from_json(b'{"hub": "h"}', "1")
    with pytest.raises(ReplicaError, match="is not a lease"):
        StoredLease.from_json(b"<html>", "1")


# -- the local file's sidecar -------------------------------------------------------------------


def _lease(owner: str, generation: int) -> Lease:
    return Lease("hub", 0, owner, "host", 1, generation, time.time() + TTL)


def test_a_file_written_by_the_previous_generation_on_this_node_is_reused(tmp_path):
    path = str(tmp_path / "shard-00.sqlite")
    (tmp_path / "shard-00.sqlite").write_bytes(b"x")
    write_sidecar(path, _lease("node-a", 3))
    assert local_file_reusable(path, "node-a", _lease("node-a", 3))


@pytest.mark.parametrize(
    ("sidecar", "owner", "previous"),
    [
        (("node-a", 2), "node-a", ("node-a", 3)),  # the file is a generation behind
        (("node-a", 3), "node-a", ("node-b", 3)),  # another node held the lease since
        (("node-b", 3), "node-a", ("node-a", 3)),  # the file was written by another node
        (("node-a", 3), "node-b", ("node-a", 3)),  # another node is taking over
        (("node-a", 3), "node-a", None),  # no previous lease: a new shard
        (None, "node-a", ("node-a", 3)),  # no sidecar
    ],
)
def test_a_file_is_not_reused_otherwise(tmp_path, sidecar, owner, previous):
    path = str(tmp_path / "shard-00.sqlite")
    (tmp_path / "shard-00.sqlite").write_bytes(b"x")
    if sidecar is not None:
        write_sidecar(path, _lease(*sidecar))
    assert not local_file_reusable(path, owner, None if previous is None else _lease(*previous))


def test_a_missing_file_or_a_broken_sidecar_is_not_reused(tmp_path):
    path = str(tmp_path / "shard-00.sqlite")
    write_sidecar(path, _lease("node-a", 3))
    assert not local_file_reusable(path, "node-a", _lease("node-a", 3))  # the sidecar alone
    (tmp_path / "shard-00.sqlite").write_bytes(b"x")
    (tmp_path / "shard-00.sqlite.lease").write_text("{not json")
    assert not local_file_reusable(path, "node-a", _lease("node-a", 3))
