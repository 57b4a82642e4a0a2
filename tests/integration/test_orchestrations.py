"""Orchestrations on a real local Ray with real SQLite shards: the API.md rows of issue 2."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from orchestrations import RetryOptions, TaskFailedError, activity, orchestrator
from runtime import OrchestrationRuntimeStatus as S

from ..helpers import wait_until

pytestmark = pytest.mark.integration


# -- activities -------------------------------------------------------------------------------


@activity(name="it_say_hello")
def say_hello(name: str) -> str:
    return f"Hello {name}!"


@activity(name="it_async_double")
async def async_double(x: int) -> int:
    return 2 * x


@activity(name="it_fail")
def fail(message: str) -> None:
    raise KeyError(message)


@activity(name="it_flaky", num_cpus=1)
def flaky(args: tuple[str, int]) -> int:
    """Fails until it has been called ``n`` times (counted in a file: runs on any worker)."""
    path, n = args
    marker = Path(path)
    count = int(marker.read_text()) + 1 if marker.exists() else 1
    marker.write_text(str(count))
    if count < n:
        raise RuntimeError(f"attempt {count} fails")
    return count


@activity(name="it_unpicklable_result")
def unpicklable_result(_: object) -> object:
    return threading.Lock()


# -- orchestrators ----------------------------------------------------------------------------


@orchestrator(name="it_hello")
def hello(ctx):
    results = []
    for city in ("Tokyo", "Seattle", "London"):
        results.append((yield ctx.call_activity(say_hello, city)))
    return results


@orchestrator(name="it_fan")
def fan(ctx):
    results = yield ctx.task_all([ctx.call_activity(async_double, i) for i in range(ctx.get_input())])
    return sum(results)


@orchestrator(name="it_catch")
def catch(ctx):
    try:
        yield ctx.call_activity(fail, "bad key")
    except TaskFailedError as exc:
        return {"error_type": exc.error_type, "message": exc.message, "cause": type(exc.cause).__name__}
    return "not reached"


@orchestrator(name="it_uncaught")
def uncaught(ctx):
    yield ctx.call_activity(fail, "nope")


@orchestrator(name="it_retry")
def retry(ctx):
    path, succeed_on, attempts = ctx.get_input()
    options = RetryOptions(timedelta(milliseconds=50), max_number_of_attempts=attempts)
    try:
        return (yield ctx.call_activity_with_retry(flaky, options, (path, succeed_on)))
    except TaskFailedError as exc:
        return f"gave up: {exc.message}"


@orchestrator(name="it_bad_handle")
def bad_handle(ctx):
    # the policy's handle has a bug: a TaskFailedError has no status_code
    options = RetryOptions(timedelta(milliseconds=50), 3, handle=lambda exc: exc.status_code == 503)
    return (yield ctx.call_activity_with_retry(fail, options, "nope"))


@orchestrator(name="it_parent")
def parent(ctx):
    a = yield ctx.call_sub_orchestrator(hello)
    b = yield ctx.call_sub_orchestrator(fan, 10, instance_id=f"{ctx.instance_id}-child")
    try:
        yield ctx.call_sub_orchestrator(uncaught)
    except TaskFailedError as exc:
        c = exc.message
    return a, b, c


@orchestrator(name="it_raises")
def raises(ctx):
    raise ValueError(f"bad {ctx.get_input()}")
    yield


@orchestrator(name="it_cause_of_children")
def cause_of_children(ctx):
    """What a parent sees of its children's failures: the exception their code raised, and
    through a child that let an activity's failure go, that activity's exception too."""
    seen = []
    for child, arg in ((raises, 7), (uncaught, None)):
        try:
            yield ctx.call_sub_orchestrator(child, arg)
        except TaskFailedError as exc:
            inner = getattr(exc.cause, "cause", None)
            seen.append([exc.error_type, type(exc.cause).__name__, str(exc.cause), type(inner).__name__])
    return seen


@orchestrator(name="it_timer")
def timer(ctx):
    start = ctx.current_utc_datetime
    yield ctx.create_timer(timedelta(milliseconds=300))
    return (ctx.current_utc_datetime - start).total_seconds()


@orchestrator(name="it_race")
def race(ctx):
    event = ctx.wait_for_external_event("approve")
    timeout = ctx.create_timer(timedelta(seconds=ctx.get_input()))
    winner = yield ctx.task_any([event, timeout])
    if winner is event:
        timeout.cancel()
        return f"approved: {event.result}"
    return "timed out"


@orchestrator(name="it_events")
def events(ctx):
    got = []
    for _ in range(3):
        got.append((yield ctx.wait_for_external_event("item")))
    return got


@orchestrator(name="it_counter")
def counter(ctx):
    n = ctx.get_input()
    ctx.set_custom_status({"n": n})
    if n < 5:
        yield ctx.call_activity(async_double, n)
        ctx.continue_as_new(n + 1)
        return None
    return n


@orchestrator(name="it_carry")
def carry(ctx):
    n = ctx.get_input()
    value = yield ctx.wait_for_external_event("x")
    if n == 0:
        ctx.continue_as_new(1, preserve_unprocessed_events=True)
        return None
    return value


@activity(name="it_touch")
def touch(path: str) -> None:
    Path(path).write_text("ran")


@orchestrator(name="it_fire_and_forget")
def fire_and_forget(ctx):
    ctx.call_activity(touch, ctx.get_input())  # never waited for
    return "done"
    yield


@activity(name="it_wait_for_file")
def wait_for_file(path: str) -> str:
    """Returns once ``path`` exists (at most a minute)."""
    deadline = time.monotonic() + 60
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.01)
    return "slow"


@activity(name="it_barrier")
def barrier(args: tuple[str, int, int]) -> int:
    """Returns once all ``n`` calls of the barrier in ``directory`` have started (at most a
    minute): calls run one after another never get there."""
    directory, i, n = args
    Path(directory, str(i)).write_text("started")
    wait_until(lambda: len(list(Path(directory).iterdir())) == n, timeout=60, interval=0.01)
    return i


@orchestrator(name="it_activity_race")
def activity_race(ctx):
    slow = ctx.call_activity(wait_for_file, ctx.get_input())
    fast = ctx.call_activity(say_hello, "fast")
    winner = yield ctx.task_any([slow, fast])
    return winner.result


@orchestrator(name="it_barrier_fan")
def barrier_fan(ctx):
    directory = ctx.get_input()
    return (yield ctx.task_all([ctx.call_activity(barrier, (directory, i, 3)) for i in range(3)]))


@orchestrator(name="it_whoami")
def whoami(ctx):
    return ctx.instance_id
    yield


@orchestrator(name="it_generations")
def generations(ctx):
    """Each generation takes a new_uuid without waiting (the generations before the last child
    call run in one turn, at one time) and calls a child by its default id."""
    n, uuids, children = ctx.get_input()
    uuids = [*uuids, ctx.new_uuid()]
    if n % 2 == 0:
        children = [*children, (yield ctx.call_sub_orchestrator(whoami))]
    if n < 3:
        ctx.continue_as_new([n + 1, uuids, children])
        return None
    return uuids, children


@orchestrator(name="it_unknown_activity")
def unknown_activity(ctx):
    try:
        yield ctx.call_activity("no_such_activity", 1)
    except TaskFailedError as exc:
        return exc.error_type
    return "not reached"


@orchestrator(name="it_bad_result")
def bad_result(ctx):
    try:
        yield ctx.call_activity(unpicklable_result, None)
    except TaskFailedError as exc:
        return exc.error_type
    return "not reached"


@orchestrator(name="it_plain")
def plain(ctx):
    return ctx.get_input() * 3


@orchestrator(name="it_uuid")
def uuids(ctx):
    first = ctx.new_uuid()
    yield ctx.call_activity(say_hello, "x")
    return [first, ctx.new_uuid()]


# -- tests --------------------------------------------------------------------------------------


def test_hello_sequence_output_and_history(hub):
    iid = hub.start_new(hello)
    status = hub.wait_for_completion(iid, timeout=60)
    assert status.runtime_status is S.Completed
    assert status.output == ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]
    history = hub.get_history(iid)
    types = [e.event_type for e in history]
    assert types[:4] == ["ExecutionStarted", "OrchestratorStarted", "TaskScheduled", "OrchestratorCompleted"]
    assert types[-1] == "ExecutionCompleted" and types.count("TaskCompleted") == 3
    assert [e.input for e in history if e.event_type == "TaskScheduled"] == ["Tokyo", "Seattle", "London"]
    assert [e.result for e in history if e.event_type == "TaskCompleted"] == status.output


def test_start_by_name_and_status_fields(hub):
    iid = hub.start_new("it_plain", instance_id="plain-by-name", client_input=14)
    status = hub.wait_for_completion(iid, timeout=30)
    assert (status.name, status.instance_id, status.input_, status.output) == ("it_plain", iid, 14, 42)
    assert status.created_time <= status.last_updated_time


def test_fan_out_fan_in_with_async_activities(hub):
    iid = hub.start_new(fan, client_input=500)
    status = hub.wait_for_completion(iid, timeout=120)
    assert status.output == sum(2 * i for i in range(500))


def test_activity_failure_is_catchable_with_details(hub):
    status = hub.wait_for_completion(hub.start_new(catch), timeout=30)
    assert status.output == {"error_type": "KeyError", "message": "'bad key'", "cause": "KeyError"}


def test_uncaught_failure_fails_the_instance(hub):
    status = hub.wait_for_completion(hub.start_new(uncaught), timeout=30)
    assert status.runtime_status is S.Failed
    # durabletask-python test_orchestration_e2e.py::test_retry_timeout: the instance fails with
    # TaskFailedError naming the task; the cause's type stays in the details
    assert status.failure_details.error_type == "TaskFailedError"
    assert status.failure_details.message == "Activity task #1 failed: 'nope'"
    assert status.failure_details.details.startswith("Caused by KeyError: 'nope'")


def test_retry_until_success(hub, tmp_path):
    status = hub.wait_for_completion(hub.start_new(retry, client_input=(str(tmp_path / "a"), 3, 5)), timeout=60)
    assert status.output == 3
    history = hub.get_history(status.instance_id)
    assert [e.event_type for e in history].count("TaskScheduled") == 3
    assert [e.event_type for e in history].count("TimerFired") == 2


def test_a_retry_handle_that_raises_fails_the_instance_naming_its_error(hub):
    status = hub.wait_for_completion(hub.start_new(bad_handle), timeout=30)
    assert status.runtime_status is S.Failed
    assert status.failure_details.error_type == "AttributeError"
    assert "status_code" in status.failure_details.message


def test_retry_gives_up(hub, tmp_path):
    status = hub.wait_for_completion(hub.start_new(retry, client_input=(str(tmp_path / "b"), 10, 2)), timeout=60)
    assert status.output == "gave up: attempt 2 fails"


def test_sub_orchestrations(hub):
    iid = hub.start_new(parent)
    status = hub.wait_for_completion(iid, timeout=60)
    assert status.runtime_status is S.Completed, status.failure_details
    # the child failed with TaskFailedError; the parent caught it naming the child's task
    assert status.output == (["Hello Tokyo!", "Hello Seattle!", "Hello London!"], 90, "Activity task #1 failed: 'nope'")
    assert hub.get_status(f"{iid}-child").output == 90
    assert hub.get_status(f"{iid}:1").output[0] == "Hello Tokyo!"  # default child id
    assert hub.get_status(f"{iid}:1").name == "it_hello"


def test_a_childs_failure_keeps_what_its_code_raised(hub):
    # durabletask-dotnet OrchestrationErrorHandling.InnerExceptionDetailsArePreserved: before,
    # a parent saw cause=None for a child (an activity's exception was kept, a child's not)
    status = hub.wait_for_completion(hub.start_new(cause_of_children), timeout=30)
    assert status.output == [
        ["ValueError", "ValueError", "bad 7", "NoneType"],
        ["TaskFailedError", "TaskFailedError", "KeyError: 'nope'", "KeyError"],
    ]
    failed = hub.wait_for_completion(hub.start_new(raises, client_input=8), timeout=30)
    assert isinstance(failed.failure_details.cause, ValueError) and str(failed.failure_details.cause) == "bad 8"


def test_durable_timer(hub):
    status = hub.wait_for_completion(hub.start_new(timer), timeout=30)
    assert status.output >= 0.3


def test_event_beats_timer_and_timer_beats_no_event(hub):
    iid = hub.start_new(race, client_input=60)
    hub.raise_event(iid, "approve", "yes")
    assert hub.wait_for_completion(iid, timeout=30).output == "approved: yes"
    iid = hub.start_new(race, client_input=0.2)
    assert hub.wait_for_completion(iid, timeout=30).output == "timed out"


def test_external_events_buffer_fifo(hub):
    iid = hub.start_new(events)
    for i in range(3):
        hub.raise_event(iid, "item", i)
    assert hub.wait_for_completion(iid, timeout=30).output == [0, 1, 2]


def test_continue_as_new_and_custom_status(hub):
    iid = hub.start_new(counter, client_input=0)
    status = hub.wait_for_completion(iid, timeout=60)
    assert (status.runtime_status, status.output, status.custom_status) == (S.Completed, 5, {"n": 5})
    history = hub.get_history(iid)
    assert history[0].event_type == "ExecutionStarted" and history[0].input == 5  # fresh history
    assert "ContinueAsNew" not in [e.event_type for e in history]


def test_continue_as_new_preserves_unprocessed_events(hub):
    iid = hub.start_new(carry, client_input=0)
    hub.raise_event(iid, "x", "first")
    hub.raise_event(iid, "x", "second")
    assert hub.wait_for_completion(iid, timeout=30).output == "second"


def test_continue_as_new_generations_get_their_own_uuids_and_child_ids(hub):
    # DurableTask.Core: a child's default id is "<execution id>:<task>", and each generation
    # starts at its own time; here generations that run in one turn share its time and their
    # task numbers restart, so both repeated before (every uuid alike, every child "<id>:1")
    status = hub.wait_for_completion(hub.start_new(generations, instance_id="gens", client_input=[0, [], []]),
                                     timeout=30)
    uuids, children = status.output
    assert len(set(uuids)) == 4
    assert children == ["gens:1", "gens:1~2"]
    assert hub.get_status("gens:1").output == "gens:1"  # the first generation's child kept


def test_an_activity_started_in_the_last_episode_runs_after_the_instance_completed(hub, tmp_path):
    # DurableTask.Core sends a completing execution's activities; before, this one never ran
    marker = tmp_path / "fired"
    status = hub.wait_for_completion(hub.start_new(fire_and_forget, client_input=str(marker)), timeout=30)
    assert (status.runtime_status, status.output) == (S.Completed, "done")
    wait_until(marker.exists, timeout=30)


def test_task_any_of_a_slow_and_a_quick_activity_completes_with_the_quick_one(hub, tmp_path):
    # before, both went to the warm worker in one batch, run one after the other, answered
    # together: the instance waited for the slow one (here: for ever, until the test lets it go)
    release = tmp_path / "release"
    try:
        status = hub.wait_for_completion(hub.start_new(activity_race, client_input=str(release)), timeout=30)
        assert (status.runtime_status, status.output) == (S.Completed, "Hello fast!")
    finally:
        release.write_text("go")


def test_a_small_fan_out_runs_its_activities_at_the_same_time(hub, tmp_path):
    # three calls that each wait until all three have started: run one after another (as the
    # warm worker ran a small batch), the first never returns
    status = hub.wait_for_completion(hub.start_new(barrier_fan, client_input=str(tmp_path)), timeout=60)
    assert (status.runtime_status, status.output) == (S.Completed, [0, 1, 2])


def test_the_progress_bar_ends_at_every_activity_done(hub, capsys):
    # the README's fan-out example: the bar's last line read "0task" (an instance that ended
    # leaves the host's memory, and its progress was read from there only)
    status = hub.wait_for_completion(hub.start_new(fan, client_input=5), timeout=30, show_progress=True)
    assert status.output == 20
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert "5/5" in last and "100%" in last, last


def test_unknown_activity_fails_the_task_not_the_shard(hub):
    assert hub.wait_for_completion(hub.start_new(unknown_activity), timeout=30).output == "ActivityNotFound"
    assert hub.wait_for_completion(hub.start_new(plain, client_input=1), timeout=30).output == 3


def test_unserializable_activity_result_fails_that_task(hub):
    assert hub.wait_for_completion(hub.start_new(bad_result), timeout=30).output == "orchestrations.PayloadError"


def test_new_uuid_is_stable_across_episodes(hub):
    status = hub.wait_for_completion(hub.start_new(uuids), timeout=30)
    first, second = status.output
    assert first != second and len(first) == 36


@orchestrator(name="it_child_clash")
def child_clash(ctx):
    try:
        yield ctx.call_sub_orchestrator(events, instance_id=ctx.get_input())
    except TaskFailedError as exc:
        return exc.error_type
    return "not reached"


@orchestrator(name="it_send_to_nobody")
def send_to_nobody(ctx):
    ctx.send_event("nobody-home", "hello", 1)
    return (yield ctx.call_activity(say_hello, "still here"))


@orchestrator(name="it_send_event")
def send_event(ctx):
    target = ctx.get_input()
    for i in range(3):
        ctx.send_event(target, "item", i)
    return "sent"
    yield  # a generator orchestrator


@activity(name="it_assigned_cpus", num_cpus=0.5)
def assigned_cpus(_: object) -> float:
    import ray

    return ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0)


@orchestrator(name="it_resources")
def resources(ctx):
    return (yield ctx.call_activity(assigned_cpus, None))


def test_sub_orchestration_with_a_running_id_fails_that_task(hub):
    busy = hub.start_new(events)
    status = hub.wait_for_completion(hub.start_new(child_clash, client_input=busy), timeout=30)
    assert status.output == "orchestrations.InstanceAlreadyExistsError"
    hub.terminate(busy)


def test_send_event_to_a_missing_instance_is_dropped(hub):
    status = hub.wait_for_completion(hub.start_new(send_to_nobody), timeout=30)
    assert status.output == "Hello still here!"


def test_send_event_between_orchestrations(hub):
    receiver = hub.start_new(events)
    sender = hub.start_new(send_event, client_input=receiver)
    assert hub.wait_for_completion(sender, timeout=30).output == "sent"
    assert hub.wait_for_completion(receiver, timeout=30).output == [0, 1, 2]
    assert "EventSent" in [e.event_type for e in hub.get_history(sender)]


def test_activity_ray_options_are_honoured(hub):
    assert hub.wait_for_completion(hub.start_new(resources), timeout=30).output == 0.5


def test_default_instance_ids_are_random_hex(hub):
    a, b = hub.start_new(plain, client_input=1), hub.start_new(plain, client_input=1)
    assert a != b and len(a) == 32 and int(a, 16) >= 0
