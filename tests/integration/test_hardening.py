"""Issue 11, "No one in" (files) and the edges that need a running hub.

A hub's files are its owner's alone: the hub directory 0700, every file in it (shard files,
their -wal/-shm, lock files, hub.json) 0600, whatever the umask. A symbolic link planted where
a hub file goes is refused by name and its target left as it was. A reason that cannot be
serialized is a ``PayloadError`` naming it; an activity registered with dict options
(``runtime_env``, ``resources``) runs with them.
"""

from __future__ import annotations

import asyncio
import os
import stat

import pytest

from entities import EntityId
from entities._registry import EntitySpec
from orchestrations import DurableValueError, PayloadError, Registry, ShardFileError
from runtime import OrchestrationRuntimeStatus as S
from runtime import TaskHub
from runtime._store import ShardStore

from ..conftest import ALWAYS_REPLAY

pytestmark = [
    pytest.mark.integration,
    # files, permissions and refusals at open: nothing here depends on replaying orchestrations
    pytest.mark.skipif(ALWAYS_REPLAY, reason="checks files and inputs, not replay; the normal run covers it"),
]

REGISTRY = Registry()


def read_env(_: object) -> str | None:
    return os.environ.get("DURABLE_EDGE_OPTION")


def with_env(ctx):
    return (yield ctx.call_activity("edge_read_env"))


def waits(ctx):
    return (yield ctx.wait_for_external_event("never"))


def calls_a_long_id(ctx):
    return (yield ctx.call_entity(ctx.get_input(), "add", 1))


REGISTRY.add_activity(read_env, "edge_read_env", runtime_env={"env_vars": {"DURABLE_EDGE_OPTION": "set"}})
REGISTRY.add_orchestrator(with_env, "edge_with_env")
REGISTRY.add_orchestrator(waits, "edge_waits")
REGISTRY.add_orchestrator(calls_a_long_id, "edge_calls_a_long_id")


def counter(context):
    context.set_state(context.get_state(lambda: 0) + context.get_input())


REGISTRY.add_entity("counter", EntitySpec("counter", counter, False))


@pytest.fixture(scope="module")
def hub(ray_session, data_dir):
    old = os.umask(0o022)  # the usual umask: files would be -rw-r--r-- without the rule
    try:
        with TaskHub("private", data_dir=data_dir, num_shards=2, registry=REGISTRY,
                     always_replay=ALWAYS_REPLAY) as h:
            yield h
    finally:
        os.umask(old)


def mode(path: os.PathLike[str] | str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_the_hub_directory_and_every_file_in_it_are_private(hub):
    iid = hub.start_new("edge_waits")
    hub.raise_event(iid, "other", 1)  # a few commits: the -wal and -shm files exist
    names = sorted(os.listdir(hub.directory))
    assert {"hub.json", "shard-00.sqlite", "shard-00.sqlite.lock", "shard-00.sqlite-wal",
            "shard-00.sqlite-shm"} <= set(names)
    assert mode(hub.directory) == 0o700
    assert {name: mode(os.path.join(hub.directory, name)) for name in names} == {name: 0o600 for name in names}


def test_an_unserializable_reason_is_a_payload_error_naming_it(hub):
    iid = hub.start_new("edge_waits")
    unpicklable = asyncio.new_event_loop()
    try:
        for call in (hub.terminate, hub.suspend, hub.resume, hub.rewind):
            with pytest.raises(PayloadError, match="reason"):
                call(iid, reason=unpicklable)
    finally:
        unpicklable.close()
    assert hub.get_status(iid).runtime_status is S.Running  # nothing was sent
    with pytest.raises(ValueError, match="timeout"):
        hub.wait_for_completion(iid, timeout=True)
    hub.terminate(iid, "done")


def test_a_surrogate_in_an_event_or_operation_name_is_refused_before_it_is_sent(hub):
    iid = hub.start_new("edge_waits")
    for bad, call in [
        ("go\udc80", lambda: hub.raise_event(iid, "go\udc80")),
        ("add\udc80", lambda: hub.signal_entity(EntityId("counter", "k"), "add\udc80")),
        ("x\udc80", lambda: hub.start_new("edge_waits", instance_id="x\udc80")),
    ]:
        with pytest.raises(DurableValueError, match="surrogate") as info:  # not a raw UnicodeEncodeError
            call()
        assert repr(bad) in str(info.value)
    hub.raise_event(iid, "other", 1)  # the shard still takes events
    hub.terminate(iid, "done")
    assert hub.wait_for_completion(iid, timeout=60).runtime_status is S.Terminated


def test_an_overlong_entity_id_fails_the_orchestration_that_makes_it_naming_the_limit(hub):
    for target in ("@counter@" + "k" * 600, "@counter@k\udc80"):  # another shard or this one
        status = hub.wait_for_completion(hub.start_new("edge_calls_a_long_id", client_input=target), timeout=30)
        assert status.runtime_status is S.Failed
        assert "too long" in status.failure_details.message or "surrogate" in status.failure_details.message
    assert hub.wait_for_completion(hub.start_new("edge_with_env"), timeout=120).output == "set"  # nothing jammed


def test_an_activity_with_dict_options_runs_with_them(hub):
    status = hub.wait_for_completion(hub.start_new("edge_with_env"), timeout=120)
    assert (status.runtime_status, status.output) == (S.Completed, "set")


# -- planted links: refused by name, never followed --------------------------------------------------


def open_store(path) -> ShardStore:
    store = ShardStore(str(path), "planted", 0, 1)
    asyncio.run(store.open(lock_timeout=0.5))
    return store


@pytest.mark.parametrize("planted", ["shard-00.sqlite.lock", "shard-00.sqlite", "shard-00.sqlite-wal"])
def test_a_link_planted_where_a_hub_file_goes_is_refused_by_name(tmp_path, planted):
    directory = tmp_path / "planted"
    directory.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (directory / planted).symlink_to(victim)
    with pytest.raises(ShardFileError, match="symbolic link") as info:
        open_store(directory / "shard-00.sqlite")
    assert str(directory / planted) in str(info.value)
    assert victim.read_text() == "precious\n"


def test_an_old_hubs_wide_files_are_tightened_when_it_opens(tmp_path):
    directory = tmp_path / "old"
    directory.mkdir(mode=0o755)
    path = directory / "shard-00.sqlite"
    store = ShardStore(str(path), "old", 0, 1)
    asyncio.run(store.open())
    asyncio.run(store.close())
    for p in (directory, *directory.iterdir()):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)  # as written before the rule
    store = ShardStore(str(path), "old", 0, 1)
    asyncio.run(store.open())
    try:
        assert mode(directory) == 0o700
        assert {p.name: mode(p) for p in directory.iterdir()} == {p.name: 0o600 for p in directory.iterdir()}
    finally:
        asyncio.run(store.close())
