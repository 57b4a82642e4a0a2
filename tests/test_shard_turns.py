"""Turns of a shard host on a real SQLite file, without Ray.

``ShardHost`` is the class Ray makes an actor of; built directly it is a plain object. Here its
store is opened and recovered (``_recover``, what a Ray-started host does too), and turns run
with ``_turn`` on batches of messages shaped as the client, an activity worker and the event
path send them. Each test then reads the file (with ``sqlite3``) and the replies (each client
message's ack future). Activities are recorded instead of sent to Ray workers (the one
stand-in: ``RecordingDispatcher``); their results come back as the messages a worker's answer
becomes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sqlite3
import sys
import threading
import uuid
from collections.abc import Sequence
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from entities import EntityId
from entities._registry import EntitySpec
from orchestrations import (
    DurableValueError,
    EventRaised,
    ExecutionStarted,
    ExecutionTerminated,
    InstanceAlreadyExistsError,
    Registry,
    ShardWriteError,
    TaskCompleted,
)
from runtime._activities import ActivityCall, ActivityDispatcher
from runtime._codec import dump_value, encode
from runtime._entity_host import holder_text
from runtime._messages import Instance, Message
from runtime._replication import ShardReplication
from runtime._shard import ShardHost
from runtime._shard_base import ShardConfig
from runtime._shard_instances import MAX_INLINE_RUNS
from runtime._shard_turn import CLIENT_ROUNDS
from runtime._start_journal import LIMIT, read_records
from runtime._status import OrchestrationRuntimeStatus as S

from .helpers import has_litestream, until

REGISTRY = Registry()


def _greet(name: str) -> str:
    return f"hello {name}"


def _sequence(ctx: Any) -> Any:
    first = yield ctx.call_activity("unit_greet", "a")
    second = yield ctx.call_activity("unit_greet", "b")
    return [first, second]


def _timer(ctx: Any) -> Any:
    yield ctx.create_timer(ctx.current_utc_datetime + timedelta(hours=1))
    return "late"


def _approval(ctx: Any) -> Any:
    answer = yield ctx.wait_for_external_event("approve")
    return f"approved: {answer}"


def _fire_and_forget(ctx: Any) -> Any:
    ctx.call_activity("unit_greet", "bye")  # not waited for: its last episode
    return "done"


def _go_then_forget(ctx: Any) -> Any:
    yield ctx.wait_for_external_event("go")
    ctx.call_activity("unit_greet", "bye")  # not waited for: its last episode
    return "done"


class _Counter:
    def __init__(self) -> None:
        self.value = 0

    def add(self, amount: int) -> int:
        self.value += amount
        return self.value


def _locked_add(ctx: Any) -> Any:
    counter = EntityId("unit_counter", "one")
    with (yield ctx.lock_entities([counter])):
        return (yield ctx.call_entity(counter, "add", 1))


def _three_adds(ctx: Any) -> Any:
    """Calls outside a critical section: each is a round to the entity and one back."""
    counter = EntityId("unit_counter", "one")
    for _ in range(2):
        yield ctx.call_entity(counter, "add", 1)
    return (yield ctx.call_entity(counter, "add", 1))


def _locked_pair(ctx: Any) -> Any:
    """The README's critical section: lock two entities, call each, unlock."""
    a, b = EntityId("unit_counter", "a"), EntityId("unit_counter", "b")
    with (yield ctx.lock_entities([a, b])):
        first = yield ctx.call_entity(a, "add", 1)
        second = yield ctx.call_entity(b, "add", 2)
    return [first, second]


def _unstorable_status(ctx: Any) -> Any:
    """A section whose episode after the grant sets a custom status that cannot be stored."""
    a = EntityId("unit_counter", "a")
    with (yield ctx.lock_entities([a])):
        ctx.set_custom_status(threading.Lock())
        return (yield ctx.call_entity(a, "add", 1))


def _call_then_signal(ctx: Any) -> Any:
    """A call and a signal to one entity in one episode, the call first: it sees 1, not 11."""
    a = EntityId("unit_counter", "a")
    call = ctx.call_entity(a, "add", 1)
    ctx.signal_entity(a, "add", 10)
    return (yield call)


def _many_locked_calls(ctx: Any) -> Any:
    """A section that calls its entity more times than one round runs an instance."""
    a = EntityId("unit_counter", "a")
    with (yield ctx.lock_entities([a])):
        for _ in range(39):
            yield ctx.call_entity(a, "add", 1)
        return (yield ctx.call_entity(a, "add", 1))


REGISTRY.add_activity(_greet, "unit_greet")
REGISTRY.add_orchestrator(_call_then_signal, "unit_call_then_signal")
REGISTRY.add_orchestrator(_many_locked_calls, "unit_many_locked_calls")
REGISTRY.add_orchestrator(_locked_pair, "unit_locked_pair")
REGISTRY.add_orchestrator(_unstorable_status, "unit_unstorable_status")
REGISTRY.add_orchestrator(_three_adds, "unit_three_adds")
REGISTRY.add_orchestrator(_sequence, "unit_sequence")
REGISTRY.add_orchestrator(_fire_and_forget, "unit_fire_and_forget")
REGISTRY.add_orchestrator(_go_then_forget, "unit_go_then_forget")
REGISTRY.add_orchestrator(_approval, "unit_approval")
REGISTRY.add_orchestrator(_timer, "unit_timer")
REGISTRY.add_orchestrator(_locked_add, "unit_locked_add")
REGISTRY.add_entity("unit_counter", EntitySpec("unit_counter", _Counter, True))


