"""Changing orchestrator code while instances run: ``is_patched``, versions by name, the input
digest checked on replay, and the executor closing the generators it is done with. Pure.

Histories are written by hand (the shape older code left) or produced by running the engine;
the :class:`tests.test_executor.Instance` driver checks every episode twice (a fresh replay
and a cached executor), so each test also proves that replay answers the same.
"""

from __future__ import annotations

import gc
import os
import pickle
import subprocess
import sys
from dataclasses import replace

import pytest

from orchestrations import (
    DurableTypeError,
    DurableValueError,
    ExecutionStarted,
    ExecutionState,
    OrchestrationContext,
    OrchestrationExecutor,
    PatchApplied,
    Registry,
    ScheduleTask,
    TaskScheduled,
    execute,
)
from orchestrations._digest import input_digest
from orchestrations._registry import OrchestratorSpec, function_version, merge_orchestrators
from orchestrations.testing import (
    T0,
    at,
    event_raised,
    orchestrator_completed,
    orchestrator_started,
    started,
    task_completed,
    task_scheduled,
    terminated,
)

from .test_executor import Instance

# -- is_patched ----------------------------------------------------------------------------------


def step_old(ctx):
    packed = yield ctx.call_activity("step", "pack")
    return [packed]


def step_patched(ctx):
    results = []
    if ctx.is_patched("weigh-first"):
        results.append((yield ctx.call_activity("step", "weigh")))
    results.append((yield ctx.call_activity("step", "pack")))
    return results


def markers(events):
    return [e.patch_id for e in events if isinstance(e, PatchApplied)]


def test_is_patched_new_path_records_a_marker_and_answers_true_on_every_replay():
    inst = Instance(step_patched, name="shipping")
    first = inst.start()
    assert first.actions == [ScheduleTask(1, "step", "weigh")]
    assert markers(first.new_events) == ["weigh-first"]
    second = inst.run(task_completed(1, "weighed"), now=at(2))
    assert second.actions == [ScheduleTask(2, "step", "pack")]
    assert markers(second.new_events) == []  # recorded once
    done = inst.run(task_completed(2, "packed"), now=at(3))
    assert done.state is ExecutionState.COMPLETED
    assert done.output == ["weighed", "packed"]
    assert markers(inst.history) == ["weigh-first"]
    # the marker sits in the episode that asked, before the actions it then took
    types = [e.event_type for e in first.new_events]
    assert types.index("PatchApplied") < types.index("TaskScheduled")


def test_is_patched_old_path_replays_history_without_the_marker_as_false():
    """History written by the old code (no marker): the patched code keeps the old branch, so
    the recorded step("pack") is not mistaken for the new step("weigh")."""
    inst = Instance(step_patched, name="shipping")
    inst.history = [
        started("shipping"), orchestrator_started(), task_scheduled(1, "step", "pack"), orchestrator_completed(),
    ]
    inst.executor.replay(inst.history)
    done = inst.run(task_completed(1, "packed"), now=at(2))
    assert done.state is ExecutionState.COMPLETED
    assert done.output == ["packed"]
    assert markers(inst.history) == []


def test_is_patched_answers_the_same_for_an_id_asked_again_later():
    """The first answer for an id holds for the execution (Temporal's ``patched``): an old
    instance that took the old branch at the first check takes it at the second one too,
    although that second check runs live."""

    def twice(ctx):
        first = ctx.is_patched("p")
        yield ctx.call_activity("step", "a")
        second = ctx.is_patched("p")
        return [first, second]

    old = Instance(twice)
    old.history = [started("twice"), orchestrator_started(), task_scheduled(1, "step", "a"), orchestrator_completed()]
    old.executor.replay(old.history)
    assert old.run(task_completed(1), now=at(2)).output == [False, False]
    assert markers(old.history) == []

    new = Instance(twice)
    new.start()
    assert new.run(task_completed(1), now=at(2)).output == [True, True]
    assert markers(new.history) == ["p"]


