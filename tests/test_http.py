"""Pure tests of ``call_http``: the request it records, and the 202-polling it drives from history.

The request itself is the built-in activity ``"ray_durable.http"`` (run by the runtime); here its
responses are written into history by hand, as ``TaskCompleted`` events carrying a
:class:`DurableHttpResponse`. Every episode runs both from scratch and on a cached executor
(the ``Instance`` driver of ``test_executor.py``), so replay determinism is checked throughout.
"""

import pickle
from datetime import timedelta

import pytest

from orchestrations import (
    CreateTimer,
    DurableHttpRequest,
    DurableHttpResponse,
    DurableTypeError,
    DurableValueError,
    ExecutionCompleted,
    ExecutionState,
    HttpTimeoutError,
    OrchestrationContext,
    OrchestrationExecutor,
    ScheduleTask,
    TaskFailedError,
    TimerCreated,
)
from orchestrations._http import HTTP_ACTIVITY
from orchestrations.testing import at, task_completed, task_failed, timer_fired
from tests.test_executor import Instance, lookup_of

URI = "https://svc.example/orders"
STATUS = "https://svc.example/orders/status/7"


def accepted(location: str | None = STATUS, retry_after: str | None = None) -> DurableHttpResponse:
    headers = {}
    if location is not None:
        headers["Location"] = location
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    return DurableHttpResponse(202, headers, "")


OK = DurableHttpResponse(200, {"Content-Type": "application/json"}, '{"state": "done"}')


def get(uri: str = URI, timeout: float | None = None, headers: dict | None = None) -> DurableHttpRequest:
    return DurableHttpRequest("GET", uri, None, headers or {}, timeout)


def fetch(ctx):
    response = yield ctx.call_http("GET", URI)
    return response


def fetch_within_a_minute(ctx):
    try:
        response = yield ctx.call_http("GET", URI, timeout=60)
    except TaskFailedError as exc:
        return {"type": type(exc).__name__, "error_type": exc.error_type, "message": exc.message}
    return response


# -- the request --------------------------------------------------------------------------------


def test_call_http_schedules_the_builtin_activity_with_the_request():
    inst = Instance(fetch)
    result = inst.start()
    assert result.actions == [ScheduleTask(1, HTTP_ACTIVITY, get())]
    assert result.state is ExecutionState.RUNNING


def test_method_is_upper_cased_and_content_and_headers_are_recorded():
    def post(ctx):
        response = yield ctx.call_http("post", URI, "raw body", {"Authorization": "Bearer t"})
        return response

    assert Instance(post).start().actions == [
        ScheduleTask(1, HTTP_ACTIVITY, DurableHttpRequest("POST", URI, "raw body", {"Authorization": "Bearer t"}))
    ]


def test_content_that_is_not_text_is_sent_as_json():
    def post(ctx):
        response = yield ctx.call_http("POST", URI, {"qty": 2})
        return response

    (action,) = Instance(post).start().actions
    assert action.input.content == '{"qty": 2}'
    assert action.input.headers == {"Content-Type": "application/json"}


