"""The ``entities`` row of a shard host's entity record: its queue is stored message by
message, each message encoded once while it waits (issue 12: a contended account with
hundreds of lock requests queued re-encoded all of them at every write)."""

from __future__ import annotations

from entities import EntityId, EntityState
from orchestrations import EntityLockMessage, EntityRequest, ParentInfo
from orchestrations.testing import T0
from runtime._codec import decode, encode
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
    assert decode(first)[1:] == decode(record.to_row()[5])[:2]


def test_an_empty_queue_stores_nothing_and_forgets_the_encodings():
    record = record_with([lock_request(1)])
    record.to_row()
    record.state.queue.clear()
    assert record.to_row()[5] is None
    assert record.queued == {}


def test_a_row_written_before_messages_were_encoded_one_by_one_loads():
    queue = [lock_request(1), lock_request(2)]
    row = list(record_with([]).to_row())
    row[5] = encode(queue)  # the previous form: the list of messages itself
    loaded = EntityRecord.from_row(tuple(row))
    assert loaded.state.queue == queue
    assert decode(loaded.to_row()[5]) != queue  # written again in the new form
    assert [decode(b) for b in decode(loaded.to_row()[5])] == queue
