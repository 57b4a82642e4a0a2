"""Hello-sequence benchmark: three trivial activities called one after the other, alone
(latency) and many at once (throughput), vs plain Ray tasks doing the same three calls.

The durable side is the orchestration ``hello_sequence``: it calls the activity ``say_hello``
for "Tokyo", "Seattle" and "London" in turn and returns the three greetings. The plain Ray
side is the task ``ray_say_hello(greetings, city)``, which returns ``greetings`` plus the new
greeting, called three times in a row.

What it measures, in the same process and Ray instance:

* latency (``--samples`` K, default 200; 0 skips it): K sequences one at a time. A durable
  sample is ``TaskHub.start_new`` then ``wait_for_completion``; a plain Ray sample is three
  sequential ``ray.get(ray_say_hello.remote(...))`` calls. The two sides' samples are
  interleaved (ray, durable, ray, durable, ...) so that noise hits both alike; p50 and p99 per
  run, then the median over runs.
* throughput (``--concurrent`` N, default 1,000; 0 skips it): N sequences at once. Durable:
  ``TaskHub.start_new_batch`` of N instances, then wait until none of them is Pending or
  Running (see ``_common.wait_all``: it waits on one unfinished instance at a time, no
  sleeping); wall time from the start call until all are done. Plain Ray: N chains of three
  dependent tasks, each step's ``ObjectRef`` passed to the next task (the same three calls per
  sequence, in order), all 3N tasks submitted at once, then one ``ray.get`` of the N final
  refs. The order of the two sides alternates from run to run. Every output is checked after
  the timed region (exit status 1 on a wrong or missing one).

The user-shaped parts (each off unless asked for; see ``_hello_user.py``) run on a second
hub opened with ``TaskHub``'s defaults (``--shards`` does not apply to them), each next to
plain Ray written with asyncio (N coroutines, each awaiting its three tasks in turn, under
``asyncio.gather``):

* ``--loop N``: a loop of N ``start_new``, then a loop of N ``wait_for_completion``;
* ``--async N``: the asyncio client, ``asyncio.gather`` of N (``start_new_async`` then
  ``wait_for_completion_async``);
* ``--single K``: K hellos one at a time vs K plain Ray sequences of three awaited tasks.

Before the timed runs, an untimed warm-up of each side (10 sequential samples and
min(N, 100) concurrent sequences) starts Ray's workers and the hub.

Output: exactly one JSON line on stdout (the latency fields only with K > 0, the throughput
fields only with N > 0)::

    {"benchmark": "hello", "runs": R, "shards": S, "samples": K, "concurrent": N,
     "ray_p50_ms": .., "ray_p99_ms": .., "durable_p50_ms": .., "durable_p99_ms": ..,
     "ray_p50_ms_runs": [...], ..., "ratio_p50": .., "ratio_p99": ..,
     "ray_seconds": [...], "durable_seconds": [...], "ray_median": x, "durable_median": y,
     "ratio_durable_over_ray": y / x,
     "default_shards": D,                                        # with any user-shaped part
     "loop": N, "loop_ray_median": .., "loop_durable_median": .., "loop_ratio": ..,
     "loop_starts_median": .., (and each run's "*_seconds")     # with --loop
     "async": N, "async_ray_median": .., "async_durable_median": .., "async_ratio": ..,
     "single": K, "single_ray_p50_ms": .., "single_durable_p50_ms": .., "single_ray_p99_ms": ..,
     "single_durable_p99_ms": .., "single_ratio_p50": .., "single_durable_p99_over_p50": ..}

Everything else (progress, Ray's own output) goes to stderr.

Run it from the repository root (``RAY_AUTH_MODE=disabled`` if your Ray needs it)::

    python benchmarks/hello.py                               # latency + 1,000 concurrent
    python benchmarks/hello.py --concurrent 10000 --samples 0  # throughput only
    python benchmarks/hello.py --samples 20 --concurrent 100 --runs 1
    python benchmarks/hello.py --samples 0 --concurrent 0 --loop 1000 --async 1000 --single 200
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Generator
from typing import Any

import _common as common  # benchmarks/ is on sys.path
import _hello_user as user
import ray
from _common import BenchmarkError, log, run_main

from orchestrations import activity, orchestrator
from runtime import OrchestrationRuntimeStatus, TaskHub

CITIES = ("Tokyo", "Seattle", "London")
EXPECTED = [f"Hello {city}!" for city in CITIES]
WARMUP_SAMPLES = 10
WARMUP_CONCURRENT = 100


@activity
def say_hello(city: str) -> str:
    """The trivial activity."""
    return f"Hello {city}!"


@orchestrator
def hello_sequence(ctx: Any) -> Generator[Any, Any, list[str]]:
    """Three activities in sequence; returns the greetings."""
    greetings = []
    for city in CITIES:
        greetings.append((yield ctx.call_activity(say_hello, city)))
    return greetings


@ray.remote
def ray_say_hello(greetings: list[str], city: str) -> list[str]:
    """One step as a plain Ray task: the greetings so far plus this one."""
    return [*greetings, f"Hello {city}!"]


# -- latency -----------------------------------------------------------------------------------


def ray_once() -> float:
    """One plain Ray sequence, three sequential ``ray.get`` calls: seconds."""
    start = time.perf_counter()
    greetings: list[str] = []
    for city in CITIES:
        greetings = ray.get(ray_say_hello.remote(greetings, city))
    elapsed = time.perf_counter() - start
    if greetings != EXPECTED:
        raise BenchmarkError(f"plain Ray sequence returned {greetings!r}")
    return elapsed


def durable_once(hub: TaskHub, timeout: float) -> float:
    """One orchestration started and waited for: seconds."""
    start = time.perf_counter()
    instance_id = hub.start_new(hello_sequence)
    status = hub.wait_for_completion(instance_id, timeout=timeout)
    elapsed = time.perf_counter() - start
    if status.runtime_status != OrchestrationRuntimeStatus.Completed or status.output != EXPECTED:
        raise BenchmarkError(f"orchestration {instance_id} ended {status.runtime_status}: "
                             f"{status.output!r} {status.failure_details}")
    return elapsed


def latency_run(hub: TaskHub, samples: int, timeout: float) -> dict[str, list[float]]:
    """``samples`` interleaved samples of each side: seconds per side."""
    out: dict[str, list[float]] = {"ray": [], "durable": []}
    for _ in range(samples):
        out["ray"].append(ray_once())
        out["durable"].append(durable_once(hub, timeout))
    return out


def latency(hub: TaskHub, args: argparse.Namespace) -> dict[str, Any]:
    """Warm-up, then ``--runs`` latency runs: the JSON line's latency fields."""
    latency_run(hub, WARMUP_SAMPLES, args.timeout)
    per_run: dict[str, list[float]] = {f"{side}_{p}": [] for side in ("ray", "durable") for p in ("p50", "p99")}
    for run in range(args.runs):
        seconds = latency_run(hub, args.samples, args.timeout)
        for side, values in seconds.items():
            for p in (50, 99):
                per_run[f"{side}_p{p}"].append(common.percentile(values, p) * 1000)
        log(f"latency run {run + 1}/{args.runs}: " + ", ".join(f"{k} {v[-1]:.2f} ms" for k, v in per_run.items()))
    fields: dict[str, Any] = {}
    for key, values in per_run.items():
        fields[f"{key}_ms"] = round(statistics.median(values), 3)
        fields[f"{key}_ms_runs"] = [round(v, 3) for v in values]
    for name in ("p50", "p99"):
        fields[f"ratio_{name}"] = common.ratio(fields[f"durable_{name}_ms"], fields[f"ray_{name}_ms"])
    return fields


