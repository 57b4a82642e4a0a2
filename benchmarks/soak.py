"""Soak benchmark: does anything grow without bound while a hub runs for a long time?

Runs, for ``--minutes`` (default 10), at the hub's defaults:

* one eternal orchestration ``soak_eternal``: each round calls an activity, waits on a short
  durable timer, signals a counter entity and continues as new (so its history is replaced
  every round);
* a stream of transfers, written as a user would: one ``soak_transfer`` orchestration per
  transfer (``start_new`` in a loop, at most ``--in-flight`` unfinished at a time), each a
  critical section over two accounts on (usually) different shards; finished transfers are
  purged every sampling interval (the retention any long-running application applies).

Every ``--sample-seconds`` it records the shard files' size on disk (with their WAL), the rows
of their ``delivered`` tables (the de-duplication record of messages received), the instances
and entities in them, and the shard hosts' resident memory. After ``--warmup-minutes`` the
figures should be flat: the JSON line gives each figure's first sample after warm-up, its last,
and the growth between them, plus ``flat`` (every growth within ``--tolerance``, default 10%;
row counts may also move by a few rows per transfer in flight).
Totals are conserved and checked at the end.

There is no plain-Ray side: the figure is growth over time, not speed (the transfer rate is
reported for information).

Output: exactly one JSON line on stdout; progress on stderr. Run from the repository root::

    make soak
    python benchmarks/soak.py --minutes 2 --warmup-minutes 0.5 --sample-seconds 10
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import random
import sqlite3
import sys
import time
from datetime import timedelta
from typing import Any

import _common as common  # benchmarks/ is on sys.path
from _common import BenchmarkError, log, run_main

from entities import EntityContext, EntityId, entity
from orchestrations import InstanceNotFoundError, activity, orchestrator
from runtime import OrchestrationRuntimeStatus, TaskHub

ACCOUNTS = 50
INITIAL = 1_000


@entity(name="SoakAccount")
class SoakAccount:
    """One account."""

    def __init__(self) -> None:
        self.balance = 0

    def add(self, amount: int) -> int:
        self.balance += amount
        return self.balance

    def get(self) -> int:
        return self.balance


@entity(name="SoakRounds")
def soak_rounds(ctx: EntityContext) -> None:
    """Counts the eternal orchestration's rounds."""
    ctx.set_state(ctx.get_state(lambda: 0) + 1)


@activity(name="soak_tick")
def soak_tick(n: int) -> int:
    return n + 1


@orchestrator(name="soak_eternal")
def soak_eternal(ctx: Any) -> Any:
    """Round n: an activity, a 0.2 s timer, a signal, then continue as new with n + 1."""
    n = yield ctx.call_activity(soak_tick, ctx.get_input())
    yield ctx.create_timer(ctx.current_utc_datetime + timedelta(seconds=0.2))
    ctx.signal_entity(EntityId("SoakRounds", "eternal"), "tick")
    ctx.continue_as_new(n)


@orchestrator(name="soak_transfer")
def soak_transfer(ctx: Any) -> Any:
    """Move ``amount`` from ``src`` to ``dst`` if ``src`` has it (a critical section)."""
    src, dst, amount = ctx.get_input()
    a, b = EntityId("SoakAccount", src), EntityId("SoakAccount", dst)
    with (yield ctx.lock_entities([a, b])):
        if (yield ctx.call_entity(a, "get")) < amount:
            return False
        yield ctx.call_entity(a, "add", -amount)
        yield ctx.call_entity(b, "add", amount)
    return True


def shard_files(data_dir: str) -> list[str]:
    return sorted(glob.glob(os.path.join(data_dir, "*", "shard-*.sqlite")))


def file_figures(data_dir: str) -> dict[str, int]:
    """Bytes on disk (file + WAL) and row counts of the shard files, read without writing."""
    size = delivered = instances = entities = 0
    for path in shard_files(data_dir):
        for part in (path, path + "-wal"):
            with contextlib.suppress(OSError):
                size += os.path.getsize(part)
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as db:
            delivered += db.execute("SELECT count(*) FROM delivered").fetchone()[0]
            instances += db.execute("SELECT count(*) FROM instances").fetchone()[0]
            entities += db.execute("SELECT count(*) FROM entities").fetchone()[0]
    return {"file_bytes": size, "delivered_rows": delivered, "instances": instances, "entities": entities}


def host_rss() -> int:
    return common.ShardHostMemory._sum("VmRSS")


def finish(hub: TaskHub, instance_id: str, timeout: float) -> None:
    """Wait for a transfer; one already purged had completed (only Completed ones are)."""
    with contextlib.suppress(InstanceNotFoundError):
        status = hub.wait_for_completion(instance_id, timeout=timeout)
        if status.runtime_status is not OrchestrationRuntimeStatus.Completed:
            raise BenchmarkError(f"transfer {instance_id} ended {status.runtime_status}: {status.failure_details}")


