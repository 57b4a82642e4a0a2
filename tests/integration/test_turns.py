"""The shard host's fast paths on a real local Ray with real SQLite: same-shard messages applied
in the same turn (and what overflows to the outbox), activities on the warm worker, class
entities stored as their attributes, registries that merge rather than replace."""

from __future__ import annotations

import json
import sqlite3
import threading
from contextlib import closing

import pytest

from entities import EntityContext, EntityId, entity
from orchestrations import Registry, activity, orchestrator
from runtime import OrchestrationRuntimeStatus as S
from runtime import TaskHub
from runtime._shard_turn import MAX_LOCAL_ROUNDS

from ..conftest import ALWAYS_REPLAY
from ..helpers import wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(ALWAYS_REPLAY, reason="the shard host's fast paths: the normal run covers them"),
]


@entity(name="TnAccount")
class Account:
    def __init__(self) -> None:
        self.balance = 0
        self.history: list[int] = []

    def deposit(self, amount: int) -> int:
        self.balance += amount
        self.history.append(amount)
        return self.balance

    def get(self) -> int:
        return self.balance


@entity(name="TnSlotted")
class Slotted:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def add(self, amount: int) -> int:
        self.value += amount
        return self.value


@entity(name="TnCountdown")
def countdown(ctx: EntityContext) -> None:
    """``start(n)``: signals itself ``tick`` n times in a chain, counting the ticks."""
    state = ctx.get_state(lambda: {"left": 0, "ticks": 0})
    if ctx.operation_name == "start":
        state["left"] = ctx.get_input()
    else:
        state["ticks"] += 1
        state["left"] -= 1
    if state["left"] > 0:
        ctx.signal_entity(ctx.entity_id, "tick")
    ctx.set_state(state)


@orchestrator(name="tn_transfer")
def transfer(ctx):
    a, b = (EntityId("TnAccount", k) for k in ctx.get_input())
    with (yield ctx.lock_entities([a, b])):
        yield ctx.call_entity(a, "deposit", -5)
        yield ctx.call_entity(b, "deposit", 5)
        balance_a = yield ctx.call_entity(a, "get")
        balance_b = yield ctx.call_entity(b, "get")
        return [balance_a, balance_b]


@activity(name="tn_where")
def where(_: object) -> bool:
    """Whether this activity ran on the warm worker (on its connection's thread) rather than
    on a Ray task or in the host while the worker starts."""
    return threading.current_thread().name == "warm-worker"


@orchestrator(name="tn_sequence")
def sequence(ctx):
    out = []
    for i in range(5):
        out.append((yield ctx.call_activity(where, i)))
    return out


@orchestrator(name="tn_rounds")
def rounds(ctx):
    n = ctx.get_input()
    total = yield ctx.call_activity(where, n)
    if n < 4:
        ctx.continue_as_new(n + 1)
        return None
    return [n, total]


@pytest.fixture(scope="module")
def one_shard(ray_session, data_dir):
    """A one-shard hub: every message is a same-shard message."""
    with TaskHub("turns-one", data_dir=data_dir, num_shards=1, always_replay=ALWAYS_REPLAY) as hub:
        yield hub


def test_same_shard_messages_are_applied_in_the_same_turn(one_shard):
    before = one_shard.stats()[0]
    iid = one_shard.start_new(transfer, client_input=["x", "y"])
    status = one_shard.wait_for_completion(iid, timeout=30)
    assert status.runtime_status is S.Completed and status.output == [-5, 5]
    after = one_shard.stats()[0]
    # the lock request passes both entities (same-shard messages, in further rounds of a turn),
    # then the entities serve the holder's four calls and two unlocks in its own episodes
    assert after["local_messages"] - before["local_messages"] >= 2
    assert after["served_inline"] - before["served_inline"] == 6
    assert not any(r.locked_by for r in one_shard.list_entities("TnAccount"))


@orchestrator(name="tn_size_of")
def size_of(ctx):
    return len(ctx.get_input())


