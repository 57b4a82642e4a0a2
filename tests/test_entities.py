"""Pure tests of the entity executor: messages in, new entity state and outgoing messages out.

No Ray, no SQLite. Entities are registered as ``EntitySpec`` values built here (the ``@entity``
decorator writes to the process-wide registry), and every test drives ``run_entity`` with
hand-written messages, the way a shard host would.
"""

import pytest

import entities
from entities import EntityId, EntitySpec, EntityState, Outgoing, run_entity
from orchestrations import (
    DurableTypeError,
    DurableValueError,
    EntityLockGranted,
    EntityLockMessage,
    EntityOperationCompleted,
    EntityOperationFailed,
    EntityRequest,
    EntityUnlockMessage,
    ExecutionStarted,
    ParentInfo,
)
from orchestrations.testing import T0, at

NOW = at(5)
EXEC = "exec-0"


# -- entities under test ------------------------------------------------------------------------


def Counter(context):
    value = context.get_state(lambda: 0)
    op = context.operation_name
    if op == "add":
        value += context.get_input()
    elif op == "reset":
        value = 0
    elif op == "get":
        context.set_result(value)
    elif op == "add_then_fail":
        context.set_state(value + context.get_input())
        raise ValueError("add_then_fail always fails")
    elif op == "whoami":
        context.set_result((str(context.entity_id), context.entity_name, context.entity_key, context.has_state))
    context.set_state(value)


class Account:
    def __init__(self):
        self.balance = 0
        self.log = []

    def deposit(self, amount):
        self.balance += amount
        self.log.append(("deposit", amount))
        return self.balance

    def withdraw(self, amount):
        if amount > self.balance:
            raise ValueError("insufficient funds")
        self.balance -= amount
        self.log.append(("withdraw", amount))
        return self.balance

    def get(self):
        return self.balance

    def spend_then_fail(self, amount):
        self.balance -= amount
        self.log.append(("spent", amount))
        raise RuntimeError("failed after spending")

    def echo(self, value):
        return value

    def whoami(self):
        ctx = entities.current_context()
        return (str(ctx.entity_id), ctx.operation_name, ctx.get_input())

    def notify(self, target_key):
        entities.current_context().signal_entity(EntityId("Counter", target_key), "add", self.balance)
        return "sent"

    def close(self):
        entities.current_context().delete_state()
        return self.balance

    def _secret(self):
        return "private"


COUNTER = EntitySpec("Counter", Counter, False)
ACCOUNT = EntitySpec("Account", Account, True)
C1 = EntityId("Counter", "c1")
ALICE = EntityId("Account", "alice")


# -- message helpers ------------------------------------------------------------------------------


def call(op, value=None, *, by="orch", task=1, execution=EXEC):
    """A call (answered) from orchestration ``by``."""
    return EntityRequest(T0, op, value, ParentInfo(by, task, execution), False)


def signal(op, value=None):
    """A one-way operation (from a client or an entity: no sender)."""
    return EntityRequest(T0, op, value, None, True)


def lock(holder, lock_set, position=0, *, task=1, execution=EXEC):
    return EntityLockMessage(T0, ParentInfo(holder, task, execution), tuple(lock_set), position)


def unlock(holder):
    return EntityUnlockMessage(T0, holder)


def completed(value, *, to="orch", task=1, execution=EXEC, now=NOW):
    return Outgoing(to, EntityOperationCompleted(now, task, value), execution)


def run(spec, entity_id, state, *messages, now=NOW):
    return run_entity(spec, entity_id, state, list(messages), now)


def only_failure(outgoing):
    assert len(outgoing) == 1
    assert isinstance(outgoing[0].event, EntityOperationFailed)
    return outgoing[0].event.failure


# -- function style -------------------------------------------------------------------------------


def test_function_entity_is_created_implicitly_by_its_first_operation():
    st = EntityState()
    assert st.is_empty
    out = run(COUNTER, C1, st, call("add", 5))
    assert st.exists and st.state == 5
    assert out == [completed(None)]