class RecordingDispatcher(ActivityDispatcher):
    """Records the activities a turn dispatches instead of sending them to Ray workers."""

    def __init__(self) -> None:
        super().__init__("unit", lambda msgs: None, lambda coro: coro.close())
        self.sent: list[ActivityCall] = []

    def dispatch(self, calls: Sequence[ActivityCall]) -> None:
        for call in calls:
            self.outstanding.setdefault(call.instance_id, set()).add((call.execution_id, call.task_id))
        self.sent.extend(calls)


async def _open(path: Path) -> ShardHost:
    """A shard host of a 1-shard hub on ``path``, opened and recovered without Ray."""
    config = ShardConfig(hub="unit", index=0, num_shards=1, path=str(path), warm_worker=False,
                         slow_episode_seconds=None)
    host = ShardHost(config)
    host._activity_out = RecordingDispatcher()
    await host._store.open(config.lock_timeout)
    orchestrators, activities, entity_specs, version = REGISTRY.snapshot()
    host._install_registry(encode((orchestrators, activities, entity_specs, version), "registry"), merge=True)
    await host._recover()
    return host


async def _turn(host: ShardHost, *msgs: Message) -> list[Any]:
    """Run one turn of ``msgs``; the reply to each client message (``None``: applied, or the
    error that refused it)."""
    loop = asyncio.get_running_loop()
    for msg in msgs:
        if msg.client:
            msg.ack = loop.create_future()
    await host._turn(list(msgs))
    replies = []
    for msg in msgs:
        if msg.ack is not None:
            assert msg.ack.done()
            replies.append(msg.ack.exception() or msg.ack.result())
    return replies


def _start(iid: str, name: str, value: Any = None) -> Message:
    """A client's start, as ``TaskHub.start_new`` sends it."""
    event = ExecutionStarted(datetime.now(UTC), name, value, iid, uuid.uuid4().hex)
    return Message(iid, event, input_blob=encode(value), client=True, msg_id=uuid.uuid4().hex)


def _raise(iid: str, name: str, data: Any) -> Message:
    """A client's event, as ``TaskHub.raise_event`` sends it."""
    return Message(iid, EventRaised(datetime.now(UTC), name, data), client=True, msg_id=uuid.uuid4().hex)


def _result(call: ActivityCall, value: Any) -> Message:
    """An activity's result, as the dispatcher turns a worker's answer into a message."""
    return Message(call.instance_id, TaskCompleted(datetime.now(UTC), call.task_id, value),
                   execution_id=call.execution_id)


def _rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(path)) as db:
        return db.execute(sql).fetchall()


def _history(path: Path) -> list[str]:
    return [r[0] for r in _rows(path, "SELECT event_type FROM history ORDER BY num, seq")]


def test_a_start_commits_the_instance_its_history_and_its_first_activity(tmp_path):
    async def scenario() -> None:
        host = await _open(tmp_path / "shard-00.sqlite")
        assert await _turn(host, _start("s1", "unit_sequence")) == [None]
        [call] = host._activity_out.sent
        assert (call.instance_id, call.name) == ("s1", "unit_greet")
        await host.close()

    asyncio.run(scenario())
    path = tmp_path / "shard-00.sqlite"
    assert _rows(path, "SELECT instance_id, name, status FROM instances") == [("s1", "unit_sequence", "Running")]
    assert _history(path) == ["ExecutionStarted", "OrchestratorStarted", "TaskScheduled", "OrchestratorCompleted"]
    assert _rows(path, "SELECT instance_id, name FROM activities") == [("s1", "unit_greet")]


def test_activity_results_drive_the_instance_to_completion(tmp_path):
    path = tmp_path / "shard-00.sqlite"

    async def scenario() -> None:
        host = await _open(path)
        await _turn(host, _start("s1", "unit_sequence"))
        first = host._activity_out.sent[-1]
        assert await _turn(host, _result(first, "hello a")) == []  # no client to answer
        second = host._activity_out.sent[-1]
        assert second.task_id > first.task_id
        assert _rows(path, "SELECT task_id FROM activities") == [(second.task_id,)]
        await _turn(host, _result(second, "hello b"))
        status = await host._read_status("s1")
        assert status is not None and status.runtime_status is S.Completed
        assert status.output == ["hello a", "hello b"]
        await _turn(host, _result(second, "again"))  # a duplicate result changes nothing
        await host.close()

    asyncio.run(scenario())
    assert _rows(path, "SELECT status FROM instances") == [("Completed",)]
    assert _rows(path, "SELECT * FROM activities") == []
    history = _history(path)
    assert history.count("TaskCompleted") == 2 and "ExecutionCompleted" in history[-2:]


def test_an_event_is_delivered_and_a_duplicate_of_it_dropped(tmp_path):
    path = tmp_path / "shard-00.sqlite"

    async def scenario() -> None:
        host = await _open(path)
        await _turn(host, _start("e1", "unit_approval"))
        event = _raise("e1", "approve", "yes")
        again = Message(event.instance_id, event.event, client=True, msg_id=event.msg_id)  # a retried call
        assert await _turn(host, event) == [None]
        assert await _turn(host, again) == [None]  # acknowledged, not applied twice
        status = await host._read_status("e1")
        assert status is not None and status.output == "approved: yes"
        await host.close()

    asyncio.run(scenario())
    assert _history(path).count("EventRaised") == 1
    assert len(_rows(path, "SELECT msg_id FROM delivered")) >= 1


