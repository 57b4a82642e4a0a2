"""The chaos lane: a mixed workload while shard hosts and activity workers are SIGKILLed at
random moments. Every orchestration must complete with the right result, the bank's total must
be conserved with no balance below zero (entity effects exactly once), and every activity must
have run (at least once). Two promises are checked from what the entities recorded: at most one
holder inside an account's critical section at any time (each account keeps an enter/exit log
of the sections it was in, checked for overlap), and every orchestration the client started
had its effects exactly once (each marks a tally once, one of them before continuing as new, so
a start Ray retries after a kill must not run it again).

Short by default (CI); the long run is ``make chaos``:
CHAOS_RUNS=5 CHAOS_ORCHESTRATIONS=500 CHAOS_TRANSFERS=1000 CHAOS_KILLS=20.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from entities import EntityId, entity
from orchestrations import activity, orchestrator
from runtime import OrchestrationRuntimeStatus as S
from runtime import TaskHub

from ..helpers import wait_until

pytestmark = pytest.mark.chaos

RUNS = int(os.environ.get("CHAOS_RUNS", "1"))
ORCHESTRATIONS = int(os.environ.get("CHAOS_ORCHESTRATIONS", "60"))
TRANSFERS = int(os.environ.get("CHAOS_TRANSFERS", "150"))
KILLS = int(os.environ.get("CHAOS_KILLS", "4"))
ACCOUNTS, WORKERS, INITIAL, FAN = 20, 16, 1000, 10


@activity(name="ch_square")
def square(x: int) -> int:
    time.sleep(0.01)  # simulated work: long enough for a kill to land mid-batch
    return x * x


@activity(name="ch_hello")
def hello_activity(city: str) -> str:
    return f"Hello {city}!"


@entity(name="ChAccount")
class Account:
    def __init__(self) -> None:
        self.balance = 0
        #: ("enter" | "exit", holder) for every critical section this account was in, in order
        self.log: list[tuple[str, str]] = []

    def enter(self, holder: str) -> int:
        self.log.append(("enter", holder))
        return self.balance

    def exit(self, holder: str) -> None:
        self.log.append(("exit", holder))

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


@entity(name="ChTally")
def tally(ctx) -> None:
    """How many times each orchestration marked it: {instance id: count}."""
    marks = ctx.get_state(dict)
    marks[ctx.get_input()] = marks.get(ctx.get_input(), 0) + 1
    ctx.set_state(marks)


TALLIES = 8


def tally_of(instance_id: str) -> EntityId:
    return EntityId("ChTally", str(sum(map(ord, instance_id)) % TALLIES))


def mark(ctx) -> None:
    """The effect an orchestration the client started must have exactly once."""
    ctx.signal_entity(tally_of(ctx.instance_id), "mark", ctx.instance_id)


@orchestrator(name="ch_fan")
def fan(ctx):
    n = ctx.get_input()
    mark(ctx)
    return sum((yield ctx.task_all([ctx.call_activity(square, i) for i in range(n)])))


@orchestrator(name="ch_hello_sequence")
def hello_sequence(ctx):
    if ctx.get_input() is None:  # the first execution marks, then continues as new
        mark(ctx)
        ctx.continue_as_new("marked")
        return None
    results = []
    for city in ("Tokyo", "Seattle", "London"):
        results.append((yield ctx.call_activity(hello_activity, city)))
    return results


@orchestrator(name="ch_transfers")
def transfers(ctx):
    bank, plan = ctx.get_input()
    mark(ctx)
    for n, (src, dst, amount) in enumerate(plan):
        a, b = EntityId("ChAccount", f"{bank}-{src}"), EntityId("ChAccount", f"{bank}-{dst}")
        holder = f"{ctx.instance_id}/{n}"
        with (yield ctx.lock_entities([a, b])):
            balance, _ = yield ctx.task_all([ctx.call_entity(a, "enter", holder), ctx.call_entity(b, "enter", holder)])
            if balance >= amount:
                yield ctx.call_entity(a, "withdraw", amount)
                yield ctx.call_entity(b, "deposit", amount)
            yield ctx.task_all([ctx.call_entity(a, "exit", holder), ctx.call_entity(b, "exit", holder)])
    return len(plan)


def overlaps(log: list[tuple[str, str]]) -> list[str]:
    """Where an account's enter/exit log shows two holders inside at once, or an exit of a
    holder that was not inside, or a holder still inside at the end."""
    inside: set[str] = set()
    bad = []
    for what, holder in log:
        if what == "enter":
            if inside:
                bad.append(f"{holder} entered while {sorted(inside)} inside")
            inside.add(holder)
        elif holder not in inside:
            bad.append(f"{holder} left without being inside")
        else:
            inside.discard(holder)
    return bad + [f"{holder} never left" for holder in sorted(inside)]


def check_promises(hub: TaskHub, bank: str, started: list[str]) -> int:
    """At most one holder per account at any time, every section entered and left exactly
    once on both its accounts, and every client-started orchestration marked its tally exactly
    once; returns how many sections the logs hold."""
    logs = [
        hub.read_entity_state(EntityId("ChAccount", f"{bank}-{i}")).entity_state.log for i in range(ACCOUNTS)
    ]
    bad = {i: found for i, log in enumerate(logs) if (found := overlaps(log))}
    assert not bad, f"two holders in one critical section: {bad}"
    enters = [holder for log in logs for what, holder in log if what == "enter"]
    assert len(enters) == 2 * TRANSFERS and set(Counter(enters).values()) == {2}

    def marks() -> Counter[str]:
        found: Counter[str] = Counter()
        for i in range(TALLIES):
            state = hub.read_entity_state(EntityId("ChTally", str(i))).entity_state
            found.update(state or {})
        return found

    wait_until(lambda: sum(marks().values()) >= len(started), timeout=120)  # signals may still be on their way
    found = marks()
    wrong = {i: found[i] for i in set(found) | set(started) if found[i] != (1 if i in started else 0)}
    assert not wrong, f"orchestrations whose effects did not happen exactly once (times marked): {wrong}"
    return len(enters) // 2


def busy_workers() -> list[int]:
    """Ray worker processes running an activity batch right now (a Ray task), and the shard
    hosts' warm workers (busy or not: they take batches over their own connection)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith((b"ray::run_batch", b"ray::WarmWorker")):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


