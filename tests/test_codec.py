"""The storage converter: values as JSON when JSON carries them exactly, marked cloudpickle
otherwise; history events as records named by event type and field; undecodable values shown
as such. Pure: no Ray, no file."""

from __future__ import annotations

import dataclasses
import enum
import json
import pickle
import sys
import threading
import traceback
import types
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestrations import DurableTypeError, DurableValueError, FailureDetails, HistoryEvent, ParentInfo, PayloadError
from orchestrations._history import (
    EVENT_TYPES,
    EntityUnlockMessage,
    ExecutionStarted,
    ExecutionTerminated,
    TaskCompleted,
    TaskFailed,
)
from runtime._codec import (
    _COMPACT,
    LENIENT,
    PICKLE_KEY,
    SAFE,
    Undecodable,
    decode,
    dump_json,
    dump_value,
    encode,
    is_exact_json,
    load_value,
    to_json_value,
    with_cause,
)
from runtime._codec_records import (
    UnknownEvent,
    dump_event,
    event_from_record,
    event_to_record,
    load_event,
    read_event,
    read_event_record,
    split_records,
)

NOW = datetime(2026, 12, 2, 6, 40, 42, 579146, tzinfo=UTC)

#: every event-type name ever stored: a name may be added, never renamed or removed (files
#: written with it must stay readable)
STORED_NAMES = {
    "ExecutionStarted", "OrchestratorStarted", "OrchestratorCompleted", "TaskScheduled", "TaskCompleted",
    "TaskFailed", "TimerCreated", "TimerFired", "EventRaised", "EventSent", "SubOrchestrationInstanceCreated",
    "SubOrchestrationInstanceCompleted", "SubOrchestrationInstanceFailed", "ContinueAsNew", "ExecutionCompleted",
    "ExecutionTerminated", "ExecutionSuspended", "ExecutionResumed", "ExecutionRewound", "EntityOperationCalled",
    "EntityOperationSignaled", "EntityLockRequested", "EntityUnlockSent", "EntityOperationCompleted",
    "EntityOperationFailed", "EntityLockGranted", "EntityRequest", "EntityLockMessage", "EntityUnlockMessage",
    "PatchApplied",
}


class Color(enum.IntEnum):
    RED = 1


@pytest.mark.parametrize(
    "value",
    [None, True, 0, -(2**70), 1.5, -0.0, "", "héllo \udc80", [], {}, [1, "a", None, [2.5]],
     {"a": {"b": [True, None]}}],
)
def test_json_values_are_stored_as_plain_json(value: Any) -> None:
    assert is_exact_json(value)
    text = dump_value(value)
    assert json.loads(text) == value  # readable with json alone
    assert load_value(text) == value
    assert type(load_value(text)) is type(value)


@pytest.mark.parametrize(
    "value",
    [(1, 2), [1, (2,)], {1: "int key"}, {"k": {2, 3}}, Color.RED, float("nan"), float("inf"), b"bytes",
     NOW, timedelta(seconds=3), ValueError("boom"), {PICKLE_KEY: "a user's own key"}, type("S", (str,), {})("x")],
)
def test_values_json_would_change_are_pickled_and_marked(value: Any) -> None:
    assert not is_exact_json(value) or value == {PICKLE_KEY: "a user's own key"}
    tree = json.loads(dump_value(value))
    assert list(tree) == [PICKLE_KEY]
    back = load_value(dump_value(value))
    if isinstance(value, BaseException):
        assert type(back) is ValueError and back.args == value.args
    elif value != value:  # nan
        assert back != back
    else:
        assert back == value and type(back) is type(value)


def test_nesting_too_deep_to_check_is_not_called_json() -> None:
    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]
    assert not is_exact_json(deep)


def _sample(annotation: str, name: str) -> Any:
    """A value for a field of ``annotation`` (so every event type, present or future, is covered)."""
    samples: dict[str, Any] = {
        "Any": {"payload": [1, "two"]},
        "datetime": NOW,
        "datetime | None": NOW + timedelta(minutes=5),
        "FailureDetails": FailureDetails("ValueError", "boom", "Traceback ..."),
        "FailureDetails | None": FailureDetails("KeyError", "'k'", None),
        "ParentInfo": ParentInfo("parent-1", 4, "exec-1"),
        "ParentInfo | None": ParentInfo("parent-2", 5, "exec-2"),
        "tuple[str, ...]": ("@a@1", "@b@2"),
        "str": f"{name}-text",
        "str | None": f"{name}-maybe",
        "int": 7,
        "int | None": 8,
        "bool": False,
    }
    return samples[annotation]