def test_refused_starts_are_answered_and_write_nothing(tmp_path):
    path = tmp_path / "shard-00.sqlite"

    async def scenario() -> None:
        host = await _open(path)
        [unknown] = await _turn(host, _start("u1", "unit_nope"))
        assert isinstance(unknown, DurableValueError) and "unit_nope" in str(unknown)
        await _turn(host, _start("a1", "unit_approval"))
        [exists] = await _turn(host, _start("a1", "unit_approval"))
        assert isinstance(exists, InstanceAlreadyExistsError)
        await host.close()

    asyncio.run(scenario())
    assert _rows(path, "SELECT instance_id, status FROM instances") == [("a1", "Running")]
    assert _history(path) == ["ExecutionStarted", "OrchestratorStarted", "OrchestratorCompleted"]


@pytest.mark.skipif(not has_litestream(), reason="litestream is not installed (the replica extra)")
def test_receivers_are_told_to_forget_a_message_only_once_its_outbox_rows_deletion_is_replicated(tmp_path):
    """A node lost after a turn deleted an acknowledged message's outbox row, but before a
    replica sync covered that deletion, comes back with the row and sends the message again:
    had the receiver already been told to forget its id, it would apply it twice (a debit
    taken twice from an account). So the forget list waits for the sync, like the rest of
    what the turn tells other hosts. Here a real Litestream child replicates the file to a
    ``file://`` replica, and the host's syncs wait at a gate."""
    path = tmp_path / "hub" / "node-node-a" / "shard-00.sqlite"

    async def scenario() -> None:
        config = ShardConfig(hub="unit", index=0, num_shards=2, path=str(path), warm_worker=False,
                             slow_episode_seconds=None)
        host = ShardHost(config)
        host._activity_out = RecordingDispatcher()
        rep = host._replication = ShardReplication(
            f"file://{tmp_path}/replica", "replicated", "unit", 0, str(tmp_path / "hub"), 30.0, "node-a"
        )
        assert rep.local_path == str(path)
        gate = asyncio.Event()
        host._store.create = await rep.take(may_create=True)
        await host._store.open(config.lock_timeout)
        await host._start_replication(rep)
        rep._before_sync = gate.wait
        assert host._courier.generation == 1 and host._courier.may_send()  # its batches say whose they are
        orchestrators, activities, entity_specs, version = REGISTRY.snapshot()
        host._install_registry(encode((orchestrators, activities, entity_specs, version), "registry"), merge=True)
        await host._recover()
        try:
            host._courier._acked.append((1, "m-1"))  # shard 1 committed m-1: this turn deletes its outbox row
            start = _start("f1", "unit_approval")
            start.ack = asyncio.get_running_loop().create_future()
            await host._turn([start])
            await asyncio.sleep(0.1)
            assert not start.ack.done() and host._courier._forget == {}  # the deletion is not in the replica yet
            gate.set()
            await asyncio.wait_for(start.ack, 30)
            assert host._courier._forget == {1: ["m-1"]}  # now shard 1 may forget it
        finally:  # a failed check must not leave Litestream and the file open (the process would hang)
            gate.set()
            await host.close()

    asyncio.run(scenario())


def test_a_failed_turn_keeps_the_work_earlier_turns_committed(tmp_path):
    """A turn that fails forgets what it knew of the instances it touched (they reload from the
    file) and the activities it started early (replay schedules them again); not the activities
    and timers earlier, committed turns started, even of instances it was ending: they live on
    in the file. Otherwise a running activity's result would be dropped as moot and a timer
    never fire, and the instances would wait for ever in a host that lives on."""
    path = tmp_path / "shard-00.sqlite"

    async def scenario() -> None:
        host = await _open(path)
        try:
            starts = [_start("w1", "unit_sequence"), _start("w2", "unit_timer"), _start("w3", "unit_sequence"),
                      _start("w4", "unit_sequence")]
            await _turn(host, *starts)
            first, ending, answered = host._activity_out.sent
            assert list(host._timer_handles.get("w2", {})) == [1]
            host.config = dataclasses.replace(
                host.config, crash_points=("error_before_commit",), crash_marker_dir=str(tmp_path)
            )
            now = datetime.now(UTC)
            with pytest.raises(RuntimeError, match="error_before_commit"):
                await host._turn([
                    _raise("w1", "noise", 1),
                    Message("w2", ExecutionTerminated(now, "stop")),
                    Message("w3", ExecutionTerminated(now, "stop")),
                    _result(answered, "hello a"),  # w4 schedules its second activity, early
                ])
            early = host._activity_out.sent[-1]
            assert (early.instance_id, early.task_id) == ("w4", answered.task_id + 1)
            outstanding = host._activity_out.outstanding
            assert outstanding["w1"] == {(first.execution_id, first.task_id)}  # still waited for
            assert outstanding["w3"] == {(ending.execution_id, ending.task_id)}  # still waited for
            assert (early.execution_id, early.task_id) not in outstanding.get("w4", set())  # not committed
            assert len(host._activity_out.sent) == 4  # nothing started again
            [handle] = host._timer_handles["w2"].values()  # still armed
            assert not handle.cancelled()
            await _turn(host, _result(first, "hello a"))  # the instances go on
            assert (host._activity_out.sent[-1].instance_id, host._activity_out.sent[-1].task_id) == (
                "w1", first.task_id + 1
            )
        finally:
            await host.close()

    asyncio.run(scenario())
    assert _rows(path, "SELECT instance_id, status FROM instances ORDER BY instance_id") == [
        ("w1", "Running"), ("w2", "Running"), ("w3", "Running"), ("w4", "Running")
    ]


