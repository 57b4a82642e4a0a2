"""Pure tests of critical sections: ``lock_entities`` in the replay executor.

No Ray, no SQLite. Entity answers and lock grants are written inline as history events. Every
episode runs twice (a fresh replay of the whole history, and one cached executor) and both must
agree; each scenario then replays its final history once more and checks that the code produces
no new action and no non-determinism.
"""

import pytest

from entities import EntityId
from orchestrations import (
    CallEntity,
    EntityLockGranted,
    EntityLockRequested,
    EntityOperationCompleted,
    EntityOperationFailed,
    EntityUnlockSent,
    ExecutionResult,
    ExecutionState,
    FailureDetails,
    LockEntities,
    LockingRulesViolationError,
    OrchestrationExecutor,
    Registry,
    SignalEntity,
    TaskFailedError,
    UnlockEntity,
    execute,
)
from orchestrations.testing import at, resumed, started, suspended, terminated, timer_fired

A = EntityId("Counter", "a")
B = EntityId("Counter", "b")
C = EntityId("Counter", "c")
KA, KB, KC = str(A), str(B), str(C)
LOCKING_RULES = "orchestrations.LockingRulesViolationError"


# -- driver ---------------------------------------------------------------------------------------


def assert_same_result(fresh: ExecutionResult, cached: ExecutionResult):
    assert cached.new_events == fresh.new_events
    assert cached.actions == fresh.actions
    assert cached.state is fresh.state
    assert cached.output == fresh.output
    assert cached.failure == fresh.failure
    assert cached.withdrawn_lock == fresh.withdrawn_lock


class Instance:
    """One instance driven episode by episode, by a fresh replay and by a cached executor."""

    def __init__(self, *fns, iid="orch"):
        reg = Registry()
        for fn in fns:
            reg.add_orchestrator(fn)
        self.lookup = reg.orchestrators.get
        self.name = fns[0].__name__
        self.iid = iid
        self.history = []
        self.executor = OrchestrationExecutor(self.lookup, iid)
        self.clock = 0

    def start(self, input=None):
        return self.run(started(self.name, input, instance_id=self.iid))

    def run(self, *events):
        self.clock += 1
        now = at(self.clock)
        fresh = execute(self.lookup, self.iid, self.history, list(events), now)
        assert_same_result(fresh, self.executor.process(list(events), now))
        self.history.extend(fresh.new_events)
        return fresh

    def replayed(self):
        """The result of one empty episode after replaying the recorded history from scratch."""
        executor = OrchestrationExecutor(self.lookup, self.iid)
        executor.replay(self.history)
        return executor.process([], at(self.clock + 1))

    def assert_replay_ends_where_it_ended(self, last: ExecutionResult):
        """Replaying the recorded history meets no non-determinism and reaches the same end."""
        again = self.replayed()
        assert again.state is last.state
        assert again.failure == last.failure
        if again.failure is not None:
            assert "NonDeterminism" not in again.failure.error_type
        return again

    def assert_replay_is_deterministic(self, last: ExecutionResult):
        """... and schedules (and records) nothing new."""
        again = self.assert_replay_ends_where_it_ended(last)
        assert again.actions == []
        assert [e.event_type for e in again.new_events] == ["OrchestratorStarted", "OrchestratorCompleted"]


def granted(task_id, *keys):
    return EntityLockGranted(at(0), task_id, tuple(keys))


def answered(task_id, value=None):
    return EntityOperationCompleted(at(0), task_id, value)


def failed(task_id, message="boom", error_type="ValueError"):
    return EntityOperationFailed(at(0), task_id, FailureDetails(error_type, message))


def unlocks(result):
    return [a.entity_id for a in result.actions if isinstance(a, UnlockEntity)]


# -- lock order ------------------------------------------------------------------------------------


def lock_these(ctx):
    ids = [EntityId(name, key) for name, key in ctx.get_input()]
    with (yield ctx.lock_entities(ids)):
        pass
    return "done"