def test_function_entity_get_answers_the_caller_with_the_result():
    st = EntityState(exists=True, state=7)
    out = run(COUNTER, C1, st, call("get", by="o-42", task=9, execution="exec-7"))
    assert out == [Outgoing("o-42", EntityOperationCompleted(NOW, 9, 7), "exec-7")]
    assert st.state == 7


def test_function_entity_get_on_a_new_entity_uses_the_initializer():
    st = EntityState()
    out = run(COUNTER, C1, st, call("get"))
    assert out == [completed(0)]


def test_operations_run_in_the_order_given_and_each_caller_gets_its_answer():
    st = EntityState()
    out = run(
        COUNTER, C1, st,
        call("add", 1, by="a", task=1), call("reset", by="b", task=2), call("add", 2, by="c", task=3),
        call("get", by="d", task=4),
    )
    assert out == [
        completed(None, to="a", task=1),
        completed(None, to="b", task=2),
        completed(None, to="c", task=3),
        completed(2, to="d", task=4),
    ]
    assert st.state == 2


def test_signals_get_no_answer_but_change_state():
    st = EntityState()
    out = run(COUNTER, C1, st, signal("add", 3), signal("add", 4))
    assert out == []
    assert st.state == 7


def test_a_signal_is_not_answered_even_when_it_names_a_sender():
    st = EntityState()
    sent = EntityRequest(T0, "get", None, ParentInfo("orch", 1, EXEC), True)
    assert run(COUNTER, C1, st, sent) == []


def test_a_failing_signal_is_not_answered_and_is_rolled_back():
    st = EntityState(exists=True, state=1)
    out = run(COUNTER, C1, st, signal("add_then_fail", 10))
    assert out == []
    assert st.state == 1


def test_context_exposes_the_entity_id_name_and_key():
    st = EntityState()
    out = run(COUNTER, EntityId("Counter", "k@1"), st, call("whoami"))
    assert out == [completed(("@counter@k@1", "counter", "k@1", False))]


def test_builtin_delete_removes_the_state_and_the_entity_starts_over():
    st = EntityState(exists=True, state=41)
    out = run(COUNTER, C1, st, call("delete", task=1), call("get", task=2))
    assert out == [completed(None, task=1), completed(0, task=2)]
    assert st.exists and st.state == 0


def test_builtin_delete_leaves_an_empty_entity():
    st = EntityState(exists=True, state=41)
    run(COUNTER, C1, st, signal("delete"))
    assert not st.exists and st.state is None
    assert st.is_empty


def test_function_entity_exception_rolls_back_only_that_operation():
    st = EntityState()
    out = run(
        COUNTER, C1, st,
        call("add", 5, task=1), call("add_then_fail", 100, task=2), call("add", 1, task=3), call("get", task=4),
    )
    assert out[0] == completed(None, task=1)
    assert isinstance(out[1].event, EntityOperationFailed)
    assert out[1].target == "orch" and out[1].execution_id == EXEC
    assert out[1].event.task_scheduled_id == 2
    assert out[1].event.failure.error_type == "ValueError"
    assert out[1].event.failure.message == "add_then_fail always fails"
    assert out[2:] == [completed(None, task=3), completed(6, task=4)]
    assert st.state == 6


def test_failing_first_operation_leaves_the_entity_nonexistent():
    st = EntityState()
    failure = only_failure(run(COUNTER, C1, st, call("add_then_fail", 1)))
    assert failure.error_type == "ValueError"
    assert not st.exists and st.state is None


def ListLog(context):
    items = context.get_state(list)
    items.append(context.get_input())
    context.set_state(items)
    if context.get_input() == "bad":
        raise ValueError("bad item")


def test_function_entity_rollback_undoes_in_place_mutation_of_mutable_state():
    st = EntityState(exists=True, state=["a"])
    failure = only_failure(run(EntitySpec("ListLog", ListLog, False), EntityId("ListLog", "k"), st, call("x", "bad")))
    assert failure.message == "bad item"
    assert st.state == ["a"]


# -- class style ---------------------------------------------------------------------------------


