"""Bank-transfer benchmark: critical sections over durable entities vs one plain Ray actor.

T transfers between A accounts (random pairs and amounts from a seeded RNG; the same list for
both sides) are split across C workers, each doing its share one after the other. A transfer
is: lock both accounts, read the source balance, withdraw if it is enough, deposit.

What it measures, per run and in the same process and Ray instance:

* ``durable``: each account is a class-style durable entity ``BenchAccount`` (deposit /
  withdraw / get). C ``bank_worker`` orchestrations each do their share as
  ``with (yield ctx.lock_entities([src, dst])):`` then ``call_entity(src, "get")``,
  ``call_entity(src, "withdraw", amount)``, ``call_entity(dst, "deposit", amount)``. Wall time
  from ``TaskHub.start_new_batch`` (one call per shard) until ``wait_for_completion`` has
  returned for all C instances. Afterwards every balance is read back: the total must be
  unchanged and no balance negative (exit status 1 otherwise).
* ``ray``: the non-durable baseline. One plain ``@ray.remote`` ``Bank`` actor holds every
  balance and has async methods ``lock``, ``get``, ``withdraw``, ``deposit``, ``unlock``;
  ``lock`` takes per-account ``asyncio.Lock``\\ s in sorted order (no deadlock) and ``unlock``
  releases them. The driver runs C asyncio coroutines, each awaiting its transfers' actor calls
  one after the other (five calls per transfer, the same round trips as the durable lock /
  three calls / unlock). Wall time from starting the coroutines until all are done; the same
  conservation check follows.

Why this baseline: it does the same work with the same concurrency and the same per-call
structure, but nothing is persisted or replayed. One actor per account would be the literal
analogue of one entity per account, but a Ray actor costs a process (~200 ms to start and
~87 MiB here), so 100 of them would measure actor start-up and memory pressure on a small
machine rather than transfers. Ray tasks per worker would likewise start up to C worker
processes; driver-side coroutines awaiting actor calls cost nothing extra. The actor is
created (and its balances reset) outside the timed region.

Balances carry over from run to run on the durable side (the entities stay) and are reset on
the Ray side; the conservation check runs after every timed run of both sides. The order of
the two sides alternates from run to run (run 0: ray first, run 1: durable first, ...). Before
the timed runs, one small untimed round of each warms up Ray's workers and the hub.

``--shape orchestrations`` measures the shape users write (issue 12): one ``transfer``
orchestration per transfer (the README's critical section: lock both accounts, ``get``,
``withdraw``, ``deposit``), all T started at once by a loop of ``TaskHub.start_new`` (or one
``start_new_batch`` with ``--start batch``), then a loop of ``wait_for_completion``; the hub at
its defaults (``--shards`` only if given). Afterwards the total must be unchanged, no balance
negative and no account still locked. Its baseline: the same ``Bank`` actor driven by T
coroutines started at once, one transfer each. Its JSON line has ``"shape": "orchestrations"``,
``"start"``, ``"locks_left": 0`` and the same timing fields (``concurrency`` is T).

Output: exactly one JSON line on stdout::

    {"benchmark": "bank", "transfers": T, "accounts": A, "concurrency": C, "runs": R,
     "shards": S, "durable_seconds": [...], "ray_seconds": [...],
     "durable_transfers_per_second_median": x, "ray_transfers_per_second_median": y,
     "ratio_durable_over_ray_time": ..., "total_conserved": true}

Everything else (progress, Ray's own output) goes to stderr.

Run it from the repository root (``RAY_AUTH_MODE=disabled`` if your Ray needs it)::

    python benchmarks/bank.py
    python benchmarks/bank.py --transfers 200 --accounts 10 --concurrency 16 --runs 1 --shards 2
    python benchmarks/bank.py --shape orchestrations --accounts 10
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from collections.abc import Generator
from typing import Any

import _common as common  # benchmarks/ is on sys.path
import ray
from _common import BenchmarkError, log, run_main

from entities import EntityId, entity
from orchestrations import orchestrator
from runtime import OrchestrationRuntimeStatus, TaskHub

ENTITY_NAME = "BenchAccount"
WARMUP_TRANSFERS = 32

Transfer = tuple[str, str, int]


@entity(name=ENTITY_NAME)
class BenchAccount:
    """One account: its state is the instance."""

    def __init__(self) -> None:
        self.balance = 0

    def deposit(self, amount: int) -> int:
        self.balance += amount
        return self.balance

    def withdraw(self, amount: int) -> int:
        if amount > self.balance:
            raise ValueError("insufficient funds")
        self.balance -= amount
        return self.balance

    def get(self) -> int:
        return self.balance


@orchestrator
def bank_worker(ctx: Any) -> Generator[Any, Any, int]:
    """Do a list of transfers one after the other; returns how many moved money."""
    transfers: list[Transfer] = ctx.get_input()
    done = 0
    for src, dst, amount in transfers:
        a, b = EntityId(ENTITY_NAME, src), EntityId(ENTITY_NAME, dst)
        with (yield ctx.lock_entities([a, b])):
            balance = yield ctx.call_entity(a, "get")
            if balance >= amount:
                yield ctx.call_entity(a, "withdraw", amount)
                yield ctx.call_entity(b, "deposit", amount)
                done += 1
    return done


@orchestrator
def transfer(ctx: Any) -> Generator[Any, Any, bool]:
    """One transfer, as the README writes it; returns whether it moved money."""
    src, dst, amount = ctx.get_input()
    a, b = EntityId(ENTITY_NAME, src), EntityId(ENTITY_NAME, dst)
    with (yield ctx.lock_entities([a, b])):
        if (yield ctx.call_entity(a, "get")) < amount:
            return False
        yield ctx.call_entity(a, "withdraw", amount)
        yield ctx.call_entity(b, "deposit", amount)
    return True


@ray.remote(num_cpus=0)
class Bank:
    """The non-durable baseline: every balance in one async actor, per-account locks."""

    def __init__(self) -> None:
        self.balances: dict[str, int] = {}
        self.locks: dict[str, asyncio.Lock] = {}

    async def reset(self, balances: dict[str, int]) -> None:
        self.balances = dict(balances)
        self.locks = {key: asyncio.Lock() for key in balances}

    async def lock(self, keys: list[str]) -> None:
        for key in sorted(set(keys)):
            await self.locks[key].acquire()

    async def unlock(self, keys: list[str]) -> None:
        for key in sorted(set(keys), reverse=True):
            self.locks[key].release()

    async def get(self, key: str) -> int:
        return self.balances[key]

    async def withdraw(self, key: str, amount: int) -> int:
        if amount > self.balances[key]:
            raise ValueError("insufficient funds")
        self.balances[key] -= amount
        return self.balances[key]

    async def deposit(self, key: str, amount: int) -> int:
        self.balances[key] += amount
        return self.balances[key]

    async def snapshot(self) -> dict[str, int]:
        return dict(self.balances)


def account_keys(accounts: int) -> list[str]:
    return [f"acct-{i:05d}" for i in range(accounts)]


def make_transfers(keys: list[str], count: int, max_amount: int, rng: random.Random) -> list[Transfer]:
    """``count`` transfers between two different random accounts, random amounts."""
    out: list[Transfer] = []
    for _ in range(count):
        src, dst = rng.sample(keys, 2)
        out.append((src, dst, rng.randint(1, max_amount)))
    return out


def split(transfers: list[Transfer], workers: int) -> list[list[Transfer]]:
    """Round-robin shares; workers with nothing to do are left out."""
    shares = [transfers[i::workers] for i in range(workers)]
    return [s for s in shares if s]


def check_balances(balances: dict[str, int], expected_total: int, what: str) -> None:
    total = sum(balances.values())
    negative = {k: v for k, v in balances.items() if v < 0}
    if total != expected_total:
        raise BenchmarkError(f"{what}: total balance {total} != {expected_total}")
    if negative:
        raise BenchmarkError(f"{what}: negative balances {negative}")


# -- durable side ------------------------------------------------------------------------------


def read_balances(hub: TaskHub, keys: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for key in keys:
        state = hub.read_entity_state(EntityId(ENTITY_NAME, key))
        if not state.entity_exists or state.entity_state is None:
            raise BenchmarkError(f"account {key} does not exist")
        out[key] = state.entity_state.balance
    return out


def setup_durable(hub: TaskHub, keys: list[str], initial: int, timeout: float) -> None:
    """Deposit ``initial`` into every account and wait until it is committed everywhere."""
    for key in keys:
        hub.signal_entity(EntityId(ENTITY_NAME, key), "deposit", initial)
    deadline = time.monotonic() + timeout
    pending = list(keys)
    while pending:
        still = []
        for key in pending:
            state = hub.read_entity_state(EntityId(ENTITY_NAME, key))
            if not (state.entity_exists and state.entity_state is not None and state.entity_state.balance == initial):
                still.append(key)
        pending = still
        if pending:
            if time.monotonic() > deadline:
                raise BenchmarkError(f"{len(pending)} accounts not funded after {timeout} s, e.g. {pending[0]}")
            time.sleep(0.05)


def run_durable(hub: TaskHub, shares: list[list[Transfer]], timeout: float) -> tuple[float, int]:
    """All workers as orchestrations: (seconds, transfers that moved money)."""
    start = time.perf_counter()
    ids = hub.start_new_batch(bank_worker, shares)
    statuses = [hub.wait_for_completion(iid, timeout=timeout) for iid in ids]
    elapsed = time.perf_counter() - start
    done = 0
    for iid, status in zip(ids, statuses, strict=True):
        if status.runtime_status != OrchestrationRuntimeStatus.Completed:
            raise BenchmarkError(f"orchestration {iid} ended {status.runtime_status}: {status.failure_details}")
        done += status.output
    return elapsed, done


def run_orchestrations(hub: TaskHub, transfers: list[Transfer], start: str, timeout: float) -> tuple[float, int]:
    """One ``transfer`` orchestration per transfer, all started at once (a loop of
    ``start_new``, or one ``start_new_batch``): (seconds, transfers that moved money)."""
    begin = time.perf_counter()
    if start == "batch":
        ids = hub.start_new_batch(transfer, transfers)
    else:
        ids = [hub.start_new(transfer, client_input=t) for t in transfers]
    statuses = [hub.wait_for_completion(iid, timeout=timeout) for iid in ids]
    elapsed = time.perf_counter() - begin
    for iid, status in zip(ids, statuses, strict=True):
        if status.runtime_status != OrchestrationRuntimeStatus.Completed:
            raise BenchmarkError(f"orchestration {iid} ended {status.runtime_status}: {status.failure_details}")
    return elapsed, sum(bool(s.output) for s in statuses)


def check_unlocked(hub: TaskHub) -> None:
    """No account may still be locked, or have anything waiting, once every transfer ended."""
    left = [m for m in hub.list_entities(ENTITY_NAME, include_deleted=True) if m.locked_by is not None]
    if left:
        raise BenchmarkError(f"{len(left)} accounts still locked, e.g. {left[0].entity_id} by {left[0].locked_by}")


# -- plain Ray side ----------------------------------------------------------------------------


async def _ray_worker(bank: Any, transfers: list[Transfer]) -> int:
    done = 0
    for src, dst, amount in transfers:
        keys = [src, dst]
        await bank.lock.remote(keys)
        try:
            balance = await bank.get.remote(src)
            if balance >= amount:
                await bank.withdraw.remote(src, amount)
                await bank.deposit.remote(dst, amount)
                done += 1
        finally:
            await bank.unlock.remote(keys)
    return done


async def _ray_all(bank: Any, shares: list[list[Transfer]]) -> int:
    counts = await asyncio.gather(*(_ray_worker(bank, share) for share in shares))
    return sum(counts)


def run_ray(bank: Any, shares: list[list[Transfer]], balances: dict[str, int]) -> tuple[float, int]:
    """All workers as coroutines calling the Bank actor: (seconds, transfers that moved money)."""
    ray.get(bank.reset.remote(balances))
    start = time.perf_counter()
    done = asyncio.run(_ray_all(bank, shares))
    return time.perf_counter() - start, done


# -- driver ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = common.make_parser(__doc__)
    parser.add_argument("--transfers", type=int, default=1000, metavar="T", help="transfers per run")
    parser.add_argument("--accounts", type=int, default=100, metavar="A", help="accounts (>= 2)")
    parser.add_argument("--concurrency", type=int, default=64, metavar="C", help="concurrent workers")
    parser.add_argument("--seed", type=int, default=0, help="RNG seed for account pairs and amounts")
    parser.add_argument("--initial-balance", type=int, default=1000, help="starting balance of every account")
    parser.add_argument("--max-amount", type=int, default=300, help="largest transfer amount")
    parser.add_argument("--shape", choices=("workers", "orchestrations"), default="workers",
                        help="C long-lived workers (default), or one orchestration per transfer at hub defaults")
    parser.add_argument("--start", choices=("loop", "batch"), default="loop",
                        help="--shape orchestrations: a loop of start_new (default) or one start_new_batch")
    parser.set_defaults(shards=None)
    args = parser.parse_args(argv)
    if args.shards is None and args.shape == "workers":
        args.shards = common.DEFAULT_SHARDS
    common.require_positive(parser, args, "transfers", "concurrency", "runs", "max_amount")
    if args.shards is not None and args.shards < 1:
        parser.error("--shards must be positive")
    if args.accounts < 2:
        parser.error("--accounts must be at least 2")
    if args.initial_balance < 0:
        parser.error("--initial-balance must be >= 0")
    return args


def benchmark(args: argparse.Namespace, data_dir: str) -> dict[str, Any]:
    keys = account_keys(args.accounts)
    rng = random.Random(args.seed)
    warm_shares = split(make_transfers(keys, min(args.transfers, WARMUP_TRANSFERS), args.max_amount, rng),
                        args.concurrency)
    shares = split(make_transfers(keys, args.transfers, args.max_amount, rng), args.concurrency)
    initial = dict.fromkeys(keys, args.initial_balance)
    expected_total = args.initial_balance * args.accounts
    seconds: dict[str, list[float]] = {"ray": [], "durable": []}
    with common.ray_session(), common.open_hub("bank-bench", data_dir, args.shards) as hub:
        bank = Bank.options(max_concurrency=100_000).remote()  # type: ignore[attr-defined]
        t0 = time.perf_counter()
        setup_durable(hub, keys, args.initial_balance, timeout=min(args.timeout, 120.0))
        log(f"setup: {args.accounts} accounts funded in {time.perf_counter() - t0:.3f} s")
        run_ray(bank, warm_shares, initial)
        run_durable(hub, warm_shares, args.timeout)
        check_balances(read_balances(hub, keys), expected_total, "durable warm-up")
        for run, side in common.alternating(args.runs, ("ray", "durable")):
            if side == "ray":
                elapsed, done = run_ray(bank, shares, initial)
                balances: dict[str, int] = ray.get(bank.snapshot.remote())
            else:
                elapsed, done = run_durable(hub, shares, args.timeout)
                balances = read_balances(hub, keys)
            seconds[side].append(elapsed)
            check_balances(balances, expected_total, f"run {run + 1} {side}")
            log(f"run {run + 1}/{args.runs} {side}: {elapsed:.3f} s "
                f"({args.transfers / elapsed:.1f} transfers/s, {done} moved money)")
    return result(args, seconds, args.concurrency, args.shards)


def result(
    args: argparse.Namespace, seconds: dict[str, list[float]], concurrency: int, shards: int, **extra: Any
) -> dict[str, Any]:
    """The JSON line of a run of either shape (``extra``: the shape's own fields, first)."""
    ray_median = statistics.median(seconds["ray"])
    durable_median = statistics.median(seconds["durable"])
    return {
        "benchmark": "bank",
        **extra,
        "transfers": args.transfers,
        "accounts": args.accounts,
        "concurrency": concurrency,
        "runs": args.runs,
        "shards": shards,
        "durable_seconds": [round(s, 4) for s in seconds["durable"]],
        "ray_seconds": [round(s, 4) for s in seconds["ray"]],
        "durable_transfers_per_second_median": round(args.transfers / durable_median, 2),
        "ray_transfers_per_second_median": round(args.transfers / ray_median, 2),
        "ratio_durable_over_ray_time": common.ratio(durable_median, ray_median),
        "total_conserved": True,
    }


def benchmark_orchestrations(args: argparse.Namespace, data_dir: str) -> dict[str, Any]:
    """``--shape orchestrations``: one transfer orchestration each, hub at its defaults."""
    keys = account_keys(args.accounts)
    rng = random.Random(args.seed)
    warm = make_transfers(keys, min(args.transfers, WARMUP_TRANSFERS), args.max_amount, rng)
    transfers = make_transfers(keys, args.transfers, args.max_amount, rng)
    initial = dict.fromkeys(keys, args.initial_balance)
    expected_total = args.initial_balance * args.accounts
    seconds: dict[str, list[float]] = {"ray": [], "durable": []}
    with common.ray_session(), common.open_hub("bank-orchestrations", data_dir, args.shards) as hub:
        bank = Bank.options(max_concurrency=100_000).remote()  # type: ignore[attr-defined]
        setup_durable(hub, keys, args.initial_balance, timeout=min(args.timeout, 120.0))
        run_ray(bank, [[t] for t in warm], initial)
        run_orchestrations(hub, warm, args.start, args.timeout)
        for run, side in common.alternating(args.runs, ("ray", "durable")):
            if side == "ray":
                elapsed, done = run_ray(bank, [[t] for t in transfers], initial)
                balances: dict[str, int] = ray.get(bank.snapshot.remote())
            else:
                elapsed, done = run_orchestrations(hub, transfers, args.start, args.timeout)
                balances = read_balances(hub, keys)
                check_unlocked(hub)
            seconds[side].append(elapsed)
            check_balances(balances, expected_total, f"run {run + 1} {side}")
            log(f"run {run + 1}/{args.runs} {side}: {elapsed:.3f} s "
                f"({args.transfers / elapsed:.1f} transfers/s, {done} moved money)")
        shards = hub.num_shards
    return {**result(args, seconds, args.transfers, shards, shape="orchestrations", start=args.start),
            "locks_left": 0}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = benchmark_orchestrations if args.shape == "orchestrations" else benchmark
    return run_main("bank", args.data_dir, lambda data_dir: run(args, data_dir))


if __name__ == "__main__":
    sys.exit(main())