def _events() -> Iterator[HistoryEvent]:
    for cls in EVENT_TYPES.values():
        fields = dataclasses.fields(cls)
        yield cls(**{f.name: _sample(str(f.type), f.name) for f in fields})


@pytest.mark.parametrize("event", list(_events()), ids=lambda e: type(e).__name__)
def test_every_event_type_round_trips_by_name_and_fields(event: HistoryEvent) -> None:
    text = dump_event(event)
    record = json.loads(text)
    assert record["type"] == event.event_type
    assert set(record) == {"type"} | {f.name for f in dataclasses.fields(event)}  # type: ignore[arg-type]
    assert "orchestrations" not in text and "_history" not in text  # no module path on disk
    assert load_event(text) == event


def test_stored_event_names_are_never_removed() -> None:
    assert set(EVENT_TYPES) >= STORED_NAMES


def test_payloads_and_nested_records_are_readable_as_json() -> None:
    started = ExecutionStarted(NOW, "shipping", {"order": 12}, "i-1", "e-1", ParentInfo("p", 3, "pe"))
    record = json.loads(dump_event(started))
    assert record == {
        "type": "ExecutionStarted", "timestamp": "2026-12-02T06:40:42.579146+00:00", "name": "shipping",
        "input": {"order": 12}, "instance_id": "i-1", "execution_id": "e-1",
        "parent": {"instance_id": "p", "task_scheduled_id": 3, "execution_id": "pe"}, "version": None,
    }


def test_a_failure_keeps_its_cause_when_it_can() -> None:
    event = TaskFailed(NOW, 2, FailureDetails("ValueError", "boom", "tb", ValueError("boom")))
    back = load_event(dump_event(event))
    assert isinstance(back, TaskFailed)
    assert back.failure.error_type == "ValueError" and back.failure.details == "tb"
    assert isinstance(back.failure.cause, ValueError) and back.failure.cause.args == ("boom",)
    assert json.loads(dump_event(event))["failure"]["message"] == "boom"


def test_fields_missing_from_a_record_take_their_defaults() -> None:
    record = {"type": "EntityUnlockMessage", "timestamp": NOW.isoformat(), "holder_id": "orch-1"}
    assert event_from_record(record) == EntityUnlockMessage(NOW, "orch-1", None, None)


def test_a_record_of_a_non_event_is_refused() -> None:
    with pytest.raises(DurableTypeError, match="not a stored history event"):
        event_to_record(FailureDetails("x", "y"))  # type: ignore[arg-type]


def test_an_unknown_event_type_is_shown_not_raised_by_readers() -> None:
    text = json.dumps({"type": "FromTheFuture", "timestamp": NOW.isoformat(), "name": "n"})
    with pytest.raises(DurableValueError, match="unknown history event type 'FromTheFuture'"):
        load_event(text)
    event = read_event(text, LENIENT)
    assert isinstance(event, UnknownEvent)
    assert (event.event_type, event.timestamp, event.name) == ("FromTheFuture", NOW, "n")
    assert "unknown event type 'FromTheFuture'" in repr(event.input)
    assert isinstance(read_event("not json", SAFE), UnknownEvent)


@pytest.fixture
def gone_value() -> Iterator[str]:
    """The stored form of an object whose class lived in a module that no longer exists."""
    module = types.ModuleType("durable_gone_module")
    exec("class Parcel:\n    def __init__(self, w):\n        self.w = w\n", module.__dict__)
    sys.modules[module.__name__] = module
    try:
        stored = dump_value([module.Parcel(3)], "a parcel")
        assert pickle.loads(pickle.dumps(module.Parcel(1))).w == 1  # pickled by reference
    finally:
        del sys.modules[module.__name__]
    yield stored


def test_a_value_whose_class_is_gone_is_reported_as_undecodable(gone_value: str) -> None:
    with pytest.raises(ModuleNotFoundError):
        load_value(gone_value)
    lenient = load_value(gone_value, LENIENT)
    assert isinstance(lenient, Undecodable)
    assert "durable_gone_module" in lenient.reason
    safe = load_value(gone_value, SAFE)
    assert isinstance(safe, list) and "durable_gone_module.Parcel: not decoded" in repr(safe[0])  # no code run


def test_an_event_with_an_undecodable_payload_keeps_its_other_fields(gone_value: str) -> None:
    record = event_to_record(TaskCompleted(NOW, 3, None))
    record["result"] = json.loads(gone_value)
    event = read_event_record(record, LENIENT)
    assert isinstance(event, TaskCompleted) and event.task_scheduled_id == 3
    assert isinstance(event.result, Undecodable)
    assert "undecodable" in repr(event.result)


