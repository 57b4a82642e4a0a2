"""The client's path against a real hub: the asyncio client, calls over the direct connection
to the shard hosts, the Ray fallback when a connection cannot be opened or drops (with a retried
start applied once), a TaskHub used from two threads, and errors re-raised as the library's own."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import math
import threading
import weakref

import pytest
import ray

from entities import EntityContext, EntityId, entity
from orchestrations import (
    DurableValueError,
    InstanceAlreadyExistsError,
    InstanceNotFoundError,
    orchestrator,
)
from runtime import OrchestrationRuntimeStatus as S

from ..conftest import ALWAYS_REPLAY
from ..helpers import wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(ALWAYS_REPLAY, reason="the client's transport: the normal run covers it"),
]


@orchestrator(name="cl_echo")
def echo(ctx):
    return ctx.get_input()


@orchestrator(name="cl_wait")
def wait_for_go(ctx):
    return (yield ctx.wait_for_external_event("go"))


@orchestrator(name="cl_again")
def again_then_wait(ctx):
    if ctx.get_input() == 0:
        ctx.continue_as_new(1)
        return None
    return (yield ctx.wait_for_external_event("go"))


@orchestrator(name="cl_fails")
def fails_with_status(ctx):
    ctx.set_custom_status({"step": ctx.get_input()})
    raise KeyError("cl-missing")


@entity(name="ClCounter")
def counter(ctx: EntityContext) -> None:
    if ctx.operation_name == "add":
        ctx.set_state(ctx.get_state(lambda: 0) + ctx.get_input())


def _waiting_on(hub, instance_id: str) -> bool:
    """Whether the instance's shard host holds a waiter for it (a wait reached the host)."""
    return bool(ray.get(hub._shard(instance_id).__ray_call__.remote(lambda actor: instance_id in actor.host._waiters)))


def test_asyncio_client_runs_many_starts_and_waits_at_once(hub):
    async def one(i: int):
        iid = await hub.start_new_async(echo, client_input=i)
        return iid, await hub.wait_for_completion_async(iid, timeout=60)

    async def many():
        return await asyncio.gather(*(one(i) for i in range(60)))

    results = asyncio.run(many())
    assert [status.output for _, status in results] == list(range(60))
    assert {status.runtime_status for _, status in results} == {S.Completed}
    assert len({iid for iid, _ in results}) == 60
    status = asyncio.run(hub.get_status_async(results[0][0]))
    assert (status.runtime_status, status.output) == (S.Completed, 0)
    assert asyncio.run(hub.get_status_async("cl-nobody")) is None


def test_asyncio_client_events_control_and_signals(hub):
    async def scenario():
        iid = await hub.start_new_async(wait_for_go, "cl-async-events")
        await hub.suspend_async(iid, "hold")
        await hub.raise_event_async(iid, "go", 5)
        held = await hub.get_status_async(iid)
        await hub.resume_async(iid, "go on")
        done = await hub.wait_for_completion_async(iid, timeout=30)
        other = await hub.start_new_async(wait_for_go)
        await hub.terminate_async(other, "stop")
        stopped = await hub.wait_for_completion_async(other, timeout=30)
        for n in (1, 2, 3):
            await hub.signal_entity_async(EntityId("ClCounter", "a"), "add", n)
        return held, done, stopped

    held, done, stopped = asyncio.run(scenario())
    assert held.runtime_status == S.Suspended
    assert (done.runtime_status, done.output) == (S.Completed, 5)
    assert (stopped.runtime_status, stopped.output) == (S.Terminated, "stop")
    wait_until(lambda: hub.read_entity_state(EntityId("ClCounter", "a")).entity_state == 6)


