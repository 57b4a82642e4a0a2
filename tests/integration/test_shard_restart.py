"""A shard host that Ray restarts recovers by itself, at once: nobody has to call it first.

A host killed (SIGKILL) while its instance waits on a timer comes back with its timers armed
again and its outbox sent again, so a parent waiting on another shard completes although no
client ever calls the restarted shard.
"""

from __future__ import annotations

import os
import signal
from datetime import timedelta

import pytest
import ray

from orchestrations import ShardFileError, activity, orchestrator
from orchestrations._ids import shard_of
from runtime import OrchestrationRuntimeStatus as S
from runtime import TaskHub

from ..conftest import ALWAYS_REPLAY
from ..helpers import wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        ALWAYS_REPLAY,
        reason="a restarted host's timers, outbox and warm workers: below the executor, the normal run covers them",
    ),
]


@orchestrator(name="rs_sleeper")
def sleeper(ctx):
    yield ctx.create_timer(ctx.current_utc_datetime + timedelta(seconds=ctx.get_input()))
    return "woke"


@activity(name="rs_greet")
def greet(name: str) -> str:
    return f"Hello {name}!"


@orchestrator(name="rs_greeter")
def greeter(ctx):
    return (yield ctx.call_activity(greet, ctx.get_input()))


@orchestrator(name="rs_parent")
def parent(ctx):
    child_id, seconds = ctx.get_input()
    return (yield ctx.call_sub_orchestrator(sleeper, seconds, instance_id=child_id))


def _ids_on_two_shards() -> tuple[str, str]:
    """A parent id on shard 0 and a child id on shard 1 (of a 2-shard hub)."""
    parent_id = next(f"rs-parent-{i}" for i in range(100) if shard_of(f"rs-parent-{i}", 2) == 0)
    child_id = next(f"rs-child-{i}" for i in range(100) if shard_of(f"rs-child-{i}", 2) == 1)
    return parent_id, child_id


def test_a_restarted_host_rearms_its_timers_and_sends_its_outbox_by_itself(ray_session, tmp_path):
    parent_id, child_id = _ids_on_two_shards()
    with TaskHub("restart-sleeps", data_dir=tmp_path, num_shards=2, always_replay=ALWAYS_REPLAY) as hub:
        hub.start_new(parent, parent_id, (child_id, 3))
        # the child (shard 1) has armed its timer
        wait_until(lambda: hub.get_status(child_id) is not None)
        wait_until(lambda: any(e.event_type == "TimerCreated" for e in hub.get_history(child_id)))
        pid = ray.get(hub._shards[1].pid.remote())
        os.kill(pid, signal.SIGKILL)
        # From here on, no client calls shard 1: the parent's shard only is asked. The restarted
        # host must fire the child's timer and send the child's result to the parent itself.
        status = hub.wait_for_completion(parent_id, timeout=30)
        assert (status.runtime_status, status.output) == (S.Completed, "woke")
        assert ray.get(hub._shards[1].pid.remote()) != pid  # it was restarted, not spared


def _warm_workers_created() -> int:
    """How many warm worker actors this Ray session has created so far (alive or dead)."""
    return sum(1 for a in ray._private.state.actors().values() if a["ActorClassName"].endswith("WarmWorker"))


def test_a_restarted_host_that_cannot_open_its_file_spawns_no_warm_workers(ray_session, tmp_path):
    # Before: every call to a restarted host whose file was refused started a new warm worker
    # process (~200 ms and ~90 MiB each) before the refusal; 10 calls made 10 workers.
    with TaskHub("restart-warm", data_dir=tmp_path, num_shards=1, lock_timeout=1) as hub:
        hub.wait_for_completion(hub.start_new(greeter, None, "x"), timeout=30)  # creates the warm worker
        wait_until(lambda: hub.stats()[0]["warm_worker_connected"] == 1)
        pid = ray.get(hub._shards[0].pid.remote())
        for path in (tmp_path / "restart-warm").glob("shard-00.sqlite*"):
            path.unlink()
        before = _warm_workers_created()
        os.kill(pid, signal.SIGKILL)
        for _ in range(5):
            with pytest.raises(ShardFileError, match=r"shard-00\.sqlite: is missing"):
                hub.start_new(sleeper, None, 0)
        assert _warm_workers_created() == before


def test_a_host_creates_its_warm_worker_with_its_first_activity_not_before(ray_session, tmp_path):
    before = _warm_workers_created()
    with TaskHub("warm-first", data_dir=tmp_path, num_shards=1, always_replay=ALWAYS_REPLAY) as hub:
        assert hub.wait_for_completion(hub.start_new(sleeper, None, 0), timeout=30).output == "woke"
        assert _warm_workers_created() == before  # opening the hub and a timer started no process
        status = hub.wait_for_completion(hub.start_new(greeter, None, "Tokyo"), timeout=30)
        assert status.output == "Hello Tokyo!"  # run by the host itself or its new warm worker
        wait_until(lambda: hub.stats()[0]["warm_worker_connected"] == 1)
        assert _warm_workers_created() == before + 1
