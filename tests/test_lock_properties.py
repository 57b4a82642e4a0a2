"""Property tests of critical sections: many orchestrations, many entities, any delivery order.

No Ray, no SQLite: a small in-memory world runs orchestrations with ``OrchestrationExecutor``
and entities with ``run_entity``, and a message bus delivers what they send in an order
hypothesis chooses, keeping only the guarantee the runtime gives: first in, first out per
(sender, receiver) pair. Every orchestration locks some counters, reads them, writes each value
plus one, and leaves the section. Whatever the order: nobody deadlocks and no update is lost.
"""

from collections import deque

from hypothesis import given, settings
from hypothesis import strategies as st

from entities import EntityId, EntitySpec, EntityState, run_entity
from orchestrations import (
    CallEntity,
    EntityLockMessage,
    EntityRequest,
    EntityUnlockMessage,
    ExecutionState,
    LockEntities,
    OrchestrationExecutor,
    ParentInfo,
    Registry,
    SignalEntity,
    UnlockEntity,
)
from orchestrations.testing import at, started

# keys chosen so that the lock order (UTF-8 bytes of "@counter@key") differs from list order
KEYS = ["zeta", "Alpha", "ä", "m@x", "b"]
CLIENT = "client"


# -- the workload ---------------------------------------------------------------------------------


def Counter(context):
    value = context.get_state(lambda: 0)
    if context.operation_name == "get":
        context.set_result(value)
    elif context.operation_name == "set":
        value = context.get_input()
    context.set_state(value)


def ids_of(ctx):
    return [EntityId("Counter", key) for key in ctx.get_input()]


def increment_locked(ctx):
    ids = ids_of(ctx)
    with (yield ctx.lock_entities(ids)):
        values = []
        for entity_id in ids:
            values.append((yield ctx.call_entity(entity_id, "get")))
        for entity_id, value in zip(ids, values):
            yield ctx.call_entity(entity_id, "set", value + 1)
    return values


def increment_unlocked(ctx):
    ids = ids_of(ctx)
    values = []
    for entity_id in ids:
        values.append((yield ctx.call_entity(entity_id, "get")))
    for entity_id, value in zip(ids, values):
        yield ctx.call_entity(entity_id, "set", value + 1)
    return values


def call_while_acquiring(ctx):
    """Calls a locked entity before the grant arrives (a locking-rules violation)."""
    ids = ids_of(ctx)
    lock = ctx.lock_entities(ids)
    read = ctx.call_entity(ids[0], "get")
    handle, value = yield ctx.task_all([lock, read])
    with handle:
        yield ctx.call_entity(ids[0], "set", value + 1)
    return value


SPECS = {"counter": EntitySpec("Counter", Counter, False)}  # by lower-cased name


# -- the world ------------------------------------------------------------------------------------


def action_message(action, instance_id, execution_id, now):
    """``runtime._entity_host.entity_action_message``, re-implemented (importing runtime starts Ray)."""
    sender = ParentInfo(instance_id, action.task_id, execution_id)
    if isinstance(action, CallEntity):
        return action.entity_id, EntityRequest(now, action.name, action.input, sender, False)
    if isinstance(action, SignalEntity):
        return action.entity_id, EntityRequest(now, action.name, action.input, None, True)
    if isinstance(action, LockEntities):
        return action.lock_set[0], EntityLockMessage(now, sender, action.lock_set, 0)
    if isinstance(action, UnlockEntity):
        return action.entity_id, EntityUnlockMessage(now, instance_id, execution_id, action.section_id)
    raise AssertionError(f"unexpected action {action!r}")


class World:
    """Orchestrations and entities exchanging messages through FIFO (sender, receiver) channels."""

    def __init__(self, orchestrator, lock_sets):
        reg = Registry()
        reg.add_orchestrator(orchestrator, "worker")
        self.lookup = reg.orchestrators.get
        self.lock_sets = lock_sets
        self.executors = {}
        self.histories = {}
        self.entities = {}
        self.channels = {}  # (sender, receiver) -> deque of (seq, event); insertion ordered
        self.seq = 0
        self.clock = 0
        for i, keys in enumerate(lock_sets):
            iid = f"o{i}"
            self.executors[iid] = OrchestrationExecutor(self.lookup, iid)
            self.histories[iid] = []
            self.send(CLIENT, iid, started("worker", list(keys), instance_id=iid))

    def send(self, sender, receiver, event):
        self.seq += 1
        self.channels.setdefault((sender, receiver), deque()).append((self.seq, event))

    def ready(self):
        """The channels with something to deliver, in a stable order."""
        return [pair for pair, queue in self.channels.items() if queue]

    def deliver(self, pair, whole_channel=False):
        """Deliver the oldest message of ``pair`` (or all of its messages, in order, in one turn)."""
        queue = self.channels[pair]
        count = len(queue) if whole_channel else 1
        events = [queue.popleft()[1] for _ in range(count)]
        self.clock += 1
        now = at(self.clock)
        receiver = pair[1]
        if receiver.startswith("@"):
            self._run_entity(receiver, events, now)
        else:
            self._run_orchestration(receiver, events, now)

    def _run_entity(self, key, events, now):
        entity_id = EntityId.parse(key)
        state = self.entities.setdefault(key, EntityState())
        for out in run_entity(SPECS.get(entity_id.name), entity_id, state, events, now):
            if not out.target.startswith("@"):
                assert out.execution_id == self.executors[out.target].context.execution_id
            self.send(key, out.target, out.event)

    def _run_orchestration(self, iid, events, now):
        executor = self.executors[iid]
        result = executor.process(events, now)
        self.histories[iid].extend(result.new_events)
        for action in result.actions:
            target, message = action_message(action, iid, executor.context.execution_id, now)
            self.send(iid, target, message)

    def run(self, choose, limit=5000):
        """Deliver until nothing is left; ``choose(ready_pairs)`` picks (pair, whole_channel)."""
        for _ in range(limit):
            ready = self.ready()
            if not ready:
                return
            self.deliver(*choose(ready))
        raise AssertionError(f"still delivering after {limit} messages")

    def states(self):
        return {iid: ex.state for iid, ex in self.executors.items()}

    def value(self, key):
        state = self.entities.get(str(EntityId("Counter", key)))
        return state.state if state is not None and state.exists else 0

    def expected(self, key):
        return sum(1 for keys in self.lock_sets if key in keys)


