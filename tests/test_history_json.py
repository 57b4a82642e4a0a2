"""A history as JSON and back (``hub.export_history``, ``ray-durable export``, ``replay --file``).

Pure: no Ray. The round trip gives the same events; values JSON carries exactly are plain
JSON a tool in any language can read, the rest are marked pickles.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from orchestrations import (
    DurableValueError,
    EntityLockGranted,
    EntityLockRequested,
    EntityOperationSignaled,
    ExecutionCompleted,
    FailureDetails,
    ParentInfo,
    Registry,
)
from orchestrations.testing import (
    Replayer,
    at,
    event_raised,
    orchestrator_completed,
    orchestrator_started,
    started,
    task_completed,
    task_failed,
    task_scheduled,
    timer_created,
    timer_fired,
)
from runtime._codec import PICKLE_KEY
from runtime._codec_records import event_from_record, event_to_record
from runtime._history_json import histories_from_json, history_to_json


@dataclass(frozen=True)
class Parcel:
    weight: float


HISTORY = [
    started("shipping", {"order": 7, "items": ["a", "b"]}, instance_id="ship-1",
            parent=ParentInfo("parent-1", 3, "exec-9")),
    orchestrator_started(),
    task_scheduled(1, "weigh", Parcel(2.5)),
    timer_created(2, at(60)),
    EntityLockRequested(at(1), 3, ("@account@a", "@account@b")),
    EntityOperationSignaled(at(1), 4, "@account@a", "add", (1, 2), at(90)),
    orchestrator_completed(),
    task_completed(1, Parcel(2.5)),
    timer_fired(2, at(60)),
    EntityLockGranted(at(61), 3, ("@account@a", "@account@b")),
    event_raised("go", at(5)),  # a datetime payload: pickled, comes back a datetime
    task_failed(5, "carrier down", "ConnectionError"),
    ExecutionCompleted(at(70), "Completed", [1.5, None, True, "ok"]),
]


def test_an_exported_history_loads_back_as_the_same_events():
    text = history_to_json("ship-1", HISTORY)
    [(instance_id, events)] = histories_from_json(text)
    assert instance_id == "ship-1"
    assert events == HISTORY


def test_the_document_names_events_and_fields_and_carries_plain_values_as_json():
    document = json.loads(history_to_json("ship-1", HISTORY))
    assert (document["instance_id"], document["name"], document["format"]) == ("ship-1", "shipping", 1)
    first, scheduled, timer = document["events"][0], document["events"][2], document["events"][3]
    expected = {
        "type": "ExecutionStarted", "timestamp": "2017-05-05T18:45:28+00:00", "name": "shipping",
        "input": {"order": 7, "items": ["a", "b"]}, "instance_id": "ship-1", "execution_id": "exec-0",
        "parent": {"instance_id": "parent-1", "task_scheduled_id": 3, "execution_id": "exec-9"},
    }
    assert {k: first[k] for k in expected} == expected  # fields appended later (with defaults) may follow
    assert set(scheduled) >= {"type", "timestamp", "event_id", "name", "input"}
    assert list(scheduled["input"]) == [PICKLE_KEY]  # a user's object: a marked pickle
    assert timer["fire_at"] == "2017-05-05T18:46:28+00:00"
    assert document["events"][4]["lock_set"] == ["@account@a", "@account@b"]
    assert document["events"][-1]["result"] == [1.5, None, True, "ok"]
    assert document["events"][-2]["failure"]["error_type"] == "ConnectionError"


def test_a_failure_with_its_exception_round_trips():
    cause = ConnectionError("carrier down")
    event = ExecutionCompleted(at(1), "Failed", "ConnectionError: carrier down",
                               FailureDetails("ConnectionError", "carrier down", "Traceback ...", cause))
    back = event_from_record(json.loads(json.dumps(event_to_record(event))))
    assert back.failure.cause.args == cause.args and type(back.failure.cause) is ConnectionError
    assert (back.status, back.result, back.failure.details) == (event.status, event.result, "Traceback ...")


def test_a_loaded_history_replays():
    def shipping(ctx):
        parcel = yield ctx.call_activity("weigh", ctx.get_input())
        return parcel.weight

    registry = Registry()
    registry.add_orchestrator(shipping)
    history = [started("shipping", Parcel(2.0)), orchestrator_started(), task_scheduled(1, "weigh", Parcel(2.0)),
               orchestrator_completed(), task_completed(1, Parcel(2.0))]
    loaded = histories_from_json(history_to_json("test", history))
    assert [r.ok for r in Replayer(registry).replay(loaded)] == [True]


@pytest.mark.parametrize(("text", "error"), [
    ("not json", "not a JSON history"),
    ('{"events": []}', "format None"),
    ('{"format": 1, "events": []}', "needs its 'instance_id'"),
    ('{"format": 1, "instance_id": "x", "events": [7]}', "event 0 of 'x' is not a record"),
    ('{"format": 1, "instance_id": "x", "events": [{"type": "Nope", "timestamp": "2024-01-01T00:00:00"}]}',
     "event 0 of 'x': unknown history event type 'Nope'"),
    ('{"format": 1, "instance_id": "x", "events": [{"type": "OrchestratorStarted", "timestamp": 5}]}',
     "event 0 \\(OrchestratorStarted\\) of 'x' cannot be read"),
    ('{"format": 1, "instance_id": "x", "events": [{"type": "OrchestratorStarted"}]}', "cannot be read"),
    ('{"format": 1, "instance_id": "x", "events": [{"type": "TaskCompleted", "timestamp": "2024-01-01T00:00:00",'
     ' "task_scheduled_id": 1, "result": {"$pickle": "%%%"}}]}', "cannot be read"),
])
def test_a_bad_document_is_refused_naming_what_is_wrong(text, error):
    with pytest.raises(DurableValueError, match=error):
        histories_from_json(text)


def test_several_documents_in_a_list_load_in_order():
    one = json.loads(history_to_json("a", HISTORY[:2]))
    two = json.loads(history_to_json("b", HISTORY[:3]))
    assert [(iid, len(events)) for iid, events in histories_from_json(json.dumps([one, two]))] == [("a", 2), ("b", 3)]
