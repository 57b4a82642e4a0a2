"""Pure tests of the lifecycle questions the engine answers from history: which children are
open (recursive terminate), which children exist (recursive purge), and the rewind plan
(recursive rewind). No Ray, no SQLite: histories are produced by running the engine."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta

from entities import EntityId
from orchestrations import (
    EntityLockGranted,
    EntityLockRequested,
    EntityOperationSignaled,
    EntityUnlockSent,
    ExecutionRewound,
    ExecutionState,
    Registry,
    RetryOptions,
    SignalEntity,
    SubOrchestrationInstanceCreated,
    TaskFailed,
    execute,
)
from orchestrations._children import children_of, open_children, unanswered_children
from orchestrations._rewind import _still_locked, plan_rewind, rewind_locks_refusal
from orchestrations.testing import (
    at,
    started,
    sub_completed,
    sub_created,
    sub_failed,
    task_completed,
    task_failed,
    timer_fired,
)


def lookup_of(*fns):
    reg = Registry()
    for fn in fns:
        reg.add_orchestrator(fn)
    return reg.orchestrators.get


class Run:
    """One instance driven episode by episode through the pure engine (``execute``)."""

    def __init__(self, fn, iid="parent"):
        self.lookup, self.name, self.iid = lookup_of(fn), fn.__name__, iid
        self.history = []

    def episode(self, *events, now):
        result = execute(self.lookup, self.iid, self.history, list(events), now)
        self.history.extend(result.new_events)
        return result

    def start(self, input=None):
        return self.episode(started(self.name, input, instance_id=self.iid), now=at(1))


def rewound(run, plan, now):
    """What running the rewound history gives: the kept history replayed, then the episode of
    ExecutionRewound plus the events delivered again."""
    return execute(run.lookup, run.iid, run.history[: plan.cut], [ExecutionRewound(now), *plan.redeliver], now)


# -- open and all children ----------------------------------------------------------------------


def fan_out_to_children(ctx):
    first = ctx.call_sub_orchestrator("child", 1)
    second = ctx.call_sub_orchestrator("child", 2, instance_id="named-child")
    yield ctx.task_all([first, second])
    yield ctx.wait_for_external_event("never")


def test_open_children_are_those_without_an_answer():
    # durabletask-python tests/durabletask/test_orchestration_e2e.py::test_terminate_recursive:
    # terminating the root stops the child still waiting; this is the engine's half (which child)
    run = Run(fan_out_to_children)
    run.start()
    assert open_children(run.history) == ["parent:1", "named-child"]
    run.episode(sub_completed(1, "one", ts=at(2)), now=at(2))
    assert open_children(run.history) == ["named-child"]
    run.episode(sub_completed(2, "two", ts=at(3)), now=at(3))
    assert open_children(run.history) == []
    # the purge of a finished parent reaches every child it started, answered or not
    assert children_of(run.history) == ["parent:1", "named-child"]


def retried_child(ctx):
    options = RetryOptions(first_retry_interval=timedelta(seconds=1), max_number_of_attempts=3)
    return (yield ctx.call_sub_orchestrator_with_retry("child", options, None, instance_id="retried"))


def test_a_child_retried_under_one_id_is_listed_once_and_open_only_while_its_attempt_runs():
    run = Run(retried_child)
    run.start()
    run.episode(sub_failed(1, ts=at(2)), now=at(2))  # first attempt failed: a retry timer starts
    assert open_children(run.history) == []
    timer = [e for e in run.history if e.event_type == "TimerCreated"][-1]
    run.episode(timer_fired(timer.event_id, timer.fire_at), now=timer.fire_at)
    assert open_children(run.history) == ["retried"]
    assert children_of(run.history) == ["retried"]
    assert [e.event_id for e in unanswered_children(run.history)] == [3]


# -- the rewind plan -----------------------------------------------------------------------------


def parent_of_child(ctx):
    result = yield ctx.call_sub_orchestrator("child_orchestrator", ctx.get_input(), instance_id="the-child")
    return f"parent:{result}"


def test_rewind_of_a_failed_sub_orchestration_keeps_its_creation_and_asks_the_child_again():
    # Azure/durabletask test/DurableTask.Core.Tests/RewindTests.cs
    #   ::Rewind_FailedSubOrchestration_RetainsCreationAndEmitsChildRewindMessage
    # microsoft/durabletask-python tests/durabletask/test_build_rewind_result.py
    #   ::test_rewind_removes_failed_sub_orch_events
    run = Run(parent_of_child)
    run.start("data")
    failed = run.episode(sub_failed(1, "Child failure", "RuntimeError", ts=at(2)), now=at(2))
    assert failed.state is ExecutionState.FAILED

    plan = plan_rewind(run.history)
    kept = run.history[: plan.cut]
    assert [e.instance_id for e in kept if isinstance(e, SubOrchestrationInstanceCreated)] == ["the-child"]
    assert not any(e.event_type in ("SubOrchestrationInstanceFailed", "ExecutionCompleted") for e in kept)
    assert plan.redeliver == []
    assert [(c.instance_id, c.name, c.input, c.event_id) for c in plan.children] == [
        ("the-child", "child_orchestrator", "data", 1)
    ]
    # the parent replays up to the child and waits for it: no new action, no failure
    again = rewound(run, plan, at(3))
    assert (again.state, again.actions) == (ExecutionState.RUNNING, [])
    assert again.new_events[0].event_type == "ExecutionRewound"
    # the child's new answer completes it
    history = [*kept, *again.new_events]
    done = execute(run.lookup, run.iid, history, [sub_completed(1, "child:data", ts=at(4))], at(4))
    assert (done.state, done.output) == (ExecutionState.COMPLETED, "parent:child:data")


BOX = EntityId("box", "b")


def in_a_section(ctx):
    with (yield ctx.lock_entities([BOX])):
        yield ctx.call_activity("inside")
    yield ctx.call_activity("after")


def test_a_rewind_plan_names_the_locks_the_execution_held_where_it_failed():
    # a helper found it: rewound, an instance that failed inside its section went on without
    # the locks its failure had released; the runtime refuses such a rewind (rewind_locks_refusal)
    inside = Run(in_a_section)
    lock = inside.start().actions[0]
    inside.episode(EntityLockGranted(at(2), lock.task_id, lock.lock_set), now=at(2))
    assert inside.episode(task_failed(2, "down", ts=at(3)), now=at(3)).state is ExecutionState.FAILED
    plan = plan_rewind(inside.history)
    assert plan.locked == ("@box@b",)
    assert "failed inside a critical section on ['@box@b']" in str(rewind_locks_refusal("p", plan))
    # failing after the section ended holds nothing: it may be rewound
    after = Run(in_a_section)
    after.start()
    after.episode(EntityLockGranted(at(2), lock.task_id, lock.lock_set), now=at(2))
    second = after.episode(task_completed(2, None, ts=at(3)), now=at(3)).actions[-1]
    assert after.episode(task_failed(second.task_id, "down", ts=at(4)), now=at(4)).state is ExecutionState.FAILED
    assert plan_rewind(after.history).locked == ()
    assert rewind_locks_refusal("p", plan_rewind(after.history)) is None


def test_a_lock_set_recorded_before_entity_names_were_case_insensitive_is_released_all_the_same():
    # a review found it: the old form '@Counter@a' and the replayed unlock's '@counter@a' did
    # not match, so a section that ended looked held and the rewind was refused for ever
    history = [
        EntityLockRequested(at(1), 1, ("@Counter@a",)),
        EntityLockGranted(at(2), 1, ("@Counter@a",)),
        EntityUnlockSent(at(3), 3, "@counter@a"),
    ]
    assert _still_locked(history) == ()
    assert _still_locked(history[:2]) == ("@counter@a",)


def two_steps(ctx):
    first = yield ctx.call_activity("first_activity", ctx.get_input())
    second = yield ctx.call_activity("second_activity", ctx.get_input())
    return [first, second]


def test_rewind_keeps_successful_results_and_drops_the_failure():
    # microsoft/durabletask-python tests/durabletask/test_build_rewind_result.py
    #   ::test_rewind_preserves_successful_activity, ::test_rewind_removes_execution_completed,
    #   ::test_rewind_removes_failed_activity_events
    # (here the failed activity's TaskScheduled stays: the runtime dispatches it again as an
    # activity without an answer, so the code is not asked to schedule it anew)
    run = Run(two_steps)
    run.start("test")
    run.episode(task_completed(1, "first:test", ts=at(2)), now=at(2))
    run.episode(task_failed(2, "Temporary failure", "RuntimeError", ts=at(3)), now=at(3))
    plan = plan_rewind(run.history)
    kept = run.history[: plan.cut]
    assert [e.event_type for e in kept].count("TaskCompleted") == 1
    assert not any(isinstance(e, TaskFailed) for e in [*kept, *plan.redeliver])
    assert "ExecutionCompleted" not in [e.event_type for e in kept]
    assert plan.children == []
    again = rewound(run, plan, at(4))
    assert (again.state, again.actions) == (ExecutionState.RUNNING, [])
    done = execute(run.lookup, run.iid, [*kept, *again.new_events], [task_completed(2, "second:test")], at(5))
    assert (done.state, done.output) == (ExecutionState.COMPLETED, ["first:test", "second:test"])


def mixed(ctx):
    good = yield ctx.call_activity("good_activity")
    ok_child = yield ctx.call_sub_orchestrator("child_ok", instance_id="child-ok-id")
    late = ctx.call_sub_orchestrator("child_late", instance_id="child-late-id")
    results = yield ctx.task_all([
        ctx.call_activity("bad_activity"),
        ctx.call_sub_orchestrator("child_fail", instance_id="child-fail-id"),
    ])
    return [good, ok_child, *results, (yield late)]


def test_rewind_of_a_mixed_fan_out_asks_again_only_the_children_without_a_kept_answer():
    # microsoft/durabletask-python tests/durabletask/test_build_rewind_result.py
    #   ::test_rewind_mixed_activities_and_sub_orchestrations,
    #   ::test_rewind_preserves_successful_sub_orchestration
    # Azure/durabletask RewindTests.cs::Rewind_FanOutFanIn_RetainsSuccessfulBranches
    run = Run(mixed)
    run.start()
    run.episode(task_completed(1, "good", ts=at(2)), now=at(2))
    run.episode(sub_completed(2, "child ok result", ts=at(3)), now=at(3))
    # the fan-out's activity and child fail in one episode; the child started before them has
    # not answered (an answer arriving while the parent is Failed is dropped): asked again too
    failed = run.episode(task_failed(4, "act fail", ts=at(4)), sub_failed(5, "sub orch fail", ts=at(4)), now=at(4))
    assert failed.state is ExecutionState.FAILED

    plan = plan_rewind(run.history)
    kept = run.history[: plan.cut]
    assert [e.event_type for e in kept].count("SubOrchestrationInstanceCompleted") == 1  # child-ok kept
    assert [c.instance_id for c in plan.children] == ["child-late-id", "child-fail-id"]
    again = rewound(run, plan, at(5))
    assert (again.state, again.actions) == (ExecutionState.RUNNING, [])
    history = [*kept, *again.new_events]
    answers = [task_completed(4, "bad ok"), sub_completed(5, "fail ok"), sub_completed(3, "late ok")]
    done = execute(run.lookup, run.iid, history, answers, at(6))
    assert done.state is ExecutionState.COMPLETED
    assert done.output == ["good", "child ok result", "bad ok", "fail ok", "late ok"]


def fan_in(ctx):
    first = yield ctx.call_activity("step", 1)
    both = yield ctx.task_all([ctx.call_activity("flaky"), ctx.call_activity("step", first)])
    return first, both


def test_rewind_undoes_a_fan_in_failure_that_arrived_before_the_failing_episode():
    # task_all waits for every child before it raises: the failure lands in an episode where
    # the code does nothing, the last child's answer in the episode that fails. Cutting only
    # that last episode would keep the failure and fail again (seen in CI).
    run = Run(fan_in)
    run.start()
    run.episode(task_completed(1, 2, ts=at(2)), now=at(2))
    quiet = run.episode(task_failed(2, "the service was down", "ConnectionError", ts=at(3)), now=at(3))
    assert (quiet.state, quiet.actions) == (ExecutionState.RUNNING, [])
    failed = run.episode(task_completed(3, 3, ts=at(4)), now=at(4))
    assert failed.state is ExecutionState.FAILED

    plan = plan_rewind(run.history)
    kept = run.history[: plan.cut]
    assert not any(isinstance(e, TaskFailed) for e in [*kept, *plan.redeliver])
    assert [e.event_type for e in plan.redeliver] == ["TaskCompleted"]
    assert [e.event_type for e in kept].count("TaskScheduled") == 3  # nothing scheduled anew
    again = rewound(run, plan, at(5))
    assert (again.state, again.actions) == (ExecutionState.RUNNING, [])
    done = execute(run.lookup, run.iid, [*kept, *again.new_events], [task_completed(2, "ok")], at(6))
    assert (done.state, done.output) == (ExecutionState.COMPLETED, (2, ["ok", 3]))


def caught_then_failed(ctx):
    try:
        yield ctx.call_activity("first")
    except Exception:
        yield ctx.call_activity("compensate")
    raise RuntimeError("gave up")


def test_rewind_keeps_a_failure_the_code_answered_with_new_work():
    # a failure the code caught and acted on (it scheduled more) stays: undoing it would make
    # the replay disagree with what was dispatched
    run = Run(caught_then_failed)
    run.start()
    run.episode(task_failed(1, "down", ts=at(2)), now=at(2))
    failed = run.episode(task_completed(2, None, ts=at(3)), now=at(3))
    assert failed.state is ExecutionState.FAILED
    plan = plan_rewind(run.history)
    assert sum(isinstance(e, TaskFailed) for e in run.history[: plan.cut]) == 1
    assert [e.event_type for e in plan.redeliver] == ["TaskCompleted"]


def test_a_first_episode_that_failed_is_run_again_from_its_start():
    def fails_at_once(ctx):
        raise RuntimeError("Boom")

    run = Run(fails_at_once)
    assert run.start().state is ExecutionState.FAILED
    plan = plan_rewind(run.history)
    assert plan.cut == 0 and [e.event_type for e in plan.redeliver] == ["ExecutionStarted"]
    assert plan.children == []


def test_created_events_of_children_are_kept_by_the_factories_too():
    # the factories the other pure tests use agree with what the engine records
    history = [sub_created(1, "c", "kid"), sub_failed(1)]
    assert open_children(history) == [] and children_of(history) == ["kid"]


# -- scheduled signals from an orchestration --------------------------------------------------------


def signals_at(ctx):
    when = ctx.get_input()
    ctx.signal_entity(EntityId("Recorder", "k"), "ping", scheduled_time=when)
    return None


def test_signal_time_naive_is_taken_as_utc_and_recorded():
    # microsoft/durabletask-python tests/durabletask/test_delayed_signal_normalization.py
    #   ::TestSignalTimeNormalization::test_new_signal_entity_action_naive_matches_aware
    naive, aware = datetime(2030, 1, 1, 12, 0, 0), datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
    actions = [Run(signals_at).start(when).actions for when in (naive, aware)]
    assert actions[0] == actions[1]
    assert [(type(a), a.scheduled_time) for a in actions[0]] == [(SignalEntity, aware)]
    # recorded with the signal, so replay matches it and does not send it again
    run = Run(signals_at)
    run.start(aware)
    signaled = [e for e in run.history if isinstance(e, EntityOperationSignaled)]
    assert [e.scheduled_time for e in signaled] == [aware]


def test_signal_time_must_be_a_datetime():
    # written from the mistake: a number or a string is refused at the call, naming it
    run = Run(signals_at)
    result = run.start(5)
    assert result.state is ExecutionState.FAILED
    assert "scheduled_time must be a datetime" in result.failure.message and "5" in result.failure.message


# -- records written before the new fields ----------------------------------------------------------


def test_a_signal_recorded_before_scheduled_time_existed_loads_as_immediate():
    # the stored-format rule: EntityOperationSignaled gained a trailing scheduled_time=None
    aware = datetime(2030, 1, 1, tzinfo=UTC)
    event = EntityOperationSignaled(at(1), 4, "@Recorder@k", "ping", 1, aware)
    # the field values as a record from before was pickled (before scheduled_time and the
    # input_digest appended after it)
    old_state = event.__getstate__()[:-2]
    old = object.__new__(EntityOperationSignaled)
    old.__setstate__(old_state)
    assert (old.name, old.input, old.scheduled_time) == ("ping", 1, None)
    assert pickle.loads(pickle.dumps(event)).scheduled_time == aware


def test_an_outbox_message_written_before_the_lifecycle_fields_loads_with_their_defaults():
    from runtime._messages import Message

    msg = Message("i", task_completed(1, "x"), msg_id="m1")
    _, state = msg.__getstate__()
    old_state = {k: v for k, v in state.items() if k not in ("due", "parked", "recursive", "restart")}
    old = object.__new__(Message)
    old.__setstate__((None, old_state))
    assert (old.msg_id, old.due, old.parked, old.recursive, old.restart) == ("m1", None, False, False, None)


# -- instance-id prefix as a key range --------------------------------------------------------------


def test_prefix_bounds_select_exactly_the_ids_with_the_prefix():
    # Azure/durabletask AzureStorageScenarioTests.cs::GetInstanceIdsByPrefix, the range behind it:
    # SQLite compares TEXT as UTF-8 bytes, so the check here compares encoded bytes too
    from runtime._store import prefix_bounds

    assert prefix_bounds("abc") == ("abc", "abd")
    assert prefix_bounds("a\U0010ffff") == ("a\U0010ffff", "b")
    assert prefix_bounds("\U0010ffff") == ("\U0010ffff", None)
    assert prefix_bounds("x\ud7ff") == ("x\ud7ff", "x\ue000")  # past the surrogates
    ids = ["abc", "abc_0_Foo", "abd", "ab", "abc\U0010ffff", "abb\U0010ffff", "x\ud7ffz", "x\ue000", "Foo_abc"]
    for prefix in ("abc", "ab", "x\ud7ff", "a"):
        low, high = prefix_bounds(prefix)
        in_range = [
            i for i in ids
            if low.encode() <= i.encode() and (high is None or i.encode() < high.encode())
        ]
        assert in_range == [i for i in ids if i.startswith(prefix)], prefix
