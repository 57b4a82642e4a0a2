"""Pure tests of entity behaviours the peers' own test suites expect (issue 10).

Each test names the peer test it ports (repository, file, test) or the mistake it reproduces.
No Ray, no SQLite: entity ids, the registry, the entity executor driven with hand-written
messages, and the orchestration executor with an entity-name check.
"""

from __future__ import annotations

import asyncio
import json
import pickle
import threading

import pytest

import entities
from entities import EntityContext, EntityId, EntitySpec, EntityState, Outgoing, entity, run_entity
from entities._executor import StateKeeper
from entities._registry import check_entity_name, unknown_entity_error
from orchestrations import (
    DurableTypeError,
    DurableValueError,
    EntityLockGranted,
    EntityLockMessage,
    EntityOperationCompleted,
    EntityOperationFailed,
    EntityRequest,
    EntityUnlockMessage,
    ExecutionState,
    OrchestrationExecutor,
    ParentInfo,
    PayloadError,
    Registry,
    SignalEntity,
    UnlockEntity,
)
from orchestrations._ids import shard_of
from orchestrations.testing import T0, at, started

NOW = at(5)
EXEC = "exec-0"


def call(op, value=None, *, by="orch", task=1, execution=EXEC):
    return EntityRequest(T0, op, value, ParentInfo(by, task, execution), False)


def signal(op, value=None):
    return EntityRequest(T0, op, value, None, True)


def answers(outgoing):
    """(ok, value) of each answer, in order; value is the result or the FailureDetails."""
    found = []
    for out in outgoing:
        if isinstance(out.event, EntityOperationCompleted):
            found.append((True, out.event.result))
        elif isinstance(out.event, EntityOperationFailed):
            found.append((False, out.event.failure))
    return found


def result_of(outgoing):
    [(ok, value)] = answers(outgoing)
    assert ok, value
    return value


def failure_of(outgoing):
    [(ok, value)] = answers(outgoing)
    assert not ok, value
    return value


# -- 1. entity names are case-insensitive ---------------------------------------------------------


def test_entity_id_parsing_success():
    # microsoft/durabletask-python tests/durabletask/entities/test_entity_id_parsing.py
    #   test_entity_id_parsing_success
    # Azure/azure-functions-durable-extension test/FunctionsV2/EntityIdParsingTests.cs
    #   EntityIdParsing_CorrectlyParsesValidEntityId
    entity_id = EntityId.parse("@MyEntity@TestInstance")
    assert entity_id.name == "myentity"
    assert entity_id.key == "TestInstance"
    assert str(entity_id) == "@myentity@TestInstance"


def test_is_entity_id_name_case_insensitive():
    # microsoft/durabletask-python tests/durabletask/entities/test_entity_id_parsing.py
    #   test_is_entity_id_name_case_insensitive
    id1, id2 = EntityId("MyEntity", "instance1"), EntityId("myentity", "instance1")
    assert id1 == id2
    assert hash(id1) == hash(id2)
    assert len({id1, id2}) == 1
    assert shard_of(str(id1), 4) == shard_of(str(id2), 4)
    assert str(EntityId("MyEntity", "k")) == "@myentity@k"
    assert EntityId("MyEntity", "k").name == "myentity"


def test_keys_keep_their_case():
    assert EntityId("Counter", "Key") != EntityId("Counter", "key")
    assert EntityId("Counter", "Key").key == "Key"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "invalidEntityId",
        "@",
        "@@",
        "@invalid@",
        "@@invalid",
        "invalid@symbolplacement",
        "invalid@symbol@placement",
    ],
)
def test_entity_id_parsing_failures(text):
    # microsoft/durabletask-python tests/durabletask/entities/test_entity_id_parsing.py
    #   test_entity_id_parsing_failures (every case)
    # Azure/azure-functions-durable-extension test/FunctionsV2/EntityIdParsingTests.cs
    #   EntityIdParsing_ThrowsOnInvalidEntityId
    with pytest.raises(DurableValueError) as info:
        EntityId.parse(text)
    assert isinstance(info.value, ValueError)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize("text", [None, 42, b"@a@b"])
def test_entity_id_parsing_refuses_what_is_not_a_string(text):
    # Azure/azure-functions-durable-extension test/FunctionsV2/EntityIdParsingTests.cs
    #   EntityIdParsing_ThrowsOnInvalidEntityId (FromString(null))
    with pytest.raises(ValueError):
        EntityId.parse(text)