def grown(first: int, last: int) -> float:
    """Relative growth from ``first`` to ``last`` (0.1: 10% more)."""
    return common.ratio(last - first, max(first, 1))


def parse(argv: list[str]) -> argparse.Namespace:
    parser = common.make_parser(__doc__, runs=1, shards=0)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the load runs")
    parser.add_argument("--warmup-minutes", type=float, default=2.0, help="growth is measured after this")
    parser.add_argument("--sample-seconds", type=float, default=30.0, help="sampling (and purging) interval")
    parser.add_argument("--in-flight", type=int, default=32, help="unfinished transfers at most")
    parser.add_argument("--tolerance", type=float, default=0.10, help="growth counted as flat")
    args = parser.parse_args(argv)
    if args.minutes <= args.warmup_minutes or args.sample_seconds <= 0 or args.in_flight < 1:
        parser.error("need --minutes > --warmup-minutes, --sample-seconds > 0, --in-flight >= 1")
    return args


def run(args: argparse.Namespace, data_dir: str) -> dict[str, Any]:
    rng = random.Random(7)
    keys = [f"a{i:03d}" for i in range(ACCOUNTS)]
    options = {} if args.shards < 1 else {"num_shards": args.shards}
    with common.ray_session(), contextlib.closing(TaskHub("soak", data_dir=data_dir, **options)) as hub:
        for key in keys:
            hub.signal_entity(EntityId("SoakAccount", key), "add", INITIAL)
        eternal = hub.start_new(soak_eternal, "soak-eternal", 0)
        started = time.monotonic()
        end = started + args.minutes * 60
        next_sample = started
        in_flight: list[str] = []
        samples: list[dict[str, Any]] = []
        transfers = 0
        while time.monotonic() < end:
            while len(in_flight) < args.in_flight:
                src, dst = rng.sample(keys, 2)
                in_flight.append(hub.start_new(soak_transfer, client_input=(src, dst, rng.randint(1, 50))))
                transfers += 1
            finish(hub, in_flight.pop(0), args.timeout)
            if time.monotonic() >= next_sample:
                cutoff = common.utc_now() - timedelta(seconds=5)
                hub.purge_instance_history_by(
                    created_time_to=cutoff, runtime_status=[OrchestrationRuntimeStatus.Completed]
                )
                sample = {"t": round(time.monotonic() - started, 1), "transfers": transfers, "rss_bytes": host_rss()}
                sample.update(file_figures(data_dir))
                samples.append(sample)
                log(f"soak: {sample}")
                next_sample += args.sample_seconds
        for iid in in_flight:
            finish(hub, iid, args.timeout)
        total = sum(hub.read_entity_state(EntityId("SoakAccount", k)).entity_state.balance for k in keys)
        if total != ACCOUNTS * INITIAL:
            raise BenchmarkError(f"total balance {total} != {ACCOUNTS * INITIAL}")
        rounds = hub.read_entity_state(EntityId("SoakRounds", "eternal")).entity_state
        status = hub.get_status(eternal)
        if status is None or status.runtime_status is not OrchestrationRuntimeStatus.Running:
            raise BenchmarkError(f"the eternal orchestration is not running: {status}")
        hub.terminate(eternal, "soak over")
    after_warmup = [s for s in samples if s["t"] >= args.warmup_minutes * 60]
    if len(after_warmup) < 2:
        raise BenchmarkError("fewer than two samples after warm-up: lengthen --minutes or shorten --sample-seconds")
    first, last = after_warmup[0], after_warmup[-1]
    growth = {
        key: {"first": first[key], "last": last[key], "growth": grown(first[key], last[key])}
        for key in ("file_bytes", "delivered_rows", "rss_bytes", "instances")
    }
    # row counts move with what is in flight when a sample is taken: a few messages per
    # unfinished transfer are not growth
    slack = {"delivered_rows": 4 * args.in_flight, "instances": 2 * args.in_flight}
    flat = {
        key: g["growth"] <= args.tolerance or g["last"] - g["first"] <= slack.get(key, 0) for key, g in growth.items()
    }
    elapsed = last["t"] - first["t"]
    return {
        "benchmark": "soak",
        "minutes": args.minutes,
        "warmup_minutes": args.warmup_minutes,
        "transfers": transfers,
        "transfers_per_second": round((last["transfers"] - first["transfers"]) / elapsed, 1) if elapsed else None,
        "eternal_rounds": rounds,
        "total_conserved": True,
        "growth_after_warmup": growth,
        "flat": all(flat.values()),
        "flat_by_figure": flat,
        "samples": samples,
    }


def main(argv: list[str]) -> int:
    args = parse(argv)
    return run_main("soak", args.data_dir, lambda data_dir: run(args, data_dir))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
