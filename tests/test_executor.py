"""Pure tests of the replay executor: histories in, new events and actions out.

No Ray, no SQLite. Histories are written with the factories of ``orchestrations.testing``, or
produced by running the engine episode by episode. The :class:`Instance` driver runs every
episode twice, once replaying the whole history from scratch (``execute``) and once on one
cached executor, and checks that both give the same result: the property ``always_replay=True``
relies on.
"""

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from orchestrations import (
    ContinueAsNew,
    CreateSubOrchestration,
    CreateTimer,
    EventSent,
    ExecutionCompleted,
    ExecutionResult,
    ExecutionState,
    OrchestrationExecutor,
    ParentInfo,
    Registry,
    RetryOptions,
    ScheduleTask,
    SendEvent,
    SubOrchestrationInstanceCreated,
    TaskFailedError,
    TaskScheduled,
    TimerCreated,
    execute,
)
from orchestrations.testing import (
    T0,
    at,
    event_raised,
    orchestrator_completed,
    orchestrator_started,
    resumed,
    started,
    sub_completed,
    sub_created,
    sub_failed,
    suspended,
    task_completed,
    task_failed,
    task_scheduled,
    terminated,
    timer_created,
    timer_fired,
)

HISTORIES = Path(__file__).parent / "histories"


# -- helpers --------------------------------------------------------------------------------------


def lookup_of(*fns, name=None):
    """A fresh registry holding ``fns`` (the first one under ``name`` if given)."""
    reg = Registry()
    for i, fn in enumerate(fns):
        reg.add_orchestrator(fn, name if i == 0 else None)
    return reg.orchestrators.get


def assert_same_result(fresh: ExecutionResult, cached: ExecutionResult):
    assert cached.new_events == fresh.new_events
    assert cached.actions == fresh.actions
    assert cached.state is fresh.state
    assert cached.output == fresh.output
    assert cached.failure == fresh.failure
    assert cached.custom_status == fresh.custom_status
    assert cached.carryover == fresh.carryover


class Instance:
    """One orchestration instance driven episode by episode.

    Each :meth:`run` replays the committed history from scratch with :func:`execute` and, when
    ``cached`` is on, also feeds the same events to one long-lived executor; both must agree.
    Orchestrators that record side effects in a list run twice per episode when ``cached`` is
    on, so such tests turn it off.
    """

    def __init__(self, *fns, name=None, iid="test", cached=True):
        self.lookup = lookup_of(*fns, name=name)
        self.name = name or fns[0].__name__
        self.iid = iid
        self.history = []
        self.results = []
        self.executor = OrchestrationExecutor(self.lookup, iid) if cached else None

    def start(self, input=None, now=None, parent=None, extra=()):
        event = started(self.name, input, instance_id=self.iid, parent=parent)
        return self.run(event, *extra, now=now or at(1))

    def run(self, *events, now):
        fresh = execute(self.lookup, self.iid, self.history, list(events), now)
        if self.executor is not None:
            assert_same_result(fresh, self.executor.process(list(events), now))
        self.history.extend(fresh.new_events)
        self.results.append(fresh)
        return fresh


def types(events):
    return [e.event_type for e in events]


def E1_HelloSequence(context):
    r1 = yield context.call_activity("E1_SayHello", "Tokyo")
    r2 = yield context.call_activity("E1_SayHello", "Seattle")
    r3 = yield context.call_activity("E1_SayHello", "London")
    return [r1, r2, r3]


def run_hello_sequence():
    inst = Instance(E1_HelloSequence)
    inst.start(now=at(4))
    inst.run(task_completed(1, "Hello Tokyo!", ts=at(6)), now=at(6))
    inst.run(task_completed(2, "Hello Seattle!", ts=at(7)), now=at(7))
    inst.run(task_completed(3, "Hello London!", ts=at(8)), now=at(8))
    return inst


def _cell(value):
    return "" if value is None else json.dumps(value)


def render(history):
    """The seed's history table without timestamps: event type, name, input, result, status
    (payloads as JSON, absent values blank), one aligned row per event."""
    rows = [["EventType", "Name", "Input", "Result", "Status"]]
    for e in history:
        status = getattr(e, "status", None)
        rows.append([e.event_type, e.name or "", _cell(e.input), _cell(e.result), status or ""])
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip(" |") for row in rows]
    return "\n".join(lines) + "\n"


SEED_TABLE_ORDER = [
    "ExecutionStarted",
    "OrchestratorStarted",
    "TaskScheduled",
    "OrchestratorCompleted",
    "TaskCompleted",
    "OrchestratorStarted",
    "TaskScheduled",
    "OrchestratorCompleted",
    "TaskCompleted",
    "OrchestratorStarted",
    "TaskScheduled",
    "OrchestratorCompleted",
    "TaskCompleted",
    "OrchestratorStarted",
    "OrchestratorCompleted",
    "ExecutionCompleted",
]



# -- hello sequence ------------------------------------------------------------------------------


def test_hello_sequence_schedules_one_activity_per_episode_and_returns_list():
    inst = Instance(E1_HelloSequence)
    first = inst.start(now=at(4))
    assert first.state is ExecutionState.RUNNING
    assert first.actions == [ScheduleTask(1, "E1_SayHello", "Tokyo")]

    second = inst.run(task_completed(1, "Hello Tokyo!"), now=at(6))
    assert second.actions == [ScheduleTask(2, "E1_SayHello", "Seattle")]

    third = inst.run(task_completed(2, "Hello Seattle!"), now=at(7))
    assert third.actions == [ScheduleTask(3, "E1_SayHello", "London")]

    last = inst.run(task_completed(3, "Hello London!"), now=at(8))
    assert last.state is ExecutionState.COMPLETED
    assert last.actions == []
    assert last.output == ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]
    assert last.new_events[-1] == ExecutionCompleted(
        at(8), "Completed", ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]
    )