def test_an_entity_id_with_an_empty_key_is_refused():
    # the mistake: EntityId("Counter", "") made an id that EntityId.parse(str(id)) refuses
    with pytest.raises(DurableValueError, match="key must not be empty"):
        EntityId("Counter", "")


@pytest.mark.parametrize(
    ("name_1", "key_1", "name_2", "key_2", "expected"),
    [
        ("name1", "key1", "name1", "key1", True),
        ("name1", "key1", "name1", "key2", False),
        ("name1", "key1", "name2", "key1", False),
        ("name1", "key1", "name2", "key2", False),
        ("Name1", "key1", "name1", "key1", True),
    ],
)
def test_equal_entity_by_name_and_key(name_1, key_1, name_2, key_2, expected):
    # Azure/azure-functions-durable-python tests/utils/test_entity_utils.py
    #   test_equal_entity_by_name_and_key (plus the case-insensitive row)
    assert (EntityId(name_1, key_1) == EntityId(name_2, key_2)) == expected


def test_equality_with_non_entity_id():
    # Azure/azure-functions-durable-python tests/utils/test_entity_utils.py
    #   test_equality_with_non_entity_id
    assert (EntityId("name", "key") == "not an entity id") is False
    assert (EntityId("name", "key") == "@name@key") is False


def test_an_entity_id_pickled_before_names_were_case_insensitive_loads_canonical():
    # the mistake: an id inside a stored input, pickled by the previous version, would keep
    # its upper-case name and address another entity than a freshly built one
    old = pickle.dumps(EntityId("x", "k")).replace(b"\x8c\x01x", b"\x8c\x01X")
    loaded = pickle.loads(old)
    assert loaded.name == "x" and loaded == EntityId("X", "k")


def test_registration_is_found_by_any_case_and_a_name_in_another_case_is_a_duplicate():
    # microsoft/durabletask-python tests/durabletask/test_entities.py
    #   TestEntityWorkerIntegration.test_worker_entity_registration (duplicate -> ValueError)
    registry = Registry()
    spec = EntitySpec("Account", object, True)
    registry.add_entity("Account", spec)
    assert registry.entities["account"] is spec
    with pytest.raises(ValueError, match="'ACCOUNT' is already registered"):
        registry.add_entity("ACCOUNT", EntitySpec("ACCOUNT", object, True))


def test_custom_registration_name_is_found_by_the_id_built_from_it():
    # microsoft/durabletask-python tests/durabletask/entities/test_class_based_entities_e2e.py
    #   test_client_signal_class_entity_and_custom_name
    invoked = []

    class EmptyEntity:
        def do_nothing(self, _):
            invoked.append(True)

    registry = Registry()
    registry.add_entity("EntityNameCustom", EntitySpec("EntityNameCustom", EmptyEntity, True))
    entity_id = EntityId("EntityNameCustom", "testEntity")
    run_entity(registry.entities.get(entity_id.name), entity_id, EntityState(), [signal("do_nothing")], NOW)
    assert invoked == [True]


def lock_then_call(ctx):
    a, b = EntityId("Counter", "a"), EntityId("counter", "b")
    with (yield ctx.lock_entities([b, a, EntityId("COUNTER", "a")])):
        yield ctx.call_entity(EntityId("CoUnTeR", "a"), "get")
    ctx.signal_entity("@Counter@b", "add", 1)  # a raw string is made canonical too
    return "ok"


def test_orchestrations_address_and_lock_one_canonical_string_per_entity():
    registry = Registry()
    registry.add_orchestrator(lock_then_call)
    executor = OrchestrationExecutor(registry.orchestrators.get, "o")
    first = executor.process([started("lock_then_call", instance_id="o")], at(1))
    [lock] = first.actions
    assert lock.lock_set == ("@counter@a", "@counter@b")
    second = executor.process([EntityLockGranted(at(2), 1, lock.lock_set)], at(2))
    assert [a.entity_id for a in second.actions] == ["@counter@a"]
    third = executor.process([EntityOperationCompleted(at(3), 2, 0)], at(3))
    assert third.state is ExecutionState.COMPLETED
    assert [getattr(a, "entity_id", None) for a in third.actions] == ["@counter@a", "@counter@b", "@counter@b"]