async def ray_sequence() -> list[str]:
    """One plain Ray sequence as an asyncio user writes it: three tasks awaited in turn."""
    greetings: list[str] = []
    for city in CITIES:
        greetings = await ray_say_hello.remote(greetings, city)
    if greetings != EXPECTED:
        raise BenchmarkError(f"plain Ray sequence returned {greetings!r}")
    return greetings


# -- throughput --------------------------------------------------------------------------------


def ray_concurrent(n: int) -> float:
    """N chains of three dependent plain Ray tasks, all submitted at once: seconds."""
    start = time.perf_counter()
    finals = []
    for _ in range(n):
        ref: Any = []
        for city in CITIES:
            ref = ray_say_hello.remote(ref, city)
        finals.append(ref)
    results = ray.get(finals)
    elapsed = time.perf_counter() - start
    if any(r != EXPECTED for r in results):
        raise BenchmarkError("a plain Ray chain returned the wrong greetings")
    return elapsed


def durable_concurrent(hub: TaskHub, n: int, timeout: float) -> float:
    """N orchestrations started in one batch and waited for: seconds."""
    since = common.utc_now()
    start = time.perf_counter()
    ids = hub.start_new_batch(hello_sequence, [None] * n)
    common.wait_all(hub, since, timeout)
    elapsed = time.perf_counter() - start
    common.check_completed(hub, since, ids, lambda _input: EXPECTED)
    return elapsed