def test_a_marker_the_code_no_longer_asks_about_is_ignored():
    """Once every old instance is gone, the check is removed and the new branch kept: the
    histories of instances that recorded the marker still replay."""

    def patch_removed(ctx):
        weighed = yield ctx.call_activity("step", "weigh")
        packed = yield ctx.call_activity("step", "pack")
        return [weighed, packed]

    inst = Instance(patch_removed, name="shipping")
    inst.history = [
        started("shipping"), orchestrator_started(), PatchApplied(T0, "weigh-first"),
        task_scheduled(1, "step", "weigh"), orchestrator_completed(),
    ]
    inst.executor.replay(inst.history)
    inst.run(task_completed(1, "weighed"), now=at(2))
    assert inst.run(task_completed(2, "packed"), now=at(3)).output == ["weighed", "packed"]


def test_is_patched_in_an_async_orchestrator():
    async def async_patched(ctx):
        if ctx.is_patched("v2"):
            return await ctx.call_activity("step", "new")
        return await ctx.call_activity("step", "old")

    new = Instance(async_patched)
    assert new.start().actions == [ScheduleTask(1, "step", "new")]
    assert new.run(task_completed(1, "n"), now=at(2)).output == "n"

    old = Instance(async_patched)
    old.history = [
        started("async_patched"), orchestrator_started(), task_scheduled(1, "step", "old"), orchestrator_completed(),
    ]
    old.executor.replay(old.history)
    assert old.run(task_completed(1, "o"), now=at(2)).output == "o"


@pytest.mark.parametrize("bad", ["", "   ", None, 3, b"id"])
def test_bad_patch_ids_are_refused_naming_the_value(bad):
    with pytest.raises(DurableValueError, match="patch_id must be a non-empty str") as err:
        OrchestrationContext("x").is_patched(bad)
    assert repr(bad) in str(err.value)


def test_patch_applied_shows_its_id_as_its_name():
    event = PatchApplied(T0, "weigh-first")
    assert (event.event_type, event.name) == ("PatchApplied", "weigh-first")
    assert pickle.loads(pickle.dumps(event)) == event


# -- versions by name ------------------------------------------------------------------------------


def shipping_v1(ctx):
    label = yield ctx.call_activity("label", ctx.get_input())
    yield ctx.wait_for_external_event("picked")
    return f"v1:{label}"


def shipping_v2(ctx):
    label = yield ctx.call_activity("label_v2", ctx.get_input())
    yield ctx.wait_for_external_event("picked")
    return f"v2:{label}"


def versioned(*specs):
    """A registry holding each (fn, version) under the name ``shipping``."""
    reg = Registry()
    for fn, version in specs:
        reg.add_orchestrator(fn, "shipping", version)
    return reg


def test_an_instance_started_on_v1_completes_on_v1_after_v2_is_registered():
    """History written while only v1 existed (the start records version 1); v2 is registered
    since: the instance replays and finishes on v1."""
    history = [
        ExecutionStarted(T0, "shipping", "box", "order-1", "e1", None, 1),
        orchestrator_started(), task_scheduled(1, "label", "box"), orchestrator_completed(),
        task_completed(1, "L1", ts=at(1)), orchestrator_started(at(1)), orchestrator_completed(at(1)),
    ]
    reg = versioned((shipping_v1, 1), (shipping_v2, 2))
    result = execute(reg.orchestrators.get, "order-1", history, [event_raised("picked")], at(2))
    assert result.state is ExecutionState.COMPLETED
    assert result.output == "v1:L1"