def test_a_history_written_before_names_were_case_insensitive_replays():
    # the mistake: a running instance's history records "@Counter@a"; the code now asks for
    # "@counter@a", which must match, not fail the instance with a NonDeterminismError
    registry = Registry()
    registry.add_orchestrator(lock_then_call)
    executor = OrchestrationExecutor(registry.orchestrators.get, "o")
    history = []
    for events in ([started("lock_then_call", instance_id="o")], [EntityLockGranted(at(2), 1, ())]):
        history += executor.process(events, at(len(history))).new_events
    legacy = [_legacy_case(e) for e in history]
    replayed = OrchestrationExecutor(registry.orchestrators.get, "o")
    replayed.replay(legacy)
    result = replayed.process([EntityOperationCompleted(at(9), 2, 0)], at(9))
    assert result.state is ExecutionState.COMPLETED, result.failure


def _legacy_case(event):
    """``event`` as the previous version recorded it: entity names as written."""
    from dataclasses import replace

    def old(key):
        return key.replace("@counter@", "@Counter@")

    if hasattr(event, "lock_set"):
        return replace(event, lock_set=tuple(sorted(old(k) for k in event.lock_set)))
    if type(event).__name__.startswith("Entity") and hasattr(event, "instance_id"):
        return replace(event, instance_id=old(event.instance_id))
    return event


# -- 3. class-entity methods with optional parameters -------------------------------------------


class Counter:
    def __init__(self):
        self.value = 0

    def get(self):
        return self.value

    def set(self, value):
        self.value = value

    def add(self, value=1):
        self.value += value
        return self.value

    def add_all(self, *values):
        self.value += sum(values)
        return self.value

    def do_nothing(self, _):
        return _


COUNTER = EntitySpec("Counter", Counter, True)
C = EntityId("Counter", "test-key")


def test_method_with_no_input_parameter():
    # microsoft/durabletask-python tests/durabletask/test_entity_executor.py
    #   TestClassBasedEntityMethodDispatch.test_method_with_no_input_parameter
    assert result_of(run_entity(COUNTER, C, EntityState(), [call("get")], NOW)) == 0


def test_method_with_input_parameter():
    # ... test_entity_executor.py TestClassBasedEntityMethodDispatch.test_method_with_input_parameter
    st = EntityState()
    assert result_of(run_entity(COUNTER, C, st, [call("set", 42)], NOW)) is None
    assert st.state.value == 42


def test_mix_of_methods_with_and_without_input():
    # ... test_entity_executor.py TestClassBasedEntityMethodDispatch.test_mix_of_methods_with_and_without_input
    st = EntityState()
    run_entity(COUNTER, C, st, [call("set", 10)], NOW)
    assert result_of(run_entity(COUNTER, C, st, [call("get")], NOW)) == 10


def test_method_with_optional_parameter_uses_default():
    # ... test_entity_executor.py TestClassBasedEntityMethodDispatch.test_method_with_optional_parameter_uses_default
    assert result_of(run_entity(COUNTER, C, EntityState(), [call("add")], NOW)) == 1


def test_method_with_optional_parameter_uses_provided_input():
    # ... test_entity_executor.py
    #   TestClassBasedEntityMethodDispatch.test_method_with_optional_parameter_uses_provided_input
    assert result_of(run_entity(COUNTER, C, EntityState(), [call("add", 5)], NOW)) == 5


def test_signal_without_input_uses_the_default_too():
    # the issue's own example: signal_entity(id, "add") adds 1
    st = EntityState()
    run_entity(COUNTER, C, st, [signal("add"), signal("add"), signal("add", 3)], NOW)
    assert st.state.value == 5


def test_var_positional_method_without_input_gets_no_arguments():
    assert result_of(run_entity(COUNTER, C, EntityState(), [call("add_all")], NOW)) == 0
    assert result_of(run_entity(COUNTER, C, EntityState(), [call("add_all", 4)], NOW)) == 4


def test_required_parameter_without_input_gets_none():
    # microsoft/durabletask-python tests/durabletask/entities/test_class_based_entities_e2e.py
    #   test_client_signal_class_entity_and_custom_name (def do_nothing(self, _), signalled
    #   without input)
    assert result_of(run_entity(COUNTER, C, EntityState(), [call("do_nothing")], NOW)) is None


# -- 4. a failing operation rolls back its state and its messages -----------------------------------


