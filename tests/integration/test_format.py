"""Issue 13, "files that outlive the code": the hub checked in under ``tests/data/hub_v2``
(format version 2, written by the release at c114a73 with ``tests/data/make_hub_v2.py``)
opens with ``TaskHub`` after the change, is migrated (a backup of each shard file kept) and
serves its instances: the completed and failed ones report as before, the waiting one
completes after its event (calling the entity whose state came through the migration)."""

from __future__ import annotations

import json
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from entities import EntityId
from runtime import OrchestrationRuntimeStatus as S
from runtime import TaskHub

from ..conftest import ALWAYS_REPLAY
from . import _hub_v2_app  # noqa: F401  (registers the hub's code under its names)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(ALWAYS_REPLAY, reason="file formats and migration: the normal run covers them"),
]

FIXTURE = Path(__file__).parent.parent / "data" / "hub_v2"


@pytest.fixture(scope="module")
def migrated(ray_session: None, tmp_path_factory: pytest.TempPathFactory):
    data_dir = tmp_path_factory.mktemp("format")
    shutil.copytree(FIXTURE, data_dir / "hub_v2", ignore=shutil.ignore_patterns("*-shm", "*-wal", "*.lock"))
    with TaskHub("hub_v2", data_dir=str(data_dir), num_shards=2, always_replay=ALWAYS_REPLAY) as hub:
        yield hub, data_dir / "hub_v2"


def test_every_shard_file_is_migrated_and_backed_up(migrated):
    hub, directory = migrated
    hub.get_status("done-1")  # every shard host has opened its file
    for shard in (0, 1):
        path = directory / f"shard-{shard:02d}.sqlite"
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            assert db.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone() == ("3",)
        with closing(sqlite3.connect(f"file:{path}.v2.bak?mode=ro", uri=True)) as db:
            assert db.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone() == ("2",)
    assert json.loads((directory / "hub.json").read_text())["format_version"] == 3


def test_finished_instances_report_as_before(migrated):
    hub, _ = migrated
    done = hub.get_status("done-1", show_history=True)
    assert done.runtime_status is S.Completed
    assert done.input_ == {"user": "ada"}
    assert done.output == ["Hello Tokyo!", "Hello Seattle!", ("a", "tuple")]
    assert done.custom_status == {"step": 2}
    assert [e.event_type for e in done.history][:2] == ["ExecutionStarted", "OrchestratorStarted"]
    failed = hub.get_status("failed-1")
    assert failed.runtime_status is S.Failed
    assert "out of stock" in failed.failure_details.message


def test_the_waiting_instance_completes_after_its_event(migrated):
    hub, _ = migrated
    assert hub.get_status("waiting-1").runtime_status is S.Running
    # the migrated entity's state, read before the event changes it (any test order)
    assert hub.read_entity_state(EntityId("v2_counter", "orders")).entity_state == 41
    hub.raise_event("waiting-1", "approve", "yes")
    status = hub.wait_for_completion("waiting-1", timeout=60)
    assert status.runtime_status is S.Completed, status.failure_details
    assert status.output == {"approved": "yes", "orders": 42}
    assert hub.read_entity_state(EntityId("v2_counter", "orders")).entity_state == 42


def test_new_instances_run_on_the_migrated_hub(migrated):
    hub, _ = migrated
    iid = hub.start_new("v2_hello", client_input=("a", 1))
    status = hub.wait_for_completion(iid, timeout=60)
    assert status.runtime_status is S.Completed and status.input_ == ("a", 1)
