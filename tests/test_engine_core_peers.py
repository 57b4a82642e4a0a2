"""The engine against DurableTask.Core, durabletask-dotnet and durabletask-python, for the
cases a scan of their tests found we handled differently: user exceptions that cannot be
printed, continue-as-new generations that must not repeat ids, work an orchestration starts
in its last episode, and tasks passed where a value belongs.

Each test names the peer behaviour it ports. Pure: hand-written histories, no Ray, no files.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from datetime import timedelta

import pytest

from entities import EntityId
from orchestrations import (
    DurableValueError,
    EntityLockGranted,
    ExecutionState,
    Registry,
    RetryOptions,
    TaskCancelledError,
    TaskFailedError,
    execute,
)
from orchestrations._history import RULES
from orchestrations.testing import (
    at,
    event_raised,
    orchestrator_completed,
    orchestrator_started,
    started,
    sub_completed,
    sub_created,
    sub_failed,
    task_completed,
    timer_fired,
)
from runtime._batch import run_batch
from runtime._codec import decode, dump_value, encode

from .test_executor import Instance, lookup_of

S = ExecutionState


class _UnprintableError(Exception):
    """An exception whose ``__str__`` itself fails (as ``traceback`` prints it: ``<exception
    str() failed>``)."""

    def __str__(self) -> str:
        raise RuntimeError("str broken")


# -- a user exception that cannot be printed fails its task, not the engine --------------------


def test_an_orchestrator_raising_an_unprintable_exception_fails_naming_its_type():
    # before: execute() itself raised RuntimeError("str broken"), the host dropped the message
    # and the instance stayed Running for good
    def unprintable(ctx):
        yield ctx.call_activity("a")
        raise _UnprintableError()

    inst = Instance(unprintable)
    inst.start()
    done = inst.run(task_completed(1, None), now=at(2))
    assert done.state is S.FAILED
    assert done.failure.error_type.endswith("_UnprintableError")
    assert done.failure.message == "<exception str() failed>"
    assert "_UnprintableError" in done.failure.details


def test_an_async_orchestrator_raising_an_unprintable_runtime_error_fails_too():
    # a review found it: the hint for asyncio mistakes in async orchestrators read str(exc)
    class UnprintableRuntimeError(RuntimeError):
        def __str__(self) -> str:
            raise ValueError("str broken")

    async def unprintable(ctx):
        await ctx.call_activity("a")
        raise UnprintableRuntimeError()

    inst = Instance(unprintable)
    inst.start()
    done = inst.run(task_completed(1, None), now=at(2))
    assert done.state is S.FAILED and done.failure.message == "<exception str() failed>"


def test_an_activity_raising_an_unprintable_exception_fails_only_its_own_call():
    # before: run_batch raised, and every call of the batch was reported failed with it
    registry = Registry()

    def good(x: int) -> int:
        return x * 2

    def bad(x: int) -> int:
        raise _UnprintableError()

    registry.add_activity(good, "good")
    registry.add_activity(bad, "bad")
    activities = encode(registry.snapshot()[1])
    calls = [("good", dump_value(1)), ("bad", dump_value(2)), ("good", dump_value(3))]
    first, failed, last = decode(run_batch("k", activities, calls))
    assert first == (True, 2) and last == (True, 6)
    ok, failure = failed
    assert not ok and failure.message == "<exception str() failed>"
    assert failure.error_type.endswith("_UnprintableError")


# -- continue-as-new generations repeat no uuid and no default child id ------------------------


def test_each_generation_gets_its_own_uuids_and_default_child_ids():
    # DurableTask.Core: NewGuid hashes the instance id and the episode's time, and each
    # generation starts at a time of its own; a child's default id is "<execution id>:<task>".
    # Here generations run in one turn at one time, and task numbers start over: before, every
    # generation took the same uuids and called its child "p:1" (which then already existed,
    # or was replaced). The executor says which generation comes next.
    uuids = []

    def gen(ctx):
        uuids.append(ctx.new_uuid())
        yield ctx.call_sub_orchestrator("child")
        ctx.continue_as_new(None)

    registry = Registry()
    registry.add_orchestrator(gen, "gen")
    children, generation = [], None
    for n in range(3):
        start = replace(started("gen", instance_id="p"), execution_id=f"exec-{n}", generation=generation)
        first = execute(registry.orchestrators.get, "p", [], [start], at(1))
        children.append(first.actions[0].instance_id)
        done = execute(registry.orchestrators.get, "p", first.new_events, [sub_completed(1)], at(1))
        assert done.state is S.CONTINUED_AS_NEW and done.continue_generation == n + 1
        generation = done.continue_generation
    assert children == ["p:1", "p:1~1", "p:1~2"]
    assert len(uuids) == 6 and len(set(uuids)) == 3  # each generation replays its own once


def test_a_first_execution_keeps_the_ids_it_always_had():
    # histories recorded before generations (no generation field) replay as they were
    def first(ctx):
        key = ctx.new_uuid()
        child = yield ctx.call_sub_orchestrator("child")
        return key, child

    registry = Registry()
    registry.add_orchestrator(first, "first")
    result = execute(registry.orchestrators.get, "p", [], [started("first", instance_id="p")], at(1))
    assert result.actions[0].instance_id == "p:1"
    done = execute(registry.orchestrators.get, "p", result.new_events, [sub_completed(1, "c")], at(2))
    assert done.output == ("359e37b7-6754-5ec7-8f93-2653ff6194a1", "c")


# -- a task passed where its result belongs fails at that line --------------------------------


@pytest.mark.parametrize(
    ("mistake", "where"),
    [
        (lambda ctx, t: ctx.call_activity("b", t), "the input of call_activity 'b'"),
        (lambda ctx, t: ctx.call_activity("b", {"first": [t]}), "the input of call_activity 'b' (task 2)['first'][0]"),
        (lambda ctx, t: ctx.call_sub_orchestrator("child", (1, t)), "the input of call_sub_orchestrator 'child'"),
        (lambda ctx, t: ctx.send_event("other", "go", t), "the data of send_event 'go'"),
        (lambda ctx, t: ctx.set_custom_status(t), "the custom status"),
        (lambda ctx, t: ctx.continue_as_new(t), "the input of continue_as_new"),
    ],
)
def test_a_task_passed_on_unyielded_fails_naming_where(mistake, where):
    # SDKs that serialise to JSON fail here; pickled, the Task object went on as the value
    # (the activity ran with a CompletableTask as its input)
    def passes_a_task(ctx):
        first = ctx.call_activity("a")
        mistake(ctx, first)
        yield first

    result = Instance(passes_a_task).start()
    assert result.state is S.FAILED
    assert result.failure.error_type == "orchestrations.DurableTypeError"
    assert result.failure.message.startswith(f"{where}") and "is a Task (CompletableTask), not its result" in (
        result.failure.message
    )


def test_a_task_may_still_be_passed_to_task_all_and_values_holding_none_pass():
    def fine(ctx):
        first = ctx.call_activity("a", {"x": [1, None, "s", b"b", 2.5]})
        both = yield ctx.task_all([first, ctx.call_activity("a", None)])
        return both

    result = Instance(fine).start()
    assert result.state is S.RUNNING and len(result.actions) == 2


def test_a_child_id_that_changed_on_replay_is_named_on_both_sides():
    # the message read "history expected call_sub_orchestrator 'child' (task 1), but the code
    # produced call_sub_orchestrator 'child' (task 1)": both sides alike, the ids left out
    def child_id_from_input(ctx):
        return (yield ctx.call_sub_orchestrator("child", instance_id=ctx.get_input()))

    registry = Registry()
    registry.add_orchestrator(child_id_from_input, "parent")
    first = execute(registry.orchestrators.get, "p", [], [started("parent", "c-1", instance_id="p")], at(1))
    history = [replace(e, input="c-2") if e.event_type == "ExecutionStarted" else e for e in first.new_events]
    again = execute(registry.orchestrators.get, "p", history, [sub_completed(1)], at(2))
    assert again.state is S.FAILED and again.failure.error_type == "orchestrations.NonDeterminismError"
    assert "expected call_sub_orchestrator 'child' as 'c-1' (task 1)" in again.failure.message
    assert "produced call_sub_orchestrator 'child' as 'c-2' (task 1)" in again.failure.message


# -- a cancelled timer or event wait ends with TaskCancelledError -----------------------------


def test_yielding_a_cancelled_timer_raises_task_cancelled_error():
    # durabletask-python test_cancelled_task_get_result_raises_task_cancelled_error and
    # durabletask-dotnet (awaiting a cancelled wait throws): here it waited for ever
    def cancels_then_waits(ctx):
        timer = ctx.create_timer(timedelta(hours=1))
        event = ctx.wait_for_external_event("go")
        timer.cancel()
        event.cancel()
        caught = []
        for task in (timer, event):
            try:
                yield task
            except TaskCancelledError as exc:
                caught.append(exc.message)
        ctx.set_custom_status(caught)
        yield ctx.task_all([ctx.create_timer(timedelta(hours=2)), timer])  # fails once both ended

    inst = Instance(cancels_then_waits)
    started_ = inst.start(now=at(1))
    assert started_.custom_status == ["timer task #1 was cancelled", "the wait for external event 'go' was cancelled"]
    later = started_.actions[-1]
    result = inst.run(timer_fired(later.task_id, later.fire_at), now=at(7201))
    assert result.state is S.FAILED
    assert result.failure.error_type == "TaskCancelledError"
    assert result.failure.message == "timer task #1 was cancelled"


def test_task_any_skips_a_cancelled_task_unless_every_one_is():
    # .NET's WhenAny would take the cancelled task as the winner; here task_any skips it, as
    # it did before cancelled tasks raised, so instances in flight replay as they ran
    def race(ctx):
        timer = ctx.create_timer(timedelta(hours=1))
        event = ctx.wait_for_external_event("go")
        event.cancel()
        winner = yield ctx.task_any([event, timer])
        try:
            yield ctx.task_any([event, ctx.wait_for_external_event("never").cancel() and event])
        except TaskCancelledError as exc:
            return [winner is timer, exc.message]

    inst = Instance(race)
    timer = inst.start(now=at(1)).actions[0]
    assert inst.run(timer_fired(timer.task_id, timer.fire_at), now=at(3601)).output == [
        True, "the wait for external event 'go' was cancelled"
    ]


@pytest.mark.parametrize(
    ("incoming", "expected"),
    [(event_raised("go", "data"), "data"), (timer_fired(1, at(61)), "timed out")],
)
def test_an_event_wait_with_a_timeout_still_ends_with_whichever_comes_first(incoming, expected):
    # the timeout's timer and the wait are cancelled once the other finished: that must not
    # finish the wait a second time
    def waits(ctx):
        try:
            return (yield ctx.wait_for_external_event("go", timeout=timedelta(seconds=60)))
        except TaskFailedError as exc:
            return "timed out" if exc.error_type == "TimeoutError" else repr(exc)

    inst = Instance(waits)
    inst.start(now=at(1))
    assert inst.run(incoming, now=at(61)).output == expected


def test_cancelling_an_event_wait_with_a_timeout_raises_at_its_yield():
    def cancels(ctx):
        wait = ctx.wait_for_external_event("go", timeout=timedelta(seconds=60))
        assert wait.cancel() is True and wait.cancel() is False
        try:
            yield wait
        except TaskCancelledError as exc:
            return exc.message

    assert Instance(cancels).start().output == "the wait for external event 'go' was cancelled"


def test_the_check_for_a_task_looks_at_the_first_values_and_is_bounded():
    # a review found it: the whole input was walked (a million-item list: 0.3 s on every call
    # and replay), from the end, and a dict key whose repr fails failed the orchestration
    class BadRepr:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    def passes(ctx):
        first = ctx.call_activity("a")
        ctx.call_activity("b", list(range(1_000_000)))  # fine: no task in it
        ctx.call_activity("c", {BadRepr(): 1, "k": [2, 3]})  # fine: its repr is never needed
        ctx.call_activity("d", [first, *range(300)])  # the task comes first: found

    result = Instance(passes).start()
    assert result.state is S.FAILED
    assert result.failure.message.startswith("the input of call_activity 'd' (task 4)[0] is a Task")


def test_a_refused_call_inside_a_critical_section_leaves_the_entity_callable():
    # a review found it: the section counted the call as in flight before its input was
    # refused, so the corrected call was refused as a second call to the same entity
    counter = EntityId("counter", "a")

    def section(ctx):
        first = ctx.call_activity("a")
        with (yield ctx.lock_entities([counter])):
            with contextlib.suppress(TypeError):  # refused: a Task as the input
                ctx.call_entity(counter, "add", first)
            return [type(ctx.call_entity(counter, "add", 1)).__name__]

    inst = Instance(section)
    lock = inst.start().actions[-1]
    done = inst.run(EntityLockGranted(at(2), lock.task_id, lock.lock_set), now=at(2))
    assert done.state is S.COMPLETED and done.output == ["CompletableTask"]


@pytest.mark.parametrize("inner", ["task_all", "task_any"])
def test_a_composite_cancelled_tasks_keep_from_completing_is_skipped_by_task_any_too(inner):
    # a review found it: a task_all or task_any that can never complete because of cancelled
    # tasks ended at once with TaskCancelledError, and an outer task_any took it as the
    # winner where instances in flight had waited for the other task
    def nested(ctx):
        timer = ctx.create_timer(timedelta(hours=1))
        timer.cancel()
        other = ctx.wait_for_external_event("other")
        winner = yield ctx.task_any([getattr(ctx, inner)([timer]), other])
        return winner is other

    inst = Instance(nested)
    assert inst.start(now=at(1)).state is S.RUNNING
    assert inst.run(event_raised("other", 1), now=at(2)).output is True


def test_the_output_check_still_finds_a_task_after_a_hundred_thousand_values():
    # a review found it: the bounded walk stopped at 100,000 values, where the check it
    # replaced had found this one
    def forgets(ctx):
        return [*range(100_000), ctx.call_activity("final")]
        yield

    result = Instance(forgets, cached=False).start()
    assert result.state is S.FAILED and result.failure.message.startswith("the output[100000] is a Task")


def test_a_sub_orchestration_id_still_running_under_this_execution_is_refused_at_the_call():
    # Azure/durabletask test/DurableTask.AzureStorage.Tests/DuplicateSubOrchestrationInstanceIdTests.cs
    #   ::DuplicateAwaitedIds_SameBatch_FailsWithoutStartingAnyChild: the second start was refused
    #   only on the child's shard, and the parent waited (in task_all) until the first child ended
    def same_batch(ctx):
        return (yield ctx.task_all([ctx.call_sub_orchestrator("child", i, instance_id="kid") for i in range(2)]))

    done = Instance(same_batch).start()
    assert done.state is S.FAILED and done.failure.error_type.endswith("DurableValueError")
    assert "instance id 'kid' is already used by task 1 of this execution" in done.failure.message
    assert [type(a).__name__ for a in done.actions] == []  # no child is started


def test_a_sub_orchestration_id_is_free_again_once_its_child_finished_and_ids_are_case_sensitive():
    # DuplicateSubOrchestrationInstanceIdTests.cs::AllowedAwaitedIds_WithGuardEnabled_Completes
    #   (Sequential, SequentialAfterFailure, Distinct by case)
    def sequential(ctx):
        first = yield ctx.call_sub_orchestrator("child", 1, instance_id="kid")
        try:
            once = RetryOptions(timedelta(seconds=1), 1)
            second = yield ctx.call_sub_orchestrator_with_retry("child", once, 2, "kid")
        except TaskFailedError:
            second = "failed"
        third = yield ctx.task_all([ctx.call_sub_orchestrator("child", 3, instance_id=i) for i in ("kid", "KID")])
        return [first, second, third]

    inst = Instance(sequential)
    inst.start()
    inst.run(sub_completed(1, "one"), now=at(2))
    inst.run(sub_failed(2, "no"), now=at(3))
    done = inst.run(sub_completed(3, "a"), sub_completed(4, "b"), now=at(4))
    assert done.state is S.COMPLETED and done.output == ["one", "failed", ["a", "b"]]


def test_a_retried_sub_orchestration_keeps_its_id_taken_until_it_ends():
    def overlapping(ctx):
        retried = ctx.call_sub_orchestrator_with_retry("child", RetryOptions(timedelta(seconds=1), 3), None, "kid")
        try:
            ctx.call_sub_orchestrator("child", None, instance_id="kid")
        except DurableValueError as exc:
            return [str(exc), (yield retried)]
        return None

    done = Instance(overlapping).start()
    assert done.state is S.RUNNING
    inst = Instance(overlapping)
    inst.start()
    done = inst.run(sub_completed(1, "ok"), now=at(2))
    assert done.output[0].startswith("call_sub_orchestrator: instance id 'kid' is already used by task 1")
    assert done.output[1] == "ok"


def test_an_execution_recorded_before_the_child_id_check_replays_without_it():
    # a review found it: an instance in flight whose history (recorded before the check, so its
    # ExecutionStarted has no `rules`) started two children under one id and caught the refusal
    # of the second would fail at that call on its next replay after an upgrade
    def catches(ctx):
        first = ctx.call_sub_orchestrator("child", 1, instance_id="kid")
        second = ctx.call_sub_orchestrator("child", 2, instance_id="kid")
        try:
            yield second
        except TaskFailedError:
            return ["caught", (yield first)]
        return None

    lookup = lookup_of(catches)
    old = started("catches", instance_id="test")
    assert old.rules is None
    history = [old, orchestrator_started(), sub_created(1, "child", "kid", 1), sub_created(2, "child", "kid", 2),
               orchestrator_completed()]
    refused = execute(lookup, "test", history, [sub_failed(2, "already exists", "InstanceAlreadyExistsError")], at(2))
    assert refused.state is S.RUNNING and refused.failure is None
    done = execute(lookup, "test", history + refused.new_events, [sub_completed(1, "one")], at(3))
    assert done.state is S.COMPLETED and done.output == ["caught", "one"]
    new = Instance(catches).start()  # a new execution records the check and runs under it
    assert new.new_events[0].rules == RULES and new.state is S.FAILED