@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        # entity names are lower-cased (case-insensitive, as in Durable Functions)
        ([("Counter", "b"), ("Counter", "a")], ["@counter@a", "@counter@b"]),
        ([("b", "1"), ("a", "2"), ("b", "1")], ["@a@2", "@b@1"]),
        # one entity, written in two cases, is locked once
        ([("Counter", "a"), ("COUNTER", "a")], ["@counter@a"]),
        # by (name, key) "a" < "a-b", but as a string "@a-b@a" < "@a@z" ('-' < '@')
        ([("a", "z"), ("a-b", "a")], ["@a-b@a", "@a@z"]),
        # keys are bytes, not case-folded: 'Z' (0x5a) < 'a' (0x61)
        ([("E", "a"), ("E", "Z")], ["@e@Z", "@e@a"]),
        # non-ASCII as UTF-8: 'z' < 'é' (c3 a9) < U+E000 (ee 80 80) < U+10000 (f0 90 80 80);
        # UTF-16 code units would put U+10000 (d800 dc00) before U+E000
        ([("E", "\U00010000"), ("E", "\ue000"), ("E", "é"), ("E", "z")],
         ["@e@z", "@e@é", "@e@\ue000", "@e@\U00010000"]),
    ],
)
def test_lock_set_is_sorted_as_utf8_bytes_and_deduplicated(ids, expected):
    inst = Instance(lock_these)
    first = inst.start(ids)
    assert first.actions == [LockEntities(1, tuple(expected))]
    assert expected == sorted(expected, key=lambda k: k.encode("utf-8"))
    requested = [e for e in first.new_events if isinstance(e, EntityLockRequested)]
    assert [list(e.lock_set) for e in requested] == [expected]


@pytest.mark.parametrize("bad", [[], "@Counter@a", ["not an id"], [42], A, 42])
def test_lock_entities_rejects_bad_input(bad):
    def bad_lock(ctx):
        yield ctx.lock_entities(ctx.get_input())

    result = Instance(bad_lock).start(bad)
    assert result.state is ExecutionState.FAILED
    assert result.failure.error_type in ("orchestrations.DurableValueError", "orchestrations.DurableTypeError")
    assert result.actions == []


# -- the section ------------------------------------------------------------------------------------


def transfer(ctx):
    with (yield ctx.lock_entities([B, A])) as handle:
        inside = (ctx.is_locked, handle.lock_set)
        va = yield ctx.call_entity(A, "get")
        yield ctx.call_entity(B, "add", va)
    return [inside, ctx.is_locked, va]


def test_one_entity_id_for_a_list_is_refused_showing_the_list_to_write():
    def one_id(ctx):
        yield ctx.lock_entities(A)

    result = Instance(one_id).start()
    assert result.state is ExecutionState.FAILED and result.actions == []
    assert result.failure.error_type == "orchestrations.DurableTypeError"
    assert "lock_entities takes a list of EntityId" in result.failure.message
    assert f"lock_entities([{A!r}])" in result.failure.message


def test_a_call_made_before_the_grant_is_refused_and_the_section_still_works():
    # served by B before the lock reaches it, such a call would read outside the section
    # (durabletask-python: "Must await the completion of the lock request prior to calling
    # any entity"); the rule is checked at the call, so the code may catch it
    def eager(ctx):
        lock = ctx.lock_entities([A, B])
        try:
            ctx.call_entity(B, "get")
            refused = None
        except LockingRulesViolationError as exc:
            refused = str(exc)
        with (yield lock):
            return [refused, (yield ctx.call_entity(B, "get"))]

    inst = Instance(eager)
    first = inst.start()
    assert first.actions == [LockEntities(1, (KA, KB))]  # no call left for B
    inside = inst.run(granted(1, KA, KB))
    assert inside.actions == [CallEntity(2, KB, "get")]
    done = inst.run(answered(2, 7))
    assert done.state is ExecutionState.COMPLETED
    refused, value = done.output
    assert value == 7 and refused.startswith(f"call_entity({KB!r}) before the lock on [{KA!r}, {KB!r}] was granted")
    inst.assert_replay_is_deterministic(done)


def test_lock_granted_resumes_into_the_block_and_leaving_it_unlocks_every_entity():
    inst = Instance(transfer)
    first = inst.start()
    assert first.actions == [LockEntities(1, (KA, KB))]
    assert first.state is ExecutionState.RUNNING

    inside = inst.run(granted(1, KA, KB))
    assert inside.actions == [CallEntity(2, KA, "get")]

    add = inst.run(answered(2, 5))
    assert add.actions == [CallEntity(3, KB, "add", 5)]

    done = inst.run(answered(3))
    assert done.state is ExecutionState.COMPLETED
    assert done.actions == [UnlockEntity(4, KA, 1), UnlockEntity(5, KB, 1)]
    assert [e for e in done.new_events if isinstance(e, EntityUnlockSent)] == [
        EntityUnlockSent(at(4), 4, KA),
        EntityUnlockSent(at(4), 5, KB),
    ]
    assert done.output == [(True, (KA, KB)), False, 5]
    inst.assert_replay_is_deterministic(done)