def test_new_instances_start_on_the_latest_version_and_record_it():
    reg = versioned((shipping_v1, 1), (shipping_v2, 2))
    result = execute(reg.orchestrators.get, "order-2", [], [started("shipping", "box", instance_id="order-2")], at(1))
    assert result.actions == [ScheduleTask(1, "label_v2", "box")]
    recorded = result.new_events[0]
    assert isinstance(recorded, ExecutionStarted) and recorded.version == 2
    # and it keeps v2 after a v3 arrives
    reg.add_orchestrator(shipping_v1, "shipping", 3)
    later = execute(reg.orchestrators.get, "order-2", result.new_events, [task_completed(1, "L")], at(2))
    assert later.state is ExecutionState.RUNNING and later.failure is None


def test_a_start_naming_a_version_runs_that_version():
    reg = versioned((shipping_v1, 1), (shipping_v2, 2))
    start = replace(started("shipping", "box"), version=1)
    result = execute(reg.orchestrators.get, "test", [], [start], at(1))
    assert result.actions == [ScheduleTask(1, "label", "box")]
    assert result.new_events[0].version == 1


def test_a_recorded_version_that_is_not_registered_fails_loudly_and_runs_nothing():
    ran = []

    def shipping_v3(ctx):
        ran.append("v3")
        yield ctx.call_activity("label", "x")

    reg = versioned((shipping_v3, 3), (shipping_v2, 2))
    history = [ExecutionStarted(T0, "shipping", "box", "o", "e", None, 1), orchestrator_started(),
               task_scheduled(1, "label", "box"), orchestrator_completed()]
    result = execute(reg.orchestrators.get, "o", history, [task_completed(1, "L")], at(1))
    assert result.state is ExecutionState.FAILED
    assert result.failure.error_type == "OrchestratorVersionNotFound"
    message = result.failure.message
    assert "'shipping' version 1 is not registered" in message
    assert "registered versions: 2, 3" in message
    assert "@orchestrator(name='shipping', version=1)" in message
    assert ran == []


def test_an_unversioned_history_replays_on_the_unversioned_function_only():
    history = [started("shipping", "box"), orchestrator_started(), task_scheduled(1, "label", "box"),
               orchestrator_completed()]
    both = Registry()
    both.add_orchestrator(shipping_v1, "shipping")
    both.add_orchestrator(shipping_v2, "shipping", 2)
    running = execute(both.orchestrators.get, "test", history, [task_completed(1, "L")], at(1))
    assert running.state is ExecutionState.RUNNING and running.failure is None

    only_v2 = versioned((shipping_v2, 2))
    failed = execute(only_v2.orchestrators.get, "test", history, [task_completed(1, "L")], at(1))
    assert failed.failure.error_type == "OrchestratorVersionNotFound"
    assert "started before versions were used" in failed.failure.message
    assert "@orchestrator(name='shipping')" in failed.failure.message


def test_unversioned_orchestrators_record_no_version():
    reg = Registry()
    reg.add_orchestrator(step_old, "shipping")
    result = execute(reg.orchestrators.get, "test", [], [started("shipping")], at(1))
    assert result.new_events[0].version is None
    assert result.new_events[0] == started("shipping")


def test_a_child_or_a_continued_execution_started_by_name_runs_the_latest():
    """The runtime starts children and continue-as-new executions by name (no version): the
    executor gives them the latest, as for a client's start by name."""
    reg = versioned((shipping_v1, 1), (shipping_v2, 2))
    executor = OrchestrationExecutor(reg.orchestrators, "parent:1")
    result = executor.process([started("shipping", "box", instance_id="parent:1")], at(1))
    assert result.new_events[0].version == 2
    assert result.actions == [ScheduleTask(1, "label_v2", "box")]


def test_versions_are_registered_under_one_name_and_duplicates_refused():
    reg = versioned((shipping_v2, 2), (shipping_v1, 1))
    family = reg.orchestrators["shipping"]
    assert (family.version, family.fn) == (2, shipping_v2)
    assert family.versions == [1, 2]
    assert family.at_version(1).fn is shipping_v1 and family.at_version(5) is None
    with pytest.raises(DurableValueError, match="'shipping' version 2 is already registered"):
        reg.add_orchestrator(step_old, "shipping", 2)
    reg.add_orchestrator(step_old, "shipping")  # unversioned: older than every version
    assert reg.orchestrators["shipping"].versions == [None, 1, 2]
    with pytest.raises(DurableValueError, match="'shipping' is already registered"):
        reg.add_orchestrator(step_patched, "shipping")


