"""Two promises under faults and restarts: one holder per critical section, and a client's
start applied once (its effects exactly once), whatever happens to the instance afterwards.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from entities import EntityId, entity
from orchestrations import orchestrator
from runtime import OrchestrationRuntimeStatus as S
from runtime import TaskHub

from ..conftest import ALWAYS_REPLAY
from ..helpers import wait_until

pytestmark = pytest.mark.integration
#: why the always-replay run skips the tests of a start retried to a restarted host
CRASH_RECOVERY = "a crash empties the cache, so recovery replays in both runs: the normal run covers it"


@entity(name="PrRoom")
class Room:
    """Who is inside the critical section, in order: ``("enter", who)`` / ``("exit", who)``."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []

    def enter(self, who: str) -> None:
        self.log.append(("enter", who))

    def exit(self, who: str) -> None:
        self.log.append(("exit", who))

    def get(self) -> list[tuple[str, str]]:
        return self.log


def R(key: str) -> EntityId:
    return EntityId("PrRoom", key)


def room(hub: TaskHub, key: str) -> tuple[str | None, int, list[tuple[str, str]]]:
    """(holder, queue length, log) of a room."""
    found = [m for m in hub.list_entities("PrRoom", include_deleted=True) if m.entity_id == R(key)]
    if not found:
        return None, 0, []
    meta = found[0]
    return meta.locked_by, meta.queue_length, list(meta.entity_state.log) if meta.entity_state is not None else []


def overlaps(log: list[tuple[str, str]]) -> list[str]:
    """The entries of an enter/exit log at which two were inside at once."""
    inside: set[str] = set()
    bad = []
    for what, who in log:
        if what == "enter":
            if inside:
                bad.append(f"{who} entered while {sorted(inside)} inside")
            inside.add(who)
        else:
            inside.discard(who)
    return bad


# -- Two holders in one critical section ---------------------------------------------------------


@orchestrator(name="pr_section")
def section(ctx):
    """Lock the rooms of the input, enter the first, wait for "leave", exit."""
    keys, who = ctx.get_input()
    with (yield ctx.lock_entities([R(k) for k in keys])):
        yield ctx.call_entity(R(keys[0]), "enter", who)
        yield ctx.wait_for_external_event("leave")
        yield ctx.call_entity(R(keys[0]), "exit", who)
    return who


def entered(hub: TaskHub, key: str) -> list[str]:
    return [who for what, who in room(hub, key)[2] if what == "enter"]


def test_a_terminated_waiter_started_again_is_not_the_holder(hub):
    """x1 holds room a and waits for room b; it is terminated; y waits for a; x is started
    again (x2) and asks for a. The new execution is not the holder of its predecessor's lock:
    x1's request is withdrawn (a is free at once, b no longer waits for it), y goes first, x2
    after it, one at a time."""
    a, b = "ta-a", "ta-b"
    holder = hub.start_new(section, client_input=([b], "holder"), instance_id="pr-holder")
    wait_until(lambda: entered(hub, b) == ["holder"])
    hub.start_new(section, client_input=([a, b], "x1"), instance_id="pr-x")
    wait_until(lambda: room(hub, b)[1] == 1)  # x1 holds a and waits for b
    assert room(hub, a)[0] == "pr-x"
    other = hub.start_new(section, client_input=([a], "y"), instance_id="pr-y")
    wait_until(lambda: room(hub, a)[1] == 1)  # y waits for a
    hub.terminate("pr-x", "stop")
    assert hub.wait_for_completion("pr-x", timeout=30).runtime_status is S.Terminated
    hub.start_new(section, client_input=([a], "x2"), instance_id="pr-x")  # same id, new execution
    # y asked first and x1 is gone: y is in, though the holder of b has not left
    assert wait_until(lambda: entered(hub, a)) == ["y"]
    assert room(hub, a)[0] == "pr-y"
    assert room(hub, b)[:2] == ("pr-holder", 0)  # x1's request for b was withdrawn
    hub.raise_event(other, "leave")
    assert hub.wait_for_completion(other, timeout=30).output == "y"
    wait_until(lambda: entered(hub, a) == ["y", "x2"])
    assert room(hub, a)[0] == "pr-x"
    hub.raise_event("pr-x", "leave")
    assert hub.wait_for_completion("pr-x", timeout=30).output == "x2"
    hub.raise_event(holder, "leave")
    assert hub.wait_for_completion(holder, timeout=30).output == "holder"
    for key in (a, b):
        assert overlaps(room(hub, key)[2]) == []
        wait_until(lambda key=key: room(hub, key)[:2] == (None, 0))


# -- An effect twice -----------------------------------------------------------------------------


@entity(name="PrTally")
def tally(ctx) -> None:
    ctx.set_state(ctx.get_state(lambda: 0) + ctx.get_input())


@orchestrator(name="pr_signal_then_continue")
def signal_then_continue(ctx):
    """Signal the tally once, then continue as new once (and, if asked, wait for "go")."""
    key, round_, wait = ctx.get_input()
    if round_ == 0:
        ctx.signal_entity(EntityId("PrTally", key), "add", 1)
        ctx.continue_as_new((key, 1, wait))
        return None
    if wait:
        yield ctx.wait_for_external_event("go")
    return "second execution"


