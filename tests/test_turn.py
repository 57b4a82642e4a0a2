"""The ``Turn`` object a shard host stages one turn into: rounds, sends, work, parks, rollback."""

from __future__ import annotations

from datetime import UTC, datetime

from orchestrations import EventRaised
from runtime._activities import ActivityCall
from runtime._delivery import Outbound
from runtime._messages import Message, to_ts
from runtime._schema import EntityRow, InstanceRow
from runtime._turn import Turn
from runtime._turn_writes import TurnWrites, without_superseded

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _out(dest: int, msg_id: str) -> Outbound:
    msg = Message("i1", EventRaised(NOW, "go", None), msg_id=msg_id)
    return Outbound(msg_id, dest, msg, msg.to_bytes())


def test_a_turn_starts_with_one_round_and_its_clock():
    turn = Turn(0, NOW)
    assert turn.now == NOW and turn.now_ts == to_ts(NOW)
    assert turn.rounds == [turn.writes] and turn.writes.is_empty()
    second = turn.next_round()
    assert turn.rounds[-1] is second is turn.writes and len(turn.rounds) == 2


def test_send_keeps_messages_to_its_own_shard_local_and_puts_the_rest_in_the_outbox():
    turn = Turn(1, NOW)
    here, there = _out(1, "a"), _out(0, "b")
    turn.send([here, there])
    assert turn.after.local == [here]
    assert turn.after.outbox == [there] and turn.writes.add_outbox == [("b", 0, there.blob)]
    turn.send([here], keep_local=False)
    assert turn.after.outbox == [there, here] and [r[0] for r in turn.writes.add_outbox] == ["b", "a"]


def test_stage_work_records_activities_and_timers_for_the_commit_and_after_it():
    turn = Turn(0, NOW)
    call = ActivityCall("i1", "e1", 3, "act", b"x")
    timer = ("i1", "e1", 4, 123.0)
    turn.stage_work([call], [timer])
    assert turn.writes.add_activities == [("i1", "e1", 3, "act", b"x")] and turn.after.activities == [call]
    assert turn.writes.add_timers == [timer] and turn.after.timers == [timer]


def test_park_gives_a_message_an_id_and_keeps_it_without_its_ack():
    turn = Turn(0, NOW)
    msg = Message("i1", EventRaised(NOW, "go", None))
    turn.park(msg, 99.0)
    assert msg.msg_id is not None and msg.due == 99.0
    [(msg_id, due, blob)] = turn.writes.add_scheduled
    assert (msg_id, due) == (msg.msg_id, 99.0) and Message.from_bytes(blob).instance_id == "i1"
    assert turn.after.parked[0].ack is None and turn.after.parked[0].msg_id == msg.msg_id


def test_rollback_drops_what_was_staged_since_the_mark():
    turn = Turn(0, NOW)
    turn.send([_out(0, "a")])
    mark = turn.mark()
    turn.send([_out(0, "b"), _out(1, "c")])
    turn.writes.delivered.append("d")
    turn.rollback(mark)
    assert [o.msg_id for o in turn.after.local] == ["a"] and turn.after.outbox == []
    assert turn.writes.add_outbox == [] and turn.writes.delivered == []


def test_a_message_kept_local_is_never_encoded_and_one_sent_out_is_encoded_once():
    turn = Turn(1, NOW)
    msg = Message("i1", EventRaised(NOW, "go", None), msg_id="a")
    here = Outbound("a", 1, msg)
    turn.send([here])
    assert here.encoded is None  # applied from memory in the next round
    turn.send([here], keep_local=False)  # the turn ran out of rounds: into the outbox
    assert here.encoded == msg.to_bytes() and turn.writes.add_outbox == [("a", 1, here.encoded)]
    assert here.blob is here.encoded and here.encode() is here


def _entity(key: str, state: str) -> EntityRow:
    return EntityRow(key, "n", 1, state, None, None, 0.0)


def _instance(iid: str, status: str) -> InstanceRow:
    return InstanceRow(iid, "o", "e", status, None, None, None, None, None, 0.0, 0.0, 1)


def test_a_row_written_again_later_in_the_turn_is_left_out_and_the_last_one_of_each_id_kept():
    first = TurnWrites(entities=[_entity("@n@a", "1"), _entity("@n@b", "1")], instances=[_instance("i", "Running")],
                       history=[("h",)])  # type: ignore[list-item]
    second = TurnWrites(entities=[_entity("@n@a", "2"), _entity("@n@a", "3")])
    third = TurnWrites(instances=[_instance("i", "Completed")])
    kept = without_superseded([first, second, third])
    assert [[(r[0], r[3]) for r in w.entities] for w in kept] == [[("@n@b", "1")], [("@n@a", "3")], []]
    assert [[(r[0], r[3]) for r in w.instances] for w in kept] == [[], [], [("i", "Completed")]]
    assert kept[0].history == [("h",)]  # every other write stays, in its round
    assert [(r[0], r[3]) for r in first.entities] == [("@n@a", "1"), ("@n@b", "1")]  # the turn's own lists unchanged
    lone = TurnWrites(entities=[_entity("@n@c", "1")])
    assert without_superseded([lone])[0] is lone
