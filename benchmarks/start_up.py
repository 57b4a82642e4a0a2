"""Start-up benchmark: the README's quick start (``python hello.py``), timed in a fresh process,
next to plain Ray's first tasks in a fresh process.

Each run starts a new Python process (``sys.executable``) that does what the quick start does:

* ``durable`` side: ``import ray``; ``ray.init()`` (a new local Ray); define the hello sequence;
  ``TaskHub("quickstart", data_dir=...)`` at its defaults (``hub_open``); ``start_new`` +
  ``wait_for_completion`` of one hello sequence (``first_result``); ``hub.close()``.
* ``ray`` side: ``import ray``; ``ray.init()``; the same three "Hello" steps as a chain of three
  awaited ``@ray.remote`` tasks (``first_result``: plain Ray's first result after ``ray.init``).

The two sides alternate (durable first in run 1, ray first in run 2, ...), so both see the same
machine. Every child uses its own new local Ray (``address="local"``: never a Ray already running
on this machine) and its own fresh data directory. Times, per child, in seconds:
``imports`` (process start to ``ray`` and ``runtime`` imported), ``ray_init``, ``hub_open``
(durable only), ``first_result``, and ``total`` (the parent's wall time from spawning the child
to its exit, including Ray's shutdown).

Output: exactly one JSON line on stdout::

    {"benchmark": "start_up", "runs": R, "shards": S,
     "durable_ray_init_median": .., "durable_hub_open_median": .., "durable_first_result_median": ..,
     "durable_open_plus_first_median": .., "durable_total_median": .., "durable_imports_median": ..,
     "ray_ray_init_median": .., "ray_first_result_median": .., "ray_total_median": ..,
     "durable": [per-run dicts], "ray": [per-run dicts]}

(``shards`` is the hub's default shard count on this machine.) Everything else goes to stderr.

Run it from the repository root (``RAY_AUTH_MODE=disabled`` if your Ray needs it)::

    python benchmarks/start_up.py
    python benchmarks/start_up.py --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

#: the per-child timings whose medians the JSON line reports, per side
FIELDS = {
    "durable": ("imports", "ray_init", "hub_open", "first_result", "open_plus_first", "total"),
    "ray": ("imports", "ray_init", "first_result", "total"),
}
CITIES = ("Tokyo", "Seattle", "London")


def child_durable(data_dir: str) -> dict[str, Any]:
    """The quick start, timed (runs in the child process)."""
    import logging

    import ray

    from orchestrations import OrchestrationContext, activity, orchestrator
    from runtime import OrchestrationRuntimeStatus, TaskHub

    imported = time.perf_counter()

    @activity
    def say_hello(name: str) -> str:
        return f"Hello {name}!"

    @orchestrator
    def hello_sequence(context: OrchestrationContext) -> Any:
        outputs = []
        for city in CITIES:
            outputs.append((yield context.call_activity(say_hello, city)))
        return outputs

    ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
    inited = time.perf_counter()
    hub = TaskHub("quickstart", data_dir=data_dir)
    opened = time.perf_counter()
    iid = hub.start_new(hello_sequence, instance_id="hello-1")
    status = hub.wait_for_completion(iid, timeout=120)
    first = time.perf_counter()
    if status.runtime_status is not OrchestrationRuntimeStatus.Completed or status.output != [
        f"Hello {c}!" for c in CITIES
    ]:
        raise RuntimeError(f"the hello sequence ended {status.runtime_status}: {status.output!r}")
    shards = hub.num_shards
    hub.close()
    ray.shutdown()
    return {
        "imports": imported, "ray_init": inited - imported, "hub_open": opened - inited,
        "first_result": first - opened, "open_plus_first": first - inited, "shards": shards,
    }


def child_ray() -> dict[str, Any]:
    """Plain Ray's first results after ``ray.init``, timed (runs in the child process)."""
    import logging

    import ray

    import runtime  # noqa: F401  (the same imports as the durable side)

    imported = time.perf_counter()

    @ray.remote
    def say_hello(name: str) -> str:
        return f"Hello {name}!"

    ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
    inited = time.perf_counter()
    outputs = [ray.get(say_hello.remote(city)) for city in CITIES]
    first = time.perf_counter()
    if outputs != [f"Hello {c}!" for c in CITIES]:
        raise RuntimeError(f"plain Ray returned {outputs!r}")
    ray.shutdown()
    return {"imports": imported, "ray_init": inited - imported, "first_result": first - inited}


def run_child(side: str, data_dir: str) -> dict[str, Any]:
    """Spawn one child for ``side``; its timings plus ``total`` (and ``imports`` measured from
    the spawn)."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    spawned = time.perf_counter()
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", side, "--data-dir", data_dir],
        stdout=subprocess.PIPE, env=env, check=True, text=True,
    ).stdout
    total = time.perf_counter() - spawned
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    # perf_counter is system-wide on Linux (CLOCK_MONOTONIC): the child's stamp compares to ours
    result["imports"] = result["imports"] - spawned
    result["total"] = total
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}


def benchmark(runs: int) -> dict[str, Any]:
    """Alternate the two sides ``runs`` times; returns the JSON line's fields."""
    per_side: dict[str, list[dict[str, Any]]] = {"durable": [], "ray": []}
    for run in range(runs):
        for side in ("durable", "ray") if run % 2 == 0 else ("ray", "durable"):
            data_dir = tempfile.mkdtemp(prefix="ray-durable-start_up-")
            try:
                timing = run_child(side, data_dir)
            finally:
                shutil.rmtree(data_dir, ignore_errors=True)
            per_side[side].append(timing)
            print(f"run {run + 1}/{runs} {side}: {timing}", file=sys.stderr, flush=True)
    result: dict[str, Any] = {"benchmark": "start_up", "runs": runs, "shards": per_side["durable"][0]["shards"]}
    for side, fields in FIELDS.items():
        for field in fields:
            result[f"{side}_{field}_median"] = round(statistics.median(t[field] for t in per_side[side]), 4)
    return {**result, **per_side}


def main(argv: list[str] | None = None) -> int:
    """Entry point: the parent (prints the JSON line) or, with ``--child``, one timed child."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, metavar="R", help="fresh processes per side")
    parser.add_argument("--child", choices=("durable", "ray"), help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be positive")
    if args.child is not None:
        result_out = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)  # Ray's own output goes to stderr; stdout holds the one line
        timing = child_durable(args.data_dir) if args.child == "durable" else child_ray()
        result_out.write(json.dumps(timing) + "\n")
        result_out.flush()
        return 0
    print(json.dumps(benchmark(args.runs)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
