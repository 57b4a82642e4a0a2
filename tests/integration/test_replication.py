"""Replicated shards on a simulated multi-node Ray cluster (head + 2 workers on one machine), with
moto's S3 server on 127.0.0.1 as the replica.

Each node keeps its copies of the shards in a directory of its own (``<hub dir>/node-<node id>``,
``runtime._replication.node_directory``). A worker node that hosts shards is removed without
grace mid-workload and its directory deleted, as a node dies with its disk: Ray restarts its
shard hosts elsewhere, they wait for the dead owner's lease to lapse, restore their shards from
the replica and carry on. Every instance completes, every result a client was told survives, the
transfers conserve their total and no lock is left.

This module runs its own cluster, not the shared ``ray_session``.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

from entities import EntityId, entity
from orchestrations import activity, orchestrator
from runtime import OrchestrationRuntimeStatus as S
from runtime import TaskHub
from runtime._readonly import HubFiles
from runtime._replication import node_directory

from ..conftest import ALWAYS_REPLAY
from ..helpers import kill_tree, three_node_cluster
from ..s3_server import S3Server, s3_server  # noqa: F401 (a fixture)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(ALWAYS_REPLAY, reason="replication sits below the executor: the normal run covers it"),
]

ACCOUNTS, TRANSFERS, INITIAL = 10, 40, 100
FANOUTS, FAN_WIDTH, HELLOS, WAITERS = 4, 20, 12, 6
LEASE_SECONDS = 3.0


@activity(name="rp_double")
def double(x: int) -> int:
    time.sleep(0.01)
    return 2 * x


@activity(name="rp_hello")
def hello(name: str) -> str:
    return f"Hello {name}!"


@orchestrator(name="rp_fan")
def fan(ctx):
    return sum((yield ctx.task_all([ctx.call_activity(double, i) for i in range(ctx.get_input())])))


@orchestrator(name="rp_hellos")
def hellos(ctx):
    greetings = []
    for city in ("Tokyo", "Seattle", "London"):
        greetings.append((yield ctx.call_activity(hello, city)))
    return greetings


@orchestrator(name="rp_waiter")
def waiter(ctx):
    first = yield ctx.task_all([ctx.call_activity(double, i) for i in range(3)])
    extra = yield ctx.wait_for_external_event("go")  # the node is lost while instances wait here
    return sum(first) + extra


@entity(name="rp_account")
class Account:
    def __init__(self) -> None:
        self.balance = INITIAL

    def get(self) -> int:
        return self.balance

    def add(self, amount: int) -> int:
        self.balance += amount
        return self.balance


@orchestrator(name="rp_transfer")
def transfer(ctx):
    src, dst, amount = ctx.get_input()
    a, b = EntityId("rp_account", str(src)), EntityId("rp_account", str(dst))
    with (yield ctx.lock_entities([a, b])):
        balance = yield ctx.call_entity(a, "get")
        if balance < amount:
            return False
        yield ctx.call_entity(a, "add", -amount)
        yield ctx.call_entity(b, "add", amount)
    return True


@pytest.fixture(scope="module")
def cluster(s3_server: S3Server) -> Iterator[Any]:  # noqa: F811
    """Head plus two worker nodes (``tests.helpers.three_node_cluster``), started after the S3
    stand-in (its dummy credentials are in the environment every node inherits)."""
    with three_node_cluster() as c:
        yield c


def test_a_node_lost_with_its_disk_loses_nothing(cluster: Any, s3_server: S3Server, tmp_path: Path) -> None:  # noqa: F811
    c, workers = cluster
    replica = s3_server.url("node-loss")
    rng = random.Random(7)
    plan = [(src, (src + rng.randrange(1, ACCOUNTS)) % ACCOUNTS, rng.randrange(1, 60)) for src in
            (rng.randrange(ACCOUNTS) for _ in range(TRANSFERS))]
    with TaskHub("repl", data_dir=tmp_path, num_shards=3, replica=replica, lease_seconds=LEASE_SECONDS) as hub:
        before = hub.shard_nodes()
        doomed = next(w for w in workers if w.node_id in before)
        lost_shards = [i for i, node in enumerate(before) if node == doomed.node_id]
        # a first round completes, and its results are told to this client
        told: dict[str, Any] = {hub.start_new(fan, client_input=FAN_WIDTH): 2 * sum(range(FAN_WIDTH))
                                for _ in range(FANOUTS)}
        told |= {hub.start_new(hellos): ["Hello Tokyo!", "Hello Seattle!", "Hello London!"] for _ in range(HELLOS)}
        for iid, expected in told.items():
            status = hub.wait_for_completion(iid, timeout=120)
            assert status.runtime_status is S.Completed and status.output == expected, status.failure_details
        # a second round is in flight when the node goes: waiters hold at their event, transfers run
        waiting = [hub.start_new(waiter) for _ in range(WAITERS)]
        transfers = [hub.start_new(transfer, client_input=step) for step in plan]
        more = {hub.start_new(fan, client_input=FAN_WIDTH): 2 * sum(range(FAN_WIDTH)) for _ in range(FANOUTS)}
        for iid in waiting:  # every waiter has reached its event
            hub.wait_for_orchestration_start(iid, timeout=60)
        doomed_hosts = [ray.get(hub._shards[i].replication_status.remote())["pid"] for i in lost_shards]
        c.remove_node(doomed, allow_graceful=False)
        kill_tree(doomed_hosts)  # a node's death takes its processes at once (Ray's take a moment)
        shutil.rmtree(node_directory(hub.directory, doomed.node_id))
        lost_at = time.monotonic()
        for iid in waiting:
            hub.raise_event(iid, "go", 100)
        print(f"events taken {time.monotonic() - lost_at:.1f} s after the node's loss", file=sys.stderr)
        for iid in waiting:
            status = hub.wait_for_completion(iid, timeout=180)
            assert status.runtime_status is S.Completed and status.output == 6 + 100, status.failure_details
        for iid, expected in more.items():
            status = hub.wait_for_completion(iid, timeout=180)
            assert status.runtime_status is S.Completed and status.output == expected, status.failure_details
        outcomes = [hub.wait_for_completion(iid, timeout=180) for iid in transfers]
        assert [s.runtime_status for s in outcomes] == [S.Completed] * TRANSFERS, [s.failure_details for s in outcomes]
        # what the client was told before the loss is still so
        for iid, expected in told.items():
            status = hub.get_status(iid)
            assert status is not None and status.runtime_status is S.Completed and status.output == expected
        balances = [hub.read_entity_state(EntityId("rp_account", str(i))).entity_state for i in range(ACCOUNTS)]
        touched = {a for src, dst, _ in plan for a in (src, dst)}
        # each account holds what the transfers that said they moved money moved, exactly once
        # (an operation applied twice or lost shows here, naming the account)
        expected = {a: INITIAL for a in touched}
        for (src, dst, amount), outcome in zip(plan, outcomes, strict=True):
            if outcome.output:
                expected[src] -= amount
                expected[dst] += amount
        assert {a: b.balance for a, b in enumerate(balances) if b is not None} == expected
        assert sum(b.balance for b in balances if b is not None) == INITIAL * len(touched)
        assert all(b.balance >= 0 for b in balances if b is not None)
        assert not [m for m in hub.list_entities("rp_account") if m.locked_by is not None]
        after = hub.shard_nodes()
        assert all(after[i] != doomed.node_id for i in lost_shards)
        status = ray.get(hub._shards[lost_shards[0]].replication_status.remote())
        assert status["generation"] >= 2 and status["mode"] == "replicated"  # taken over, restored


def test_a_crash_between_commit_and_sync_releases_nothing_unreplicated(
    cluster: Any, s3_server: S3Server, tmp_path: Path  # noqa: F811
) -> None:
    """The host dies after committing a start and before the replica sync that would cover it,
    taking its disk along (the ``lose_disk_before_sync`` fault): the client was not answered,
    its call goes again to the host Ray restarts, which restores the shard without that start
    and applies it once. Had the answer left before the sync, the instance would be gone."""
    markers = tmp_path / "markers"
    markers.mkdir()
    with TaskHub(
        "repl-kill", data_dir=tmp_path / "data", num_shards=1, replica=s3_server.url("kill"),
        lease_seconds=LEASE_SECONDS, _crash_points=("lose_disk_before_sync",), _crash_marker_dir=str(markers),
    ) as hub:
        iid = hub.start_new(hellos)  # answered only once the host Ray restarted has applied it
        status = hub.wait_for_completion(iid, timeout=120)  # released early, the start would be gone
        assert (markers / "lose_disk_before_sync-0").exists()  # the host did die at that point
        assert status.runtime_status is S.Completed, status.failure_details
        assert status.output == ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]
        history = [e.event_type for e in hub.get_history(iid)]
        assert history.count("ExecutionStarted") == 1 and history.count("TaskScheduled") == 3
        replication = ray.get(hub._shards[0].replication_status.remote())
        assert replication["generation"] == 2  # taken over once, from the replica
    # the hub is closed: a reader gets its state from a copy restored from the replica, not
    # from a file a node writes (the copy lives in a temporary directory of its own)
    with contextlib.closing(HubFiles("repl-kill", tmp_path / "data")) as files:
        status = files.get_status(iid)
        assert status is not None and status.runtime_status is S.Completed
        assert status.output == ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]
        assert files._copies is not None and not str(files._copies.path(0)).startswith(str(tmp_path))
