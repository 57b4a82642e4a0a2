"""The warm lane while its worker starts: a host runs its first small batches itself (one at a
time, on a thread), then hands every batch to the worker once it answers (no Ray here: the
worker is a real ``WarmWorker`` served from this process, its actor a stand-in that says where
it listens)."""

from __future__ import annotations

import asyncio
import sys
import threading
from typing import Any

import pytest

from orchestrations import Registry
from runtime._codec import decode, dump_value, encode
from runtime._warm import WarmLane, WarmWorker
from runtime._wire import ConnectionLostError, Limits

from .helpers import until


def where(_: Any) -> str:
    """An activity that says which thread ran it."""
    return threading.current_thread().name


def leave(_: Any) -> None:
    sys.exit(3)


KEY = "warm-start-up-test"  # workers cache the table they were sent by its key
REGISTRY = encode({
    "where": Registry().add_activity(where, "where"),
    "leave": Registry().add_activity(leave, "leave"),
})


class StandIn:
    """What the lane needs of the worker actor: ``address.remote()``, awaited."""

    def __init__(self) -> None:
        self.answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.address = self

    def remote(self) -> asyncio.Future[Any]:
        return self.answer


def starting_lane(run_here: bool = True) -> tuple[WarmLane, StandIn]:
    """A lane whose worker was created and has not answered yet."""
    tasks: set[asyncio.Task[Any]] = set()
    lane = WarmLane(lambda coro: tasks.add(asyncio.get_running_loop().create_task(coro)))
    stand_in = StandIn()
    lane._create_worker = lambda: stand_in  # type: ignore[method-assign]
    lane.start(run_here_meanwhile=run_here)
    return lane, stand_in


async def ran_on(lane: WarmLane) -> str:
    blob, seconds = await lane.submit(KEY, REGISTRY, [("where", dump_value(None))])
    assert seconds >= 0  # how long the batch took to run, for the host to tell quick activities
    return decode(blob)[0][1]


def test_until_the_worker_answers_batches_run_in_this_process_one_at_a_time():
    async def main() -> None:
        lane, _ = starting_lane()
        assert lane.available() and not lane.connected
        batch = lane.submit(KEY, REGISTRY, [("where", dump_value(None))] * 2)
        assert not lane.available()  # one batch at a time
        assert decode((await batch)[0]) == [(True, "warm-start-up")] * 2
        assert lane.available()

    asyncio.run(main())


def test_once_the_worker_answers_it_runs_every_batch():
    async def main() -> None:
        lane, stand_in = starting_lane()
        worker = WarmWorker("127.0.0.1", Limits(max_connections=2))
        stand_in.answer.set_result(worker.address())
        await until(lambda: lane.connected)
        assert await ran_on(lane) == "warm-worker"

    asyncio.run(main())


def test_a_worker_that_never_answers_leaves_every_batch_to_ray_tasks():
    async def main() -> None:
        lane, stand_in = starting_lane()
        stand_in.answer.set_exception(RuntimeError("the worker could not start"))
        await until(lambda: not lane.available())  # the lane stops running batches here

    asyncio.run(main())


def test_a_restarted_host_runs_nothing_itself():
    async def main() -> None:
        lane, _ = starting_lane(run_here=False)
        assert not lane.available()

    asyncio.run(main())


def test_a_batch_that_does_not_finish_here_is_lost_like_a_worker_that_died():
    # the dispatcher runs a batch whose connection was lost again on a Ray task
    async def main() -> None:
        lane, _ = starting_lane()
        with pytest.raises(ConnectionLostError, match="did not finish"):
            await lane.submit(KEY, REGISTRY, [("leave", dump_value(None))])
        assert lane.available()

    asyncio.run(main())
