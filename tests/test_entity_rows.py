"""The ``entities`` row of a shard host's entity record: its queue is stored message by
message, each message encoded once while it waits (issue 12: a contended account with
hundreds of lock requests queued re-encoded all of them at every write)."""

from __future__ import annotations

import json

from entities import EntityId, EntityState
from orchestrations import EntityLockMessage, EntityRequest, ParentInfo
from orchestrations.testing import T0
from runtime._entity_host import EntityRecord

KEY = "@account@a"


def lock_request(n: int) -> EntityLockMessage:
    return EntityLockMessage(T0, ParentInfo(f"orch-{n}", 1, f"exec-{n}"), (KEY, "@account@b"), 0)


def record_with(queue: list) -> EntityRecord:
    return EntityRecord(EntityId.parse(KEY), EntityState(True, 5, "holder", list(queue)))


def test_a_queue_row_loads_back_the_same_messages_in_order():
    queue = [lock_request(1), EntityRequest(T0, "get", None, ParentInfo("orch-2", 3, "e2"), False), lock_request(3)]
    row = record_with(queue).to_row()
    loaded = EntityRecord.from_row(row)
    assert loaded.state.queue == queue
    assert loaded.state.locked_by == "holder"
    # and written again from what was loaded, it is the same row
    assert loaded.to_row()[5] == row[5]


def test_each_queued_message_is_encoded_once_while_it_waits():
    record = record_with([lock_request(n) for n in range(3)])
    first = record.to_row()[5]
    blobs = {id(e): blob for e, blob in record.queued.values()}
    record.state.queue.pop(0)  # granted: it left the queue
    record.state.queue.append(lock_request(9))
    record.to_row()
    again = {id(e): blob for e, blob in record.queued.values()}
    kept = [id(e) for e in record.state.queue[:2]]
    assert all(again[i] is blobs[i] for i in kept)  # the same bytes, not encoded again
    assert len(record.queued) == 3  # what left the queue is forgotten
    assert json.loads(first)[1:] == json.loads(record.to_row()[5])[:2]


def test_an_empty_queue_stores_nothing_and_forgets_the_encodings():
    record = record_with([lock_request(1)])
    record.to_row()
    record.state.queue.clear()
    assert record.to_row()[5] is None
    assert record.queued == {}


def test_the_queue_column_is_a_json_array_of_event_records():
    row = record_with([lock_request(1)]).to_row()
    (record,) = json.loads(row[5])
    assert record["type"] == "EntityLockMessage"
    assert record["holder"] == {"instance_id": "orch-1", "task_scheduled_id": 1, "execution_id": "exec-1"}
    assert record["lock_set"] == [KEY, "@account@b"] and record["position"] == 0
    assert json.loads(row[3]) == 5  # the state: plain JSON


def test_a_version_2_queue_migrates_to_the_same_messages():
    from runtime._codec import encode
    from runtime._codec_v2 import migrate_v2_queue

    queue = [lock_request(1), lock_request(2)]
    for v2 in (encode(queue), encode([encode(e) for e in queue])):  # both forms version 2 wrote
        row = list(record_with([]).to_row())
        row[5] = migrate_v2_queue(v2)
        assert EntityRecord.from_row(tuple(row)).state.queue == queue
