"""The engine against the peers' own tests: fan-in failures, events in loops, failure reports,
send_event, custom status, locks after a nondeterminism failure, and wrong programs.

Each test names the peer test it ports (repository, file, test) or the mistake it reproduces.
Pure: hand-written histories, no Ray, no files.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from orchestrations import (
    DurableTypeError,
    EntityLockGranted,
    EntityLockRequested,
    EntityOperationFailed,
    EntityUnlockSent,
    EventSent,
    ExecutionState,
    FailureDetails,
    NonDeterminismError,
    Registry,
    SendEvent,
    TaskFailedError,
    UnlockEntity,
    activity,
    execute,
)
from orchestrations._task import CompletableTask, WhenAllTask
from orchestrations.testing import (
    at,
    event_raised,
    orchestrator_completed,
    orchestrator_started,
    started,
    sub_failed,
    task_completed,
    task_failed,
    task_scheduled,
    timer_fired,
)

from .test_executor import Instance, lookup_of

S = ExecutionState


def episode(*events):
    """A past episode as recorded: incoming events, then OrchestratorStarted ... Completed."""
    return [orchestrator_started(), *events, orchestrator_completed()]


# -- task_all: wait for every child, then the first failure -----------------------------------------


def test_when_all_defers_failure_until_all_children_complete():
    # microsoft/durabletask-python tests/durabletask/test_orchestration_executor.py
    # ::test_when_all_defers_failure_until_all_children_complete
    t1, t2, t3 = CompletableTask(1), CompletableTask(2), CompletableTask(3)
    when_all = WhenAllTask([t1, t2, t3])
    t1.fail(TaskFailedError("boom"))
    assert not when_all.is_completed and not when_all.is_faulted
    t2.complete("ok")
    assert not when_all.is_completed and not when_all.is_faulted
    t3.complete("ok")
    assert when_all.is_completed and when_all.is_faulted
    assert str(when_all.exception) == "boom"


def test_when_all_handles_pre_completed_children():
    # durabletask-python test_orchestration_executor.py::test_when_all_handles_pre_completed_children
    failed, pending = CompletableTask(1), CompletableTask(2)
    failed.fail(TaskFailedError("boom"))
    when_all = WhenAllTask([failed, pending])
    assert when_all.completed_count == 1
    assert not when_all.is_completed and not when_all.is_faulted
    pending.complete("ok")
    assert when_all.is_faulted


def test_when_all_reports_the_first_failure_in_completion_order():
    # .NET Task.WhenAll / durabletask-python WhenAllTask: the first failure to arrive wins
    a, b, c = CompletableTask(1), CompletableTask(2), CompletableTask(3)
    when_all = WhenAllTask([a, b, c])
    c.fail(TaskFailedError("third fails first"))
    a.fail(TaskFailedError("first fails second"))
    b.complete(1)
    assert str(when_all.exception) == "third fails first"


def print_int(ctx):
    results = yield ctx.task_all([ctx.call_activity("print_int", i) for i in range(10)])
    return results


def test_fan_in_with_single_failure_waits_for_every_child():
    # durabletask-python test_orchestration_executor.py::test_fan_in_with_single_failure
    inst = Instance(print_int)
    inst.start()
    partial = [task_completed(i + 1, str(i)) for i in range(5)] + [task_failed(6, "Kah-BOOOOM!!!")]
    running = inst.run(*partial, now=at(2))
    assert running.state is S.RUNNING and running.actions == []
    done = inst.run(*(task_completed(i + 1, str(i)) for i in range(6, 10)), now=at(3))
    assert done.state is S.FAILED
    assert done.failure.error_type == "TaskFailedError"
    assert "Kah-BOOOOM!!!" in done.failure.message
    assert done.failure.message == "Activity task #6 failed: Kah-BOOOOM!!!"


def test_a_fan_in_failure_caught_leaves_nothing_running_behind():
    # the other children ran to the end before the orchestration moved on: its next step is
    # the only thing it schedules, and no late result can land on it
    def fan_then_compensate(ctx):
        try:
            yield ctx.task_all([ctx.call_activity("work", i) for i in range(3)])
        except TaskFailedError as exc:
            yield ctx.call_activity("compensate", exc.message)
        return "compensated"

    inst = Instance(fan_then_compensate)
    inst.start()
    first = inst.run(task_failed(2, "bad input"), now=at(2))
    assert first.actions == []  # not yet: 1 and 3 are still running
    after = inst.run(task_completed(1, "a"), task_completed(3, "c"), now=at(3))
    assert [a.name for a in after.actions] == ["compensate"]
    assert inst.run(task_completed(4), now=at(4)).output == "compensated"


def test_when_all_with_retry():
    # durabletask-python test_orchestration_executor.py::test_when_all_with_retry (our retry
    # options: 2 s, then 2 * 4 = 8 s capped at 5 s)
    from orchestrations import RetryOptions

    policy = RetryOptions(timedelta(seconds=2), 3, backoff_coefficient=4, max_retry_interval=timedelta(seconds=5))

    def orchestrator(ctx):
        t1 = ctx.call_activity_with_retry("dummy", policy, "Tokyo")
        t2 = ctx.call_activity("dummy", "Seattle")
        return (yield ctx.task_all([t1, t2]))

    inst = Instance(orchestrator)
    inst.start(now=at(0))
    assert [a.task_id for a in inst.run(task_failed(1, "Kah-BOOOOM!!!"), now=at(0)).actions] == [3]
    assert [a.task_id for a in inst.run(timer_fired(3, at(2)), now=at(2)).actions] == [4]
    assert [a.task_id for a in inst.run(task_failed(4, "Kah-BOOOOM!!!"), now=at(2)).actions] == [5]
    rescheduled = inst.run(task_completed(2, "Hello Seattle!"), timer_fired(5, at(7)), now=at(7))
    assert [a.task_id for a in rescheduled.actions] == [6]
    last = inst.run(task_failed(6, "Kah-BOOOOM!!!"), now=at(8))
    assert last.state is S.FAILED
    assert last.failure.error_type == "TaskFailedError"
    assert last.failure.message == "Activity task #1 failed: Kah-BOOOOM!!!"


def test_when_any_empty_completes_at_once():
    # Azure/azure-functions-durable-python CompoundTask: no children -> done at once
    def orchestrator(ctx):
        return ["all", (yield ctx.task_all([])), "any", (yield ctx.task_any([]))]

    assert Instance(orchestrator).start().output == ["all", [], "any", None]


# -- failure reporting ---------------------------------------------------------------------------------


def test_sub_orchestration_failure_reports_task_failed_error_naming_both_tasks():
    # durabletask-python test_orchestration_e2e.py::test_retry_policies: "Sub-orchestration task
    # #1 failed: ... Activity task #1 failed: Kah-BOOOOM!!!"
    def parent(ctx):
        return (yield ctx.call_sub_orchestrator("child"))

    inst = Instance(parent)
    inst.start()
    child_failure = "Activity task #1 failed: Kah-BOOOOM!!!"
    done = inst.run(sub_failed(1, child_failure, "TaskFailedError"), now=at(2))
    assert done.failure.error_type == "TaskFailedError"
    assert done.failure.message.startswith("Sub-orchestration task #1 failed:")
    assert done.failure.message.endswith("Activity task #1 failed: Kah-BOOOOM!!!")
    assert "ctx.call_sub_orchestrator" in done.failure.details  # durabletask: the user's line


def test_a_caught_task_failure_still_carries_the_cause():
    # durabletask-python test_orchestration_e2e.py::test_activity_error_handling: the
    # orchestrator sees the activity's own message and type
    def orchestrator(ctx):
        try:
            yield ctx.call_activity("throw")
        except TaskFailedError as exc:
            return [exc.error_type, exc.message, exc.task]
        return None

    inst = Instance(orchestrator)
    inst.start()
    out = inst.run(task_failed(1, "Kah-BOOOOM!!!", "RuntimeError"), now=at(2)).output
    assert out == ["RuntimeError", "Kah-BOOOOM!!!", "Activity task #1"]


# -- events: newest waiter, cancel, timeout, names --------------------------------------------------


def counter_actor(ctx):
    """Azure/azure-functions-durable-extension test/Common/TestOrchestrations.cs Counter: each
    round races "incr" against "done"; the previous round's "done" waiter is abandoned."""
    count = ctx.get_input() or 0
    while True:
        incr = ctx.wait_for_external_event("incr")
        done = ctx.wait_for_external_event("done")
        winner = yield ctx.task_any([incr, done])
        if winner is done:
            return count
        count += 1