def test_class_entity_is_created_implicitly_and_methods_are_operations():
    st = EntityState()
    out = run(ACCOUNT, ALICE, st, call("deposit", 10, task=1), call("withdraw", 3, task=2), call("get", task=3))
    assert out == [completed(10, task=1), completed(7, task=2), completed(7, task=3)]
    assert st.exists
    assert isinstance(st.state, Account)
    assert st.state.balance == 7


def test_class_entity_init_runs_once_on_first_use():
    st = EntityState()
    run(ACCOUNT, ALICE, st, signal("deposit", 10))
    first = st.state
    run(ACCOUNT, ALICE, st, signal("deposit", 5))
    assert st.state is first
    assert st.state.log == [("deposit", 10), ("deposit", 5)]


def test_class_entity_insufficient_funds_fails_with_value_error_and_keeps_balance():
    st = EntityState()
    run(ACCOUNT, ALICE, st, signal("deposit", 10))
    out = run(ACCOUNT, ALICE, st, call("withdraw", 100, task=4))
    assert len(out) == 1
    assert out[0].target == "orch" and out[0].execution_id == EXEC
    event = out[0].event
    assert isinstance(event, EntityOperationFailed)
    assert event.task_scheduled_id == 4
    assert event.failure.error_type == "ValueError"
    assert event.failure.message == "insufficient funds"
    assert st.state.balance == 10


def test_class_entity_in_place_mutation_is_rolled_back_by_the_deep_copy():
    st = EntityState()
    out = run(ACCOUNT, ALICE, st, call("deposit", 10, task=1), call("spend_then_fail", 4, task=2),
              call("get", task=3))
    assert out[0] == completed(10, task=1)
    assert out[1].event.failure.error_type == "RuntimeError"
    assert out[1].event.failure.message == "failed after spending"
    assert out[2] == completed(10, task=3)
    assert st.state.balance == 10
    assert st.state.log == [("deposit", 10)]


def test_class_entity_failing_first_operation_leaves_it_nonexistent():
    st = EntityState()
    failure = only_failure(run(ACCOUNT, ALICE, st, call("withdraw", 1)))
    assert failure.message == "insufficient funds"
    assert not st.exists and st.state is None
    assert st.is_empty


@pytest.mark.parametrize("op", ["missing", "balance", "log", "_secret", "__init__", "__class__"])
def test_class_entity_unknown_private_or_non_callable_operation_fails(op):
    st = EntityState()
    run(ACCOUNT, ALICE, st, signal("deposit", 3))
    failure = only_failure(run(ACCOUNT, ALICE, st, call(op)))
    assert failure.error_type == "orchestrations.DurableValueError"
    assert repr(op) in failure.message
    assert st.state.balance == 3


def test_class_entity_zero_parameter_method_is_called_without_the_input():
    st = EntityState()
    out = run(ACCOUNT, ALICE, st, call("deposit", 2, task=1), call("get", "ignored input", task=2))
    assert out == [completed(2, task=1), completed(2, task=2)]


def test_class_entity_one_parameter_method_gets_none_without_input():
    out = run(ACCOUNT, ALICE, EntityState(), call("echo"))
    assert out == [completed(None)]


def test_current_context_inside_a_class_method():
    out = run(ACCOUNT, ALICE, EntityState(), call("whoami", "in"))
    assert out == [completed(("@account@alice", "whoami", "in"))]


def test_current_context_raises_outside_an_operation():
    with pytest.raises(DurableValueError, match="only available inside an entity operation"):
        entities.current_context()
    run(ACCOUNT, ALICE, EntityState(), call("whoami"))
    with pytest.raises(ValueError):
        entities.current_context()


def test_class_entity_can_delete_itself_through_the_context():
    st = EntityState()
    out = run(ACCOUNT, ALICE, st, call("deposit", 6, task=1), call("close", task=2))
    assert out == [completed(6, task=1), completed(6, task=2)]
    assert not st.exists and st.state is None


def test_builtin_delete_of_a_class_entity_resets_it():
    st = EntityState()
    out = run(ACCOUNT, ALICE, st, signal("deposit", 6), call("delete", task=1), call("get", task=2))
    assert out == [completed(None, task=1), completed(0, task=2)]