def test_errors_come_back_unwrapped_over_the_connection(hub):
    iid = hub.start_new(wait_for_go, "cl-errors")
    with pytest.raises(InstanceAlreadyExistsError) as sync_error:
        hub.start_new(wait_for_go, iid)
    assert type(sync_error.value) is InstanceAlreadyExistsError
    with pytest.raises(InstanceAlreadyExistsError) as async_error:
        asyncio.run(hub.start_new_async(wait_for_go, iid))
    assert type(async_error.value) is InstanceAlreadyExistsError
    with pytest.raises(InstanceNotFoundError) as not_found:
        asyncio.run(hub.wait_for_completion_async("cl-unknown", timeout=0.3))
    assert type(not_found.value) is InstanceNotFoundError
    with pytest.raises(InstanceNotFoundError):
        hub.raise_event("cl-unknown", "go")
    with pytest.raises(DurableValueError, match="no orchestrator named 'cl_not_registered'"):
        asyncio.run(hub.start_new_async("cl_not_registered"))
    with pytest.raises(TimeoutError):
        asyncio.run(hub.wait_for_completion_async(iid, timeout=0.05))
    with pytest.raises(DurableValueError):  # bad input: refused in the caller, nothing sent
        asyncio.run(hub.raise_event_async(iid, ""))
    hub.raise_event(iid, "go", "fine")
    assert hub.wait_for_completion(iid, timeout=30).output == "fine"


def _comparable(status):
    """A status with its failure's cause (an exception, equal only to itself) as type and args."""
    failure = status.failure_details
    cause = None if failure is None or failure.cause is None else (type(failure.cause), failure.cause.args)
    return (type(status), dataclasses.replace(status, failure_details=None), failure and (failure.describe(), cause))


def test_statuses_over_the_connection_are_the_ray_methods_statuses(hub):
    """The connection answers waits and reads with the instance's row and the client builds
    the status: it must be the status the host's Ray methods give, in every shape."""
    done, failed, waiting = "cl-st-done", "cl-st-failed", "cl-st-waiting"
    hub.start_new(echo, done, {"payload": [1, 2.5, "x"]})
    hub.start_new(fails_with_status, failed, 7)
    hub.start_new(wait_for_go, waiting, "its input")
    for iid in (done, failed):
        shard = hub._shard(iid)
        by_link = hub.wait_for_completion(iid, timeout=30)
        assert _comparable(by_link) == _comparable(ray.get(shard.wait.remote(iid, 30)))
        for show_input in (True, False):
            by_link = hub.get_status(iid, show_input=show_input)
            assert _comparable(by_link) == _comparable(ray.get(shard.get_status.remote(iid, False, False, show_input)))
    failure = hub.get_status(failed).failure_details
    assert failure.error_type == "KeyError" and "cl-missing" in failure.message and isinstance(failure.cause, KeyError)
    assert hub.get_status(failed).custom_status == {"step": 7}
    assert hub.get_status(done).output == {"payload": [1, 2.5, "x"]}
    started = hub.wait_for_orchestration_start(waiting, timeout=30)
    assert started.runtime_status is S.Running and started.input_ == "its input"
    assert _comparable(started) == _comparable(ray.get(hub._shard(waiting).wait_start.remote(waiting, 30)))
    with pytest.raises(TimeoutError):
        hub.wait_for_completion(waiting, timeout=0.05)
    assert hub.get_status("cl-st-unknown") is None
    assert asyncio.run(hub.get_status_async("cl-st-unknown")) is None
    assert _comparable(asyncio.run(hub.get_status_async(failed))) == _comparable(hub.get_status(failed))
    hub.raise_event(waiting, "go", "went")
    assert asyncio.run(hub.wait_for_completion_async(waiting, timeout=30)).output == "went"


def test_a_wait_in_flight_when_the_connection_drops_is_answered_through_ray(hub):
    iid = hub.start_new(wait_for_go, "cl-drop")

    async def scenario():
        waiting = asyncio.ensure_future(hub.wait_for_completion_async(iid, timeout=60))
        await asyncio.to_thread(wait_until, lambda: _waiting_on(hub, iid))
        hub._link.run(hub._link._close_all())  # the connections drop with the wait in flight
        await asyncio.to_thread(wait_until, lambda: _waiting_on(hub, iid))  # asked again, through Ray
        await hub.raise_event_async(iid, "go", "after the drop")  # a new connection
        return await waiting

    status = asyncio.run(scenario())
    assert (status.runtime_status, status.output) == (S.Completed, "after the drop")


def _open_blocking(link) -> list:
    """The link's blocking connections (each thread's own) that are open."""
    return [conn for conn in link._blocking_conns if not conn.closed]


