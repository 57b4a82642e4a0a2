"""rewind (re-run a failed instance from its last good state) and restart (same name and input)."""

from __future__ import annotations

from pathlib import Path

import pytest

from entities import EntityContext, EntityId, entity
from orchestrations import InstanceNotFoundError, activity, orchestrator
from runtime import OrchestrationRuntimeStatus as S

pytestmark = pytest.mark.integration


@activity(name="rt_fails_once")
def fails_once(path: str) -> str:
    """Fails the first time it runs for ``path``, succeeds after (counted in a file)."""
    marker = Path(path)
    runs = int(marker.read_text()) + 1 if marker.exists() else 1
    marker.write_text(str(runs))
    if runs == 1:
        raise ConnectionError("the service was down")
    return f"ok after {runs} runs"


@activity(name="rt_step")
def step(x: int) -> int:
    return x + 1


@orchestrator(name="rt_pipeline")
def pipeline(ctx):
    a = yield ctx.call_activity(step, 1)
    b = yield ctx.task_all([ctx.call_activity(fails_once, ctx.get_input()), ctx.call_activity(step, a)])
    return a, b


@entity(name="rt_box")
def box(ctx: EntityContext) -> None:
    items = ctx.get_state(list)
    if ctx.operation_name == "add":
        items.append(ctx.get_input())
    ctx.set_state(items)


BOX = EntityId("rt_box", "b")


@orchestrator(name="rt_fails_in_section")
def fails_in_section(ctx):
    with (yield ctx.lock_entities([BOX])):
        yield ctx.call_entity(BOX, "add", "first")
        yield ctx.call_activity(fails_once, ctx.get_input())
        yield ctx.call_entity(BOX, "add", "second")


@orchestrator(name="rt_echo")
def echo(ctx):
    return {"input": ctx.get_input(), "id": ctx.instance_id}


def test_rewind_reruns_the_failed_activity_and_completes(hub, tmp_path):
    iid = hub.start_new(pipeline, client_input=str(tmp_path / "once"))
    failed = hub.wait_for_completion(iid, timeout=30)
    assert failed.runtime_status is S.Failed and failed.failure_details.error_type == "TaskFailedError"
    assert "Caused by ConnectionError" in failed.failure_details.details
    hub.rewind(iid, "the service is back")
    status = hub.wait_for_completion(iid, timeout=30)
    assert (status.runtime_status, status.output) == (S.Completed, (2, ["ok after 2 runs", 3]))
    types = [e.event_type for e in hub.get_history(iid)]
    assert "ExecutionRewound" in types and "TaskFailed" not in types
    assert types.count("TaskScheduled") == 3  # nothing already done ran again
    assert types[-1] == "ExecutionCompleted"


def test_rewind_refuses_an_instance_that_did_not_fail(hub):
    iid = hub.start_new(echo, client_input=1)
    hub.wait_for_completion(iid, timeout=30)
    with pytest.raises(ValueError, match=f"only a Failed instance can be rewound; '{iid}' is Completed"):
        hub.rewind(iid)
    with pytest.raises(InstanceNotFoundError):
        hub.rewind("no-such-instance")


def test_rewind_refuses_an_instance_that_failed_inside_a_critical_section(hub, tmp_path):
    # a helper found it: the rewound instance went on inside its section without the lock,
    # which its failure had released (another section ran in the middle of it)
    iid = hub.start_new(fails_in_section, client_input=str(tmp_path / "once"))
    assert hub.wait_for_completion(iid, timeout=30).runtime_status is S.Failed
    with pytest.raises(ValueError, match=r"failed inside a critical section on \['@rt_box@b'\]: its locks were"):
        hub.rewind(iid)
    assert hub.get_status(iid).runtime_status is S.Failed
    assert [(m.entity_id, m.locked_by) for m in hub.list_entities("rt_box")] == [(BOX, None)]
    again = hub.restart(iid)  # what the error suggests: it runs whole again, under its lock
    assert hub.wait_for_completion(again, timeout=30).runtime_status is S.Completed
    assert hub.read_entity_state(BOX).entity_state == ["first", "first", "second"]


def test_restart_with_a_new_id_and_with_the_same_id(hub):
    first = hub.start_new(echo, instance_id="restart-me", client_input={"x": 1})
    hub.wait_for_completion(first, timeout=30)
    second = hub.restart(first)
    assert second != first
    assert hub.wait_for_completion(second, timeout=30).output == {"input": {"x": 1}, "id": second}
    same = hub.restart(first, restart_with_new_instance_id=False)
    assert same == first
    assert hub.wait_for_completion(first, timeout=30).output == {"input": {"x": 1}, "id": first}
    with pytest.raises(InstanceNotFoundError):
        hub.restart("never-existed")
