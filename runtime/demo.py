"""The demo driver (``make demo``): the seed's E1_HelloSequence, a 1,000-activity fan-out, and
bank transfers between accounts inside critical sections.

Runs on a local Ray with SQLite shards under ``.durable/``. The orchestrators and activities
below are defined in ``__main__``, so they travel to the shard hosts and workers by value.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

from entities import EntityId, entity
from orchestrations import OrchestrationContext, activity, orchestrator
from runtime import OrchestrationRuntimeStatus, TaskHub
from runtime._render import format_history


@activity(name="E1_SayHello")
def say_hello(name: str) -> str:
    """The seed's activity."""
    return f"Hello {name}!"


@orchestrator(name="E1_HelloSequence")
def hello_sequence(context: OrchestrationContext):  # noqa: ANN201 - a generator orchestrator
    """The seed's orchestrator: three activities in sequence."""
    outputs = []
    outputs.append((yield context.call_activity("E1_SayHello", "Tokyo")))
    outputs.append((yield context.call_activity("E1_SayHello", "Seattle")))
    outputs.append((yield context.call_activity("E1_SayHello", "London")))
    return outputs


@activity
def square(x: int) -> int:
    """A trivial unit of fan-out work."""
    return x * x


@orchestrator
def fan_out_fan_in(context: OrchestrationContext):  # noqa: ANN201 - a generator orchestrator
    """Run one activity per input item in parallel, then add the results."""
    n = context.get_input()
    results = yield context.task_all([context.call_activity(square, i) for i in range(n)])
    return sum(results)


@entity
class Account:
    """A bank account: the state is the object, the public methods are the operations."""

    def __init__(self) -> None:
        self.balance = 0

    def deposit(self, amount: int) -> int:
        """Add ``amount``; returns the new balance."""
        self.balance += amount
        return self.balance

    def withdraw(self, amount: int) -> int:
        """Take ``amount`` out; refuses to go below zero."""
        if amount > self.balance:
            raise ValueError("insufficient funds")
        self.balance -= amount
        return self.balance

    def get(self) -> int:
        """The balance."""
        return self.balance


@orchestrator
def transfers(context: OrchestrationContext):  # noqa: ANN201 - a generator orchestrator
    """Move money between accounts, each move inside a critical section on both accounts."""
    moved = 0
    for src, dst, amount in context.get_input():
        a, b = EntityId("Account", src), EntityId("Account", dst)
        with (yield context.lock_entities([a, b])):
            if (yield context.call_entity(a, "get")) >= amount:
                yield context.call_entity(a, "withdraw", amount)
                yield context.call_entity(b, "deposit", amount)
                moved += 1
    return moved


def bank(hub: TaskHub, accounts: int = 20, count: int = 400, workers: int = 16) -> bool:
    """Run ``count`` random transfers from ``workers`` orchestrations; check the total."""
    names = [f"acct-{i}" for i in range(accounts)]
    for name in names:
        hub.signal_entity(EntityId("Account", name), "deposit", 100)
    rng = random.Random(7)
    plans: list[list[tuple[str, str, int]]] = [[] for _ in range(workers)]
    for n in range(count):
        src, dst = rng.sample(names, 2)
        plans[n % workers].append((src, dst, rng.randint(1, 60)))
    started = time.perf_counter()
    ids = hub.start_new_batch(transfers, plans)
    moved = sum(hub.wait_for_completion(i, timeout=600).output for i in ids)
    elapsed = time.perf_counter() - started
    balances = [hub.read_entity_state(EntityId("Account", n)).entity_state.balance for n in names]
    total, expected = sum(balances), 100 * accounts
    print(f"{count} transfers from {workers} concurrent orchestrations in {elapsed:.2f} s "
          f"({count / elapsed:.0f}/s), {moved} moved money")
    print(f"total {total} (expected {expected}): {'conserved' if total == expected else 'NOT CONSERVED'}; "
          f"lowest balance {min(balances)}")
    return total == expected and min(balances) >= 0


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", default=".durable")
    parser.add_argument("--fan-out", type=int, default=1000)
    args = parser.parse_args(argv)

    with TaskHub("demo", data_dir=args.data_dir) as hub:  # one shard per two CPUs (or as created)
        print("== E1_HelloSequence ==")
        iid = hub.start_new(hello_sequence)
        status = hub.wait_for_completion(iid, timeout=60)
        print(f"instance {iid}: {status.runtime_status.value}, output {status.output}")
        print(format_history(hub.get_history(iid)))

        print(f"\n== fan-out/fan-in of {args.fan_out} activities ==")
        started = time.perf_counter()
        iid = hub.start_new(fan_out_fan_in, client_input=args.fan_out)
        status = hub.wait_for_completion(iid, timeout=600, show_progress=True)
        elapsed = time.perf_counter() - started
        expected = sum(i * i for i in range(args.fan_out))
        print(f"instance {iid}: {status.runtime_status.value}, sum {status.output} "
              f"(expected {expected}) in {elapsed:.2f} s")
        ok = status.runtime_status is OrchestrationRuntimeStatus.Completed and status.output == expected

        print("\n== bank transfers in critical sections ==")
        ok = bank(hub) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