def test_a_top_level_object_of_a_gone_class_names_its_type() -> None:
    module = types.ModuleType("durable_gone_module2")
    exec("class Parcel:\n    pass\n", module.__dict__)
    sys.modules[module.__name__] = module
    try:
        stored = dump_value(module.Parcel())
    finally:
        del sys.modules[module.__name__]
    for mode in (LENIENT, SAFE):
        value = load_value(stored, mode)
        assert isinstance(value, Undecodable)
        assert value.type_name == "durable_gone_module2.Parcel"


def test_corrupt_stored_text_is_undecodable_for_readers() -> None:
    assert isinstance(load_value("{not json", SAFE), Undecodable)
    assert isinstance(load_value(json.dumps({PICKLE_KEY: "!!"}), LENIENT), Undecodable)
    assert isinstance(load_value(json.dumps({PICKLE_KEY: "AAAA"}), LENIENT), Undecodable)


def test_to_json_value_of_plain_data_is_the_value_itself() -> None:
    value = {"a": [1, 2]}
    assert to_json_value(value) is value


def test_failure_and_parent_columns_round_trip_as_json() -> None:
    from runtime._codec_records import dump_failure, dump_parent, load_failure, load_parent

    failure = FailureDetails("ValueError", "boom", "tb", ValueError("boom"))
    text = dump_failure(failure)
    assert text is not None and json.loads(text)["error_type"] == "ValueError"
    back = load_failure(text)
    assert isinstance(back, FailureDetails) and back.describe() == "ValueError: boom"
    assert dump_failure(None) is None and load_failure(None) is None
    assert isinstance(load_failure("[1]", LENIENT), Undecodable)
    parent = ParentInfo("p", 2, "e")
    assert load_parent(dump_parent(parent)) == parent
    assert dump_parent(None) is None


def test_a_message_round_trips_as_a_json_record_and_every_field_is_accounted_for() -> None:
    from orchestrations import EventRaised
    from runtime._messages import _PLAIN_FIELDS, Message

    not_stored = {"ack", "from_self", "parked", "journaled"}  # reset by to_bytes: local to one process
    events = {"event", "carryover", "restart"}
    fields = {f.name for f in dataclasses.fields(Message)}
    assert fields == {"instance_id"} | set(_PLAIN_FIELDS) | events | not_stored, (
        "a field appended to Message must be stored by to_bytes (or named here as local)"
    )
    msg = Message(
        "i-1", ExecutionStarted(NOW, "job", (1, 2), "i-1", "e-1"), execution_id="e-1", msg_id="m-1",
        continue_as_new=True, client=True, carryover=[EventRaised(NOW, "go", {"x": 1})], input_blob='{"a":1}',
        due=12.5, recursive=True, restart=ExecutionStarted(NOW, "job", None, "i-1", "e-0"),
    )
    blob = msg.to_bytes()
    record = json.loads(blob)
    assert record["event"]["type"] == "ExecutionStarted" and record["carryover"][0]["input"] == {"x": 1}
    assert b"orchestrations" not in blob and b"runtime" not in blob
    back = Message.from_bytes(blob)
    assert {n: getattr(back, n) for n in fields - not_stored} == {n: getattr(msg, n) for n in fields - not_stored}


GOLDEN = Path(__file__).parent / "histories" / "storage_v3_records.jsonl"


def test_the_golden_records_of_format_version_3_load_and_store_byte_for_byte() -> None:
    """One stored record per event type, as format version 3 writes it: a change to how any
    event is stored shows up here (and in review), never silently on users' disks."""
    lines = GOLDEN.read_text().splitlines()
    assert {json.loads(line)["type"] for line in lines} == STORED_NAMES
    for line in lines:
        assert dump_event(load_event(line)) == line


class _Level(enum.IntEnum):
    LOW = 1


class _Name(str):
    pass


@pytest.mark.parametrize("tree", [
    {"a": [1, 2.5, None, True, "x"], "b": {"c": -(2**63)}},
    [2**64 - 1, 1e16, 0.1, -0.0],
    {"big": 2**70, "small": -(2**63) - 1},  # past 64 bits: orjson refuses, json writes it
    ["\ud800 lone surrogate"],  # not UTF-8: orjson refuses, json escapes it
    [_Level.LOW, _Name("n")],  # subclasses: written as json writes them
])
def test_dump_json_reads_back_as_json_would_write_it(tree: Any) -> None:
    text = dump_json(tree)
    assert json.loads(text) == json.loads(_COMPACT.encode(tree))
    assert ", " not in text and ": " not in text


def test_dump_json_writes_ascii_trees_byte_for_byte_as_json() -> None:
    tree = {"type": "TaskCompleted", "timestamp": "2026-12-02T06:40:42.579146+00:00", "result": [1, {"k": "v"}]}
    assert dump_json(tree) == _COMPACT.encode(tree)


