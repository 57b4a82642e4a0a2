"""The hello benchmark's user-shaped parts (see ``hello.py``): the calls as a user writes
them, on a hub opened with ``TaskHub``'s defaults, each next to plain Ray written as a user
writes it with asyncio (a coroutine per sequence awaiting its three tasks in turn).

* ``--loop N``: a loop of N ``start_new`` calls, then a loop of N ``wait_for_completion``
  calls, vs plain Ray running N three-task sequences at once with ``asyncio.gather``.
* ``--async N``: the asyncio client, ``asyncio.gather`` of N coroutines each awaiting
  ``start_new_async`` then ``wait_for_completion_async``, vs the same plain Ray.
* ``--single K``: K hello sequences one at a time (``start_new`` + ``wait_for_completion``),
  interleaved with K plain Ray sequences of three awaited tasks each; p50 and p99 of each.

The sides alternate from run to run; medians over ``--runs``. Every output is checked after
the timed region.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

import _common as common
from _common import BenchmarkError, log

from runtime import DurableOrchestrationStatus, OrchestrationRuntimeStatus, TaskHub

#: plain Ray's sequence and the durable orchestration are hello.py's; passed in to keep one copy
RaySequence = Callable[[], Any]


def _check(statuses: list[DurableOrchestrationStatus], expected: list[str]) -> None:
    for status in statuses:
        if status.runtime_status != OrchestrationRuntimeStatus.Completed or status.output != expected:
            raise BenchmarkError(f"orchestration {status.instance_id} ended {status.runtime_status}: "
                                 f"{status.output!r} {status.failure_details}")


def ray_gather(ray_sequence: RaySequence, n: int) -> float:
    """N plain Ray sequences at once with asyncio: seconds."""

    async def many() -> None:
        await asyncio.gather(*(ray_sequence() for _ in range(n)))

    start = time.perf_counter()
    asyncio.run(many())
    return time.perf_counter() - start


def durable_loop(hub: TaskHub, orchestration: Any, expected: list[str], n: int, timeout: float) -> tuple[float, float]:
    """A loop of N starts, then a loop of N waits: (seconds in all, seconds of the starts)."""
    start = time.perf_counter()
    ids = [hub.start_new(orchestration) for _ in range(n)]
    starts = time.perf_counter() - start
    statuses = [hub.wait_for_completion(iid, timeout=timeout) for iid in ids]
    elapsed = time.perf_counter() - start
    _check(statuses, expected)
    return elapsed, starts


def durable_gather(hub: TaskHub, orchestration: Any, expected: list[str], n: int, timeout: float) -> float:
    """N coroutines at once, each starting one instance and waiting for it: seconds."""

    async def one() -> DurableOrchestrationStatus:
        iid = await hub.start_new_async(orchestration)
        return await hub.wait_for_completion_async(iid, timeout=timeout)

    async def many() -> list[DurableOrchestrationStatus]:
        return list(await asyncio.gather(*(one() for _ in range(n))))

    start = time.perf_counter()
    statuses = asyncio.run(many())
    elapsed = time.perf_counter() - start
    _check(statuses, expected)
    return elapsed


def versus_ray(
    name: str, runs: int, durable: Callable[[], float], ray_side: Callable[[], float]
) -> dict[str, Any]:
    """``runs`` alternating runs of both sides: ``{name}_ray_*``, ``{name}_durable_*`` and
    ``{name}_ratio`` (of the medians)."""
    seconds: dict[str, list[float]] = {"ray": [], "durable": []}
    for run, side in common.alternating(runs, ("ray", "durable")):
        elapsed = ray_side() if side == "ray" else durable()
        seconds[side].append(elapsed)
        log(f"{name} run {run + 1}/{runs} {side}: {elapsed:.3f} s")
    return {
        **common.median_fields(f"{name}_ray", seconds["ray"]),
        **common.median_fields(f"{name}_durable", seconds["durable"]),
        f"{name}_ratio": common.ratio(statistics.median(seconds["durable"]), statistics.median(seconds["ray"])),
    }


def loop_part(hub: TaskHub, orchestration: Any, expected: list[str], ray_sequence: RaySequence,
              n: int, runs: int, timeout: float) -> dict[str, Any]:
    """``--loop``: the JSON line's ``loop_*`` fields."""
    ray_gather(ray_sequence, min(n, 100))
    durable_loop(hub, orchestration, expected, min(n, 100), timeout)
    start_seconds: list[float] = []

    def durable() -> float:
        elapsed, starts = durable_loop(hub, orchestration, expected, n, timeout)
        start_seconds.append(starts)
        return elapsed

    fields = versus_ray("loop", runs, durable, lambda: ray_gather(ray_sequence, n))
    fields.update(common.median_fields("loop_starts", start_seconds))
    return {"loop": n, **fields}


def async_part(hub: TaskHub, orchestration: Any, expected: list[str], ray_sequence: RaySequence,
               n: int, runs: int, timeout: float) -> dict[str, Any]:
    """``--async``: the JSON line's ``async_*`` fields."""
    ray_gather(ray_sequence, min(n, 100))
    durable_gather(hub, orchestration, expected, min(n, 100), timeout)
    fields = versus_ray(
        "async", runs, lambda: durable_gather(hub, orchestration, expected, n, timeout),
        lambda: ray_gather(ray_sequence, n),
    )
    return {"async": n, **fields}


def single_part(hub: TaskHub, orchestration: Any, expected: list[str], ray_sequence: RaySequence,
                samples: int, runs: int, timeout: float) -> dict[str, Any]:
    """``--single``: one hello at a time vs plain Ray's three awaited tasks, interleaved; the
    JSON line's ``single_*`` fields (p50 and p99 per run, then the median over runs)."""
    loop = asyncio.new_event_loop()

    def ray_once() -> float:
        start = time.perf_counter()
        loop.run_until_complete(ray_sequence())
        return time.perf_counter() - start

    def durable_once() -> float:
        start = time.perf_counter()
        status = hub.wait_for_completion(hub.start_new(orchestration), timeout=timeout)
        elapsed = time.perf_counter() - start
        _check([status], expected)
        return elapsed

    try:
        for _ in range(10):
            ray_once()
            durable_once()
        per_run: dict[str, list[float]] = {f"{s}_{p}": [] for s in ("ray", "durable") for p in ("p50", "p99")}
        for run in range(runs):
            got: dict[str, list[float]] = {"ray": [], "durable": []}
            for _ in range(samples):
                got["ray"].append(ray_once())
                got["durable"].append(durable_once())
            for side, values in got.items():
                for p in (50, 99):
                    per_run[f"{side}_p{p}"].append(common.percentile(values, p) * 1000)
            log(f"single run {run + 1}/{runs}: " + ", ".join(f"{k} {v[-1]:.2f} ms" for k, v in per_run.items()))
    finally:
        loop.close()
    fields: dict[str, Any] = {"single": samples}
    for key, values in per_run.items():
        fields[f"single_{key}_ms"] = round(statistics.median(values), 3)
        fields[f"single_{key}_ms_runs"] = [round(v, 3) for v in values]
    fields["single_ratio_p50"] = common.ratio(fields["single_durable_p50_ms"], fields["single_ray_p50_ms"])
    p99, p50 = fields["single_durable_p99_ms"], fields["single_durable_p50_ms"]
    fields["single_durable_p99_over_p50"] = common.ratio(p99, p50)
    return fields
