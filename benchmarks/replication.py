"""Hello latency and locked-transfer throughput in each durability mode, next to local.

For each mode, a hub at its defaults (``num_shards`` left to the hub) is opened in this one
process and measured the way a user calls it:

* one hello sequence alone (``start_new`` + ``wait_for_completion``), ``--samples`` times,
  interleaved with plain Ray's three awaited tasks (the same baseline as ``hello.py --single``):
  p50 and p99 of each;
* ``--transfers`` transfer orchestrations over ``--accounts`` accounts (a loop of ``start_new``,
  each a ``with (yield ctx.lock_entities([a, b]))`` read-modify-write, as in ``bank.py --shape
  orchestrations``): transfers per second, the total checked and no lock left.

The modes: ``local`` (no replica), ``async`` and ``replicated`` to a ``file://`` replica, and
``replicated`` to S3 (moto's server on 127.0.0.1, started here: the figures include what a
local S3 stand-in costs, not a real bucket's round trips). Each mode's figures are the medians of
``--runs`` runs; plain Ray's run beside every mode's, so each ratio is from the same moment.
Prints one JSON line (progress to stderr)::

    python benchmarks/replication.py
    python benchmarks/replication.py --modes local replicated-file --samples 50 --runs 1
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import statistics
import sys
import time
from typing import Any

import _common as common  # benchmarks/ is on sys.path
import bank
import hello
from _common import log, run_main

from runtime import TaskHub

MODES = ("local", "async-file", "replicated-file", "replicated-s3")


def hub_options(mode: str, work: str, endpoint: str | None) -> dict[str, Any]:
    """``TaskHub`` keywords of ``mode``."""
    if mode == "local":
        return {}
    durability, where = mode.split("-")
    if where == "file":
        return {"replica": f"file://{work}/replica-{mode}", "durability": durability}
    return {"replica": f"s3://bench/{mode}?endpoint={endpoint}&region=us-east-1", "durability": durability}


def measure_mode(mode: str, args: argparse.Namespace, work: str, endpoint: str | None) -> dict[str, Any]:
    """One mode: hello latency (with plain Ray's beside it) and transfer throughput, per run."""
    keys = bank.account_keys(args.accounts)
    rng = random.Random(args.seed)
    transfers = bank.make_transfers(keys, args.transfers, args.max_amount, rng)
    data_dir = os.path.join(work, mode)
    begin = time.perf_counter()
    per_run: dict[str, list[float]] = {k: [] for k in ("p50", "p99", "ray_p50", "ray_p99", "tps")}
    with TaskHub(f"repl-{mode}", data_dir=data_dir, **hub_options(mode, work, endpoint)) as hub:
        opened = time.perf_counter() - begin
        bank.setup_durable(hub, keys, args.initial_balance, timeout=120)
        hello.latency_run(hub, hello.WARMUP_SAMPLES, args.timeout)
        for run in range(args.runs):
            seconds = hello.latency_run(hub, args.samples, args.timeout)
            for side, key in (("durable", ""), ("ray", "ray_")):
                per_run[f"{key}p50"].append(common.percentile(seconds[side], 50) * 1000)
                per_run[f"{key}p99"].append(common.percentile(seconds[side], 99) * 1000)
            elapsed, _ = bank.run_orchestrations(hub, transfers, "loop", args.timeout)
            bank.check_balances(bank.read_balances(hub, keys), args.initial_balance * args.accounts, mode)
            bank.check_unlocked(hub)
            per_run["tps"].append(len(transfers) / elapsed)
            log(f"{mode} run {run + 1}/{args.runs}: hello p50 {per_run['p50'][-1]:.1f} ms "
                f"(plain Ray {per_run['ray_p50'][-1]:.1f} ms), p99 {per_run['p99'][-1]:.1f} ms, "
                f"{per_run['tps'][-1]:.0f} transfers/s")
        shards = hub.num_shards
    out = {f"{k}_median": round(statistics.median(v), 3) for k, v in per_run.items()}
    out |= {f"{k}_runs": [round(x, 3) for x in v] for k, v in per_run.items()}
    return {**out, "hub_open_s": round(opened, 3), "shards": shards}


def benchmark(args: argparse.Namespace, work: str) -> dict[str, Any]:
    """Every mode of ``--modes`` in turn, in one Ray session."""
    result: dict[str, Any] = {"benchmark": "replication", "runs": args.runs, "samples": args.samples,
                              "transfers": args.transfers, "accounts": args.accounts, "modes": {}}
    # the S3 stand-in first: its dummy credentials are in the environment Ray's processes inherit
    s3 = common.moto_server(work) if "replicated-s3" in args.modes else contextlib.nullcontext()
    with s3 as endpoint, common.ray_session():
        for mode in args.modes:
            result["modes"][mode] = measure_mode(mode, args, work, endpoint)
    local = result["modes"].get("local")
    if local is not None:
        for fields in result["modes"].values():
            fields["p50_over_local"] = common.ratio(fields["p50_median"], local["p50_median"])
            fields["tps_over_local"] = common.ratio(fields["tps_median"], local["tps_median"])
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = common.make_parser(__doc__)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--samples", type=int, default=100, help="hello sequences per run and mode")
    parser.add_argument("--transfers", type=int, default=500, help="transfer orchestrations per run and mode")
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--initial-balance", type=int, default=1000)
    parser.add_argument("--max-amount", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    common.require_positive(parser, args, "samples", "transfers", "accounts", "runs")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def run(data_dir: str) -> dict[str, Any]:
        try:
            return benchmark(args, data_dir)
        finally:
            shutil.rmtree(os.path.join(data_dir, "replica"), ignore_errors=True)

    return run_main("replication", args.data_dir, run)


if __name__ == "__main__":
    sys.exit(main())