class PickleKeeper(StateKeeper):
    """A keeper that stores what pickle can encode, like the runtime's (which uses the codec):
    a state or message that cannot be encoded fails its operation."""

    def snapshot(self, exists, state):
        return exists, pickle.dumps(state)

    def restore(self, snapshot):
        exists, blob = snapshot
        return exists, pickle.loads(blob)

    def seal(self, exists, state, outgoing):
        for out in outgoing:
            pickle.dumps(out)
        try:
            return self.snapshot(exists, state)
        except Exception as exc:
            raise PayloadError("state of entity @faultyentity@k", repr(state), str(exc)) from None


class Unpicklable:
    def __reduce__(self):
        raise TypeError("problematic object: is not serializable")


def FaultyEntity(ctx: EntityContext):
    """The peers' FaultyEntity (Azure/azure-functions-durable-extension
    test/IsolatedEntities/Entities/FaultyEntity.cs), function style."""
    op = ctx.operation_name
    state = ctx.get_state(lambda: {"value": 0, "sent": 0})
    state = dict(state)
    if op == "Exists":
        ctx.set_result(ctx.has_state)
        return
    if op in ("Delete", "DeleteWithoutReading"):
        ctx.delete_state()
        return
    if op == "DeleteThenThrow":
        ctx.delete_state()
        raise ValueError("KABOOM")
    if op == "Throw":
        raise ValueError("KABOOM")
    if op == "ThrowNested":
        try:
            raise ValueError("KABOOM")
        except ValueError as e:
            raise RuntimeError("KABOOOOOM") from e
    if op == "Get":
        ctx.set_result(state["value"])
    elif op == "GetNumberIncrementsSent":
        ctx.set_result(state["sent"])
    elif op == "Set":
        state["value"] = ctx.get_input()
    elif op == "SetToUnserializable":
        state["problem"] = Unpicklable()
    elif op == "SetThenThrow":
        state["value"] = ctx.get_input()
        ctx.set_state(state)
        raise ValueError("KABOOM")
    elif op in ("Send", "SendThenThrow", "SendThenMakeUnserializable"):
        state["sent"] += 1
        ctx.signal_entity(EntityId("SchedulerEntity", ctx.get_input()), f"{state['sent']}:{state['value']}")
        if op == "SendThenThrow":
            ctx.set_state(state)
            raise ValueError("KABOOM")
        if op == "SendThenMakeUnserializable":
            state["problem"] = Unpicklable()
    elif op == "SendThenCancel":
        state["sent"] += 1
        ctx.signal_entity(EntityId("SchedulerEntity", ctx.get_input()), f"{state['sent']}:{state['value']}")
        ctx.start_new_orchestration("never_started")
        raise asyncio.CancelledError()
    ctx.set_state(state)


FAULTY = EntitySpec("FaultyEntity", FaultyEntity, False)
F = EntityId("FaultyEntity", "k")


def test_rollback_signals_on_exceptions():
    # Azure/azure-functions-durable-extension test/FunctionsV2/Tests/E2E/DurableEntityCoreTests.cs
    #   DurableEntity_RollbackSignalsOnExceptions (orchestration RollbackSignalsOnExceptions in
    #   test/Common/TestOrchestrations.cs): one batch of signals, then the two calls
    st = EntityState()
    batch = [
        signal("Set", 56), signal("Send", "k"), signal("Set", 100), signal("Send", "k"),
        signal("SendThenThrow", "k"), signal("Send", "k"), signal("Set", 10), signal("SendThenThrow", "k"),
        signal("Send", "k"), signal("SetThenThrow", 66), signal("Send", "k"),
        signal("SendThenMakeUnserializable", "k"), signal("Send", "k"), signal("Set", 11), signal("Send", "k"),
        signal("SendThenCancel", "k"),
        call("GetNumberIncrementsSent", task=1), call("Get", task=2),
    ]
    out = run_entity(FAULTY, F, st, batch, NOW, PickleKeeper())
    sent = [o.event.name for o in out if o.target == "@schedulerentity@k"]
    assert sent == ["1:56", "2:100", "3:100", "4:10", "5:10", "6:10", "7:11"]
    assert answers(out) == [(True, 7), (True, 11)]
    assert not [o for o in out if o.target not in ("@schedulerentity@k", "orch")]  # no start either


