"""Entities and critical sections on a real local Ray with real SQLite shards."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from entities import EntityContext, EntityId, current_context, entity
from orchestrations import EntityLockMessage, LockingRulesViolationError, ParentInfo, TaskFailedError, orchestrator
from runtime import OrchestrationRuntimeStatus as S
from runtime._client_args import utc_now as _now
from runtime._messages import Message

from ..helpers import wait_until

pytestmark = pytest.mark.integration


@entity(name="EtCounter")
def counter(ctx: EntityContext) -> None:
    value = ctx.get_state(lambda: 0)
    if ctx.operation_name == "add":
        value += ctx.get_input()
    elif ctx.operation_name == "get":
        ctx.set_result(value)
    elif ctx.operation_name == "boom":
        ctx.set_state(value + 1000)  # rolled back: the operation raises
        raise RuntimeError("boom")
    elif ctx.operation_name == "fan":
        for key in ctx.get_input():
            ctx.signal_entity(EntityId("EtCounter", key), "add", 1)
    elif ctx.operation_name == "unstorable":
        ctx.set_state(threading.Lock())  # cannot be encoded: the turn must not store it
        return
    elif ctx.operation_name == "start":
        ctx.set_result(ctx.start_new_orchestration("et_echo", ctx.get_input()))
    ctx.set_state(value)


@entity(name="EtLog")
class Log:
    def __init__(self) -> None:
        self.items: list[str] = []

    def append(self, item: str) -> int:
        self.items.append(item)
        return len(self.items)

    def get(self) -> list[str]:
        return self.items

    def whoami(self) -> str:
        return str(current_context().entity_id)

    def fail_after_append(self, item: str) -> None:
        self.items.append(item)
        raise ValueError(f"rejected {item}")


def C(key: str) -> EntityId:
    return EntityId("EtCounter", key)


def L(key: str) -> EntityId:
    return EntityId("EtLog", key)


@orchestrator(name="et_echo")
def echo(ctx):
    return ctx.get_input()


@orchestrator(name="et_calls")
def calls(ctx):
    key = ctx.get_input()
    yield ctx.call_entity(C(key), "add", 5)
    ctx.signal_entity(C(key), "add", 1)
    try:
        yield ctx.call_entity(C(key), "boom")
    except TaskFailedError as exc:
        error = (exc.error_type, exc.message)
    value = yield ctx.call_entity(C(key), "get")
    me = yield ctx.call_entity(L(key), "whoami")
    return value, error, me


@orchestrator(name="et_hold")
def hold(ctx):
    """Lock the entities of the input, note the lock, and wait for "release" inside the section."""
    keys = ctx.get_input()
    with (yield ctx.lock_entities([L(k) for k in keys])):
        yield ctx.call_entity(L(keys[0]), "append", f"held by {ctx.instance_id}")
        yield ctx.wait_for_external_event("release")
    return "released"


@orchestrator(name="et_append_locked")
def append_locked(ctx):
    key, tag = ctx.get_input()
    with (yield ctx.lock_entities([L(key)])):
        return (yield ctx.call_entity(L(key), "append", tag))


@orchestrator(name="et_rule")
def rule(ctx):
    which, key = ctx.get_input()
    with (yield ctx.lock_entities([L(key)])):
        if which == "nesting":
            yield ctx.lock_entities([L(key + "-other")])
        elif which == "unlocked_call":
            yield ctx.call_entity(L(key + "-other"), "get")
        elif which == "two_calls":
            yield ctx.task_all([ctx.call_entity(L(key), "get"), ctx.call_entity(L(key), "get")])
        elif which == "sub_orchestration":
            yield ctx.call_sub_orchestrator(echo, 1)
        elif which == "signal_locked":
            ctx.signal_entity(L(key), "append", "x")
    return "no violation"


@orchestrator(name="et_signal_unlocked_inside")
def signal_unlocked_inside(ctx):
    key = ctx.get_input()
    with (yield ctx.lock_entities([L(key)])):
        ctx.signal_entity(C(key), "add", 3)
    return "ok"


@orchestrator(name="et_raise_inside")
def raise_inside(ctx):
    key, catch = ctx.get_input()
    try:
        with (yield ctx.lock_entities([L(key)])):
            yield ctx.call_entity(L(key), "fail_after_append", "rolled back")
    except TaskFailedError:
        if not catch:
            raise
        return (yield ctx.call_entity(L(key), "get"))  # outside the section again
    return "not reached"


@orchestrator(name="et_continue_holding")
def continue_holding(ctx):
    key, round_ = ctx.get_input()
    if round_ == 0:
        yield ctx.lock_entities([L(key)])  # no with: the section ends with the execution
        ctx.continue_as_new((key, 1))
        return None
    yield ctx.create_timer(timedelta(milliseconds=1))
    return "second execution"


def entity_lock(hub, entity_id):
    found = [m for m in hub.list_entities("EtLog", include_deleted=True) if m.entity_id == entity_id]
    return found[0].locked_by if found else None


def queue_length(hub, entity_id):
    found = [m for m in hub.list_entities("EtLog", include_deleted=True) if m.entity_id == entity_id]
    return found[0].queue_length if found else 0


def assert_unlocked(hub, key):
    """Another orchestration can take the lock at once (and the entity records no holder)."""
    status = hub.wait_for_completion(hub.start_new(append_locked, client_input=(key, "after")), timeout=30)
    assert status.runtime_status is S.Completed, status.failure_details
    wait_until(lambda: entity_lock(hub, L(key)) is None)  # its own unlock is delivered after its commit


# -- entities -------------------------------------------------------------------------------------


def test_client_signals_run_in_order_and_state_is_committed(hub):
    for i in range(1, 6):
        hub.signal_entity(C("signals"), "add", i)
    assert wait_until(lambda: hub.read_entity_state(C("signals")).entity_state == 15)
    assert hub.read_entity_state(C("nobody")).entity_exists is False
    hub.signal_entity(C("signals"), "delete")
    assert wait_until(lambda: not hub.read_entity_state(C("signals")).entity_exists)


def test_orchestration_calls_signals_and_rollback(hub):
    status = hub.wait_for_completion(hub.start_new(calls, client_input="calls"), timeout=30)
    value, error, me = status.output
    assert value == 6  # 5 + 1; the +1000 of "boom" was rolled back
    assert error == ("RuntimeError", "boom")
    assert me == "@etlog@calls"  # entity names are case-insensitive: ids print lower-cased


def test_entities_signal_entities_and_start_orchestrations(hub):
    hub.signal_entity(C("fan-source"), "fan", ["f1", "f2", "f3"])
    for key in ("f1", "f2", "f3"):
        assert wait_until(lambda k=key: hub.read_entity_state(C(k)).entity_state == 1)
    hub.signal_entity(C("starter"), "start", "from an entity")
    started = wait_until(lambda: [s for s in hub.get_status_by() if s.name == "et_echo"])
    assert hub.wait_for_completion(started[0].instance_id, timeout=30).output == "from an entity"


def test_list_entities_by_name(hub):
    hub.signal_entity(L("listed"), "append", "x")
    assert wait_until(lambda: L("listed") in [m.entity_id for m in hub.list_entities("EtLog")])
    assert all(m.entity_id.name == "etlog" for m in hub.list_entities("EtLog"))
    assert hub.read_entity_state(L("listed")).entity_state.items == ["x"]


def test_class_entity_rolls_back_in_place_mutation(hub):
    hub.signal_entity(L("rollback"), "append", "kept")
    hub.signal_entity(L("rollback"), "fail_after_append", "dropped")
    hub.signal_entity(L("rollback"), "append", "kept too")
    assert wait_until(lambda: len(hub.read_entity_state(L("rollback")).entity_state.items) == 2)
    assert hub.read_entity_state(L("rollback")).entity_state.items == ["kept", "kept too"]


# -- critical sections ------------------------------------------------------------------------------


def test_waiters_are_served_first_come_first_served(hub):
    holder = hub.start_new(hold, client_input=["fifo"])
    wait_until(lambda: entity_lock(hub, L("fifo")) == holder)
    waiters = []
    for i in range(3):
        waiters.append(hub.start_new(append_locked, client_input=("fifo", f"w{i}")))
        wait_until(lambda n=i + 1: queue_length(hub, L("fifo")) == n)  # its request is queued
    hub.raise_event(holder, "release")
    assert hub.wait_for_completion(holder, timeout=30).output == "released"
    for w in waiters:
        assert hub.wait_for_completion(w, timeout=30).runtime_status is S.Completed
    assert hub.read_entity_state(L("fifo")).entity_state.items == [f"held by {holder}", "w0", "w1", "w2"]


@pytest.mark.parametrize("which", ["nesting", "unlocked_call", "two_calls", "sub_orchestration", "signal_locked"])
def test_every_rule_raises_and_the_locks_are_released(hub, which):
    key = f"rule-{which}"
    status = hub.wait_for_completion(hub.start_new(rule, client_input=(which, key)), timeout=30)
    assert status.runtime_status is S.Failed
    assert status.failure_details.error_type == "orchestrations.LockingRulesViolationError"
    assert issubclass(LockingRulesViolationError, Exception)
    assert_unlocked(hub, key)


def test_signal_to_an_unlocked_entity_inside_is_allowed(hub):
    status = hub.wait_for_completion(hub.start_new(signal_unlocked_inside, client_input="sig-in"), timeout=30)
    assert status.output == "ok"
    assert wait_until(lambda: hub.read_entity_state(C("sig-in")).entity_state == 3)


def test_locks_are_released_after_an_exception_inside_the_block(hub):
    status = hub.wait_for_completion(hub.start_new(raise_inside, client_input=("exc", True)), timeout=30)
    assert status.output == []  # the failed operation's append was rolled back
    assert_unlocked(hub, "exc")


def test_locks_are_released_when_the_holder_fails(hub):
    status = hub.wait_for_completion(hub.start_new(raise_inside, client_input=("fails", False)), timeout=30)
    assert status.runtime_status is S.Failed
    assert_unlocked(hub, "fails")


def test_locks_are_released_after_continue_as_new(hub):
    iid = hub.start_new(continue_holding, client_input=("can", 0))
    assert hub.wait_for_completion(iid, timeout=30).output == "second execution"
    assert_unlocked(hub, "can")


def test_locks_are_released_after_terminate(hub):
    holder = hub.start_new(hold, client_input=["term-a", "term-b"])
    wait_until(lambda: entity_lock(hub, L("term-b")) == holder)
    hub.terminate(holder, "stop")
    assert hub.wait_for_completion(holder, timeout=30).runtime_status is S.Terminated
    assert_unlocked(hub, "term-a")
    assert_unlocked(hub, "term-b")


def test_a_grant_for_a_purged_holder_is_answered_with_unlocks(hub):
    done = hub.start_new(echo, client_input=1)
    hub.wait_for_completion(done, timeout=30)
    hub.purge_instance_history(done)
    stale = EntityLockMessage(_now(), ParentInfo(done, 1, "gone"), (str(L("healed")),), 0)
    hub._submit([Message(str(L("healed")), stale)])
    assert_unlocked(hub, "healed")


def test_clean_entity_storage_frees_a_lock_whose_holder_was_purged(hub):
    # A lock the protocol itself never leaks: a bogus lock message (as a bug would leave
    # behind) locks "orphan" but grants its holder another entity, so the holder never learns
    # it holds "orphan"; then the holder is terminated and purged.
    holder = hub.start_new(hold, client_input=["orphan-other"])
    wait_until(lambda: entity_lock(hub, L("orphan-other")) == holder)
    execution = hub.get_history(holder)[0].execution_id
    stale = EntityLockMessage(_now(), ParentInfo(holder, 999, execution), (str(L("orphan-elsewhere")),), 0)
    hub._submit([Message(str(L("orphan")), stale)])
    assert wait_until(lambda: entity_lock(hub, L("orphan")) == holder)
    hub.terminate(holder)
    hub.wait_for_completion(holder, timeout=30)
    assert hub.purge_instance_history(holder).instances_deleted == 1
    waiter = hub.start_new(append_locked, client_input=("orphan", "waited"))
    wait_until(lambda: queue_length(hub, L("orphan")) == 1)
    hub.signal_entity(C("empty"), "delete")  # an entity with no state
    wait_until(lambda: C("empty") in [m.entity_id for m in hub.list_entities("EtCounter", include_deleted=True)])
    result = hub.clean_entity_storage()
    assert result.orphaned_locks_released == 1
    assert result.empty_entities_removed >= 1
    assert hub.wait_for_completion(waiter, timeout=30).output == 1
    assert C("empty") not in [m.entity_id for m in hub.list_entities("EtCounter", include_deleted=True)]


def test_a_state_that_cannot_be_stored_fails_only_its_operation(hub):
    # the operation fails (a signal: nobody to tell) and is rolled back; the signal itself is
    # committed and the entity goes on (tests/integration/test_entity_peers.py has the caller's side)
    hub.signal_entity(C("unstorable"), "add", 5)
    hub.signal_entity(C("unstorable"), "unstorable")
    hub.signal_entity(C("unstorable"), "add", 1)
    assert wait_until(lambda: hub.read_entity_state(C("unstorable")).entity_state == 6)