@pytest.mark.skipif(ALWAYS_REPLAY, reason=CRASH_RECOVERY)
@pytest.mark.parametrize("wait", [False, True], ids=["completed", "running"])
def test_a_start_retried_after_continue_as_new_is_applied_once(ray_session, tmp_path: Path, wait: bool):
    """The shard host dies right after committing a client's start, whose execution signalled
    an entity and continued as new in that same turn; Ray calls the restarted host again with
    the same start, which must be recognised though the instance's execution id changed
    (whether the instance has completed since, or still runs)."""
    markers = tmp_path / "markers"
    markers.mkdir()
    with TaskHub(f"pr-retried-start-{int(wait)}", data_dir=tmp_path, num_shards=1, always_replay=ALWAYS_REPLAY,
                 _crash_points=("after_commit",), _crash_marker_dir=str(markers)) as hub:
        iid = hub.start_new(signal_then_continue, client_input=("once", 0, wait), instance_id="pr-once")
        assert [p.name for p in markers.iterdir()] == ["after_commit-0"]  # the host died after the commit
        if wait:
            hub.raise_event(iid, "go")
        status = hub.wait_for_completion(iid, timeout=60)
        assert (status.runtime_status, status.output) == (S.Completed, "second execution")
        assert [e.event_type for e in hub.get_history(iid)].count("ExecutionStarted") == 1
        assert wait_until(lambda: hub.read_entity_state(EntityId("PrTally", "once")).entity_state) == 1
        # nothing else arrives: a second signal would be in the same shard's next turn
        hub.wait_for_completion(hub.start_new(signal_then_continue, client_input=("other", 1, False)), timeout=30)
        assert hub.read_entity_state(EntityId("PrTally", "once")).entity_state == 1


@orchestrator(name="pr_mark")
def mark(ctx):
    """Add 1 to the tally of the input, once per execution."""
    ctx.signal_entity(EntityId("PrTally", ctx.get_input()), "add", 1)
    return "marked"


@pytest.mark.skipif(ALWAYS_REPLAY, reason=CRASH_RECOVERY)
def test_a_start_retried_after_its_instance_was_replaced_or_purged_is_applied_once(ray_session, tmp_path: Path):
    """Ray's retry of a start can arrive late at the restarted host: after another start
    replaced the instance, or after it was purged. It changes nothing either way."""
    markers = tmp_path / "markers"
    markers.mkdir()
    with TaskHub("pr-late-retries", data_dir=tmp_path, num_shards=1, always_replay=ALWAYS_REPLAY,
                 _crash_points=("after_commit",), _crash_marker_dir=str(markers)) as hub:
        tallied = EntityId("PrTally", "late")
        first = hub._start_message(mark, "pr-late", "late")
        hub._submit([first])  # the host dies after committing it; Ray's retry is acknowledged
        assert [p.name for p in markers.iterdir()] == ["after_commit-0"]
        assert hub.wait_for_completion("pr-late", timeout=60).output == "marked"
        second = hub._start_message(mark, "pr-late", "late")
        hub._submit([second])  # replaces the finished instance
        assert hub.wait_for_completion("pr-late", timeout=30).output == "marked"
        assert wait_until(lambda: hub.read_entity_state(tallied).entity_state == 2)
        history = hub.get_history("pr-late")

        hub._submit([first])  # a late retry of the first start: the instance is the second's now
        assert hub.get_history("pr-late") == history
        assert hub.purge_instance_history("pr-late").instances_deleted == 1
        hub._submit([second])  # a late retry of the second start, after the purge
        assert hub.get_status("pr-late") is None
        hub.wait_for_completion(hub.start_new(mark, client_input="late"), timeout=30)  # a third, to be counted
        wait_until(lambda: hub.read_entity_state(tallied).entity_state >= 3)
        assert hub.read_entity_state(tallied).entity_state == 3  # not 4 or 5: no start ran twice


# -- a lock held by an execution the runtime fails -------------------------------------------------


@orchestrator(name="pr_unstorable_inside")
def unstorable_inside(ctx):
    """Holds the room, then produces a value that cannot be stored (its output, or its custom
    status while it still holds the lock)."""
    key, where = ctx.get_input()
    with (yield ctx.lock_entities([R(key)])):
        yield ctx.call_entity(R(key), "enter", where)
        if where == "output":
            return threading.Lock()
        ctx.set_custom_status(threading.Lock())
        yield ctx.call_entity(R(key), "exit", where)
    return "never"


@pytest.mark.parametrize("where", ["output", "custom_status"])
def test_an_execution_failed_for_an_unstorable_value_releases_its_locks(hub, where):
    key = f"unstorable-{where}"
    status = hub.wait_for_completion(hub.start_new(unstorable_inside, client_input=(key, where)), timeout=30)
    assert (status.runtime_status, status.failure_details.error_type) == (S.Failed, "PayloadError")
    after = hub.start_new(section, client_input=([key], "after"))
    wait_until(lambda: entered(hub, key) == [where, "after"])  # the lock was released
    hub.raise_event(after, "leave")
    assert hub.wait_for_completion(after, timeout=30).output == "after"