class Killer(threading.Thread):
    """SIGKILLs a random shard host or busy worker every 0.3-1.2 s until ``target`` kills."""

    def __init__(self, hub: TaskHub, target: int, seed: int) -> None:
        super().__init__(daemon=True)
        self.hub, self.target, self.rng = hub, target, random.Random(seed)
        self.kills: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        import ray

        while len(self.kills) < self.target and not self.stop.wait(self.rng.uniform(0.3, 1.2)):
            workers = busy_workers()
            if workers and self.rng.random() < 0.5:
                pid, what = self.rng.choice(workers), "worker"
            else:
                index = self.rng.randrange(self.hub.num_shards)
                try:
                    pid, what = ray.get(self.hub._shards[index].pid.remote(), timeout=30), f"shard {index}"
                except Exception:
                    continue
            try:
                os.kill(pid, signal.SIGKILL)
                self.kills.append(what)
            except ProcessLookupError:
                continue


@pytest.mark.parametrize("run", range(RUNS))
def test_mixed_workload_survives_random_kills(ray_session, tmp_path, run):
    rng = random.Random(run)
    with TaskHub(f"chaos-{run}", data_dir=tmp_path, num_shards=4) as hub:
        bank = f"b{run}"
        for i in range(ACCOUNTS):
            hub.signal_entity(EntityId("ChAccount", f"{bank}-{i}"), "deposit", INITIAL)
        wait_until(lambda: all(
            hub.read_entity_state(EntityId("ChAccount", f"{bank}-{i}")).entity_exists for i in range(ACCOUNTS)
        ))
        plans: list[list[tuple[int, int, int]]] = [[] for _ in range(WORKERS)]
        for n in range(TRANSFERS):
            src, dst = rng.sample(range(ACCOUNTS), 2)
            plans[n % WORKERS].append((src, dst, rng.randint(1, 300)))

        killer = Killer(hub, KILLS, seed=run)
        killer.start()
        fans = hub.start_new_batch(fan, [FAN] * (ORCHESTRATIONS // 2))
        hellos = hub.start_new_batch(hello_sequence, [None] * (ORCHESTRATIONS - ORCHESTRATIONS // 2))
        movers = hub.start_new_batch(transfers, [(bank, p) for p in plans])
        statuses = {i: hub.wait_for_completion(i, timeout=900) for i in fans + hellos + movers}
        wait_until(lambda: len(killer.kills) >= KILLS or not killer.is_alive(), timeout=120)
        killer.stop.set()
        killer.join()

        failed = {i: s.failure_details for i, s in statuses.items() if s.runtime_status is not S.Completed}
        assert not failed
        assert all(statuses[i].output == sum(x * x for x in range(FAN)) for i in fans)
        assert all(statuses[i].output == ["Hello Tokyo!", "Hello Seattle!", "Hello London!"] for i in hellos)
        balances = [
            hub.read_entity_state(EntityId("ChAccount", f"{bank}-{i}")).entity_state.balance for i in range(ACCOUNTS)
        ]
        assert sum(balances) == ACCOUNTS * INITIAL and min(balances) >= 0
        sections = check_promises(hub, bank, fans + hellos + movers)
        assert len(killer.kills) >= KILLS
        if KILLS >= 20:  # the long run must hit workers as well as shard hosts
            assert "worker" in killer.kills
        print(f"\nchaos run {run}: {len(killer.kills)} kills ({', '.join(killer.kills)}), "
              f"{len(statuses)} orchestrations completed, {TRANSFERS} transfers, total {sum(balances)} conserved, "
              f"{sections} critical sections with one holder at a time, every start's effects once")