# -- messages an entity sends ---------------------------------------------------------------------


def Relay(context):
    op = context.operation_name
    if op == "fanout":
        context.signal_entity(EntityId("Counter", "x"), "add", 2)
        context.signal_entity(EntityId("Counter", "y"), "reset")
        context.set_result(context.start_new_orchestration("Proc", {"n": 1}, instance_id="job-1"))
    elif op == "start_default_id":
        context.set_result(context.start_new_orchestration("Proc"))
    elif op == "signal_then_fail":
        context.signal_entity(EntityId("Counter", "x"), "add", 1)
        context.start_new_orchestration("Proc", instance_id="job-2")
        raise RuntimeError("after sending")
    elif op == "signal_bad_target":
        context.signal_entity("@Counter@x", "add", 1)
    context.set_state(op)


RELAY = EntitySpec("Relay", Relay, False)
R1 = EntityId("Relay", "r")


def test_entity_signals_and_starts_orchestrations_after_the_operation():
    out = run(RELAY, R1, EntityState(), call("fanout", task=3))
    assert out == [
        Outgoing("@counter@x", EntityRequest(NOW, "add", 2, None, True)),
        Outgoing("@counter@y", EntityRequest(NOW, "reset", None, None, True)),
        Outgoing("job-1", ExecutionStarted(NOW, "Proc", {"n": 1}, "job-1", "")),
        completed("job-1", task=3),
    ]


def test_started_orchestration_gets_a_fresh_instance_id_by_default():
    out = run(RELAY, R1, EntityState(), call("start_default_id", task=1), call("start_default_id", task=2))
    first, second = out[1].event.result, out[3].event.result
    assert out[0].target == first and out[0].event.instance_id == first
    assert out[2].target == second
    assert first != second
    assert len(first) == 32 and all(c in "0123456789abcdef" for c in first)


def test_failing_operation_sends_none_of_its_messages():
    st = EntityState(exists=True, state="before")
    failure = only_failure(run(RELAY, R1, st, call("signal_then_fail")))
    assert failure.error_type == "RuntimeError"
    assert st.state == "before"


def test_signal_to_something_that_is_not_an_entity_id_fails_the_operation():
    failure = only_failure(run(RELAY, R1, EntityState(), call("signal_bad_target")))
    assert failure.error_type == "orchestrations.DurableValueError"


def test_class_entity_signals_through_current_context():
    st = EntityState()
    out = run(ACCOUNT, ALICE, st, signal("deposit", 9), call("notify", "c7"))
    assert out == [Outgoing("@counter@c7", EntityRequest(NOW, "add", 9, None, True)), completed("sent")]


# -- unregistered entities --------------------------------------------------------------------------


def test_unregistered_entity_answers_entity_not_found_and_keeps_nothing():
    st = EntityState()
    ghost = EntityId("Ghost", "g")
    failure = only_failure(run(None, ghost, st, call("anything")))
    assert failure.error_type == "EntityNotFound"
    assert "'ghost'" in failure.message
    assert run(None, ghost, st, signal("anything")) == []
    assert st.is_empty


# -- the lock protocol ------------------------------------------------------------------------------

LOCK_SET = ("@counter@a", "@counter@b", "@counter@c")


def test_lock_message_locks_and_is_forwarded_to_the_next_entity():
    st = EntityState()
    out = run(COUNTER, EntityId("Counter", "a"), st, lock("A", LOCK_SET, 0, task=4))
    assert st.locked_by == "A"
    assert out == [Outgoing("@counter@b", EntityLockMessage(NOW, ParentInfo("A", 4, EXEC), LOCK_SET, 1))]
    assert not st.is_empty


def test_last_entity_of_the_lock_set_grants_the_lock_to_the_holder():
    st = EntityState()
    out = run(COUNTER, EntityId("Counter", "c"), st, lock("A", LOCK_SET, 2, task=4, execution="exec-9"))
    assert st.locked_by == "A"
    assert out == [Outgoing("A", EntityLockGranted(NOW, 4, LOCK_SET), "exec-9")]