def test_timeout_is_also_the_first_requests_own_timeout():
    def timed(ctx):
        response = yield ctx.call_http("GET", URI, timeout=timedelta(seconds=90))
        return response

    assert Instance(timed).start().actions == [ScheduleTask(1, HTTP_ACTIVITY, get(timeout=90.0))]


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "named"),
    [
        ((42, URI), {}, DurableTypeError, "42"),
        (("GET /x", URI), {}, DurableValueError, "GET /x"),
        (("GET", b"http://x"), {}, DurableTypeError, "b'http://x'"),
        (("GET", "ftp://svc.example/f"), {}, DurableValueError, "ftp://svc.example/f"),
        (("GET", "/relative/path"), {}, DurableValueError, "/relative/path"),
        (("GET", "http://svc.example/a\nb"), {}, DurableValueError, "a\\nb"),
        (("GET", URI, None, [("A", "b")]), {}, DurableTypeError, "[('A', 'b')]"),
        (("GET", URI, None, {"X-Count": 3}), {}, DurableTypeError, "X-Count"),
        (("GET", URI, None, {"Bad Name": "v"}), {}, DurableValueError, "Bad Name"),
        (("GET", URI, None, {"X-Evil": "a\r\nSet-Cookie: x"}), {}, DurableValueError, "X-Evil"),
        (("POST", URI, {1, 2}), {}, DurableTypeError, "{1, 2}"),
        (("GET", URI), {"timeout": "60"}, DurableTypeError, "'60'"),
        (("GET", URI), {"timeout": True}, DurableTypeError, "True"),
        (("GET", URI), {"timeout": 0}, DurableValueError, "0"),
        (("GET", URI), {"timeout": timedelta(seconds=-1)}, DurableValueError, "-1"),
        (("GET", URI), {"timeout": float("nan")}, DurableValueError, "nan"),
    ],
)
def test_bad_arguments_raise_at_the_call_naming_the_value(args, kwargs, error, named):
    ctx = OrchestrationContext("bad")
    with pytest.raises(error) as raised:
        ctx.call_http(*args, **kwargs)
    assert named in str(raised.value)
    assert ctx._pending_actions == {}  # nothing was scheduled


def test_bad_arguments_are_value_and_type_errors():
    ctx = OrchestrationContext("bad")
    with pytest.raises(TypeError):
        ctx.call_http(None, URI)
    with pytest.raises(ValueError):
        ctx.call_http("GET", "mailto:someone@example.com")


# -- responses ----------------------------------------------------------------------------------


def test_a_200_completes_the_task_with_the_response():
    inst = Instance(fetch)
    inst.start()
    done = inst.run(task_completed(1, OK), now=at(2))
    assert done.state is ExecutionState.COMPLETED
    assert done.output == OK
    assert done.output.json() == {"state": "done"}
    assert done.output.header("content-type") == "application/json"


@pytest.mark.parametrize("status", [400, 404, 500, 503])
def test_error_statuses_are_returned_not_raised(status):
    inst = Instance(fetch)
    inst.start()
    done = inst.run(task_completed(1, DurableHttpResponse(status, {}, "nope")), now=at(2))
    assert done.state is ExecutionState.COMPLETED
    assert done.output.status_code == status
    assert done.actions == []


def test_a_202_without_location_completes_the_task():
    inst = Instance(fetch)
    inst.start()
    done = inst.run(task_completed(1, accepted(location=None, retry_after="5")), now=at(2))
    assert done.state is ExecutionState.COMPLETED
    assert done.output.status_code == 202
    assert done.actions == []


def test_a_failed_request_raises_task_failed_error_at_the_yield():
    def careful(ctx):
        try:
            yield ctx.call_http("GET", URI)
        except TaskFailedError as exc:
            return exc.error_type
        return "not reached"

    inst = Instance(careful)
    inst.start()
    done = inst.run(task_failed(1, "All connection attempts failed", "httpx.ConnectError"), now=at(2))
    assert done.output == "httpx.ConnectError"
    assert done.actions == []  # no retry: a connection error is not a 202


# -- the 202 pattern ------------------------------------------------------------------------------


def test_202_then_200_waits_retry_after_on_a_durable_timer_then_gets_the_location():
    inst = Instance(fetch)
    inst.start(now=at(1))

    waiting = inst.run(task_completed(1, accepted(retry_after="5")), now=at(3))
    assert waiting.state is ExecutionState.RUNNING
    assert waiting.actions == [CreateTimer(2, at(8))]
    assert [e.fire_at for e in waiting.new_events if isinstance(e, TimerCreated)] == [at(8)]

    polling = inst.run(timer_fired(2, at(8)), now=at(8))
    assert polling.actions == [ScheduleTask(3, HTTP_ACTIVITY, get(STATUS))]

    done = inst.run(task_completed(3, OK), now=at(9))
    assert done.state is ExecutionState.COMPLETED
    assert done.output == OK


def test_without_retry_after_the_poll_waits_30_seconds():
    inst = Instance(fetch)
    inst.start(now=at(1))
    assert inst.run(task_completed(1, accepted()), now=at(3)).actions == [CreateTimer(2, at(33))]


