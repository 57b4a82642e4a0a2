"""What must not stall a shard (issue 11, "Hangs"):

- a shard file that cannot be written (a full disk): callers are told plainly, and work that
  has no caller to tell (activity results, fired timers) waits and is applied once writes
  succeed;
- orchestrator code that blocks a turn: reads of the shard's other instances still answer.

The disk is filled through the shard's fault knob (``fail_next_commits``: the next commits
fail inside their transaction as SQLite does on a full disk), which works on any machine; a
real full file system needs a mount the CI machine may not allow.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
import ray

from orchestrations import ShardWriteError, activity, orchestrator
from orchestrations._ids import shard_of
from runtime import OrchestrationRuntimeStatus as S

from ..conftest import ALWAYS_REPLAY
from ..helpers import wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(ALWAYS_REPLAY, reason="full disks and stalled hosts: the normal run covers them"),
]


@activity(name="wf_slow_double")
def slow_double(args: tuple[str, int]) -> int:
    """Takes a second (time for the test to fill the disk), logs each run, doubles."""
    log, x = args
    time.sleep(1.0)
    with open(log, "a") as f:
        f.write("run\n")
    return 2 * x


@orchestrator(name="wf_step_then_timer")
def step_then_timer(ctx):
    doubled = yield ctx.call_activity(slow_double, ctx.get_input())
    yield ctx.create_timer(ctx.current_utc_datetime + timedelta(seconds=0.5))
    return doubled


@orchestrator(name="wf_wait_for_go")
def wait_for_go(ctx):
    return (yield ctx.wait_for_external_event("go"))


def shard_host(hub, instance_id: str):
    return hub._shards[shard_of(instance_id, hub.num_shards)]


def failed_commits(hub) -> int:
    return sum(s["failed_commits"] for s in hub.stats())


def test_results_that_arrive_while_the_disk_is_full_are_applied_once_it_is_not(hub, tmp_path: Path):
    # issue 11: after space was freed, instances stayed Running for good (the results that
    # arrived meanwhile were lost with the failed commit)
    log = tmp_path / "runs"
    iid = hub.start_new(step_then_timer, client_input=(str(log), 21))
    before = failed_commits(hub)
    ray.get(shard_host(hub, iid).fail_next_commits.remote(3))  # the activity runs for a second
    status = hub.wait_for_completion(iid, timeout=60)
    assert (status.runtime_status, status.output) == (S.Completed, 42)
    assert failed_commits(hub) - before == 3  # the result's turn failed three times, then wrote
    assert log.read_text() == "run\n"  # the result was kept, not the activity run again
    types = [e.event_type for e in hub.get_history(iid)]
    assert (types.count("TaskCompleted"), types.count("TimerFired")) == (1, 1)


def test_a_call_that_cannot_be_written_is_refused_by_name_and_can_be_made_again(hub):
    iid = hub.start_new(wait_for_go)
    hub.wait_for_orchestration_start(iid, timeout=30)
    ray.get(shard_host(hub, iid).fail_next_commits.remote(1))
    with pytest.raises(ShardWriteError, match=r"shard-0\d\.sqlite could not be written \(database or disk is full"):
        hub.raise_event(iid, "go", "first")
    hub.raise_event(iid, "go", "second")
    assert hub.wait_for_completion(iid, timeout=30).output == "second"


@orchestrator(name="wf_blocks_on_go")
def blocks_on_go(ctx):
    """A wrong program: on "go" it blocks its turn reading a FIFO until the test writes it."""
    path = yield ctx.wait_for_external_event("go")
    with open(path + ".entered", "w"):
        pass
    with open(path) as fifo:
        return fifo.read()


def same_shard_ids(hub, count: int) -> list[str]:
    ids = [f"stall-{i}" for i in range(200)]
    return [i for i in ids if shard_of(i, hub.num_shards) == 0][:count]


def test_reads_answer_while_orchestrator_code_blocks_the_turn(hub, tmp_path: Path):
    # issue 11: an orchestrator that blocks stalled every read of its shard (a neighbour's
    # get_status waited 7 s); reads run on their own loop now
    blocked, neighbour = same_shard_ids(hub, 2)
    hub.start_new(wait_for_go, neighbour)
    hub.raise_event(neighbour, "go", "ok")
    assert hub.wait_for_completion(neighbour, timeout=30).output == "ok"
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    hub.start_new(blocks_on_go, blocked)
    hub.wait_for_orchestration_start(blocked, timeout=30)
    go = threading.Thread(target=hub.raise_event, args=(blocked, "go", fifo), daemon=True)
    go.start()  # returns once the blocked turn commits
    try:
        wait_until(lambda: os.path.exists(fifo + ".entered"), timeout=30)
        reads: list[object] = []
        reader = threading.Thread(
            target=lambda: reads.extend(
                [hub.get_status(neighbour), hub.get_history(neighbour), hub.get_status([neighbour, blocked])]
            ),
            daemon=True,
        )
        reader.start()
        reader.join(timeout=30)
        assert not reader.is_alive(), "reads waited for the blocked turn"
        status, history, both = reads
        assert status.output == "ok" and history[-1].event_type == "ExecutionCompleted"
        assert both[1].runtime_status is S.Running  # the blocked turn has not committed
    finally:
        with open(fifo, "w") as f:  # unblock the turn
            f.write("released")
    go.join(timeout=30)
    assert hub.wait_for_completion(blocked, timeout=30).output == "released"