def test_single_entity_lock_set_is_granted_at_once():
    st = EntityState()
    out = run(COUNTER, C1, st, lock("A", ("@counter@c1",), task=2))
    assert out == [Outgoing("A", EntityLockGranted(NOW, 2, ("@counter@c1",)), EXEC)]


def locked_counter(value=0, holder="A"):
    return EntityState(exists=True, state=value, locked_by=holder)


def test_locked_entity_queues_requests_from_others_fifo_and_serves_the_holder():
    st = locked_counter(10)
    other_call, other_signal, other_lock = call("add", 1, by="B"), signal("add", 2), lock("C", ("@counter@c1",))
    out = run(COUNTER, C1, st, other_call, other_signal, other_lock, call("get", by="A", task=5))
    assert out == [completed(10, to="A", task=5)]
    assert st.queue == [other_call, other_signal, other_lock]
    assert st.locked_by == "A"
    assert st.state == 10


def test_unlock_by_a_non_holder_is_ignored():
    st = locked_counter(10)
    queued = call("add", 1, by="B")
    out = run(COUNTER, C1, st, queued, unlock("B"))
    assert out == []
    assert st.locked_by == "A"
    assert st.queue == [queued]


def test_unlock_of_an_unlocked_entity_is_ignored():
    st = EntityState(exists=True, state=3)
    assert run(COUNTER, C1, st, unlock("A")) == []
    assert st.locked_by is None and st.state == 3


def test_unlock_by_the_holder_drains_the_queue_in_order():
    st = locked_counter(10)
    run(COUNTER, C1, st, call("add", 1, by="B", task=1), signal("add", 2), call("get", by="C", task=7))
    assert st.state == 10
    out = run(COUNTER, C1, st, unlock("A"))
    assert out == [completed(None, to="B", task=1), completed(13, to="C", task=7)]
    assert st.locked_by is None and st.queue == []
    assert st.state == 13


def test_queued_lock_request_relocks_and_leaves_the_rest_queued():
    st = locked_counter(0)
    later = [call("get", by="D", task=3), signal("add", 5)]
    run(COUNTER, C1, st, call("add", 1, by="B", task=1), lock("C", ("@counter@c1",), task=2), *later)
    out = run(COUNTER, C1, st, unlock("A"))
    assert out == [
        completed(None, to="B", task=1),
        Outgoing("C", EntityLockGranted(NOW, 2, ("@counter@c1",)), EXEC),
    ]
    assert st.locked_by == "C"
    assert st.queue == later
    assert st.state == 1

    # the new holder is served at once; the others still wait, then run in order
    assert run(COUNTER, C1, st, call("add", 10, by="C", task=4)) == [completed(None, to="C", task=4)]
    assert st.queue == later
    out = run(COUNTER, C1, st, unlock("C"))
    assert out == [completed(11, to="D", task=3)]
    assert st.state == 16
    assert st.locked_by is None and st.queue == []


def test_queued_lock_request_is_forwarded_when_it_relocks():
    st = locked_counter(0)
    run(COUNTER, EntityId("Counter", "a"), st, lock("B", LOCK_SET, 0, task=6))
    out = run(COUNTER, EntityId("Counter", "a"), st, unlock("A"))
    assert out == [Outgoing("@counter@b", EntityLockMessage(NOW, ParentInfo("B", 6, EXEC), LOCK_SET, 1))]
    assert st.locked_by == "B"


def test_unlock_and_requests_in_one_batch_are_applied_in_order():
    st = locked_counter(0)
    out = run(COUNTER, C1, st, call("add", 1, by="B", task=1), unlock("A"), call("get", by="B", task=2))
    assert out == [completed(None, to="B", task=1), completed(1, to="B", task=2)]