def test_nothing_runs_until_the_lock_is_granted():
    inst = Instance(transfer)
    inst.start()
    waiting = inst.run(answered(99, "stray"))
    assert waiting.actions == []
    assert waiting.state is ExecutionState.RUNNING


def two_sections(ctx):
    with (yield ctx.lock_entities([A])):
        yield ctx.call_entity(A, "get")
    outside = yield ctx.call_entity(C, "get")
    with (yield ctx.lock_entities([B])):
        yield ctx.call_entity(B, "get")
    return outside


def test_sections_one_after_the_other_are_allowed_and_rules_lift_between_them():
    inst = Instance(two_sections)
    inst.start()
    inst.run(granted(1, KA))
    r = inst.run(answered(2))
    assert r.actions == [UnlockEntity(3, KA, 1), CallEntity(4, KC, "get")]
    r = inst.run(answered(4, "c"))
    assert r.actions == [LockEntities(5, (KB,))]
    r = inst.run(granted(5, KB))
    assert r.actions == [CallEntity(6, KB, "get")]
    r = inst.run(answered(6))
    assert r.actions == [UnlockEntity(7, KB, 5)]
    assert r.state is ExecutionState.COMPLETED and r.output == "c"
    inst.assert_replay_is_deterministic(r)


def test_failed_entity_call_inside_is_catchable_and_the_section_still_ends():
    def careful(ctx):
        with (yield ctx.lock_entities([A])):
            try:
                yield ctx.call_entity(A, "withdraw", 100)
            except TaskFailedError as e:
                caught = (e.error_type, e.message)
        return caught

    inst = Instance(careful)
    inst.start()
    inst.run(granted(1, KA))
    r = inst.run(failed(2, "insufficient funds"))
    assert r.state is ExecutionState.COMPLETED
    assert r.output == ("ValueError", "insufficient funds")
    assert r.actions == [UnlockEntity(3, KA, 1)]
    inst.assert_replay_is_deterministic(r)


def test_signal_to_an_unlocked_entity_inside_is_allowed():
    def signals_other(ctx):
        with (yield ctx.lock_entities([A])):
            ctx.signal_entity(C, "add", 1)
            yield ctx.call_entity(A, "get")
        return "ok"

    inst = Instance(signals_other)
    inst.start()
    r = inst.run(granted(1, KA))
    assert r.actions == [SignalEntity(2, KC, "add", 1), CallEntity(3, KA, "get")]
    r = inst.run(answered(3))
    assert r.state is ExecutionState.COMPLETED
    assert r.actions == [UnlockEntity(4, KA, 1)]


def test_sequential_calls_to_one_locked_entity_are_allowed():
    def twice(ctx):
        with (yield ctx.lock_entities([A])):
            x = yield ctx.call_entity(A, "get")
            y = yield ctx.call_entity(A, "get")
        return [x, y]

    inst = Instance(twice)
    inst.start()
    inst.run(granted(1, KA))
    r = inst.run(answered(2, 1))
    assert r.actions == [CallEntity(3, KA, "get")]
    r = inst.run(answered(3, 2))
    assert r.output == [1, 2]


def test_parallel_calls_to_different_locked_entities_are_allowed():
    def fan(ctx):
        with (yield ctx.lock_entities([A, B])):
            values = yield ctx.task_all([ctx.call_entity(A, "get"), ctx.call_entity(B, "get")])
        return values

    inst = Instance(fan)
    inst.start()
    r = inst.run(granted(1, KA, KB))
    assert r.actions == [CallEntity(2, KA, "get"), CallEntity(3, KB, "get")]
    r = inst.run(answered(3, "b"), answered(2, "a"))
    assert r.output == ["a", "b"]
    assert r.actions == [UnlockEntity(4, KA, 1), UnlockEntity(5, KB, 1)]