def test_hello_sequence_history_has_the_seed_tables_events():
    history = run_hello_sequence().history
    counts = {t: types(history).count(t) for t in set(types(history))}
    assert counts == {
        "ExecutionStarted": 1,
        "OrchestratorStarted": 4,
        "TaskScheduled": 3,
        "OrchestratorCompleted": 4,
        "TaskCompleted": 3,
        "ExecutionCompleted": 1,
    }
    assert types(history)[:4] == SEED_TABLE_ORDER[:4]
    assert types(history)[-2:] == ["OrchestratorCompleted", "ExecutionCompleted"]
    scheduled = [(e.event_id, e.name, e.input) for e in history if isinstance(e, TaskScheduled)]
    assert scheduled == [(1, "E1_SayHello", "Tokyo"), (2, "E1_SayHello", "Seattle"), (3, "E1_SayHello", "London")]


def test_hello_sequence_history_order_matches_seed_table():
    assert types(run_hello_sequence().history) == SEED_TABLE_ORDER


def test_hello_sequence_golden_history():
    expected = (HISTORIES / "hello_sequence.txt").read_text()
    assert render(run_hello_sequence().history) == expected


def test_golden_history_file_follows_the_seed_table():
    """The golden file itself (hand-checked against the seed) has the seed's event order."""
    lines = (HISTORIES / "hello_sequence.txt").read_text().splitlines()[1:]
    assert [line.split()[0] for line in lines] == SEED_TABLE_ORDER
    assert lines[0].split(" | ")[1].strip() == "E1_HelloSequence"
    assert lines[-1].endswith('["Hello Tokyo!", "Hello Seattle!", "Hello London!"] | Completed')


def test_replay_of_full_history_gives_same_output_and_no_new_actions():
    history = run_hello_sequence().history
    executor = OrchestrationExecutor(lookup_of(E1_HelloSequence), "test")
    executor.replay(history)
    assert executor.state is ExecutionState.COMPLETED
    result = executor.process([], at(100))
    assert result.actions == []
    assert result.state is ExecutionState.COMPLETED
    assert result.output == ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]
    assert not any(isinstance(e, ExecutionCompleted) for e in result.new_events)


def test_replay_of_partial_history_resumes_where_history_ends():
    history = run_hello_sequence().history
    cut = next(i for i, e in enumerate(history) if isinstance(e, TaskScheduled) and e.event_id == 2)
    partial = history[: cut + 2]  # up to the end of the episode that scheduled "Seattle"
    assert types(partial)[-2:] == ["TaskScheduled", "OrchestratorCompleted"]
    result = execute(lookup_of(E1_HelloSequence), "test", partial, [task_completed(2, "S")], at(50))
    assert result.actions == [ScheduleTask(3, "E1_SayHello", "London")]
    assert result.state is ExecutionState.RUNNING


def test_cached_executor_gives_the_same_events_as_replay_from_scratch():
    def mixed(ctx):
        ctx.set_custom_status("starting")
        a = yield ctx.call_activity("A", ctx.get_input())
        fan = yield ctx.task_all([ctx.call_activity("F", i) for i in range(3)])
        yield ctx.create_timer(timedelta(seconds=30))
        ev = yield ctx.wait_for_external_event("go")
        opts = RetryOptions(first_retry_interval=timedelta(seconds=5), max_number_of_attempts=2)
        flaky = yield ctx.call_activity_with_retry("Flaky", opts, ev)
        child = yield ctx.call_sub_orchestrator("child", flaky)
        ctx.send_event("other", "done", child)
        ctx.set_custom_status({"uuid": ctx.new_uuid()})
        return [a, fan, ev, flaky, child]

    inst = Instance(mixed)  # every run() checks cached == from scratch
    inst.start("in", now=at(1))
    inst.run(task_completed(1, "a"), now=at(2))
    inst.run(task_completed(3, "f1"), event_raised("go", "early"), now=at(3))
    inst.run(task_completed(2, "f0"), task_completed(4, "f2"), now=at(4))
    inst.run(timer_fired(5, at(34)), now=at(34))
    inst.run(task_failed(6, "flaky"), now=at(35))
    inst.run(timer_fired(7, at(40)), now=at(40))
    inst.run(task_completed(8, "ok"), now=at(41))
    last = inst.run(sub_completed(9, "kid"), now=at(42))

    assert last.state is ExecutionState.COMPLETED
    assert last.output == ["a", ["f0", "f1", "f2"], "early", "ok", "kid"]
    assert last.actions == [SendEvent(10, "other", "done", "kid")]
    assert set(last.custom_status) == {"uuid"}
    # and the explicit form: one executor fed episode by episode vs. execute() each time
    cached = OrchestrationExecutor(inst.lookup, "test")
    history = []
    for episode in inst.results:
        incoming = [e for e in episode.new_events if e.event_type in _INCOMING]
        now = next(e for e in episode.new_events if e.event_type == "OrchestratorStarted").timestamp
        fresh = execute(inst.lookup, "test", history, incoming, now)
        assert [(e.event_type, e.name, _ids(e)) for e in cached.process(incoming, now).new_events] == [
            (e.event_type, e.name, _ids(e)) for e in fresh.new_events
        ]
        history.extend(fresh.new_events)
    assert history == inst.history


_INCOMING = {
    "ExecutionStarted",
    "TaskCompleted",
    "TaskFailed",
    "TimerFired",
    "EventRaised",
    "SubOrchestrationInstanceCompleted",
    "SubOrchestrationInstanceFailed",
    "ExecutionTerminated",
    "ExecutionSuspended",
    "ExecutionResumed",
}


def _ids(event):
    return tuple(getattr(event, f, None) for f in ("event_id", "task_scheduled_id", "timer_id"))


# -- fan-out / fan-in ----------------------------------------------------------------------------


def test_task_all_returns_results_in_task_order_whatever_the_completion_order():
    def fan(ctx):
        results = yield ctx.task_all([ctx.call_activity("Work", i) for i in range(5)])
        return results

    inst = Instance(fan)
    first = inst.start()
    assert first.actions == [ScheduleTask(i + 1, "Work", i) for i in range(5)]
    mid = inst.run(task_completed(5, "r4"), task_completed(2, "r1"), now=at(2))
    assert mid.state is ExecutionState.RUNNING and mid.actions == []
    last = inst.run(task_completed(3, "r2"), task_completed(1, "r0"), task_completed(4, "r3"), now=at(3))
    assert last.state is ExecutionState.COMPLETED
    assert last.output == ["r0", "r1", "r2", "r3", "r4"]