def test_an_instance_a_turn_ends_drops_its_timers_once_the_commit_is_written(tmp_path):
    path = tmp_path / "shard-00.sqlite"

    async def scenario() -> None:
        host = await _open(path)
        try:
            await _turn(host, _start("t1", "unit_timer"))
            [handle] = host._timer_handles["t1"].values()
            await _turn(host, Message("t1", ExecutionTerminated(datetime.now(UTC), "stop")))
            assert handle.cancelled() and "t1" not in host._timer_handles
        finally:
            await host.close()

    asyncio.run(scenario())
    assert _rows(path, "SELECT instance_id, status FROM instances") == [("t1", "Terminated")]


def test_a_reopened_host_dispatches_again_the_activities_without_a_result(tmp_path):
    path = tmp_path / "shard-00.sqlite"

    async def scenario() -> None:
        host = await _open(path)
        await _turn(host, _start("r1", "unit_sequence"))
        await host.close()
        again = await _open(path)  # the instance is not in memory: it replays from the file
        [call] = again._activity_out.sent
        assert (call.instance_id, call.name) == ("r1", "unit_greet")
        await _turn(again, _result(call, "hello a"))
        second = again._activity_out.sent[-1]
        assert second.task_id > call.task_id
        await again.close()
        assert _rows(path, "SELECT task_id FROM activities") == [(second.task_id,)]

    asyncio.run(scenario())


def test_an_activity_the_last_episode_did_not_wait_for_runs_after_its_instance_completed(tmp_path):
    # DurableTask.Core sends the activities of a completing (or failing) execution's last
    # episode; before, the history recorded TaskScheduled and the activity never ran
    path = tmp_path / "shard-00.sqlite"

    async def scenario() -> None:
        host = await _open(path)
        await _turn(host, _start("ff1", "unit_fire_and_forget"))
        [call] = host._activity_out.sent
        assert (call.instance_id, call.name) == ("ff1", "unit_greet")
        status = await host._read_status("ff1")
        assert status is not None and (status.runtime_status, status.output) == (S.Completed, "done")
        await host.close()
        assert _rows(path, "SELECT instance_id, name FROM activities") == [("ff1", "unit_greet")]
        again = await _open(path)  # a crash before its result: it runs again, as any activity
        [call] = again._activity_out.sent
        await _turn(again, _result(call, "hello bye"))
        await again.close()

    asyncio.run(scenario())
    assert _rows(path, "SELECT * FROM activities") == []  # its result struck it off
    assert _rows(path, "SELECT status FROM instances") == [("Completed",)]
    assert "TaskCompleted" not in _history(path)


def test_the_last_episodes_activity_of_an_execution_replaced_in_the_same_turn_leaves_no_row(tmp_path):
    # a review found it: the new execution's clearing of the instance's work ran before the
    # old one's row was written, and the result, for an execution no longer current, struck
    # nothing: the row stayed, and every reopened host ran the activity again
    path = tmp_path / "shard-00.sqlite"

    async def scenario() -> None:
        host = await _open(path)
        await _turn(host, _start("x1", "unit_go_then_forget"))
        assert await _turn(host, _raise("x1", "go", 1), _start("x1", "unit_approval")) == [None, None]
        old = host._activity_out.sent[-1]
        assert (old.name, old.task_id) == ("unit_greet", 1)
        await _turn(host, _result(old, "hello bye"))
        status = await host._read_status("x1")
        assert status is not None and (status.runtime_status, status.name) == (S.Running, "unit_approval")
        await host.close()
        again = await _open(path)
        assert again._activity_out.sent == []  # nothing to run again
        await again.close()

    asyncio.run(scenario())
    assert _rows(path, "SELECT * FROM activities") == []


def test_turns_without_ray_start_no_ray(tmp_path):
    ray = sys.modules.get("ray")
    before = ray is not None and ray.is_initialized()

    async def scenario() -> None:
        host = await _open(tmp_path / "shard-00.sqlite")
        await _turn(host, _start("n1", "unit_approval"))
        await host.close()

    asyncio.run(scenario())
    if before:
        pytest.skip("another test of this session started a Ray")
    assert not sys.modules["ray"].is_initialized()


def _fresh_start(name: str) -> Message:
    """A client's start of an id it made up, as ``TaskHub.start_new`` sends it without an
    ``instance_id`` (through the wire's encoding)."""
    iid = uuid.uuid4().hex
    event = ExecutionStarted(datetime.now(UTC), name, None, iid, uuid.uuid4().hex)
    msg = Message(iid, event, input_blob=dump_value(None, "client_input"), client=True, fresh=True)
    return Message.from_bytes(msg.to_bytes())


def test_a_start_of_a_made_up_id_is_not_looked_up_in_the_file_but_one_of_a_given_id_is(tmp_path):
    async def scenario() -> None:
        host = await _open(tmp_path / "shard-00.sqlite")
        looked_up: list[list[str]] = []
        load = host._store.load_instances

        async def counting(ids: list[str]) -> Any:
            looked_up.append(list(ids))
            return await load(ids)

        host._store.load_instances = counting  # type: ignore[method-assign]
        try:  # an open host's connection threads would keep the test process alive
            fresh = _fresh_start("unit_approval")
            assert fresh.fresh
            assert await _turn(host, fresh) == [None]
            assert looked_up == []
            assert await _turn(host, _start("given", "unit_approval")) == [None]
            assert looked_up == [["given"]]
            status = await host._read_status(fresh.instance_id)
            assert status is not None and status.runtime_status is S.Running
        finally:
            await host.close()

    asyncio.run(scenario())