# -- the rules ----------------------------------------------------------------------------------------


def nested(ctx):
    yield ctx.lock_entities([B])


def call_unlocked(ctx):
    yield ctx.call_entity(B, "get")


def two_in_flight(ctx):
    yield ctx.task_all([ctx.call_entity(A, "get"), ctx.call_entity(A, "get")])


def sub_orchestration(ctx):
    yield ctx.call_sub_orchestrator("child")


def signal_locked(ctx):
    ctx.signal_entity(A, "add", 1)
    yield ctx.call_entity(A, "get")


RULES = {
    "nesting": (nested, "cannot be nested"),
    "call_outside_lock_set": (call_unlocked, "locks only"),
    "two_calls_in_flight": (two_in_flight, "in flight"),
    "sub_orchestration": (sub_orchestration, "call_sub_orchestrator"),
    "signal_to_locked_entity": (signal_locked, "call it instead"),
}


def child(ctx):
    return "child"


def breaker(body):
    def breaks_rule(ctx):
        with (yield ctx.lock_entities([A])):
            yield from body(ctx)
        return "left"

    return breaks_rule


def catcher(body):
    def catches_rule(ctx):
        with (yield ctx.lock_entities([A])):
            try:
                yield from body(ctx)
            except LockingRulesViolationError as e:
                return ["caught", str(e)]
        return "not caught"

    return catches_rule


def run_into_section(fn):
    inst = Instance(fn, child)
    first = inst.start()
    assert first.actions == [LockEntities(1, (KA,))]
    return inst, inst.run(granted(1, KA))


@pytest.mark.parametrize("rule", list(RULES))
def test_breaking_a_rule_fails_the_instance_with_locking_rules_violation(rule):
    body, words = RULES[rule]
    inst, r = run_into_section(breaker(body))
    assert r.state is ExecutionState.FAILED
    assert r.failure.error_type == LOCKING_RULES
    assert words in r.failure.message
    assert not any(isinstance(a, (CallEntity, SignalEntity, LockEntities)) for a in r.actions)
    inst.assert_replay_ends_where_it_ended(r)


@pytest.mark.parametrize("rule", list(RULES))
def test_breaking_a_rule_is_catchable_and_the_section_still_ends(rule):
    body, words = RULES[rule]
    inst, r = run_into_section(catcher(body))
    assert r.state is ExecutionState.COMPLETED
    assert r.output[0] == "caught" and words in r.output[1]
    assert unlocks(r) == [KA]
    inst.assert_replay_is_deterministic(r)


@pytest.mark.parametrize("rule", list(RULES))
def test_breaking_a_rule_uncaught_inside_with_releases_the_locks(rule):
    body, _ = RULES[rule]
    _, r = run_into_section(breaker(body))
    assert r.state is ExecutionState.FAILED
    assert unlocks(r) == [KA]


def test_sub_orchestration_with_retry_inside_is_refused_too():
    from datetime import timedelta

    from orchestrations import RetryOptions

    def retried_child(ctx):
        with (yield ctx.lock_entities([A])):
            try:
                yield ctx.call_sub_orchestrator_with_retry("child", RetryOptions(timedelta(seconds=1), 2))
            except LockingRulesViolationError:
                return "refused"

    _, r = run_into_section(retried_child)
    assert r.output == "refused"


def test_nesting_is_refused_while_the_lock_is_still_being_acquired():
    def eager(ctx):
        first = ctx.lock_entities([A])
        try:
            ctx.lock_entities([B])
        except LockingRulesViolationError:
            refused = True
        with (yield first):
            pass
        return refused

    inst = Instance(eager)
    r = inst.start()
    assert r.actions == [LockEntities(1, (KA,))]
    r = inst.run(granted(1, KA))
    assert r.output is True
    assert r.actions == [UnlockEntity(2, KA, 1)]


# -- locks are released however the section ends -------------------------------------------------------


def test_exception_escaping_the_block_but_caught_outside_releases_the_locks():
    def recovers(ctx):
        try:
            with (yield ctx.lock_entities([A, B])):
                raise KeyError("inside")
        except KeyError:
            pass
        return ctx.is_locked

    inst = Instance(recovers)
    inst.start()
    r = inst.run(granted(1, KA, KB))
    assert r.state is ExecutionState.COMPLETED
    assert r.output is False
    assert r.actions == [UnlockEntity(2, KA, 1), UnlockEntity(3, KB, 1)]
    inst.assert_replay_is_deterministic(r)