def throughput(hub: TaskHub, args: argparse.Namespace) -> dict[str, Any]:
    """Warm-up, then ``--runs`` runs of each side: the JSON line's throughput fields."""
    n = args.concurrent
    ray_concurrent(min(n, WARMUP_CONCURRENT))
    durable_concurrent(hub, min(n, WARMUP_CONCURRENT), args.timeout)
    seconds: dict[str, list[float]] = {"ray": [], "durable": []}
    for run, side in common.alternating(args.runs, ("ray", "durable")):
        elapsed = ray_concurrent(n) if side == "ray" else durable_concurrent(hub, n, args.timeout)
        seconds[side].append(elapsed)
        log(f"{n} concurrent, run {run + 1}/{args.runs} {side}: {elapsed:.3f} s")
    return {
        **common.durable_vs_ray(seconds),
    }


# -- driver ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = common.make_parser(__doc__)
    parser.add_argument("--samples", type=int, default=200, metavar="K",
                        help="sequential sequences per latency run (0: no latency part)")
    parser.add_argument("--concurrent", type=int, default=1000, metavar="N",
                        help="concurrent sequences per throughput run (0: no throughput part)")
    parser.add_argument("--loop", type=int, default=0, metavar="N",
                        help="a loop of N start_new then N waits, hub defaults (0: skip)")
    parser.add_argument("--async", dest="async_", type=int, default=0, metavar="N",
                        help="N asyncio-client sequences under asyncio.gather, hub defaults (0: skip)")
    parser.add_argument("--single", type=int, default=0, metavar="K",
                        help="K hellos one at a time vs plain Ray asyncio, hub defaults (0: skip)")
    args = parser.parse_args(argv)
    counts = (args.samples, args.concurrent, args.loop, args.async_, args.single)
    if args.runs < 1 or args.shards < 1 or min(counts) < 0:
        parser.error("--runs and --shards must be positive, --samples, --concurrent, --loop, --async, --single >= 0")
    if not any(counts):
        parser.error("nothing to do: every part is 0")
    return args


def benchmark(args: argparse.Namespace, data_dir: str) -> dict[str, Any]:
    """Latency part, then throughput part; returns the JSON line's fields."""
    result: dict[str, Any] = {"benchmark": "hello", "runs": args.runs, "shards": args.shards,
                              "samples": args.samples, "concurrent": args.concurrent}
    with common.ray_session():
        if args.samples or args.concurrent:
            with common.open_hub("hello-bench", data_dir, args.shards) as hub:
                if args.samples:
                    result.update(latency(hub, args))
                if args.concurrent:
                    result.update(throughput(hub, args))
        if args.loop or args.async_ or args.single:
            result.update(user_shaped(args, data_dir))
    return result


def user_shaped(args: argparse.Namespace, data_dir: str) -> dict[str, Any]:
    """The ``--loop``, ``--async`` and ``--single`` parts on a hub at its defaults."""
    shape = (hello_sequence, EXPECTED, ray_sequence)
    with TaskHub("hello-user", data_dir=data_dir) as hub:
        fields: dict[str, Any] = {"default_shards": hub.num_shards}
        if args.single:
            fields.update(user.single_part(hub, *shape, args.single, args.runs, args.timeout))
        if args.loop:
            fields.update(user.loop_part(hub, *shape, args.loop, args.runs, args.timeout))
        if args.async_:
            fields.update(user.async_part(hub, *shape, args.async_, args.runs, args.timeout))
    return fields


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse, run, print the JSON line."""
    args = parse_args(argv)
    return run_main("hello", args.data_dir, lambda data_dir: benchmark(args, data_dir))


if __name__ == "__main__":
    sys.exit(main())