def test_events_raced_in_a_loop_reach_this_rounds_waiters():
    # Durable Functions extension, counter actor: "done" after increments completes it
    inst = Instance(counter_actor)
    inst.start(0)
    for i in range(3):
        assert inst.run(event_raised("incr"), now=at(2 + i)).state is S.RUNNING
    assert inst.run(event_raised("done"), now=at(9)).output == 3


def test_a_cancelled_event_task_does_not_take_the_event():
    # durabletask-python test_orchestration_executor.py::test_only_cancellable_tasks_expose_cancel:
    # timers and event waits can be cancelled, activities cannot
    def orchestrator(ctx):
        stale = ctx.wait_for_external_event("go")
        assert stale.cancel() is True
        assert stale.is_cancelled and not hasattr(ctx.call_activity("a"), "cancel")
        fresh = ctx.wait_for_external_event("go")
        value = yield fresh
        later = yield ctx.wait_for_external_event("go")  # the next "go" is buffered for it
        return [value, later, stale.is_completed]

    inst = Instance(orchestrator, cached=False)
    inst.start()
    assert inst.run(event_raised("go", 1), event_raised("go", 2), now=at(2)).output == [1, 2, False]


def test_timer_can_be_cancelled_after_when_any_winner():
    # durabletask-python test_orchestration_executor.py::test_timer_can_be_cancelled_after_when_any_winner
    def orchestrator(ctx):
        approval = ctx.wait_for_external_event("approval")
        timeout = ctx.create_timer(timedelta(hours=1))
        winner = yield ctx.task_any([approval, timeout])
        if winner is approval:
            timeout.cancel()
            return "approved"
        return "timed out"

    inst = Instance(orchestrator)
    assert [type(a).__name__ for a in inst.start(now=at(0)).actions] == ["CreateTimer"]
    assert inst.run(event_raised("approval", True), now=at(5)).output == "approved"


