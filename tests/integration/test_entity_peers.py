"""Entity behaviours the peers' own test suites expect (issue 10), on a real local Ray with
real SQLite shards. Each test names the peer test it ports, or the mistake it reproduces."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest

from entities import EntityContext, EntityId, current_context, entity
from orchestrations import (
    DurableValueError,
    EntityRequest,
    EntityUnlockMessage,
    Registry,
    TaskFailedError,
    orchestrator,
)
from orchestrations._ids import shard_of
from runtime import OrchestrationRuntimeStatus as S
from runtime import TaskHub
from runtime._client_args import utc_now as _now
from runtime._messages import Message

from ..conftest import ALWAYS_REPLAY
from ..helpers import wait_until

pytestmark = pytest.mark.integration


# -- entities ---------------------------------------------------------------------------------------


@entity(name="PeerCounter")
class PeerCounter:
    def __init__(self) -> None:
        self.value = 0

    def add(self, amount: int = 1) -> int:
        self.value += amount
        return self.value

    def get(self) -> int:
        return self.value

    def set(self, value: int) -> None:
        self.value = value


@entity(name="PeerScheduler")
def peer_scheduler(ctx: EntityContext) -> None:
    """Records the operation names it receives (the peers' SchedulerEntity)."""
    ctx.set_state([*ctx.get_state(list), ctx.operation_name])


class _Unstorable:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        raise TypeError("problematic object: is not serializable")


@entity(name="PeerFaulty")
class PeerFaulty:
    """The peers' FaultyEntity (Azure/azure-functions-durable-extension
    test/IsolatedEntities/Entities/FaultyEntity.cs), class style."""

    def __init__(self) -> None:
        self.value = 0
        self.sent = 0
        self.problem: object = None

    def exists(self) -> bool:
        return True

    def get(self) -> int:
        return self.value

    def get_number_increments_sent(self) -> int:
        return self.sent

    def set(self, value: int) -> None:
        self.value = value

    def set_then_throw(self, value: int) -> None:
        self.value = value
        raise ValueError("KABOOM")

    def set_to_unserializable(self) -> None:
        self.problem = _Unstorable()

    def unserializable_result(self) -> object:
        return threading.Lock()

    def send(self, key: str) -> None:
        self.sent += 1
        current_context().signal_entity(EntityId("PeerScheduler", key), f"{self.sent}:{self.value}")

    def send_then_throw(self, key: str) -> None:
        self.send(key)
        raise ValueError("KABOOM")

    def send_then_make_unserializable(self, key: str) -> None:
        self.send(key)
        self.problem = _Unstorable()

    def send_then_cancel(self, key: str) -> None:
        self.send(key)
        current_context().start_new_orchestration("peer_never")
        raise asyncio.CancelledError()

    def signal_unknown(self) -> None:
        current_context().signal_entity(EntityId("PeerCountr", "x"), "add")


@entity(name="PeerStringStore")
def peer_string_store(ctx: EntityContext) -> None:
    if ctx.operation_name == "set":
        ctx.set_state(ctx.get_input())
    elif ctx.operation_name == "get":
        ctx.set_result(ctx.get_state(str))


def P(key: str) -> EntityId:
    return EntityId("PeerCounter", key)


def F(key: str) -> EntityId:
    return EntityId("PeerFaulty", key)


# -- orchestrations --------------------------------------------------------------------------------------


@orchestrator(name="peer_never")
def never(ctx):
    return "must not be started: the operation that started it failed"


@orchestrator(name="peer_call_in_another_case")
def call_in_another_case(ctx):
    key = ctx.get_input()
    yield ctx.call_entity(EntityId("PEERCOUNTER", key), "add", 2)
    with (yield ctx.lock_entities([EntityId("peercounter", key), EntityId("PeerCounter", key)])):
        return (yield ctx.call_entity(EntityId("PeerCounter", key), "get"))


@orchestrator(name="peer_rollback_signals")
def rollback_signals(ctx):
    key = ctx.get_input()
    ops = [
        ("set", 56), ("send", key), ("set", 100), ("send", key), ("send_then_throw", key), ("send", key),
        ("set", 10), ("send_then_throw", key), ("send", key), ("set_then_throw", 66), ("send", key),
        ("send_then_make_unserializable", key), ("send", key), ("set", 11), ("send", key),
        ("send_then_cancel", key),
    ]
    for name, value in ops:
        ctx.signal_entity(F(key), name, value)
    sent = yield ctx.call_entity(F(key), "get_number_increments_sent")
    value = yield ctx.call_entity(F(key), "get")
    return [sent, value]


@orchestrator(name="peer_call_faulty")
def call_faulty(ctx):
    key = ctx.get_input()
    failures = []
    for name in ("set_to_unserializable", "unserializable_result"):
        try:
            yield ctx.call_entity(F(key), name)
        except TaskFailedError as e:
            failures.append((e.error_type, e.message))
    yield ctx.call_entity(F(key), "set", 3)
    try:
        yield ctx.call_entity(F(key), "set_then_throw", 333)
    except TaskFailedError as e:
        failures.append((e.error_type, e.message))
    return [failures, (yield ctx.call_entity(F(key), "get"))]


@orchestrator(name="peer_signal_and_call")
def signal_and_call(ctx):
    entity_id = EntityId("PeerStringStore", ctx.get_input())
    ctx.signal_entity(entity_id, "set", "333")
    return (yield ctx.call_entity(entity_id, "get"))


@orchestrator(name="peer_call_and_delete")
def call_and_delete(ctx):
    entity_id = EntityId("PeerStringStore", ctx.get_input())
    yield ctx.call_entity(entity_id, "set", "333")
    value = yield ctx.call_entity(entity_id, "get")
    yield ctx.call_entity(entity_id, "delete")
    return value


@orchestrator(name="peer_typo")
def typo(ctx):
    which = ctx.get_input()
    wrong = EntityId("PeerCountr", "t")
    if which == "call":
        yield ctx.call_entity(wrong, "get")
    elif which == "signal":
        ctx.signal_entity(wrong, "add", 1)
    else:
        with (yield ctx.lock_entities([P("t"), wrong])):
            pass
    return "not reached"


@orchestrator(name="peer_entity_signals_unknown")
def entity_signals_unknown(ctx):
    try:
        yield ctx.call_entity(F("unknown-target"), "signal_unknown")
    except TaskFailedError as e:
        return e.message
    return "no failure"


@orchestrator(name="peer_relock")
def relock(ctx):
    """Execution 0 locks entity ``key``, then continues as new with its own execution id;
    execution 1 locks the same entity again and holds it until told to go."""
    key, first_execution = ctx.get_input()
    if first_execution is None:
        with (yield ctx.lock_entities([P(key)])):
            yield ctx.call_entity(P(key), "add")
        ctx.continue_as_new([key, ctx.execution_id])
        return None
    with (yield ctx.lock_entities([P(key)])):
        yield ctx.wait_for_external_event("go")
        return (yield ctx.call_entity(P(key), "add"))


def value_of(hub, entity_id):
    """A PeerCounter's value, or None while it has no state."""
    return getattr(hub.read_entity_state(entity_id).entity_state, "value", None)


def lock_holder(hub, entity_id):
    found = [m for m in hub.list_entities(entity_id.name, include_deleted=True) if m.entity_id == entity_id]
    return found[0].locked_by if found else None


# -- 1. names are case-insensitive --------------------------------------------------------------------


def test_any_case_of_a_name_addresses_the_one_entity(hub):
    # microsoft/durabletask-python tests/durabletask/entities/test_class_based_entities_e2e.py
    #   test_client_signal_class_entity_and_custom_name, test_orchestration_call_class_entity
    # microsoft/durabletask-python tests/durabletask/test_in_memory_backend_entities.py
    #   test_signal_entity_with_class (signal twice, then read the sum)
    hub.signal_entity(EntityId("peercounter", "case"), "add", 10)
    hub.signal_entity(EntityId("PEERCOUNTER", "case"), "add", 20)
    assert wait_until(lambda: hub.read_entity_state(P("case")).entity_state.value == 30)
    status = hub.wait_for_completion(hub.start_new(call_in_another_case, client_input="case"), timeout=30)
    assert status.runtime_status is S.Completed, status.failure_details
    assert status.output == 32
    listed = [m.entity_id for m in hub.list_entities("peerCOUNTER") if m.entity_id.key == "case"]
    assert listed == [EntityId("PeerCounter", "case")]
    assert str(listed[0]) == "@peercounter@case"


def test_a_bad_entity_id_is_refused_by_the_client(hub):
    # Azure/azure-functions-durable-extension test/IsolatedEntities/Tests/InvalidEntityId.cs
    #   InvalidEntityId.ClientSignal and .ClientGet
    with pytest.raises(TypeError):
        hub.signal_entity(None, "add", 1)
    with pytest.raises(TypeError):
        hub.read_entity_state("@peercounter@x")


# -- 3. optional parameters ------------------------------------------------------------------------------


def test_signal_without_input_uses_the_parameters_default(hub):
    # microsoft/durabletask-python tests/durabletask/test_entity_executor.py
    #   TestClassBasedEntityMethodDispatch.test_method_with_optional_parameter_uses_default
    #   (and the example: signal_entity(id, "add") adds 1)
    hub.signal_entity(P("default"), "add")
    hub.signal_entity(P("default"), "add")
    hub.signal_entity(P("default"), "add", 5)
    assert wait_until(lambda: hub.read_entity_state(P("default")).entity_state.value == 7)


# -- 4 and 7. a failing operation rolls back its state and its messages; a poison state fails alone --


def test_rollback_signals_on_exceptions(hub):
    # Azure/azure-functions-durable-extension test/FunctionsV2/Tests/E2E/DurableEntityCoreTests.cs
    #   DurableEntity_RollbackSignalsOnExceptions (orchestration RollbackSignalsOnExceptions in
    #   test/Common/TestOrchestrations.cs), plus an operation raising CancelledError, a
    #   BaseException, after sending a signal and starting an orchestration
    status = hub.wait_for_completion(hub.start_new(rollback_signals, client_input="rb"), timeout=30)
    assert status.runtime_status is S.Completed, status.failure_details
    assert status.output == [7, 11]
    expected = ["1:56", "2:100", "3:100", "4:10", "5:10", "6:10", "7:11"]
    receiver = EntityId("PeerScheduler", "rb")
    assert wait_until(lambda: hub.read_entity_state(receiver).entity_state == expected)
    assert not [s for s in hub.get_status_by() if s.name == "peer_never"]


def test_an_unstorable_state_or_result_fails_only_its_operation(hub):
    # Azure/azure-functions-durable-extension test/IsolatedEntities/Tests/CallFaultyEntity.cs
    #   CallFaultyEntityOrchestration ("SetToUnserializable" fails the call and leaves the entity
    #   as it was; "SetThenThrow" is rolled back). The mistake: the whole shard turn failed and
    #   the sender retried forever ("delivery to shard N failed; retrying"), so instances hung.
    status = hub.wait_for_completion(hub.start_new(call_faulty, client_input="poison"), timeout=30)
    assert status.runtime_status is S.Completed, status.failure_details
    failures, value = status.output
    assert value == 3
    (state_type, state_message), (result_type, result_message), (thrown_type, _) = failures
    assert state_type == result_type == "orchestrations.PayloadError"
    assert "state of entity @peerfaulty@poison" in state_message and "not serializable" in state_message
    assert "result of an operation of entity @peerfaulty@poison" in result_message
    assert thrown_type == "ValueError"
    # the shard goes on serving everyone else
    hub.signal_entity(P("after-poison"), "add")
    assert wait_until(lambda: hub.read_entity_state(P("after-poison")).entity_exists)


def test_a_signalled_poison_operation_does_not_block_the_entity(hub):
    # Azure/azure-functions-durable-extension test/IsolatedEntities/Tests/CallFaultyEntityBatches.cs
    #   ("Set 55", then "SetToUnserializable" in one batch: 55 survives)
    hub.signal_entity(F("batch"), "set", 55)
    hub.signal_entity(F("batch"), "set_to_unserializable")
    hub.signal_entity(F("batch"), "send", "batch")
    assert wait_until(lambda: hub.read_entity_state(EntityId("PeerScheduler", "batch")).entity_state == ["1:55"])
    assert hub.read_entity_state(F("batch")).entity_state.value == 55


# -- 5. list_entities leaves deleted entities out -----------------------------------------------------


def test_list_entities_leaves_deleted_entities_out_unless_asked(hub):
    # Azure/azure-functions-durable-extension test/FunctionsV2/Tests/E2E/DurableEntityAdvancedTests.cs
    #   DurableEntity_ListEntities_Deleted (2 entities set and read, 2 set, read and deleted:
    #   2 listed, 4 with IncludeDeleted); test/IsolatedEntities/Tests/EntityQueries2.cs (then
    #   CleanEntityStorage removes the deleted ones)
    runs = [("foo", signal_and_call), ("bar", call_and_delete), ("baz", signal_and_call), ("qux", call_and_delete)]
    ids = [hub.start_new(fn, client_input=key) for key, fn in runs]
    for iid in ids:
        assert hub.wait_for_completion(iid, timeout=30).output == "333"
    keys = {key for key, _ in runs}

    def listed(**kw):
        return sorted(m.entity_id.key for m in hub.list_entities("PeerStringStore", **kw) if m.entity_id.key in keys)

    assert listed() == ["baz", "foo"]
    assert listed(include_deleted=True) == ["bar", "baz", "foo", "qux"]
    assert all(m.entity_exists for m in hub.list_entities("PeerStringStore"))
    assert hub.clean_entity_storage().empty_entities_removed >= 2
    assert listed(include_deleted=True) == ["baz", "foo"]


def test_a_locked_entity_without_state_is_listed_only_when_asked(hub):
    # Azure/azure-functions-durable-extension test/IsolatedEntities/Tests/CleanOrphanedLock.cs
    #   (a locked entity without state is seen with IncludeTransient, LockedBy its holder)
    iid = hub.start_new(relock, client_input=["transient", "no-real-execution"])
    wait_until(lambda: lock_holder(hub, P("transient")) == iid)
    assert P("transient") not in [m.entity_id for m in hub.list_entities("PeerCounter")]
    hub.raise_event(iid, "go")
    assert hub.wait_for_completion(iid, timeout=30).output == 1


# -- 6. an unknown entity name is refused where the operation is made -----------------------------------


def test_the_client_refuses_a_signal_to_an_unknown_name_before_writing_anything(hub):
    # the mistake: a signal to a misspelt name was committed and dropped silently by the entity
    with pytest.raises(DurableValueError, match=r"no entity named 'peercountr'.*did you mean 'peercounter'"):
        hub.signal_entity(EntityId("PeerCountr", "x"), "add", 1)
    assert EntityId("PeerCountr", "x") not in [m.entity_id for m in hub.list_entities(include_deleted=True)]
    # reading an unknown name is not an error: nothing exists there
    # (microsoft/durabletask-python tests/durabletask/entities/test_function_based_entities_e2e.py
    #   test_get_entity_not_found)
    assert hub.read_entity_state(EntityId("PeerCountr", "x")).entity_exists is False


def test_the_client_knows_names_registered_on_the_hub_but_not_in_this_driver(hub, monkeypatch):
    # a driver whose registry holds none of the hub's code (a monitor, the CLI) may signal them
    monkeypatch.setattr(hub, "_registry", Registry())
    monkeypatch.setattr(hub, "_hub_entities", None)
    hub.signal_entity(P("from-another-driver"), "add", 4)
    assert wait_until(lambda: hub.read_entity_state(P("from-another-driver")).entity_exists)
    with pytest.raises(DurableValueError, match="did you mean 'peercounter'"):
        hub.signal_entity(EntityId("PeerCountr", "x"), "add", 1)


@pytest.mark.parametrize("which", ["call", "signal", "lock"])
def test_an_orchestration_fails_at_the_call_on_an_unknown_name(hub, which):
    # Azure/azure-functions-durable-extension test/IsolatedEntities/Tests/InvalidEntityId.cs
    #   InvalidEntityId.OrchestrationSignal / .OrchestrationCall (the instance fails), for a
    #   misspelt name; the lock of "peer_typo" must not be granted either
    status = hub.wait_for_completion(hub.start_new(typo, client_input=which), timeout=30)
    assert status.runtime_status is S.Failed
    assert status.failure_details.error_type == "orchestrations.DurableValueError"
    assert "no entity named 'peercountr'" in status.failure_details.message
    assert "did you mean 'peercounter'?" in status.failure_details.message
    assert lock_holder(hub, P("t")) is None


def test_an_entity_signalling_an_unknown_name_fails_that_operation(hub):
    status = hub.wait_for_completion(hub.start_new(entity_signals_unknown), timeout=30)
    assert "no entity named 'peercountr'" in status.output


# -- 8. an unlock releases exactly the lock it names ------------------------------------------------------


def test_a_stale_unlock_never_releases_a_later_execution_s_lock(hub):
    # Azure/azure-functions-durable-extension test/IsolatedEntities/Tests/CleanOrphanedLock.cs
    #   (clean_entity_storage releases a lock), for the race of the issue: an unlock for the
    #   first execution (clean's, or its own still in flight) arrives after the instance
    #   continued as new and locked the entity again; it must not release that lock
    iid = hub.start_new(relock, client_input=["relock", None])
    wait_until(lambda: hub.get_status(iid).input_[1] is not None and lock_holder(hub, P("relock")) == iid)
    first_execution = hub.get_status(iid).input_[1]
    stale = EntityUnlockMessage(_now(), iid, first_execution, 1)  # the first execution's lock request: task 1
    hub._submit([Message(str(P("relock")), stale)])
    hub.clean_entity_storage()  # the holder is running: its lock is not orphaned
    hub.signal_entity(P("relock"), "add", 100)  # queued behind the lock, after the stale unlock
    wait_until(lambda: [m.queue_length for m in hub.list_entities("PeerCounter") if m.entity_id == P("relock")] == [1])
    assert lock_holder(hub, P("relock")) == iid
    hub.raise_event(iid, "go")
    status = hub.wait_for_completion(iid, timeout=30)
    assert status.output == 2  # the signal's +100 waited for the section
    assert wait_until(lambda: hub.read_entity_state(P("relock")).entity_state.value == 102)


# -- hubs written before entity names were case-insensitive ------------------------------------------


def _legacy_keys(count_each: int = 2) -> list[str]:
    """Keys whose old-case id ("@PeerCounter@key") is on another shard than the canonical one,
    and keys where both are on the same shard (2 shards)."""
    moved, stayed = [], []
    for i in range(100):
        key = f"legacy-{i}"
        same = shard_of(f"@PeerCounter@{key}", 2) == shard_of(f"@peercounter@{key}", 2)
        (stayed if same else moved).append(key)
    return moved[:count_each] + stayed[:count_each]


def _rewrite_as_the_previous_version(directory, keys) -> None:
    """Put each entity's row where the previous version kept it: under "@PeerCounter@key", on
    the shard that owns that string, in a file not yet marked canonical."""
    files = [sqlite3.connect(directory / f"shard-{i:02d}.sqlite") for i in range(2)]
    try:
        for key in keys:
            new, old = f"@peercounter@{key}", f"@PeerCounter@{key}"
            source = files[shard_of(new, 2)]
            row = source.execute("SELECT * FROM entities WHERE entity_id = ?", (new,)).fetchone()
            source.execute("DELETE FROM entities WHERE entity_id = ?", (new,))
            files[shard_of(old, 2)].execute(
                "INSERT INTO entities VALUES (?,?,?,?,?,?,?)", (old, "PeerCounter", *row[2:])
            )
        # the previous version also allowed an empty key, which no EntityId addresses now
        files[0].execute("INSERT INTO entities VALUES (?,?,?,?,?,?,?)", ("@PeerCounter@", "PeerCounter", *row[2:]))
        for conn in files:
            conn.execute("DELETE FROM meta WHERE key = 'canonical_entity_ids'")
            conn.commit()
    finally:
        for conn in files:
            conn.close()


def test_a_hub_written_before_names_were_case_insensitive_keeps_its_entities(ray_session, data_dir):
    # the mistake: rows stored under "@PeerCounter@key" (on the shard of that string) would be
    # unreachable from EntityId("PeerCounter", key) == "@peercounter@key": their state lost
    keys = _legacy_keys()
    with TaskHub("peer-legacy", data_dir=data_dir, num_shards=2, always_replay=ALWAYS_REPLAY) as legacy:
        for key in keys:
            legacy.signal_entity(P(key), "add", 10)
        for key in keys:
            wait_until(lambda k=key: legacy.read_entity_state(P(k)).entity_exists)
    _rewrite_as_the_previous_version(data_dir / "peer-legacy", keys)
    with TaskHub("peer-legacy", data_dir=data_dir, num_shards=2, always_replay=ALWAYS_REPLAY) as reopened:
        for key in keys:
            assert wait_until(lambda k=key: value_of(reopened, P(k)) == 10)
            reopened.signal_entity(P(key), "add", 1)
        for key in keys:
            assert wait_until(lambda k=key: value_of(reopened, P(k)) == 11)
        listed = [str(m.entity_id) for m in reopened.list_entities(include_deleted=True)]
        assert sorted(listed) == sorted(f"@peercounter@{key}" for key in keys)  # not the empty key's row
        assert reopened.clean_entity_storage().orphaned_locks_released == 0
        with pytest.raises(DurableValueError, match="'@PeerCounter@'"):
            reopened._submit([Message("@PeerCounter@", EntityRequest(_now(), "add", 1, None, True))])
        # a message still addressed to an old-case id (as in an outbox) reaches the entity
        old = f"@PeerCounter@{keys[0]}"
        reopened._submit([Message(old, EntityRequest(_now(), "add", 100, None, True))])
        assert wait_until(lambda: value_of(reopened, P(keys[0])) == 111)
