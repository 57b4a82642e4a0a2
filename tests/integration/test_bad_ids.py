"""An entity id no shard can hold jams nothing.

- an orchestration's call, signal or lock of a malformed or too long entity id fails where it
  is made, with a ``ValueError`` naming the id, which the orchestration can catch;
- a message a receiving shard cannot accept (one an older sender left in its outbox) is
  answered with a failure to its sender and let go: it is not refused back to a sender that
  would send it again ahead of everything behind it;
- a turn that fails leaves the host's memory as the file is (no instance the file lacks).
"""

from __future__ import annotations

import pytest
import ray

from entities import EntityContext, EntityId, entity
from orchestrations import EntityRequest, ParentInfo, TaskFailedError, orchestrator
from orchestrations._ids import shard_of
from runtime import OrchestrationRuntimeStatus as S
from runtime import TaskHub
from runtime._messages import Message
from runtime._turn_state import utcnow

from ..conftest import ALWAYS_REPLAY
from ..helpers import wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(ALWAYS_REPLAY, reason="ids refused where they are made: the normal run covers them"),
]

LONG_KEY = "k" * 600


@entity(name="BiCounter")
def counter(ctx: EntityContext) -> None:
    value = ctx.get_state(lambda: 0)
    if ctx.operation_name == "add":
        value += ctx.get_input()
    ctx.set_state(value)
    ctx.set_result(value)


@orchestrator(name="bi_bad_target")
def bad_target(ctx):
    """Uses a bad entity id the way ``how`` says, catches the refusal, then calls a good one."""
    target, how, good_key = ctx.get_input()
    refused = None
    try:
        if how == "call":
            yield ctx.call_entity(target, "add", 1)
        elif how == "signal":
            ctx.signal_entity(target, "add", 1)
        else:
            with (yield ctx.lock_entities([target])):
                pass
    except ValueError as exc:
        refused = f"{type(exc).__name__}: {exc}"
    value = yield ctx.call_entity(EntityId("BiCounter", good_key), "add", 1)
    return refused, value


@orchestrator(name="bi_holder")
def holder(ctx):
    with (yield ctx.lock_entities([EntityId("BiCounter", ctx.get_input())])):
        yield ctx.wait_for_external_event("release")
    return "released"


@orchestrator(name="bi_caller")
def caller(ctx):
    try:
        return (yield ctx.call_entity(EntityId("BiCounter", ctx.get_input()), "add", 1))
    except TaskFailedError as exc:
        return f"failed: {exc.error_type}: {exc.message}"


def _on_shard(prefix: str, shard: int) -> str:
    return next(f"{prefix}{i}" for i in range(1000) if shard_of(f"{prefix}{i}", 2) == shard)


def _entity_key_on_shard(key_prefix: str, shard: int) -> str:
    """A canonical ``@bicounter@...`` id with a 600-character key that lives on ``shard``."""
    return next(
        f"@bicounter@{key_prefix}{i}{LONG_KEY}"
        for i in range(1000)
        if shard_of(f"@bicounter@{key_prefix}{i}{LONG_KEY}", 2) == shard
    )


@pytest.mark.parametrize(
    ("how", "where"),
    [("call", "other shard"), ("call", "same shard"), ("signal", "other shard"), ("lock", "same shard")],
)
def test_a_too_long_entity_id_is_refused_where_it_is_made(hub, how, where):
    iid = _on_shard(f"bi-long-{how}-{where.split()[0]}-", 0)
    target = _entity_key_on_shard(f"{how}-", 1 if where == "other shard" else 0)
    hub.start_new(bad_target, iid, (target, how, f"ok-{how}-{where}"))
    status = hub.wait_for_completion(iid, timeout=30)
    assert status.runtime_status is S.Completed, status.failure_details
    refused, value = status.output
    assert refused is not None and refused.startswith("DurableValueError: entity id is too long"), refused
    assert "@bicounter@" in refused  # it names the id
    assert value == 1  # and the shards still carry calls


@pytest.mark.parametrize("target", ["@@x", "@bicounter@"])
def test_a_malformed_entity_id_is_refused_where_it_is_made(hub, target):
    iid = f"bi-malformed-{len(target)}"
    hub.start_new(bad_target, iid, (target, "call", f"ok-malformed-{len(target)}"))
    status = hub.wait_for_completion(iid, timeout=30)
    assert status.runtime_status is S.Completed, status.failure_details
    refused, value = status.output
    assert refused is not None and repr(target) in refused, refused
    assert value == 1


def test_a_message_the_receiver_cannot_accept_is_answered_and_let_go(hub):
    """An entity call an older sender left in its outbox, to an id this version refuses."""
    key = "held"
    hub.start_new(holder, "bi-holder", key)
    wait_until(lambda: hub.get_status("bi-holder") is not None)
    wait_until(lambda: any(e.event_type == "EntityLockGranted" for e in hub.get_history("bi-holder")))
    hub.start_new(caller, "bi-caller", key)  # its call waits for the lock
    wait_until(lambda: hub.get_status("bi-caller") is not None)
    history = wait_until(lambda: [e for e in hub.get_history("bi-caller") if e.event_type == "EntityOperationCalled"]
                         and hub.get_history("bi-caller"))
    execution_id = history[0].execution_id
    task_id = next(e.event_id for e in history if e.event_type == "EntityOperationCalled")
    bad = _entity_key_on_shard("old-", 0)
    sender = ParentInfo("bi-caller", task_id, execution_id)
    msg = Message(bad, EntityRequest(utcnow(), "add", 1, sender, False), msg_id="bi-old-sender-1")
    receiver = hub._shards[shard_of(bad, 2)]
    ray.get(receiver.deliver.remote([msg.to_bytes()]), timeout=30)  # accepted (and answered)
    ray.get(receiver.deliver.remote([msg.to_bytes()]), timeout=30)  # sent again: dropped
    status = hub.wait_for_completion("bi-caller", timeout=30)
    assert status.runtime_status is S.Completed
    assert status.output.startswith("failed: orchestrations.DurableValueError: entity id is too long"), status.output
    # the receiving shard goes on serving everything behind it
    hub.raise_event("bi-holder", "release")
    assert hub.wait_for_completion("bi-holder", timeout=30).output == "released"
    wait_until(lambda: hub.read_entity_state(EntityId("BiCounter", key)).entity_state == 1)  # the real call


@orchestrator(name="bi_hello")
def hello(ctx):
    yield ctx.wait_for_external_event("go")
    return f"hello {ctx.get_input()}"


def test_a_turn_that_fails_leaves_memory_as_the_file_is(ray_session, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    with TaskHub("bi-aborted-turn", data_dir=tmp_path, num_shards=1, always_replay=ALWAYS_REPLAY,
                 _crash_points=("error_before_commit",), _crash_marker_dir=str(markers)) as hub:
        with pytest.raises(Exception, match="fault injected at error_before_commit"):
            hub.start_new(hello, "bi-aborted", "a")
        assert hub.get_status("bi-aborted") is None  # the file has no such instance ...
        hub.start_new(hello, "bi-aborted", "b")  # ... and neither has the host's memory
        hub.raise_event("bi-aborted", "go")
        status = hub.wait_for_completion("bi-aborted", timeout=30)
        assert (status.runtime_status, status.output) == (S.Completed, "hello b")