def test_unreadable_retry_after_falls_back_to_30_seconds():
    inst = Instance(fetch)
    inst.start(now=at(1))
    assert inst.run(task_completed(1, accepted(retry_after="soon")), now=at(3)).actions == [CreateTimer(2, at(33))]


@pytest.mark.parametrize(
    ("retry_after", "waits"),
    [("\u00b2", timedelta(seconds=30)), ("99999999999999", timedelta(days=365)),
     ("999999999999999999", timedelta(days=365)), ("Fri, 31 Dec 9999 23:59:59 GMT", timedelta(days=365)),
     ("99999999", timedelta(days=365))],  # 1,157 days: under the length guard, still capped
)
def test_a_retry_after_that_is_no_number_or_too_large_cannot_break_the_engine(retry_after, waits):
    # a helper found it (the extension's DurableHttpTests send Retry-After values): '²' passed
    # isdigit() and int() raised, a huge number overflowed timedelta, and the exception
    # escaped the engine (the turn dropped the response, and the instance waited for ever)
    inst = Instance(fetch)
    inst.start(now=at(1))
    assert inst.run(task_completed(1, accepted(retry_after=retry_after)), now=at(3)).actions == [
        CreateTimer(2, at(3) + waits)
    ]


def test_a_location_that_is_no_url_fails_the_task_not_the_engine():
    def fetch_or_say_why(ctx):
        try:
            return (yield ctx.call_http("GET", URI))
        except TaskFailedError as exc:
            return exc.message

    inst = Instance(fetch_or_say_why)
    inst.start(now=at(1))
    done = inst.run(task_completed(1, accepted(location="http://[::1", retry_after="1")), now=at(3))
    assert done.output == "call_http could not follow the 202 response's Location: Invalid IPv6 URL"


def test_retry_after_may_be_an_http_date():
    inst = Instance(fetch)
    inst.start(now=at(1))
    # at(0) is 2017-05-05T18:45:28Z; the server asks for a poll 12 s after at(3)
    response = accepted(retry_after="Fri, 05 May 2017 18:45:43 GMT")
    assert inst.run(task_completed(1, response), now=at(3)).actions == [CreateTimer(2, at(15))]


def test_polling_repeats_until_a_response_that_is_not_202_and_follows_each_new_location():
    inst = Instance(fetch)
    inst.start(now=at(1))
    assert inst.run(task_completed(1, accepted(retry_after="2")), now=at(2)).actions == [CreateTimer(2, at(4))]
    assert inst.run(timer_fired(2, at(4)), now=at(4)).actions == [ScheduleTask(3, HTTP_ACTIVITY, get(STATUS))]
    # a relative Location is resolved against the URI that answered
    again = inst.run(task_completed(3, accepted("step/2", retry_after="3")), now=at(5))
    assert again.actions == [CreateTimer(4, at(8))]
    step2 = "https://svc.example/orders/status/step/2"
    assert inst.run(timer_fired(4, at(8)), now=at(8)).actions == [ScheduleTask(5, HTTP_ACTIVITY, get(step2))]
    done = inst.run(task_completed(5, OK), now=at(9))
    assert done.output == OK
    assert sum(isinstance(e, TimerCreated) for e in inst.history) == 2


def test_polls_keep_the_original_headers_but_not_the_body():
    def post(ctx):
        response = yield ctx.call_http("POST", URI, "job", {"Authorization": "Bearer t"})
        return response

    inst = Instance(post)
    inst.start(now=at(1))
    inst.run(task_completed(1, accepted(retry_after="1")), now=at(2))
    poll = inst.run(timer_fired(2, at(3)), now=at(3))
    assert poll.actions == [ScheduleTask(3, HTTP_ACTIVITY, get(STATUS, headers={"Authorization": "Bearer t"}))]


# -- timeout --------------------------------------------------------------------------------------