@pytest.mark.parametrize("arrives", [True, False])
def test_wait_for_external_event_with_a_timeout(arrives):
    # durabletask-python test_orchestration_e2e.py::test_wait_for_external_event_timeout, with the
    # timeout on the wait itself (.NET WaitForExternalEvent(name, timeout))
    def orchestrator(ctx):
        try:
            return (yield ctx.wait_for_external_event("Approval", timeout=timedelta(seconds=3)))
        except TaskFailedError as exc:
            return [type(exc).__name__, exc.error_type]

    inst = Instance(orchestrator)
    first = inst.start(now=at(0))
    assert [(type(a).__name__, a.fire_at) for a in first.actions] == [("CreateTimer", at(3))]
    if arrives:
        assert inst.run(event_raised("approval", "yes"), now=at(1)).output == "yes"
        # the timer firing later changes nothing
    else:
        assert inst.run(timer_fired(1, at(3)), now=at(3)).output == ["EventTimeoutError", "TimeoutError"]


def test_wait_for_external_event_timeout_with_a_default_and_a_late_event_is_buffered():
    def orchestrator(ctx):
        first = yield ctx.wait_for_external_event("x", timeout=2.5, default="none yet")
        second = yield ctx.wait_for_external_event("x")
        return [first, second]

    inst = Instance(orchestrator)
    inst.start(now=at(0))
    assert inst.run(timer_fired(1, at(2.5)), now=at(3)).state is S.RUNNING
    assert inst.run(event_raised("x", "late"), now=at(4)).output == ["none yet", "late"]