def test_task_all_of_nothing_completes_immediately():
    def empty(ctx):
        results = yield ctx.task_all([])
        return results

    assert Instance(empty).start().output == []


def test_task_all_fails_with_the_first_failure():
    def fan(ctx):
        try:
            yield ctx.task_all([ctx.call_activity("Work", i) for i in range(3)])
        except TaskFailedError as e:
            return e.message
        return "no error"

    inst = Instance(fan)
    inst.start()
    result = inst.run(task_completed(1, "ok"), task_failed(3, "third"), task_failed(2, "second"), now=at(2))
    assert result.output == "third"


def test_task_any_returns_the_first_finished_task():
    def race(ctx):
        a = ctx.call_activity("A")
        b = ctx.call_activity("B")
        winner = yield ctx.task_any([a, b])
        return ["a" if winner is a else "b" if winner is b else winner, winner.result]

    inst = Instance(race)
    assert inst.start().actions == [ScheduleTask(1, "A"), ScheduleTask(2, "B")]
    result = inst.run(task_completed(2, "from b"), task_completed(1, "from a"), now=at(2))
    assert result.state is ExecutionState.COMPLETED
    assert result.output == ["b", "from b"]


def test_task_any_returns_a_failed_task_without_raising():
    def race(ctx):
        a = ctx.call_activity("A")
        winner = yield ctx.task_any([a, ctx.create_timer(timedelta(hours=1))])
        return [winner is a, winner.is_faulted, str(winner.exception)]

    inst = Instance(race)
    inst.start()
    assert inst.run(task_failed(1, "nope", "KeyError"), now=at(2)).output == [True, True, "KeyError: nope"]


def test_task_all_and_task_any_over_tasks_that_already_finished():
    def gather_later(ctx):
        a = ctx.call_activity("A")
        b = ctx.call_activity("B")
        yield a
        yield b
        both = yield ctx.task_all([a, b])
        first = yield ctx.task_any([b, a])
        return [both, first is b]

    inst = Instance(gather_later)
    inst.start()
    assert inst.run(task_completed(1, "a"), task_completed(2, "b"), now=at(2)).output == [["a", "b"], True]


def test_task_any_of_nothing_completes_at_once_with_none():
    # Azure/azure-functions-durable-python: a CompoundTask with no children is done at once
    # (durabletask-python's when_any([]) completes too); waiting would never end.
    def empty(ctx):
        winner = yield ctx.task_any([])
        return ["any", winner]

    result = Instance(empty).start()
    assert result.state is ExecutionState.COMPLETED
    assert result.output == ["any", None]


# -- failures -------------------------------------------------------------------------------------


def test_failed_activity_raises_task_failed_error_at_the_yield():
    def careful(ctx):
        try:
            yield ctx.call_activity("Risky", 1)
        except TaskFailedError as e:
            return {"type": e.error_type, "message": e.message, "str": str(e)}
        return "unreachable"

    inst = Instance(careful)
    inst.start()
    result = inst.run(task_failed(1, "disk full", "OSError"), now=at(2))
    assert result.state is ExecutionState.COMPLETED
    assert result.output == {"type": "OSError", "message": "disk full", "str": "OSError: disk full"}


def test_uncaught_activity_failure_fails_the_instance_with_its_details():
    inst = Instance(E1_HelloSequence)
    inst.start()
    result = inst.run(task_failed(1, "no greeting", "ValueError"), now=at(2))
    assert result.state is ExecutionState.FAILED
    # durabletask-python test_orchestration_executor.py::test_activity_task_failed: the instance
    # fails with TaskFailedError naming the task; the cause's type and message stay visible
    assert result.failure.error_type == "TaskFailedError"
    assert result.failure.message == "Activity task #1 failed: no greeting"
    assert result.failure.details.startswith("Caused by ValueError: no greeting")
    assert "call_activity(\"E1_SayHello\", \"Tokyo\")" in result.failure.details  # the orchestrator's line
    assert "orchestrations/_executor.py" not in result.failure.details  # starts at user code
    assert result.output is None
    final = result.new_events[-1]
    assert isinstance(final, ExecutionCompleted)
    assert final.status == "Failed"
    assert final.failure == result.failure


def test_failed_execution_completed_shows_the_error_in_the_result_column():
    inst = Instance(E1_HelloSequence)
    inst.start()
    final = inst.run(task_failed(1, "no greeting", "ValueError"), now=at(2)).new_events[-1]
    assert final.result == "TaskFailedError: Activity task #1 failed: no greeting"


def test_exception_raised_by_orchestrator_code_fails_the_instance():
    def broken(ctx):
        yield ctx.call_activity("A")
        raise RuntimeError("my own bug")

    inst = Instance(broken)
    inst.start()
    result = inst.run(task_completed(1), now=at(2))
    assert result.state is ExecutionState.FAILED
    assert (result.failure.error_type, result.failure.message) == ("RuntimeError", "my own bug")
    assert "my own bug" in result.failure.details
    assert result.actions == []


def test_failed_episode_has_no_side_effects():
    def schedules_then_fails(ctx):
        yield ctx.call_activity("A")
        ctx.call_activity("never run")
        raise RuntimeError("after scheduling")

    inst = Instance(schedules_then_fails)
    inst.start()
    result = inst.run(task_completed(1), now=at(2))
    assert result.state is ExecutionState.FAILED
    assert result.actions == []
    assert "TaskScheduled" not in types(result.new_events)


# -- retry ----------------------------------------------------------------------------------------

RETRY3 = RetryOptions(first_retry_interval=timedelta(seconds=5), max_number_of_attempts=3)


def flaky_caller(ctx):
    result = yield ctx.call_activity_with_retry("Flaky", RETRY3, "payload")
    return result