def test_a_finished_instance_leaves_host_memory_and_reads_back_from_the_file(one_shard):
    # the cache is bounded by count: 1,000 finished instances with 256 KiB inputs cost the
    # host 1 GiB while they stayed cached (issue 11); a finished one now leaves memory
    cached = one_shard.stats()[0]["cached"]
    big = "x" * 256 * 1024
    ids = [one_shard.start_new(size_of, client_input=big) for _ in range(3)]
    assert [one_shard.wait_for_completion(i, timeout=30).output for i in ids] == [len(big)] * 3
    assert one_shard.stats()[0]["cached"] <= cached
    status = one_shard.get_status(ids[0])
    assert (status.runtime_status, status.input_, status.output) == (S.Completed, big, len(big))
    # and it takes messages as before: an event to a finished instance is dropped, a restart
    # under its id runs
    one_shard.raise_event(ids[0], "late", 1)
    again = one_shard.restart(ids[0], restart_with_new_instance_id=False)
    assert one_shard.wait_for_completion(again, timeout=30).output == len(big)


@orchestrator(name="tn_size_on_go")
def size_on_go(ctx):
    yield ctx.wait_for_external_event("go")
    return len(ctx.get_input())


def test_the_instances_in_memory_are_bounded_by_the_bytes_of_their_inputs(ray_session, data_dir):
    # issue 11: the cache was bounded by count only (10,000 instances with 256 KiB inputs:
    # 10 GiB of host memory); past cache_bytes the least recently used leave memory
    with TaskHub("turns-bytes", data_dir=data_dir, num_shards=1, cache_bytes=2**20, always_replay=ALWAYS_REPLAY) as hub:
        big = "y" * 512 * 1024
        ids = [hub.start_new(size_on_go, client_input=big) for _ in range(6)]
        for iid in ids:
            hub.wait_for_orchestration_start(iid, timeout=30)
        assert hub.stats()[0]["cached"] <= 2
        for iid in ids:  # each comes back from the file, replays, and finishes
            hub.raise_event(iid, "go")
        assert [hub.wait_for_completion(i, timeout=30).output for i in ids] == [len(big)] * 6


def test_a_chain_longer_than_one_turn_overflows_to_the_outbox_and_finishes(one_shard):
    n = 3 * MAX_LOCAL_ROUNDS + 1
    one_shard.signal_entity(EntityId("TnCountdown", "c"), "start", n)

    def done():
        state = one_shard.read_entity_state(EntityId("TnCountdown", "c")).entity_state
        return state if state and state["left"] == 0 else None

    assert wait_until(done) == {"left": 0, "ticks": n}


def test_continue_as_new_within_one_turn_keeps_only_the_last_execution(one_shard, data_dir):
    iid = one_shard.start_new(rounds, client_input=0)
    status = one_shard.wait_for_completion(iid, timeout=30)
    assert status.runtime_status is S.Completed and status.output[0] == 4
    history = one_shard.get_history(iid)
    kinds = [e.event_type for e in history]
    assert kinds.count("ExecutionStarted") == 1 and kinds.count("TaskScheduled") == 1
    assert history[0].input == 4


def test_class_entity_state_is_stored_as_attributes_and_rebuilt(one_shard, data_dir):
    key = EntityId("TnAccount", "kept")
    one_shard.signal_entity(key, "deposit", 7)
    one_shard.signal_entity(key, "deposit", 3)
    slotted = EntityId("TnSlotted", "s")
    one_shard.signal_entity(slotted, "add", 4)

    state = wait_until(lambda: (s := one_shard.read_entity_state(key).entity_state) and s.balance == 10 and s)
    assert isinstance(state, Account) and state.history == [7, 3]
    value = wait_until(lambda: (s := one_shard.read_entity_state(slotted).entity_state) and s.value == 4 and s)
    assert isinstance(value, Slotted)
    # what the file holds: the attributes as JSON (no class pickled by value)
    path = data_dir / "turns-one" / "shard-00.sqlite"
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        (blob,) = db.execute("SELECT state FROM entities WHERE entity_id = ?", (str(key),)).fetchone()
    assert json.loads(blob) == {"balance": 10, "history": [7, 3]}


