"""Fan-out/fan-in benchmark: N trivial activities in one orchestration vs N plain Ray tasks.

What it measures, per run and in the same process and Ray instance:

* ``ray``: the non-durable baseline. N ``@ray.remote`` tasks doing ``x * 2`` are submitted
  all at once, gathered with one ``ray.get`` and summed; wall time from the first submit to
  the sum.
* ``durable``: one orchestration that does
  ``yield ctx.task_all([ctx.call_activity(double, i) for i in range(n)])`` and returns the
  sum; wall time from ``TaskHub.start_new`` to ``wait_for_completion`` returning. The hub is
  opened once, before any timing; its result must equal the baseline's sum (exit status 1
  otherwise).

The order of the two alternates from run to run (run 0: ray first, run 1: durable first, ...)
to be fair on a noisy machine. Before the timed runs, one small untimed round of each warms
up Ray's worker processes and the hub.

Output: exactly one JSON line on stdout::

    {"benchmark": "fanout", "activities": N, "runs": R, "shards": S,
     "ray_seconds": [...], "durable_seconds": [...], "ray_median": x, "durable_median": y,
     "ratio_durable_over_ray": y / x, "always_replay": false}

Everything else (progress, Ray's own output) goes to stderr.

Run it from the repository root::

    python benchmarks/fanout.py --activities 10000
    python benchmarks/fanout.py --activities 1000 --runs 1 --shards 2 --always-replay --progress
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections.abc import Generator
from typing import Any

import ray
from _common import BenchmarkError, log, run_main  # benchmarks/ is on sys.path

from orchestrations import activity, orchestrator
from runtime import OrchestrationRuntimeStatus, TaskHub

WARMUP_ACTIVITIES = 100


@activity
def double(x: int) -> int:
    return x * 2


@ray.remote
def ray_double(x: int) -> int:
    return x * 2


@orchestrator
def fanout(ctx: Any) -> Generator[Any, Any, int]:
    n = ctx.get_input()
    results = yield ctx.task_all([ctx.call_activity(double, i) for i in range(n)])
    return sum(results)


def run_ray(n: int) -> tuple[float, int]:
    """Plain Ray baseline: (seconds, sum)."""
    start = time.perf_counter()
    refs = [ray_double.remote(i) for i in range(n)]
    total = sum(ray.get(refs))
    return time.perf_counter() - start, total


def run_durable(hub: TaskHub, n: int, timeout: float, progress: bool) -> tuple[float, int]:
    """One fan-out orchestration: (seconds, its output)."""
    start = time.perf_counter()
    instance_id = hub.start_new(fanout, client_input=n)
    status = hub.wait_for_completion(instance_id, timeout=timeout, show_progress=progress)
    elapsed = time.perf_counter() - start
    if status.runtime_status != OrchestrationRuntimeStatus.Completed:
        raise BenchmarkError(f"orchestration {instance_id} ended {status.runtime_status}: {status.failure_details}")
    return elapsed, status.output


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--activities", type=int, default=10_000, metavar="N", help="activities per run")
    parser.add_argument("--runs", type=int, default=3, metavar="R", help="timed runs of each side")
    parser.add_argument("--shards", type=int, default=4, metavar="S", help="task hub shards")
    parser.add_argument("--data-dir", default=None, help="hub data directory (default: a fresh temp dir, removed)")
    parser.add_argument("--always-replay", action="store_true", help="open the hub with always_replay=True")
    parser.add_argument("--progress", action="store_true", help="draw the hub's progress bar on stderr")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for one orchestration")
    args = parser.parse_args(argv)
    if args.activities < 1 or args.runs < 1 or args.shards < 1:
        parser.error("--activities, --runs and --shards must be positive")
    return args


def benchmark(args: argparse.Namespace, data_dir: str) -> dict[str, Any]:
    n = args.activities
    ray_seconds: list[float] = []
    durable_seconds: list[float] = []
    ray.init(include_dashboard=False, logging_level=logging.WARNING)
    try:
        hub = TaskHub("fanout-bench", data_dir=data_dir, num_shards=args.shards, always_replay=args.always_replay)
        try:
            warm = min(n, WARMUP_ACTIVITIES)
            run_ray(warm)
            run_durable(hub, warm, args.timeout, progress=False)
            for run in range(args.runs):
                order = ("ray", "durable") if run % 2 == 0 else ("durable", "ray")
                expected: int | None = None
                output: Any = None
                for side in order:
                    if side == "ray":
                        seconds, expected = run_ray(n)
                        ray_seconds.append(seconds)
                    else:
                        seconds, output = run_durable(hub, n, args.timeout, args.progress)
                        durable_seconds.append(seconds)
                    log(f"run {run + 1}/{args.runs} {side}: {seconds:.3f} s")
                if output != expected:
                    raise BenchmarkError(f"run {run + 1}: durable sum {output!r} != ray sum {expected!r}")
        finally:
            hub.close()
    finally:
        ray.shutdown()
    ray_median = statistics.median(ray_seconds)
    durable_median = statistics.median(durable_seconds)
    return {
        "benchmark": "fanout",
        "activities": n,
        "runs": args.runs,
        "shards": args.shards,
        "ray_seconds": [round(s, 4) for s in ray_seconds],
        "durable_seconds": [round(s, 4) for s in durable_seconds],
        "ray_median": round(ray_median, 4),
        "durable_median": round(durable_median, 4),
        "ratio_durable_over_ray": round(durable_median / ray_median, 3),
        "always_replay": args.always_replay,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_main("fanout", args.data_dir, lambda data_dir: benchmark(args, data_dir))


if __name__ == "__main__":
    sys.exit(main())