def test_timeout_fails_the_task_when_the_next_poll_would_pass_the_deadline():
    inst = Instance(fetch_within_a_minute)
    inst.start(now=at(1))  # deadline: at(61)
    first = inst.run(task_completed(1, accepted(retry_after="30")), now=at(2))
    assert first.actions == [CreateTimer(2, at(32))]
    # the poll gets the budget left when it starts as its own timeout (61 - 32 = 29 s)
    assert inst.run(timer_fired(2, at(32)), now=at(32)).actions == [
        ScheduleTask(3, HTTP_ACTIVITY, get(STATUS, timeout=29.0))
    ]
    timed_out = inst.run(task_completed(3, accepted(retry_after="30")), now=at(33))  # next poll at(63)
    assert timed_out.state is ExecutionState.COMPLETED
    assert timed_out.actions == []
    assert timed_out.output["type"] == "HttpTimeoutError"
    assert timed_out.output["error_type"] == "TimeoutError"
    assert "timed out" in timed_out.output["message"]
    assert URI in timed_out.output["message"]


def test_an_uncaught_timeout_fails_the_orchestration():
    def impatient(ctx):
        response = yield ctx.call_http("GET", URI, timeout=timedelta(seconds=10))
        return response

    inst = Instance(impatient)
    inst.start(now=at(1))
    failed = inst.run(task_completed(1, accepted()), now=at(2))  # 30 s default wait > 10 s budget
    assert failed.state is ExecutionState.FAILED
    assert failed.failure.error_type == "TaskFailedError"  # as any uncaught task failure
    assert failed.failure.message.startswith("HTTP request task #1 failed:")
    assert "timed out" in failed.failure.message
    assert "Caused by TimeoutError" in failed.failure.details
    assert failed.actions == []


def test_a_final_response_inside_the_budget_completes_normally():
    inst = Instance(fetch_within_a_minute)
    inst.start(now=at(1))
    inst.run(task_completed(1, accepted(retry_after="30")), now=at(2))
    inst.run(timer_fired(2, at(32)), now=at(32))
    assert inst.run(task_completed(3, OK), now=at(40)).output == OK


def test_http_timeout_error_is_a_task_failed_error_that_pickles():
    error = HttpTimeoutError("call_http GET https://x/ timed out", "TimeoutError")
    copy = pickle.loads(pickle.dumps(error))
    assert isinstance(copy, TaskFailedError)
    assert (copy.message, copy.error_type) == (error.message, "TimeoutError")


def test_request_and_response_pickle_and_are_frozen():
    request = DurableHttpRequest("GET", URI, None, {"A": "b"}, 5.0)
    assert pickle.loads(pickle.dumps(request)) == request
    assert pickle.loads(pickle.dumps(OK)) == OK
    with pytest.raises(AttributeError):
        OK.status_code = 500  # type: ignore[misc]


# -- replay ---------------------------------------------------------------------------------------


def polled_to_completion() -> Instance:
    inst = Instance(fetch)
    inst.start(now=at(1))
    inst.run(task_completed(1, accepted(retry_after="5")), now=at(2))
    inst.run(timer_fired(2, at(7)), now=at(7))
    inst.run(task_completed(3, accepted(retry_after="5")), now=at(8))
    inst.run(timer_fired(4, at(13)), now=at(13))
    inst.run(task_completed(5, OK), now=at(14))
    return inst


def test_replay_of_full_history_emits_no_new_action():
    history = polled_to_completion().history
    executor = OrchestrationExecutor(lookup_of(fetch), "test")
    executor.replay(history)
    assert executor.state is ExecutionState.COMPLETED
    result = executor.process([], at(100))
    assert result.actions == []
    assert result.output == OK
    assert not any(isinstance(e, ExecutionCompleted) for e in result.new_events)


def test_replay_while_waiting_on_a_poll_timer_emits_no_new_action():
    inst = Instance(fetch)
    inst.start(now=at(1))
    inst.run(task_completed(1, accepted(retry_after="5")), now=at(2))
    executor = OrchestrationExecutor(lookup_of(fetch), "test")
    executor.replay(inst.history)
    result = executor.process([], at(3))
    assert result.state is ExecutionState.RUNNING
    assert result.actions == []
    # and the timer it was waiting on still drives the poll after replay
    assert executor.process([timer_fired(2, at(7))], at(7)).actions == [ScheduleTask(3, HTTP_ACTIVITY, get(STATUS))]
