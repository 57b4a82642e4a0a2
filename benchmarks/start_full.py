"""Start-into-a-full-hub benchmark: starting M orchestrations into an empty hub vs into a hub
that already holds E completed ones (defaults: M = 10,000, E = 100,000), with plain Ray
tasks as the baseline.

The orchestration is ``trivial``, a plain function (no generator) that returns its input, so
the time is that of starting, running one episode and completing: the cost of the hub's
bookkeeping, which must not grow with the instances it already holds.

Setup (untimed): two hubs are open side by side in the same Ray, ``start-empty`` and
``start-full``. The full one is filled with E instances of ``trivial``, started with
``TaskHub.start_new_batch`` in chunks of ``--chunk`` (default 5,000), each chunk waited for
before the next; the time this took is reported as ``fill_seconds``.

What it measures, per run:

* ``empty`` / ``full``: ``TaskHub.start_new_batch`` of M instances into that hub, then wait
  until none of them is Pending or Running (``_common.wait_all``: it waits on one unfinished
  instance at a time, no sleeping); wall time from the start call until all are done. Then,
  untimed, every output is checked and the M new instances are purged again, so the empty hub
  is empty and the full one holds exactly E before every run.
* ``ray``: the non-durable baseline (for scale only): M trivial ``@ray.remote`` tasks
  submitted at once, then one ``ray.get``.

The order of the three rotates from run to run. Before the timed runs, an untimed round of
min(M, 100) on each side warms up Ray's workers and both hubs.

Output: exactly one JSON line on stdout::

    {"benchmark": "start_full", "existing": E, "new": M, "runs": R, "shards": S,
     "fill_seconds": .., "empty_seconds": [...], "full_seconds": [...], "ray_seconds": [...],
     "empty_median": .., "full_median": .., "ray_median": ..,
     "slowdown_full_over_empty": full / empty, "ratio_empty_over_ray": ..,
     "ratio_full_over_ray": ..}

Everything else (progress, Ray's own output) goes to stderr.

Run it from the repository root (``RAY_AUTH_MODE=disabled`` if your Ray needs it)::

    python benchmarks/start_full.py
    python benchmarks/start_full.py --existing 5000 --new 1000 --runs 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

import _common as common  # benchmarks/ is on sys.path
import ray
from _common import BenchmarkError, log, run_main

from orchestrations import orchestrator
from runtime import TaskHub

WARMUP = 100


@orchestrator
def trivial(ctx: Any) -> Any:
    """A plain-function orchestrator: completes in its first episode with its input."""
    return ctx.get_input()


@ray.remote
def ray_trivial(x: int) -> int:
    """The baseline's trivial task."""
    return x


def run_ray(n: int) -> float:
    """N trivial plain Ray tasks at once: seconds."""
    start = time.perf_counter()
    results = ray.get([ray_trivial.remote(i) for i in range(n)])
    elapsed = time.perf_counter() - start
    if results != list(range(n)):
        raise BenchmarkError("plain Ray tasks returned the wrong values")
    return elapsed


def start_and_wait(hub: TaskHub, n: int, timeout: float) -> tuple[float, Any]:
    """Start N ``trivial`` instances in one batch and wait for all: (seconds, the start
    time they were created after)."""
    since = common.utc_now()
    start = time.perf_counter()
    ids = hub.start_new_batch(trivial, range(n))
    common.wait_all(hub, since, timeout)
    elapsed = time.perf_counter() - start
    common.check_completed(hub, since, ids, lambda x: x)
    return elapsed, since


def run_durable(hub: TaskHub, n: int, timeout: float) -> float:
    """One timed round into ``hub``, then (untimed) purge what it started: seconds."""
    elapsed, since = start_and_wait(hub, n, timeout)
    purged = hub.purge_instance_history_by(created_time_from=since).instances_deleted
    if purged != n:
        raise BenchmarkError(f"purged {purged} instances, expected {n}")
    return elapsed


def fill(hub: TaskHub, existing: int, chunk: int, timeout: float) -> float:
    """Start and complete ``existing`` instances in chunks: seconds."""
    start = time.perf_counter()
    done = 0
    while done < existing:
        size = min(chunk, existing - done)
        start_and_wait(hub, size, timeout)
        done += size
        log(f"fill: {done}/{existing} completed ({time.perf_counter() - start:.1f} s)")
    return time.perf_counter() - start


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = common.make_parser(__doc__)
    parser.add_argument("--existing", type=int, default=100_000, metavar="E",
                        help="completed instances in the full hub")
    parser.add_argument("--new", type=int, default=10_000, metavar="M", help="instances started per timed round")
    parser.add_argument("--chunk", type=int, default=5000, help="instances per start_new_batch while filling")
    args = parser.parse_args(argv)
    common.require_positive(parser, args, "existing", "new", "chunk", "runs", "shards")
    return args


def benchmark(args: argparse.Namespace, data_dir: str) -> dict[str, Any]:
    """Fill, warm up, then the timed runs of the three sides; returns the JSON line's fields."""
    seconds: dict[str, list[float]] = {"ray": [], "empty": [], "full": []}
    with (
        common.ray_session(),
        common.open_hub("start-empty", os.path.join(data_dir, "empty"), args.shards) as empty,
        common.open_hub("start-full", os.path.join(data_dir, "full"), args.shards) as full,
    ):
        fill_seconds = fill(full, args.existing, args.chunk, args.timeout)
        hubs = {"empty": empty, "full": full}
        warm = min(args.new, WARMUP)
        run_ray(warm)
        for hub in hubs.values():
            run_durable(hub, warm, args.timeout)
        for run, side in common.alternating(args.runs, ("ray", "empty", "full")):
            if side == "ray":
                elapsed = run_ray(args.new)
            else:
                elapsed = run_durable(hubs[side], args.new, args.timeout)
            seconds[side].append(elapsed)
            log(f"run {run + 1}/{args.runs} {side}: {elapsed:.3f} s")
    medians = {side: statistics.median(values) for side, values in seconds.items()}
    return {
        "benchmark": "start_full",
        "existing": args.existing,
        "new": args.new,
        "runs": args.runs,
        "shards": args.shards,
        "fill_seconds": round(fill_seconds, 3),
        **common.median_fields("empty", seconds["empty"]),
        **common.median_fields("full", seconds["full"]),
        **common.median_fields("ray", seconds["ray"]),
        "slowdown_full_over_empty": common.ratio(medians["full"], medians["empty"]),
        "ratio_empty_over_ray": common.ratio(medians["empty"], medians["ray"]),
        "ratio_full_over_ray": common.ratio(medians["full"], medians["ray"]),
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse, run, print the JSON line."""
    args = parse_args(argv)
    return run_main("start_full", args.data_dir, lambda data_dir: benchmark(args, data_dir))


if __name__ == "__main__":
    sys.exit(main())