@pytest.mark.parametrize(
    ("bad", "error"), [("2", DurableTypeError), (True, DurableTypeError), (1.5, DurableTypeError),
                       (-1, DurableValueError)],
)
def test_bad_versions_are_refused_naming_the_value(bad, error):
    with pytest.raises(error, match="version") as err:
        Registry().add_orchestrator(shipping_v1, "shipping", bad)
    assert repr(bad) in str(err.value)


def test_the_decorator_marks_the_function_with_its_version():
    reg = versioned((shipping_v1, 1))
    assert reg.orchestrators["shipping"].version == 1
    from orchestrations import default_registry, orchestrator

    @orchestrator(name="test_versioning_decorated", version=4)
    def decorated(ctx):
        yield ctx.call_activity("x")

    try:
        assert function_version(decorated) == 4
        assert function_version("test_versioning_decorated") is None  # a name means the latest
        assert function_version(step_old) is None
    finally:
        default_registry.orchestrators.pop("test_versioning_decorated")


def test_shards_merge_registries_by_name_and_version():
    """A driver that registers only the latest version does not take an older one away from
    the shard (instances still run it); a version registered again takes the new code."""
    on_shard = versioned((shipping_v1, 1)).orchestrators
    incoming = versioned((shipping_v2, 2)).orchestrators
    merged = merge_orchestrators(on_shard, incoming)
    assert merged["shipping"].versions == [1, 2]
    assert merged["shipping"].fn is shipping_v2
    again = merge_orchestrators(merged, versioned((step_old, 1)).orchestrators)
    assert again["shipping"].at_version(1).fn is step_old
    assert again["shipping"].versions == [1, 2]


def test_a_registry_with_versions_survives_pickle_and_an_old_spec_loads():
    reg = versioned((shipping_v1, 1), (shipping_v2, 2))
    copy = pickle.loads(pickle.dumps(reg))
    assert copy.orchestrators["shipping"].versions == [1, 2]
    spec = OrchestratorSpec("hello", step_old, True)
    old = object.__new__(OrchestratorSpec)
    old.__setstate__(spec.__getstate__()[:3])  # a spec saved before versions existed
    assert (old.version, old.earlier, old.versions) == (None, (), [None])


# -- the input digest ----------------------------------------------------------------------------


def label_pack(ctx):
    box = ctx.get_input()
    label = yield ctx.call_activity("label", {"box": box, "size": 1})
    yield ctx.wait_for_external_event("go")
    return label


def label_pack_changed(ctx):
    box = ctx.get_input()
    label = yield ctx.call_activity("label", {"box": box, "size": 2})  # the changed line
    yield ctx.wait_for_external_event("go")
    return label


def test_a_changed_activity_input_is_caught_on_replay_naming_file_and_line():
    inst = Instance(label_pack, name="labels")
    inst.start("b1")
    inst.run(task_completed(1, "L"), now=at(2))
    assert inst.history[2].input_digest == input_digest({"box": "b1", "size": 1})

    changed = Registry()
    changed.add_orchestrator(label_pack_changed, "labels")
    result = execute(changed.orchestrators.get, "test", inst.history, [event_raised("go")], at(3))
    assert result.state is ExecutionState.FAILED
    assert result.failure.error_type.endswith("NonDeterminismError")
    message = result.failure.message
    assert "input changed" in message and "call_activity 'label' (task 1)" in message
    line = label_pack_changed.__code__.co_firstlineno + 2
    assert f"{__file__}:{line}" in message


