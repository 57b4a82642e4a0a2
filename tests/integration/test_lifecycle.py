"""Lifecycle, queries and bad input against a real hub: terminate, suspend/resume, purge,
paging, instance-id and reuse rules, timeouts, reopening a hub from its files."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
import ray

from orchestrations import (
    DurableValueError,
    InstanceAlreadyExistsError,
    InstanceNotFoundError,
    ShardMismatchError,
    orchestrator,
)
from runtime import OrchestrationRuntimeStatus as S
from runtime import TaskHub
from runtime._hub_file import default_num_shards

from ..conftest import ALWAYS_REPLAY

pytestmark = pytest.mark.integration
#: checks made by the client or the hub, before any orchestrator code runs: the replay run skips them
hub_level = pytest.mark.skipif(ALWAYS_REPLAY, reason="checked before orchestrator code runs: the normal run covers it")


@orchestrator(name="lc_wait")
def wait_for_go(ctx):
    ctx.set_custom_status("waiting")
    value = yield ctx.wait_for_external_event("go")
    return value


@orchestrator(name="lc_echo")
def echo(ctx):
    return ctx.get_input()


@orchestrator(name="lc_replay_probe")
def replay_probe(ctx):
    seen = [ctx.is_replaying]
    yield ctx.create_timer(timedelta(milliseconds=10))
    seen.append(ctx.is_replaying)
    yield ctx.create_timer(timedelta(milliseconds=10))
    return seen


def test_terminate_a_waiting_instance(hub):
    iid = hub.start_new(wait_for_go)
    hub.terminate(iid, "no longer needed")
    status = hub.wait_for_completion(iid, timeout=30)
    assert (status.runtime_status, status.output) == (S.Terminated, "no longer needed")
    hub.terminate(iid, "again")  # no effect on a finished instance
    assert hub.get_status(iid).output == "no longer needed"


def test_suspend_holds_events_until_resume(hub):
    iid = hub.start_new(wait_for_go)
    hub.suspend(iid, "hold on")
    hub.raise_event(iid, "go", 7)
    status = hub.get_status(iid)
    assert status.runtime_status is S.Suspended  # committed: the event is held, not applied
    hub.resume(iid, "carry on")
    status = hub.wait_for_completion(iid, timeout=30)
    assert (status.runtime_status, status.output) == (S.Completed, 7)
    types = [e.event_type for e in hub.get_history(iid)]
    assert types.index("ExecutionSuspended") < types.index("EventRaised") < types.index("ExecutionResumed")


def test_custom_status_is_visible_while_running(hub):
    iid = hub.start_new(wait_for_go)
    assert hub.get_status(iid).custom_status == "waiting"
    assert hub.get_status(iid).runtime_status is S.Running
    hub.raise_event(iid, "go", 1)
    hub.wait_for_completion(iid, timeout=30)


def test_wait_for_completion_times_out(hub):
    iid = hub.start_new(wait_for_go)
    with pytest.raises(TimeoutError, match=iid):
        hub.wait_for_completion(iid, timeout=0.2)
    hub.terminate(iid)


def test_instance_reuse_rules(hub):
    hub.start_new(wait_for_go, instance_id="reuse-me")
    with pytest.raises(InstanceAlreadyExistsError, match="reuse-me"):
        hub.start_new(echo, instance_id="reuse-me", client_input=1)
    hub.raise_event("reuse-me", "go", "first")
    assert hub.wait_for_completion("reuse-me", timeout=30).output == "first"
    hub.start_new(echo, instance_id="reuse-me", client_input="second")  # Completed: replaced
    status = hub.wait_for_completion("reuse-me", timeout=30)
    assert (status.name, status.output) == ("lc_echo", "second")
    assert [e.event_type for e in hub.get_history("reuse-me")] == [  # the old history is gone
        "ExecutionStarted", "OrchestratorStarted", "OrchestratorCompleted", "ExecutionCompleted"
    ]


@hub_level
@pytest.mark.parametrize("bad", ["", "@entity", "a/b", "a\\b", "a#b", "a?b", "a\nb", "x" * 257])
def test_bad_instance_ids_are_refused_before_anything_is_written(hub, bad):
    with pytest.raises(ValueError, match="instance id"):
        hub.start_new(echo, instance_id=bad)
    assert hub.list_instances(page_size=None).instances == hub.list_instances(page_size=None).instances


@hub_level
def test_bad_input_is_refused_at_the_call(hub):
    with pytest.raises(ValueError, match="no orchestrator named 'nope'"):
        hub.start_new("nope")
    with pytest.raises(ValueError, match=r"client_input .*lock.* cannot be serialized"):
        hub.start_new(echo, instance_id="never-written", client_input=threading.Lock())
    assert hub.get_status("never-written") is None
    with pytest.raises(ValueError, match="timeout"):
        hub.wait_for_completion("whatever", timeout=-1)
    with pytest.raises(TypeError, match="inputs must be a list with one input per instance, got 5"):
        hub.start_new_batch(echo, 5)  # a bare "'int' object is not iterable" before
    with pytest.raises(InstanceNotFoundError, match="missing-id"):
        hub.raise_event("missing-id", "go")
    with pytest.raises(InstanceNotFoundError, match="missing-id"):
        hub.get_history("missing-id")
    assert hub.get_status("missing-id") is None


@hub_level
@pytest.mark.parametrize("name", ["../evil", "a/b", "", "a\\b", "x" * 65])
def test_bad_hub_names_are_refused(ray_session, tmp_path, name):
    with pytest.raises(ValueError, match="hub name"):
        TaskHub(name, data_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


@hub_level
def test_reopen_with_other_shard_count_is_refused(ray_session, tmp_path):
    TaskHub("shards", data_dir=tmp_path, num_shards=2).close()
    with pytest.raises(ShardMismatchError, match="num_shards=2"):
        TaskHub("shards", data_dir=tmp_path, num_shards=3)


@hub_level
def test_a_hub_opened_without_num_shards_gets_one_per_cpu_and_reopens_with_it(ray_session, tmp_path):
    with TaskHub("default-shards", data_dir=tmp_path) as first:
        assert first.num_shards == default_num_shards(ray.cluster_resources()["CPU"])
        iid = first.start_new(wait_for_go)
    with TaskHub("default-shards", data_dir=tmp_path) as second:
        assert second.num_shards == first.num_shards
        second.raise_event(iid, "go", "reopened")
        assert second.wait_for_completion(iid, timeout=30).output == "reopened"


@hub_level
def test_a_hub_reopens_without_num_shards_with_the_count_it_was_created_with(ray_session, tmp_path):
    # created with a count the CPUs would not give it (as if the cluster had more or fewer CPUs then)
    other = default_num_shards(ray.cluster_resources()["CPU"]) + 1
    TaskHub("recorded-shards", data_dir=tmp_path, num_shards=other).close()
    with TaskHub("recorded-shards", data_dir=tmp_path) as hub:
        assert hub.num_shards == other
        assert hub.wait_for_completion(hub.start_new(echo, client_input=7), timeout=30).output == 7


def test_an_instance_survives_closing_and_reopening_the_hub(ray_session, tmp_path):
    with TaskHub("reopen", data_dir=tmp_path, num_shards=2) as first:
        iid = first.start_new(wait_for_go)
        assert first.get_status(iid).runtime_status is S.Running
    with TaskHub("reopen", data_dir=tmp_path, num_shards=2) as second:
        second.raise_event(iid, "go", "after reopen")
        assert second.wait_for_completion(iid, timeout=30).output == "after reopen"


def test_always_replay_switch_replays_every_turn(hub):
    status = hub.wait_for_completion(hub.start_new(replay_probe), timeout=30)
    # the output is built by the last episode: with always_replay that episode re-ran the
    # earlier ones from history, so both records were made while replaying
    assert status.output == ([True, True] if ALWAYS_REPLAY else [False, False])


def test_status_with_history(hub):
    iid = hub.start_new(echo, client_input={"a": 1})
    hub.wait_for_completion(iid, timeout=30)
    full = hub.get_status(iid, show_history=True, show_history_output=True)
    assert [e.event_type for e in full.history][-1] == "ExecutionCompleted"
    assert full.history[-1].result == {"a": 1}
    bare = hub.get_status(iid, show_history=True, show_history_output=False, show_input=False)
    assert bare.input_ is None and bare.history[-1].result is None


def test_queries_paging_and_purge(ray_session, tmp_path):
    with TaskHub("queries", data_dir=tmp_path, num_shards=3) as hub:
        before = datetime.now(UTC)
        ids = hub.start_new_batch(echo, range(25))
        for iid in ids:
            hub.wait_for_completion(iid, timeout=30)
        waiting = hub.start_new(wait_for_go)
        everything = hub.get_status_by()
        assert {s.instance_id for s in everything} == {*ids, waiting}
        assert [s.created_time for s in everything] == sorted(s.created_time for s in everything)
        done = hub.get_status_by(runtime_status=[S.Completed])
        assert len(done) == 25
        # one status, or its name: not the letters of "Completed" (a DurableTypeError on 'C')
        assert hub.get_status_by(runtime_status=S.Completed) == done
        assert hub.get_status_by(runtime_status="completed") == done
        assert len(hub.get_status_by(runtime_status=[])) == 26  # no filter, as in durabletask (it matched nothing)
        with pytest.raises(ValueError, match="'Done' is not a status; the statuses are Pending, Running"):
            hub.get_status_by(runtime_status="Done")
        assert hub.get_status_by(created_time_from=datetime.now(UTC) + timedelta(hours=1)) == []
        assert len(hub.get_status_by(created_time_from=before)) == 26

        seen, token, pages = [], None, 0
        while True:
            page = hub.list_instances(page_size=7, continuation_token=token)
            seen += [s.instance_id for s in page.instances]
            pages += 1
            token = page.continuation_token
            if token is None:
                break
        assert pages == 4 and len(seen) == 26 and len(set(seen)) == 26

        assert hub.purge_instance_history(waiting).instances_deleted == 0  # running: kept
        assert hub.purge_instance_history(ids[0]).instances_deleted == 1
        assert hub.get_status(ids[0]) is None
        result = hub.purge_instance_history_by(runtime_status=[S.Completed])
        assert result.instances_deleted == 24
        assert [s.instance_id for s in hub.get_status_by()] == [waiting]
        with pytest.raises(DurableValueError, match="continuation token"):
            hub.list_instances(continuation_token="garbage")


def test_a_retried_start_is_applied_once(hub):
    """What Ray does when a shard host dies mid-call: the same start arrives again."""
    msg = hub._start_message(wait_for_go, "retried-start", None)
    hub._submit([msg])
    history_before = [e.event_type for e in hub.get_history("retried-start")]
    hub._submit([msg])  # same execution id: acknowledged, nothing changes
    assert [e.event_type for e in hub.get_history("retried-start")] == history_before
    hub.raise_event("retried-start", "go", "once")
    assert hub.wait_for_completion("retried-start", timeout=30).output == "once"
