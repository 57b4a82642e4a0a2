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

Memory: while the runs go on, a background thread sums the resident memory (VmRSS) of the
hub's shard host processes (``/proc/<pid>/cmdline`` starting with ``ray::ShardHost``, below this
driver's Ray) every 0.25 s and keeps the largest sum; after the last run, before the hub
closes, the peaks each host's kernel recorded (VmHWM) are summed. The hosts live for the whole
script, so that sum covers the warm-up and every run.

Output: exactly one JSON line on stdout::

    {"benchmark": "fanout", "activities": N, "runs": R, "shards": S,
     "ray_seconds": [...], "durable_seconds": [...], "ray_median": x, "durable_median": y,
     "ratio_durable_over_ray": y / x, "always_replay": false,
     "shard_hosts": S, "shard_hosts_peak_rss_bytes": sum of VmHWM,
     "shard_hosts_peak_rss_sampled_bytes": largest sampled sum of VmRSS}

Everything else (progress, Ray's own output) goes to stderr.

Run it from the repository root::

    python benchmarks/fanout.py --activities 10000
    python benchmarks/fanout.py --activities 100000
    python benchmarks/fanout.py --activities 1000 --runs 1 --shards 2 --always-replay --progress
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Generator
from typing import Any

import _common as common  # benchmarks/ is on sys.path
import ray
from _common import BenchmarkError, log, run_main

from orchestrations import activity, orchestrator
from runtime import OrchestrationRuntimeStatus, TaskHub

WARMUP_ACTIVITIES = 100


@activity
def double(x: int) -> int:
    """The trivial activity."""
    return x * 2


@ray.remote
def ray_double(x: int) -> int:
    """The same work as a plain Ray task."""
    return x * 2


@orchestrator
def fanout(ctx: Any) -> Generator[Any, Any, int]:
    """Fan out ``input`` activities at once, fan in, return the sum."""
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
    """The command line (see the module docstring)."""
    parser = common.make_parser(__doc__)
    parser.add_argument("--activities", type=int, default=10_000, metavar="N", help="activities per run")
    parser.add_argument("--always-replay", action="store_true", help="open the hub with always_replay=True")
    parser.add_argument("--progress", action="store_true", help="draw the hub's progress bar on stderr")
    args = parser.parse_args(argv)
    common.require_positive(parser, args, "activities", "runs", "shards")
    return args


def benchmark(args: argparse.Namespace, data_dir: str) -> dict[str, Any]:
    """Warm up, then the timed runs of both sides; returns the JSON line's fields."""
    n = args.activities
    seconds: dict[str, list[float]] = {"ray": [], "durable": []}
    results: dict[str, Any] = {}
    with (
        common.ray_session(),
        common.open_hub("fanout-bench", data_dir, args.shards, always_replay=args.always_replay) as hub,
    ):
        with common.ShardHostMemory() as memory:
            warm = min(n, WARMUP_ACTIVITIES)
            run_ray(warm)
            run_durable(hub, warm, args.timeout, progress=False)
            for run, side in common.alternating(args.runs, ("ray", "durable")):
                if side == "ray":
                    elapsed, results[side] = run_ray(n)
                else:
                    elapsed, results[side] = run_durable(hub, n, args.timeout, args.progress)
                seconds[side].append(elapsed)
                log(f"run {run + 1}/{args.runs} {side}: {elapsed:.3f} s")
                if len(results) == 2 and results["durable"] != results["ray"]:
                    raise BenchmarkError(f"run {run + 1}: durable sum {results['durable']!r} "
                                         f"!= ray sum {results['ray']!r}")
            hosts, hwm = memory.peak_hwm()
        log(f"shard hosts: {hosts}, peak RSS summed {hwm / 2**20:.1f} MiB "
            f"(largest sampled sum {memory.peak_sampled / 2**20:.1f} MiB over {memory.samples} samples)")
    return {
        "benchmark": "fanout",
        "activities": n,
        "runs": args.runs,
        "shards": args.shards,
        **common.durable_vs_ray(seconds),
        "always_replay": args.always_replay,
        "shard_hosts": hosts,
        "shard_hosts_peak_rss_bytes": hwm,
        "shard_hosts_peak_rss_sampled_bytes": memory.peak_sampled,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_main("fanout", args.data_dir, lambda data_dir: benchmark(args, data_dir))


if __name__ == "__main__":
    sys.exit(main())