def test_a_made_up_id_start_sent_again_after_a_retried_call_is_applied_once(tmp_path):
    path = tmp_path / "shard-00.sqlite"
    fresh = _fresh_start("unit_approval")

    async def scenario() -> None:
        host = await _open(path)
        assert await _turn(host, fresh) == [None]
        await host.close()
        again = await _open(path)  # the instance is only in the file now
        again._retries_possible = True  # what ``submit(..., retried=True)`` sets
        try:
            copy = Message.from_bytes(fresh.to_bytes())
            assert await _turn(again, copy) == [None]  # recognised as applied, not started twice
        finally:
            await again.close()

    asyncio.run(scenario())
    assert _rows(path, "SELECT instance_id, status FROM instances") == [(fresh.instance_id, "Running")]
    assert _history(path).count("ExecutionStarted") == 1


# -- fresh starts through the start journal (runtime._shard_intake) -----------------------------


def _journal(path: Path) -> list[Message]:
    """The starts ``path``'s start journal holds (of its current generation)."""
    payloads, _, _ = read_records(Path(str(path) + "-starts").read_bytes())
    return [Message.from_bytes(p) for p in payloads]


def test_a_fresh_start_is_journaled_answered_and_committed_by_the_next_turn(tmp_path):
    path = tmp_path / "shard-00.sqlite"

    async def scenario() -> None:
        host = await _open(path)
        try:
            start = _fresh_start("unit_approval")
            iid = start.instance_id
            assert host._takes_early([start], retried=False)
            await host._accept_early([start])  # answered: in the journal
            assert [m.instance_id for m in _journal(path)] == [iid]
            assert _rows(path, "SELECT COUNT(*) FROM instances") == [(0,)]
            assert host.early_starts == 1
            queued, host._mailbox = host._mailbox, []
            assert queued == [start] and start.journaled and start.ack is None
            read = asyncio.ensure_future(host._read_status(iid))  # waits for the start's commit
            await until(lambda: host._journal_readers)
            assert not read.done()
            await host._turn(queued)
            status = await read
            assert status is not None and status.runtime_status is S.Running
            assert _history(path)[:2] == ["ExecutionStarted", "OrchestratorStarted"]
            assert host._journaled == {}
            assert host._journal is not None and host._journal._offset == 0  # all committed: it starts over
            assert await _turn(host, _raise(iid, "approve", "yes")) == [None]
            status = await host._read_status(iid)
            assert status is not None and status.output == "approved: yes"
        finally:
            await host.close()

    asyncio.run(scenario())


def test_starts_that_arrive_together_share_one_append(tmp_path):
    path = tmp_path / "shard-00.sqlite"

    async def scenario() -> None:
        host = await _open(path)
        appends: list[int] = []
        assert host._journal is not None
        append = host._journal.append
        host._journal.append = lambda payloads: (appends.append(len(payloads)), append(payloads))[1]  # type: ignore[method-assign]
        try:
            starts = [_fresh_start("unit_approval") for _ in range(5)]
            await asyncio.gather(*(host._accept_early([s]) for s in starts))
            assert appends == [5]
            assert [m.instance_id for m in _journal(path)] == [s.instance_id for s in starts]
        finally:
            await host.close()

    asyncio.run(scenario())


def test_a_journaled_start_runs_after_a_crash_that_came_before_its_turn(tmp_path):
    path = tmp_path / "shard-00.sqlite"
    start = _fresh_start("unit_approval")

    async def scenario() -> None:
        host = await _open(path)
        await host._accept_early([start])
        await host.close()  # the host dies before a turn applies the start
        again = await _open(path)
        try:
            queued, again._mailbox = again._mailbox, []
            assert [m.instance_id for m in queued] == [start.instance_id]
            assert not queued[0].fresh  # looked up in the file, in case a turn applied it after all
            read = asyncio.ensure_future(again._read_status(start.instance_id))
            await again._turn(queued)
            status = await read
            assert status is not None and status.runtime_status is S.Running
            assert again._journal is not None and again._journal._offset == 0
        finally:
            await again.close()

    asyncio.run(scenario())
    assert _history(path).count("ExecutionStarted") == 1


def test_journaled_starts_already_committed_or_purged_are_not_run_again_after_a_crash(tmp_path):
    path = tmp_path / "shard-00.sqlite"
    done, purged, waiting = (_fresh_start("unit_approval") for _ in range(3))

    async def scenario() -> None:
        host = await _open(path)
        try:
            await host._accept_early([done, purged, waiting])
            host._mailbox = []
            await host._turn([done, purged])  # the third stays in the journal: it does not start over
            assert await _turn(host, _raise(purged.instance_id, "approve", "ok")) == [None]
            row = (await host._store.load_instances([purged.instance_id]))[purged.instance_id]
            # what ShardHost.purge writes (without the Ray-started host it makes sure of)
            assert await host._store.purge([purged.instance_id], host._retired_starts([Instance.from_row(row)])) == 1
        finally:
            await host.close()
        again = await _open(path)
        try:
            assert [m.instance_id for m in again._mailbox] == [waiting.instance_id]
            await again._turn(again._mailbox)
        finally:
            await again.close()

    asyncio.run(scenario())
    rows = _rows(path, "SELECT instance_id FROM instances ORDER BY instance_id")
    assert rows == sorted([(done.instance_id,), (waiting.instance_id,)])
    assert _history(path).count("ExecutionStarted") == 2