def test_call_faulty_entity():
    # Azure/azure-functions-durable-extension test/IsolatedEntities/Tests/CallFaultyEntity.cs
    #   CallFaultyEntityOrchestration (one operation per turn, as the awaited calls arrive)
    st, keeper = EntityState(), PickleKeeper()

    def op(name, value=None):
        return answers(run_entity(FAULTY, F, st, [call(name, value)], NOW, keeper))[0]

    assert op("Exists") == (True, False)
    ok, failure = op("Throw")
    assert not ok and failure.message == "KABOOM" and failure.error_type == "ValueError"
    ok, failure = op("ThrowNested")
    assert not ok and failure.message == "KABOOOOOM" and "KABOOM" in failure.details
    ok, failure = op("SetToUnserializable")
    assert not ok and failure.error_type == "orchestrations.PayloadError"
    assert "@faultyentity@k" in failure.message and "not serializable" in failure.message
    assert op("Exists") == (True, False)  # the failed operations left no state behind
    assert op("Set", 3) == (True, None)
    assert op("Get") == (True, 3)
    assert op("SetThenThrow", 333)[0] is False
    assert op("Get") == (True, 3)
    assert op("DeleteThenThrow")[0] is False
    assert op("Get") == (True, 3)
    assert op("Delete") == (True, None)
    assert op("Exists") == (True, False)
    assert op("SetThenThrow", 333)[0] is False
    assert op("Exists") == (True, False)  # rolled back to not existing


@pytest.mark.parametrize(
    ("batch", "expected"),
    [
        ([("Set", 42), ("SetThenThrow", 333), ("DeleteThenThrow", None)], 42),
        ([("Get", None), ("Set", 42), ("Delete", None), ("Set", 43), ("DeleteThenThrow", None)], 43),
        ([("Set", 55), ("SetToUnserializable", None)], 55),
        ([("Set", 1), ("Delete", None), ("Set", 2), ("Delete", None), ("SetThenThrow", 333)], None),
        ([("Set", 1), ("SetThenThrow", 333), ("Set", 2), ("DeleteThenThrow", None), ("Delete", None),
          ("Set", 3)], 3),
    ],
)
def test_call_faulty_entity_batches(batch, expected):
    # Azure/azure-functions-durable-extension test/IsolatedEntities/Tests/CallFaultyEntityBatches.cs
    #   CallFaultyEntityBatchesOrchestration (each batch of signals in one turn)
    st = EntityState()
    run_entity(FAULTY, F, st, [signal(name, value) for name, value in batch], NOW, PickleKeeper())
    assert st.exists is (expected is not None)
    if expected is not None:
        assert st.state["value"] == expected


class Sender:
    """A class entity reaching its context through entities.current_context()."""

    def __init__(self):
        self.count = 0

    def send_then_raise(self, exc):
        ctx = entities.current_context()
        self.count += 1
        ctx.signal_entity(EntityId("Sender", "other"), "noted", self.count)
        ctx.signal_entity(ctx.entity_id, "noted", "to myself")
        ctx.start_new_orchestration("never_started")
        self.helper(exc)

    def helper(self, exc):
        raise exc

    def noted(self, value):
        return value


SENDER = EntitySpec("Sender", Sender, True)
S = EntityId("Sender", "me")


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("plain"), asyncio.CancelledError(), SystemExit(3), GeneratorExit(),
        type("Custom", (BaseException,), {})(),
    ],
    ids=["Exception", "CancelledError", "SystemExit", "GeneratorExit", "custom BaseException"],
)
def test_a_base_exception_fails_only_its_operation_and_sends_nothing(exc):
    # the mistake: an operation raising a BaseException that is not an Exception escaped the
    # entity executor and failed the shard's whole turn (every entity and instance in it)
    st = EntityState()
    out = run_entity(SENDER, S, st, [call("send_then_raise", exc, task=1), call("noted", "after", task=2)], NOW)
    assert [o.target for o in out] == ["orch", "orch"]  # the two answers, no signal, no start
    (ok, failure), second = answers(out)
    assert not ok and failure.error_type.endswith(type(exc).__name__)
    assert second == (True, "after")
    assert st.state.count == 0  # the first operation's state change was rolled back too


def test_keyboard_interrupt_is_not_an_operation_failure():
    with pytest.raises(KeyboardInterrupt):
        run_entity(SENDER, S, EntityState(), [call("send_then_raise", KeyboardInterrupt())], NOW)


