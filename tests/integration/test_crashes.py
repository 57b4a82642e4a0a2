"""Kill tests: a process dies exactly once at a chosen point, and counters prove the promises.

- every orchestration completes exactly once (one ExecutionCompleted, the right output);
- every entity operation takes effect exactly once (counters equal the operations sent);
- every activity runs at least once (a run log on disk counts executions);
- nothing committed is lost (instances started before the kill finish).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from entities import EntityContext, EntityId, entity
from orchestrations import activity, orchestrator
from orchestrations._ids import shard_of
from runtime import OrchestrationRuntimeStatus as S
from runtime import TaskHub

from ..conftest import ALWAYS_REPLAY
from ..helpers import wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        ALWAYS_REPLAY, reason="a crash empties the cache, so recovery replays in both runs: the normal run covers it"
    ),
]

INSTANCES, FAN_OUT, ADDS = 6, 5, 3


@activity(name="cr_work")
def work(args: tuple[str, str, int]) -> int:
    """Logs every execution (a line per run) and returns its item doubled."""
    log_dir, iid, item = args
    with open(os.path.join(log_dir, f"{iid}-{item}"), "a") as f:
        f.write("run\n")
    return 2 * item


@activity(name="cr_dies_once")
def dies_once(args: tuple[str, int]) -> int:
    """Kills its own worker process the first time it runs (marker file), then works."""
    marker_dir, item = args
    marker = Path(marker_dir) / "worker-killed"
    if item == 0 and not marker.exists():
        marker.write_text(str(os.getpid()))
        os._exit(9)
    return 2 * item


@activity(name="cr_in_actor")
def in_actor(_: object) -> bool:
    """Whether this activity runs on the shard host's warm worker (its batches run on its
    connection's thread; not a Ray task, nor the host itself while the worker starts)."""
    import threading

    return threading.current_thread().name == "warm-worker"


@activity(name="cr_warm_dies_once")
def warm_dies_once(marker_dir: str) -> bool:
    """Kills its process the first time it runs on the warm worker, then reports where it ran."""
    marker = Path(marker_dir) / "warm-killed"
    warm = in_actor(None)
    if warm and not marker.exists():
        marker.write_text(str(os.getpid()))
        os._exit(9)
    return warm


@orchestrator(name="cr_one")
def one(ctx):
    name, arg = ctx.get_input()
    return (yield ctx.call_activity(name, arg))


@entity(name="CrCounter")
def counter(ctx: EntityContext) -> None:
    value = ctx.get_state(lambda: 0)
    if ctx.operation_name == "add":
        value += ctx.get_input()
    ctx.set_state(value)


@orchestrator(name="cr_mixed")
def mixed(ctx):
    log_dir, key = ctx.get_input()
    results = yield ctx.task_all([ctx.call_activity(work, (log_dir, ctx.instance_id, i)) for i in range(FAN_OUT)])
    for _ in range(ADDS):
        yield ctx.call_entity(EntityId("CrCounter", key), "add", 1)
    return sum(results)


@orchestrator(name="cr_worker_death")
def worker_death(ctx):
    marker_dir = ctx.get_input()
    results = yield ctx.task_all([ctx.call_activity(dies_once, (marker_dir, i)) for i in range(4)])
    return sum(results)


def run_mixed_with_crash(tmp_path: Path, point: str) -> None:
    log_dir, markers = tmp_path / "runs", tmp_path / "markers"
    log_dir.mkdir()
    markers.mkdir()
    with TaskHub(f"crash-{point.replace('_', '-')}", data_dir=tmp_path, num_shards=2, always_replay=ALWAYS_REPLAY,
                 _crash_points=(point,), _crash_marker_dir=str(markers)) as hub:
        # made-up ids (a start of a given id is not journaled), and at least one on each shard,
        # so each host reaches its crash point: six random ids all land on one shard once in 32
        ids: list[str] = []
        while len(ids) < INSTANCES or len({shard_of(i, 2) for i in ids}) < 2:
            ids.append(hub.start_new(mixed, client_input=(str(log_dir), f"k{len(ids) % 2}")))
        statuses = [hub.wait_for_completion(i, timeout=120) for i in ids]
        assert sorted(p.name for p in markers.iterdir()) == [f"{point}-0", f"{point}-1"]  # both hosts died once
        assert all(s.runtime_status is S.Completed for s in statuses), [s.failure_details for s in statuses]
        assert all(s.output == 2 * sum(range(FAN_OUT)) for s in statuses)
        for iid in ids:
            assert [e.event_type for e in hub.get_history(iid)].count("ExecutionCompleted") == 1
        total = sum(hub.read_entity_state(EntityId("CrCounter", k)).entity_state for k in ("k0", "k1"))
        assert total == len(ids) * ADDS  # exactly once
        runs = {p.name: p.read_text().count("run") for p in log_dir.iterdir()}
        assert len(runs) == len(ids) * FAN_OUT and min(runs.values()) >= 1  # at least once


def test_shard_hosts_killed_before_commit(ray_session, tmp_path):
    run_mixed_with_crash(tmp_path, "before_commit")


def test_shard_hosts_killed_after_commit_before_acknowledgement(ray_session, tmp_path):
    run_mixed_with_crash(tmp_path, "after_commit")


def test_shard_hosts_killed_after_journaling_a_start_before_answering(ray_session, tmp_path):
    # the client's call drops and is sent again; the host Ray restarts finds the start in its
    # journal too: the instance starts once either way
    run_mixed_with_crash(tmp_path, "after_journal")


def test_activity_worker_killed_during_execution(ray_session, tmp_path):
    # no warm worker: the batch runs on a Ray task (neither the warm worker nor the host)
    with TaskHub("crash-worker", data_dir=tmp_path, num_shards=1, warm_worker=False,
                 always_replay=ALWAYS_REPLAY) as hub:
        status = hub.wait_for_completion(hub.start_new(worker_death, client_input=str(tmp_path)), timeout=120)
        assert (tmp_path / "worker-killed").exists()
        assert (status.runtime_status, status.output) == (S.Completed, 2 * sum(range(4)))


def test_warm_worker_killed_during_execution(ray_session, tmp_path):
    with TaskHub("crash-warm", data_dir=tmp_path, num_shards=1, always_replay=ALWAYS_REPLAY) as hub:
        # once the warm worker is up, a lone activity runs there
        wait_until(lambda: hub.wait_for_completion(hub.start_new(one, client_input=("cr_in_actor", None))).output)
        status = hub.wait_for_completion(hub.start_new(one, client_input=("cr_warm_dies_once", str(tmp_path))), 120)
        assert (tmp_path / "warm-killed").exists()  # it died on the warm worker ...
        assert status.runtime_status is S.Completed  # ... and ran again elsewhere
        # Ray restarts the warm worker and the host reconnects to it
        wait_until(lambda: hub.wait_for_completion(hub.start_new(one, client_input=("cr_in_actor", None))).output)