def test_dump_json_keeps_text_beyond_ascii_as_utf8() -> None:
    text = dump_json({"name": "café 東京 🙂"})
    assert json.loads(text) == {"name": "café 東京 🙂"}
    assert "café" in text


@pytest.mark.parametrize("value", [NOW, dataclasses.make_dataclass("P", ["x"])(1), {1, 2}, object()])
def test_dump_json_refuses_what_json_refuses(value: Any) -> None:
    with pytest.raises(TypeError):
        dump_json({"v": value})


def test_a_non_finite_float_never_reaches_json_text_as_null() -> None:
    for value in (float("nan"), float("inf")):
        stored = dump_value({"x": value})
        assert "null" not in stored
        back = load_value(stored)
        assert back.keys() == {"x"} and str(back["x"]) == str(value)


class _Why(enum.Enum):
    OPS = "ops"


@pytest.mark.parametrize(("reason", "named"), [
    (_Why.OPS, "<_Why.OPS: 'ops'>"), (uuid.UUID(int=7), "UUID("), (float("nan"), "nan"), (float("inf"), "inf"),
])
def test_a_record_field_json_cannot_carry_raises_naming_it_rather_than_being_written_another_way(
    reason: Any, named: str,
) -> None:
    with pytest.raises(PayloadError, match="terminate") as caught:
        dump_event(ExecutionTerminated(NOW, reason), "a terminate reason")
    assert named in str(caught.value) and isinstance(caught.value, ValueError)


@pytest.mark.parametrize("reason", ["plain", 7, _Level.LOW, _Name("n"), [1, "a"], {"k": 1.5}, None])
def test_a_record_field_json_carries_is_written_and_read_back_as_before(reason: Any) -> None:
    back = load_event(dump_event(ExecutionTerminated(NOW, reason)))
    assert isinstance(back, ExecutionTerminated) and back.reason == reason


def test_records_read_from_a_file_are_written_again_exactly_as_json_reads_them() -> None:
    texts = split_records('[{"type":"ExecutionTerminated","reason":NaN},{"type":"X","n":1e400}]')
    assert texts == ['{"type":"ExecutionTerminated","reason":NaN}', '{"type":"X","n":Infinity}']


def test_a_failure_whose_fields_json_cannot_carry_raises_naming_the_value() -> None:
    failure = FailureDetails("ValueError", _Why.OPS)  # type: ignore[arg-type]
    with pytest.raises(PayloadError, match=r"_Why\.OPS"):
        dump_event(TaskFailed(NOW, 1, failure))


def test_a_function_sent_by_value_keeps_its_file_name_in_tracebacks(tmp_path):
    # cloudpickle names the code of functions it sends by value "<dynamic-code>": a script's
    # orchestrator then named no file in its NonDeterminismError, nor an activity in its
    # failure details
    script = tmp_path / "user_script.py"
    script.write_text("def outer(x):\n    def inner():\n        raise ValueError(x)\n    return inner()\n")
    namespace = {"__name__": "__main__"}
    exec(compile(script.read_text(), str(script), "exec"), namespace)
    blob = encode(namespace["outer"])
    assert b"__main__" in blob  # sent by value, as a script's functions are
    rebuilt = decode(blob)
    with pytest.raises(ValueError) as raised:
        rebuilt("boom")
    frames = traceback.extract_tb(raised.value.__traceback__)
    assert [(f.filename, f.name, f.lineno) for f in frames[-2:]] == [
        (str(script), "outer", 4), (str(script), "inner", 3)
    ]


def test_a_failure_keeps_a_copy_of_what_was_raised_as_a_reader_of_it_would_get():
    # a parent served from memory on the same shard saw the child's live exception (its
    # traceback, its __cause__) where a replay reads back a copy: both now see the copy
    try:
        try:
            raise KeyError("inner")
        except KeyError as inner:
            raise ValueError("outer") from inner
    except ValueError as exc:
        raised = exc
    failure = with_cause(FailureDetails("ValueError", "outer"), raised)
    assert isinstance(failure.cause, ValueError) and failure.cause is not raised
    assert failure.cause.args == ("outer",) and failure.cause.__traceback__ is None and failure.cause.__cause__ is None


def test_a_failure_whose_exception_cannot_be_pickled_keeps_no_cause():
    class HoldingError(Exception):
        def __init__(self) -> None:
            super().__init__("holds a lock")
            self.lock = threading.Lock()

    failure = with_cause(FailureDetails("HoldingError", "holds a lock"), HoldingError())
    assert failure.cause is None and failure.message == "holds a lock"
