"""A hub on a simulated multi-node Ray cluster (head + 2 workers, one machine, one shared disk).

- a fan-out's activities run on several nodes and the result is right;
- shard hosts spread over the nodes (soft node affinity, shard i on node i mod N), and losing a
  worker node that hosts a shard, mid-work, loses nothing: Ray restarts the host on
  another node, it reopens its file (shared storage) and every orchestration completes.

This module runs its own cluster, not the shared ``ray_session``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

from orchestrations import activity, orchestrator
from runtime import OrchestrationRuntimeStatus as S
from runtime import TaskHub

from ..conftest import ALWAYS_REPLAY
from ..helpers import three_node_cluster, wait_until

# in order: the last test removes a node for good, so the ones that need all three come first
pytestmark = [
    pytest.mark.integration,
    pytest.mark.in_order,
    pytest.mark.skipif(ALWAYS_REPLAY, reason="node placement and loss: the normal run covers them"),
]

FAN_OUT = 200
INSTANCES, WORK_ITEMS = 6, 6


@activity(name="mn_where")
def where(item: int) -> tuple[int, str]:
    """Returns its item and the node it ran on."""
    time.sleep(0.005)  # simulated work, so batches overlap and spill over to other nodes
    return item, ray.get_runtime_context().get_node_id()


@activity(name="mn_slow_double")
def slow_double(item: int) -> int:
    time.sleep(0.2)  # still running when the node goes
    return 2 * item


@orchestrator(name="mn_fan")
def fan(ctx):
    return (yield ctx.task_all([ctx.call_activity(where, i) for i in range(ctx.get_input())]))


@orchestrator(name="mn_work")
def work(ctx):
    first = yield ctx.task_all([ctx.call_activity(slow_double, i) for i in range(WORK_ITEMS)])
    yield ctx.wait_for_external_event("go")  # the test lets it go on once the node is gone
    second = yield ctx.task_all([ctx.call_activity(slow_double, x) for x in first])
    return sum(second)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """Head plus two worker nodes (``tests.helpers.three_node_cluster``), for the module."""
    with three_node_cluster() as c:
        yield c


@pytest.fixture(scope="module")
def hub(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TaskHub]:
    """A 4-shard hub (every node hosts at least one shard); its files sit on the shared disk."""
    data_dir = tmp_path_factory.mktemp("durable")
    with TaskHub("multinode", data_dir=data_dir, num_shards=4, always_replay=ALWAYS_REPLAY) as h:
        yield h


def test_fan_out_runs_on_several_nodes(hub: TaskHub) -> None:
    iid = hub.start_new(fan, client_input=FAN_OUT)
    status = hub.wait_for_completion(iid, timeout=60)
    assert status.runtime_status is S.Completed, status.failure_details
    assert [item for item, _ in status.output] == list(range(FAN_OUT))
    assert len({node for _, node in status.output}) >= 2


def test_losing_a_node_that_hosts_a_shard_loses_nothing(cluster: Any, hub: TaskHub) -> None:
    c, workers = cluster
    before = hub.shard_nodes()
    # first, while every node is up: the shard hosts spread over them (shard i on node i mod 3)
    alive = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
    assert len(alive) == 3
    assert before == [alive[i % 3] for i in range(4)]
    doomed = next(w for w in workers if w.node_id in before)
    ids = [hub.start_new(work) for _ in range(INSTANCES)]
    # until some activity results are committed: the node goes with work half done (each
    # instance waits for "go" between its rounds, so none can end before the node is gone,
    # however slow the machine)
    wait_until(lambda: any(hub.get_status(i).runtime_status is S.Running for i in ids), timeout=30)
    c.remove_node(doomed)
    for i in ids:
        hub.raise_event(i, "go")
    statuses = [hub.wait_for_completion(i, timeout=60) for i in ids]
    assert [s.runtime_status for s in statuses] == [S.Completed] * INSTANCES, [s.failure_details for s in statuses]
    assert [s.output for s in statuses] == [4 * sum(range(WORK_ITEMS))] * INSTANCES
    after = hub.shard_nodes()
    assert doomed.node_id not in after
    moved = [i for i, node in enumerate(before) if node == doomed.node_id]
    assert moved and all(after[i] != before[i] for i in moved)  # restarted elsewhere, same file
    assert all(after[i] == before[i] for i in range(len(before)) if i not in moved)
    for i in ids:  # every history is whole: both rounds scheduled once each
        assert [e.event_type for e in hub.get_history(i)].count("TaskScheduled") == 2 * WORK_ITEMS


def test_shard_files_stay_on_the_shared_disk(hub: TaskHub) -> None:
    assert sorted(p.name for p in Path(hub.directory).glob("shard-*.sqlite")) == [
        f"shard-{i:02d}.sqlite" for i in range(4)
    ]