@pytest.mark.parametrize("bad", [-1, float("nan"), "3s", True])
def test_wait_timeout_is_validated(bad):
    def orchestrator(ctx):
        yield ctx.wait_for_external_event("x", timeout=bad)

    failed = Instance(orchestrator).start()
    assert failed.state is S.FAILED
    assert "timeout" in failed.failure.message


def test_event_names_are_case_insensitive():
    # durabletask-python test_orchestration_executor.py::test_continue_as_new ("event names are
    # case-insensitive"); the Durable Functions extension matches names ignoring case
    def orchestrator(ctx):
        early = yield ctx.wait_for_external_event("MY_EVENT")
        late = yield ctx.wait_for_external_event("Other")
        return [early, late]

    inst = Instance(orchestrator)
    inst.start(extra=[event_raised("my_event", 1)])
    assert inst.run(event_raised("OTHER", 2), now=at(2)).output == [1, 2]


# -- send_event --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instance_id", "event_name", "expected"),
    [
        ("", "Approval", "instance_id"),
        ("   ", "Approval", "instance_id"),
        ("@counter@1", "Approval", "reserved for entities"),
        ("target-instance", "", "event_name"),
        ("target-instance", "   ", "event_name"),
    ],
)
def test_send_event_validates_target_and_name(instance_id, event_name, expected):
    # durabletask-python test_orchestration_executor.py::test_send_event_validates_target_and_name
    def orchestrator(ctx):
        ctx.send_event(instance_id, event_name)

    failed = Instance(orchestrator).start()
    assert failed.state is S.FAILED
    assert expected in failed.failure.message


def sent_original(ctx):
    ctx.send_event("target-instance", "OriginalName")
    yield ctx.wait_for_external_event("Done")


@pytest.mark.parametrize("mismatch", ["name", "target", "type", "entity"])
def test_send_event_replay_detects_nondeterminism(mismatch):
    # durabletask-python test_orchestration_executor.py::test_send_event_replay_detects_nondeterminism
    from entities import EntityId

    def orchestrator(ctx):
        if mismatch == "name":
            ctx.send_event("target-instance", "ChangedName")
        elif mismatch == "target":
            ctx.send_event("changed-target", "OriginalName")
        elif mismatch == "type":
            yield ctx.create_timer(ctx.current_utc_datetime + timedelta(seconds=1))
        else:
            ctx.signal_entity(EntityId("Counter", "counter"), "increment")
        yield ctx.wait_for_external_event("Done")

    history = [
        started("orchestrator"),
        *episode(EventSent(at(), 1, "target-instance", "OriginalName", None)),
    ]
    result = execute(lookup_of(orchestrator), "test", history, [event_raised("Done")], at(5))
    assert result.state is S.FAILED
    assert result.failure.error_type == "orchestrations.NonDeterminismError"
    message = result.failure.message
    assert "send_event" in message
    wanted = {
        "name": ["OriginalName", "ChangedName"],
        "target": ["target-instance", "changed-target"],
        "type": ["create_timer"],
        "entity": ["signal_entity"],
    }[mismatch]
    assert all(w in message for w in wanted), message


def test_send_event_replay_is_case_insensitive():
    # durabletask-python test_orchestration_executor.py::test_send_event_replay_is_case_insensitive
    def orchestrator(ctx):
        ctx.send_event("target-instance", "Approval", True)
        yield ctx.wait_for_external_event("Done")

    history = [started("orchestrator"), *episode(EventSent(at(), 1, "target-instance", "approval", True))]
    result = execute(lookup_of(orchestrator), "test", history, [], at(5))
    assert result.state is S.RUNNING
    assert result.actions == []


def test_send_event_action():
    # durabletask-python test_orchestration_executor.py::test_send_event_action
    payload = {"approved": True, "approver": "Ada"}

    def orchestrator(ctx):
        assert ctx.send_event("target-instance", "Approval", payload) is None
        return "sent"

    done = Instance(orchestrator).start()
    assert done.actions == [SendEvent(1, "target-instance", "Approval", payload)]
    assert done.output == "sent"


# -- custom status --------------------------------------------------------------------------------