def test_retry_failure_creates_timer_then_reschedules_with_new_task_id():
    inst = Instance(flaky_caller)
    assert inst.start().actions == [ScheduleTask(1, "Flaky", "payload")]

    failed = inst.run(task_failed(1, "transient"), now=at(10))
    assert failed.state is ExecutionState.RUNNING
    assert failed.actions == [CreateTimer(2, at(15))]
    assert any(isinstance(e, TimerCreated) and e.fire_at == at(15) for e in failed.new_events)

    fired = inst.run(timer_fired(2, at(15)), now=at(15))
    assert fired.actions == [ScheduleTask(3, "Flaky", "payload")]

    done = inst.run(task_completed(3, "finally"), now=at(16))
    assert done.state is ExecutionState.COMPLETED
    assert done.output == "finally"


def test_retry_gives_up_after_max_number_of_attempts():
    inst = Instance(flaky_caller)
    inst.start()
    assert inst.run(task_failed(1, "one"), now=at(10)).actions == [CreateTimer(2, at(15))]
    assert inst.run(timer_fired(2, at(15)), now=at(15)).actions == [ScheduleTask(3, "Flaky", "payload")]
    assert inst.run(task_failed(3, "two"), now=at(20)).actions == [CreateTimer(4, at(25))]
    assert inst.run(timer_fired(4, at(25)), now=at(25)).actions == [ScheduleTask(5, "Flaky", "payload")]
    last = inst.run(task_failed(5, "three", "ConnectionError"), now=at(30))
    assert last.actions == []
    assert last.state is ExecutionState.FAILED
    # durabletask-python test_activity_retry_policies: the first attempt names the task
    assert (last.failure.error_type, last.failure.message) == ("TaskFailedError", "Activity task #1 failed: three")
    assert "Caused by ConnectionError: three" in last.failure.details
    attempts = [e for e in inst.history if isinstance(e, TaskScheduled)]
    assert [e.event_id for e in attempts] == [1, 3, 5]


def test_retry_timers_follow_backoff_coefficient():
    opts = RetryOptions(first_retry_interval=timedelta(seconds=5), max_number_of_attempts=4, backoff_coefficient=2.0)

    def backoff(ctx):
        result = yield ctx.call_activity_with_retry("Flaky", opts)
        return result

    inst = Instance(backoff)
    inst.start()
    assert inst.run(task_failed(1), now=at(10)).actions == [CreateTimer(2, at(15))]
    inst.run(timer_fired(2, at(15)), now=at(15))
    assert inst.run(task_failed(3), now=at(20)).actions == [CreateTimer(4, at(30))]
    inst.run(timer_fired(4, at(30)), now=at(30))
    assert inst.run(task_failed(5), now=at(31)).actions == [CreateTimer(6, at(51))]


def test_retry_handle_returning_false_fails_at_once():
    opts = RetryOptions(
        first_retry_interval=timedelta(seconds=5),
        max_number_of_attempts=5,
        handle=lambda e: e.error_type != "PermissionError",
    )

    def picky(ctx):
        try:
            yield ctx.call_activity_with_retry("Flaky", opts)
        except TaskFailedError as e:
            return e.error_type
        return "ok"

    inst = Instance(picky)
    inst.start()
    assert inst.run(task_failed(1, "x", "TimeoutError"), now=at(2)).actions == [CreateTimer(2, at(7))]
    inst.run(timer_fired(2, at(7)), now=at(7))
    result = inst.run(task_failed(3, "denied", "PermissionError"), now=at(8))
    assert result.actions == []
    assert result.output == "PermissionError"


def test_a_retry_handle_that_raises_raises_at_the_yield_and_otherwise_fails_the_instance():
    # a bug in the policy's handle is a bug of the orchestration: its code sees the exception
    # where it awaits the call (it may catch it), and an uncaught one fails the instance naming
    # it; before, it escaped the executor and the instance was never failed
    opts = RetryOptions(first_retry_interval=timedelta(seconds=5), max_number_of_attempts=3,
                        handle=lambda e: e.status_code == 503)  # a TaskFailedError has none

    def guarded(ctx):
        try:
            return (yield ctx.call_activity_with_retry("Flaky", opts))
        except AttributeError as exc:
            return ["caught", str(exc), exc.__notes__]

    def unguarded(ctx):
        return (yield ctx.call_activity_with_retry("Flaky", opts))

    inst = Instance(guarded)
    inst.start()
    result = inst.run(task_failed(1, "boom", "ConnectionError"), now=at(1))
    assert result.actions == []
    assert result.output[:2] == ["caught", "'TaskFailedError' object has no attribute 'status_code'"]
    assert "retry policy's handle" in result.output[2][0] and "boom" in result.output[2][0]
    inst = Instance(unguarded)
    inst.start()
    result = inst.run(task_failed(1, "boom", "ConnectionError"), now=at(1))
    assert result.state is ExecutionState.FAILED and result.failure is not None
    assert result.failure.error_type == "AttributeError" and "status_code" in result.failure.message


def test_a_retry_handle_raising_one_object_on_every_replay_notes_it_once():
    error = AttributeError("no status_code")

    def handle(exc):
        raise error

    opts = RetryOptions(first_retry_interval=timedelta(seconds=5), max_number_of_attempts=3, handle=handle)

    def noted(ctx):
        try:
            yield ctx.call_activity_with_retry("Flaky", opts)
        except AttributeError as exc:
            return len(exc.__notes__)

    inst = Instance(noted)  # each episode runs fresh and on a cached executor: two runs of the handle
    inst.start()
    assert inst.run(task_failed(1, "boom", "ConnectionError"), now=at(1)).output == 1
    for _ in range(2):  # replayed again (an eviction, a restart): the handle raises the same object
        assert execute(inst.lookup, inst.iid, inst.history, [], at(2)).output == 1
    assert len(error.__notes__) == 1


