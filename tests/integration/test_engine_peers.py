"""The engine's peer behaviours end to end, on a real local Ray and real SQLite shards.

Fan-in failures, events raced in a loop, wait timeouts, failure reports, custom status,
send_event, locks after a nondeterminism failure, async orchestrators, and the mistakes a new
user makes. Each test names the peer test it ports or the mistake it reproduces.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

import pytest

from entities import EntityId, entity
from orchestrations import RetryOptions, TaskFailedError, activity, orchestrator
from runtime import OrchestrationRuntimeStatus as S
from runtime import TaskHub

from ..helpers import wait_until
from ..test_engine_peers import counter_actor

pytestmark = pytest.mark.integration


# -- activities -----------------------------------------------------------------------------------


@activity(name="ep_work")
def work(args: tuple[str, int, float]) -> int:
    """Sleeps ``delay`` then leaves a marker ``i`` in ``folder``; item 0 fails at once."""
    folder, i, delay = args
    if i == 0:
        raise ValueError("item 0 is bad")
    time.sleep(delay)  # simulated work: the others still run when item 0 fails
    Path(folder, f"done-{i}").touch()
    return i


@activity(name="ep_count")
def count(folder: str) -> int:
    return len(list(Path(folder).glob("done-*")))


@activity(name="ep_throw")
def throw(counter_file: str) -> None:
    with open(counter_file, "a") as f:
        f.write("x")
    raise RuntimeError("Kah-BOOOOM!!!")


@activity(name="ep_hello")
def hello(name: str) -> str:
    return f"Hello {name}!"


def block_the_shard(seconds: float) -> None:
    """A helper that blocks (what the watchdog must report)."""
    time.sleep(seconds)  # the mistake under test: orchestrator code that blocks its shard


# -- orchestrators ------------------------------------------------------------------------------------


@orchestrator(name="ep_fan_in")
def fan_in(ctx):
    folder, n = ctx.get_input()
    tasks = [ctx.call_activity(work, (folder, i, 0.3)) for i in range(n)]
    try:
        yield ctx.task_all(tasks)
    except TaskFailedError as exc:
        finished = yield ctx.call_activity(count, folder)
        return {"error": exc.message, "finished_before_moving_on": finished}
    return "no failure"


@orchestrator(name="ep_fan_in_uncaught")
def fan_in_uncaught(ctx):
    folder = ctx.get_input()
    return (yield ctx.task_all([ctx.call_activity(work, (folder, i, 0.0)) for i in range(3)]))


RETRY = RetryOptions(timedelta(milliseconds=200), 3)


@orchestrator(name="ep_retry_child")
def retry_child(ctx):
    yield ctx.call_activity_with_retry(throw, RETRY, ctx.get_input())


@orchestrator(name="ep_retry_parent")
def retry_parent(ctx):
    yield ctx.call_sub_orchestrator_with_retry(retry_child, RETRY, ctx.get_input())


#: Azure/azure-functions-durable-extension's counter orchestration (the pure test's copy)
counter = orchestrator(name="ep_counter")(counter_actor)


@orchestrator(name="ep_approval")
def approval(ctx):
    try:
        return (yield ctx.wait_for_external_event("Approval", timeout=timedelta(seconds=ctx.get_input())))
    except TaskFailedError as exc:
        return f"timed out ({exc.error_type})"


@orchestrator(name="ep_status")
def status_steps(ctx):
    round_ = ctx.get_input()
    if round_ == 0:
        ctx.set_custom_status({"stage": "carried"})
        ctx.continue_as_new(1)
        return None
    yield ctx.wait_for_external_event("clear")
    ctx.set_custom_status(None)
    yield ctx.wait_for_external_event("finish")
    return "done"


@orchestrator(name="ep_send_blank")
def send_blank(ctx):
    ctx.send_event(ctx.get_input(), "  ")
    yield ctx.create_timer(timedelta(seconds=0))


@orchestrator(name="ep_sender")
def sender(ctx):
    ctx.send_event(ctx.get_input(), "Approval", "from a sibling")
    yield ctx.create_timer(timedelta(seconds=0))


@entity(name="EpLockable")
def lockable(ctx):
    ctx.set_state((ctx.get_state(lambda: 0) or 0) + 1)


@orchestrator(name="ep_changes_its_mind")
def changes_its_mind(ctx):
    """Deliberately non-deterministic: takes a lock the first time, not once the marker exists."""
    marker = ctx.get_input()
    if not os.path.exists(marker):
        with (yield ctx.lock_entities([EntityId("EpLockable", "shared")])):
            yield ctx.wait_for_external_event("go")
    else:
        yield ctx.call_activity(hello, "changed")


@orchestrator(name="ep_locker")
def locker(ctx):
    key = EntityId("EpLockable", "shared")
    with (yield ctx.lock_entities([key])):
        yield ctx.call_entity(key, "add")
    return "locked and released"


@orchestrator(name="ep_async")
async def async_orchestrator(ctx):
    first = await ctx.call_activity(hello, "Tokyo")
    fanned = await ctx.task_all([ctx.call_activity(hello, c) for c in ("Seattle", "London")])
    key = EntityId("EpLockable", "async")
    async with await ctx.lock_entities([key]):
        await ctx.call_entity(key, "add")
    try:
        await ctx.call_activity(throw, ctx.get_input())
    except TaskFailedError as exc:
        caught = exc.error_type
    return [first, fanned, caught]


@orchestrator(name="ep_async_asyncio")
async def async_asyncio(ctx):
    import asyncio

    await asyncio.sleep(0)  # the mistake under test


@orchestrator(name="ep_no_yield")
def no_yield(ctx):
    return ctx.call_activity(hello, "Tokyo")


@orchestrator(name="ep_list_yield")
def list_yield(ctx):
    yield [ctx.call_activity(hello, c) for c in ("a", "b")]


@orchestrator(name="ep_direct_call")
def direct_call(ctx):
    greeting = hello("inline")
    yield ctx.call_activity(hello, greeting)


@orchestrator(name="ep_typo")
def typo(ctx):
    return (yield ctx.call_activity("ep_helo", "x"))


@orchestrator(name="ep_blocks")
def blocks(ctx):
    block_the_shard(1.3)
    yield ctx.call_activity(hello, "after blocking")


# -- tests -------------------------------------------------------------------------------------------


def test_fan_in_failure_waits_for_every_child(hub, tmp_path):
    # microsoft/durabletask-python test_orchestration_executor.py
    # ::test_when_all_defers_failure_until_all_children_complete, end to end: item 0 fails at
    # once, the 4 others run 0.3 s; all 4 had finished when the orchestration moved on
    status = hub.wait_for_completion(hub.start_new(fan_in, client_input=(str(tmp_path), 5)), timeout=60)
    assert status.runtime_status is S.Completed
    assert status.output == {"error": "item 0 is bad", "finished_before_moving_on": 4}


def test_uncaught_fan_in_failure_reports_task_failed_error(hub, tmp_path):
    # durabletask-python test_orchestration_executor.py::test_fan_in_with_single_failure
    status = hub.wait_for_completion(hub.start_new(fan_in_uncaught, client_input=str(tmp_path)), timeout=60)
    assert status.runtime_status is S.Failed
    failure = status.failure_details
    assert failure.error_type == "TaskFailedError"
    assert failure.message == "Activity task #1 failed: item 0 is bad"
    assert failure.details.startswith("Caused by ValueError: item 0 is bad")
    assert len(list(tmp_path.glob("done-*"))) == 2  # the others ran to the end


def test_retries_through_a_sub_orchestration_report_both_tasks(hub, tmp_path):
    # durabletask-python test_orchestration_e2e.py::test_retry_policies: 3 child attempts x 3
    # activity attempts, then TaskFailedError "Sub-orchestration task #1 failed: ... Activity
    # task #1 failed: Kah-BOOOOM!!!"
    counter_file = tmp_path / "throws"
    status = hub.wait_for_completion(hub.start_new(retry_parent, client_input=str(counter_file)), timeout=90)
    assert status.runtime_status is S.Failed
    assert status.failure_details.error_type == "TaskFailedError"
    assert status.failure_details.message.startswith("Sub-orchestration task #1 failed:")
    assert status.failure_details.message.endswith("Activity task #1 failed: Kah-BOOOOM!!!")
    assert status.failure_details.details is not None
    assert len(counter_file.read_text()) == 9


def test_events_raced_in_a_loop_complete_the_counter(hub):
    # Azure/azure-functions-durable-extension: the counter orchestration (incr x3, then done)
    iid = hub.start_new(counter, client_input=0)
    for _ in range(3):
        hub.raise_event(iid, "incr")
    hub.raise_event(iid, "done")
    status = hub.wait_for_completion(iid, timeout=30)
    assert (status.runtime_status, status.output) == (S.Completed, 3)


@pytest.mark.parametrize("raise_event", [True, False])
def test_wait_for_external_event_timeout(hub, raise_event):
    # durabletask-python test_orchestration_e2e.py::test_wait_for_external_event_timeout, with the
    # timeout on the wait (.NET WaitForExternalEvent(name, timeout)); names ignore case
    iid = hub.start_new(approval, client_input=30 if raise_event else 1)
    if raise_event:
        hub.raise_event(iid, "approval", "approved")
    status = hub.wait_for_completion(iid, timeout=60)
    assert status.output == ("approved" if raise_event else "timed out (TimeoutError)")


def test_custom_status_carries_over_continue_as_new_and_clears(hub):
    # DurableTask.Core: custom status survives ContinueAsNew; SetCustomStatus(null) clears it
    iid = hub.start_new(status_steps, client_input=0)
    wait_until(lambda: (s := hub.get_status(iid)) and s.input_ == 1 and s.runtime_status is S.Running)
    assert hub.get_status(iid).custom_status == {"stage": "carried"}
    hub.raise_event(iid, "clear")
    wait_until(lambda: hub.get_status(iid).custom_status is None)
    hub.raise_event(iid, "finish")
    status = hub.wait_for_completion(iid, timeout=30)
    assert (status.output, status.custom_status) == ("done", None)


def test_send_event_with_a_blank_name_fails_the_sender(hub):
    # durabletask-python test_orchestration_executor.py::test_send_event_validates_target_and_name
    status = hub.wait_for_completion(hub.start_new(send_blank, client_input="someone"), timeout=30)
    assert status.runtime_status is S.Failed
    assert "event_name" in status.failure_details.message


def test_send_event_reaches_another_instance(hub):
    # durabletask-python test_orchestration_executor.py::test_send_event_action, end to end
    target = hub.start_new(approval, client_input=60)
    hub.wait_for_completion(hub.start_new(sender, client_input=target), timeout=30)
    assert hub.wait_for_completion(target, timeout=30).output == "from a sibling"


def test_locks_are_released_when_replay_fails_with_nondeterminism(ray_session, data_dir, tmp_path):
    # the mistake: orchestrator code changed while an instance held a lock; replay fails with
    # NonDeterminismError and must release the lock its history holds (the next holder used to
    # hang until clean_entity_storage); always_replay makes the replay happen in both modes
    marker = tmp_path / "changed"
    with TaskHub("ep-replay", data_dir=data_dir, num_shards=1, always_replay=True, warm_worker=False) as h:
        iid = h.start_new(changes_its_mind, client_input=str(marker))
        wait_until(lambda: any(m.locked_by == iid for m in h.list_entities("EpLockable", include_deleted=True)))
        marker.touch()
        h.raise_event(iid, "go")
        failed = h.wait_for_completion(iid, timeout=30)
        assert failed.runtime_status is S.Failed
        assert "NonDeterminismError" in failed.failure_details.error_type
        next_holder = h.wait_for_completion(h.start_new(locker), timeout=30)
        assert next_holder.output == "locked and released"
        assert not [m for m in h.list_entities("EpLockable", include_deleted=True) if m.locked_by is not None]


def test_async_orchestrator_end_to_end(hub, tmp_path):
    # the asyncio spelling of the same engine (Temporal, DBOS and Restate users write async)
    status = hub.wait_for_completion(hub.start_new(async_orchestrator, client_input=str(tmp_path / "c")), timeout=60)
    assert status.runtime_status is S.Completed, status.failure_details
    assert status.output == ["Hello Tokyo!", ["Hello Seattle!", "Hello London!"], "RuntimeError"]
    assert hub.read_entity_state(EntityId("EpLockable", "async")).entity_state == 1


@pytest.mark.parametrize(
    ("fn", "says"),
    [
        (async_asyncio, "not on an asyncio event loop"),
        (no_yield, "put `yield` in front"),
        (list_yield, "context.task_all"),
        (direct_call, "called directly inside an orchestrator"),
    ],
)
def test_wrong_programs_fail_naming_the_fix(hub, fn, says):
    # tried as a new user would: each of these used to complete (or fail obscurely)
    status = hub.wait_for_completion(hub.start_new(fn), timeout=30)
    assert status.runtime_status is S.Failed
    assert says in status.failure_details.message


def test_an_unknown_activity_names_the_closest_registered_one(hub):
    status = hub.wait_for_completion(hub.start_new(typo), timeout=30)
    assert status.runtime_status is S.Failed
    assert "did you mean 'ep_hello'" in status.failure_details.message


def test_a_blocking_episode_is_reported_by_the_watchdog(hub):
    # Temporal's deadlock detector: orchestrator code that blocks the shard is reported
    before = sum(s["slow_episodes"] for s in hub.stats())
    status = hub.wait_for_completion(hub.start_new(blocks), timeout=60)
    assert status.runtime_status is S.Completed
    assert sum(s["slow_episodes"] for s in hub.stats()) > before