def test_a_purge_after_the_journal_started_over_still_keeps_the_start_from_running_again(tmp_path):
    path = tmp_path / "shard-00.sqlite"
    start = _fresh_start("unit_approval")

    async def scenario() -> None:
        host = await _open(path)
        try:
            await host._accept_early([start])
            queued, host._mailbox = host._mailbox, []
            await host._turn(queued)  # every start committed: it starts over, its record still on disk
            assert await _turn(host, _raise(start.instance_id, "approve", "ok")) == [None]
            row = (await host._store.load_instances([start.instance_id]))[start.instance_id]
            assert await host._store.purge([start.instance_id], host._retired_starts([Instance.from_row(row)])) == 1
        finally:
            await host.close()
        again = await _open(path)  # the hub opened again before any other start
        try:
            assert again._mailbox == []
        finally:
            await again.close()

    asyncio.run(scenario())
    assert _rows(path, "SELECT COUNT(*) FROM instances") == [(0,)]


def test_a_journaled_start_whose_record_fails_in_its_turn_is_kept_for_the_next_host(tmp_path):
    path = tmp_path / "shard-00.sqlite"
    start, other = _fresh_start("unit_approval"), _fresh_start("unit_approval")

    async def scenario() -> None:
        host = await _open(path)
        run_instance = host._run_instance

        async def failing(iid: str, msgs: list[Message], turn: Any) -> None:
            if iid == start.instance_id:
                raise RuntimeError("a bug in the host")
            await run_instance(iid, msgs, turn)

        host._run_instance = failing  # type: ignore[method-assign]
        try:
            await host._accept_early([start, other])
            read = asyncio.ensure_future(host._read_status(start.instance_id))
            queued, host._mailbox = host._mailbox, []
            await host._turn(queued)  # the other record commits
            assert await read is None  # the reader is let go: the start did not run
            assert host._journaled == {} and host._journal_kept
            assert host._journal is not None and host._journal._offset > 0  # kept, not started over
        finally:
            await host.close()
        again = await _open(path)
        try:
            assert [m.instance_id for m in again._mailbox] == [start.instance_id]
            await again._turn(again._mailbox)
            status = await again._read_status(start.instance_id)
            assert status is not None and status.runtime_status is S.Running
        finally:
            await again.close()

    asyncio.run(scenario())


def test_a_journaled_start_whose_turn_could_not_be_written_goes_ahead_of_what_follows_it(tmp_path):
    async def scenario() -> None:
        host = await _open(tmp_path / "shard-00.sqlite")
        try:
            start = _fresh_start("unit_approval")
            await host._accept_early([start])
            queued, host._mailbox = host._mailbox, []
            host.fail_next_commits(1)
            with pytest.raises(ShardWriteError):
                await host._turn(queued)
            host._retry_unwritten(queued)  # what the turn loop does: the start is applied again later
            assert host._mailbox == []
            approve = _raise(start.instance_id, "approve", "yes")
            host._enqueue(approve)  # the client was told the instance exists: its event waits behind it
            assert host._mailbox == []
            await asyncio.wait_for(until(lambda: host._mailbox), 5)
            assert host._mailbox == [start, approve] and host._behind == {}
            batch, host._mailbox = host._mailbox, []
            await _turn(host, *batch)
            status = await host._read_status(start.instance_id)
            assert status is not None and status.output == "approved: yes"
        finally:
            await host.close()

    asyncio.run(scenario())


def test_after_an_append_failed_while_starts_wait_the_journal_takes_none_until_it_starts_over(tmp_path):
    async def scenario() -> None:
        host = await _open(tmp_path / "shard-00.sqlite")
        journal = host._journal
        assert journal is not None
        try:
            first = _fresh_start("unit_approval")
            await host._accept_early([first])
            append = journal.append

            def failing(payloads: list[bytes]) -> None:
                raise OSError(28, "No space left on device")

            journal.append = failing  # type: ignore[method-assign]
            with pytest.raises(ShardWriteError, match="No space left"):
                await host._accept_early([_fresh_start("unit_approval")])
            journal.append = append  # type: ignore[method-assign]
            assert not host._takes_early([_fresh_start("unit_approval")], retried=False)
            queued, host._mailbox = host._mailbox, []
            assert queued == [first]
            await host._turn(queued)  # the waiting start committed: the journal starts over
            assert host._takes_early([_fresh_start("unit_approval")], retried=False)
        finally:
            await host.close()

    asyncio.run(scenario())


def test_a_journal_that_cannot_be_written_refuses_the_start_and_queues_nothing(tmp_path):
    async def scenario() -> None:
        host = await _open(tmp_path / "shard-00.sqlite")
        try:
            assert host._journal is not None and host._journal._fd is not None
            os.close(host._journal._fd)  # every write now fails (EBADF), as a lost disk's would
            start = _fresh_start("unit_approval")
            with pytest.raises(ShardWriteError, match=r"shard-00\.sqlite-starts"):
                await host._accept_early([start])
            assert host._mailbox == [] and host._journaled == {}
        finally:
            host._journal._fd = None
            await host.close()

    asyncio.run(scenario())