def test_the_same_input_replays_and_an_old_history_without_digest_is_not_checked():
    inst = Instance(label_pack, name="labels")
    inst.start("b1")
    assert inst.run(task_completed(1, "L"), now=at(2)).state is ExecutionState.RUNNING
    assert inst.run(event_raised("go"), now=at(3)).output == "L"

    old = [started("labels", "b1"), orchestrator_started(), task_scheduled(1, "label", {"box": "b1", "size": 1}),
           orchestrator_completed()]
    assert old[2].input_digest is None
    changed = Registry()
    changed.add_orchestrator(label_pack_changed, "labels")
    result = execute(changed.orchestrators.get, "test", old, [task_completed(1, "L")], at(2))
    assert result.state is ExecutionState.RUNNING  # no digest recorded: nothing to compare


def test_a_changed_sub_orchestration_input_is_caught_too():
    def parent(ctx):
        return (yield ctx.call_sub_orchestrator("child", ctx.get_input()))

    inst = Instance(parent)
    inst.start(1)
    reg = Registry()

    def parent_changed(ctx):
        return (yield ctx.call_sub_orchestrator("child", ctx.get_input() + 1))

    reg.add_orchestrator(parent_changed, "parent")
    result = execute(reg.orchestrators.get, "test", inst.history, [task_completed(1)], at(2))
    assert result.failure.error_type.endswith("NonDeterminismError")
    assert "input changed" in result.failure.message


def test_other_nondeterminism_names_the_line_too():
    def before(ctx):
        yield ctx.call_activity("A")

    def after(ctx):
        yield ctx.call_activity("B")

    inst = Instance(before, name="orch")
    inst.start()
    reg = Registry()
    reg.add_orchestrator(after, "orch")
    result = execute(reg.orchestrators.get, "test", inst.history, [task_completed(1)], at(2))
    assert f"{__file__}:{after.__code__.co_firstlineno + 1}" in result.failure.message
    assert "call_activity 'A'" in result.failure.message and "call_activity 'B'" in result.failure.message


def test_digests_are_canonical():
    assert input_digest({"b": 1, "a": [1, 2]}) == input_digest({"a": [1, 2], "b": 1})
    assert input_digest({"x", "y", "z"}) == input_digest({"z", "y", "x"})
    assert input_digest(b"\x00") != input_digest("00")
    assert input_digest(None) == input_digest(None) != input_digest(0)
    assert input_digest({"size": 1}) != input_digest({"size": 2})
    assert input_digest(object()) is None  # no canonical text: not checked
    assert input_digest({1: "a", "1": "b"}) is None  # keys of mixed types cannot be sorted
    # pinned: a digest compared with one recorded long ago must never change by accident
    assert input_digest({"box": "b1"}) == "1:cb8503b70f8d675ccce46dc0e744c445"


