"""The error tree: one root, pickle round trips (Ray pickles exceptions), control-flow signals."""

import pickle

import pytest

import orchestrations
from orchestrations import (
    DurableError,
    DurableTypeError,
    DurableValueError,
    EventTimeoutError,
    HttpTimeoutError,
    InstanceAlreadyExistsError,
    InstanceNotFoundError,
    LeaseHeldError,
    LeaseLostError,
    LockingRulesViolationError,
    NonDeterminismError,
    OrchestrationFailedError,
    PayloadError,
    ReplicaError,
    RetryableError,
    ShardFileError,
    ShardMismatchError,
    ShardWriteError,
    TaskCancelledError,
    TaskFailedError,
    TerminalError,
)
from orchestrations._errors import OrchestratorExit

#: one sensible instance of every exported DurableError class, with the attributes it must keep
SAMPLES = {
    DurableError: (DurableError("something broke"), {}),
    TerminalError: (TerminalError("cannot succeed"), {}),
    RetryableError: (RetryableError("try again later"), {}),
    DurableValueError: (DurableValueError("bad value 42"), {}),
    DurableTypeError: (DurableTypeError("expected str, got int"), {}),
    InstanceNotFoundError: (InstanceNotFoundError("order-1"), {"instance_id": "order-1"}),
    InstanceAlreadyExistsError: (
        InstanceAlreadyExistsError("order-1", "Running"),
        {"instance_id": "order-1", "status": "Running"},
    ),
    TaskFailedError: (
        TaskFailedError("disk full", "OSError", "Traceback ...", None, "Activity task #3"),
        {"message": "disk full", "error_type": "OSError", "details": "Traceback ...", "cause": None,
         "task": "Activity task #3"},
    ),
    EventTimeoutError: (
        EventTimeoutError.waiting_for("Approval", "0:00:03"),
        {"message": "external event 'Approval' did not arrive within 0:00:03", "error_type": "TimeoutError"},
    ),
    TaskCancelledError: (
        TaskCancelledError.of("timer task #3"),
        {"message": "timer task #3 was cancelled", "error_type": "TaskCancelledError"},
    ),
    HttpTimeoutError: (
        HttpTimeoutError("call_http GET http://x/ timed out", "TimeoutError"),
        {"message": "call_http GET http://x/ timed out", "error_type": "TimeoutError", "cause": None},
    ),
    OrchestrationFailedError: (
        OrchestrationFailedError("order-1", "ValueError: boom"),
        {"instance_id": "order-1", "message": "ValueError: boom"},
    ),
    NonDeterminismError: (
        NonDeterminismError("call_activity 'A' (task 1)", "create_timer (task 1)", "/src/orders.py:12"),
        {"expected": "call_activity 'A' (task 1)", "actual": "create_timer (task 1)", "location": "/src/orders.py:12"},
    ),
    LockingRulesViolationError: (LockingRulesViolationError("nested critical section"), {}),
    ShardFileError: (
        ShardFileError("/data/demo/shard-00.sqlite", "is in use by another process (pid 42)"),
        {"path": "/data/demo/shard-00.sqlite", "reason": "is in use by another process (pid 42)"},
    ),
    ShardMismatchError: (
        ShardMismatchError("demo", 4, 8),
        {"hub": "demo", "recorded": 4, "requested": 8},
    ),
    ShardWriteError: (
        ShardWriteError("/data/demo/shard-00.sqlite", "database or disk is full"),
        {"path": "/data/demo/shard-00.sqlite", "reason": "database or disk is full"},
    ),
    PayloadError: (
        PayloadError("activity input", "<lock object>", "cannot pickle '_thread.lock' object"),
        {"what": "activity input", "value_repr": "<lock object>", "reason": "cannot pickle '_thread.lock' object"},
    ),
    LeaseHeldError: (
        LeaseHeldError("demo", 3, "node-a", "host-a", 4242, 7, 1_800_000_000.0),
        {"hub": "demo", "index": 3, "owner": "node-a", "host": "host-a", "pid": 4242, "generation": 7,
         "expires_at": 1_800_000_000.0},
    ),
    LeaseLostError: (
        LeaseLostError("demo", 3, 7, "generation 8 holds it"),
        {"hub": "demo", "index": 3, "generation": 7, "reason": "generation 8 holds it"},
    ),
    ReplicaError: (
        ReplicaError("litestream", "not installed; pip install 'ray-durable[replica]'"),
        {"what": "litestream", "reason": "not installed; pip install 'ray-durable[replica]'"},
    ),
}