def test_an_async_operation_fails_loudly_instead_of_never_running():
    # the mistake: an async method returned a coroutine that never ran (and could not be stored)
    class AsyncCounter:
        async def add(self, amount):
            self.amount = amount

    failure = failure_of(run_entity(EntitySpec("A", AsyncCounter, True), EntityId("A", "k"), EntityState(),
                                    [call("add", 1)], NOW))
    assert failure.error_type == "orchestrations.DurableTypeError"
    assert "'add'" in failure.message and "async" in failure.message


def test_an_async_entity_function_is_refused_at_registration():
    async def AsyncEntity(ctx):
        pass

    with pytest.raises(DurableTypeError, match=r"AsyncEntity.*not async"):
        entity(AsyncEntity)


# -- 6. an unregistered entity name is refused where the operation is made ---------------------------


def test_the_error_names_the_closest_registered_names():
    error = unknown_entity_error("Acount", {"account", "counter", "ledger"})
    assert isinstance(error, ValueError)
    # the obvious fix only: 'counter' is a weaker match than 'account'
    assert "'Acount'" in str(error) and "did you mean 'account'?" in str(error)
    two = unknown_entity_error("acounts", {"account", "accounts", "ledger"})
    assert "did you mean 'accounts' or 'account'?" in str(two)
    assert "registered: 'account', 'ledger'" in str(unknown_entity_error("zzz", {"account", "ledger"}))
    assert "no entity is registered" in str(unknown_entity_error("x", set()))
    check_entity_name("ACCOUNT", {"account"})


def typo_call(ctx):
    yield ctx.call_entity(EntityId("Acount", "a"), "get")


def typo_signal(ctx):
    ctx.signal_entity(EntityId("Acount", "a"), "add", 1)
    return "signalled"


def typo_lock(ctx):
    with (yield ctx.lock_entities([EntityId("Account", "a"), EntityId("Acount", "b")])):
        pass


def caught_typo(ctx):
    try:
        ctx.signal_entity(EntityId("Acount", "a"), "add", 1)
    except ValueError as e:
        caught = str(e)
    yield ctx.call_entity(EntityId("Account", "a"), "get")
    return caught


def known_only(name):
    check_entity_name(name, {"account"})


@pytest.mark.parametrize("fn", [typo_call, typo_signal, typo_lock])
def test_an_orchestration_operation_on_an_unknown_entity_fails_at_the_call(fn):
    # Azure/azure-functions-durable-extension test/IsolatedEntities/Tests/InvalidEntityId.cs
    #   InvalidEntityId.OrchestrationSignal / .OrchestrationCall (the instance fails), for the
    #   mistake of a misspelt name: today a call failed at the entity, a signal was dropped
    #   silently and a lock was granted
    registry = Registry()
    registry.add_orchestrator(fn)
    executor = OrchestrationExecutor(registry.orchestrators.get, "o", known_only)
    result = executor.process([started(fn.__name__, instance_id="o")], at(1))
    assert result.state is ExecutionState.FAILED
    assert result.actions == []
    assert result.failure.error_type == "orchestrations.DurableValueError"
    assert "no entity named 'acount'" in result.failure.message
    assert "did you mean 'account'?" in result.failure.message


def test_the_error_can_be_caught_and_replay_agrees():
    registry = Registry()
    registry.add_orchestrator(caught_typo)
    executor = OrchestrationExecutor(registry.orchestrators.get, "o", known_only)
    first = executor.process([started("caught_typo", instance_id="o")], at(1))
    assert [type(a).__name__ for a in first.actions] == ["CallEntity"]
    history = first.new_events
    replayed = OrchestrationExecutor(registry.orchestrators.get, "o", known_only)
    replayed.replay(history)
    done = replayed.process([EntityOperationCompleted(at(2), 1, 0)], at(2))
    assert done.state is ExecutionState.COMPLETED, done.failure
    assert "no entity named 'acount'" in done.output


def test_without_the_check_the_executor_accepts_any_name():
    registry = Registry()
    registry.add_orchestrator(typo_signal)
    result = OrchestrationExecutor(registry.orchestrators.get, "o").process([started("typo_signal")], at(1))
    assert result.state is ExecutionState.COMPLETED
    assert result.actions == [SignalEntity(1, "@acount@a", "add", 1)]