def escapes_with(ctx):
    with (yield ctx.lock_entities([A, B])):
        yield ctx.call_entity(A, "get")
        raise KeyError("escaped the block")


def test_exception_escaping_the_block_fails_the_instance():
    inst = Instance(escapes_with)
    inst.start()
    inst.run(granted(1, KA, KB))
    r = inst.run(answered(2))
    assert r.state is ExecutionState.FAILED
    assert r.failure.error_type == "KeyError"
    inst.assert_replay_ends_where_it_ended(r)


def test_exception_escaping_the_block_releases_the_locks():
    inst = Instance(escapes_with)
    inst.start()
    inst.run(granted(1, KA, KB))
    r = inst.run(answered(2))
    assert r.state is ExecutionState.FAILED
    assert unlocks(r) == [KA, KB]


def test_failed_entity_call_escaping_the_block_releases_the_locks():
    def careless(ctx):
        with (yield ctx.lock_entities([A])):
            yield ctx.call_entity(A, "withdraw", 100)

    inst = Instance(careless)
    inst.start()
    inst.run(granted(1, KA))
    r = inst.run(failed(2, "insufficient funds"))
    assert r.state is ExecutionState.FAILED
    assert r.failure.message == f"Operation 'withdraw' on entity {KA!r} failed: insufficient funds"
    assert unlocks(r) == [KA]


def test_failing_while_holding_locks_without_with_releases_them():
    def holds_then_fails(ctx):
        yield ctx.lock_entities([A, B])
        ctx.signal_entity(C, "add", 1)  # dropped: a failed episode has no side effects
        raise RuntimeError("while holding")

    inst = Instance(holds_then_fails)
    inst.start()
    r = inst.run(granted(1, KA, KB))
    assert r.state is ExecutionState.FAILED
    assert r.failure.error_type == "RuntimeError"
    assert r.actions == [UnlockEntity(3, KA, 1), UnlockEntity(4, KB, 1)]
    inst.assert_replay_ends_where_it_ended(r)


def test_returning_inside_the_block_releases_the_locks():
    def returns_inside(ctx):
        with (yield ctx.lock_entities([B, A])):
            value = yield ctx.call_entity(B, "get")
            return value

    inst = Instance(returns_inside)
    inst.start()
    inst.run(granted(1, KA, KB))
    r = inst.run(answered(2, 8))
    assert r.state is ExecutionState.COMPLETED and r.output == 8
    assert r.actions == [UnlockEntity(3, KA, 1), UnlockEntity(4, KB, 1)]
    inst.assert_replay_is_deterministic(r)


def test_completing_while_holding_locks_without_with_releases_them():
    def keeps_handle(ctx):
        h = yield ctx.lock_entities([A, B])
        return list(h.lock_set)

    inst = Instance(keeps_handle)
    inst.start()
    r = inst.run(granted(1, KA, KB))
    assert r.state is ExecutionState.COMPLETED and r.output == [KA, KB]
    assert r.actions == [UnlockEntity(2, KA, 1), UnlockEntity(3, KB, 1)]
    inst.assert_replay_is_deterministic(r)


def test_plain_release_ends_the_section_once():
    def releases(ctx):
        h = yield ctx.lock_entities([A])
        h.release()
        h.release()
        yield ctx.call_entity(B, "get")  # allowed: the section is over
        return ctx.is_locked

    inst = Instance(releases)
    inst.start()
    r = inst.run(granted(1, KA))
    assert r.actions == [UnlockEntity(2, KA, 1), CallEntity(3, KB, "get")]
    r = inst.run(answered(3))
    assert r.state is ExecutionState.COMPLETED and r.output is False
    assert r.actions == []


def test_a_stale_handle_does_not_end_a_later_section_on_the_same_entities():
    def stale(ctx):
        old = yield ctx.lock_entities([A])
        old.release()
        yield ctx.lock_entities([A])
        old.release()  # documented as doing nothing the second time
        return ctx.is_locked

    inst = Instance(stale)
    inst.start()
    inst.run(granted(1, KA))
    r = inst.run(granted(3, KA))
    assert r.output is True