def test_custom_status_set_back_to_none_is_a_change_to_store():
    # DurableTask.Core: SetCustomStatus(null) clears the status
    def orchestrator(ctx):
        ctx.set_custom_status({"step": 1})
        yield ctx.call_activity("a")
        ctx.set_custom_status(None)
        yield ctx.call_activity("b")

    inst = Instance(orchestrator)
    first = inst.start()
    assert (first.custom_status_changed, first.custom_status) == (True, {"step": 1})
    second = inst.run(task_completed(1), now=at(2))
    assert (second.custom_status_changed, second.custom_status) == (True, None)
    third = inst.run(task_completed(2), now=at(3))
    assert third.custom_status_changed is False  # replay sets it again without storing it


# -- locks after a nondeterminism failure ----------------------------------------------------------


def test_a_nondeterminism_failure_releases_the_locks_history_says_are_held():
    # the code took a lock, then changed: replay diverges before it sees its own lock request,
    # so its critical-section state never holds the lock; the history does
    key = "@account@a"

    def changed(ctx):
        yield ctx.call_activity("something else")

    history = [
        started("changed"),
        *episode(EntityLockRequested(at(), 1, (key,))),
        EntityLockGranted(at(), 1, (key,)),
        *episode(),
    ]
    result = execute(lookup_of(changed), "test", history, [event_raised("anything")], at(9))
    assert result.state is S.FAILED
    assert result.failure.error_type == "orchestrations.NonDeterminismError"
    assert [a.entity_id for a in result.actions if isinstance(a, UnlockEntity)] == [key]
    # replaying the failed instance again adds nothing: the unlock is recorded
    again = execute(lookup_of(changed), "test", history + result.new_events, [], at(10))
    assert not [a for a in again.actions if isinstance(a, UnlockEntity)]


def test_a_lock_released_normally_is_not_released_again_at_the_end():
    key = "@account@a"
    from entities import EntityId

    def section(ctx):
        with (yield ctx.lock_entities([EntityId("account", "a")])):
            pass
        return "done"

    inst = Instance(section)
    inst.start()
    done = inst.run(EntityLockGranted(at(), 1, (key,)), now=at(2))
    assert done.output == "done"
    assert [a.entity_id for a in done.actions if isinstance(a, UnlockEntity)] == [key]
    assert sum(isinstance(e, EntityUnlockSent) for e in inst.history) == 1


# -- wrong programs fail, naming the fix -------------------------------------------------------------


def test_a_missing_yield_fails_instead_of_returning_a_task():
    # tried as a new user would: `return ctx.call_activity(...)` completed with a Task object
    def no_yield(ctx):
        result = ctx.call_activity("say_hello", "Tokyo")
        yield ctx.call_activity("say_hello", "Seattle")
        return result

    def plain(ctx):
        return ctx.call_activity("say_hello", "Tokyo")

    inst = Instance(no_yield)
    inst.start()
    failed = inst.run(task_completed(2, "Hello Seattle!"), now=at(2))
    assert failed.state is S.FAILED
    assert "yield" in failed.failure.message and "Task" in failed.failure.message
    plain_failed = Instance(plain).start()
    assert plain_failed.state is S.FAILED
    assert "put `yield` in front" in plain_failed.failure.message
    assert plain_failed.actions == []  # nothing it scheduled runs


def test_a_task_inside_the_output_fails_naming_where():
    def one_missing(ctx):
        a = yield ctx.call_activity("x", 1)
        b = ctx.call_activity("x", 2)
        return {"results": [a, b]}

    inst = Instance(one_missing)
    inst.start()
    failed = inst.run(task_completed(1, "one"), now=at(2))
    assert failed.state is S.FAILED
    assert "the output['results'][1] is a Task" in failed.failure.message


def test_yielding_a_list_says_to_use_task_all():
    def fan(ctx):
        yield [ctx.call_activity("x", i) for i in range(3)]

    failed = Instance(fan).start()
    assert failed.state is S.FAILED
    assert "context.task_all" in failed.failure.message