def test_relock_from_queue_serves_the_new_holders_queued_requests():
    # reachable: `t = ctx.lock_entities([e]); c = ctx.call_entity(e, "get"); yield ctx.task_all([t, c])`
    # is allowed by the rules (the call targets a locked entity) and sends lock, then call.
    st = locked_counter(4)
    run(COUNTER, C1, st, lock("B", ("@counter@c1",), task=1), call("get", by="B", task=2))
    out = run(COUNTER, C1, st, unlock("A"))
    assert Outgoing("B", EntityLockGranted(NOW, 1, ("@counter@c1",)), EXEC) in out
    assert completed(4, to="B", task=2) in out
    assert st.queue == []


def test_another_execution_of_the_holders_instance_waits_like_anyone_else():
    # the holder's instance was terminated and started again: its new execution is not the
    # holder, neither for a lock request nor for a call
    st = EntityState(exists=True, state=0, locked_by="A", lock=ParentInfo("A", 1, EXEC))
    new_lock, new_call = lock("A", ("@counter@c1",), task=1, execution="new"), call("get", by="A", execution="new")
    assert run(COUNTER, C1, st, new_lock, new_call) == []
    assert st.queue == [new_lock, new_call] and st.lock == ParentInfo("A", 1, EXEC)
    # its own execution is still served
    assert run(COUNTER, C1, st, call("get", by="A", task=3)) == [completed(0, to="A", task=3)]
    out = run(COUNTER, C1, st, EntityUnlockMessage(T0, "A", EXEC, 1))
    assert Outgoing("A", EntityLockGranted(NOW, 1, ("@counter@c1",)), "new") in out
    assert st.lock == ParentInfo("A", 1, "new") and st.queue == []


def test_an_unlock_withdraws_the_lock_request_it_names_from_the_queue():
    st = locked_counter(0, holder="H")
    ended, other = lock("X", ("@counter@c1",), task=4), lock("Y", ("@counter@c1",), task=2)
    run(COUNTER, C1, st, ended, other)
    assert run(COUNTER, C1, st, EntityUnlockMessage(T0, "X", EXEC, 3)) == []  # another request
    assert st.queue == [ended, other]
    assert run(COUNTER, C1, st, EntityUnlockMessage(T0, "X", EXEC, 4)) == []
    assert st.queue == [other] and st.locked_by == "H"
    out = run(COUNTER, C1, st, unlock("H"))
    assert out == [Outgoing("Y", EntityLockGranted(NOW, 2, ("@counter@c1",)), EXEC)]


def test_lock_works_for_an_unregistered_entity_name():
    st = EntityState()
    out = run(None, EntityId("Ghost", "g"), st, lock("A", ("@ghost@g",), task=1))
    assert out == [Outgoing("A", EntityLockGranted(NOW, 1, ("@ghost@g",)), EXEC)]


# -- entity ids ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "key", "text"),
    [
        ("Counter", "c1", "@counter@c1"),
        ("Account", "a@b@c", "@account@a@b@c"),
        ("Kunde", "Müller 東京", "@kunde@Müller 東京"),
    ],
)
def test_entity_id_string_form_and_parse_round_trip(name, key, text):
    eid = EntityId(name, key)
    assert str(eid) == text
    assert EntityId.parse(text) == eid
    assert EntityId.parse(str(eid)).key == key


@pytest.mark.parametrize("name", ["", "a@b", "@", 3, None])
def test_entity_id_rejects_bad_names(name):
    with pytest.raises(ValueError):
        EntityId(name, "k")


def test_entity_id_rejects_a_non_string_key():
    with pytest.raises(DurableTypeError):
        EntityId("Counter", 1)


def test_entity_id_rejects_an_over_long_id():
    with pytest.raises(ValueError):
        EntityId("Counter", "k" * 600)


@pytest.mark.parametrize("text", ["Counter@c1", "@Counter", "", "@@key", 42])
def test_entity_id_parse_rejects_malformed_strings(text):
    with pytest.raises(ValueError):
        EntityId.parse(text)


def test_entity_ids_are_values():
    assert EntityId("A", "k") == EntityId("A", "k")
    assert len({EntityId("A", "k"), EntityId("A", "k"), EntityId("A", "j")}) == 2
    with pytest.raises(AttributeError):
        EntityId("A", "k").key = "j"  # frozen