def test_sub_orchestrator_retry_keeps_the_child_id():
    def parent(ctx):
        result = yield ctx.call_sub_orchestrator_with_retry("child", RETRY3, "in")
        return result

    inst = Instance(parent, iid="p")
    assert inst.start().actions == [CreateSubOrchestration(1, "child", "p:1", "in")]
    assert inst.run(sub_failed(1, "kid broke"), now=at(10)).actions == [CreateTimer(2, at(15))]
    assert inst.run(timer_fired(2, at(15)), now=at(15)).actions == [CreateSubOrchestration(3, "child", "p:1", "in")]
    assert inst.run(sub_completed(3, "grown"), now=at(16)).output == "grown"


def test_call_activity_with_retry_rejects_non_retry_options():
    def bad(ctx):
        yield ctx.call_activity_with_retry("A", {"max_number_of_attempts": 3})

    result = Instance(bad).start()
    assert result.state is ExecutionState.FAILED
    assert "RetryOptions" in result.failure.message


# -- timers ---------------------------------------------------------------------------------------


def test_timer_from_timedelta_fires_and_resumes():
    def sleeper(ctx):
        yield ctx.create_timer(timedelta(minutes=5))
        return ctx.current_utc_datetime

    inst = Instance(sleeper)
    first = inst.start(now=at(1))
    assert first.actions == [CreateTimer(1, at(301))]
    assert [e for e in first.new_events if isinstance(e, TimerCreated)] == [TimerCreated(at(1), 1, at(301))]
    assert inst.run(now=at(100)).state is ExecutionState.RUNNING  # nothing happened yet
    done = inst.run(timer_fired(1, at(301)), now=at(302))
    assert done.state is ExecutionState.COMPLETED
    assert done.output == at(302)


def test_timer_from_datetime_and_naive_datetime_is_utc():
    fire = datetime(2017, 5, 6, 12, 0, tzinfo=UTC)

    def sleeper(ctx):
        yield ctx.create_timer(fire)
        yield ctx.create_timer(datetime(2017, 5, 7, 12, 0))
        return "woke"

    inst = Instance(sleeper)
    assert inst.start().actions == [CreateTimer(1, fire)]
    second = inst.run(timer_fired(1, fire), now=fire)
    assert second.actions == [CreateTimer(2, datetime(2017, 5, 7, 12, 0, tzinfo=UTC))]
    assert inst.run(timer_fired(2, second.actions[0].fire_at), now=at(90000)).output == "woke"


def test_create_timer_rejects_other_types():
    def bad(ctx):
        yield ctx.create_timer(30)

    result = Instance(bad).start()
    assert result.state is ExecutionState.FAILED
    assert "30" in result.failure.message


def test_cancelled_timer_firing_is_ignored():
    def approval(ctx):
        timer = ctx.create_timer(timedelta(hours=1))
        first = yield ctx.task_any([ctx.wait_for_external_event("approve"), timer])
        if first is timer:
            return "timed out"
        timer.cancel()
        second = yield ctx.task_any([timer, ctx.wait_for_external_event("second")])
        return ["timer" if second is timer else second.result, timer.is_completed]

    inst = Instance(approval)
    inst.start(now=at(1))
    assert inst.run(event_raised("approve", True), now=at(2)).state is ExecutionState.RUNNING
    late = inst.run(timer_fired(1, at(3601)), now=at(3601))
    assert late.state is ExecutionState.RUNNING
    assert late.actions == []
    done = inst.run(event_raised("second", "s"), now=at(3602))
    assert done.output == ["s", False]


@pytest.mark.parametrize(
    ("incoming", "expected"),
    [
        (event_raised("approve", "yes"), "approved: yes"),
        (timer_fired(1, at(61)), "timed out"),
    ],
)
def test_timer_versus_event_race(incoming, expected):
    def approval(ctx):
        timer = ctx.create_timer(timedelta(seconds=60))
        approve = ctx.wait_for_external_event("approve")
        winner = yield ctx.task_any([approve, timer])
        if winner is approve:
            timer.cancel()
            return f"approved: {approve.result}"
        return "timed out"

    inst = Instance(approval)
    assert inst.start(now=at(1)).actions == [CreateTimer(1, at(61))]
    result = inst.run(incoming, now=at(61))
    assert result.state is ExecutionState.COMPLETED
    assert result.output == expected


# -- external events ------------------------------------------------------------------------------


def test_early_events_are_buffered_fifo_per_name():
    def waits(ctx):
        yield ctx.create_timer(timedelta(seconds=10))
        a1 = yield ctx.wait_for_external_event("a")
        b1 = yield ctx.wait_for_external_event("b")
        a2 = yield ctx.wait_for_external_event("a")
        return [a1, b1, a2]

    inst = Instance(waits)
    inst.start(now=at(1))
    early = inst.run(event_raised("a", 1), event_raised("b", 2), now=at(2))
    assert early.state is ExecutionState.RUNNING
    inst.run(event_raised("a", 3), now=at(3))
    done = inst.run(timer_fired(1, at(11)), now=at(11))
    assert done.state is ExecutionState.COMPLETED
    assert done.output == [1, 2, 3]


def test_an_event_goes_to_the_newest_waiter_of_its_name():
    # As the Durable Functions extension does: an event completes the most recent
    # wait_for_external_event of its name, so an abandoned earlier waiter does not swallow it.
    def waits(ctx):
        first = ctx.wait_for_external_event("x")
        second = ctx.wait_for_external_event("x")
        winner = yield ctx.task_any([first, second])
        rest = yield ctx.task_all([first, second])
        return [winner is second, rest]

    inst = Instance(waits)
    inst.start()
    one = inst.run(event_raised("x", "one"), now=at(2))
    assert one.state is ExecutionState.RUNNING
    done = inst.run(event_raised("x", "two"), now=at(3))
    assert done.output == [True, ["two", "one"]]


def test_event_with_other_name_does_not_wake_a_waiter():
    def waits(ctx):
        value = yield ctx.wait_for_external_event("wanted")
        return value

    inst = Instance(waits)
    inst.start()
    assert inst.run(event_raised("other", 1), now=at(2)).state is ExecutionState.RUNNING
    assert inst.run(event_raised("wanted", 2), now=at(3)).output == 2


# -- sub-orchestrations and events to others -------------------------------------------------------