def test_only_fresh_starts_of_registered_orchestrators_go_to_the_journal(tmp_path):
    async def scenario() -> None:
        host = await _open(tmp_path / "shard-00.sqlite")
        try:
            fresh = _fresh_start("unit_approval")
            assert host._takes_early([fresh], retried=False)
            assert not host._takes_early([], retried=False)
            assert not host._takes_early([fresh], retried=True)
            assert not host._takes_early([_start("given-id", "unit_approval")], retried=False)  # not fresh
            assert not host._takes_early([_fresh_start("nobody_registered_this")], retried=False)
            assert not host._takes_early([fresh, _raise("x", "approve", 1)], retried=False)
            scheduled = _fresh_start("unit_approval")
            scheduled.due = 4102444800.0
            assert not host._takes_early([scheduled], retried=False)
            assert host._journal is not None
            host._journal._offset = LIMIT  # full: starts go through the turn loop until it starts over
            assert not host._takes_early([fresh], retried=False)
            host._journal._offset = 0
            host._retries_possible = True
            assert not host._takes_early([fresh], retried=False)
        finally:
            await host.close()

    asyncio.run(scenario())


def test_a_read_on_another_loop_waits_for_the_journaled_start_it_asks_about(tmp_path):
    async def scenario() -> None:
        host = await _open(tmp_path / "shard-00.sqlite")
        try:
            start = _fresh_start("unit_approval")
            await host._accept_early([start])
            other = asyncio.new_event_loop()
            waiting = threading.Thread(target=other.run_until_complete, args=(host._journal_visible(None),))
            waiting.start()  # as a read on the host's ``reads`` loop
            await until(lambda: host._journal_readers)
            assert waiting.is_alive()
            await host._journal_visible(["some other instance"])  # nothing to wait for
            queued, host._mailbox = host._mailbox, []
            await host._turn(queued)
            await asyncio.to_thread(waiting.join, 5)
            assert not waiting.is_alive()
            other.close()
        finally:
            await host.close()

    asyncio.run(scenario())


# -- how many rounds a turn runs ----------------------------------------------------------------


def test_a_turn_that_answers_a_client_ends_after_a_few_rounds_and_the_next_goes_on(tmp_path):
    path = tmp_path / "shard-00.sqlite"

    async def scenario() -> None:
        host = await _open(path)
        try:
            start = _fresh_start("unit_three_adds")
            assert await _turn(host, start) == [None]  # answered before the calls ran through
            assert host.local_messages == CLIENT_ROUNDS - 1
            assert _rows(path, "SELECT COUNT(*) FROM outbox") == [(1,)]  # the rest, kept in the outbox
            rest, host._mailbox = host._mailbox, []
            assert len(rest) == 1 and rest[0].from_self
            status = await host._read_status(start.instance_id)
            assert status is not None and status.runtime_status is S.Running
            await _turn(host, *rest)  # no client waits: the calls run through in this turn
            status = await host._read_status(start.instance_id)
            assert status is not None and status.runtime_status is S.Completed and status.output == 3
            assert _rows(path, "SELECT COUNT(*) FROM outbox") == [(0,)]
            assert _rows(path, "SELECT locked_by FROM entities") == [(None,)]
        finally:
            await host.close()

    asyncio.run(scenario())


# -- a lock holder's calls served in its own episode ----------------------------------------------


async def _run_out(host: ShardHost, *msgs: Message) -> None:
    """Run ``msgs``, then turns of whatever they send this shard, until nothing is left."""
    await _turn(host, *msgs)
    while host._mailbox:
        rest, host._mailbox = host._mailbox, []
        await host._turn(rest)


def _counters(path: Path) -> dict[str, tuple[int, Any]]:
    """Each counter entity's value and lock holder, as the file has them."""
    rows = _rows(path, "SELECT entity_id, json_extract(state, '$.value'), locked_by FROM entities")
    return {key: (value, holder) for key, value, holder in rows}


def test_a_lock_holders_calls_and_unlocks_are_served_in_its_episode(tmp_path):
    path = tmp_path / "shard-00.sqlite"

    async def scenario() -> None:
        host = await _open(path)
        try:
            await _run_out(host, _fresh_start("unit_locked_pair"))
            [(status, output)] = _rows(path, "SELECT status, output FROM instances")
            assert status == "Completed" and json.loads(output) == [1, 2]
            assert host.served_inline == 4  # two calls, two unlocks
            assert host.local_messages == 3  # the lock request passing a then b, and its grant
            assert _counters(path) == {"@unit_counter@a": (1, None), "@unit_counter@b": (2, None)}
            # the history is the one the messages would have written: an episode per answer
            assert _history(path) == [
                "ExecutionStarted", "OrchestratorStarted", "EntityLockRequested", "OrchestratorCompleted",
                "EntityLockGranted", "OrchestratorStarted", "EntityOperationCalled", "OrchestratorCompleted",
                "EntityOperationCompleted", "OrchestratorStarted", "EntityOperationCalled", "OrchestratorCompleted",
                "EntityOperationCompleted", "OrchestratorStarted", "EntityUnlockSent", "EntityUnlockSent",
                "OrchestratorCompleted", "ExecutionCompleted",
            ]
        finally:
            await host.close()

    asyncio.run(scenario())


