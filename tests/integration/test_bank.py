"""The critical-section workload of issue 3: random transfers between accounts, with and
without locks. With locks the total is conserved and no balance goes below zero; without
them the same workload loses updates, which shows the test can fail."""

from __future__ import annotations

import random

import pytest

from entities import EntityId, entity
from orchestrations import orchestrator
from runtime import OrchestrationRuntimeStatus as S

from ..conftest import ALWAYS_REPLAY
from ..helpers import wait_until

pytestmark = pytest.mark.integration

#: the always-replay run replays each worker's whole history at every turn (quadratic in its
#: transfers): a quarter of the transfers there, the same locks and the same checks
ACCOUNTS, TRANSFERS, CONCURRENCY, INITIAL = 50, 500 if ALWAYS_REPLAY else 2000, 64, 1000


@entity(name="BankAccount")
class Account:
    """Reads and writes only: a transfer is a read-modify-write across two accounts."""

    def __init__(self) -> None:
        self.balance = 0

    def get(self) -> int:
        return self.balance

    def set(self, value: int) -> None:
        self.balance = value


def account(i: int, bank: str) -> EntityId:
    return EntityId("BankAccount", f"{bank}-{i}")


def _transfer(ctx, bank: str, src: int, dst: int, amount: int):
    a, b = account(src, bank), account(dst, bank)
    balance_a = yield ctx.call_entity(a, "get")
    balance_b = yield ctx.call_entity(b, "get")
    if balance_a < amount:
        return 0
    yield ctx.call_entity(a, "set", balance_a - amount)
    yield ctx.call_entity(b, "set", balance_b + amount)
    return 1


@orchestrator(name="bank_worker")
def worker(ctx):
    bank, locked, transfers = ctx.get_input()
    done = 0
    for src, dst, amount in transfers:
        if locked:
            with (yield ctx.lock_entities([account(src, bank), account(dst, bank)])):
                done += yield from _transfer(ctx, bank, src, dst, amount)
        else:
            done += yield from _transfer(ctx, bank, src, dst, amount)
    return done


def run_bank(hub, bank: str, locked: bool) -> tuple[list[int], int]:
    """Fund the accounts, run the transfers from CONCURRENCY orchestrations, return balances."""
    rng = random.Random(42)
    for i in range(ACCOUNTS):
        hub.signal_entity(account(i, bank), "set", INITIAL)
    wait_until(lambda: all(hub.read_entity_state(account(i, bank)).entity_exists for i in range(ACCOUNTS)))
    plan = [[] for _ in range(CONCURRENCY)]
    for n in range(TRANSFERS):
        src, dst = rng.sample(range(ACCOUNTS), 2)
        plan[n % CONCURRENCY].append((src, dst, rng.randint(1, 400)))
    ids = hub.start_new_batch(worker, [(bank, locked, p) for p in plan])
    statuses = [hub.wait_for_completion(i, timeout=600) for i in ids]
    assert all(s.runtime_status is S.Completed for s in statuses), [s.failure_details for s in statuses][:3]
    balances = [hub.read_entity_state(account(i, bank)).entity_state.balance for i in range(ACCOUNTS)]
    return balances, sum(s.output for s in statuses)


def test_locked_transfers_conserve_the_total(hub):
    balances, done = run_bank(hub, "locked", locked=True)
    assert sum(balances) == ACCOUNTS * INITIAL
    assert min(balances) >= 0
    assert done > TRANSFERS // 2  # most transfers found enough money and moved it
    assert not [m for m in hub.list_entities("BankAccount") if m.locked_by is not None]


@pytest.mark.skipif(ALWAYS_REPLAY, reason="shows the check can fail; the normal run does, with the full workload")
def test_the_same_workload_without_locks_loses_updates(hub):
    balances, _ = run_bank(hub, "unlocked", locked=False)
    assert sum(balances) != ACCOUNTS * INITIAL
