"""How a shard host hands activities to its warm worker and to Ray tasks (``runtime._activities``).

Pure: the warm lane and the Ray task are stand-ins that answer when a test's timings say, so
these tests check the order of hand-offs, not Ray (the integration tests run the real ones:
``test_orchestrations.py``, task_any of a slow and a quick activity, a small fan-out).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import runtime._activities as activities
from orchestrations import Registry
from runtime._activities import ActivityCall, ActivityDispatcher
from runtime._codec import encode
from runtime._wire import ConnectionLostError

#: how long each stand-in call runs, by its input
SECONDS = {'"slow"': 0.5, '"quick"': 0.0}


class StandInLane:
    """A warm lane whose worker runs each batch for the time its inputs say, or dies at once."""

    def __init__(self, dies: bool = False) -> None:
        self.dies = dies
        self.batches: list[list[str]] = []
        self.busy = False

    def start(self, *_: Any) -> None:
        pass

    def available(self) -> bool:
        return not self.busy

    def submit(self, key: str, registry: Any, calls: list[Any], setup: Any = None) -> asyncio.Future[Any]:
        inputs = [c[1] for c in calls]
        self.batches.append(inputs)
        self.busy = True
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def answer() -> None:
            self.busy = False
            if self.dies:
                future.set_exception(ConnectionLostError("worker died"))
            else:
                future.set_result((encode([(True, i) for i in inputs]), sum(SECONDS[i] for i in inputs)))

        asyncio.get_running_loop().call_later(0.001 if self.dies else sum(SECONDS[i] for i in inputs), answer)
        return future


def run(lane: StandInLane, inputs: list[str], monkeypatch: pytest.MonkeyPatch, quick: bool = False) -> list[Any]:
    """Dispatch one call per input; returns the events of (time, where, what) in order."""
    events: list[Any] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()

        def ray_task(key: str, registry: Any, calls: list[Any], options: Any, setup: Any = None) -> Any:
            names = [c[1] for c in calls]
            events.append(("ray", names))

            async def answer() -> bytes:
                await asyncio.sleep(sum(SECONDS[n] for n in names))
                return encode([(True, n) for n in names])

            return asyncio.ensure_future(answer())

        monkeypatch.setattr(activities, "submit_batch", ray_task)
        tasks: set[asyncio.Task[Any]] = set()
        dispatcher = ActivityDispatcher(
            "unit", lambda msgs: events.extend(("result", m.event.result, round(loop.time() - began, 1)) for m in msgs),
            lambda coro: tasks.add(asyncio.ensure_future(coro)),
        )
        registry = Registry()
        registry.add_activity(lambda x: x, "act")
        dispatcher.set_registry(registry.snapshot()[1], 1)
        dispatcher._warm, dispatcher._warm_run_here = lane, True  # type: ignore[assignment]
        if quick:
            dispatcher._quick.add("act")
        dispatcher.dispatch([ActivityCall("i", "e", n, "act", v) for n, v in enumerate(inputs)])
        while tasks:
            done, _ = await asyncio.wait(tasks)
            tasks -= done
        assert not dispatcher._warm_queued

    asyncio.run(main())
    return events


def test_a_slow_call_on_the_warm_worker_sends_the_calls_behind_it_to_ray_tasks(monkeypatch):
    lane = StandInLane()
    events = run(lane, ['"slow"', '"quick"'], monkeypatch)
    assert lane.batches == [['"slow"']]
    assert events == [("ray", ['"quick"']), ("result", '"quick"', 0.0), ("result", '"slow"', 0.5)]


def test_quick_calls_go_one_after_another_and_each_answers_as_it_comes(monkeypatch):
    lane = StandInLane()
    events = run(lane, ['"quick"', '"quick"'], monkeypatch)
    assert lane.batches == [['"quick"'], ['"quick"']]
    assert [e[0] for e in events] == ["result", "result"]


def test_activities_known_quick_go_in_one_batch(monkeypatch):
    lane = StandInLane()
    run(lane, ['"quick"', '"quick"', '"quick"'], monkeypatch, quick=True)
    assert lane.batches == [['"quick"', '"quick"', '"quick"']]


def test_a_worker_lost_on_the_first_call_sends_the_rest_on_at_once(monkeypatch):
    # a review found it: the calls queued behind waited for the lost call's run on a Ray task
    lane = StandInLane(dies=True)
    events = run(lane, ['"slow"', '"quick"'], monkeypatch)
    assert lane.batches == [['"slow"']]
    assert events[:3] == [("ray", ['"quick"']), ("ray", ['"slow"']), ("result", '"quick"', 0.0)]
    assert events[3] == ("result", '"slow"', 0.5)