def test_a_section_queued_behind_a_holder_served_inline_is_granted_in_order(tmp_path):
    path = tmp_path / "shard-00.sqlite"

    async def scenario() -> None:
        host = await _open(path)
        try:
            starts = [_fresh_start("unit_locked_pair") for _ in range(3)]
            await _run_out(host, *starts)
            outputs = dict(_rows(path, "SELECT instance_id, output FROM instances WHERE status = 'Completed'"))
            # FIFO: the sections ran in the order their lock requests reached the entities
            assert [json.loads(outputs[m.instance_id]) for m in starts] == [[1, 2], [2, 4], [3, 6]]
            assert _counters(path) == {"@unit_counter@a": (3, None), "@unit_counter@b": (6, None)}
            assert host.served_inline == 12
        finally:
            await host.close()

    asyncio.run(scenario())


def test_calls_outside_a_critical_section_travel_as_messages(tmp_path):
    path = tmp_path / "shard-00.sqlite"

    async def scenario() -> None:
        host = await _open(path)
        try:
            await _run_out(host, _fresh_start("unit_three_adds"))
            assert _rows(path, "SELECT status, output FROM instances") == [("Completed", "3")]
            assert host.served_inline == 0 and host.messages == 7  # the start, three calls and their answers
        finally:
            await host.close()

    asyncio.run(scenario())


def test_an_episode_that_fails_after_entities_served_it_puts_them_back(tmp_path):
    """A record that fails in a turn (a bug, not a user error) has its writes rolled back: the
    entities that served its calls at once go back to what the file will hold."""
    path = tmp_path / "shard-00.sqlite"

    async def scenario() -> None:
        host = await _open(path)
        try:
            real = host._history_rows

            def failing(inst: Any, result: Any) -> Any:
                if host.served_inline > served:
                    raise RuntimeError("a bug after the entity served the call")
                return real(inst, result)

            await _run_out(host, _fresh_start("unit_locked_pair"))  # a = 1, b = 2
            served = host.served_inline
            host._history_rows = failing  # type: ignore[method-assign]
            await _run_out(host, _fresh_start("unit_locked_pair"))
            assert host.served_inline == served + 1  # a's add, then the bug
            record = host._entities["@unit_counter@a"]
            assert record.state.state.value == 1 and record.state.locked_by is not None  # not 2
            assert _counters(path)["@unit_counter@a"] == (1, holder_text(record.state))  # memory and file agree
        finally:
            await host.close()

    asyncio.run(scenario())


def test_a_status_that_cannot_be_stored_fails_the_episode_before_its_calls_are_served(tmp_path):
    path = tmp_path / "shard-00.sqlite"

    async def scenario() -> None:
        host = await _open(path)
        try:
            await _run_out(host, _fresh_start("unit_unstorable_status"))
            [(status, failure)] = _rows(path, "SELECT status, failure FROM instances")
            assert status == "Failed" and "PayloadError" in failure
            assert host.served_inline == 1  # the unlock; the call was never made
            assert _counters(path) == {"@unit_counter@a": (None, None)}  # no add ran
        finally:
            await host.close()

    asyncio.run(scenario())


def test_a_call_held_back_for_its_entity_keeps_its_place_before_a_later_signal(tmp_path):
    path = tmp_path / "shard-00.sqlite"

    async def scenario() -> None:
        host = await _open(path)
        try:
            await _run_out(host, _fresh_start("unit_locked_pair"))  # a in memory: a = 1
            start = _fresh_start("unit_call_then_signal")
            await _run_out(host, start)
            status = await host._read_status(start.instance_id)
            assert status is not None and status.output == 2  # the call ran before the signal
            assert _counters(path)["@unit_counter@a"] == (12, None)
        finally:
            await host.close()

    asyncio.run(scenario())


def test_a_section_that_calls_its_entity_many_times_runs_in_bounded_chains(tmp_path):
    path = tmp_path / "shard-00.sqlite"

    async def scenario() -> None:
        host = await _open(path)
        try:
            start = _fresh_start("unit_many_locked_calls")
            await _run_out(host, start)
            status = await host._read_status(start.instance_id)
            assert status is not None and status.runtime_status is S.Completed and status.output == 40
            # every MAX_INLINE_RUNS-th run's call travels (a round trip) and the chain starts again
            traveled = 40 + 1 - host.served_inline  # 40 calls and the unlock
            assert traveled == len(range(MAX_INLINE_RUNS - 1, 40, MAX_INLINE_RUNS)) > 0
        finally:
            await host.close()

    asyncio.run(scenario())


def test_an_entity_that_fails_serving_a_call_inline_is_put_back_and_the_call_travels(tmp_path):
    path = tmp_path / "shard-00.sqlite"

    async def scenario() -> None:
        host = await _open(path)
        try:
            run_entity = host._run_entity
            failures: list[str] = []

            def failing(key: str, msgs: list[Message], turn: Any, answers_for: Any = None) -> Any:
                if answers_for is not None and not failures:
                    run_entity(key, msgs, turn, answers_for)  # changes the entity, then the bug
                    failures.append(key)
                    raise RuntimeError("a bug while serving inline")
                return run_entity(key, msgs, turn, answers_for)

            host._run_entity = failing  # type: ignore[method-assign]
            start = _fresh_start("unit_locked_pair")
            await _run_out(host, start)
            status = await host._read_status(start.instance_id)
            assert failures == ["@unit_counter@a"]
            assert status is not None and status.runtime_status is S.Completed and status.output == [1, 2]
            assert _counters(path) == {"@unit_counter@a": (1, None), "@unit_counter@b": (2, None)}  # added once
        finally:
            await host.close()

    asyncio.run(scenario())
