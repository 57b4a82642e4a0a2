"""``orchestrations.testing.Replayer``: stored histories replayed through changed code, without Ray.

Histories are produced by running the executor on "v1" code (as a shard host would), then
replayed through "v2" code; the cases follow Temporal's replayer tests (complete, incomplete,
failed, non-deterministic, not registered, several histories at once).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest

from orchestrations import (
    DurableTypeError,
    EventRaised,
    OrchestrationExecutor,
    Registry,
    ScheduleTask,
    TaskCompleted,
    TaskScheduled,
)
from orchestrations.testing import Replayer, ReplayResult, at, started, task_failed

ND = "orchestrations.NonDeterminismError"


def step(name: str) -> str:
    return f"did {name}"


def run(registry: Registry, name: str, *, events: list[str] = (), instance_id: str = "i-1", input_: Any = None,
        fail: Callable[[str], bool] = lambda _: False) -> list[Any]:
    """The history a shard host would store for ``name`` on ``registry``'s code: every activity
    answers at once (``fail(input)``: it fails), then the external ``events`` arrive in turn."""
    executor = OrchestrationExecutor(registry.orchestrators, instance_id)
    history: list[Any] = []
    pending: list[Any] = [started(name, input_, instance_id=instance_id)]
    raised = list(events)
    while pending:
        result = executor.process(pending, at(len(history)))
        history += result.new_events
        if result.state.is_final:
            break
        now = at(len(history))
        pending = [
            task_failed(a.task_id, "down") if fail(a.input) else TaskCompleted(now, a.task_id, step(a.input))
            for a in result.actions if isinstance(a, ScheduleTask)
        ]
        if not pending and raised:
            pending = [EventRaised(at(len(history)), raised.pop(0), None)]
    executor.close()
    return history


def shipping_v1(ctx):
    yield ctx.call_activity("step", "pack")
    yield ctx.wait_for_external_event("go")
    yield ctx.call_activity("step", "ship")
    return "shipped"


def shipping_v2(ctx):
    """v1 with the step after the event changed: only instances past the event are broken."""
    yield ctx.call_activity("step", "pack")
    yield ctx.wait_for_external_event("go")
    yield ctx.call_activity("step_ship_fast", "ship")
    return "shipped"


def billing(ctx):
    result = yield ctx.call_activity("step", "bill")
    return result


def registry(**orchestrators: Callable[..., Any]) -> Registry:
    found = Registry()
    for name, fn in orchestrators.items():
        found.add_orchestrator(fn, name)
    return found


V1 = registry(shipping=shipping_v1, billing=billing)
V2 = registry(shipping=shipping_v2, billing=billing)


def test_the_replayer_flags_exactly_the_instances_a_change_breaks():
    histories = {
        "done": run(V1, "shipping", events=["go"], instance_id="done"),
        "waiting": run(V1, "shipping", instance_id="waiting"),  # not past the change yet
        "bill": run(V1, "billing", instance_id="bill"),
    }
    assert all(r.ok for r in Replayer(V1).replay(histories))
    results = Replayer(V2).replay(histories)
    assert [(r.instance_id, r.name, r.ok) for r in results] == [
        ("done", "shipping", False), ("waiting", "shipping", True), ("bill", "billing", True),
    ]
    broken = results[0]
    assert broken.error_type == ND
    assert "'step'" in broken.message and "'step_ship_fast'" in broken.message  # both the recorded and the new call
    assert broken.describe().startswith(f"done (shipping): {ND}: non-deterministic orchestrator")
    assert results[1].describe() == "waiting (shipping): ok"


def test_pairs_and_a_mapping_give_the_same_results_in_order():
    a, b = run(V1, "billing", instance_id="a"), run(V1, "shipping", instance_id="b")
    assert Replayer(V2).replay([("a", a), ("b", b)]) == Replayer(V2).replay({"a": a, "b": b})


def test_no_histories_give_no_results():
    assert Replayer(V1).replay([]) == []
    assert Replayer(V1).replay({}) == []


def test_a_history_without_execution_started_is_an_error_result_not_a_crash():
    history = run(V1, "billing")
    results = Replayer(V1).replay([("headless", history[1:]), ("empty", []), ("fine", history)])
    assert [(r.instance_id, r.error_type) for r in results] == [
        ("headless", "InvalidHistory"), ("empty", "InvalidHistory"), ("fine", None),
    ]
    assert results[0].name is None and "ExecutionStarted" in results[0].message


def test_an_orchestrator_that_is_no_longer_registered_is_named():
    results = Replayer(registry(billing=billing)).replay({"s": run(V1, "shipping")})
    assert results == [ReplayResult("s", "shipping", "OrchestratorNotFound", results[0].message)]
    assert "'shipping'" in results[0].message and "'billing'" in results[0].message


def test_code_that_now_raises_where_the_history_went_on_is_flagged():
    def billing_raises(ctx):
        result = yield ctx.call_activity("step", "bill")
        raise KeyError(result)

    [result] = Replayer(registry(billing=billing_raises)).replay({"b": run(V1, "billing")})
    assert (result.ok, result.error_type) == (False, "KeyError")
    assert "did bill" in result.message


def test_a_recorded_failure_that_the_code_still_produces_replays_cleanly():
    failed = run(V1, "billing", fail=lambda _: True)  # the activity failed, the orchestration with it
    assert failed[-1].status == "Failed"
    assert Replayer(V1).replay({"f": failed}) == [ReplayResult("f", "billing")]

    def billing_catches(ctx):
        try:
            yield ctx.call_activity("step", "bill")
        except Exception:
            return "recovered"

    [changed] = Replayer(registry(billing=billing_catches)).replay({"f": failed})
    assert changed.error_type == ND and "returning" in changed.message


def test_code_that_returns_earlier_than_the_history_shows_is_flagged():
    def shipping_short(ctx):
        yield ctx.call_activity("step", "pack")
        return "no shipping today"

    results = Replayer(registry(shipping=shipping_short)).replay({
        "waiting": run(V1, "shipping", instance_id="waiting"),  # the history waits for "go": still running
        "done": run(V1, "shipping", events=["go"], instance_id="done"),
    })
    assert [r.error_type for r in results] == [ND, ND]
    assert "still running" in results[0].message


def test_code_that_still_waits_where_the_history_completed_is_flagged():
    def billing_waits(ctx):
        result = yield ctx.call_activity("step", "bill")
        yield ctx.wait_for_external_event("approve")
        return result

    [result] = Replayer(registry(billing=billing_waits)).replay({"b": run(V1, "billing")})
    assert result.error_type == ND and "still waiting" in result.message


def test_replay_does_not_use_the_default_registry_when_given_one():
    [result] = Replayer(Registry()).replay({"b": run(V1, "billing")})
    assert result.error_type == "OrchestratorNotFound" and "nothing is registered" in result.message


def test_bad_input_is_refused_naming_it():
    with pytest.raises(DurableTypeError, match="expected \\(instance_id, list of history events\\)"):
        Replayer(V1).replay([run(V1, "billing")])
    with pytest.raises(DurableTypeError, match="'x' holds 'not an event'"):
        Replayer(V1).replay({"x": ["not an event"]})
    with pytest.raises(DurableTypeError, match="registry must be"):
        Replayer({"billing": billing})  # type: ignore[arg-type]


def test_events_after_the_last_episode_are_new_to_the_code_which_may_finish_on_them():
    history = run(V1, "billing")[:-3]  # the activity's answer recorded, its episode not yet run
    assert isinstance(history[-1], TaskCompleted)
    assert Replayer(V1).replay({"b": history}) == [ReplayResult("b", "billing")]


# -- with the versioning work: versions, patches and input digests are checked too ------------------

VERSIONED = "version" in inspect.signature(Registry.add_orchestrator).parameters
DIGESTS = "input_digest" in getattr(TaskScheduled, "__dataclass_fields__", {})
needs_versions = pytest.mark.skipif(not VERSIONED, reason="needs @orchestrator(version=...)")


def billing_v2(ctx):
    first = yield ctx.call_activity("step", "bill")
    second = yield ctx.call_activity("step", "receipt")
    return [first, second]


@needs_versions
def test_an_instance_recorded_on_a_version_the_code_no_longer_has_is_flagged_naming_it():
    old = Registry()
    old.add_orchestrator(billing, "billing", version=1)
    history = run(old, "billing")
    new = Registry()
    new.add_orchestrator(billing_v2, "billing", version=2)
    [result] = Replayer(new).replay({"b": history})
    assert not result.ok and "version 1" in result.message, result
    both = Registry()
    both.add_orchestrator(billing, "billing", version=1)
    both.add_orchestrator(billing_v2, "billing", version=2)
    assert Replayer(both).replay({"b": history}) == [ReplayResult("b", "billing")]


@needs_versions
def test_a_patch_keeps_old_instances_on_the_old_branch_and_removing_it_is_flagged():
    def billing_patched(ctx):
        if ctx.is_patched("receipt"):
            yield ctx.call_activity("step", "receipt")
        result = yield ctx.call_activity("step", "bill")
        return result

    patched = registry(billing=billing_patched)
    old, new = run(V1, "billing", instance_id="old"), run(patched, "billing", instance_id="new")
    assert Replayer(patched).replay({"old": old, "new": new}) == [
        ReplayResult("old", "billing"), ReplayResult("new", "billing"),
    ]
    [dropped] = Replayer(V1).replay({"new": new})  # the patch's branch taken out too early
    assert dropped.error_type == ND


@pytest.mark.skipif(not DIGESTS, reason="needs input digests in history")
def test_a_changed_activity_input_for_the_same_task_is_flagged():
    def shipping_weighs_first(ctx):
        yield ctx.call_activity("step", "weigh")  # was "pack": same activity, another input
        yield ctx.wait_for_external_event("go")
        yield ctx.call_activity("step", "ship")
        return "shipped"

    [result] = Replayer(registry(shipping=shipping_weighs_first)).replay({"s": run(V1, "shipping")})
    assert result.error_type == ND, result