def test_calls_go_through_ray_when_no_connection_can_be_opened(hub):
    link = hub._link
    link.run(link._close_all())
    for conn in _open_blocking(link):
        conn.close()
    keys = [(kind, i) for kind in ("main", "reads") for i in range(hub.num_shards)]
    for key in keys:
        link._retry_at[key] = math.inf  # both the loop's and the threads' connections
    try:
        iid = hub.start_new(echo, client_input="by ray")
        assert hub.wait_for_completion(iid, timeout=30).output == "by ray"
        assert hub.get_status(iid).runtime_status == S.Completed
        with pytest.raises(InstanceAlreadyExistsError):
            hub.start_new(wait_for_go, hub.start_new(wait_for_go))
        assert link._conns == {} and _open_blocking(link) == []
    finally:
        for key in keys:
            link._retry_at.pop(key, None)
    assert hub.wait_for_completion(hub.start_new(echo, client_input=1), timeout=30).output == 1
    assert _open_blocking(link)  # connected again (the blocking calls: this thread's own)


def test_a_threads_connections_close_when_the_thread_ends(hub):
    """A program that calls from a thread per request must not pile up connections on the
    hosts (each counts against a host's cap): a thread's go when it ends."""
    iid = hub.start_new(echo, client_input="from a thread")
    theirs: list = []

    def call() -> None:
        assert hub.wait_for_completion(iid, timeout=30).output == "from a thread"
        theirs.extend(weakref.ref(conn) for conn in hub._link._local.conns.values())

    thread = threading.Thread(target=call)
    thread.start()
    thread.join(60)
    assert theirs
    gc.collect()
    assert [ref() for ref in theirs] == [None] * len(theirs)  # let go, and their sockets closed
    assert hub.get_status(iid).output == "from a thread"  # this thread's own still work


def test_a_blocking_wait_in_flight_when_its_connection_drops_is_answered_through_ray(hub):
    iid = hub.start_new(wait_for_go, "cl-drop-blocking")
    answers: list = []
    waiting = threading.Thread(target=lambda: answers.append(hub.wait_for_completion(iid, timeout=60)))
    waiting.start()
    wait_until(lambda: _waiting_on(hub, iid))
    mine = list(getattr(hub._link._local, "conns", {}).values())  # this thread's
    theirs = [conn for conn in _open_blocking(hub._link) if conn not in mine]
    assert theirs  # the waiting thread's own connection
    for conn in theirs:
        conn.close()  # drops with the wait in flight
    wait_until(lambda: _waiting_on(hub, iid))  # asked again, through Ray
    hub.raise_event(iid, "go", "after the drop")
    waiting.join(60)
    assert [(s.runtime_status, s.output) for s in answers] == [(S.Completed, "after the drop")]


def test_a_start_sent_again_after_its_connection_dropped_is_applied_once(hub):
    """The host applied the start, the answer was lost with the connection, and the instance
    continued as new meanwhile: the start sent again through Ray must be recognised."""
    msg = hub._start_message(again_then_wait, "cl-retried", 0)
    hub._submit([msg])  # over the connection; msg now carries its client id
    wait_until(lambda: (s := hub.get_status("cl-retried")) is not None and s.input_ == 1)
    ray.get(hub._shard("cl-retried").submit.remote([msg], True))  # no InstanceAlreadyExistsError
    status = hub.get_status("cl-retried")
    assert (status.runtime_status, status.input_) == (S.Running, 1)  # not started again
    hub.raise_event("cl-retried", "go", "once")
    assert hub.wait_for_completion("cl-retried", timeout=30).output == "once"


def test_a_hub_used_from_two_threads(hub):
    outputs: dict[int, list[object]] = {0: [], 1: []}
    errors: list[BaseException] = []

    def loop(n: int) -> None:
        try:
            ids = [hub.start_new(echo, client_input=(n, i)) for i in range(25)]
            outputs[n] = [hub.wait_for_completion(iid, timeout=60).output for iid in ids]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=loop, args=(n,)) for n in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert outputs == {n: [(n, i) for i in range(25)] for n in (0, 1)}