def test_sub_orchestration_default_child_id_and_completion():
    def parent(ctx):
        first = yield ctx.call_activity("A")
        child = yield ctx.call_sub_orchestrator("child", first)
        named = yield ctx.call_sub_orchestrator("child", 2, instance_id="my-child")
        return [child, named]

    inst = Instance(parent, iid="order-7")
    inst.start()
    second = inst.run(task_completed(1, "a"), now=at(2))
    assert second.actions == [CreateSubOrchestration(2, "child", "order-7:2", "a")]
    assert [e for e in second.new_events if isinstance(e, SubOrchestrationInstanceCreated)] == [
        sub_created(2, "child", "order-7:2", "a", ts=at(2))
    ]
    third = inst.run(sub_completed(2, "kid"), now=at(3))
    assert third.actions == [CreateSubOrchestration(3, "child", "my-child", 2)]
    assert inst.run(sub_completed(3, "named kid"), now=at(4)).output == ["kid", "named kid"]


def test_sub_orchestration_failure_raises_task_failed_error():
    def parent(ctx):
        try:
            yield ctx.call_sub_orchestrator("child")
        except TaskFailedError as e:
            return [e.error_type, e.message]
        return None

    inst = Instance(parent)
    inst.start()
    assert inst.run(sub_failed(1, "kid broke", "KeyError"), now=at(2)).output == ["KeyError", "kid broke"]


def test_child_sees_its_parent_instance_id():
    def child(ctx):
        return [ctx.parent_instance_id, ctx.instance_id, ctx.get_input()]

    inst = Instance(child, iid="p:1")
    result = inst.start(5, parent=ParentInfo("p", 1, "exec-0"))
    assert result.output == ["p", "p:1", 5]


def test_send_event_produces_send_event_action_and_event_sent():
    def sender(ctx):
        ctx.send_event("other-instance", "ping", {"n": 1})
        reply = yield ctx.wait_for_external_event("pong")
        return reply

    inst = Instance(sender)
    first = inst.start()
    assert first.actions == [SendEvent(1, "other-instance", "ping", {"n": 1})]
    assert [e for e in first.new_events if isinstance(e, EventSent)] == [
        EventSent(at(1), 1, "other-instance", "ping", {"n": 1})
    ]
    done = inst.run(event_raised("pong", "back"), now=at(2))
    assert done.actions == []
    assert done.output == "back"


# -- continue as new ------------------------------------------------------------------------------


def _eternal(preserve):
    def eternal(ctx):
        go = yield ctx.wait_for_external_event("go")
        ctx.continue_as_new(ctx.get_input() + go, preserve_unprocessed_events=preserve)

    return eternal


@pytest.mark.parametrize("preserve", [True, False])
def test_continue_as_new(preserve):
    inst = Instance(_eternal(preserve))
    inst.start(10)
    result = inst.run(event_raised("other", "o1"), event_raised("go", 5), event_raised("other", "o2"), now=at(2))
    assert result.state is ExecutionState.CONTINUED_AS_NEW
    assert result.output == 15
    assert result.new_events[-1] == ContinueAsNew(at(2), 15)
    assert not any(isinstance(e, ExecutionCompleted) for e in result.new_events)
    if preserve:
        assert [(e.name, e.input) for e in result.carryover] == [("other", "o1"), ("other", "o2")]
    else:
        assert result.carryover == []


def test_continue_as_new_in_the_middle_of_a_yield_ends_the_execution():
    def restart(ctx):
        ctx.continue_as_new("again")
        yield ctx.call_activity("never")
        return "unreachable"

    result = Instance(restart).start()
    assert result.state is ExecutionState.CONTINUED_AS_NEW
    assert result.output == "again"
    assert types(result.new_events)[-1] == "ContinueAsNew"


# -- deterministic facts --------------------------------------------------------------------------


def test_set_custom_status_is_reported_and_survives_replay():
    def status(ctx):
        ctx.set_custom_status({"stage": 1})
        yield ctx.call_activity("A")
        ctx.set_custom_status({"stage": 2})
        yield ctx.call_activity("B")
        return None

    inst = Instance(status)
    assert inst.start().custom_status == {"stage": 1}
    assert inst.run(task_completed(1), now=at(2)).custom_status == {"stage": 2}
    replayed = OrchestrationExecutor(inst.lookup, "test")
    replayed.replay(inst.history)
    assert replayed.context.custom_status == {"stage": 2}


def test_new_uuid_is_deterministic_across_replay_and_differs_per_call():
    def ids(ctx):
        first = [ctx.new_uuid(), ctx.new_uuid()]
        yield ctx.call_activity("A")
        return [*first, ctx.new_uuid()]

    inst = Instance(ids, iid="u1")  # cached and from-scratch runs must agree: deterministic
    inst.start()
    out = inst.run(task_completed(1), now=at(2)).output
    assert len(set(out)) == 3
    again = execute(inst.lookup, "u1", inst.history[:4], [task_completed(1)], at(2)).output
    assert again == out
    other = Instance(ids, iid="u2")
    other.start()
    assert set(other.run(task_completed(1), now=at(2)).output).isdisjoint(out)


def test_current_utc_datetime_is_the_orchestrator_started_time_also_on_replay():
    seen = []

    def clock(ctx):
        seen.append(ctx.current_utc_datetime)
        yield ctx.call_activity("A")
        seen.append(ctx.current_utc_datetime)
        yield ctx.call_activity("B")
        seen.append(ctx.current_utc_datetime)
        return None

    inst = Instance(clock, cached=False)
    inst.start(now=at(10))
    inst.run(task_completed(1, ts=at(15)), now=at(20))
    seen.clear()
    inst.run(task_completed(2, ts=at(25)), now=at(30))
    started_at = [e.timestamp for e in inst.history if e.event_type == "OrchestratorStarted"]
    assert started_at == [at(10), at(20), at(30)]
    assert seen == started_at


