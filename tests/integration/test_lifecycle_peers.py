"""Lifecycle behaviours the peers' own test suites expect, on a real local Ray with real SQLite
shards: recursive terminate, purge and rewind across shards, scheduled signals and starts (and
their survival of a restart), waiting for a start, status and purge of a list of ids, and
instance-id prefix queries. Each test names the peer test it ports."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from entities import EntityContext, EntityId, entity
from orchestrations import InstanceNotFoundError, activity, orchestrator
from orchestrations._ids import shard_of
from runtime import OrchestrationRuntimeStatus as S
from runtime import TaskHub
from runtime._readonly import HubFiles

from ..conftest import ALWAYS_REPLAY
from ..helpers import wait_until

pytestmark = pytest.mark.integration


def on_shard(name: str, shard: int, num_shards: int = 2) -> str:
    """An instance id starting with ``name`` that lives on shard ``shard``."""
    return next(f"{name}-{i}" for i in range(1000) if shard_of(f"{name}-{i}", num_shards) == shard)


def parked(hub: TaskHub) -> int:
    return sum(s["parked"] for s in hub.stats())


# -- code under test --------------------------------------------------------------------------------


@orchestrator(name="lp_root")
def root(ctx):
    child, grandchild = ctx.get_input()
    return (yield ctx.call_sub_orchestrator(middle, grandchild, instance_id=child))


@orchestrator(name="lp_middle")
def middle(ctx):
    return (yield ctx.call_sub_orchestrator(leaf, None, instance_id=ctx.get_input()))


@orchestrator(name="lp_leaf")
def leaf(ctx):
    return (yield ctx.wait_for_external_event("my_event"))


@orchestrator(name="lp_echo")
def echo(ctx):
    return ctx.get_input()


@activity(name="lp_flaky")
def flaky(args: dict) -> str:
    """Fails its first run for ``args["path"]`` (runs counted in that file), succeeds after."""
    marker = Path(args["path"])
    runs = int(marker.read_text()) + 1 if marker.exists() else 1
    marker.write_text(str(runs))
    if runs == 1:
        raise RuntimeError("Child failure")
    return f"child:{args['data']}"


@orchestrator(name="lp_rw_parent")
def rw_parent(ctx):
    args = ctx.get_input()
    result = yield ctx.call_sub_orchestrator(rw_middle, args, instance_id=args["child"])
    return f"parent:{result}"


@orchestrator(name="lp_rw_middle")
def rw_middle(ctx):
    args = ctx.get_input()
    return (yield ctx.call_sub_orchestrator(rw_leaf, args, instance_id=args["grandchild"]))


@orchestrator(name="lp_rw_leaf")
def rw_leaf(ctx):
    return (yield ctx.call_activity(flaky, ctx.get_input()))


@orchestrator(name="lp_rw_late")
def rw_late(ctx):
    args = ctx.get_input()
    late = ctx.call_sub_orchestrator(leaf, None, instance_id=args["child"])
    first = yield ctx.call_activity(flaky, args)  # fails its first run: the parent fails, the child runs on
    return [first, (yield late)]


@entity(name="LpRecorder")
def recorder(ctx: EntityContext) -> None:
    """Records when each ``ping`` ran (wall clock: entities are not replayed)."""
    times = ctx.get_state(list)
    if ctx.operation_name == "ping":
        times.append(time.time())
    ctx.set_state(times)


@orchestrator(name="lp_signal_later")
def signal_later(ctx):
    at = ctx.current_utc_datetime + timedelta(seconds=1)
    ctx.signal_entity(EntityId("LpRecorder", ctx.get_input()), "ping", scheduled_time=at)
    return at


@orchestrator(name="lp_scheduled")
def scheduled(ctx):
    started_at = ctx.current_utc_datetime
    value = yield ctx.wait_for_external_event("go")
    return {"started_at": started_at, "value": value}


@orchestrator(name="lp_fails")
def fails(ctx):
    raise ValueError(f"unrelated failure of {ctx.instance_id}")


@orchestrator(name="lp_late_parent")
def late_parent(ctx):
    yield ctx.create_timer(ctx.current_utc_datetime + timedelta(seconds=0.5))
    return (yield ctx.call_sub_orchestrator(echo, "from the parent", instance_id=ctx.get_input()))


@orchestrator(name="lp_started_at")
def started_at(ctx):
    return ctx.current_utc_datetime


# -- terminate and purge, recursive -----------------------------------------------------------------


def start_tree(hub: TaskHub, name: str) -> tuple[str, str, str]:
    """root (shard 0) -> middle (shard 1) -> leaf (shard 0) waiting for "my_event"."""
    ids = on_shard(f"{name}-root", 0), on_shard(f"{name}-child", 1), on_shard(f"{name}-grand", 0)
    hub.start_new(root, ids[0], [ids[1], ids[2]])
    wait_until(lambda: (s := hub.get_status(ids[2])) is not None and s.runtime_status is S.Running)
    return ids


def test_terminate_recursive(hub):
    # microsoft/durabletask-python tests/durabletask/test_orchestration_e2e.py::test_terminate_recursive
    ids = start_tree(hub, "tr")
    assert hub.wait_for_orchestration_start(ids[0], timeout=30).runtime_status is S.Running
    hub.terminate(ids[0], "some reason for termination")  # recursive by default
    for iid in ids:  # the child on the other shard, and its child back on this one
        status = hub.wait_for_completion(iid, timeout=30)
        assert (status.runtime_status, status.output) == (S.Terminated, "some reason for termination")
    assert hub.purge_instance_history(ids[0]).instances_deleted == 3  # recursive by default too
    assert hub.get_status(list(ids)) == [None, None, None]


def test_terminate_not_recursive_and_purge_not_recursive(hub):
    # microsoft/durabletask-python tests/durabletask/test_purge.py
    #   ::test_sync_purge_orchestration_request_and_result (recursive None/True/False)
    ids = start_tree(hub, "tn")
    hub.terminate(ids[0], "only the root", recursive=False)
    assert hub.wait_for_completion(ids[0], timeout=30).runtime_status is S.Terminated
    assert [s.runtime_status for s in hub.get_status(list(ids[1:]))] == [S.Running, S.Running]
    # a running child is never purged, recursive or not: only the finished root goes
    assert hub.purge_instance_history(ids[0]).instances_deleted == 1
    assert hub.get_status(ids[1]).runtime_status is S.Running
    hub.raise_event(ids[2], "my_event", "late")
    assert hub.wait_for_completion(ids[1], timeout=30).output == "late"  # its answer to the root is dropped
    assert hub.purge_instance_history(ids[1], recursive=False).instances_deleted == 1
    assert hub.get_status(ids[2]).runtime_status is S.Completed
    assert hub.purge_instance_history([ids[2], ids[1], "lp-never-existed"]).instances_deleted == 1


def test_purge_of_a_list_counts_only_finished_instances(hub):
    # microsoft/durabletask-python tests/durabletask/test_orchestration_e2e.py::test_terminate_recursive
    # (its closing purge), on a list of ids as DF .NET's purge of several instances
    done = [hub.start_new(echo, on_shard("pl-done", shard), shard) for shard in (0, 1)]
    for iid in done:
        hub.wait_for_completion(iid, timeout=30)
    running = hub.start_new(leaf, "pl-running")
    assert hub.purge_instance_history((*done, running)).instances_deleted == 2
    assert hub.get_status([*done, running])[:2] == [None, None]
    hub.terminate(running)


# -- rewind, recursive --------------------------------------------------------------------------------


def failed_tree(hub: TaskHub, tmp_path: Path, name: str) -> dict:
    args = {
        "path": str(tmp_path / f"{name}-runs"), "data": "data",
        "child": on_shard(f"{name}-child", 1), "grandchild": on_shard(f"{name}-grand", 0),
    }
    parent = hub.start_new(rw_parent, on_shard(f"{name}-parent", 0), args)
    assert hub.wait_for_completion(parent, timeout=30).runtime_status is S.Failed  # it fails last
    assert [s.runtime_status for s in hub.get_status([args["child"], args["grandchild"]])] == [S.Failed, S.Failed]
    return {**args, "parent": parent}


def test_rewind_with_sub_orchestration(hub, tmp_path):
    # microsoft/durabletask-python tests/durabletask/test_rewind_e2e.py::test_rewind_with_sub_orchestration
    # Azure/durabletask test/DurableTask.Core.Tests/RewindTests.cs
    #   ::Rewind_FailedSubOrchestration_RetainsCreationAndEmitsChildRewindMessage (end to end, two levels)
    tree = failed_tree(hub, tmp_path, "rw")
    hub.rewind(tree["parent"], "sub-orch fix")
    status = hub.wait_for_completion(tree["parent"], timeout=30)
    assert (status.runtime_status, status.output) == (S.Completed, "parent:child:data")
    assert Path(tree["path"]).read_text() == "2"  # the failed activity ran once more, nothing else
    for iid in (tree["child"], tree["grandchild"]):  # each level was rewound, not restarted
        types = [e.event_type for e in hub.get_history(iid)]
        assert types.count("ExecutionStarted") == 1 and "ExecutionRewound" in types
        assert "SubOrchestrationInstanceFailed" not in types and "TaskFailed" not in types
    # a purge by filter reaches the children too, though their ids do not match the filter
    assert hub.purge_instance_history_by(instance_id_prefix="rw-parent").instances_deleted == 3
    assert hub.get_status([tree["parent"], tree["child"], tree["grandchild"]]) == [None, None, None]


def test_rewind_starts_a_purged_child_again_with_its_recorded_input(hub, tmp_path):
    # Azure/durabletask RewindTests.cs (the child rewind message), for a child that was purged: the
    # brief's DurableTask.Core semantics, restarting it from its SubOrchestrationInstanceCreated
    tree = failed_tree(hub, tmp_path, "rp")
    assert hub.purge_instance_history(tree["child"], recursive=False).instances_deleted == 1
    hub.rewind(tree["parent"])
    status = hub.wait_for_completion(tree["parent"], timeout=30)
    assert (status.runtime_status, status.output) == (S.Completed, "parent:child:data")
    child = hub.get_status(tree["child"])
    assert child.runtime_status is S.Completed and child.input_["data"] == "data"
    assert Path(tree["path"]).read_text() == "2"


@pytest.mark.parametrize("holder", ["completed", "failed"])
def test_a_rewind_leaves_alone_an_unrelated_instance_that_took_its_childs_id(hub, tmp_path, holder):
    # found porting Azure/durabletask AzureStorageScenarioTests' Rewind* scenarios: the rewind asked
    # whatever instance held the child's id, so the parent completed with an unrelated instance's
    # output, or (that instance Failed) rewound the unrelated instance and waited for ever
    tree = failed_tree(hub, tmp_path, f"ru{holder[0]}")
    child = tree["child"]
    assert hub.purge_instance_history(child, recursive=False).instances_deleted == 1
    code = echo if holder == "completed" else fails
    unrelated = hub.wait_for_completion(hub.start_new(code, child, "mine"), timeout=30)
    hub.rewind(tree["parent"])
    status = hub.wait_for_completion(tree["parent"], timeout=30)
    assert status.runtime_status is S.Failed
    assert f"cannot ask sub-orchestration {child!r} again" in status.failure_details.message
    holder_named = f"a {code.__durable_name__!r} instance that is {unrelated.runtime_status.value}"
    assert holder_named in status.failure_details.message
    after = hub.get_status(child)
    assert (after.runtime_status, after.output, after.last_updated_time) == (
        unrelated.runtime_status, unrelated.output, unrelated.last_updated_time
    )
    assert "ExecutionRewound" not in [e.event_type for e in hub.get_history(child)]


def test_rewind_asks_again_a_child_that_finished_while_the_parent_was_failed(hub, tmp_path):
    # microsoft/durabletask-python tests/durabletask/test_build_rewind_result.py
    #   ::test_rewind_preserves_successful_sub_orchestration, for a child whose answer came while
    #   the parent was Failed (dropped then): rewinding must not leave the parent waiting forever
    args = {"path": str(tmp_path / "rl-runs"), "data": "data", "child": on_shard("rl-child", 1)}
    parent = hub.start_new(rw_late, on_shard("rl-parent", 0), args)
    assert hub.wait_for_completion(parent, timeout=30).runtime_status is S.Failed
    # the child's start travels through the parent shard's outbox: it may land after the parent
    # failed (seen under load on two test workers), so the event waits until the child exists
    wait_until(lambda: hub.get_status(args["child"]) is not None, timeout=30)
    hub.raise_event(args["child"], "my_event", "late answer")
    assert hub.wait_for_completion(args["child"], timeout=30).output == "late answer"
    hub.rewind(parent)
    status = hub.wait_for_completion(parent, timeout=30)
    assert (status.runtime_status, status.output) == (S.Completed, ["child:data", "late answer"])


# -- scheduled signals -------------------------------------------------------------------------------


def recorded(hub: TaskHub, key: str) -> list[float]:
    state = hub.read_entity_state(EntityId("LpRecorder", key))
    return state.entity_state if state.entity_exists else []


def test_client_delayed_signal_is_deferred(hub):
    # microsoft/durabletask-python tests/durabletask/entities/test_delayed_signals_e2e.py
    #   ::test_client_delayed_signal_is_deferred
    signal_at = datetime.now(UTC) + timedelta(seconds=1)
    hub.signal_entity(EntityId("LpRecorder", "client-delay"), "ping", scheduled_time=signal_at)
    if time.time() < signal_at.timestamp():  # committed, parked: not run yet
        assert recorded(hub, "client-delay") == []
    times = wait_until(lambda: recorded(hub, "client-delay"))
    assert times[0] >= signal_at.timestamp()  # not before its time


def test_client_immediate_and_past_signals_run_at_once(hub):
    # microsoft/durabletask-python tests/durabletask/entities/test_delayed_signals_e2e.py
    #   ::test_client_immediate_signal_still_works
    # and the brief: a time in the past is now (the signal is applied in the turn that commits it)
    hub.signal_entity(EntityId("LpRecorder", "client-now"), "ping")
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    hub.signal_entity(EntityId("LpRecorder", "client-now"), "ping", scheduled_time=an_hour_ago)
    assert len(recorded(hub, "client-now")) == 2


def test_orchestration_delayed_signal_is_deferred(hub):
    # microsoft/durabletask-python tests/durabletask/entities/test_delayed_signals_e2e.py
    #   ::test_orchestration_delayed_signal_is_deferred
    # Two senders, one on each shard: one signal reaches the entity's shard through the outbox,
    # the other within the sender's own turn (a same-shard message); both must wait.
    ids = [hub.start_new(signal_later, on_shard("lp-signal-later", shard), "orch-delay") for shard in (0, 1)]
    outputs = []
    for iid in ids:
        status = hub.wait_for_completion(iid, timeout=30)
        assert status.runtime_status is S.Completed  # completes at once; the signal waits
        outputs.append(status.output)
        sent = [e for e in hub.get_history(iid) if e.event_type == "EntityOperationSignaled"]
        assert [e.scheduled_time for e in sent] == [status.output]  # recorded, so replay keeps it
    if time.time() < min(outputs).timestamp():
        assert recorded(hub, "orch-delay") == []
    times = wait_until(lambda: (found := recorded(hub, "orch-delay")) and len(found) == 2 and found)
    assert sorted(times) == times and all(t >= at.timestamp() for t, at in zip(times, sorted(outputs)))


# -- scheduled starts and waiting for a start ---------------------------------------------------------


def test_scheduled_start_is_pending_then_runs_at_its_time_with_held_events(hub):
    # microsoft/durabletask-netherite test/DurableTask.Netherite.Tests/ScenarioTests.cs
    #   ::ScheduledStart_Activity (ported there from Azure/durabletask AzureStorageScenarioTests)
    # Azure/azure-functions-durable-extension DotnetIsolatedE2E HttpEndToEndTests::ScheduledStartTests
    #   (Pending first, Completed after), durabletask-python's wait_for_orchestration_start
    before = datetime.now(UTC)
    start_at = before + timedelta(seconds=1)
    iid = hub.start_new(scheduled, "lp-scheduled", "input", start_at=start_at)
    pending = hub.get_status(iid)
    assert pending.runtime_status is S.Pending and pending.input_ == "input"
    assert before - timedelta(seconds=1) <= pending.created_time <= start_at
    hub.raise_event(iid, "go", "held")  # held until it starts, then delivered to it
    if time.time() < start_at.timestamp():
        assert hub.get_status(iid).runtime_status is S.Pending
    started = hub.wait_for_orchestration_start(iid, timeout=30)
    assert started.runtime_status in (S.Running, S.Completed)
    done = hub.wait_for_completion(iid, timeout=30)
    assert done.runtime_status is S.Completed and done.output["value"] == "held"
    assert done.output["started_at"] >= start_at  # its first episode ran at (not before) start_at
    assert done.created_time == pending.created_time


def test_wait_for_orchestration_start_of_instances_not_scheduled(hub):
    # microsoft/durabletask-python tests/durabletask/test_orchestration_e2e.py::test_terminate
    #   (wait_for_orchestration_start of a started instance returns it Running)
    iid = hub.start_new(leaf, "lp-not-scheduled")
    assert hub.wait_for_orchestration_start(iid, timeout=30).runtime_status is S.Running
    past = hub.start_new(echo, "lp-past", 1, start_at=datetime.now(UTC) - timedelta(minutes=1))
    assert hub.get_status(past).runtime_status is not S.Pending  # a time passed is now
    with pytest.raises(InstanceNotFoundError, match="lp-no-such"):
        hub.wait_for_orchestration_start("lp-no-such", timeout=0.3)  # after the timeout
    hub.terminate(iid)


def test_a_wait_for_a_child_the_parent_has_not_created_yet_waits_for_it(hub):
    # microsoft/durabletask-dotnet test/Grpc.IntegrationTests/OrchestrationPatterns.cs
    #   ::ScheduleSubOrchestrationWithTags (the client waits on the child's fixed id right after
    #   scheduling the parent); DurableTask.Core's WaitForOrchestrationAsync waits the same way
    for wait in (hub.wait_for_completion, hub.wait_for_orchestration_start):
        child = f"lp-late-child-{wait.__name__}"
        parent = hub.start_new(late_parent, client_input=child)
        assert hub.get_status(child) is None  # the parent creates it half a second from now
        status = wait(child, timeout=30)
        assert status.instance_id == child and status.runtime_status in (S.Running, S.Completed)
        assert hub.wait_for_completion(parent, timeout=30).output == "from the parent"
        assert hub.get_status(child).output == "from the parent"


def test_terminate_a_pending_instance(hub):
    # microsoft/durabletask-python tests/durabletask/test_orchestration_e2e.py::test_terminate, on an
    # instance that has not started (the brief: terminate of a Pending instance works)
    baseline = parked(hub)
    iid = hub.start_new(scheduled, "lp-pending-terminated", start_at=datetime.now(UTC) + timedelta(hours=1))
    hub.raise_event(iid, "go", "never delivered")
    assert parked(hub) == baseline + 2  # its start and the event held behind it
    with pytest.raises(TimeoutError, match="did not start"):
        hub.wait_for_orchestration_start(iid, timeout=0.2)
    hub.terminate(iid, "not needed after all")
    status = hub.wait_for_completion(iid, timeout=30)
    assert (status.runtime_status, status.output) == (S.Terminated, "not needed after all")
    assert hub.wait_for_orchestration_start(iid, timeout=30).runtime_status is S.Terminated
    assert parked(hub) == baseline  # its parked start and held event are gone
    assert hub.get_history(iid) == []  # it never ran


@pytest.mark.skipif(ALWAYS_REPLAY, reason="a restart empties the cache, so both runs replay it: the normal run does")
def test_scheduled_signal_and_start_survive_a_restart(ray_session, tmp_path):
    # microsoft/durabletask-python tests/durabletask/test_delayed_signal_normalization.py
    #   ::TestDelayedTimerLifecycle (a delayed operation and the backend's lifecycle), here across a
    #   restart: what was parked is in the shard file and is applied at its time by the next host
    with TaskHub("lp-restart", data_dir=tmp_path, num_shards=1, always_replay=ALWAYS_REPLAY) as first:
        naive_due = datetime.now(UTC).replace(tzinfo=None) + timedelta(seconds=2)  # naive: taken as UTC
        due = naive_due.replace(tzinfo=UTC)
        first.signal_entity(EntityId("LpRecorder", "restart"), "ping", scheduled_time=naive_due)
        iid = first.start_new(started_at, "lp-restart-start", start_at=due)
        assert first.get_status(iid).runtime_status is S.Pending
        closed_before_due = time.time() < due.timestamp()
    assert closed_before_due, "the machine is too slow for this test's 2 s margin"
    with TaskHub("lp-restart", data_dir=tmp_path, num_shards=1, always_replay=ALWAYS_REPLAY) as second:
        status = second.wait_for_completion(iid, timeout=30)
        assert status.runtime_status is S.Completed and status.output >= due
        times = wait_until(lambda: recorded(second, "restart"))
        assert len(times) == 1 and times[0] >= due.timestamp()


# -- status of a list, prefixes, paging, bad input ---------------------------------------------------


def test_get_instance_ids_by_prefix(hub, data_dir):
    # Azure/durabletask test/DurableTask.AzureStorage.Tests/AzureStorageScenarioTests.cs
    #   ::GetInstanceIdsByPrefix
    prefix = "0abb6ebb-d712-453a-97c4-6c7c1f78f49f"
    ids = [prefix, f"{prefix}_0_Foo", f"{prefix}_1_Bar", f"{prefix}_Foo", f"{prefix}_Bar"]
    for iid in [*ids, f"Foo_{prefix}"]:  # the last one must not be picked up
        hub.start_new(echo, iid, "Greetings!")
    for iid in ids:
        hub.wait_for_completion(iid, timeout=30)
    page = hub.list_instances(instance_id_prefix=prefix, page_size=len(ids))
    assert sorted(s.instance_id for s in page.instances) == sorted(ids)
    assert page.continuation_token is None
    assert sorted(s.instance_id for s in hub.get_status_by(instance_id_prefix=prefix)) == sorted(ids)

    seen, token = [], None
    while True:  # paging with a prefix: every id once, in creation order
        page = hub.list_instances(instance_id_prefix=prefix, page_size=2, continuation_token=token)
        seen += [s.instance_id for s in page.instances]
        token = page.continuation_token
        if token is None:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == len(ids)

    files = HubFiles(hub.name, data_dir)  # the CLI's read-only path shares the query
    try:
        assert sorted(s.instance_id for s in files.list_instances(instance_id_prefix=prefix).instances) == sorted(ids)
    finally:
        files.close()

    statuses = hub.get_status([ids[3], "lp-missing", ids[0]])
    assert [s.instance_id if s else None for s in statuses] == [ids[3], None, ids[0]]
    assert hub.purge_instance_history_by(instance_id_prefix=f"{prefix}_").instances_deleted == 4
    assert [s.instance_id for s in hub.get_status_by(instance_id_prefix=prefix)] == [prefix]


def test_bad_arguments_name_the_bad_value(hub):
    # written from the mistake: every new argument is checked before anything is sent
    counter = EntityId("LpRecorder", "bad")
    with pytest.raises(TypeError, match=r"scheduled_time .*'tomorrow'"):
        hub.signal_entity(counter, "ping", scheduled_time="tomorrow")
    with pytest.raises(TypeError, match=r"start_at .*5"):
        hub.start_new(echo, "lp-bad-start", start_at=5)
    assert hub.get_status("lp-bad-start") is None
    with pytest.raises(TypeError, match=r"recursive .*'yes'"):
        hub.terminate("lp-bad", recursive="yes")
    with pytest.raises(TypeError, match=r"recursive .*1"):
        hub.purge_instance_history("lp-bad", recursive=1)
    with pytest.raises(TypeError, match=r"instance_id_prefix .*7"):
        hub.list_instances(instance_id_prefix=7)
    with pytest.raises(ValueError, match="instance_id_prefix must not be empty"):
        hub.get_status_by(instance_id_prefix="")
    with pytest.raises(ValueError, match="instance_id_prefix '@x' matches no instance id"):
        hub.purge_instance_history_by(instance_id_prefix="@x")
    with pytest.raises(TypeError, match=r"list of them, got \{'a'\}"):
        hub.get_status({"a"})
    with pytest.raises(ValueError, match="instance id must not contain '/'"):
        hub.purge_instance_history(["lp-ok", "a/b"])
    with pytest.raises(ValueError, match="timeout"):
        hub.wait_for_orchestration_start("lp-bad", timeout=-1)
    for bad in (float("nan"), True, "5"):
        with pytest.raises(ValueError, match="timeout"):
            hub.wait_for_completion("lp-bad", timeout=bad)
    assert recorded(hub, "bad") == []