def test_task_all_of_results_instead_of_tasks_says_so():
    def wrong(ctx):
        yield ctx.task_all([1, 2])

    failed = Instance(wrong).start()
    assert failed.state is S.FAILED
    assert "is not a Task" in failed.failure.message


def test_calling_an_activity_directly_inside_an_orchestrator_fails():
    # tried as a new user would: a direct call ran the activity inline, silently, on the shard
    registry = Registry()

    @activity(name="engine_peers_direct")
    def direct(x):
        return x * 2

    def orchestrator(ctx):
        value = direct(21)
        yield ctx.call_activity(direct, value)

    registry.add_orchestrator(orchestrator)
    failed = execute(registry.orchestrators.get, "i", [], [started("orchestrator")], at(1))
    assert failed.state is S.FAILED
    assert "call_activity" in failed.failure.message and "directly" in failed.failure.message
    assert direct(21) == 42  # outside orchestrators it stays a plain function


def test_an_unknown_sub_orchestrator_names_the_closest_registered_ones():
    registry = Registry()

    def parent(ctx):
        yield ctx.call_sub_orchestrator("say_helo")

    def say_hello(ctx):
        return "hi"

    registry.add_orchestrator(parent)
    registry.add_orchestrator(say_hello)
    result = execute(registry.orchestrators, "child", [], [started("say_helo", instance_id="child")], at(1))
    assert result.failure.error_type == "OrchestratorNotFound"
    assert "did you mean 'say_hello'" in result.failure.message


@pytest.mark.parametrize(
    ("kind", "fn"),
    [
        ("orchestrator", lambda: None),
        ("orchestrator", lambda ctx, extra: None),
        ("activity", lambda a, b: None),
        ("activity", lambda *, key: None),
    ],
)
def test_decorators_check_parameters_at_decoration(kind, fn):
    registry = Registry()
    add = registry.add_orchestrator if kind == "orchestrator" else registry.add_activity
    with pytest.raises(DurableTypeError, match="must take"):
        add(fn, name="bad")
    assert not registry.orchestrators and not registry.activities


def test_an_async_generator_orchestrator_is_refused_at_decoration():
    async def both(ctx):
        yield await ctx.call_activity("x")

    with pytest.raises(DurableTypeError, match="async generator"):
        Registry().add_orchestrator(both)


def test_registering_a_decorated_async_activity_again_keeps_it_async():
    registry = Registry()

    @activity(name="engine_peers_async_again")
    async def fetch(x):
        return x

    spec = registry.add_activity(fetch, name="again")
    assert spec.is_async and spec.fn is not fetch  # the function itself, not the guard


def test_decorators_accept_the_usual_shapes():
    registry = Registry()
    registry.add_orchestrator(lambda ctx: None, name="plain")
    registry.add_orchestrator(lambda ctx, optional=1: None, name="with_default")
    registry.add_activity(lambda: 1, name="no_input")
    registry.add_activity(lambda x, scale=2: x * scale, name="one_input")
    assert len(registry.orchestrators) == 2 and len(registry.activities) == 2


# -- async def orchestrators ---------------------------------------------------------------------


async def async_hello(ctx):
    results = []
    for city in ("Tokyo", "Seattle"):
        results.append(await ctx.call_activity("say_hello", city))
    fanned = await ctx.task_all([ctx.call_activity("double", i) for i in range(3)])
    return [results, fanned]


def test_async_orchestrator_runs_on_the_same_engine_and_history():
    inst = Instance(async_hello)
    assert [a.name for a in inst.start().actions] == ["say_hello"]
    inst.run(task_completed(1, "Hello Tokyo!"), now=at(2))
    fan = inst.run(task_completed(2, "Hello Seattle!"), now=at(3))
    assert [a.name for a in fan.actions] == ["double"] * 3
    done = inst.run(*(task_completed(3 + i, 2 * i) for i in range(3)), now=at(4))
    assert done.output == [["Hello Tokyo!", "Hello Seattle!"], [0, 2, 4]]