def test_is_replaying_is_true_during_replay_only():
    seen = []

    def recorder(ctx):
        seen.append(("start", ctx.is_replaying))
        yield ctx.call_activity("A")
        seen.append(("after A", ctx.is_replaying))
        yield ctx.call_activity("B")
        seen.append(("after B", ctx.is_replaying))
        return None

    inst = Instance(recorder, cached=False)
    inst.start()
    assert seen == [("start", False)]
    seen.clear()
    inst.run(task_completed(1), now=at(2))
    assert seen == [("start", True), ("after A", False)]
    seen.clear()
    inst.run(task_completed(2), now=at(3))
    assert seen == [("start", True), ("after A", True), ("after B", False)]

    seen.clear()
    cached = OrchestrationExecutor(inst.lookup, "test")
    cached.process([started("recorder")], at(1))
    cached.process([task_completed(1)], at(2))
    assert seen == [("start", False), ("after A", False)]


def test_replay_safe_logger_is_silent_during_replay(caplog):
    enabled = []

    def chatty(ctx):
        log = ctx.create_replay_safe_logger(logging.getLogger("tests.chatty"))
        enabled.append(log.isEnabledFor(logging.INFO))
        log.info("step %d", 1)
        yield ctx.call_activity("A")
        log.info("step %d", 2)
        yield ctx.call_activity("B")
        log.warning("step %d", 3)
        return None

    caplog.set_level(logging.INFO, logger="tests.chatty")
    inst = Instance(chatty, iid="log-me", cached=False)
    inst.start()
    inst.run(task_completed(1), now=at(2))
    inst.run(task_completed(2), now=at(3))
    records = [r for r in caplog.records if r.name == "tests.chatty"]
    assert [r.getMessage() for r in records] == ["step 1", "step 2", "step 3"]
    assert {r.instance_id for r in records} == {"log-me"}
    assert {r.pathname for r in records} == {__file__}  # the caller's line, not the adapter's
    assert enabled == [True, False, False]  # the first episode, then two replays of it


# -- lifecycle ------------------------------------------------------------------------------------


def test_terminate_ends_the_instance():
    cleanup = []

    def long_runner(ctx):
        try:
            yield ctx.call_activity("Slow")
        finally:
            cleanup.append("closed")

    inst = Instance(long_runner)
    inst.start()
    result = inst.run(terminated("enough"), now=at(2))
    assert result.state is ExecutionState.TERMINATED
    assert result.actions == []
    final = result.new_events[-1]
    assert isinstance(final, ExecutionCompleted)
    assert (final.status, final.result) == ("Terminated", "enough")
    late = inst.run(task_completed(1, "too late"), now=at(3))
    assert late.state is ExecutionState.TERMINATED
    assert late.actions == []
    assert not any(isinstance(e, ExecutionCompleted) for e in late.new_events)

    cleanup.clear()
    executor = OrchestrationExecutor(inst.lookup, "t2")
    executor.process([started("long_runner", instance_id="t2")], at(1))
    assert cleanup == []
    executor.process([terminated()], at(2))
    assert cleanup == ["closed"]  # the generator is closed at once: user finally blocks run


def test_terminate_in_the_same_batch_cancels_actions_scheduled_before_it():
    inst = Instance(E1_HelloSequence)
    inst.start()
    result = inst.run(task_completed(1, "Hello Tokyo!"), terminated("stop"), now=at(2))
    assert result.state is ExecutionState.TERMINATED
    assert result.actions == []
    assert "TaskScheduled" not in types(result.new_events)


def test_suspend_holds_events_until_resume():
    inst = Instance(E1_HelloSequence)
    inst.start()
    paused = inst.run(suspended("maintenance"), now=at(2))
    assert paused.state is ExecutionState.SUSPENDED
    held = inst.run(task_completed(1, "Hello Tokyo!"), now=at(3))
    assert held.state is ExecutionState.SUSPENDED
    assert held.actions == []
    assert "TaskCompleted" in types(held.new_events)  # recorded, not applied
    back = inst.run(resumed(), now=at(4))
    assert back.state is ExecutionState.RUNNING
    assert back.actions == [ScheduleTask(2, "E1_SayHello", "Seattle")]
    inst.run(task_completed(2, "Hello Seattle!"), now=at(5))
    assert inst.run(task_completed(3, "Hello London!"), now=at(6)).output == [
        "Hello Tokyo!",
        "Hello Seattle!",
        "Hello London!",
    ]


def test_suspend_holds_external_events_and_terminate_wins_over_suspend():
    def waits(ctx):
        value = yield ctx.wait_for_external_event("x")
        return value

    inst = Instance(waits)
    inst.start()
    inst.run(suspended(), event_raised("x", 1), now=at(2))
    assert inst.results[-1].state is ExecutionState.SUSPENDED
    assert inst.run(resumed(), now=at(3)).output == 1

    other = Instance(waits)
    other.start()
    other.run(suspended(), now=at(2))
    result = other.run(terminated("bye"), now=at(3))
    assert result.state is ExecutionState.TERMINATED
    assert result.new_events[-1].status == "Terminated"


# -- bad orchestrators ----------------------------------------------------------------------------


def test_unknown_orchestrator_name_fails_with_clear_message():
    result = execute(Registry().orchestrators.get, "i", [], [started("NoSuchOrchestrator")], at(1))
    assert result.state is ExecutionState.FAILED
    assert "NoSuchOrchestrator" in result.failure.message
    assert "registered" in result.failure.message
    assert result.new_events[-1].status == "Failed"


def test_yielding_a_non_task_fails_naming_the_value():
    def confused(ctx):
        yield "definitely-not-a-task"

    result = Instance(confused).start()
    assert result.state is ExecutionState.FAILED
    assert "definitely-not-a-task" in result.failure.message
    assert "Task" in result.failure.message


def test_plain_function_orchestrator_completes_in_one_episode():
    def plain(ctx):
        return ctx.get_input() * 2

    result = Instance(plain).start(21)
    assert result.state is ExecutionState.COMPLETED
    assert result.output == 42
    assert types(result.new_events) == [
        "ExecutionStarted",
        "OrchestratorStarted",
        "OrchestratorCompleted",
        "ExecutionCompleted",
    ]