def test_activities_use_the_warm_worker_unless_it_is_turned_off(ray_session, data_dir, one_shard):
    # the warm worker is created with the host's first activity and comes up a second or two
    # later (a new process); until then the host runs small batches itself
    one_shard.wait_for_completion(one_shard.start_new(sequence), timeout=30)
    wait_until(lambda: one_shard.stats()[0]["warm_worker_connected"])
    iid = one_shard.start_new(sequence)
    warm = one_shard.wait_for_completion(iid, timeout=30).output
    assert any(warm)  # sequential single activities: the warm worker takes them once it is up
    with TaskHub("turns-cold", data_dir=data_dir, num_shards=1, warm_worker=False,
                 always_replay=ALWAYS_REPLAY) as cold:
        iid = cold.start_new(sequence)
        status = cold.wait_for_completion(iid, timeout=30)
        assert cold.stats()[0]["warm_worker_connected"] == 0
    assert status.runtime_status is S.Completed and status.output == [False] * 5


def test_registries_merge_so_a_partial_one_takes_nothing_away(ray_session, data_dir):
    first, second = Registry(), Registry()

    def one(ctx):
        return "one"

    def two(ctx):
        return "two"

    first.add_orchestrator(one, "tn_one")
    second.add_orchestrator(two, "tn_two")
    hub = TaskHub("turns-merge", data_dir=data_dir, num_shards=2, detached=True, registry=first,
                  always_replay=ALWAYS_REPLAY)
    try:
        other = TaskHub.connect("turns-merge", registry=second)
        ids = [other.start_new("tn_two"), other.start_new("tn_one")]
        assert [other.wait_for_completion(i, timeout=30).output for i in ids] == ["two", "one"]
    finally:
        hub.shutdown()
    # reopened with a registry that has neither: the saved one still runs both
    with TaskHub("turns-merge", data_dir=data_dir, num_shards=2, registry=Registry(),
                 always_replay=ALWAYS_REPLAY) as again:
        ids = [again.start_new("tn_one"), again.start_new("tn_two")]
        assert [again.wait_for_completion(i, timeout=30).output for i in ids] == ["one", "two"]


@pytest.fixture(scope="module")
def two_shards(ray_session, data_dir):
    with TaskHub("turns-two", data_dir=data_dir, num_shards=2, always_replay=ALWAYS_REPLAY) as hub:
        yield hub


def test_messages_between_shard_hosts_travel_on_their_connections(two_shards):
    from orchestrations._ids import shard_of

    keys = [f"k{i}" for i in range(40)]
    here = [k for k in keys if shard_of(str(EntityId("TnAccount", k)), 2) == 0][:2]
    there = [k for k in keys if shard_of(str(EntityId("TnAccount", k)), 2) == 1][:2]
    ids = [two_shards.start_new(transfer, client_input=[a, b]) for a, b in ((here[0], there[0]), (there[1], here[1]))]
    assert [two_shards.wait_for_completion(i, timeout=30).output for i in ids] == [[-5, 5], [-5, 5]]
    # each transfer locks an account on each shard, so the lock request, the calls and the
    # unlocks crossed between the two hosts: none of them as a Ray call
    stats = two_shards.stats()
    assert all(s["messages"] > s["local_messages"] for s in stats)
    assert [s["ray_deliveries"] for s in stats] == [0, 0]


@orchestrator(name="tn_deposits")
def deposits(ctx):
    """``count`` deposits, one after the other, into the account ``key``."""
    key, count = ctx.get_input()
    for _ in range(count):
        balance = yield ctx.call_entity(EntityId("TnAccount", key), "deposit", 1)
    return balance


def delivered_rows(hub) -> int:
    total = 0
    for i in range(hub.num_shards):
        with closing(sqlite3.connect(f"file:{hub.directory}/shard-{i:02d}.sqlite?mode=ro", uri=True)) as db:
            total += db.execute("SELECT count(*) FROM delivered").fetchone()[0]
    return total


def test_received_message_ids_are_forgotten_once_their_sender_cannot_send_them_again(two_shards):
    # issue 11: the `delivered` table kept one row per message between shards, for ever
    from orchestrations._ids import shard_of

    iid = next(f"dep-{i}" for i in range(100) if shard_of(f"dep-{i}", 2) == 0)
    key = next(f"far-{i}" for i in range(100) if shard_of(str(EntityId("TnAccount", f"far-{i}")), 2) == 1)
    before = delivered_rows(two_shards)
    two_shards.start_new(deposits, iid, [key, 40])
    assert two_shards.wait_for_completion(iid, timeout=60).output == 40
    # 80 messages crossed (40 calls, 40 answers); each batch tells its receiver which earlier
    # ids it may forget, so only the last few are still recorded
    assert delivered_rows(two_shards) - before <= 8