def exported_error_classes():
    return {
        obj
        for name in orchestrations.__all__
        if isinstance(obj := getattr(orchestrations, name), type) and issubclass(obj, DurableError)
    }


def test_every_exported_error_class_has_a_sample():
    assert exported_error_classes() == set(SAMPLES)


@pytest.mark.parametrize("cls", list(SAMPLES), ids=lambda c: c.__name__)
def test_error_survives_pickle_round_trip(cls):
    error, attributes = SAMPLES[cls]
    assert type(error) is cls
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is cls
    assert str(copy) == str(error)
    assert copy.args == error.args
    for name, value in attributes.items():
        assert getattr(copy, name) == value, name


def test_task_failed_error_round_trip_keeps_its_cause():
    cause = KeyError("missing")
    error = TaskFailedError("missing", "KeyError", "Traceback ...", cause)
    assert error.__cause__ is cause
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy.cause) is KeyError
    assert copy.cause.args == ("missing",)
    assert copy.__cause__ is copy.cause
    assert str(copy) == "KeyError: missing"


def test_error_messages_name_their_facts():
    assert "order-1" in str(InstanceNotFoundError("order-1"))
    assert "Running" in str(InstanceAlreadyExistsError("order-1", "Running"))
    nd = str(NonDeterminismError("call_activity 'A' (task 1)", "create_timer (task 1)"))
    assert "call_activity 'A' (task 1)" in nd and "create_timer (task 1)" in nd
    shard = str(ShardMismatchError("demo", 4, 8))
    assert "4" in shard and "8" in shard and "demo" in shard
    assert str(TaskFailedError("plain message")) == "plain message"
    held = str(LeaseHeldError("demo", 3, "node-a", "host-a", 4242, 7, 1_800_000_000.0))
    assert all(fact in held for fact in ("node-a", "host-a", "4242", "generation 7", "2027-01-15T08:00:00"))


def test_every_error_derives_from_durable_error():
    for cls in SAMPLES:
        assert issubclass(cls, DurableError)
        assert issubclass(cls, Exception)


def test_terminal_and_retryable_are_disjoint():
    for cls in SAMPLES:
        assert not (issubclass(cls, TerminalError) and issubclass(cls, RetryableError)), cls
    assert issubclass(TaskFailedError, TerminalError)
    assert issubclass(NonDeterminismError, TerminalError)


def test_durable_value_error_is_a_value_error():
    assert issubclass(DurableValueError, ValueError)
    assert issubclass(PayloadError, ValueError)
    with pytest.raises(ValueError, match="bad"):
        raise DurableValueError("bad input")


def test_durable_type_error_is_a_type_error():
    assert issubclass(DurableTypeError, TypeError)


def test_instance_not_found_is_a_lookup_error():
    assert issubclass(InstanceNotFoundError, LookupError)


def test_orchestrator_exit_is_a_base_exception_but_not_an_exception():
    assert issubclass(OrchestratorExit, BaseException)
    assert not issubclass(OrchestratorExit, Exception)
    assert not issubclass(OrchestratorExit, DurableError)
    caught = []
    with pytest.raises(OrchestratorExit):
        try:
            raise OrchestratorExit()
        except Exception:  # what user code in an orchestrator typically writes
            caught.append("swallowed")
    assert caught == []


def test_orchestrator_exit_survives_pickle():
    assert type(pickle.loads(pickle.dumps(OrchestratorExit()))) is OrchestratorExit