def Relay(ctx: EntityContext):
    ctx.signal_entity(EntityId(ctx.get_input(), "x"), "add", 1)


def test_an_entity_signalling_an_unknown_entity_fails_that_operation():
    # the mistake, from inside an entity: the signal was delivered and dropped silently
    relay = EntitySpec("Relay", Relay, False)
    st = EntityState()
    out = run_entity(relay, EntityId("Relay", "r"), st, [call("go", "Acount", task=1), call("go", "Account", task=2)],
                     NOW, entity_check=known_only)
    (ok, failure), second = answers(out)
    assert not ok and "did you mean 'account'?" in failure.message
    assert second == (True, None)
    assert [o.target for o in out if isinstance(o.event, EntityRequest)] == ["@account@x"]


# -- 8. an unlock names the lock it releases -----------------------------------------------------------


def lock_msg(holder, execution, section, lock_set=("@counter@c",)):
    return EntityLockMessage(T0, ParentInfo(holder, section, execution), lock_set, 0)


def unlock_msg(holder, execution=None, section=None):
    return EntityUnlockMessage(T0, holder, execution, section)


CTR = EntitySpec("Counter", Counter, True)
CID = EntityId("Counter", "c")


def test_clean_entity_storage_racing_the_holders_own_unlock_never_frees_a_later_lock():
    # Azure/azure-functions-durable-extension test/IsolatedEntities/Tests/CleanOrphanedLock.cs
    #   (clean releases a lock whose holder is gone), for the race of the issue: holder X
    #   completes, clean_entity_storage sees X finished and sends its own unlock while X's is
    #   still in flight; X (restarted with the same instance id, a new execution) takes the
    #   lock again before X's first unlock arrives. That late unlock must not release it.
    st = EntityState()
    run_entity(CTR, CID, st, [lock_msg("X", "e1", 1)], NOW)
    assert (st.locked_by, st.lock) == ("X", ParentInfo("X", 1, "e1"))
    clean, own = unlock_msg("X", "e1", 1), unlock_msg("X", "e1", 1)
    out = run_entity(CTR, CID, st, [clean, lock_msg("X", "e2", 1), own, call("add", 5, by="Y")], NOW)
    assert out[0].event == EntityLockGranted(NOW, 1, ("@counter@c",)) and out[0].execution_id == "e2"
    assert (st.locked_by, st.lock) == ("X", ParentInfo("X", 1, "e2"))  # the later lock holds
    assert len(st.queue) == 1  # Y waits
    out = run_entity(CTR, CID, st, [unlock_msg("X", "e2", 1)], NOW)
    assert st.locked_by is None and answers(out) == [(True, 5)]


def test_an_unlock_from_an_earlier_section_of_the_same_execution_is_ignored():
    # the same race inside one execution: section 1's unlock still in flight while section 5's
    # lock request (another path through the lock set) arrives first
    st = EntityState()
    run_entity(CTR, CID, st, [lock_msg("X", "e1", 1)], NOW)
    run_entity(CTR, CID, st, [lock_msg("X", "e1", 5), unlock_msg("X", "e1", 1)], NOW)
    assert st.lock == ParentInfo("X", 5, "e1")
    run_entity(CTR, CID, st, [unlock_msg("X", "e1", 5)], NOW)
    assert st.locked_by is None and st.lock is None


def test_a_lock_or_an_unlock_written_before_identities_matches_by_instance():
    # a row written by the previous version has the holder's instance id alone, and an unlock
    # still in an outbox has no execution: both keep working
    st = EntityState(exists=False, locked_by="X")
    run_entity(CTR, CID, st, [unlock_msg("X", "e1", 1)], NOW)
    assert st.locked_by is None
    run_entity(CTR, CID, st, [lock_msg("X", "e1", 1)], NOW)
    run_entity(CTR, CID, st, [unlock_msg("X")], NOW)
    assert st.locked_by is None
    run_entity(CTR, CID, st, [lock_msg("X", "e1", 1), unlock_msg("Y")], NOW)
    assert st.locked_by == "X"  # another instance never unlocks


