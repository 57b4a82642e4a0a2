"""What the web UI computes from a history, without a hub: what an instance waits for, the
timeline's durations, and the filters' times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orchestrations import DurableValueError
from orchestrations._history import ExecutionCompleted
from orchestrations._registry import Registry
from orchestrations.testing import (
    at,
    orchestrator_completed,
    orchestrator_started,
    started,
    sub_created,
    task_completed,
    task_scheduled,
    timer_created,
    timer_fired,
)
from runtime._times import duration, parse_time
from runtime._ui_views import timeline, waiting_for

registry = Registry()


def approval(ctx):
    yield ctx.call_activity("notify", "boss")
    timeout = ctx.create_timer(at(3600))
    event = ctx.wait_for_external_event("Approval")
    winner = yield ctx.task_any([timeout, event])
    return winner is event


registry.add_orchestrator(approval)


def test_an_activity_in_flight_is_awaited_with_its_name_and_since_when() -> None:
    history = [started("approval"), orchestrator_started(), task_scheduled(1, "notify", "boss", ts=at(1)),
               orchestrator_completed()]
    [w] = waiting_for(history)
    assert (w.kind, w.what, w.since) == ("activity", "notify (task #1)", at(1))


def test_a_timer_shows_its_fire_time_and_the_code_names_the_event_it_awaits() -> None:
    history = [
        started("approval"), orchestrator_started(), task_scheduled(1, "notify", "boss"), orchestrator_completed(),
        task_completed(1, None, ts=at(2)), orchestrator_started(at(2)), timer_created(2, at(3600), ts=at(2)),
        orchestrator_completed(at(2)),
    ]
    without_code = waiting_for(history)
    assert [(w.kind, w.fires_at) for w in without_code] == [("timer", at(3600))]
    with_code = waiting_for(history, registry, "i1")
    assert [(w.kind, w.what) for w in with_code] == [("timer", "#2"), ("event", "Approval")]


def test_closed_tasks_and_finished_histories_wait_for_nothing() -> None:
    history = [started("approval"), orchestrator_started(), task_scheduled(1, "notify"), orchestrator_completed(),
               task_completed(1), orchestrator_started(), timer_created(2, at(5)), timer_fired(2, at(5))]
    assert waiting_for(history) == []
    done = [*history, ExecutionCompleted(at(6), "Completed", True)]
    assert waiting_for(done, registry) == []


def test_a_sub_orchestration_in_flight_names_the_child() -> None:
    history = [started("p"), orchestrator_started(), sub_created(1, "child", "p:1"), orchestrator_completed()]
    assert [(w.kind, w.what) for w in waiting_for(history)] == [("sub-orchestration", "child on p:1")]


def test_code_that_no_longer_replays_names_no_event_instead_of_failing() -> None:
    history = [started("approval"), orchestrator_started(), task_scheduled(1, "something_else"),
               orchestrator_completed()]
    assert [w.kind for w in waiting_for(history, registry)] == ["activity"]


def test_the_timeline_gives_offsets_gaps_and_how_long_each_task_took() -> None:
    history = [started("approval"), orchestrator_started(at(0.02)), task_scheduled(1, "notify", ts=at(0.02)),
               orchestrator_completed(at(0.03)), task_completed(1, "ok", ts=at(1.52))]
    rows = timeline(history)
    assert [r.offset for r in rows] == ["0 ms", "20 ms", "20 ms", "30 ms", "1.5 s"]
    assert rows[0].gap == "" and rows[-1].gap == "1.5 s"
    assert rows[-1].took == "1.5 s" and rows[-1].result == '"ok"'
    assert timeline([]) == []


@pytest.mark.parametrize(("delta", "text"), [
    (timedelta(milliseconds=850), "850 ms"), (timedelta(seconds=12.34), "12.3 s"),
    (timedelta(seconds=250), "4 min 10 s"), (timedelta(hours=2, minutes=5), "2 h 5 min"),
])
def test_durations_read_at_a_glance(delta: timedelta, text: str) -> None:
    assert duration(delta) == text


def test_filter_times_are_relative_or_iso_and_anything_else_is_named() -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert parse_time("1h", now) == now - timedelta(hours=1)
    assert parse_time("30s", now) == now - timedelta(seconds=30)
    assert parse_time("2026-12-01T10:00", now) == datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    assert parse_time("", now) is None and parse_time(None, now) is None
    with pytest.raises(DurableValueError, match="'yesterday'"):
        parse_time("yesterday", now)


def test_locks_held_are_shown_until_the_unlock_is_sent() -> None:
    from orchestrations._history import EntityLockGranted, EntityLockRequested, EntityUnlockSent

    history = [started("t"), orchestrator_started(), EntityLockRequested(at(1), 1, ("@a@1", "@a@2")),
               orchestrator_completed()]
    assert [(w.kind, w.what) for w in waiting_for(history)] == [("locks", "@a@1, @a@2")]
    granted = [*history, EntityLockGranted(at(2), 1), orchestrator_started(at(2))]
    assert [(w.kind, w.what, w.since) for w in waiting_for(granted)] == [
        ("holds lock", "@a@1", at(2)), ("holds lock", "@a@2", at(2))]
    released = [*granted, EntityUnlockSent(at(3), 2, "@a@1"), EntityUnlockSent(at(3), 3, "@a@2")]
    assert waiting_for(released) == []