def test_plain_function_may_schedule_fire_and_forget_work():
    def plain(ctx):
        ctx.send_event("x", "hello")
        return "sent"

    result = Instance(plain).start()
    assert result.output == "sent"
    assert result.actions == [SendEvent(1, "x", "hello")]


# -- nondeterminism -------------------------------------------------------------------------------
#
# The histories below were recorded by some earlier version of the code; each test replays them
# with code that now takes another path.


def _one_activity_history(name="Orch", activity="A"):
    return [
        started(name),
        orchestrator_started(at(1)),
        task_scheduled(1, activity, ts=at(1)),
        orchestrator_completed(at(1)),
    ]


def assert_nondeterminism(result, *names):
    assert result.state is ExecutionState.FAILED
    assert result.failure.error_type.endswith("NonDeterminismError")
    for name in names:
        assert name in result.failure.message, (name, result.failure.message)


def test_nondeterminism_different_activity_name():
    def Orch(ctx):
        value = yield ctx.call_activity("Renamed")
        return value

    result = execute(lookup_of(Orch), "i", _one_activity_history(activity="Original"), [task_completed(1, "x")], at(2))
    assert_nondeterminism(result, "'Original'", "'Renamed'")
    assert result.actions == []


def test_nondeterminism_timer_where_history_has_an_activity():
    def Orch(ctx):
        yield ctx.create_timer(timedelta(seconds=5))
        return "slept"

    result = execute(lookup_of(Orch), "i", _one_activity_history(activity="A"), [task_completed(1)], at(2))
    assert_nondeterminism(result, "call_activity 'A'", "create_timer")


def test_nondeterminism_activity_where_history_has_a_timer():
    history = [
        started("Orch"),
        orchestrator_started(at(1)),
        timer_created(1, at(6), ts=at(1)),
        orchestrator_completed(at(1)),
    ]

    def Orch(ctx):
        yield ctx.call_activity("Fetch")
        return None

    result = execute(lookup_of(Orch), "i", history, [timer_fired(1, at(6))], at(6))
    assert_nondeterminism(result, "create_timer", "call_activity 'Fetch'")


def test_nondeterminism_fewer_actions_than_history():
    history = [
        started("Orch"),
        orchestrator_started(at(1)),
        task_scheduled(1, "A", ts=at(1)),
        task_scheduled(2, "B", ts=at(1)),
        orchestrator_completed(at(1)),
    ]

    def Orch(ctx):
        value = yield ctx.call_activity("A")  # B is no longer called
        return value

    result = execute(lookup_of(Orch), "i", history, [task_completed(1, "a")], at(2))
    assert_nondeterminism(result, "call_activity 'B'", "no action")
    assert result.actions == []


def test_nondeterminism_extra_action_in_a_replayed_episode():
    def Orch(ctx):
        results = yield ctx.task_all([ctx.call_activity("A"), ctx.call_activity("Added")])
        return results

    result = execute(lookup_of(Orch), "i", _one_activity_history(activity="A"), [task_completed(1)], at(2))
    assert_nondeterminism(result, "call_activity 'Added'", "no further action")
    assert result.actions == []


def test_nondeterminism_different_sub_orchestrator():
    history = [
        started("Orch"),
        orchestrator_started(at(1)),
        sub_created(1, "OldChild", "i:1", ts=at(1)),
        orchestrator_completed(at(1)),
    ]

    def Orch(ctx):
        value = yield ctx.call_sub_orchestrator("NewChild")
        return value

    result = execute(lookup_of(Orch), "i", history, [sub_completed(1)], at(2))
    assert_nondeterminism(result, "'OldChild'", "'NewChild'")


def test_nondeterminism_in_an_earlier_episode_is_found_on_replay():
    history = run_hello_sequence().history[:-4]  # up to the episode that scheduled "London"
    assert types(history)[-2:] == ["TaskScheduled", "OrchestratorCompleted"]

    def renamed(ctx):
        r1 = yield ctx.call_activity("E1_SayHello", "Tokyo")
        r2 = yield ctx.call_activity("E1_SayGoodbye", "Seattle")
        return [r1, r2]

    lookup = lookup_of(renamed, name="E1_HelloSequence")
    result = execute(lookup, "test", history, [task_completed(3, "Hello London!")], at(50))
    assert_nondeterminism(result, "'E1_SayHello' (task 2)", "'E1_SayGoodbye' (task 2)")




def test_nondeterminism_failure_is_recorded_as_execution_completed():
    def Orch(ctx):
        value = yield ctx.call_activity("Renamed")
        return value

    result = execute(lookup_of(Orch), "i", _one_activity_history(activity="Original"), [task_completed(1, "x")], at(2))
    assert result.state is ExecutionState.FAILED
    final = result.new_events[-1]
    assert isinstance(final, ExecutionCompleted)
    assert final.status == "Failed"
    assert "Original" in final.failure.message


def test_nondeterminism_code_returns_where_history_scheduled_more():
    history = [
        started("Orch"),
        orchestrator_started(at(1)),
        task_scheduled(1, "A", ts=at(1)),
        orchestrator_completed(at(1)),
        orchestrator_started(at(2)),
        task_completed(1, "a", ts=at(2)),
        task_scheduled(2, "B", ts=at(2)),
        orchestrator_completed(at(2)),
    ]

    def Orch(ctx):
        value = yield ctx.call_activity("A")
        return value  # used to call "B" next

    result = execute(lookup_of(Orch), "i", history, [task_completed(2, "b")], at(3))
    assert_nondeterminism(result, "call_activity 'B'")


def test_replay_ignores_late_events_for_a_completed_instance():
    inst = run_hello_sequence()
    result = execute(inst.lookup, "test", inst.history, [task_completed(1, "dup"), event_raised("x")], at(99))
    assert result.state is ExecutionState.COMPLETED
    assert result.output == ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]
    assert result.actions == []
    assert "ExecutionCompleted" not in types(result.new_events)


def test_history_factories_use_fixed_timestamps():
    assert started("x").timestamp == T0
    assert at(1.5) == T0 + timedelta(seconds=1.5)
