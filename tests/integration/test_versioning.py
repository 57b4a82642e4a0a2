"""Changing orchestrator code while instances run, on a real hub: an instance keeps the version
it started on after a newer one is registered, new starts take the latest, continue_as_new
moves to the latest, and is_patched keeps its answer across turns."""

from __future__ import annotations

import threading

import pytest

from orchestrations import activity, orchestrator
from runtime import OrchestrationRuntimeStatus as S
from tests.helpers import wait_until

pytestmark = pytest.mark.integration


@activity(name="itv_label")
def label(x: str) -> str:
    return f"label-{x}"


@orchestrator(name="itv_shipping", version=1)
def shipping_v1(ctx):
    text = yield ctx.call_activity("itv_label", ctx.get_input())
    yield ctx.wait_for_external_event("picked")
    return f"v1:{text}"


def shipping_v2(ctx):
    text = yield ctx.call_activity("itv_label", ctx.get_input().upper())
    yield ctx.wait_for_external_event("picked")
    return f"v2:{text}"


@orchestrator(name="itv_loop", version=1)
def loop_v1(ctx):
    yield ctx.wait_for_external_event("go")
    ctx.continue_as_new("again")
    return None


def loop_v2(ctx):
    return f"v2 with {ctx.get_input()}"


@orchestrator(name="itv_stay", version=1)
def stay_v1(ctx):
    if ctx.get_input() == "again":
        return "stayed on v1"
    ctx.continue_as_new("again", version=1)
    return None


@orchestrator(name="itv_stay", version=2)
def stay_v2(ctx):
    return "v2"


@orchestrator(name="itv_patched")
def patched(ctx):
    yield ctx.wait_for_external_event("go")
    return ctx.is_patched("after-go")


@orchestrator(name="itv_unstorable", version=3)
def unstorable(ctx):
    yield ctx.call_activity("itv_label", threading.Lock())  # an input no shard can store


def recorded(hub, iid, event_type):
    return [e for e in hub.get_history(iid) if e.event_type == event_type]


def test_an_instance_started_on_v1_completes_on_v1_after_v2_is_registered(hub):
    old = hub.start_new("itv_shipping", client_input="a")
    wait_until(lambda: recorded(hub, old, "TaskCompleted"))  # v1 waits for "picked" now
    orchestrator(name="itv_shipping", version=2)(shipping_v2)
    new = hub.start_new("itv_shipping", client_input="b")  # ships the registry with v2
    pinned = hub.start_new(shipping_v1, client_input="c")  # a decorated function: its version
    for iid in (old, new, pinned):
        hub.raise_event(iid, "picked")
    assert hub.wait_for_completion(old, timeout=60).output == "v1:label-a"
    assert hub.wait_for_completion(new, timeout=60).output == "v2:label-B"
    assert hub.wait_for_completion(pinned, timeout=60).output == "v1:label-c"


def test_continue_as_new_moves_to_the_latest_version(hub):
    iid = hub.start_new("itv_loop")
    wait_until(lambda: hub.get_status(iid).runtime_status is S.Running and recorded(hub, iid, "OrchestratorCompleted"))
    orchestrator(name="itv_loop", version=2)(loop_v2)
    hub.start_new("itv_loop")  # ships the registry with v2 (this instance completes on v2 at once)
    hub.raise_event(iid, "go")
    status = hub.wait_for_completion(iid, timeout=60)
    assert (status.runtime_status, status.output) == (S.Completed, "v2 with again")


def test_continue_as_new_may_stay_on_a_named_version(hub):
    iid = hub.start_new(stay_v1)
    assert hub.wait_for_completion(iid, timeout=60).output == "stayed on v1"
    assert hub.wait_for_completion(hub.start_new("itv_stay"), timeout=60).output == "v2"


def test_is_patched_decides_once_across_turns(hub):
    iid = hub.start_new("itv_patched")
    wait_until(lambda: recorded(hub, iid, "OrchestratorCompleted"))
    hub.raise_event(iid, "go")
    assert hub.wait_for_completion(iid, timeout=60).output is True
    assert [e.name for e in recorded(hub, iid, "PatchApplied")] == ["after-go"]


def test_a_first_episode_failed_for_an_unstorable_value_keeps_its_versioned_start(hub):
    """The runtime keeps the episode's received events when it fails an episode from outside;
    the start it keeps is the one recorded with the version chosen."""
    iid = hub.start_new("itv_unstorable")
    status = hub.wait_for_completion(iid, timeout=60)
    assert (status.runtime_status, status.failure_details.error_type) == (S.Failed, "PayloadError")
    assert hub.get_history(iid)[0].event_type == "ExecutionStarted"