def test_continue_as_new_while_holding_locks_releases_them():
    def restarts(ctx):
        n = ctx.get_input()
        with (yield ctx.lock_entities([A])):
            ctx.continue_as_new(n + 1)
            yield ctx.call_entity(A, "get")

    inst = Instance(restarts)
    inst.start(0)
    r = inst.run(granted(1, KA))
    assert r.state is ExecutionState.CONTINUED_AS_NEW and r.output == 1
    assert unlocks(r) == [KA]
    assert r.actions.count(UnlockEntity(3, KA, 1)) == 1
    inst.assert_replay_is_deterministic(r)


def test_continue_as_new_with_a_held_handle_releases_the_locks():
    def restarts(ctx):
        yield ctx.lock_entities([A, C])
        ctx.continue_as_new("again")

    inst = Instance(restarts)
    inst.start()
    r = inst.run(granted(1, KA, KC))
    assert r.state is ExecutionState.CONTINUED_AS_NEW and r.output == "again"
    assert r.actions == [UnlockEntity(2, KA, 1), UnlockEntity(3, KC, 1)]
    inst.assert_replay_is_deterministic(r)


def waits_inside(ctx):
    with (yield ctx.lock_entities([A, B])):
        yield ctx.call_entity(A, "get")
    return "never"


def test_termination_while_holding_locks_releases_them():
    inst = Instance(waits_inside)
    inst.start()
    assert inst.run(granted(1, KA, KB)).actions == [CallEntity(2, KA, "get")]
    r = inst.run(terminated("stop"))
    assert r.state is ExecutionState.TERMINATED
    assert r.actions == [UnlockEntity(3, KA, 1), UnlockEntity(4, KB, 1)]
    inst.assert_replay_ends_where_it_ended(r)


def test_termination_while_holding_a_handle_without_with_releases_the_locks():
    def holds(ctx):
        yield ctx.lock_entities([C, A])
        yield ctx.call_entity(C, "get")

    inst = Instance(holds)
    inst.start()
    inst.run(granted(1, KA, KC))
    r = inst.run(terminated("stop"))
    assert r.state is ExecutionState.TERMINATED
    assert r.actions == [UnlockEntity(3, KA, 1), UnlockEntity(4, KC, 1)]
    inst.assert_replay_ends_where_it_ended(r)


def test_termination_while_suspended_and_holding_locks_releases_them():
    inst = Instance(waits_inside)
    inst.start()
    inst.run(granted(1, KA, KB))
    assert inst.run(suspended()).state is ExecutionState.SUSPENDED
    r = inst.run(answered(2), terminated("stop"))
    assert r.state is ExecutionState.TERMINATED
    assert r.actions == [UnlockEntity(3, KA, 1), UnlockEntity(4, KB, 1)]
    inst.assert_replay_ends_where_it_ended(r)


def test_suspend_and_resume_inside_the_section_keeps_the_locks():
    inst = Instance(waits_inside)
    inst.start()
    inst.run(granted(1, KA, KB))
    inst.run(suspended())
    held = inst.run(answered(2))
    assert held.actions == [] and held.state is ExecutionState.SUSPENDED
    r = inst.run(resumed())
    assert r.state is ExecutionState.COMPLETED
    assert r.actions == [UnlockEntity(3, KA, 1), UnlockEntity(4, KB, 1)]
    inst.assert_replay_is_deterministic(r)


def test_termination_while_acquiring_withdraws_the_lock_request():
    # nothing is held yet, so history records no unlock; the result names the request still
    # waiting, which the runtime withdraws from its entities (and a grant that arrives for a
    # finished instance anyway is released by the runtime)
    inst = Instance(waits_inside)
    assert inst.start().withdrawn_lock is None
    r = inst.run(terminated("stop"))
    assert r.state is ExecutionState.TERMINATED
    assert r.actions == []
    assert r.withdrawn_lock == ((KA, KB), 1)
    late = inst.run(granted(1, KA, KB))
    assert late.actions == [] and late.state is ExecutionState.TERMINATED
    assert late.withdrawn_lock is None  # reported once


def test_ending_while_acquiring_withdraws_the_lock_request():
    def gives_up(ctx):
        lock = ctx.lock_entities([A])
        winner = yield ctx.task_any([lock, ctx.create_timer(ctx.current_utc_datetime)])
        if winner is not lock:
            raise ValueError("gave up")

    inst = Instance(gives_up)
    inst.start()
    r = inst.run(timer_fired(2, at(1)))
    assert r.state is ExecutionState.FAILED
    assert r.withdrawn_lock == ((KA,), 1)


