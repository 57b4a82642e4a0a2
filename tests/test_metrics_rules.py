"""The metrics' rules that hold without Ray (issue 15; ``tests/integration/test_metrics.py``
reads them from Ray's Prometheus endpoint): the count of instances by status is one scan of a
covering index, so a hub of 100,000 instances does not read its table every 5 s; and a shard
host built without Ray records nothing and keeps nothing for it."""

from __future__ import annotations

import sqlite3
import sys
from contextlib import closing
from pathlib import Path

import pytest

from runtime._metrics import BOUNDARIES_MS, STATUS_SQL, ShardMetrics
from runtime._schema import _SCHEMA


def test_the_count_by_status_reads_only_the_status_index(tmp_path: Path):
    with closing(sqlite3.connect(tmp_path / "shard.sqlite")) as db:
        db.executescript(_SCHEMA)
        db.executemany(
            "INSERT INTO instances VALUES (?, 'hello', 'e', ?, NULL, NULL, NULL, NULL, NULL, 0, 0, ?)",
            [(f"i{n}", "Completed" if n % 3 else "Running", n) for n in range(300)],
        )
        plan = " ".join(row[-1] for row in db.execute("EXPLAIN QUERY PLAN " + STATUS_SQL))
        counts = dict(db.execute(STATUS_SQL).fetchall())
    assert "COVERING INDEX instances_by_status" in plan
    assert counts == {"Completed": 200, "Running": 100}


def test_histogram_buckets_run_from_a_tenth_of_a_millisecond_to_ten_seconds():
    assert BOUNDARIES_MS[0] == 0.1
    assert BOUNDARIES_MS[-1] == 10_000
    assert sorted(set(BOUNDARIES_MS)) == BOUNDARIES_MS


class _Msg:
    def __init__(self, event: object) -> None:
        self.event = event


def test_a_host_built_without_ray_has_its_metrics_off():
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        pytest.skip("an integration module of this run started Ray in this process")
    assert not ShardMetrics("hub", 0).enabled


def test_metrics_off_record_and_keep_nothing():
    metrics = ShardMetrics("hub", 0, enabled=False)
    metrics.turn_started(5)
    metrics.count_messages({"i": [_Msg(object())] * 3}, 0.0)
    metrics.lock_asked("i", 1, 0.0)
    metrics.turn_ended(0.01, 0)
    metrics.activity_results(0.0, {"a": (1, 1)})
    metrics.flush()
    assert not metrics.statuses_due(turns=1)
    assert (metrics._kinds, metrics._asked, metrics._turns, metrics._activities) == ({}, {}, 0, {})