def test_async_orchestrator_catches_failures_and_takes_locks():
    from entities import EntityId

    async def transfer(ctx):
        a, b = EntityId("account", "a"), EntityId("account", "b")
        async with await ctx.lock_entities([a, b]):
            try:
                await ctx.call_entity(a, "withdraw", 5)
            except TaskFailedError as exc:
                return ["refused", exc.message]
        return "moved"

    inst = Instance(transfer)
    inst.start()
    inst.run(EntityLockGranted(at(), 1, ("@account@a", "@account@b")), now=at(2))
    done = inst.run(EntityOperationFailed(at(), 2, FailureDetails("ValueError", "insufficient funds")), now=at(3))
    assert done.output == ["refused", "insufficient funds"]
    assert sorted(a.entity_id for a in done.actions if isinstance(a, UnlockEntity)) == ["@account@a", "@account@b"]


def test_async_orchestrator_awaiting_asyncio_fails_saying_why():
    async def sleeps(ctx):
        await asyncio.sleep(1)  # the mistake under test (never waits: it fails at once)

    async def sleeps_zero(ctx):
        await asyncio.sleep(0)  # the mistake under test

    for fn in (sleeps, sleeps_zero):
        failed = Instance(fn).start()
        assert failed.state is S.FAILED
        assert "not on an asyncio event loop" in failed.failure.message
        assert "create_timer" in failed.failure.message


def test_async_orchestrator_missing_await_fails():
    async def forgot(ctx):
        return ctx.call_activity("x")

    failed = Instance(forgot).start()
    assert failed.state is S.FAILED
    assert "put `await` in front" in failed.failure.message


# -- replay sanity for the new tasks ----------------------------------------------------------------


def test_replay_of_event_waits_with_timeouts_schedules_nothing_new():
    def orchestrator(ctx):
        a = yield ctx.wait_for_external_event("a", timeout=timedelta(minutes=1), default=0)
        b = yield ctx.wait_for_external_event("b", timeout=timedelta(minutes=1), default=0)
        return a + b

    inst = Instance(orchestrator)
    inst.start(now=at(0))
    inst.run(event_raised("a", 1), now=at(1))
    done = inst.run(timer_fired(2, at(61)), now=at(61))
    assert done.output == 1
    # and a full replay of that history reproduces it without new actions
    replayed = execute(lookup_of(orchestrator), "test", inst.history, [], at(99))
    assert replayed.actions == []


def test_nondeterminism_error_still_names_expected_and_actual():
    def changed(ctx):
        yield ctx.create_timer(timedelta(seconds=1))

    history = [started("changed"), *episode(task_scheduled(1, "original_activity"))]
    result = execute(lookup_of(changed), "test", history, [task_completed(1)], at(3))
    assert result.state is S.FAILED
    assert "call_activity" in result.failure.message and "create_timer" in result.failure.message
    assert NonDeterminismError.__name__ in result.failure.error_type


# -- non-deterministic calls are named at registration -------------------------------------------


def test_clock_sleep_and_random_in_an_orchestrator_are_named_at_registration():
    # Temporal's sandbox and the Durable Functions code constraints: the clock, sleeping and
    # random numbers differ on replay; named here, at the offending line
    import random as _random
    import time as _time
    from datetime import datetime as _dt

    from orchestrations import DeterminismWarning

    def careless(ctx):
        started_at = _dt.now()
        _time.sleep(5)  # the mistake under test: only registered, never run
        picks = [_random.random() for _ in range(3)]
        yield ctx.call_activity("x", [started_at, picks])

    with pytest.warns(DeterminismWarning) as caught:
        Registry().add_orchestrator(careless)
    messages = [str(w.message) for w in caught]
    assert any("datetime.now" in m and "current_utc_datetime" in m for m in messages)
    assert any("time.sleep" in m and "create_timer" in m for m in messages)
    assert any("random.random" in m and "new_uuid" in m for m in messages)
    assert all(w.filename == __file__ for w in caught)


def test_deterministic_orchestrators_register_without_a_warning():
    import warnings

    def careful(ctx):
        now = ctx.current_utc_datetime
        yield ctx.create_timer(now + timedelta(seconds=1))
        return ctx.new_uuid()

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Registry().add_orchestrator(careful)