# -- replay ------------------------------------------------------------------------------------------


def failed_by_rule():
    return run_into_section(breaker(nested))


def failed_by_exception_in_with():
    inst = Instance(escapes_with)
    inst.start()
    inst.run(granted(1, KA, KB))
    return inst, inst.run(answered(2))


def failed_holding_handle():
    def holds_then_fails(ctx):
        yield ctx.lock_entities([A])
        raise RuntimeError("while holding")

    inst = Instance(holds_then_fails)
    inst.start()
    return inst, inst.run(granted(1, KA))


def terminated_inside():
    inst = Instance(waits_inside)
    inst.start()
    inst.run(granted(1, KA, KB))
    return inst, inst.run(terminated("stop"))


@pytest.mark.parametrize(
    "scenario", [failed_by_rule, failed_by_exception_in_with, failed_holding_handle, terminated_inside]
)
def test_replay_of_a_history_that_ended_holding_locks_sends_no_unlock_again(scenario):
    inst, last = scenario()
    assert unlocks(last)  # the live run released the locks once
    inst.assert_replay_is_deterministic(last)


def test_replay_with_a_different_lock_set_is_nondeterministic():
    inst = Instance(transfer)
    inst.start()
    inst.run(granted(1, KA, KB))

    def transfer_changed(ctx):
        with (yield ctx.lock_entities([C, A])):
            yield ctx.call_entity(A, "get")

    reg = Registry()
    reg.add_orchestrator(transfer_changed, "transfer")
    r = execute(reg.orchestrators.get, inst.iid, inst.history, [answered(2, 1)], at(10))
    assert r.state is ExecutionState.FAILED
    assert r.failure.error_type == "orchestrations.NonDeterminismError"
    assert f"lock_entities {[KA, KB]!r}" in r.failure.message
    assert f"lock_entities {[KA, KC]!r}" in r.failure.message


def test_replay_without_the_unlocks_history_recorded_is_nondeterministic():
    inst = Instance(transfer)
    inst.start()
    inst.run(granted(1, KA, KB))
    inst.run(answered(2, 5))
    inst.run(answered(3))

    def transfer_keeps_locks(ctx):
        yield ctx.lock_entities([B, A])
        va = yield ctx.call_entity(A, "get")
        yield ctx.call_entity(B, "add", va)
        yield ctx.call_entity(A, "get")

    reg = Registry()
    reg.add_orchestrator(transfer_keeps_locks, "transfer")
    executor = OrchestrationExecutor(reg.orchestrators.get, inst.iid)
    executor.replay(inst.history)
    r = executor.process([], at(10))
    assert r.state is ExecutionState.FAILED
    assert r.failure.error_type == "orchestrations.NonDeterminismError"
    assert f"unlock {KA!r}" in r.failure.message
    assert "call_entity" in r.failure.message


def test_is_locked_only_while_the_locks_are_held():
    from orchestrations import EntityLockGranted, OrchestrationExecutor, Registry

    seen = []

    def orch(ctx):
        lock = ctx.lock_entities([EntityId("Acct", "a")])
        seen.append(ctx.is_locked)  # requested, not yet granted
        with (yield lock):
            seen.append(ctx.is_locked)
        seen.append(ctx.is_locked)
        return None

    reg = Registry()
    reg.add_orchestrator(orch)
    executor = OrchestrationExecutor(reg.orchestrators.get, "i")
    executor.process([started("orch")], at(1))
    executor.process([EntityLockGranted(at(2), 1, ("@Acct@a",))], at(2))
    assert seen == [False, True, False]


def test_abandoning_an_execution_releases_what_it_holds_and_withdraws_what_it_waits_for():
    # what the runtime asks when it fails an execution for a value it cannot store
    holding = Instance(waits_inside)
    holding.start()
    holding.run(granted(1, KA, KB))
    assert holding.executor.abandon() == ([UnlockEntity(3, KA, 1), UnlockEntity(4, KB, 1)], None)
    waiting = Instance(waits_inside)
    waiting.start()
    assert waiting.executor.abandon() == ([], ((KA, KB), 1))