def oldest_first(ready_pairs, world):
    """Global FIFO: always the message sent first."""
    return min(ready_pairs, key=lambda pair: world.channels[pair][0][0]), False


# -- the property ---------------------------------------------------------------------------------

lock_sets_strategy = st.lists(
    st.lists(st.sampled_from(KEYS), min_size=1, max_size=4, unique=True),
    min_size=1,
    max_size=4,
)


@settings(max_examples=60, deadline=None, database=None)
@given(lock_sets=lock_sets_strategy, data=st.data())
def test_locked_increments_never_deadlock_and_never_lose_an_update(lock_sets, data):
    world = World(increment_locked, lock_sets)

    def choose(ready):
        pair = ready[data.draw(st.integers(0, len(ready) - 1), label="channel")]
        return pair, data.draw(st.booleans(), label="whole channel")

    world.run(choose)

    assert world.states() == {iid: ExecutionState.COMPLETED for iid in world.executors}
    for key in KEYS:
        assert world.value(key) == world.expected(key), key
    for key, state in world.entities.items():
        assert state.locked_by is None and state.queue == [], key
    for iid, executor in world.executors.items():
        replayed = OrchestrationExecutor(world.lookup, iid)
        replayed.replay(world.histories[iid])
        again = replayed.process([], at(world.clock + 1))
        assert again.actions == [] and again.state is ExecutionState.COMPLETED
        assert again.output == executor._output


# -- the property can fail ------------------------------------------------------------------------


def test_without_locks_an_interleaving_loses_updates():
    world = World(increment_unlocked, [["b"], ["b"]])
    world.run(lambda ready: oldest_first(ready, world))
    assert world.states() == {"o0": ExecutionState.COMPLETED, "o1": ExecutionState.COMPLETED}
    # both read 0 before either wrote: one increment is lost
    assert world.value("b") == 1
    assert world.expected("b") == 2


def test_with_locks_the_same_interleaving_keeps_every_update():
    world = World(increment_locked, [["b"], ["b"]])
    world.run(lambda ready: oldest_first(ready, world))
    assert world.states() == {"o0": ExecutionState.COMPLETED, "o1": ExecutionState.COMPLETED}
    assert world.value("b") == 2


def test_opposite_lock_orders_are_acquired_in_one_global_order():
    # o0 asks for [b, a], o1 for [a, b]; both lock "@counter@a" first, so neither can hold one
    # lock while waiting for the other, whatever the order of delivery
    world = World(increment_locked, [["zeta", "Alpha"], ["Alpha", "zeta"]])
    world.run(lambda ready: oldest_first(ready, world))
    assert world.states() == {"o0": ExecutionState.COMPLETED, "o1": ExecutionState.COMPLETED}
    assert world.value("zeta") == 2 and world.value("Alpha") == 2


def test_a_call_made_before_the_grant_fails_the_orchestration_and_leaves_no_lock():
    # durabletask-python refuses it too ("Must await the completion of the lock request prior
    # to calling any entity"): served by an entity the lock has not reached yet, the read
    # would be outside the section; each lock request is withdrawn or handed back
    world = World(call_while_acquiring, [["b", "a"], ["b"]])  # o0 calls b, the second in lock order
    world.run(lambda ready: oldest_first(ready, world))
    assert world.states() == {"o0": ExecutionState.FAILED, "o1": ExecutionState.FAILED}
    failures = [e for h in world.histories.values() for e in h if e.event_type == "ExecutionCompleted"]
    assert len(failures) == 2 and all("before the lock on" in e.failure.message for e in failures)
    assert world.value("b") == 0 and world.value("a") == 0
    assert all(state.locked_by is None for state in world.entities.values())