def test_digests_are_the_same_in_another_process():
    """Not Python's salted hash: a set of strings digests the same under another hash seed."""
    value = {"items": {"apple", "pear", "plum", "fig"}, "n": 3, "when": T0}
    code = (
        "from datetime import UTC, datetime; from orchestrations._digest import input_digest; "
        "print(input_digest({'items': {'apple', 'pear', 'plum', 'fig'}, 'n': 3, "
        "'when': datetime(2017, 5, 5, 18, 45, 28, tzinfo=UTC)}))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == input_digest(value)


# -- closing the generator -------------------------------------------------------------------------


def test_a_finally_block_runs_once_at_the_end_and_never_during_replay():
    seen = []

    def cleanup(ctx):
        try:
            a = yield ctx.call_activity("A")
            b = yield ctx.call_activity("B")
            return [a, b]
        finally:
            seen.append(ctx.is_replaying)

    reg = Registry()
    reg.add_orchestrator(cleanup)
    history = []
    gc.disable()  # the finally must run when execute() returns, not at garbage collection
    try:
        for events in ([started("cleanup")], [task_completed(1, "a")], [task_completed(2, "b")]):
            before = len(seen)
            result = execute(reg.orchestrators.get, "test", history, events, at(len(history)))
            history.extend(result.new_events)
            assert len(seen) > before  # closed (or finished) by execute itself
    finally:
        gc.enable()
    assert result.output == ["a", "b"]
    # every time execute put a running instance away, and every replay, saw is_replaying;
    # the one live run of the finally block is the end
    assert seen.count(False) == 1 and seen[-1] is False


def test_eviction_closes_a_running_generator_as_replaying_and_drops_what_it_schedules():
    seen = []

    def greedy(ctx):
        try:
            yield ctx.call_activity("A")
        finally:
            seen.append(ctx.is_replaying)
            ctx.call_activity("cleanup")  # dropped: an execution being put away schedules nothing

    reg = Registry()
    reg.add_orchestrator(greedy)
    executor = OrchestrationExecutor(reg.orchestrators, "test")
    executor.process([started("greedy")], at(1))
    executor.close()
    assert seen == [True]
    assert executor.context._pending_actions == {}

    seen.clear()
    live = OrchestrationExecutor(reg.orchestrators, "t2")
    live.process([started("greedy", instance_id="t2")], at(1))
    result = live.process([terminated("stop")], at(2))
    assert seen == [False]  # the end, live
    assert result.actions == [] and not any(isinstance(e, TaskScheduled) for e in result.new_events)


def test_an_async_orchestrator_reports_the_line_of_its_await():
    async def fetch(ctx):
        return await ctx.call_activity("fetch", ctx.get_input())

    async def fetch_changed(ctx):
        return await ctx.call_activity("fetch", ctx.get_input() * 2)

    inst = Instance(fetch)
    inst.start(21)
    reg = Registry()
    reg.add_orchestrator(fetch_changed, "fetch")
    result = execute(reg.orchestrators.get, "test", inst.history, [task_completed(1, "x")], at(2))
    assert "input changed" in result.failure.message
    assert f"{__file__}:{fetch_changed.__code__.co_firstlineno + 1}" in result.failure.message


def test_a_patch_marker_is_not_delivered_again_by_a_rewind():
    """A marker belongs to its episode, like OrchestratorStarted: a rewind that cuts the
    episode drops it (the episode runs again and records it again), never re-delivers it."""
    from orchestrations._rewind import plan_rewind
    from orchestrations.testing import task_failed

    inst = Instance(step_patched, name="shipping")
    inst.start()
    failed = inst.run(task_failed(1, "scale broken"), now=at(2))
    assert failed.state is ExecutionState.FAILED
    plan = plan_rewind(inst.history)
    assert not any(isinstance(e, PatchApplied) for e in plan.redeliver)
    assert markers(inst.history[: plan.cut]) == ["weigh-first"]  # recorded in the kept first episode


def test_an_execution_the_runtime_fails_from_outside_runs_its_finally_as_an_end():
    seen = []

    def waits(ctx):
        try:
            yield ctx.call_activity("A")
        finally:
            seen.append(ctx.is_replaying)

    reg = Registry()
    reg.add_orchestrator(waits)
    executor = OrchestrationExecutor(reg.orchestrators, "test")
    executor.process([started("waits")], at(1))
    assert executor.abandon() == ([], None)
    executor.close()
    assert seen == [False]


def test_continue_as_new_may_name_the_version_the_new_execution_runs():
    def stays(ctx):
        ctx.continue_as_new("again", version=1)
        yield ctx.call_activity("never")

    reg = versioned((stays, 1), (shipping_v2, 2))
    first = execute(reg.orchestrators.get, "test", [], [replace(started("shipping"), version=1)], at(1))
    assert (first.state, first.output, first.continue_version) == (ExecutionState.CONTINUED_AS_NEW, "again", 1)
    latest = execute(reg.orchestrators.get, "t2", [], [started("shipping", "x", instance_id="t2")], at(1))
    assert latest.continue_version is None
    with pytest.raises(DurableTypeError, match="version must be an int"):
        OrchestrationContext("x").continue_as_new(None, version="1")