def test_the_orchestration_unlocks_name_its_section():
    def section(ctx):
        with (yield ctx.lock_entities([CID])):
            pass

    registry = Registry()
    registry.add_orchestrator(section)
    executor = OrchestrationExecutor(registry.orchestrators.get, "o")
    executor.process([started("section", instance_id="o")], at(1))
    result = executor.process([EntityLockGranted(at(2), 1, ("@counter@c",))], at(2))
    assert result.actions == [UnlockEntity(2, "@counter@c", 1)]


# -- 7. a state that cannot be stored fails its operation only ---------------------------------------


def test_the_runtime_keeper_fails_the_operation_that_made_the_state_unstorable():
    # Azure/azure-functions-durable-extension test/IsolatedEntities/Tests/CallFaultyEntity.cs
    #   ("SetToUnserializable": the operation fails naming the problem; the entity is unchanged),
    # with the runtime's keeper: the whole shard turn used to fail, for every record in it
    from runtime._entity_host import EntityRecord, RowKeeper

    def Holder(ctx: EntityContext):
        if ctx.operation_name == "poison":
            ctx.set_state(threading.Lock())
        else:
            ctx.set_state(ctx.get_input())
            ctx.set_result("stored")

    spec = EntitySpec("Holder", Holder, False)
    record = EntityRecord(EntityId("Holder", "h"), EntityState())
    prepared = []

    def prepare(out):
        prepared.append(out)
        return ("prepared", out)

    keeper = RowKeeper(record, spec, prepare)
    out = run_entity(spec, record.entity_id, record.state,
                     [call("set", 7, task=1), call("poison", task=2), call("set", 8, task=3)], NOW, keeper)
    first, poisoned, third = answers(out)
    assert first == (True, "stored") and third == (True, "stored")
    assert not poisoned[0] and poisoned[1].error_type == "orchestrations.PayloadError"
    assert "state of entity @holder@h" in poisoned[1].message
    assert record.state.state == 8
    row = record.to_row(spec)
    assert json.loads(row[3]) == 8
    assert [keeper.prepared.get(id(o)) for o in out] == [("prepared", out[0]), None, ("prepared", out[2])]
    assert isinstance(out[1], Outgoing)


def test_the_stored_holder_keeps_its_identity_and_an_old_row_still_loads():
    # the entities table keeps its columns: locked_by holds "instance#execution#request"; a row
    # written by the previous version has the instance id alone; users see the instance id
    from runtime._entity_host import EntityRecord

    new = EntityRecord(CID, EntityState(True, 1, "X", [], ParentInfo("X", 4, "e1")), 1.0)
    row = new.to_row(CTR)
    assert row[4] == "X#e1#4"
    loaded = EntityRecord.from_row(row, CTR)
    assert (loaded.state.locked_by, loaded.state.lock) == ("X", ParentInfo("X", 4, "e1"))
    assert loaded.metadata().locked_by == "X"
    old = EntityRecord.from_row((row[0], "counter", 0, None, "sub:3", None, 1.0), CTR)
    assert (old.state.locked_by, old.state.lock) == ("sub:3", None)
    assert old.to_row(CTR)[4] == "sub:3"


class StringStore3:
    """The peers' StringStore3 (Azure/azure-functions-durable-extension
    test/e2e/Apps/BasicDotNetIsolated/Entities: its own Delete answers whether it existed)."""

    def __init__(self) -> None:
        self.value = ""

    def set(self, value: str) -> None:
        self.value = value

    def get(self) -> str:
        return self.value

    def delete(self) -> bool:
        ctx = entities.current_context()
        existed = ctx.has_state
        ctx.delete_state()
        return existed


def test_a_class_entitys_own_delete_runs_instead_of_the_built_in_one():
    # the peers' CallAndDelete: a class's own delete is dispatched (True, then False); a class
    # without one gets the built-in delete, which answers None
    spec, eid, st = EntitySpec("StringStore3", StringStore3, True), EntityId("StringStore3", "k"), EntityState()
    run_entity(spec, eid, st, [call("set", "333")], NOW)
    assert result_of(run_entity(spec, eid, st, [call("delete", task=2)], NOW)) is True
    assert not st.exists
    assert result_of(run_entity(spec, eid, st, [call("delete", task=3)], NOW)) is False
    plain, pid, pst = EntitySpec("Counter", Counter, True), EntityId("Counter", "k"), EntityState()
    run_entity(plain, pid, pst, [signal("add", 2)], NOW)
    assert result_of(run_entity(plain, pid, pst, [call("delete", task=4)], NOW)) is None and not pst.exists
